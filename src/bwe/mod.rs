//! A player's available bandwidth, estimated from transport-wide congestion control feedback,
//! sans-IO. Each player's session holds one (through `crate::session::transport_cc`); the media
//! core reports its estimate to signalling.
//!
//! The node numbers every packet it sends a player with a transport-wide sequence number
//! ([`BandwidthEstimator::on_packet_sent`]) and reads the player's feedback: which packets
//! arrived, when by the player's clock, and which did not ([`BandwidthEstimator::on_feedback`]).
//! From that the estimator keeps Google Congestion Control's two bounds
//! (draft-ietf-rmcat-gcc-02, as libwebrtc's `goog_cc` implements it today):
//!
//! - delay-based (`delay`, `aimd`): a queue building on the path shows as packets arriving
//!   later and later relative to their send times; the rate grows while the delay is steady
//!   and is cut to 0.85 × the acknowledged bitrate when it grows;
//! - loss-based (`loss`): under 2% loss the rate may grow, 2–10% holds it, above 10% cuts it.
//!
//! The estimate is the smaller of the two, capped by the player's REMB if it sends one, within
//! [`BweConfig::min_bps`]..[`BweConfig::max_bps`].
//!
//! What it means here. A CDN node does not send a player what the estimate allows: it forwards
//! the publisher's bitrate (or a simulcast layer of it). So the estimate is read as "at least
//! this much fits": it is compared with the publisher's bitrate (WCS's `NOT_ENOUGH_BANDWIDTH`
//! when 10% or more below) and with the layers' bitrates. Two departures from GCC follow from
//! that, both anchored on the acknowledged bitrate — what the player reports having received,
//! the one number that is proof rather than inference:
//!
//! - while the delay is steady the estimate rises to the acknowledged bitrate at once, rather
//!   than climbing towards it 8% a second; and it is kept at most at 1.5 × it + 10 kbit/s,
//!   where GCC only stops its growth there: no more than what got through was tried, so
//!   nothing shows that much more fits (the start estimate comes down to it as soon as a
//!   bitrate is measured);
//! - loss never cuts the estimate below the acknowledged bitrate: the sender does not slow
//!   down, so on a link narrower than the stream the loss never stops, and GCC's repeated cuts
//!   would end at the minimum instead of at the link's rate.
//!
//! Nothing here allocates after [`BandwidthEstimator::new`]: the send history is a ring sized
//! once, the rest is fixed arrays, and the feedback is read through an iterator. The estimator
//! sits on the media forwarding path, where the node allows no allocation per packet.
//!
//! No timer: the estimate changes only with feedback. A player that stops sending feedback
//! keeps its last estimate.

mod acked;
mod aimd;
pub mod alarm;
mod delay;
mod history;
mod loss;

use std::time::{Duration, Instant};

pub use aimd::RateState;
pub use delay::BandwidthUsage;

use acked::{AckedBitrate, FeedbackSpan};
use aimd::AimdRateControl;
use delay::{InterArrival, Trendline};
use history::{SendHistory, Status};
use loss::LossController;

/// The round trip assumed until feedback has measured one (libwebrtc's default).
const DEFAULT_RTT: Duration = Duration::from_millis(200);

/// Bounds and starting point of the estimate, and the length of the send history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BweConfig {
    /// The estimate before any feedback.
    pub start_bps: u64,
    /// The estimate never goes below this: below it, nothing playable fits anyway.
    pub min_bps: u64,
    /// Nor above this.
    pub max_bps: u64,
    /// Packets remembered for their feedback: enough for the feedback interval plus a round
    /// trip at the highest rate sent. Feedback about older packets is ignored.
    pub history_len: usize,
}

impl BweConfig {
    /// The defaults, usable in constants.
    pub const DEFAULT: BweConfig = BweConfig {
        start_bps: 1_000_000,
        // libwebrtc's lowest video bitrate (its congestion controller alone would go down
        // to 5 kbit/s, where no video plays).
        min_bps: 30_000,
        max_bps: 50_000_000,
        // Two seconds at 20 Mbit/s of 1,200-byte packets: 64 KiB per player.
        history_len: 4_096,
    };
}

impl Default for BweConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a [`BweConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BweConfigError {
    /// The history must hold at least one packet.
    #[error("the send history must hold at least one packet")]
    EmptyHistory,
    /// The start estimate lies outside the bounds.
    #[error("start estimate {start_bps} bit/s is outside {min_bps}..={max_bps} bit/s")]
    StartOutOfBounds {
        /// [`BweConfig::start_bps`].
        start_bps: u64,
        /// [`BweConfig::min_bps`].
        min_bps: u64,
        /// [`BweConfig::max_bps`].
        max_bps: u64,
    },
    /// A zero minimum: an estimate of nothing could never grow multiplicatively.
    #[error("the minimum estimate must be above 0 bit/s")]
    ZeroMinimum,
}

/// What feedback has reported, since the estimator was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackCounts {
    /// Packets reported received (the first time).
    pub received: u64,
    /// Packets reported lost (the first time).
    pub lost: u64,
    /// Packets reported lost, then received in a later or repeated report.
    pub recovered: u64,
    /// Reports about a packet already reported on: repeated or reordered feedback.
    pub duplicate: u64,
    /// Reports about a packet never sent, or too old to be remembered.
    pub unknown: u64,
}

/// One player's available bandwidth, from the feedback to what was sent to it.
#[derive(Debug)]
pub struct BandwidthEstimator {
    config: BweConfig,
    history: SendHistory,
    acked: AckedBitrate,
    inter_arrival: InterArrival,
    trendline: Trendline,
    aimd: AimdRateControl,
    loss: LossController,
    remb_bps: Option<u64>,
    rtt: Option<Duration>,
    estimate_bps: u64,
    counts: FeedbackCounts,
}

impl BandwidthEstimator {
    /// An estimator at [`BweConfig::start_bps`], with its send history allocated here once.
    pub fn new(config: BweConfig) -> Result<Self, BweConfigError> {
        if config.history_len == 0 {
            return Err(BweConfigError::EmptyHistory);
        }
        if config.min_bps == 0 {
            return Err(BweConfigError::ZeroMinimum);
        }
        if !(config.min_bps..=config.max_bps).contains(&config.start_bps) {
            return Err(BweConfigError::StartOutOfBounds {
                start_bps: config.start_bps,
                min_bps: config.min_bps,
                max_bps: config.max_bps,
            });
        }
        let (start, min, max) = (
            config.start_bps as f64,
            config.min_bps as f64,
            config.max_bps as f64,
        );
        Ok(BandwidthEstimator {
            config,
            history: SendHistory::new(config.history_len),
            acked: AckedBitrate::new(),
            inter_arrival: InterArrival::default(),
            trendline: Trendline::default(),
            aimd: AimdRateControl::new(start, min, max),
            loss: LossController::new(max),
            remb_bps: None,
            rtt: None,
            estimate_bps: config.start_bps,
            counts: FeedbackCounts::default(),
        })
    }

    /// A packet of `size_bytes` went to the player with the extended transport-wide sequence
    /// number `transport_seq`. Numbers must increase; one that does not is ignored (the
    /// packets it would shadow are still awaiting feedback).
    pub fn on_packet_sent(&mut self, now: Instant, transport_seq: u64, size_bytes: usize) {
        self.history.record(now, transport_seq, size_bytes);
    }

    /// The player's feedback, received at `now`: for each extended sequence number, when the
    /// packet arrived by the player's clock (only differences between arrival times matter),
    /// or `None` for a packet it reports missing. Feedback may come late, twice or out of
    /// order; reports about unknown or forgotten packets are ignored.
    pub fn on_feedback<I>(&mut self, now: Instant, results: I)
    where
        I: IntoIterator<Item = (u64, Option<Instant>)>,
    {
        let chain_from = self.acked.next_seq();
        let mut span: Option<FeedbackSpan> = None;
        let mut newest_sent = None;
        for (seq, arrival) in results {
            let Some(outcome) = self.on_result(now, seq, arrival) else {
                self.counts.unknown += 1;
                continue;
            };
            if let Outcome::Duplicate = outcome {
                continue;
            }
            let span = span.get_or_insert(FeedbackSpan {
                first_seq: seq,
                last_seq: seq,
                bytes: 0,
                last_arrival: None,
            });
            span.first_seq = span.first_seq.min(seq);
            span.last_seq = span.last_seq.max(seq);
            if let Outcome::Received {
                sent,
                arrival,
                size,
            } = outcome
            {
                newest_sent = newest_sent.max(sent);
                // Below the chain: a late report about a packet the rate has passed by.
                if seq >= chain_from {
                    span.bytes += u64::from(size);
                    span.last_arrival = span.last_arrival.max(Some(arrival));
                }
            }
        }
        let Some(span) = span else {
            return;
        };
        self.acked.on_feedback(span);
        if let Some(sent) = newest_sent {
            self.sample_rtt(now.saturating_duration_since(sent));
        }
        let acked = self.acked.bitrate_bps().map(|b| b as f64);
        let rtt = self.rtt.unwrap_or(DEFAULT_RTT);
        self.aimd.update(now, self.trendline.usage(), acked, rtt);
        self.loss.update(now, self.estimate_bps as f64, acked, rtt);
        self.estimate_bps = self.combined();
    }

    /// The player's REMB: it caps the estimate from now on (a later REMB replaces it).
    pub fn on_remb(&mut self, _now: Instant, bitrate_bps: u64) {
        self.remb_bps = Some(bitrate_bps);
        self.estimate_bps = self.combined();
    }

    /// The available bandwidth estimate, bits per second.
    pub fn estimate_bps(&self) -> u64 {
        self.estimate_bps
    }

    /// The delay-based bound alone, bits per second.
    pub fn delay_based_bps(&self) -> u64 {
        self.aimd.bitrate_bps() as u64
    }

    /// The loss-based bound alone, bits per second ([`BweConfig::max_bps`] while loss is low).
    pub fn loss_based_bps(&self) -> u64 {
        self.loss.bound_bps() as u64
    }

    /// What the player reported receiving, bits per second, over the last half second of
    /// arrival time that feedback covers (spans next to a lost feedback are left out, so lost
    /// feedback does not read as a lower rate). `None` until reports span a quarter of a
    /// second; after a silence or a clock jump, the rate from before until they do again.
    pub fn acked_bps(&self) -> Option<u64> {
        self.acked.bitrate_bps()
    }

    /// The share of packets lost over the last window of at least 20 reported packets.
    pub fn loss_fraction(&self) -> f64 {
        self.loss.fraction()
    }

    /// The round trip as seen from feedback: from sending the newest packet a feedback reports
    /// received to getting that feedback, smoothed. It includes the player's wait before
    /// sending feedback, so it is above the network's round trip by up to the feedback
    /// interval. `None` before any feedback.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// What the delay-based rate controller did with the last feedback.
    pub fn state(&self) -> RateState {
        self.aimd.last_action()
    }

    /// What the delay trend says about the path now.
    pub fn usage(&self) -> BandwidthUsage {
        self.trendline.usage()
    }

    /// What feedback has reported so far.
    pub fn counts(&self) -> FeedbackCounts {
        self.counts
    }

    /// One packet's report; `None` for a packet not in the history.
    fn on_result(&mut self, now: Instant, seq: u64, arrival: Option<Instant>) -> Option<Outcome> {
        let slot = self.history.get_mut(seq)?;
        let prior = *slot;
        let arrival = match (prior.status, arrival) {
            (Status::Sent, None) => {
                slot.status = Status::Lost;
                self.loss.on_lost();
                self.counts.lost += 1;
                return Some(Outcome::Lost);
            }
            (Status::Sent | Status::Lost, Some(arrival)) => {
                slot.status = Status::Received;
                arrival
            }
            _ => {
                self.counts.duplicate += 1;
                return Some(Outcome::Duplicate);
            }
        };
        if prior.status == Status::Lost {
            self.loss.on_recovered();
            self.counts.recovered += 1;
        } else {
            self.loss.on_received();
            self.counts.received += 1;
        }
        let sent = self.history.sent_at(&prior);
        if let Some(sent) = sent {
            if let Some(delta) = self.inter_arrival.on_packet(sent, arrival, now) {
                self.trendline.on_delta(delta);
            }
        }
        Some(Outcome::Received {
            sent,
            arrival,
            size: prior.size,
        })
    }

    fn sample_rtt(&mut self, sample: Duration) {
        // RFC 6298's smoothing: one late feedback should not swing the decrease interval.
        self.rtt = Some(match self.rtt {
            None => sample,
            Some(rtt) => (rtt * 7 + sample) / 8,
        });
    }

    fn combined(&self) -> u64 {
        let mut bps = self.aimd.bitrate_bps().min(self.loss.bound_bps()) as u64;
        if let Some(remb) = self.remb_bps {
            bps = bps.min(remb);
        }
        bps.clamp(self.config.min_bps, self.config.max_bps)
    }

    #[cfg(test)]
    fn heap_footprint(&self) -> (*const history::Slot, usize) {
        self.history.footprint()
    }
}

/// What a report did to one packet.
enum Outcome {
    Duplicate,
    Lost,
    Received {
        sent: Option<Instant>,
        arrival: Instant,
        size: u32,
    },
}

#[cfg(test)]
mod tests;
