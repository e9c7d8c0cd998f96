//! The estimator against a simulated path, on virtual time: a sender forwarding a video
//! stream at a fixed bitrate (as a CDN node does: it does not follow the estimate), a link with
//! a capacity, a drop-tail queue and random loss, and a receiver sending transport-wide
//! feedback every 50 ms.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;

const FRAME_RATE: u32 = 30;
const PACKET_BYTES: usize = 1_200;
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);
const ONE_WAY: Duration = Duration::from_millis(20);
const TICK: Duration = Duration::from_millis(1);

/// xorshift64*: deterministic, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of the path: random loss, then a FIFO bottleneck with a drop-tail queue.
struct Link {
    /// `None`: no bottleneck, every packet takes `ONE_WAY` plus jitter.
    capacity_bps: Option<u64>,
    /// A packet that would wait longer than this in the queue is dropped.
    max_queue: Duration,
    loss: f64,
    jitter: Duration,
    last_departure: Option<Instant>,
    last_arrival: Option<Instant>,
    rng: Rng,
}

impl Link {
    fn new(capacity_bps: Option<u64>, loss: f64, seed: u64) -> Self {
        Link {
            capacity_bps,
            max_queue: Duration::from_millis(300),
            loss,
            jitter: Duration::ZERO,
            last_departure: None,
            last_arrival: None,
            rng: Rng(seed),
        }
    }

    fn transmit(&mut self, sent: Instant, size: usize) -> Option<Instant> {
        if self.rng.next_f64() < self.loss {
            return None;
        }
        let departure = match self.capacity_bps {
            None => sent,
            Some(capacity) => {
                let start = self.last_departure.map_or(sent, |d| d.max(sent));
                if start - sent > self.max_queue {
                    return None;
                }
                let serialisation = Duration::from_secs_f64(size as f64 * 8.0 / capacity as f64);
                self.last_departure = Some(start + serialisation);
                start + serialisation
            }
        };
        let jitter = self.jitter.mul_f64(self.rng.next_f64());
        // The path does not reorder: jitter delays a packet, and those behind it with it.
        let arrival = (departure + ONE_WAY + jitter).max(self.last_arrival.unwrap_or(sent));
        self.last_arrival = Some(arrival);
        Some(arrival)
    }
}

/// One transport-wide feedback: per sequence number, the arrival or `None` for lost.
#[derive(Clone)]
struct Report(Vec<(u64, Option<Instant>)>);

/// What happens to feedback on its way back.
#[derive(Default)]
struct FeedbackFaults {
    drop: f64,
    duplicate: f64,
    /// Chance that a feedback is held back behind the next one.
    reorder: f64,
    /// Reports about packets never sent, added to every feedback, and arrival times an hour
    /// off in some.
    garbage: bool,
}

struct Sim {
    now: Instant,
    bwe: BandwidthEstimator,
    link: Link,
    send_bps: u64,
    next_frame: Instant,
    next_seq: u64,
    /// Per sequence number: when it arrives, or `None` if the link dropped it.
    arrivals: Vec<Option<Instant>>,
    next_report_seq: u64,
    next_report_at: Instant,
    faults: FeedbackFaults,
    fault_rng: Rng,
    /// Feedback on its way back, with when it gets there.
    in_flight: VecDeque<(Instant, Report)>,
    held_back: Option<Report>,
    /// The estimate at every tick, in kbit/s.
    trace: Vec<u64>,
    /// Ticks the delay trend said overuse.
    overuse_ms: usize,
}

impl Sim {
    fn new(link: Link, send_bps: u64) -> Self {
        Self::with_config(link, send_bps, BweConfig::default())
    }

    fn with_config(link: Link, send_bps: u64, config: BweConfig) -> Self {
        let now = Instant::now();
        Sim {
            now,
            bwe: BandwidthEstimator::new(config).unwrap(),
            link,
            send_bps,
            next_frame: now,
            next_seq: 0,
            arrivals: Vec::new(),
            next_report_seq: 0,
            next_report_at: now + FEEDBACK_INTERVAL,
            faults: FeedbackFaults::default(),
            fault_rng: Rng(0x5eed_f00d),
            in_flight: VecDeque::new(),
            held_back: None,
            trace: Vec::new(),
            overuse_ms: 0,
        }
    }

    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.send_due_frames();
            if self.now >= self.next_report_at {
                self.report();
                self.next_report_at += FEEDBACK_INTERVAL;
            }
            while self
                .in_flight
                .front()
                .is_some_and(|(at, _)| *at <= self.now)
            {
                let (at, feedback) = self.in_flight.pop_front().unwrap();
                self.bwe.on_feedback(at, feedback.0);
            }
            self.trace.push(self.bwe.estimate_bps() / 1_000);
            self.overuse_ms += usize::from(self.bwe.usage() == BandwidthUsage::Overuse);
            self.now += TICK;
        }
    }

    /// A frame's packets leave back to back, as a forwarder passes on a frame that arrived as
    /// a burst.
    fn send_due_frames(&mut self) {
        while self.next_frame <= self.now {
            let frame_bytes = (self.send_bps / 8 / u64::from(FRAME_RATE)) as usize;
            let packets = frame_bytes.div_ceil(PACKET_BYTES);
            for i in 0..packets {
                let sent = self.next_frame + Duration::from_micros(50 * i as u64);
                let size = PACKET_BYTES.min(frame_bytes - i * PACKET_BYTES);
                self.bwe.on_packet_sent(sent, self.next_seq, size);
                self.arrivals.push(self.link.transmit(sent, size));
                self.next_seq += 1;
            }
            self.next_frame += Duration::from_secs(1) / FRAME_RATE;
        }
    }

    /// The receiver's transport-wide feedback: every number from where the last one stopped to
    /// the newest packet that arrived by now; the missing ones among them are lost.
    fn report(&mut self) {
        let mut newest = None;
        for seq in self.next_report_seq..self.next_seq {
            match self.arrivals[seq as usize] {
                Some(at) if at <= self.now => newest = Some(seq),
                // The path is FIFO: nothing after a packet still in flight has arrived.
                Some(_) => break,
                None => {}
            }
        }
        let Some(newest) = newest else { return };
        let mut feedback: Vec<_> = (self.next_report_seq..=newest)
            .map(|seq| (seq, self.arrivals[seq as usize]))
            .collect();
        self.next_report_seq = newest + 1;
        if self.faults.garbage {
            let far = self.now + Duration::from_secs(3_600);
            feedback.extend([
                (newest + 10_000, Some(self.now)),
                (u64::MAX, None),
                (0, Some(far)),
            ]);
            // Now and then a real packet with an arrival time an hour off.
            if self.fault_rng.next_f64() < 0.05 {
                feedback[0].1 = feedback[0].1.map(|_| far);
            }
        }
        let feedback = Report(feedback);
        let back_at = self.now + ONE_WAY;
        if self.fault_rng.next_f64() < self.faults.drop {
            return;
        }
        if self.fault_rng.next_f64() < self.faults.duplicate {
            self.in_flight.push_back((back_at, feedback.clone()));
        }
        if let Some(held) = self.held_back.take() {
            self.in_flight.push_back((back_at, feedback));
            self.in_flight.push_back((back_at, held));
        } else if self.fault_rng.next_f64() < self.faults.reorder {
            self.held_back = Some(feedback);
        } else {
            self.in_flight.push_back((back_at, feedback));
        }
    }

    /// The trace from `from` seconds to the end.
    fn since(&self, from_s: f64) -> &[u64] {
        &self.trace[(from_s * 1_000.0) as usize..]
    }

    /// The first time (seconds) after which the estimate stays within `range` kbit/s.
    fn settled_within(&self, range: std::ops::RangeInclusive<u64>) -> Option<f64> {
        let last_outside = self.trace.iter().rposition(|k| !range.contains(k));
        match last_outside {
            None => Some(0.0),
            Some(i) if i + 1 == self.trace.len() => None,
            Some(i) => Some((i + 1) as f64 / 1_000.0),
        }
    }
}

fn mean(trace: &[u64]) -> u64 {
    trace.iter().sum::<u64>() / trace.len() as u64
}

fn min_max(trace: &[u64]) -> (u64, u64) {
    let min = trace.iter().copied().min().unwrap();
    let max = trace.iter().copied().max().unwrap();
    (min, max)
}

#[test]
fn an_uncapped_link_keeps_the_estimate_at_or_above_the_sent_rate() {
    let mut link = Link::new(None, 0.0, 1);
    link.jitter = Duration::from_millis(3);
    let mut sim = Sim::new(link, 1_500_000);
    sim.run(Duration::from_secs(30));
    let reached = sim.trace.iter().position(|&k| k >= 1_500).unwrap();
    let (min, max) = min_max(&sim.trace[reached..]);
    println!(
        "uncapped 1.5 Mbit/s: ≥ 1,500 kbit/s at {reached} ms, then {min}..{max} kbit/s; \
         overuse signalled {} ms",
        sim.overuse_ms
    );
    assert!(reached <= 1_000, "{reached}");
    assert!(min >= 1_500, "{min}");
    // Not far above what was sent: 1.5 × acked + 10 kbit/s, where a half-second window holds
    // 15 or 16 frames (acked reads up to 1.6 Mbit/s).
    assert!(max <= 2_450, "{max}");
    // Jitter is not congestion.
    assert_eq!(sim.overuse_ms, 0);
    assert_eq!(sim.bwe.loss_based_bps(), BweConfig::default().max_bps);
}

#[test]
fn a_link_capped_at_300_kbits_brings_the_estimate_to_300_kbits() {
    let mut sim = Sim::new(Link::new(Some(300_000), 0.0, 2), 1_500_000);
    sim.run(Duration::from_secs(30));
    // 0.8× to 1.3× the link.
    let settled = sim.settled_within(240..=390);
    let (min, max) = min_max(sim.since(10.0));
    println!(
        "300 kbit/s link, 1.5 Mbit/s sent: within 240..390 kbit/s from {settled:?} s; \
         from 10 s {min}..{max} kbit/s (acked {:?}, loss {:.2})",
        sim.bwe.acked_bps(),
        sim.bwe.loss_fraction()
    );
    assert!(settled.is_some_and(|s| s <= 10.0), "{settled:?}");
    assert!(sim.bwe.loss_fraction() > 0.7, "{}", sim.bwe.loss_fraction());
}

#[test]
fn a_deep_buffer_without_loss_is_found_by_delay_alone() {
    // 400 kbit/s into 300 kbit/s with a 10 s buffer: the queue grows a third of a millisecond
    // per millisecond and nothing is lost for 30 s. Only the delay trend tells.
    let mut link = Link::new(Some(300_000), 0.0, 10);
    link.max_queue = Duration::from_secs(10);
    let mut sim = Sim::new(link, 400_000);
    sim.run(Duration::from_secs(20));
    assert_eq!(sim.bwe.counts().lost, 0);
    let settled = sim.settled_within(150..=390);
    let (min, max) = min_max(sim.since(5.0));
    println!(
        "300 kbit/s link, 10 s buffer, 400 kbit/s sent: within 150..390 kbit/s from \
         {settled:?} s; from 5 s {min}..{max} kbit/s"
    );
    assert!(settled.is_some_and(|s| s <= 5.0), "{settled:?}");
}

#[test]
fn the_estimate_recovers_when_the_cap_lifts() {
    let mut sim = Sim::new(Link::new(Some(300_000), 0.0, 3), 2_000_000);
    sim.run(Duration::from_secs(15));
    let (min, max) = min_max(sim.since(10.0));
    assert!(min >= 150 && max <= 390, "capped: {min}..{max}");
    sim.link.capacity_bps = Some(5_000_000);
    sim.run(Duration::from_secs(45));
    let recovered = sim
        .since(15.0)
        .iter()
        .position(|&k| k >= 1_500)
        .map(|ms| ms as f64 / 1e3);
    let (min, max) = min_max(sim.since(30.0));
    println!(
        "cap 300 kbit/s -> 5 Mbit/s, 2 Mbit/s sent: ≥ 1,500 kbit/s {recovered:?} s after the \
         lift; from 15 s after it {min}..{max} kbit/s"
    );
    assert!(min >= 1_500, "{min}");
    assert!(max <= 3_100, "{max}");
}

#[test]
fn heavy_random_loss_lowers_the_estimate_and_light_loss_does_not() {
    let mut sim = Sim::new(Link::new(None, 0.20, 4), 1_000_000);
    sim.run(Duration::from_secs(20));
    let (min, max) = min_max(sim.since(10.0));
    let mean = mean(sim.since(10.0));
    println!("20% loss, 1 Mbit/s sent: from 10 s {min}..{max} kbit/s, mean {mean}");
    // Down from the 1 Mbit/s start to about what gets through (800 kbit/s).
    assert!(max < 1_000, "{max}");
    assert!((700..=880).contains(&mean), "{mean}");
    assert!(min >= 600, "{min}");

    let mut sim = Sim::new(Link::new(None, 0.01, 5), 1_000_000);
    sim.run(Duration::from_secs(20));
    let (min, max) = min_max(&sim.trace);
    println!(
        "1% loss, 1 Mbit/s sent: {min}..{max} kbit/s, ends at {}",
        sim.trace.last().unwrap()
    );
    assert!(min >= 1_000, "{min}");
    assert!(*sim.trace.last().unwrap() >= 1_000);
}

#[test]
fn mangled_feedback_neither_panics_nor_misleads() {
    let faults = || FeedbackFaults {
        drop: 0.2,
        duplicate: 0.2,
        reorder: 0.2,
        garbage: true,
    };
    let mut sim = Sim::new(Link::new(None, 0.0, 6), 1_500_000);
    sim.faults = faults();
    sim.run(Duration::from_secs(20));
    let (min, max) = min_max(sim.since(5.0));
    let counts = sim.bwe.counts();
    println!("uncapped, mangled feedback: from 5 s {min}..{max} kbit/s; {counts:?}");
    // A fifth of the feedback lost and a fifth held back: what got through is still read
    // right, not a fifth low.
    assert!(min >= 1_500, "{min}");
    assert!(max <= 2_450, "{max}");
    assert!(counts.duplicate > 0 && counts.unknown > 0);

    let mut sim = Sim::new(Link::new(Some(300_000), 0.0, 7), 1_500_000);
    sim.faults = faults();
    sim.run(Duration::from_secs(30));
    let settled = sim.settled_within(240..=390);
    let (min, max) = min_max(sim.since(10.0));
    println!(
        "300 kbit/s link, mangled feedback: within 240..390 kbit/s from {settled:?} s; from \
         10 s {min}..{max} kbit/s"
    );
    assert!(settled.is_some_and(|s| s <= 10.0), "{settled:?}");
}

#[test]
fn feedback_about_nothing_sent_is_harmless() {
    let now = Instant::now();
    let mut bwe = BandwidthEstimator::new(BweConfig::default()).unwrap();
    bwe.on_feedback(now, [(0, Some(now)), (5, None), (u64::MAX, Some(now))]);
    bwe.on_feedback(now, []);
    assert_eq!(bwe.estimate_bps(), 1_000_000);
    assert_eq!(bwe.counts().unknown, 3);
    // Sequence numbers going backwards are not recorded over live packets.
    bwe.on_packet_sent(now, 10, 1_000);
    bwe.on_packet_sent(now, 9, 1_000);
    bwe.on_feedback(now, [(9, Some(now)), (10, Some(now)), (10, None)]);
    assert_eq!(bwe.counts().received, 1);
    assert_eq!(bwe.counts().duplicate, 1);
}

#[test]
fn the_send_path_and_feedback_allocate_nothing_after_construction() {
    let mut sim = Sim::new(Link::new(Some(300_000), 0.05, 8), 3_000_000);
    let before = sim.bwe.heap_footprint();
    sim.faults.garbage = true;
    sim.run(Duration::from_secs(20));
    // 20 s at 3 Mbit/s is ~6,300 packets: the 4,096-slot ring went round and stayed put.
    assert!(sim.next_seq > 4_096);
    assert_eq!(sim.bwe.heap_footprint(), before);
    // Everything else the estimator holds is inline: fixed arrays, no collections.
    assert!(std::mem::size_of::<BandwidthEstimator>() < 4_096);
}

#[test]
fn a_remb_caps_the_estimate() {
    let mut sim = Sim::new(Link::new(None, 0.0, 9), 1_500_000);
    sim.run(Duration::from_secs(5));
    assert!(sim.bwe.estimate_bps() >= 1_500_000);
    sim.bwe.on_remb(sim.now, 800_000);
    assert_eq!(sim.bwe.estimate_bps(), 800_000);
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.bwe.estimate_bps(), 800_000);
    assert!(sim.bwe.delay_based_bps() >= 1_500_000);
}

#[test]
fn bad_configs_are_refused() {
    let ok = BweConfig::default();
    let err = |c| BandwidthEstimator::new(c).unwrap_err();
    assert_eq!(
        err(BweConfig {
            history_len: 0,
            ..ok
        }),
        BweConfigError::EmptyHistory
    );
    assert_eq!(
        err(BweConfig { min_bps: 0, ..ok }),
        BweConfigError::ZeroMinimum
    );
    assert!(matches!(
        err(BweConfig {
            start_bps: 10_000,
            ..ok
        }),
        BweConfigError::StartOutOfBounds { .. }
    ));
}
