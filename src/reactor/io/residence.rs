//! How long datagrams stay in the node: from the kernel's receive timestamp (`SO_TIMESTAMPNS`,
//! taken when the packet entered the receive path, before it waited in the socket buffer) to the
//! flush that handed the sends it caused to the kernel. That is the latency the node adds to
//! a relay hop, measured without the client's own queueing, which on one machine hides it.
//!
//! Cost: the kernel stamps each packet; `poll` parses the stamp from the control data already
//! received with the datagram, and each flush reads the clock once. Datagrams handed between
//! cores are measured up to the flush of the core that received them.

use std::io;
use std::os::fd::RawFd;

/// Control-message space reserved per received datagram: one `SCM_TIMESTAMPNS` needs
/// `CMSG_SPACE(16)` = 32 bytes; 64 keeps the io_uring payload offset cache-line aligned.
pub(super) const CONTROL_LEN: usize = 64;

/// Datagrams whose residence is pending until the next flush; more in one batch go unmeasured.
const PENDING_CAP: usize = super::POLL_BATCH * 2;

/// Sub-buckets per power of two: buckets are at most 1/8 (12.5%) wide.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;

/// Buckets of [`ResidenceHistogram`]: enough for any `u64` of nanoseconds.
pub const RESIDENCE_BUCKETS: usize = bucket_of(u64::MAX) + 1;

const fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros();
    let shift = exponent - SUB_BITS;
    shift as usize * SUB + (ns >> shift) as usize
}

/// Counts of residence times in log-linear nanosecond buckets; cumulative since bind.
#[derive(Clone)]
pub struct ResidenceHistogram {
    counts: [u64; RESIDENCE_BUCKETS],
}

impl Default for ResidenceHistogram {
    fn default() -> Self {
        Self {
            counts: [0; RESIDENCE_BUCKETS],
        }
    }
}

impl ResidenceHistogram {
    /// Records one residence time.
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
    }

    /// The count of each bucket, indexed like [`bucket_range`](Self::bucket_range).
    pub fn counts(&self) -> &[u64; RESIDENCE_BUCKETS] {
        &self.counts
    }

    /// Datagrams measured.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The nanoseconds bucket `i` holds: `low..high` (`high` saturates at `u64::MAX`).
    pub fn bucket_range(i: usize) -> (u64, u64) {
        if i < SUB {
            return (i as u64, i as u64 + 1);
        }
        let shift = (i / SUB - 1) as u32;
        let low = ((i % SUB + SUB) as u64) << shift;
        (low, low.saturating_add(1u64 << shift))
    }
}

/// Receive stamps of the datagrams handled since the last flush, and the histogram they end in.
pub(super) struct Residence {
    pending: [u64; PENDING_CAP],
    len: usize,
    /// The handler holds some of the noted datagrams' packets across flushes (see
    /// [`hold`](Self::hold)): flushes do not end their residence.
    held: bool,
    histogram: ResidenceHistogram,
}

impl Residence {
    pub(super) fn new() -> Box<Self> {
        Box::new(Self {
            pending: [0; PENDING_CAP],
            len: 0,
            held: false,
            histogram: ResidenceHistogram::default(),
        })
    }

    /// A datagram received at `stamp_ns` (realtime) has been handled; its sends are queued.
    pub(super) fn note(&mut self, stamp_ns: u64) {
        if self.len < PENDING_CAP {
            self.pending[self.len] = stamp_ns;
            self.len += 1;
        }
    }

    /// The handler holds packets of the noted datagrams, to send them later (`true`), or has
    /// queued them all (`false`). While held, flushes leave the stamps pending: the residence of
    /// everything noted meanwhile ends at the first flush after the hold, which may count
    /// another datagram's longer than it was (an overestimate, never an underestimate).
    pub(super) fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// The sends of every noted datagram have been handed to the kernel (unless the handler
    /// holds some, see [`hold`](Self::hold)).
    pub(super) fn flushed(&mut self) {
        if self.len == 0 || self.held {
            return;
        }
        let now = realtime_ns();
        for &stamp in &self.pending[..self.len] {
            // A clock step can put the stamp in the future: count it as 0.
            self.histogram.record(now.saturating_sub(stamp));
        }
        self.len = 0;
    }

    pub(super) fn histogram(&self) -> &ResidenceHistogram {
        &self.histogram
    }
}

/// Asks the kernel to stamp every datagram received on `fd`. Best effort: without stamps the
/// node works the same and reports no residence.
pub(super) fn enable_timestamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; `on` is a c_int that outlives the call, and the length
    // passed matches its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "SO_TIMESTAMPNS failed; no residence statistics");
    }
}

/// The `SCM_TIMESTAMPNS` stamp in a datagram's control data (nanoseconds since the Unix epoch),
/// or `None` if there is none. Walks the `cmsghdr` chain with bounds checks, so a short or
/// odd control area gives `None`, never a bad read.
pub(crate) fn parse_stamp(control: &[u8]) -> Option<u64> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const ALIGN: usize = std::mem::size_of::<usize>();
    let mut at = 0;
    while at + HDR <= control.len() {
        let word = |o: usize, n: usize| control.get(at + o..at + o + n);
        let len = usize::from_ne_bytes(word(0, ALIGN)?.try_into().ok()?);
        let level = i32::from_ne_bytes(word(ALIGN, 4)?.try_into().ok()?);
        let kind = i32::from_ne_bytes(word(ALIGN + 4, 4)?.try_into().ok()?);
        // `at + HDR <= control.len()` here, so the subtraction cannot underflow; `at + len`
        // could overflow with a huge length.
        if len < HDR || len > control.len() - at {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS && len >= HDR + 16 {
            let secs = i64::from_ne_bytes(word(HDR, 8)?.try_into().ok()?);
            let nanos = i64::from_ne_bytes(word(HDR + 8, 8)?.try_into().ok()?);
            let secs = u64::try_from(secs).ok()?;
            let nanos = u64::try_from(nanos).ok().filter(|&n| n < 1_000_000_000)?;
            return secs.checked_mul(1_000_000_000)?.checked_add(nanos);
        }
        at += len.div_ceil(ALIGN) * ALIGN;
    }
    None
}

/// The realtime clock (the one the kernel stamps with), in nanoseconds since the Unix epoch.
pub(crate) fn realtime_ns() -> u64 {
    // SAFETY: all-zero is a valid timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid out-pointer for the call; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut out = Vec::new();
        out.extend_from_slice(&(hdr + data.len()).to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        out
    }

    fn timespec(secs: i64, nanos: i64) -> Vec<u8> {
        [secs.to_ne_bytes(), nanos.to_ne_bytes()].concat()
    }

    #[test]
    fn finds_the_stamp_after_other_messages() {
        let mut control = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        control.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1_700_000_000, 123_456_789),
        ));
        assert_eq!(parse_stamp(&control), Some(1_700_000_000_123_456_789));
    }

    #[test]
    fn bad_control_data_gives_none() {
        let good = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(5, 6));
        assert_eq!(parse_stamp(&good), Some(5_000_000_006));
        for cut in 0..good.len() {
            assert_eq!(parse_stamp(&good[..cut]), None, "cut at {cut}");
        }
        let mut zero_len = good.clone();
        zero_len[..8].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(parse_stamp(&zero_len), None);
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(parse_stamp(&huge), None);
        // A huge length after a first message (found by the fuzz target: `at + len` overflowed).
        let mut second_huge = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        let at = second_huge.len();
        second_huge.extend(&good);
        second_huge[at..at + 8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(parse_stamp(&second_huge), None);
        let negative = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(-1, 0));
        assert_eq!(parse_stamp(&negative), None);
        let bad_nanos = cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1, 1_000_000_000),
        );
        assert_eq!(parse_stamp(&bad_nanos), None);
        assert_eq!(parse_stamp(&[]), None);
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut previous_high = 0;
        for i in 0..RESIDENCE_BUCKETS {
            let (low, high) = ResidenceHistogram::bucket_range(i);
            assert_eq!(
                low,
                previous_high,
                "bucket {i} starts where {} ends",
                i.max(1) - 1
            );
            assert!(high > low);
            if low >= SUB as u64 {
                assert!(
                    (high - low) * SUB as u64 <= low,
                    "bucket {i} is at most 1/8 wide"
                );
            }
            assert_eq!(bucket_of(low), i);
            assert_eq!(bucket_of(high - 1), i);
            previous_high = high;
        }
        assert_eq!(previous_high, u64::MAX);
    }

    #[test]
    fn residence_is_recorded_at_flush() {
        let mut r = Residence::new();
        r.flushed();
        assert_eq!(r.histogram().total(), 0);
        let now = realtime_ns();
        r.note(now - 300_000);
        r.note(now + 10_000_000_000);
        r.flushed();
        let h = r.histogram();
        assert_eq!(h.total(), 2);
        assert_eq!(h.counts()[0], 1, "a stamp in the future counts as 0");
        let at_least_300us = (0..RESIDENCE_BUCKETS)
            .filter(|&i| ResidenceHistogram::bucket_range(i).1 > 300_000)
            .map(|i| h.counts()[i])
            .sum::<u64>();
        assert_eq!(at_least_300us, 1);
        r.flushed();
        assert_eq!(
            r.histogram().total(),
            2,
            "nothing pending, nothing recorded"
        );
    }

    /// A frame held by the handler across flushes: its datagrams' residence runs on until the
    /// flush after the hold ends, so a held packet is never counted as gone when it was not.
    #[test]
    fn a_hold_keeps_residence_running_across_flushes() {
        let mut r = Residence::new();
        let now = realtime_ns();
        r.note(now - 2_000_000);
        r.hold(true);
        r.flushed();
        r.note(now - 1_000_000);
        r.flushed();
        assert_eq!(r.histogram().total(), 0, "held: nothing recorded");
        r.hold(false);
        r.flushed();
        let h = r.histogram();
        assert_eq!(h.total(), 2);
        let at_least_1ms = (0..RESIDENCE_BUCKETS)
            .filter(|&i| ResidenceHistogram::bucket_range(i).1 > 1_000_000)
            .map(|i| h.counts()[i])
            .sum::<u64>();
        assert_eq!(at_least_1ms, 2);
    }
}
