//! The time a core thread hands its `MediaCore` with each input.
//!
//! A core reads the clock once per batch, but the datagrams of one batch may have waited in the
//! socket for milliseconds: stamped with the batch's time, a publisher's probe burst looks as if
//! it arrived all at once, and transport-wide feedback built on that makes its sender's
//! bandwidth estimate fail (a probe received in zero time is not a measurement). So a datagram
//! the kernel stamped gets its arrival time: the batch's time less the stamp's age.
//!
//! Arrival times never go backwards (an arrival before the last one handed out is taken as
//! that one), but they may be earlier than the time the core handed with its last timers or
//! commands: a datagram can have arrived while the core worked on the batch before. The media
//! core's time arithmetic saturates, so an earlier time is harmless; clamping arrivals to the
//! end of the last batch would lump them together again.

use std::time::{Duration, Instant};

/// The clock of one core's batches.
#[derive(Debug, Default)]
pub(super) struct ArrivalClock {
    /// The batch's time, and the realtime clock (the kernel's stamps') read with it.
    batch: Option<(Instant, u64)>,
    /// The latest arrival handed out.
    latest: Option<Instant>,
}

impl ArrivalClock {
    /// The current batch's time, read at its first use.
    pub(super) fn batch_time(&mut self) -> Instant {
        self.batch_base().0
    }

    /// When a datagram the kernel stamped at `received_ns` (realtime) arrived; unstamped, the
    /// batch's time.
    pub(super) fn arrival(&mut self, received_ns: Option<u64>) -> Instant {
        let (now, realtime) = self.batch_base();
        let at = received_ns.map_or(now, |stamp| arrival_at(now, realtime, stamp));
        let at = self.latest.map_or(at, |latest| at.max(latest));
        self.latest = Some(at);
        at
    }

    /// Ends the batch (the next input reads the clock again); whether it had any input.
    pub(super) fn end_batch(&mut self) -> bool {
        self.batch.take().is_some()
    }

    fn batch_base(&mut self) -> (Instant, u64) {
        *self
            .batch
            .get_or_insert_with(|| (Instant::now(), crate::reactor::io::realtime_ns()))
    }
}

/// `stamp_ns` on the monotonic clock, given that `now` was read with the realtime clock at
/// `now_ns`. A stamp from the future (the realtime clock stepped back) is `now`; one older than
/// a second (it stepped forward) is taken as a second old, which no datagram waits in a core.
fn arrival_at(now: Instant, now_ns: u64, stamp_ns: u64) -> Instant {
    const OLDEST: Duration = Duration::from_secs(1);
    let age = Duration::from_nanos(now_ns.saturating_sub(stamp_ns)).min(OLDEST);
    now.checked_sub(age).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_stamp_is_the_batch_time_less_its_age() {
        let now = Instant::now();
        let real = 1_700_000_000_000 * MS;
        assert_eq!(
            arrival_at(now, real, real - 7 * MS),
            now - Duration::from_millis(7)
        );
        assert_eq!(arrival_at(now, real, real), now);
        // The realtime clock stepped: back (a stamp from the future) or far forward.
        assert_eq!(arrival_at(now, real, real + 5 * MS), now);
        assert_eq!(
            arrival_at(now, real, real - 3_600_000 * MS),
            now - Duration::from_secs(1)
        );
    }

    #[test]
    fn datagrams_of_one_batch_keep_their_spacing() {
        let mut clock = ArrivalClock::default();
        let (now, real) = clock.batch_base();
        let a = clock.arrival(Some(real - 9 * MS));
        let b = clock.arrival(Some(real - 4 * MS));
        let c = clock.arrival(None);
        assert_eq!(b - a, Duration::from_millis(5));
        assert_eq!(c, now);
        assert!(clock.end_batch());
        assert!(!clock.end_batch(), "an empty batch had no input");
    }

    #[test]
    fn arrivals_never_go_backwards() {
        let mut clock = ArrivalClock::default();
        let (batch, real) = clock.batch_base();
        let late = clock.arrival(Some(real - MS));
        // Out of order (another socket's datagram, stamped earlier): not before the last.
        assert_eq!(clock.arrival(Some(real - 5 * MS)), late);
        assert_eq!(clock.batch_time(), batch);
        // The next batch: a datagram that arrived while this one was handled keeps its time,
        // though it is before the next batch's.
        clock.end_batch();
        std::thread::sleep(Duration::from_millis(3));
        let (next, next_real) = clock.batch_base();
        assert!(next > late);
        let waited = clock.arrival(Some(next_real - 2 * MS));
        assert_eq!(next - waited, Duration::from_millis(2));
    }
}
