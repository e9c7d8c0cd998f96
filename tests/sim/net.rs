//! The simulator's network: datagrams between addresses, delivered on the virtual clock.
//!
//! Every ordered pair of addresses is a link with its own loss, delay, jitter, duplication
//! and reordering, and can be taken down and brought back, or limited to a rate (a token bucket
//! with a bounded queue, as Linux's `tbf`). All randomness comes from one generator seeded by the
//! scenario, so a failing run is replayed exactly by its seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How one direction between two addresses behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Fraction of datagrams dropped, `0.0..=1.0`.
    pub loss: f64,
    /// One-way delay of every datagram.
    pub delay: Duration,
    /// Extra delay, uniform in `0..=jitter`, per datagram. Datagrams may overtake each other
    /// by up to this much.
    pub jitter: Duration,
    /// Fraction of datagrams delivered twice (the copy a little later).
    pub duplicate: f64,
    /// Fraction of datagrams held back by `reorder_delay`, so later ones overtake them.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// A link that is down drops everything.
    pub up: bool,
    /// A bottleneck in front of the delay: datagrams leave at its rate, after waiting in its
    /// queue; what does not fit in the queue is dropped.
    pub rate: Option<RateLimit>,
}

/// A token bucket filter, as Linux's `tbf` qdisc: tokens (bytes) accrue at `rate_bps` up to
/// `burst_bytes`; a datagram leaves when the bucket holds its size, in the order datagrams came;
/// while it waits it takes room in the queue, and one that would make the waiting bytes exceed
/// `queue_bytes` is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rate_bps: u64,
    pub burst_bytes: u64,
    pub queue_bytes: u64,
}

impl RateLimit {
    /// What `tc qdisc add ... tbf rate R burst B latency L` sets up: a queue of `L` at the rate,
    /// plus the burst (tbf's own `limit`).
    pub fn tbf(rate_bps: u64, burst_bytes: u64, latency: Duration) -> RateLimit {
        let queued = rate_bps as f64 / 8.0 * latency.as_secs_f64();
        RateLimit {
            rate_bps,
            burst_bytes,
            queue_bytes: queued as u64 + burst_bytes,
        }
    }

    /// How long `bytes` of tokens take to accrue.
    fn time_for(&self, bytes: f64) -> Duration {
        Duration::from_secs_f64(bytes * 8.0 / self.rate_bps as f64)
    }
}

/// The state of a rate-limited link.
struct Bucket {
    /// Tokens (bytes) at `at`.
    tokens: f64,
    /// When the last datagram leaves (or left): tokens are counted from there.
    at: Instant,
    /// The datagrams still waiting: when each leaves, and its size.
    queue: VecDeque<(Instant, u64)>,
    queued_bytes: u64,
}

impl Bucket {
    fn new(limit: &RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: limit.burst_bytes as f64,
            at: now,
            queue: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// When a datagram of `len` bytes given at `now` leaves; `None` when the queue has no room.
    fn admit(&mut self, limit: &RateLimit, now: Instant, len: u64) -> Option<Instant> {
        while let Some(&(leaves, size)) = self.queue.front() {
            if leaves > now {
                break;
            }
            self.queue.pop_front();
            self.queued_bytes -= size;
        }
        if self.queued_bytes + len > limit.queue_bytes {
            return None;
        }
        // After the datagrams ahead of it, with the tokens accrued since the last one left.
        let start = now.max(self.at);
        let accrued =
            start.saturating_duration_since(self.at).as_secs_f64() * limit.rate_bps as f64 / 8.0;
        let tokens = (self.tokens + accrued).min(limit.burst_bytes as f64);
        let leaves = if tokens >= len as f64 {
            self.tokens = tokens - len as f64;
            start
        } else {
            self.tokens = 0.0;
            start + limit.time_for(len as f64 - tokens)
        };
        self.at = leaves;
        self.queue.push_back((leaves, len));
        self.queued_bytes += len;
        Some(leaves)
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            loss: 0.0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(15),
            up: true,
            rate: None,
        }
    }
}

/// A datagram on its way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What the network did with the datagrams it was given, per link.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounts {
    pub sent: u64,
    /// By loss, a link that is down, or (counted in `overflowed` too) a full queue.
    pub dropped: u64,
    /// Dropped because the rate limit's queue was full.
    pub overflowed: u64,
    pub duplicated: u64,
    pub delivered: u64,
}

/// The datagrams in flight, ordered by arrival time, then by the order they were sent (so
/// two datagrams due at the same instant arrive in sending order).
pub struct Network {
    rng: StdRng,
    default_link: LinkConfig,
    links: HashMap<(SocketAddr, SocketAddr), LinkConfig>,
    counts: HashMap<(SocketAddr, SocketAddr), LinkCounts>,
    /// Every datagram a link dropped, for scenarios that check what was repaired.
    dropped: HashMap<(SocketAddr, SocketAddr), Vec<Vec<u8>>>,
    /// The token buckets of rate-limited links.
    buckets: HashMap<(SocketAddr, SocketAddr), Bucket>,
    in_flight: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    slots: Vec<Option<Datagram>>,
    free: Vec<usize>,
    sequence: u64,
}

impl Network {
    pub fn new(seed: u64) -> Network {
        Network {
            rng: StdRng::seed_from_u64(seed),
            default_link: LinkConfig::default(),
            links: HashMap::new(),
            counts: HashMap::new(),
            dropped: HashMap::new(),
            buckets: HashMap::new(),
            in_flight: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            sequence: 0,
        }
    }

    /// Sets the link from `src` to `dst` (one direction).
    pub fn set_link(&mut self, src: SocketAddr, dst: SocketAddr, config: LinkConfig) {
        self.links.insert((src, dst), config);
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_path(&mut self, a: SocketAddr, b: SocketAddr, config: LinkConfig) {
        self.set_link(a, b, config);
        self.set_link(b, a, config);
    }

    /// The link from `src` to `dst`.
    pub fn link(&self, src: SocketAddr, dst: SocketAddr) -> LinkConfig {
        self.links
            .get(&(src, dst))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Takes both directions between `a` and `b` down or up; datagrams already in flight
    /// still arrive, as they would on a real network.
    pub fn set_up(&mut self, a: SocketAddr, b: SocketAddr, up: bool) {
        for (src, dst) in [(a, b), (b, a)] {
            let mut config = self.link(src, dst);
            config.up = up;
            self.set_link(src, dst, config);
        }
    }

    /// Counts of the link from `src` to `dst`.
    pub fn counts(&self, src: SocketAddr, dst: SocketAddr) -> LinkCounts {
        self.counts.get(&(src, dst)).copied().unwrap_or_default()
    }

    /// The datagrams the link from `src` to `dst` dropped.
    pub fn dropped(&self, src: SocketAddr, dst: SocketAddr) -> &[Vec<u8>] {
        self.dropped.get(&(src, dst)).map_or(&[], Vec::as_slice)
    }

    /// Puts a datagram on the link from `src` to `dst`, sent at `now`.
    pub fn send(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) {
        let link = self.link(src, dst);
        let counts = self.counts.entry((src, dst)).or_default();
        counts.sent += 1;
        if !link.up || self.rng.gen_bool(link.loss.clamp(0.0, 1.0)) {
            counts.dropped += 1;
            self.dropped
                .entry((src, dst))
                .or_default()
                .push(bytes.to_vec());
            return;
        }
        // The bottleneck sits at the sending end: the delay starts when the datagram leaves it.
        let mut leaves = now;
        if let Some(limit) = link.rate {
            let bucket = self
                .buckets
                .entry((src, dst))
                .or_insert_with(|| Bucket::new(&limit, now));
            match bucket.admit(&limit, now, bytes.len() as u64) {
                Some(at) => leaves = at,
                None => {
                    counts.dropped += 1;
                    counts.overflowed += 1;
                    self.dropped
                        .entry((src, dst))
                        .or_default()
                        .push(bytes.to_vec());
                    return;
                }
            }
        }
        let copies = if self.rng.gen_bool(link.duplicate.clamp(0.0, 1.0)) {
            counts.duplicated += 1;
            2
        } else {
            1
        };
        for copy in 0..copies {
            let mut delay = link.delay + self.jitter(link.jitter);
            if copy > 0 {
                delay += Duration::from_millis(1) + self.jitter(link.jitter);
            }
            if self.rng.gen_bool(link.reorder.clamp(0.0, 1.0)) {
                delay += link.reorder_delay;
            }
            let datagram = Datagram {
                src,
                dst,
                bytes: bytes.to_vec(),
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.slots[slot] = Some(datagram);
                    slot
                }
                None => {
                    self.slots.push(Some(datagram));
                    self.slots.len() - 1
                }
            };
            self.sequence += 1;
            self.in_flight
                .push(Reverse((leaves + delay, self.sequence, slot)));
        }
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.gen_range(0..=max.as_micros() as u64))
    }

    /// When the next datagram arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next datagram that has arrived by `now`.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<Datagram> {
        let Reverse((at, _, _)) = self.in_flight.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, _, slot)) = self.in_flight.pop()?;
        let datagram = self.slots[slot].take()?;
        self.free.push(slot);
        self.counts
            .entry((datagram.src, datagram.dst))
            .or_default()
            .delivered += 1;
        Some(datagram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn deliver_all(net: &mut Network, mut now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(at) = net.poll_timeout() {
            now = now.max(at);
            while let Some(d) = net.poll_deliver(now) {
                out.push(d.bytes);
            }
        }
        out
    }

    #[test]
    fn a_clean_link_delivers_everything_in_order_after_its_delay() {
        let mut net = Network::new(1);
        let start = Instant::now();
        for i in 0..100u8 {
            net.send(start, addr(1), addr(2), &[i]);
        }
        assert_eq!(net.poll_timeout(), Some(start + Duration::from_millis(10)));
        assert!(
            net.poll_deliver(start).is_none(),
            "nothing before the delay"
        );
        let got = deliver_all(&mut net, start);
        assert_eq!(got, (0..100u8).map(|i| vec![i]).collect::<Vec<_>>());
    }

    #[test]
    fn loss_duplication_and_reordering_happen_at_about_their_rates() {
        let mut net = Network::new(7);
        let config = LinkConfig {
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.05,
            ..LinkConfig::default()
        };
        net.set_link(addr(1), addr(2), config);
        let start = Instant::now();
        for i in 0..10_000u16 {
            net.send(
                start + Duration::from_millis(u64::from(i)),
                addr(1),
                addr(2),
                &i.to_be_bytes(),
            );
        }
        let got: Vec<u16> = deliver_all(&mut net, start)
            .iter()
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        let counts = net.counts(addr(1), addr(2));
        assert!((800..1200).contains(&counts.dropped), "{counts:?}");
        assert!((350..650).contains(&counts.duplicated), "{counts:?}");
        assert_eq!(counts.delivered as usize, got.len());
        let overtaken = got.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(overtaken > 200, "reordered: {overtaken}");
    }

    #[test]
    fn a_link_that_is_down_drops_everything_until_it_is_up_again() {
        let mut net = Network::new(3);
        let start = Instant::now();
        net.set_up(addr(1), addr(2), false);
        net.send(start, addr(1), addr(2), b"lost");
        net.send(start, addr(2), addr(1), b"lost too");
        assert!(net.poll_timeout().is_none());
        net.set_up(addr(1), addr(2), true);
        net.send(start, addr(1), addr(2), b"arrives");
        assert_eq!(deliver_all(&mut net, start), vec![b"arrives".to_vec()]);
    }

    /// Delivers everything in flight, with arrival times.
    fn deliver_all_timed(net: &mut Network) -> Vec<(Instant, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(at) = net.poll_timeout() {
            while let Some(d) = net.poll_deliver(at) {
                out.push((at, d.bytes));
            }
        }
        out
    }

    #[test]
    fn a_rate_limited_link_carries_its_rate_queues_up_to_its_limit_and_drops_the_rest() {
        let mut net = Network::new(5);
        // `tbf rate 300kbit burst 32kbit latency 400ms`: 4,000 bytes of burst, 19,000 of queue.
        let limit = RateLimit::tbf(300_000, 4_000, Duration::from_millis(400));
        assert_eq!(limit.queue_bytes, 19_000);
        net.set_link(
            addr(1),
            addr(2),
            LinkConfig {
                rate: Some(limit),
                ..LinkConfig::default()
            },
        );
        let start = Instant::now();
        // 1,000-byte datagrams at 600 kbit/s (twice the rate) for 10 s: one every 13.33 ms.
        let sent_at = |i: u32| start + Duration::from_micros(u64::from(i) * 13_333);
        for i in 0..750u32 {
            net.send(
                sent_at(i),
                addr(1),
                addr(2),
                &[&i.to_be_bytes()[..], &[0; 996]].concat(),
            );
        }
        let got = deliver_all_timed(&mut net);
        let counts = net.counts(addr(1), addr(2));
        assert_eq!(counts.dropped, counts.overflowed);
        assert_eq!(counts.delivered as usize, got.len());
        // What got through is the rate: 300 kbit/s over the 10 s plus what the queue and burst
        // held at the end.
        let carried = got.len() as f64 * 8_000.0;
        assert!(
            (2_900_000.0..3_300_000.0).contains(&carried),
            "{} datagrams carried, {counts:?}",
            got.len()
        );
        assert!((330..380).contains(&counts.overflowed), "{counts:?}");
        // In order, and never delayed more than the queue at the rate plus the link's delay.
        let index = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap());
        let most = Duration::from_millis(10) + limit.time_for(19_000.0);
        let mut last = None;
        for (at, bytes) in &got {
            let i = index(bytes);
            assert!(last.is_none_or(|l| i > l));
            last = Some(i);
            assert!(
                *at - sent_at(i) <= most,
                "datagram {i} waited {:?}",
                *at - sent_at(i)
            );
        }
        // The first ones went out at once, in the burst; the queue filled later.
        assert_eq!(got[0].0, sent_at(0) + Duration::from_millis(10));
        assert!(got[2].0 - sent_at(2) <= Duration::from_millis(11));
    }

    #[test]
    fn under_its_rate_a_limited_link_drops_nothing_and_delays_nothing() {
        let mut net = Network::new(6);
        let limit = RateLimit::tbf(1_000_000, 1_500, Duration::from_millis(100));
        net.set_link(
            addr(1),
            addr(2),
            LinkConfig {
                rate: Some(limit),
                ..LinkConfig::default()
            },
        );
        let start = Instant::now();
        // 1,250-byte datagrams every 20 ms: 500 kbit/s, each within the burst the bucket refilled.
        for i in 0..100u64 {
            net.send(
                start + Duration::from_millis(i * 20),
                addr(1),
                addr(2),
                &[0; 1250],
            );
        }
        let got = deliver_all_timed(&mut net);
        assert_eq!(got.len(), 100, "nothing dropped");
        for (i, (at, _)) in got.iter().enumerate() {
            let sent = start + Duration::from_millis(i as u64 * 20);
            assert!(*at - sent <= Duration::from_millis(10), "{:?}", *at - sent);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let run = |seed| {
            let mut net = Network::new(seed);
            let config = LinkConfig {
                loss: 0.2,
                jitter: Duration::from_millis(20),
                ..LinkConfig::default()
            };
            net.set_link(addr(1), addr(2), config);
            let start = Instant::now();
            for i in 0..200u8 {
                net.send(start, addr(1), addr(2), &[i]);
            }
            deliver_all(&mut net, start)
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
