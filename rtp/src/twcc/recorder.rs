//! The receiving end of transport-wide congestion control: record when each packet arrived,
//! and report it back to the sender in transport-cc feedback at a steady interval, as
//! libwebrtc's `RemoteEstimatorProxy` does for a browser that receives media.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rtcp::{TransportCcBuilder, MIN_FEEDBACK_LEN};
use crate::{Error, SeqNo, Ssrc};

/// Packets waiting for feedback from which it is due at once rather than at the end of the
/// interval: about what one 1200-byte feedback packet reports (a delta byte per packet plus
/// a chunk per run). A high packet rate then costs more feedback packets, not later ones.
const EARLY_FEEDBACK_PENDING: usize = 1024;
/// Packets waiting for feedback at most. A caller that polls never gets near it (see
/// `EARLY_FEEDBACK_PENDING`); one that does not loses the oldest, unreported, and memory stays
/// at 64 KiB.
const MAX_PENDING: usize = 4096;
/// A run of more consecutive missing sequence numbers than this is taken as a jump of the
/// sender's counter (a restart), not as loss: it is not reported, so a jump costs no
/// thousands of "not received" statuses. 1024 packets is about a second of 8 Mbit/s video;
/// the sender notices a longer outage from the silence anyway.
const MAX_MISSING_RUN: u64 = 1024;
/// Consecutive packets older than what feedback already covered after which the sender's
/// counter is taken to have gone back (a restart), and the recorder follows it. Reordering
/// gives a few late packets in a row, not this many.
const RESYNC_AFTER_LATE: u32 = 64;
/// Room reserved up front for waiting packets: 100 ms at 2,500 packets/s.
const INITIAL_PENDING: usize = 256;

/// Records the arrival of packets that carry a transport-wide sequence number and writes the
/// transport-cc feedback (RTPFB FMT 15) that reports them; sans-IO, on the caller's clock.
///
/// Feed every received RTP packet with a transport-wide sequence number to
/// [`on_packet`](Self::on_packet) (after SRTP unprotect, so that forged packets do not count),
/// and call [`poll_feedback`](Self::poll_feedback) until it returns `None` whenever
/// [`poll_timeout`](Self::poll_timeout) has passed. Each feedback packet reports the packets
/// since the previous one in sequence order: the received ones with their arrival times, to
/// 250 µs, the missing ones as not received.
///
/// - Sequence numbers are extended across wraps. A packet that arrives late is still
///   reported if the feedback covering it was not written yet; after that it is ignored, as
///   are duplicates.
/// - Feedback is due every [`interval`](Self::interval) (100 ms unless set; see
///   [`interval_for_bitrate`](Self::interval_for_bitrate)), and at once when 1024 packets
///   wait. A feedback packet is at most as long as the buffer it is written into; what does
///   not fit goes into the next one, written by the next poll.
/// - Memory is bounded: at most 4096 packets wait (the oldest are dropped, unreported, when a
///   caller does not poll), and a jump of the sender's counter is not reported as thousands
///   of lost packets.
///
/// ```
/// # use std::time::{Duration, Instant};
/// # use rtp::{twcc::TwccRecorder, Ssrc};
/// let mut recorder = TwccRecorder::new();
/// let start = Instant::now();
/// for seq in 0..10u16 {
///     recorder.on_packet(start + Duration::from_millis(u64::from(seq) * 10), seq);
/// }
/// let now = recorder.poll_timeout().unwrap();
/// let mut buf = [0u8; 1200];
/// while let Some(n) = recorder.poll_feedback(now, Ssrc(1), Ssrc(2), &mut buf).unwrap() {
///     // protect and send &buf[..n]
/// #   assert!(rtp::rtcp::TransportCc::parse(&buf[..n]).is_ok());
/// }
/// ```
#[derive(Debug, Clone)]
pub struct TwccRecorder {
    interval: Duration,
    /// Time zero of the arrival times: the first packet's arrival.
    time_zero: Option<Instant>,
    /// Highest extended sequence number seen.
    highest: SeqNo,
    /// First extended sequence number no feedback covered yet.
    next_report: u64,
    /// Received packets waiting for feedback, in sequence order, all at or after
    /// `next_report`.
    pending: VecDeque<Arrival>,
    /// When the last feedback round started (the first packet's arrival before any).
    last_feedback: Option<Instant>,
    /// When `EARLY_FEEDBACK_PENDING` packets were reached since the last round.
    early_due: Option<Instant>,
    /// A round has started and what waits is to be written without waiting again.
    flushing: bool,
    /// Consecutive late packets, to see the sender's counter going back.
    late_run: u32,
    fb_count: u8,
    builder: TransportCcBuilder,
    stats: TwccRecorderStats,
}

/// Counters of a [`TwccRecorder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TwccRecorderStats {
    /// Packets recorded (first arrivals).
    pub packets: u64,
    /// Packets seen a second time while waiting, ignored.
    pub duplicates: u64,
    /// Packets that arrived after feedback covered their sequence number, ignored.
    pub late: u64,
    /// Packets dropped unreported because too many waited (the caller did not poll).
    pub dropped: u64,
    /// Times the sender's counter went back and the recorder followed it.
    pub resyncs: u64,
    /// Feedback packets written.
    pub feedback_packets: u64,
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    seq: u64,
    /// Microseconds after `time_zero`.
    at_us: i64,
}

impl Default for TwccRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl TwccRecorder {
    /// The interval libwebrtc's receiver starts with (`RemoteEstimatorProxy`).
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
    /// The shortest interval libwebrtc uses, at high bitrates.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
    /// The longest interval libwebrtc uses, at low bitrates.
    pub const MAX_INTERVAL: Duration = Duration::from_millis(250);

    /// A recorder with the default 100 ms interval.
    pub fn new() -> Self {
        TwccRecorder {
            interval: Self::DEFAULT_INTERVAL,
            time_zero: None,
            highest: SeqNo::new(0),
            next_report: 0,
            pending: VecDeque::with_capacity(INITIAL_PENDING),
            last_feedback: None,
            early_due: None,
            flushing: false,
            late_run: 0,
            fb_count: 0,
            builder: TransportCcBuilder::new(),
            stats: TwccRecorderStats::default(),
        }
    }

    /// Sets the feedback interval; takes effect from the next round.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// The feedback interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// libwebrtc's interval for a bitrate (`RemoteEstimatorProxy::OnBitrateChanged`): feedback
    /// takes 5% of it, counting 68 bytes per feedback packet on the wire, within 50..=250 ms.
    /// That is 50 ms from about 218 kbit/s up, 100 ms at 109 kbit/s, 250 ms below 44 kbit/s.
    /// libwebrtc passes its own send-side target rate; a node that mostly receives can pass
    /// the rate it receives from the sender.
    pub fn interval_for_bitrate(bitrate_bps: u64) -> Duration {
        // 68 bytes × 8 bits / (5% of the bitrate), in microseconds.
        const REPORT_BIT_US_PER_FRACTION: u64 = 68 * 8 * 20 * 1_000_000;
        let micros = REPORT_BIT_US_PER_FRACTION
            .checked_div(bitrate_bps)
            .unwrap_or(u64::MAX);
        Duration::from_micros(micros).clamp(Self::MIN_INTERVAL, Self::MAX_INTERVAL)
    }

    /// Records that the packet with transport-wide sequence number `seq` arrived at `now`.
    pub fn on_packet(&mut self, now: Instant, seq: u16) {
        let Some(time_zero) = self.time_zero else {
            self.start(now, seq);
            return;
        };
        if self.pending.len() >= MAX_PENDING {
            // Before inserting, so that the queue never grows past its cap (and its capacity
            // never doubles to make room for one more).
            if let Some(oldest) = self.pending.pop_front() {
                self.next_report = oldest.seq + 1;
                self.stats.dropped += 1;
            }
        }
        let mut ext = self.highest.extend(seq).value();
        if ext < self.next_report {
            self.late_run += 1;
            if self.late_run < RESYNC_AFTER_LATE {
                self.stats.late += 1;
                return;
            }
            ext = self.resync(seq);
        }
        self.late_run = 0;
        let at_us = micros_since(time_zero, now);
        if !self.insert(Arrival { seq: ext, at_us }) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.packets += 1;
        if ext > self.highest.value() {
            self.highest = SeqNo::new(ext);
        }
        if self.pending.len() >= EARLY_FEEDBACK_PENDING && self.early_due.is_none() {
            self.early_due = Some(now);
        }
    }

    /// When [`poll_feedback`](Self::poll_feedback) has feedback to write, or `None` while no
    /// packet waits. An instant in the past means now.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        let last = self.last_feedback?;
        if self.flushing {
            return Some(last);
        }
        let periodic = last.checked_add(self.interval).unwrap_or(last);
        Some(self.early_due.map_or(periodic, |early| early.min(periodic)))
    }

    /// Writes the next feedback packet into `out` when feedback is due, and returns its
    /// length; call it again until it returns `None`, since one round can take several
    /// packets. `out`'s length caps the packet: pass what fits in a datagram after SRTCP's
    /// overhead (1200 bytes is what libwebrtc-sized MTUs allow). `out` shorter than 28 bytes,
    /// the smallest packet that reports anything, is `BufferTooSmall`.
    ///
    /// `sender_ssrc` is the receiver's RTCP SSRC, `media_ssrc` the SSRC of (one of) the media
    /// streams reported; libwebrtc uses the last one it received.
    pub fn poll_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: Ssrc,
        media_ssrc: Ssrc,
        out: &mut [u8],
    ) -> Result<Option<usize>, Error> {
        if out.len() < MIN_FEEDBACK_LEN {
            return Err(Error::BufferTooSmall {
                needed: MIN_FEEDBACK_LEN,
            });
        }
        if self.pending.is_empty() {
            self.flushing = false;
            return Ok(None);
        }
        if !self.flushing {
            match self.poll_timeout() {
                Some(due) if due <= now => {}
                _ => return Ok(None),
            }
            self.flushing = true;
            self.last_feedback = Some(now);
            self.early_due = None;
        }
        let written = self.write_feedback(sender_ssrc, media_ssrc, out)?;
        if self.pending.is_empty() {
            self.flushing = false;
        }
        Ok(Some(written))
    }

    /// Counters since the recorder was made.
    pub fn stats(&self) -> TwccRecorderStats {
        self.stats
    }

    /// Takes the first packet as time zero. Its sequence number is put in the second
    /// rollover period, so that a packet from just before it (across a wrap) still extends
    /// to a smaller number instead of to the end of the first period.
    fn start(&mut self, now: Instant, seq: u16) {
        let ext = (1 << 16) | u64::from(seq);
        self.time_zero = Some(now);
        self.last_feedback = Some(now);
        self.highest = SeqNo::new(ext);
        self.next_report = ext;
        self.pending.push_back(Arrival { seq: ext, at_us: 0 });
        self.stats.packets += 1;
    }

    /// Follows the sender's counter back to `seq`: gives it an extended number far enough
    /// past everything seen that the jump is not reported as loss.
    fn resync(&mut self, seq: u16) -> u64 {
        self.stats.resyncs += 1;
        let min = self.highest.value() + MAX_MISSING_RUN + 2;
        let mut ext = (min & !0xFFFF) | u64::from(seq);
        if ext < min {
            ext += 1 << 16;
        }
        ext
    }

    /// Puts an arrival in sequence order; false for a duplicate.
    fn insert(&mut self, arrival: Arrival) -> bool {
        match self.pending.back() {
            Some(last) if last.seq >= arrival.seq => {}
            _ => {
                self.pending.push_back(arrival);
                return true;
            }
        }
        match self.pending.binary_search_by_key(&arrival.seq, |a| a.seq) {
            Ok(_) => false,
            Err(i) => {
                self.pending.insert(i, arrival);
                true
            }
        }
    }

    /// Writes one feedback packet from the oldest waiting packets on, and forgets them.
    fn write_feedback(
        &mut self,
        sender_ssrc: Ssrc,
        media_ssrc: Ssrc,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let Some(first) = self.pending.front().copied() else {
            return Err(Error::OutOfRange("no twcc arrivals to report"));
        };
        // Missing packets before the first received one are reported, unless that is a jump.
        let base = if first.seq.saturating_sub(self.next_report) > MAX_MISSING_RUN {
            first.seq
        } else {
            self.next_report
        };
        // The reference time is the first arrival's, as libwebrtc's receiver sets it.
        self.builder
            .start(base as u16, first.at_us, self.fb_count, out.len());
        let mut end = base;
        let mut reported = 0;
        for a in &self.pending {
            let jump = a.seq.saturating_sub(end) > MAX_MISSING_RUN;
            if jump || !self.builder.push(a.seq as u16, Some(a.at_us))? {
                break;
            }
            end = a.seq + 1;
            reported += 1;
        }
        if reported == 0 {
            // A fresh packet of at least MIN_FEEDBACK_LEN always takes the first arrival (at
            // most 1024 missing and a delta under 64 ms before it). Should that ever fail,
            // drop the arrival rather than fail on it at every poll.
            self.pending.pop_front();
            self.next_report = first.seq + 1;
            self.stats.dropped += 1;
            return Err(Error::OutOfRange(
                "twcc arrival does not fit a feedback packet",
            ));
        }
        let written = self.builder.write_to(sender_ssrc, media_ssrc, out)?;
        self.pending.drain(..reported);
        self.next_report = end;
        self.fb_count = self.fb_count.wrapping_add(1);
        self.stats.feedback_packets += 1;
        Ok(written)
    }
}

/// Microseconds from `zero` to `now`, 0 if `now` is earlier (a clock the caller got wrong).
fn micros_since(zero: Instant, now: Instant) -> i64 {
    i64::try_from(now.saturating_duration_since(zero).as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::{PacketStatus, TransportCc};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One feedback packet, decoded: its base, count and feedback count, and for each status
    /// the sequence number and the arrival in µs after the recorder's time zero.
    #[derive(Debug)]
    struct Feedback {
        base_seq: u16,
        fb_count: u8,
        len: usize,
        statuses: Vec<(u16, Option<i64>)>,
    }

    fn decode(wire: &[u8]) -> Feedback {
        let t = TransportCc::parse(wire).unwrap();
        assert_eq!((t.sender_ssrc, t.media_ssrc), (Ssrc(0xaaaa), Ssrc(0xbbbb)));
        let mut at = t.reference_time_us();
        let statuses = t
            .packets()
            .unwrap()
            .map(|(seq, s)| match s {
                PacketStatus::NotReceived => (seq, None),
                PacketStatus::Received { delta_us } => {
                    at += delta_us;
                    (seq, Some(at))
                }
            })
            .collect();
        Feedback {
            base_seq: t.base_seq,
            fb_count: t.fb_count,
            len: wire.len(),
            statuses,
        }
    }

    /// Polls at `now` until nothing more comes, with a buffer of `mtu` bytes.
    fn drain(r: &mut TwccRecorder, now: Instant, mtu: usize) -> Vec<Feedback> {
        let mut buf = vec![0u8; mtu];
        let mut out = Vec::new();
        while let Some(n) = r
            .poll_feedback(now, Ssrc(0xaaaa), Ssrc(0xbbbb), &mut buf)
            .unwrap()
        {
            assert!(n <= mtu);
            out.push(decode(&buf[..n]));
            assert!(out.len() < 100, "poll_feedback does not end");
        }
        out
    }

    fn statuses(fbs: &[Feedback]) -> Vec<(u16, Option<i64>)> {
        fbs.iter().flat_map(|f| f.statuses.clone()).collect()
    }

    /// Whether `got` is `want_us` to a delta unit's rounding.
    fn near(got: Option<i64>, want_us: i64) -> bool {
        got.is_some_and(|g| (g - want_us).abs() <= 125)
    }

    #[test]
    fn reports_regular_arrivals_every_interval() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        assert_eq!(r.poll_timeout(), None);
        let mut seq = 0u16;
        let mut fb_counts = Vec::new();
        for round in 0..5u64 {
            // 10 packets 10 ms apart (plus 1.3 ms, to test the rounding) in each interval.
            for i in 0..10u64 {
                let at = ms(round * 100 + i * 10) + Duration::from_micros(1_300);
                r.on_packet(t0 + at, seq);
                seq += 1;
            }
            let due = r.poll_timeout().unwrap();
            assert_eq!(
                due,
                t0 + Duration::from_micros(1_300) + ms(100 * (round + 1))
            );
            assert!(drain(&mut r, due - ms(1), 1200).is_empty(), "not due yet");
            let fbs = drain(&mut r, due, 1200);
            assert_eq!(fbs.len(), 1);
            let got = &fbs[0].statuses;
            assert_eq!(got.len(), 10);
            for (i, (s, at)) in got.iter().enumerate() {
                assert_eq!(u64::from(*s), round * 10 + i as u64);
                // Time zero is the first packet's arrival.
                assert!(
                    near(*at, (round * 100 + i as u64 * 10) as i64 * 1_000),
                    "{at:?}"
                );
            }
            fb_counts.push(fbs[0].fb_count);
            assert_eq!(r.poll_timeout(), None);
        }
        assert_eq!(fb_counts, [0, 1, 2, 3, 4]);
        assert_eq!(r.stats().feedback_packets, 5);
        assert_eq!(r.stats().packets, 50);
    }

    #[test]
    fn missing_packets_are_not_received() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for (i, seq) in [10u16, 11, 14, 15].into_iter().enumerate() {
            r.on_packet(t0 + ms(i as u64 * 5), seq);
        }
        let fbs = drain(&mut r, t0 + ms(100), 1200);
        let got: Vec<_> = statuses(&fbs)
            .into_iter()
            .map(|(s, a)| (s, a.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                (10, true),
                (11, true),
                (12, false),
                (13, false),
                (14, true),
                (15, true)
            ]
        );
        // A missing packet that arrives after its feedback went out is ignored.
        r.on_packet(t0 + ms(120), 12);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.stats().late, 1);
        // Packets before the first one are not reported as lost in the next round either:
        // the next feedback starts where the last ended.
        r.on_packet(t0 + ms(130), 17);
        let fbs = drain(&mut r, t0 + ms(300), 1200);
        assert_eq!(fbs[0].base_seq, 16);
        assert_eq!(fbs[0].statuses[0], (16, None));
    }

    #[test]
    fn reordered_packets_are_reported_in_sequence_order() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for (i, seq) in [0u16, 1, 3, 2, 4].into_iter().enumerate() {
            r.on_packet(t0 + ms(i as u64), seq);
        }
        // A duplicate while waiting is ignored.
        r.on_packet(t0 + ms(9), 3);
        let got = statuses(&drain(&mut r, t0 + ms(100), 1200));
        let seqs: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        // 3 arrived at 2 ms, 2 at 3 ms: the feedback says so (a negative delta for 3).
        assert!(near(got[2].1, 3_000) && near(got[3].1, 2_000), "{got:?}");
        assert_eq!(r.stats().duplicates, 1);
    }

    #[test]
    fn extends_sequence_numbers_across_the_wrap() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        let seqs: Vec<u16> = (0..12u16).map(|i| 65_530u16.wrapping_add(i)).collect();
        for (i, s) in seqs.iter().enumerate() {
            r.on_packet(t0 + ms(i as u64), *s);
        }
        let fbs = drain(&mut r, t0 + ms(100), 1200);
        assert_eq!(fbs[0].base_seq, 65_530);
        let got: Vec<_> = statuses(&fbs).iter().map(|g| g.0).collect();
        assert_eq!(got, seqs);
        for (i, s) in [6u16, 8, 7].into_iter().enumerate() {
            r.on_packet(t0 + ms(110 + i as u64), s);
        }
        let got: Vec<_> = statuses(&drain(&mut r, t0 + ms(200), 1200))
            .iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(got, [6, 7, 8]);
    }

    #[test]
    fn a_packet_from_before_the_first_is_late_not_far_ahead() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        r.on_packet(t0, 2);
        r.on_packet(t0 + ms(1), 65_535);
        r.on_packet(t0 + ms(2), 3);
        // 65535 extends to just before 2, not to 65,533 packets after it, and feedback starts
        // at the first packet: it is late.
        let got: Vec<_> = statuses(&drain(&mut r, t0 + ms(100), 1200))
            .iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(got, [2, 3]);
        assert_eq!(r.stats().late, 1);
    }

    #[test]
    fn a_jump_of_the_counter_is_not_reported_as_loss() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for s in 0..10u16 {
            r.on_packet(t0 + ms(u64::from(s)), s);
        }
        for s in 30_000..30_010u16 {
            r.on_packet(t0 + ms(u64::from(s - 29_980)), s);
        }
        let fbs = drain(&mut r, t0 + ms(100), 1200);
        assert_eq!(fbs.len(), 2);
        assert_eq!((fbs[0].base_seq, fbs[0].statuses.len()), (0, 10));
        assert_eq!((fbs[1].base_seq, fbs[1].statuses.len()), (30_000, 10));
        // The same across rounds.
        r.on_packet(t0 + ms(150), 40_000);
        let fbs = drain(&mut r, t0 + ms(200), 1200);
        assert_eq!((fbs[0].base_seq, fbs[0].statuses.len()), (40_000, 1));
        // A gap up to 1024 is loss.
        r.on_packet(t0 + ms(250), 41_024);
        let got = statuses(&drain(&mut r, t0 + ms(300), 1200));
        assert_eq!(got.len(), 1024);
        assert_eq!(got.iter().filter(|g| g.1.is_none()).count(), 1023);
    }

    #[test]
    fn follows_a_counter_that_goes_back() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for s in 5_000..5_100u16 {
            r.on_packet(t0 + ms(u64::from(s - 5_000)), s);
        }
        drain(&mut r, t0 + ms(100), 1200);
        // The sender restarts at 1: the first packets look late, then the recorder follows.
        for s in 1..200u16 {
            r.on_packet(t0 + ms(200) + Duration::from_micros(u64::from(s) * 100), s);
        }
        let stats = r.stats();
        assert_eq!((stats.late, stats.resyncs), (63, 1));
        let fbs = drain(&mut r, t0 + ms(300), 1200);
        let got = statuses(&fbs);
        assert_eq!(got.first().map(|g| g.0), Some(64));
        assert_eq!(got.len(), 200 - 64);
        assert!(got.iter().all(|g| g.1.is_some()));
    }

    #[test]
    fn splits_a_round_into_packets_that_fit_the_buffer() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        // 901 packets in 90 ms, every 7th lost (not the last: trailing losses are only known
        // once a later packet arrives): more than fits 300 bytes.
        for s in 0..901u16 {
            if s % 7 != 3 {
                r.on_packet(t0 + Duration::from_micros(u64::from(s) * 100), s);
            }
        }
        let fbs = drain(&mut r, t0 + ms(100), 300);
        assert!(fbs.len() >= 4, "{}", fbs.len());
        assert!(fbs.iter().all(|f| f.len <= 300));
        let got = statuses(&fbs);
        assert_eq!(got.len(), 901);
        for (i, (s, at)) in got.iter().enumerate() {
            assert_eq!(usize::from(*s), i);
            if i % 7 == 3 {
                assert_eq!(*at, None);
            } else {
                assert!(near(*at, i as i64 * 100), "{i}: {at:?}");
            }
        }
        let counts: Vec<_> = fbs.iter().map(|f| f.fb_count).collect();
        assert_eq!(counts, (0..fbs.len() as u8).collect::<Vec<_>>());
    }

    #[test]
    fn many_waiting_packets_make_feedback_due_early() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for s in 0..2_000u16 {
            r.on_packet(t0 + Duration::from_micros(u64::from(s) * 20), s);
        }
        // The 1024th packet (seq 1023) arrived at 20.46 ms.
        let due = r.poll_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_micros(1_023 * 20));
        let fbs = drain(&mut r, due, 1200);
        assert_eq!(statuses(&fbs).len(), 2_000);
        assert!(fbs.iter().all(|f| f.len <= 1200));
    }

    #[test]
    fn memory_is_capped_when_nobody_polls() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        for i in 0..10_000u32 {
            r.on_packet(t0 + Duration::from_micros(u64::from(i) * 10), i as u16);
        }
        assert_eq!(r.stats().dropped, 10_000 - MAX_PENDING as u64);
        let got = statuses(&drain(&mut r, t0 + ms(200), 1200));
        assert_eq!(got.len(), MAX_PENDING);
        assert_eq!(got[0].0, (10_000 - MAX_PENDING) as u16);
    }

    #[test]
    fn a_long_pause_within_a_round_starts_a_new_packet() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        r.on_packet(t0, 1);
        r.on_packet(t0 + ms(9_000), 2);
        let fbs = drain(&mut r, t0 + ms(9_000), 1200);
        assert_eq!(fbs.len(), 2);
        assert!(near(fbs[1].statuses[0].1, 9_000_000));
    }

    #[test]
    fn feedback_count_wraps() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        let mut last = None;
        for i in 0..300u16 {
            let now = t0 + ms(u64::from(i) * 100);
            r.on_packet(now, i);
            let fbs = drain(&mut r, now + ms(100), 1200);
            assert_eq!(fbs.len(), 1);
            if let Some(prev) = last {
                assert_eq!(fbs[0].fb_count, u8::wrapping_add(prev, 1));
            }
            last = Some(fbs[0].fb_count);
        }
        assert_eq!(last, Some((299 % 256) as u8));
    }

    #[test]
    fn interval_follows_libwebrtc() {
        assert_eq!(TwccRecorder::interval_for_bitrate(0), ms(250));
        assert_eq!(TwccRecorder::interval_for_bitrate(20_000), ms(250));
        assert_eq!(TwccRecorder::interval_for_bitrate(108_800), ms(100));
        assert_eq!(TwccRecorder::interval_for_bitrate(2_500_000), ms(50));
        let mut r = TwccRecorder::new();
        r.set_interval(ms(50));
        let t0 = Instant::now();
        r.on_packet(t0, 0);
        assert_eq!(r.poll_timeout(), Some(t0 + ms(50)));
    }

    #[test]
    fn rejects_a_buffer_too_small_for_any_feedback() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::new();
        r.on_packet(t0, 0);
        let mut buf = [0u8; 27];
        assert_eq!(
            r.poll_feedback(t0 + ms(100), Ssrc(1), Ssrc(2), &mut buf),
            Err(Error::BufferTooSmall { needed: 28 })
        );
        let mut buf = [0u8; 28];
        assert!(r
            .poll_feedback(t0 + ms(100), Ssrc(1), Ssrc(2), &mut buf)
            .unwrap()
            .is_some());
    }
}
