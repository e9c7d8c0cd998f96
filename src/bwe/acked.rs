//! The acknowledged bitrate: what the player reports having received, per second of its own
//! clock, over the last [`WINDOW`] of arrival time that feedback covers.
//!
//! This is the one number that is proof rather than inference: that many bits did get through.
//! The rate controllers back off to a fraction of it on congestion and do not let the estimate
//! run far above it (libwebrtc's `AcknowledgedBitrateEstimator` and `AimdRateControl` use it
//! the same way).
//!
//! It is measured per feedback: the bytes a feedback reports received over the arrival time
//! since the previous feedback's last arrival. Only a feedback that continues where the
//! previous one stopped gives a sample. A feedback that was lost leaves a hole that no later
//! report fills (a transport-cc receiver reports each packet once): summing whatever arrives
//! over wall time would read the rate low by the share of feedback lost, and the estimate,
//! kept near this rate, would follow it down. Skipping the spans around a hole keeps the rate
//! right at the cost of fewer samples. A feedback held back behind a later one is skipped the
//! same way.

use std::time::{Duration, Instant};

use super::delay::signed_ms;

/// How far back the rate looks: long enough to smooth a keyframe burst, short enough to follow
/// a link that changes (libwebrtc's initial window is 500 ms too).
const WINDOW: Duration = Duration::from_millis(500);
/// Samples older than this are not used, however few the newer ones: the rate is of now.
const MAX_AGE: Duration = Duration::from_millis(1_500);
/// Samples must span this much before a rate is given: a rate over a few packets is noise.
const MIN_SPAN: Duration = Duration::from_millis(250);
/// Samples kept: a window's worth even with feedback every 10 ms.
const SAMPLES: usize = 64;

/// What one feedback reported, for the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FeedbackSpan {
    /// The lowest and highest sequence numbers it newly reported on (received or lost): a
    /// repeated report about an old packet says nothing about where this feedback starts.
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// Bytes of the packets it newly reported received, above the previous feedback's
    /// numbers.
    pub(super) bytes: u64,
    /// The latest arrival among those packets.
    pub(super) last_arrival: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    bytes: u64,
    /// At most [`WINDOW`]: microseconds fit in 32 bits and keep the ring at 2 KiB.
    span_us: u32,
}

/// Where the chain of feedback stands: the highest number reported and the latest arrival.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    last_seq: u64,
    last_arrival: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct AckedBitrate {
    /// A ring, oldest first from `head`; fixed, so measuring allocates nothing.
    samples: [Option<Sample>; SAMPLES],
    head: usize,
    anchor: Option<Anchor>,
    /// The rate measured before the measurement last started over, given until the new one
    /// spans enough: an old proof beats none (the rate controllers would otherwise treat the
    /// gap as knowing nothing, and halve or cut past the link's rate).
    carried_bps: Option<u64>,
}

impl AckedBitrate {
    pub(super) fn new() -> Self {
        AckedBitrate {
            samples: [None; SAMPLES],
            head: 0,
            anchor: None,
            carried_bps: None,
        }
    }

    /// The first sequence number a feedback must report on to continue the chain; packets
    /// below it count for nothing here.
    pub(super) fn next_seq(&self) -> u64 {
        self.anchor.map_or(0, |a| a.last_seq + 1)
    }

    pub(super) fn on_feedback(&mut self, span: FeedbackSpan) {
        let Some(anchor) = self.anchor else {
            self.anchor = Some(Anchor {
                last_seq: span.last_seq,
                last_arrival: span.last_arrival,
            });
            return;
        };
        if span.last_seq <= anchor.last_seq {
            // Nothing new: a repeated or late feedback.
            return;
        }
        let continues = span.first_seq <= anchor.last_seq + 1;
        self.anchor = Some(Anchor {
            last_seq: span.last_seq,
            last_arrival: span
                .last_arrival
                .or(anchor.last_arrival.filter(|_| continues)),
        });
        if !continues {
            return;
        }
        let (Some(from), Some(to)) = (anchor.last_arrival, span.last_arrival) else {
            return;
        };
        let elapsed_ms = signed_ms(to, from);
        if elapsed_ms <= 0.0 || elapsed_ms > WINDOW.as_secs_f64() * 1e3 {
            // A silence longer than the window, or a clock that jumped: what came before says
            // nothing about the rate now.
            self.restart();
            return;
        }
        self.push(Sample {
            at: to,
            bytes: span.bytes,
            span_us: (elapsed_ms * 1e3) as u32,
        });
    }

    fn push(&mut self, sample: Sample) {
        self.samples[self.head] = Some(sample);
        self.head = (self.head + 1) % SAMPLES;
    }

    fn restart(&mut self) {
        self.carried_bps = self.bitrate_bps();
        self.samples = [None; SAMPLES];
    }

    /// Bits per second over the window, once the samples span [`MIN_SPAN`]; until then the
    /// last rate measured, if any.
    pub(super) fn bitrate_bps(&self) -> Option<u64> {
        self.measured_bps().or(self.carried_bps)
    }

    fn measured_bps(&self) -> Option<u64> {
        let newest = self.samples[(self.head + SAMPLES - 1) % SAMPLES]?;
        let (mut bytes, mut span) = (0, Duration::ZERO);
        // Newest first, until they cover the window: with feedback lost, from further back.
        for k in 1..=SAMPLES {
            let Some(s) = self.samples[(self.head + SAMPLES - k) % SAMPLES] else {
                break;
            };
            if newest.at.saturating_duration_since(s.at) > MAX_AGE {
                break;
            }
            bytes += s.bytes;
            span += Duration::from_micros(u64::from(s.span_us));
            if span >= WINDOW {
                break;
            }
        }
        (span >= MIN_SPAN).then(|| (bytes as f64 * 8.0 / span.as_secs_f64()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feedback every 50 ms reporting 1 Mbit/s (6,250 bytes, 5 packets), starting at `from`;
    /// those in `lost` never arrive.
    fn feed(a: &mut AckedBitrate, t0: Instant, from: u64, count: u64, lost: &[u64]) {
        for k in from..from + count {
            if lost.contains(&k) {
                continue;
            }
            a.on_feedback(FeedbackSpan {
                first_seq: k * 5,
                last_seq: k * 5 + 4,
                bytes: 6_250,
                last_arrival: Some(t0 + Duration::from_millis(50 * k)),
            });
        }
    }

    fn assert_near(rate: Option<u64>, expected: u64) {
        let rate = rate.unwrap();
        assert!(
            rate.abs_diff(expected) <= expected / 50,
            "{rate} vs {expected}"
        );
    }

    #[test]
    fn measures_a_steady_rate_once_it_spans_enough() {
        let t0 = Instant::now();
        let mut a = AckedBitrate::new();
        feed(&mut a, t0, 0, 5, &[]);
        assert_eq!(a.bitrate_bps(), None, "200 ms is too short to tell");
        feed(&mut a, t0, 5, 40, &[]);
        assert_near(a.bitrate_bps(), 1_000_000);
    }

    #[test]
    fn lost_and_late_feedback_do_not_read_the_rate_low() {
        let t0 = Instant::now();
        let mut a = AckedBitrate::new();
        // Every third feedback lost.
        let lost: Vec<u64> = (0..40).filter(|k| k % 3 == 1).collect();
        feed(&mut a, t0, 0, 40, &lost);
        assert_near(a.bitrate_bps(), 1_000_000);
        // A late one, and a repeat, change nothing.
        feed(&mut a, t0, 37, 1, &[]);
        feed(&mut a, t0, 39, 1, &[]);
        assert_near(a.bitrate_bps(), 1_000_000);
    }

    #[test]
    fn follows_a_change_within_a_window() {
        let t0 = Instant::now();
        let mut a = AckedBitrate::new();
        feed(&mut a, t0, 0, 20, &[]);
        for k in 20..32 {
            a.on_feedback(FeedbackSpan {
                first_seq: k * 5,
                last_seq: k * 5 + 4,
                bytes: 1_250, // 200 kbit/s
                last_arrival: Some(t0 + Duration::from_millis(50 * k)),
            });
        }
        assert_near(a.bitrate_bps(), 200_000);
    }

    #[test]
    fn a_silence_or_a_clock_jump_restarts_and_carries_the_last_rate() {
        let t0 = Instant::now();
        let mut a = AckedBitrate::new();
        feed(&mut a, t0, 0, 20, &[]);
        // A feedback an hour off, then the real clock again.
        a.on_feedback(FeedbackSpan {
            first_seq: 100,
            last_seq: 104,
            bytes: 6_250,
            last_arrival: Some(t0 + Duration::from_secs(3_600)),
        });
        assert_eq!(a.measured_bps(), None);
        assert_near(a.bitrate_bps(), 1_000_000);
        feed(&mut a, t0, 21, 3, &[]);
        assert_eq!(a.measured_bps(), None, "a negative span restarts too");
        feed(&mut a, t0, 24, 20, &[]);
        assert_near(a.measured_bps(), 1_000_000);
    }
}
