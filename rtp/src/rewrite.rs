//! Per-player RTP rewriting: one source stream in, one continuous output stream out.
//!
//! A player sees one SSRC per track for the whole session while the CDN may switch what feeds
//! it (the publisher restarts, a relay reconnects). Like an RTP translator (RFC 3550 §7.1 and
//! RFC 7667 §3.2.1.3), the rewriter keeps output sequence numbers and timestamps continuous:
//! at each source switch the new source's numbers are offset so the output carries on from
//! the last packet sent. The first source is offset to a caller-chosen random-like base, so
//! streams of different players are not predictable from one another (RFC 3550 §5.1).

use std::time::{Duration, Instant};

use crate::packet::{self, Pt, Ssrc};
use crate::Error;

/// Default timestamp step inserted at a source switch: one frame at 30 fps on a 90 kHz clock.
const DEFAULT_SWITCH_TS_STEP: u32 = 3000;

/// A source that starts this long after the last packet written (a failover, a publisher
/// that came back) moves the output timestamp on by the pause itself, at the output's measured
/// clock rate: a receiver's jitter buffer maps timestamps to arrival times, and a pause of
/// seconds with timestamps one frame apart looks to it like frames seconds late (Chromium
/// holds the video for its 5 s "maximum allowed frame delay" before it resets its timing).
const PAUSE_AS_GAP: Duration = Duration::from_millis(500);
/// The output's clock rate is measured over windows at least this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The clock rates a measurement is believed within (8 kHz audio to 90 kHz video, with room).
const PLAUSIBLE_RATES: std::ops::RangeInclusive<u64> = 4_000..=200_000;

/// The farthest back [`RtpRewriter::written_sequence`] looks: half the sequence number space,
/// beyond which "behind the newest" is ambiguous.
const MAX_WRITTEN_SPAN: u16 = 0x7FFF;

/// Rewrites SSRC, payload type, sequence number and timestamp of one outgoing stream in place.
#[derive(Debug, Clone)]
pub struct RtpRewriter {
    ssrc: Ssrc,
    pt: Pt,
    seq_base: u16,
    ts_base: u32,
    switch_ts_step: u32,
    source: Option<Source>,
    /// Highest output sequence number written, and the timestamp it carried.
    last: Option<(u16, u32)>,
    switch_pending: bool,
    /// The output's clock, when written with [`RtpRewriter::rewrite_at`].
    clock: OutputClock,
}

/// The wall-clock times of the output's timestamps, to measure its clock rate.
#[derive(Debug, Clone, Copy, Default)]
struct OutputClock {
    /// When the newest packet was written, and its output timestamp.
    last: Option<(Instant, u32)>,
    /// The start of the current measurement window.
    window: Option<(Instant, u32)>,
    /// Timestamp units per second, as last measured.
    rate: Option<u64>,
}

impl OutputClock {
    /// A newer packet with output timestamp `ts` was written at `now`.
    fn note(&mut self, now: Instant, ts: u32) {
        self.last = Some((now, ts));
        let (start, start_ts) = *self.window.get_or_insert((now, ts));
        let span = now.saturating_duration_since(start);
        if span >= RATE_WINDOW {
            let ticks = u64::from(ts.wrapping_sub(start_ts));
            let rate = ticks * 1000 / span.as_millis().max(1) as u64;
            self.rate = PLAUSIBLE_RATES
                .contains(&rate)
                .then_some(rate)
                .or(self.rate);
            self.window = Some((now, ts));
        }
    }

    /// How far the output timestamp moves on for a source that starts at `now`: the pause
    /// since the last packet at the measured rate, when the pause is long and the rate known.
    fn pause_step(&self, now: Instant) -> Option<u32> {
        let (at, _) = self.last?;
        let pause = now.saturating_duration_since(at);
        if pause < PAUSE_AS_GAP {
            return None;
        }
        let ticks = u128::from(self.rate?) * pause.as_millis() / 1000;
        // Half the timestamp space is as far forward as a receiver can tell.
        Some(ticks.min(0x7FFF_FFFF) as u32)
    }
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: Ssrc,
    seq_offset: u16,
    ts_offset: u32,
    /// How far the newest output number is ahead of the source's first one (numbers before
    /// the first belong to an earlier mapping), saturating at half the number space.
    written_span: u16,
}

impl RtpRewriter {
    /// A rewriter for an output stream with fixed `ssrc` and `pt`. The first packet written
    /// gets sequence number `seq_base` and timestamp `ts_base`; pass random values (the crate
    /// reads no RNG itself).
    pub fn new(ssrc: Ssrc, pt: Pt, seq_base: u16, ts_base: u32) -> Self {
        RtpRewriter {
            ssrc,
            pt,
            seq_base,
            ts_base,
            switch_ts_step: DEFAULT_SWITCH_TS_STEP,
            source: None,
            last: None,
            switch_pending: false,
            clock: OutputClock::default(),
        }
    }

    /// Sets how far the output timestamp advances across a source switch (default 3000, one
    /// 30 fps frame at 90 kHz; use e.g. 960 for 20 ms of Opus).
    pub fn set_switch_ts_step(&mut self, step: u32) {
        self.switch_ts_step = step;
    }

    /// Treats the next packet as the start of a new source even if its SSRC is unchanged,
    /// e.g. when a publisher reconnects and reuses its SSRC.
    pub fn switch_source(&mut self) {
        self.switch_pending = true;
    }

    /// The output SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The output payload type.
    pub fn payload_type(&self) -> Pt {
        self.pt
    }

    /// The SSRC of the current source, once a packet was rewritten.
    pub fn source_ssrc(&self) -> Option<Ssrc> {
        self.source.map(|s| s.ssrc)
    }

    /// Maps an output sequence number back to the current source's, e.g. to answer a NACK
    /// from the player out of the source's retransmission buffer.
    pub fn source_sequence(&self, output_seq: u16) -> Option<u16> {
        self.source.map(|s| output_seq.wrapping_sub(s.seq_offset))
    }

    /// Maps a source sequence number to the output one under the current mapping.
    pub fn output_sequence(&self, source_seq: u16) -> Option<u16> {
        self.source.map(|s| source_seq.wrapping_add(s.seq_offset))
    }

    /// Maps a source RTP timestamp to the output one under the current mapping, e.g. to
    /// forward the publisher's Sender Report NTP↔RTP pair in the player's timestamp space.
    pub fn output_timestamp(&self, source_ts: u32) -> Option<u32> {
        self.source.map(|s| source_ts.wrapping_add(s.ts_offset))
    }

    /// The output sequence number a packet of `ssrc` numbered `source_seq` was written with,
    /// when the current mapping wrote it: `ssrc` is the current source and the number lies
    /// between the source's first packet and the newest one written. Rewriting such a packet
    /// again yields the same header and leaves the mapping alone, e.g. to answer a player's
    /// NACK from a cache; anything else would start a new source or reuse a number an earlier
    /// source's packet went out with.
    pub fn written_sequence(&self, ssrc: Ssrc, source_seq: u16) -> Option<u16> {
        let source = self
            .source
            .filter(|s| s.ssrc == ssrc && !self.switch_pending)?;
        // The newest number always belongs to the current source: its first packet is newer
        // than anything before.
        let (newest, _) = self.last?;
        let out = source_seq.wrapping_add(source.seq_offset);
        (newest.wrapping_sub(out) <= source.written_span).then_some(out)
    }

    /// Rewrites the RTP packet in `packet` in place. Any SSRC change starts a new mapping, so
    /// feed only packets of the source that currently drives this output.
    pub fn rewrite(&mut self, packet: &mut [u8]) -> Result<(), Error> {
        self.rewrite_with(None, packet)
    }

    /// [`RtpRewriter::rewrite`], sent at `now`: a source that starts after a pause of more
    /// than half a second moves the output timestamp on by the pause (see [`PAUSE_AS_GAP`]).
    pub fn rewrite_at(&mut self, now: Instant, packet: &mut [u8]) -> Result<(), Error> {
        self.rewrite_with(Some(now), packet)
    }

    fn rewrite_with(&mut self, now: Option<Instant>, packet: &mut [u8]) -> Result<(), Error> {
        packet::header_len(packet)?;
        let in_ssrc = Ssrc(packet::read_u32(packet, 8));
        let in_seq = u16::from_be_bytes([packet[2], packet[3]]);
        let in_ts = packet::read_u32(packet, 4);
        let (source, started) = match self.source {
            Some(s) if s.ssrc == in_ssrc && !self.switch_pending => (s, false),
            _ => {
                let step = now.and_then(|now| self.clock.pause_step(now));
                // A new source's first window would span the jump.
                self.clock.window = None;
                (self.start_source(in_ssrc, in_seq, in_ts, step), true)
            }
        };
        let out_seq = in_seq.wrapping_add(source.seq_offset);
        let out_ts = in_ts.wrapping_add(source.ts_offset);
        let newer = match self.last {
            None => true,
            // Serial-number comparison: a forward distance below half the space is newer.
            Some((seq, _)) => out_seq.wrapping_sub(seq).wrapping_sub(1) < 0x7FFF,
        };
        if newer {
            if let (false, Some((previous, _)), Some(s)) =
                (started, self.last, self.source.as_mut())
            {
                s.written_span = s
                    .written_span
                    .saturating_add(out_seq.wrapping_sub(previous))
                    .min(MAX_WRITTEN_SPAN);
            }
            self.last = Some((out_seq, out_ts));
            if let Some(now) = now {
                self.clock.note(now, out_ts);
            }
        }
        packet::set_ssrc(packet, self.ssrc)?;
        packet::set_payload_type(packet, self.pt)?;
        packet::set_sequence_number(packet, out_seq)?;
        packet::set_timestamp(packet, out_ts)
    }

    /// Maps a new source on from the last packet written: one frame's step later, or `step`.
    fn start_source(&mut self, ssrc: Ssrc, seq: u16, ts: u32, step: Option<u32>) -> Source {
        let step = step.unwrap_or(self.switch_ts_step);
        let (out_seq, out_ts) = match self.last {
            None => (self.seq_base, self.ts_base),
            Some((seq, ts)) => (seq.wrapping_add(1), ts.wrapping_add(step)),
        };
        let source = Source {
            ssrc,
            seq_offset: out_seq.wrapping_sub(seq),
            ts_offset: out_ts.wrapping_sub(ts),
            written_span: 0,
        };
        self.source = Some(source);
        self.switch_pending = false;
        source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RtpHeader, RtpHeaderBuilder};

    fn packet(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        let mut buf = vec![0u8; 16];
        let mut b = RtpHeaderBuilder::new(Pt::new(96), seq, ts, Ssrc(ssrc));
        b.marker = true;
        b.write_to(&mut buf).unwrap();
        buf
    }

    fn fields(p: &[u8]) -> (u32, u8, u16, u32, bool) {
        let h = RtpHeader::parse(p).unwrap();
        (
            h.ssrc().0,
            h.payload_type().value(),
            h.sequence_number(),
            h.timestamp(),
            h.marker(),
        )
    }

    #[test]
    fn first_packet_starts_at_base() {
        let mut rw = RtpRewriter::new(Ssrc(0xabc), Pt::new(102), 1000, 555);
        let mut p = packet(1, 40_000, 90_000);
        rw.rewrite(&mut p).unwrap();
        assert_eq!(fields(&p), (0xabc, 102, 1000, 555, true));
        let mut p = packet(1, 40_001, 93_000);
        rw.rewrite(&mut p).unwrap();
        assert_eq!(fields(&p), (0xabc, 102, 1001, 3555, true));
        // A reordered older packet maps consistently.
        let mut p = packet(1, 39_999, 87_000);
        rw.rewrite(&mut p).unwrap();
        assert_eq!(fields(&p).2, 999);
        assert_eq!(rw.source_sequence(1001), Some(40_001));
        assert_eq!(rw.output_sequence(40_001), Some(1001));
        assert_eq!(rw.output_timestamp(93_000), Some(3555));
    }

    #[test]
    fn a_source_after_a_pause_moves_the_timestamp_on_by_the_pause() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rw = RtpRewriter::new(Ssrc(7), Pt::new(96), 0, 1000);
        // Two seconds of 30 fps video at 90 kHz: the rate is measured.
        for i in 0..=60u16 {
            let mut p = packet(1, i, 3000 * u32::from(i));
            rw.rewrite_at(ms(u64::from(i) * 1000 / 30), &mut p).unwrap();
        }
        let last_ts = 1000 + 3000 * 60;
        // A quick switch (a simulcast layer) steps one frame on, as without a clock.
        let mut p = packet(2, 500, 7);
        rw.rewrite_at(ms(2_000 + 40), &mut p).unwrap();
        assert_eq!(fields(&p).3, last_ts + 3000);
        // A source that comes 5 s later: the timestamp moves 5 s on.
        let mut p = packet(3, 9, 123);
        rw.rewrite_at(ms(7_040), &mut p).unwrap();
        let (_, _, seq, ts, _) = fields(&p);
        assert_eq!(seq, 62, "sequence numbers still run on");
        assert_eq!(ts, last_ts + 3000 + 5 * 90_000);
        // Without a measured rate (too short a run), the step stays one frame.
        let mut short = RtpRewriter::new(Ssrc(7), Pt::new(96), 0, 0);
        let mut p = packet(1, 0, 0);
        short.rewrite_at(t0, &mut p).unwrap();
        let mut p = packet(2, 0, 0);
        short.rewrite_at(ms(5_000), &mut p).unwrap();
        assert_eq!(fields(&p).3, 3000);
    }

    #[test]
    fn output_is_continuous_across_a_source_switch() {
        let mut rw = RtpRewriter::new(Ssrc(7), Pt::new(96), 65_534, u32::MAX - 10);
        for i in 0..3u16 {
            let mut p = packet(1, 100 + i, 3000 * u32::from(i));
            rw.rewrite(&mut p).unwrap();
        }
        // Publisher restarts with a new SSRC and unrelated numbers.
        let mut p = packet(2, 7, 1_000_000);
        rw.rewrite(&mut p).unwrap();
        let (_, _, seq, ts, _) = fields(&p);
        assert_eq!(seq, 1, "65534, 65535, 0, then 1");
        assert_eq!(ts, (u32::MAX - 10).wrapping_add(6000 + 3000));
        assert_eq!(rw.source_ssrc(), Some(Ssrc(2)));
    }

    #[test]
    fn explicit_switch_with_same_ssrc() {
        let mut rw = RtpRewriter::new(Ssrc(7), Pt::new(96), 10, 0);
        rw.set_switch_ts_step(960);
        let mut p = packet(1, 500, 48_000);
        rw.rewrite(&mut p).unwrap();
        rw.switch_source();
        let mut p = packet(1, 3, 5);
        rw.rewrite(&mut p).unwrap();
        assert_eq!(fields(&p).2, 11);
        assert_eq!(fields(&p).3, 960);
    }

    #[test]
    fn only_numbers_written_under_the_current_mapping_count_as_written() {
        let mut rw = RtpRewriter::new(Ssrc(7), Pt::new(96), 65_534, 0);
        assert_eq!(
            rw.written_sequence(Ssrc(1), 100),
            None,
            "nothing written yet"
        );
        for seq in 100..104u16 {
            rw.rewrite(&mut packet(1, seq, 0)).unwrap();
        }
        // 100..=103 went out as 65534, 65535, 0, 1.
        assert_eq!(rw.written_sequence(Ssrc(1), 100), Some(65_534));
        assert_eq!(rw.written_sequence(Ssrc(1), 103), Some(1));
        assert_eq!(rw.written_sequence(Ssrc(1), 99), None, "before the first");
        assert_eq!(rw.written_sequence(Ssrc(1), 104), None, "not written yet");
        assert_eq!(rw.written_sequence(Ssrc(2), 101), None, "another source");
        // A new source continues at 2; the old numbers are no longer this mapping's.
        rw.rewrite(&mut packet(2, 5000, 0)).unwrap();
        assert_eq!(rw.written_sequence(Ssrc(2), 5000), Some(2));
        assert_eq!(rw.written_sequence(Ssrc(2), 4999), None);
        assert_eq!(rw.written_sequence(Ssrc(1), 103), None);
        // Rewriting a written packet again gives the same numbers and keeps the mapping.
        rw.rewrite(&mut packet(2, 5001, 0)).unwrap();
        let mut again = packet(2, 5000, 0);
        rw.rewrite(&mut again).unwrap();
        assert_eq!(fields(&again).2, 2);
        assert_eq!(rw.written_sequence(Ssrc(2), 5001), Some(3));
        // Long after the source started (and its first number came round again), recent
        // numbers still count and the first one no longer does.
        for seq in 5002..=50_000u16 {
            rw.rewrite(&mut packet(2, seq, 0)).unwrap();
        }
        assert_eq!(
            rw.written_sequence(Ssrc(2), 49_500),
            Some(49_500u16.wrapping_sub(4998))
        );
        assert_eq!(
            rw.written_sequence(Ssrc(2), 50_000 - 0x7FFF),
            Some(50_000u16.wrapping_sub(0x7FFF + 4998))
        );
        assert_eq!(rw.written_sequence(Ssrc(2), 50_000 - 0x8000), None);
        assert_eq!(rw.written_sequence(Ssrc(2), 50_001), None);
    }

    #[test]
    fn rejects_non_rtp() {
        let mut rw = RtpRewriter::new(Ssrc(7), Pt::new(96), 10, 0);
        assert_eq!(rw.rewrite(&mut [0x80; 5]), Err(Error::Truncated));
        assert_eq!(rw.rewrite(&mut [0u8; 12]), Err(Error::BadVersion(0)));
    }
}
