//! Gaps in what a node receives from upstream (a publisher, or the node a relay comes from),
//! turned into NACKs, sans-IO.
//!
//! A node that waits for its players to report a loss makes every hop's loss cost a round trip
//! across every hop below it, and makes a lossy viewer's NACKs reach the publisher's uplink.
//! Instead the node asks upstream itself as soon as a sequence number is skipped, so a loss on
//! an origin→edge link is repaired from the origin's cache before the edge's players notice, and
//! players' NACKs for the same packets are merged into the node's own (one request per round
//! trip, however many players ask).
//!
//! The round-trip time is measured from the NACKs themselves: the time from a packet's first
//! request to its arrival. Requests are repeated once per round trip, at most [`MAX_REQUESTS`]
//! times and for at most [`MAX_AGE`]; after that the packet is given up (the player's keyframe
//! request takes over).

use std::time::{Duration, Instant};

use rtp::{MissingSeqs, SeqArrival, SeqNo};

/// Missing packets tracked at once. A gap wider than this is a discontinuity (a restarted source,
/// an outage), not loss worth repairing packet by packet.
pub const MAX_MISSING: usize = 256;
/// Requests per missing packet before it is given up.
pub const MAX_REQUESTS: u8 = 10;
/// How long a missing packet is asked for: later than this it is too late for any player's
/// jitter buffer.
pub const MAX_AGE: Duration = Duration::from_millis(1500);
/// The round trip assumed before one was measured.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Bounds of the retry interval: below the lower, a retransmission on its way is asked for again;
/// above the upper, a packet gets too few tries before [`MAX_AGE`].
const MIN_RETRY: Duration = Duration::from_millis(20);
const MAX_RETRY: Duration = Duration::from_millis(500);

/// What the detector did, since the last [`LossDetector::take_counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairCounts {
    /// Sequence numbers asked for upstream (each request of each number).
    pub requested: u64,
    /// Missing packets that arrived after all.
    pub recovered: u64,
    /// Missing packets given up after [`MAX_REQUESTS`] or [`MAX_AGE`].
    pub abandoned: u64,
}

/// Tracks one upstream SSRC's sequence numbers and the packets missing from them.
#[derive(Debug)]
pub struct LossDetector {
    ssrc: Option<u32>,
    /// Room for [`MAX_MISSING`] allocated once; never grows.
    missing: MissingSeqs,
    rtt: Duration,
    counts: RepairCounts,
}

impl Default for LossDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl LossDetector {
    /// A detector with its room for missing packets allocated up front.
    pub fn new() -> Self {
        LossDetector {
            ssrc: None,
            missing: MissingSeqs::new(MAX_MISSING),
            rtt: INITIAL_RTT,
            counts: RepairCounts::default(),
        }
    }

    /// The round-trip time to upstream as measured by repairs (or the initial guess).
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// A packet arrived. Returns whether it opened a gap, so the caller can ask for the missing
    /// packets at once ([`LossDetector::poll_requests`]) instead of at its next timer.
    pub fn on_packet(&mut self, now: Instant, ssrc: u32, seq: u16) -> bool {
        if self.ssrc != Some(ssrc) {
            self.ssrc = Some(ssrc);
            self.counts.abandoned += self.missing.restart(SeqNo::new(u64::from(seq))) as u64;
            return false;
        }
        match self.missing.handle_packet(now, seq) {
            SeqArrival::New { opened, dropped } => {
                // Past the bound the source jumped, or the oldest are the least likely still
                // to be useful: either way those are given up.
                self.counts.abandoned += dropped as u64;
                opened > 0
            }
            // Late: reordered, or a retransmission.
            SeqArrival::Found(found) => {
                self.counts.recovered += 1;
                if let (1, Some(at)) = (found.requests, found.requested_at) {
                    // Only a first request times the round trip: after a retry, which request
                    // this answers is unknown.
                    self.sample_rtt(now.saturating_duration_since(at));
                }
                false
            }
            SeqArrival::Old => false,
        }
    }

    fn sample_rtt(&mut self, sample: Duration) {
        // RFC 6298's smoothing, without the variance: the retry interval only needs to be near.
        self.rtt = (self.rtt * 7 + sample) / 8;
    }

    fn retry_interval(&self) -> Duration {
        (self.rtt + self.rtt / 4).clamp(MIN_RETRY, MAX_RETRY)
    }

    /// Someone downstream (a player) reports `seq` lost and no cache had it. Returns whether it
    /// should be asked for now: not when this node asked for it less than a round trip ago (the
    /// answer is on its way, and is forwarded to every player), nor when it was given up. A
    /// number the node did receive (a player's cache missed it) is passed through.
    pub fn should_request(&mut self, now: Instant, seq: u16) -> bool {
        let retry = self.retry_interval();
        match self.missing.get_mut(seq) {
            Some(m) if m.requested_at.is_some_and(|at| now < at + retry) => false,
            Some(m) => {
                m.requested_at = Some(now);
                m.requests = m.requests.saturating_add(1);
                self.counts.requested += 1;
                true
            }
            None => true,
        }
    }

    /// The missing packets due to be asked for now (never asked, or asked a round trip ago),
    /// written into `out` as 16-bit sequence numbers; returns how many. Gives up on packets
    /// past [`MAX_REQUESTS`] or [`MAX_AGE`].
    pub fn poll_requests(&mut self, now: Instant, out: &mut [u16]) -> usize {
        let retry = self.retry_interval();
        self.counts.abandoned += self.missing.give_up_unless(|m| {
            m.requests < MAX_REQUESTS && now.saturating_duration_since(m.detected_at) < MAX_AGE
        }) as u64;
        let mut count = 0;
        for m in self.missing.iter_mut() {
            if count == out.len() {
                break;
            }
            if m.requested_at.is_some_and(|at| now < at + retry) {
                continue;
            }
            m.requested_at = Some(now);
            m.requests += 1;
            out[count] = m.seq as u16;
            count += 1;
        }
        self.counts.requested += count as u64;
        count
    }

    /// When [`LossDetector::poll_requests`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.retry_interval();
        self.missing
            .iter()
            .map(|m| match m.requested_at {
                Some(at) => (at + retry).min(m.detected_at + MAX_AGE),
                None => m.detected_at,
            })
            .min()
    }

    /// The SSRC being tracked, once a packet arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// What happened since the last call.
    pub fn take_counts(&mut self) -> RepairCounts {
        std::mem::take(&mut self.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn requests(d: &mut LossDetector, now: Instant) -> Vec<u16> {
        let mut out = [0u16; 64];
        let n = d.poll_requests(now, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn a_gap_is_asked_for_at_once_then_once_per_round_trip_until_it_arrives() {
        let t0 = Instant::now();
        let mut d = LossDetector::new();
        for seq in [10u16, 11, 12] {
            assert!(!d.on_packet(t0, 7, seq));
        }
        assert!(d.on_packet(t0, 7, 15), "13 and 14 are missing");
        assert_eq!(requests(&mut d, t0), [13, 14]);
        // Within the retry interval (125 ms at the initial 100 ms round trip): nothing again.
        assert_eq!(requests(&mut d, t0 + ms(100)), Vec::<u16>::new());
        assert_eq!(d.poll_timeout(), Some(t0 + ms(125)));
        assert!(
            !d.on_packet(t0 + ms(40), 7, 13),
            "a retransmission opens no gap"
        );
        assert_eq!(requests(&mut d, t0 + ms(125)), [14]);
        // 13 answered a first request after 40 ms: the round trip moves towards it.
        assert_eq!(d.rtt(), (ms(100) * 7 + ms(40)) / 8);
        d.on_packet(t0 + ms(130), 7, 14);
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(
            d.take_counts(),
            RepairCounts {
                requested: 3,
                recovered: 2,
                abandoned: 0
            }
        );
    }

    #[test]
    fn a_players_request_is_merged_with_the_nodes_own() {
        let t0 = Instant::now();
        let mut d = LossDetector::new();
        d.on_packet(t0, 7, 100);
        d.on_packet(t0, 7, 102);
        assert_eq!(requests(&mut d, t0), [101]);
        // A player reports 101 lost 10 ms later: already asked for.
        assert!(!d.should_request(t0 + ms(10), 101));
        // A round trip later without an answer, the player's report asks again, and the timer
        // then waits another round trip.
        assert!(d.should_request(t0 + ms(130), 101));
        assert_eq!(requests(&mut d, t0 + ms(140)), Vec::<u16>::new());
        // A packet the node received but a player's cache no longer holds goes through.
        assert!(d.should_request(t0 + ms(140), 100));
    }

    #[test]
    fn missing_packets_are_given_up_after_max_requests_or_max_age() {
        let t0 = Instant::now();
        let mut d = LossDetector::new();
        d.on_packet(t0, 7, 1);
        d.on_packet(t0, 7, 3);
        let mut asked = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(3) {
            asked += requests(&mut d, now).len();
            now += ms(10);
        }
        assert_eq!(asked, usize::from(MAX_REQUESTS));
        assert_eq!(d.take_counts().abandoned, 1);
        // Age alone: with a slow round trip, fewer tries fit.
        let mut d = LossDetector::new();
        d.on_packet(t0, 7, 1);
        d.on_packet(t0, 7, 3);
        d.rtt = Duration::from_secs(1);
        assert_eq!(requests(&mut d, t0), [2]);
        assert_eq!(requests(&mut d, t0 + ms(500)), [2]);
        assert_eq!(requests(&mut d, t0 + MAX_AGE), Vec::<u16>::new());
        assert_eq!(d.take_counts().abandoned, 1);
    }

    #[test]
    fn a_jump_or_a_new_source_is_not_loss() {
        let t0 = Instant::now();
        let mut d = LossDetector::new();
        d.on_packet(t0, 7, 1);
        assert!(!d.on_packet(t0, 7, 1 + MAX_MISSING as u16 + 2));
        assert_eq!(d.poll_timeout(), None);
        d.on_packet(t0, 7, 1000);
        d.on_packet(t0, 7, 1002);
        assert!(!d.on_packet(t0, 8, 5000), "another SSRC starts afresh");
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.ssrc(), Some(8));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut d = LossDetector::new();
        d.on_packet(t0, 7, 65534);
        assert!(d.on_packet(t0, 7, 1));
        assert_eq!(requests(&mut d, t0), [65535, 0]);
        d.on_packet(t0, 7, 0);
        d.on_packet(t0, 7, 65535);
        assert_eq!(d.take_counts().recovered, 2);
    }

    #[test]
    fn the_missing_list_never_grows_past_its_room() {
        let t0 = Instant::now();
        let mut d = LossDetector::new();
        let capacity = d.missing.capacity();
        d.on_packet(t0, 7, 0);
        // Every other packet lost, far more than the list holds.
        for seq in (2..4000u16).step_by(2) {
            d.on_packet(t0, 7, seq);
        }
        assert_eq!(d.missing.len(), MAX_MISSING);
        assert_eq!(d.missing.capacity(), capacity);
        let mut out = [0u16; MAX_MISSING];
        let n = d.poll_requests(t0, &mut out);
        assert_eq!(out[n - 1], 3997, "the newest are kept");
    }
}
