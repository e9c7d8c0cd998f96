//! The delay-based half of GCC's detector (draft-ietf-rmcat-gcc-02 §5): whether the queue on
//! the path to the player is growing, from how much later than they were sent packets arrive.
//!
//! Packets are grouped into send bursts ([`InterArrival`], §5.1, with §5.2's merging of
//! bursts the network delivered at once); the change of one-way delay
//! between consecutive groups is accumulated, smoothed and fitted with a line over the last
//! groups ([`Trendline`], libwebrtc's `TrendlineEstimator`, which replaced the draft's Kalman
//! filter); a slope above an adaptive threshold for long enough is overuse (§5.4, §5.5). The
//! parameters are libwebrtc's (`inter_arrival_delta.cc`, `trendline_estimator.cc`).

use std::time::{Duration, Instant};

/// Packets sent within this of a group's first packet belong to it (§5.1: a video frame is
/// sent as a burst; its packets' spacing on arrival is the link's, not the sender's).
const SEND_GROUP_LENGTH: Duration = Duration::from_millis(5);
/// A packet arriving this close after its group, having queued less than the group did, is
/// part of a burst the network delivered at once (§5.2: after an outage, or Wi-Fi
/// aggregation) and joins the group.
const BURST_DELTA: Duration = Duration::from_millis(5);
const MAX_BURST_DURATION: Duration = Duration::from_millis(100);
/// The receiver's clock moving this much further than ours between two groups is a clock
/// jump or a restarted receiver, not queueing.
const ARRIVAL_OFFSET_LIMIT_MS: f64 = 3_000.0;
/// Groups whose arrival went backwards, in a row, before the grouping starts over.
const REORDERED_RESET: u32 = 3;

/// Groups the trend line is fitted over, the smoothing of the accumulated delay and the gain
/// from slope to the thresholded value (libwebrtc's `TrendlineEstimatorSettings` defaults).
const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
/// The slope counts fully only after this many deltas: early slopes rest on little evidence.
const MIN_DELTAS: u32 = 60;
const MAX_DELTAS: u32 = 1_000;
/// The adaptive threshold (§5.4): it follows the thresholded trend up slowly and down fast,
/// within these bounds, so that it neither starves against TCP nor fires on jitter.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const INITIAL_THRESHOLD_MS: f64 = 12.5;
const MIN_THRESHOLD_MS: f64 = 6.0;
const MAX_THRESHOLD_MS: f64 = 600.0;
/// A trend this far beyond the threshold is a spike (a route change): the threshold does not
/// follow it.
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
const MAX_THRESHOLD_STEP_MS: f64 = 100.0;
/// Overuse must last this long, over more than one group, before it is signalled (§5.5).
const OVERUSE_TIME_MS: f64 = 10.0;

/// What the delay trend says about the path (§5.5's signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BandwidthUsage {
    /// Delay is steady: the path carries what is sent.
    Normal,
    /// Delay is growing: a queue is building, more is sent than the path carries.
    Overuse,
    /// Delay is shrinking: a queue is draining.
    Underuse,
}

/// One completed group compared with the one before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct GroupDelta {
    pub(super) send_ms: f64,
    pub(super) arrival_ms: f64,
    /// When the completed group's last packet arrived (the receiver's clock).
    pub(super) arrival_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: Instant,
    last_send: Instant,
    first_arrival: Instant,
    last_arrival: Instant,
    /// When the feedback reporting its latest packet reached us (our clock).
    reported_at: Instant,
}

impl Group {
    fn new(sent: Instant, arrival: Instant, now: Instant) -> Self {
        Group {
            first_send: sent,
            last_send: sent,
            first_arrival: arrival,
            last_arrival: arrival,
            reported_at: now,
        }
    }
}

/// Groups packets into send bursts and gives the send and arrival spacing of consecutive
/// groups (§5.1, §5.2).
#[derive(Debug, Default)]
pub(super) struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
    reordered: u32,
}

impl InterArrival {
    /// One received packet, in the order feedback reports them. Returns the deltas when this
    /// packet starts a new group, completing one that has a predecessor.
    pub(super) fn on_packet(
        &mut self,
        sent: Instant,
        arrival: Instant,
        now: Instant,
    ) -> Option<GroupDelta> {
        let Some(current) = &mut self.current else {
            self.current = Some(Group::new(sent, arrival, now));
            return None;
        };
        if sent < current.first_send {
            // Sent before the group being built: its group is already done with.
            return None;
        }
        if !starts_new_group(current, sent, arrival) {
            current.last_send = current.last_send.max(sent);
            current.last_arrival = current.last_arrival.max(arrival);
            current.reported_at = now;
            return None;
        }
        let current = *current;
        let mut delta = None;
        if let Some(previous) = self.previous {
            let arrival_ms = signed_ms(current.last_arrival, previous.last_arrival);
            let reported_ms = signed_ms(current.reported_at, previous.reported_at);
            if arrival_ms - reported_ms >= ARRIVAL_OFFSET_LIMIT_MS {
                self.restart(sent, arrival, now);
                return None;
            }
            if arrival_ms < 0.0 {
                // The group arrived before the one sent ahead of it. Its packets say nothing
                // reliable; several in a row mean the receiver's clock went back.
                self.reordered += 1;
                if self.reordered >= REORDERED_RESET {
                    self.restart(sent, arrival, now);
                }
                return None;
            }
            self.reordered = 0;
            delta = Some(GroupDelta {
                send_ms: signed_ms(current.last_send, previous.last_send),
                arrival_ms,
                arrival_at: current.last_arrival,
            });
        }
        self.previous = Some(current);
        self.current = Some(Group::new(sent, arrival, now));
        delta
    }

    fn restart(&mut self, sent: Instant, arrival: Instant, now: Instant) {
        self.previous = None;
        self.current = Some(Group::new(sent, arrival, now));
        self.reordered = 0;
    }
}

fn starts_new_group(group: &Group, sent: Instant, arrival: Instant) -> bool {
    if belongs_to_burst(group, sent, arrival) {
        return false;
    }
    sent.saturating_duration_since(group.first_send) > SEND_GROUP_LENGTH
}

fn belongs_to_burst(group: &Group, sent: Instant, arrival: Instant) -> bool {
    let send_ms = signed_ms(sent, group.last_send);
    if send_ms == 0.0 {
        return true;
    }
    let arrival_ms = signed_ms(arrival, group.last_arrival);
    let queued_less = arrival_ms - send_ms < 0.0;
    queued_less
        && arrival_ms <= BURST_DELTA.as_secs_f64() * 1e3
        && arrival.saturating_duration_since(group.first_arrival) < MAX_BURST_DURATION
}

/// `a - b` in milliseconds, negative when `a` is earlier.
pub(super) fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(b.duration_since(a).as_secs_f64() * 1e3),
    }
}

/// The trend of the one-way delay over the last [`WINDOW`] groups and the overuse detector
/// on it.
#[derive(Debug)]
pub(super) struct Trendline {
    /// (arrival ms since the first group, smoothed accumulated delay ms), oldest first from
    /// `head`; a fixed ring so that updating allocates nothing.
    points: [(f64, f64); WINDOW],
    head: usize,
    len: usize,
    first_arrival: Option<Instant>,
    deltas: u32,
    accumulated_ms: f64,
    smoothed_ms: f64,
    previous_trend: f64,
    threshold_ms: f64,
    threshold_updated: Option<Instant>,
    /// How long the trend has been above the threshold (`None`: it is not).
    overusing_ms: Option<f64>,
    overuse_count: u32,
    usage: BandwidthUsage,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            points: [(0.0, 0.0); WINDOW],
            head: 0,
            len: 0,
            first_arrival: None,
            deltas: 0,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            previous_trend: 0.0,
            threshold_ms: INITIAL_THRESHOLD_MS,
            threshold_updated: None,
            overusing_ms: None,
            overuse_count: 0,
            usage: BandwidthUsage::Normal,
        }
    }
}

impl Trendline {
    pub(super) fn usage(&self) -> BandwidthUsage {
        self.usage
    }

    pub(super) fn on_delta(&mut self, delta: GroupDelta) {
        self.deltas = (self.deltas + 1).min(MAX_DELTAS);
        let first = *self.first_arrival.get_or_insert(delta.arrival_at);
        self.accumulated_ms += delta.arrival_ms - delta.send_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        self.push((signed_ms(delta.arrival_at, first), self.smoothed_ms));
        let trend = if self.len == WINDOW {
            self.slope().unwrap_or(self.previous_trend)
        } else {
            self.previous_trend
        };
        self.detect(trend, delta.send_ms, delta.arrival_at);
    }

    fn push(&mut self, point: (f64, f64)) {
        if self.len < WINDOW {
            self.points[(self.head + self.len) % WINDOW] = point;
            self.len += 1;
        } else {
            self.points[self.head] = point;
            self.head = (self.head + 1) % WINDOW;
        }
    }

    /// Least-squares slope of delay over arrival time; `None` when all points share one time.
    fn slope(&self) -> Option<f64> {
        let n = self.len as f64;
        let points = &self.points[..self.len];
        let (sum_x, sum_y) = points
            .iter()
            .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
        let (mean_x, mean_y) = (sum_x / n, sum_y / n);
        let (mut num, mut den) = (0.0, 0.0);
        for &(x, y) in points {
            num += (x - mean_x) * (y - mean_y);
            den += (x - mean_x) * (x - mean_x);
        }
        (den != 0.0).then(|| num / den)
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now: Instant) {
        if self.deltas < 2 {
            self.usage = BandwidthUsage::Normal;
            return;
        }
        let modified = f64::from(self.deltas.min(MIN_DELTAS)) * trend * THRESHOLD_GAIN;
        if modified > self.threshold_ms {
            // The first sample above assumes it was over for half the time since the last.
            let over = match self.overusing_ms {
                None => send_delta_ms / 2.0,
                Some(ms) => ms + send_delta_ms,
            };
            self.overusing_ms = Some(over);
            self.overuse_count += 1;
            // A trend that is already falling back is a queue about to drain: not overuse.
            if over > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.previous_trend {
                self.overusing_ms = Some(0.0);
                self.overuse_count = 0;
                self.usage = BandwidthUsage::Overuse;
            }
        } else {
            self.overusing_ms = None;
            self.overuse_count = 0;
            self.usage = if modified < -self.threshold_ms {
                BandwidthUsage::Underuse
            } else {
                BandwidthUsage::Normal
            };
        }
        self.previous_trend = trend;
        self.adapt_threshold(modified, now);
    }

    fn adapt_threshold(&mut self, modified: f64, now: Instant) {
        let last = *self.threshold_updated.get_or_insert(now);
        self.threshold_updated = Some(now);
        if modified.abs() > self.threshold_ms + MAX_ADAPT_OFFSET_MS {
            return;
        }
        let k = if modified.abs() < self.threshold_ms {
            K_DOWN
        } else {
            K_UP
        };
        let dt_ms = signed_ms(now, last).clamp(0.0, MAX_THRESHOLD_STEP_MS);
        self.threshold_ms += k * (modified.abs() - self.threshold_ms) * dt_ms;
        self.threshold_ms = self.threshold_ms.clamp(MIN_THRESHOLD_MS, MAX_THRESHOLD_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: f64) -> Instant {
        t0 + Duration::from_secs_f64(ms / 1e3)
    }

    /// Packets sent every `gap_ms`, each arriving `delay(i)` after it was sent; returns the
    /// usage after each packet.
    fn run(gap_ms: f64, count: usize, delay: impl Fn(usize) -> f64) -> Vec<BandwidthUsage> {
        let t0 = Instant::now();
        let mut ia = InterArrival::default();
        let mut tl = Trendline::default();
        let mut out = Vec::new();
        for i in 0..count {
            let sent = ms(t0, i as f64 * gap_ms);
            let arrival = ms(t0, i as f64 * gap_ms + delay(i));
            if let Some(d) = ia.on_packet(sent, arrival, arrival) {
                tl.on_delta(d);
            }
            out.push(tl.usage());
        }
        out
    }

    #[test]
    fn groups_a_burst_and_measures_between_groups() {
        let t0 = Instant::now();
        let mut ia = InterArrival::default();
        // Three packets in 2 ms, then the next burst 33 ms later, then a third.
        for (s, a) in [
            (0.0, 20.0),
            (1.0, 21.0),
            (2.0, 22.0),
            (33.0, 53.0),
            (34.0, 56.0),
        ] {
            assert_eq!(ia.on_packet(ms(t0, s), ms(t0, a), ms(t0, a)), None);
        }
        let d = ia
            .on_packet(ms(t0, 66.0), ms(t0, 86.0), ms(t0, 86.0))
            .unwrap();
        assert!((d.send_ms - 32.0).abs() < 1e-6, "{d:?}");
        assert!((d.arrival_ms - 34.0).abs() < 1e-6, "{d:?}");
        assert_eq!(d.arrival_at, ms(t0, 56.0));
    }

    #[test]
    fn a_packet_sent_before_the_current_group_is_ignored() {
        let t0 = Instant::now();
        let mut ia = InterArrival::default();
        ia.on_packet(ms(t0, 0.0), ms(t0, 20.0), ms(t0, 20.0));
        ia.on_packet(ms(t0, 10.0), ms(t0, 30.0), ms(t0, 30.0));
        assert_eq!(ia.on_packet(ms(t0, 5.0), ms(t0, 40.0), ms(t0, 40.0)), None);
        let d = ia
            .on_packet(ms(t0, 20.0), ms(t0, 40.0), ms(t0, 40.0))
            .unwrap();
        assert!((d.send_ms - 10.0).abs() < 1e-6);
    }

    #[test]
    fn the_threshold_follows_the_trend_up_slowly_down_fast_and_ignores_spikes() {
        let t0 = Instant::now();
        let mut tl = Trendline::default();
        let at = |step: u64| t0 + Duration::from_millis(5 * step);
        // A sustained 20 ms (within 15 ms of the threshold): about 1 - e^(-0.0087 × 1000) of
        // the way up in a second.
        for step in 0..=200 {
            tl.adapt_threshold(20.0, at(step));
        }
        assert!(
            (19.0..20.0).contains(&tl.threshold_ms),
            "{}",
            tl.threshold_ms
        );
        // A spike far above is not followed.
        tl.adapt_threshold(100.0, at(201));
        assert!(tl.threshold_ms < 20.0);
        // Down to the floor four times as fast.
        for step in 202..=252 {
            tl.adapt_threshold(0.0, at(step));
        }
        assert_eq!(tl.threshold_ms, MIN_THRESHOLD_MS);
    }

    #[test]
    fn constant_delay_is_normal() {
        let usage = run(5.0, 2_000, |i| 20.0 + (i % 3) as f64 * 0.5);
        assert!(usage.iter().all(|&u| u == BandwidthUsage::Normal));
    }

    #[test]
    fn a_growing_queue_is_overuse_and_a_draining_one_underuse() {
        // Delay grows 1 ms per 10 ms packet for a second, then drains as fast.
        let usage = run(10.0, 300, |i| match i {
            0..100 => 20.0,
            100..200 => 20.0 + (i - 100) as f64,
            _ => (120.0 - (i - 200) as f64 * 2.0).max(20.0),
        });
        let first_overuse = usage.iter().position(|&u| u == BandwidthUsage::Overuse);
        assert!(
            first_overuse.is_some_and(|i| (100..130).contains(&i)),
            "{first_overuse:?}"
        );
        assert!(usage[..100].iter().all(|&u| u == BandwidthUsage::Normal));
        assert!(usage[200..260].contains(&BandwidthUsage::Underuse));
    }
}
