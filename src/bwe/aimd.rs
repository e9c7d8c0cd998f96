//! The delay-based rate: additive/multiplicative increase while the delay trend is steady,
//! a cut to a fraction of the acknowledged bitrate on overuse (draft-ietf-rmcat-gcc-02 §5.5,
//! with libwebrtc's `AimdRateControl` and `LinkCapacityEstimator` refinements).
//!
//! Two departures for a CDN, where the sender does not follow the estimate (a player gets the
//! publisher's bitrate) and the estimate is read as what is known to fit:
//!
//! - the acknowledged bitrate can be well above the estimate with no sign of congestion. While
//!   the delay is steady that bitrate is proven to fit, and the rate rises to it at once
//!   instead of climbing 8% a second towards it;
//! - GCC stops the rate's growth at 1.5 × the acknowledged bitrate + 10 kbit/s; here a rate
//!   above that (the start value, or one from before the sender slowed down) is brought down
//!   to it, as nothing has shown that it fits.

use std::time::{Duration, Instant};

use super::delay::BandwidthUsage;

/// Multiplicative decrease on overuse: a little below what got through, to drain the queue
/// the overuse built (§5.5's alpha, libwebrtc's beta).
const BETA: f64 = 0.85;
/// Multiplicative increase per second when no link capacity is known (§5.5's eta).
const ETA: f64 = 1.08;
const MIN_MULTIPLICATIVE_STEP_BPS: f64 = 1_000.0;
/// The additive increase is about one packet per response time (§5.5), at least this.
const MIN_ADDITIVE_BPS_PER_S: f64 = 4_000.0;
const ASSUMED_FRAME_RATE: f64 = 30.0;
const ASSUMED_PACKET_BITS: f64 = 1_200.0 * 8.0;
/// The detector's own delay, added to the round trip to make the response time (§5.5).
const DETECTOR_DELAY: Duration = Duration::from_millis(100);
/// The rate may be above what got through by this factor plus this much: enough to follow a
/// sender that grows, not enough to claim capacity nothing has used (libwebrtc's
/// `ClampBitrate`).
const THROUGHPUT_HEADROOM: f64 = 1.5;
const THROUGHPUT_HEADROOM_BPS: f64 = 10_000.0;
/// Overuse before any acknowledged bitrate is known halves the rate at most this often.
const INITIAL_BACKOFF_INTERVAL: Duration = Duration::from_millis(200);
/// Bounds of the round trip used as the minimum time between two decreases.
const MIN_REDUCE_INTERVAL: Duration = Duration::from_millis(10);
const MAX_REDUCE_INTERVAL: Duration = Duration::from_millis(200);

/// What the delay-based rate controller did with the last feedback (§5.5's state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateState {
    /// Cut the rate: overuse.
    Decrease,
    /// Waiting for a queue to drain, or for the delay to settle after a cut.
    Hold,
    /// The delay is steady: raising the rate.
    Increase,
}

#[derive(Debug)]
pub(super) struct AimdRateControl {
    bitrate_bps: f64,
    min_bps: f64,
    max_bps: f64,
    state: RateState,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    /// The acknowledged bitrate last given, for updates that come without one.
    latest_acked_bps: Option<f64>,
    link: LinkCapacity,
    /// What the last update did, for diagnostics: `state` itself never rests on `Decrease`.
    last_action: RateState,
}

impl AimdRateControl {
    pub(super) fn new(start_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        AimdRateControl {
            bitrate_bps: start_bps,
            min_bps,
            max_bps,
            state: RateState::Hold,
            last_change: None,
            last_decrease: None,
            latest_acked_bps: None,
            link: LinkCapacity::default(),
            last_action: RateState::Hold,
        }
    }

    pub(super) fn bitrate_bps(&self) -> f64 {
        self.bitrate_bps
    }

    /// What the last update did.
    pub(super) fn last_action(&self) -> RateState {
        self.last_action
    }

    /// The detector's verdict after a feedback, with the acknowledged bitrate and round trip
    /// as they are now.
    pub(super) fn update(
        &mut self,
        now: Instant,
        usage: BandwidthUsage,
        acked_bps: Option<f64>,
        rtt: Duration,
    ) {
        let decreased_before = self.last_decrease;
        self.apply(now, usage, acked_bps, rtt);
        self.last_action = if self.last_decrease != decreased_before {
            RateState::Decrease
        } else {
            self.state
        };
    }

    fn apply(
        &mut self,
        now: Instant,
        usage: BandwidthUsage,
        acked_bps: Option<f64>,
        rtt: Duration,
    ) {
        if usage != BandwidthUsage::Overuse {
            self.change(now, usage, acked_bps, rtt);
            return;
        }
        match acked_bps {
            Some(acked) if self.time_to_reduce(now, acked, rtt) => {
                self.change(now, usage, acked_bps, rtt);
            }
            Some(_) => {}
            None if self
                .last_decrease
                .is_none_or(|t| now.saturating_duration_since(t) >= INITIAL_BACKOFF_INTERVAL) =>
            {
                // Nothing measured to cut to: halve, as libwebrtc does before its first
                // acknowledged bitrate.
                self.bitrate_bps = (self.bitrate_bps / 2.0).max(self.min_bps);
                self.last_change = Some(now);
                self.last_decrease = Some(now);
            }
            None => {}
        }
    }

    /// One cut per round trip: the effect of the last one is not visible sooner. Unless what
    /// gets through has fallen below half the rate: the last cut was far too small.
    fn time_to_reduce(&self, now: Instant, acked_bps: f64, rtt: Duration) -> bool {
        let interval = rtt.clamp(MIN_REDUCE_INTERVAL, MAX_REDUCE_INTERVAL);
        self.last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
            || acked_bps < 0.5 * self.bitrate_bps
    }

    fn change(&mut self, now: Instant, usage: BandwidthUsage, acked: Option<f64>, rtt: Duration) {
        if acked.is_some() {
            self.latest_acked_bps = acked;
        }
        let throughput = self.latest_acked_bps;
        self.state = match (usage, self.state) {
            (BandwidthUsage::Overuse, _) => RateState::Decrease,
            (BandwidthUsage::Underuse, _) => RateState::Hold,
            (BandwidthUsage::Normal, RateState::Hold) => {
                self.last_change = Some(now);
                RateState::Increase
            }
            (BandwidthUsage::Normal, state) => state,
        };
        let mut bitrate = self.bitrate_bps;
        match self.state {
            RateState::Hold => {}
            RateState::Increase => {
                bitrate = self.increased(now, throughput, acked, rtt);
                self.last_change = Some(now);
            }
            RateState::Decrease => {
                bitrate = self.decreased(throughput.unwrap_or(self.bitrate_bps));
                // Stay on hold until the queue has drained.
                self.state = RateState::Hold;
                self.last_change = Some(now);
                self.last_decrease = Some(now);
            }
        }
        self.bitrate_bps = self.clamp(bitrate, throughput);
    }

    fn increased(
        &mut self,
        now: Instant,
        throughput: Option<f64>,
        fresh_acked: Option<f64>,
        rtt: Duration,
    ) -> f64 {
        if throughput.is_some_and(|t| t > self.link.upper_bound_bps()) {
            // The link carries more than it did at the last congestion: the old point no
            // longer tells where the next one is.
            self.link.reset();
        }
        let elapsed = self
            .last_change
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let step = if self.link.has_estimate() {
            // Near the last congestion point: creep up, about a packet per response time.
            near_max_rate_per_s(self.bitrate_bps, rtt) * elapsed.as_secs_f64()
        } else {
            let alpha = ETA.powf(elapsed.as_secs_f64().min(1.0));
            (self.bitrate_bps * (alpha - 1.0)).max(MIN_MULTIPLICATIVE_STEP_BPS)
        };
        let increased = self.bitrate_bps + step;
        // What got through while the delay stayed steady fits: no need to climb to it.
        fresh_acked.map_or(increased, |acked| increased.max(acked))
    }

    fn decreased(&mut self, throughput: f64) -> f64 {
        let mut bitrate = BETA * throughput;
        if bitrate > self.bitrate_bps {
            if let Some(capacity) = self.link.estimate_bps() {
                bitrate = BETA * capacity;
            }
        }
        if throughput < self.link.lower_bound_bps() {
            // Far below the old congestion point: the link changed; start its estimate over.
            self.link.reset();
        }
        self.link.on_overuse(throughput);
        // Overuse never raises the rate.
        bitrate.min(self.bitrate_bps)
    }

    fn clamp(&self, bitrate: f64, throughput: Option<f64>) -> f64 {
        // GCC only stops growth at this limit and lets a rate already above it be, so that a
        // sender using less than it may keeps its headroom. Here the estimate is read as what
        // is known to fit, and a rate nothing has used is not known: it comes down to the
        // limit. Little is lost: when the publisher's bitrate rises, the estimate follows what
        // gets through at once (`increased`).
        let limit = throughput.map_or(f64::INFINITY, |t| {
            THROUGHPUT_HEADROOM * t + THROUGHPUT_HEADROOM_BPS
        });
        bitrate.min(limit).clamp(self.min_bps, self.max_bps)
    }
}

/// Additive increase near the last congestion point: one average packet per response time,
/// with packets sized as a 30 fps stream at this rate would cut its frames (§5.5).
fn near_max_rate_per_s(bitrate_bps: f64, rtt: Duration) -> f64 {
    let frame_bits = bitrate_bps / ASSUMED_FRAME_RATE;
    let packets_per_frame = (frame_bits / ASSUMED_PACKET_BITS).ceil().max(1.0);
    let packet_bits = frame_bits / packets_per_frame;
    let response = (rtt + DETECTOR_DELAY).as_secs_f64();
    (packet_bits / response).max(MIN_ADDITIVE_BPS_PER_S)
}

/// Where the link was congested last: a smoothed average of the acknowledged bitrate at
/// overuse, with its deviation (libwebrtc's `LinkCapacityEstimator`, in kbit/s as there, since
/// the deviation is normalised in those units).
#[derive(Debug)]
struct LinkCapacity {
    estimate_kbps: Option<f64>,
    /// Variance normalised by the estimate.
    deviation: f64,
}

const CAPACITY_SMOOTHING: f64 = 0.05;
const MIN_DEVIATION: f64 = 0.4;
const MAX_DEVIATION: f64 = 2.5;

impl Default for LinkCapacity {
    fn default() -> Self {
        LinkCapacity {
            estimate_kbps: None,
            deviation: MIN_DEVIATION,
        }
    }
}

impl LinkCapacity {
    fn has_estimate(&self) -> bool {
        self.estimate_kbps.is_some()
    }

    fn estimate_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|k| k * 1e3)
    }

    fn reset(&mut self) {
        self.estimate_kbps = None;
    }

    fn deviation_kbps(&self, estimate_kbps: f64) -> f64 {
        (self.deviation * estimate_kbps).sqrt()
    }

    fn upper_bound_bps(&self) -> f64 {
        self.estimate_kbps
            .map_or(f64::INFINITY, |e| (e + 3.0 * self.deviation_kbps(e)) * 1e3)
    }

    fn lower_bound_bps(&self) -> f64 {
        self.estimate_kbps
            .map_or(0.0, |e| (e - 3.0 * self.deviation_kbps(e)).max(0.0) * 1e3)
    }

    fn on_overuse(&mut self, throughput_bps: f64) {
        let sample = throughput_bps / 1e3;
        let estimate = match self.estimate_kbps {
            None => sample,
            Some(e) => (1.0 - CAPACITY_SMOOTHING) * e + CAPACITY_SMOOTHING * sample,
        };
        self.estimate_kbps = Some(estimate);
        let error = estimate - sample;
        self.deviation = (1.0 - CAPACITY_SMOOTHING) * self.deviation
            + CAPACITY_SMOOTHING * error * error / estimate.max(1.0);
        self.deviation = self.deviation.clamp(MIN_DEVIATION, MAX_DEVIATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    fn run(
        aimd: &mut AimdRateControl,
        t0: Instant,
        from_ms: u64,
        to_ms: u64,
        usage: BandwidthUsage,
        acked: Option<f64>,
    ) {
        for ms in (from_ms..to_ms).step_by(50) {
            aimd.update(t0 + Duration::from_millis(ms), usage, acked, RTT);
        }
    }

    #[test]
    fn far_from_congestion_the_increase_is_about_eight_percent_a_second() {
        let t0 = Instant::now();
        let mut aimd = AimdRateControl::new(1e6, 30e3, 50e6);
        run(&mut aimd, t0, 0, 10_050, BandwidthUsage::Normal, None);
        let expected = 1e6 * ETA.powi(10);
        let got = aimd.bitrate_bps();
        assert!((got / expected - 1.0).abs() < 0.02, "{got} vs {expected}");
        assert_eq!(aimd.last_action(), RateState::Increase);
    }

    #[test]
    fn overuse_cuts_to_beta_of_acked_once_per_round_trip_then_creeps_up() {
        let t0 = Instant::now();
        let mut aimd = AimdRateControl::new(1e6, 30e3, 50e6);
        aimd.update(t0, BandwidthUsage::Overuse, Some(400e3), RTT);
        assert_eq!(aimd.bitrate_bps(), BETA * 400e3);
        assert_eq!(aimd.last_action(), RateState::Decrease);
        // Again 10 ms later: too soon, the first cut has not taken effect.
        aimd.update(
            t0 + Duration::from_millis(10),
            BandwidthUsage::Overuse,
            Some(300e3),
            RTT,
        );
        assert_eq!(aimd.bitrate_bps(), BETA * 400e3);
        assert_eq!(aimd.last_action(), RateState::Hold);
        // Near the congestion point the increase is additive: at 340 kbit/s, a 5,667-bit
        // packet per 150 ms response time, 38 kbit/s per second.
        run(
            &mut aimd,
            t0,
            100,
            1_100,
            BandwidthUsage::Normal,
            Some(300e3),
        );
        let got = aimd.bitrate_bps();
        assert!((370e3..385e3).contains(&got), "{got}");
    }

    #[test]
    fn overuse_never_raises_the_rate() {
        let t0 = Instant::now();
        let mut aimd = AimdRateControl::new(300e3, 30e3, 50e6);
        // A queue building while more got through than the rate: hold the rate, not 0.85 × 1M.
        aimd.update(t0, BandwidthUsage::Overuse, Some(1e6), RTT);
        assert_eq!(aimd.bitrate_bps(), 300e3);
    }

    #[test]
    fn growth_stops_at_one_and_a_half_times_what_got_through() {
        let t0 = Instant::now();
        let mut aimd = AimdRateControl::new(100e3, 30e3, 50e6);
        run(
            &mut aimd,
            t0,
            0,
            30_000,
            BandwidthUsage::Normal,
            Some(200e3),
        );
        assert_eq!(aimd.bitrate_bps(), 1.5 * 200e3 + 10e3);
    }

    #[test]
    fn a_rate_nothing_has_used_comes_down_to_the_limit() {
        let t0 = Instant::now();
        let mut aimd = AimdRateControl::new(1e6, 30e3, 50e6);
        aimd.update(t0, BandwidthUsage::Normal, Some(200e3), RTT);
        assert_eq!(aimd.bitrate_bps(), 1.5 * 200e3 + 10e3);
    }

    #[test]
    fn rises_to_what_got_through_while_the_delay_is_steady() {
        let t0 = Instant::now();
        let mut aimd = AimdRateControl::new(300e3, 30e3, 50e6);
        aimd.update(t0, BandwidthUsage::Normal, Some(2e6), RTT);
        aimd.update(t0 + RTT, BandwidthUsage::Normal, Some(2e6), RTT);
        assert!(aimd.bitrate_bps() >= 2e6);
        // Not while a queue drains: then the acknowledged rate is the backlog.
        let mut aimd = AimdRateControl::new(300e3, 30e3, 50e6);
        aimd.update(t0, BandwidthUsage::Underuse, Some(2e6), RTT);
        assert_eq!(aimd.bitrate_bps(), 300e3);
    }

    #[test]
    fn overuse_without_a_measured_rate_halves_every_200_ms() {
        let t0 = Instant::now();
        let mut aimd = AimdRateControl::new(1e6, 30e3, 50e6);
        run(&mut aimd, t0, 0, 450, BandwidthUsage::Overuse, None);
        assert_eq!(aimd.bitrate_bps(), 1e6 / 8.0);
    }
}
