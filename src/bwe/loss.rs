//! The loss-based bound (draft-ietf-rmcat-gcc-02 §6, libwebrtc's
//! `SendSideBandwidthEstimation`): under 2% loss the rate may grow, between 2% and 10% it
//! holds, above 10% it is cut by half the loss.
//!
//! One departure for a CDN: the sender does not slow down when the estimate does (a player gets
//! the publisher's bitrate), so on a link narrower than the stream the loss never stops, and
//! GCC's cut would repeat down to the minimum. Yet the acknowledged bitrate is what the link did
//! carry, lost packets notwithstanding: the bound never goes below it. On a congested link the
//! bound settles on the link's rate; under random loss, on the share of the stream that gets
//! through.

use std::time::{Duration, Instant};

/// Reports of fewer packets give no fraction: 1 lost in 5 is not 20% loss.
const MIN_PACKETS: u32 = 20;
const LOW_LOSS: f64 = 0.02;
const HIGH_LOSS: f64 = 0.10;
/// Growth of the bound per second while loss is low (libwebrtc: 8% a second plus 1 kbit/s).
const INCREASE_PER_S: f64 = 1.08;
const INCREASE_BPS_PER_S: f64 = 1_000.0;
/// A cut waits this plus a round trip after the last one, for the cut to show in the loss.
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug)]
pub(super) struct LossController {
    received: u32,
    lost: u32,
    /// The loss over the last completed window of reports.
    fraction: f64,
    bound_bps: f64,
    max_bps: f64,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl LossController {
    /// A controller whose bound starts at `max_bps`: no loss seen, no limit.
    pub(super) fn new(max_bps: f64) -> Self {
        LossController {
            received: 0,
            lost: 0,
            fraction: 0.0,
            bound_bps: max_bps,
            max_bps,
            last_update: None,
            last_decrease: None,
        }
    }

    pub(super) fn bound_bps(&self) -> f64 {
        self.bound_bps
    }

    pub(super) fn fraction(&self) -> f64 {
        self.fraction
    }

    pub(super) fn on_received(&mut self) {
        self.received += 1;
    }

    pub(super) fn on_lost(&mut self) {
        self.lost += 1;
    }

    /// A packet reported lost was reported received after all (a later or repeated report).
    pub(super) fn on_recovered(&mut self) {
        self.lost = self.lost.saturating_sub(1);
        self.received += 1;
    }

    /// After a feedback: once enough packets were reported, their loss moves the bound.
    /// `estimate_bps` is the final estimate the bound applies to.
    pub(super) fn update(
        &mut self,
        now: Instant,
        estimate_bps: f64,
        acked_bps: Option<f64>,
        rtt: Duration,
    ) {
        let reported = self.received + self.lost;
        if reported < MIN_PACKETS {
            return;
        }
        self.fraction = f64::from(self.lost) / f64::from(reported);
        self.received = 0;
        self.lost = 0;
        let elapsed = self
            .last_update
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64())
            .min(1.0);
        self.last_update = Some(now);
        let proven = acked_bps.unwrap_or(0.0);
        if self.fraction < LOW_LOSS {
            let base = self.bound_bps.max(estimate_bps);
            let grown = base * INCREASE_PER_S.powf(elapsed) + INCREASE_BPS_PER_S * elapsed;
            self.bound_bps = grown.max(proven).min(self.max_bps);
            return;
        }
        let due = self
            .last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_INTERVAL + rtt);
        if self.fraction > HIGH_LOSS && due {
            self.bound_bps = (estimate_bps * (1.0 - 0.5 * self.fraction)).max(proven);
            self.last_decrease = Some(now);
        } else {
            self.bound_bps = estimate_bps.max(proven);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    fn report(c: &mut LossController, received: u32, lost: u32) {
        (0..received).for_each(|_| c.on_received());
        (0..lost).for_each(|_| c.on_lost());
    }

    #[test]
    fn high_loss_cuts_by_half_the_loss_but_not_below_what_got_through() {
        let t0 = Instant::now();
        let mut c = LossController::new(50e6);
        report(&mut c, 80, 20);
        c.update(t0, 1e6, Some(500e3), RTT);
        assert_eq!(c.fraction(), 0.2);
        assert_eq!(c.bound_bps(), 900e3);
        // Too soon for another cut: hold.
        report(&mut c, 80, 20);
        c.update(t0 + Duration::from_millis(100), 900e3, Some(500e3), RTT);
        assert_eq!(c.bound_bps(), 900e3);
        // Heavy loss: the cut stops at the acknowledged bitrate.
        report(&mut c, 20, 80);
        c.update(t0 + Duration::from_millis(400), 900e3, Some(600e3), RTT);
        assert_eq!(c.bound_bps(), 600e3, "not 900 × (1 - 0.8 / 2) = 540 kbit/s");
    }

    #[test]
    fn moderate_loss_holds_and_low_loss_grows_eight_percent_a_second() {
        let t0 = Instant::now();
        let mut c = LossController::new(50e6);
        report(&mut c, 95, 5);
        c.update(t0, 1e6, None, RTT);
        assert_eq!(c.bound_bps(), 1e6);
        report(&mut c, 100, 1);
        c.update(t0 + Duration::from_secs(1), 1e6, None, RTT);
        assert_eq!(c.bound_bps(), 1.08e6 + 1e3);
    }

    #[test]
    fn too_few_reports_change_nothing_and_recoveries_are_not_losses() {
        let t0 = Instant::now();
        let mut c = LossController::new(50e6);
        report(&mut c, 5, 10);
        c.update(t0, 1e6, None, RTT);
        assert_eq!(c.bound_bps(), 50e6);
        (0..10).for_each(|_| c.on_recovered());
        c.update(t0, 1e6, None, RTT);
        assert_eq!(c.fraction(), 0.0);
    }
}
