//! The relay planner, sans-IO: when an origin relays each of its streams to each CDN edge, and
//! what it does when a relay fails. It owns every decision a relay makes — start once the
//! stream's media flows, try again after a failure with a growing, jittered delay, start over
//! from the shortest delay once a relay has stayed up, stop when the stream is unpublished, pass
//! an access-list change on — and none of the work. The control plane
//! ([`super::plane::ControlPlane`]) owns it: it feeds it what the node and the `cdn::relay`
//! transport report, with the time, and turns its [`RelayAction`]s into that transport's orders.
//!
//! Per stream and edge a relay is [`RelayState::Connecting`] (an attempt is under way),
//! [`RelayState::Up`] (our relay session to the edge is connected), [`RelayState::Backoff`]
//! (waiting to try again) or [`RelayState::Idle`] (its link found the stream gone; the planner
//! waits to hear that it is unpublished, or published anew). It never gives up on an edge while
//! the stream lives: an edge that is down or restarts is relayed to again when it returns.
//!
//! The jitter comes from the RNG it is given, so a seeded RNG makes every schedule repeatable.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{EndReason, RelayPath, StreamId};

/// A CDN edge, by its node id in the `[cdn]` node list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(pub u32);

/// One try at relaying a stream to an edge. Reports about an attempt the planner has moved on
/// from are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// When a failed relay is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after a first failure. Each failure in a row doubles it, up to `max_delay`;
    /// each delay waited is drawn from its upper half, so the relays of many streams that lost
    /// the same edge do not all knock at once when it returns.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// A relay that stayed up this long starts again from `first_delay` when it fails.
    pub healthy_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            healthy_after: Duration::from_secs(10),
        }
    }
}

/// Where one stream's relay to one edge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    /// Not relaying, and not about to: its link found the stream gone on this node.
    Idle,
    /// An attempt is under way: connecting to the edge, publishing there, waiting for our relay
    /// session to connect.
    Connecting { attempt: AttemptId },
    /// Our relay session to the edge is connected.
    Up { attempt: AttemptId, since: Instant },
    /// The last attempt failed; the next starts at `until`.
    Backoff { until: Instant },
}

/// What the planner asks its transport to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAction {
    /// Relay `stream` to `edge`, as `attempt`: report how it goes with that id.
    Start {
        attempt: AttemptId,
        stream: String,
        stream_id: StreamId,
        edge: EdgeId,
    },
    /// End `attempt`: unpublish on the edge, close the link and our relay session.
    Stop { attempt: AttemptId },
    /// Tell the edge of `attempt` the stream's access list is now `keys`.
    PassAcl {
        attempt: AttemptId,
        keys: Vec<String>,
    },
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    /// The stream it relayed is gone on this node (its publisher left): nothing to retry.
    StreamGone,
    /// The planner stopped it.
    Stopped,
    /// It failed; it is tried again after a delay.
    Failed(RelayFailure),
}

/// Why a relay attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayFailure {
    /// The WebSocket to the edge: connecting, TLS, a step that timed out, a closed socket.
    Link(String),
    /// The edge refused the publish (a FAILED status before its answer).
    Refused(String),
    /// The edge's answer cannot be used.
    Answer(String),
    /// The edge ended the relayed stream later: its status (FAILED, UNPUBLISHED) and `info`.
    EdgeEnded { status: String, info: String },
    /// Our relay session ended on its core: ICE or DTLS with the edge failed.
    Session(EndReason),
}

impl fmt::Display for RelayFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayFailure::Link(why) => f.write_str(why),
            RelayFailure::Refused(why) => write!(f, "the edge refused: {why}"),
            RelayFailure::Answer(why) => write!(f, "the edge's answer: {why}"),
            RelayFailure::EdgeEnded { status, info } => {
                write!(f, "the edge reported {status}: {info}")
            }
            RelayFailure::Session(reason) => write!(f, "relay session ended: {reason}"),
        }
    }
}

impl fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayEnd::StreamGone => f.write_str("the stream is gone"),
            RelayEnd::Stopped => f.write_str("stopped"),
            RelayEnd::Failed(failure) => failure.fmt(f),
        }
    }
}

/// One stream's relay to one edge.
#[derive(Debug)]
struct Relay {
    edge: EdgeId,
    state: RelayState,
    /// The delay before the next attempt if this one fails (before jitter).
    next_delay: Duration,
    /// The transport the live attempt's relay session connected over, once it did.
    path: Option<RelayPath>,
}

/// A stream being relayed.
#[derive(Debug)]
struct PlannedStream {
    id: StreamId,
    relays: Vec<Relay>,
}

/// The relays of every stream published on this node, to every edge.
#[derive(Debug)]
pub struct RelayPlanner<R> {
    edges: Vec<EdgeId>,
    policy: RetryPolicy,
    rng: R,
    streams: BTreeMap<String, PlannedStream>,
    next_attempt: u64,
    actions: VecDeque<RelayAction>,
}

impl<R: Rng> RelayPlanner<R> {
    /// A planner relaying every stream to each of `edges`, drawing jitter from `rng`.
    pub fn new(edges: Vec<EdgeId>, policy: RetryPolicy, rng: R) -> RelayPlanner<R> {
        RelayPlanner {
            edges,
            policy,
            rng,
            streams: BTreeMap::new(),
            next_attempt: 1,
            actions: VecDeque::new(),
        }
    }

    /// The stream `name` (`id`) is published and its media flows: relay it to every edge. A
    /// new publication of a name still relayed replaces the old one's relays.
    pub fn handle_stream_published(&mut self, _now: Instant, name: &str, id: StreamId) {
        if self.streams.get(name).is_some_and(|s| s.id == id) {
            return;
        }
        if let Some(old) = self.streams.remove(name) {
            self.stop_all(&old);
        }
        let mut stream = PlannedStream {
            id,
            relays: self
                .edges
                .iter()
                .map(|&edge| Relay {
                    edge,
                    state: RelayState::Idle,
                    next_delay: self.policy.first_delay,
                    path: None,
                })
                .collect(),
        };
        for relay in &mut stream.relays {
            begin(&mut self.next_attempt, &mut self.actions, name, id, relay);
        }
        self.streams.insert(name.to_owned(), stream);
    }

    /// The stream `name` (`id`) is unpublished: stop its relays, and try none again. A stale
    /// report (the name has been published anew since) is ignored.
    pub fn handle_stream_unpublished(&mut self, _now: Instant, name: &str, id: StreamId) {
        if self.streams.get(name).is_some_and(|s| s.id == id) {
            if let Some(stream) = self.streams.remove(name) {
                self.stop_all(&stream);
            }
        }
    }

    /// The stream's access list changed: relays under way pass it on to their edges. (A relay
    /// that starts later reads the list as it then is.)
    pub fn handle_acl_changed(&mut self, name: &str, keys: &[String]) {
        let Some(stream) = self.streams.get(name) else {
            return;
        };
        for relay in &stream.relays {
            if let Some(attempt) = live_attempt(relay.state) {
                self.actions.push_back(RelayAction::PassAcl {
                    attempt,
                    keys: keys.to_vec(),
                });
            }
        }
    }

    /// `attempt`'s relay session to its edge connected.
    pub fn handle_relay_up(&mut self, now: Instant, attempt: AttemptId) {
        if let Some(relay) = self.relay_mut(attempt) {
            if relay.state == (RelayState::Connecting { attempt }) {
                relay.state = RelayState::Up {
                    attempt,
                    since: now,
                };
            }
        }
    }

    /// `attempt`'s relay session connected over `path` (UDP, or TCP where UDP does not pass).
    pub fn handle_relay_path(&mut self, attempt: AttemptId, path: RelayPath) {
        if let Some(relay) = self.relay_mut(attempt) {
            relay.path = Some(path);
        }
    }

    /// `attempt` ended: a failure is tried again after the next delay, a relay whose stream is
    /// gone waits to hear of the stream.
    pub fn handle_relay_ended(&mut self, now: Instant, attempt: AttemptId, end: &RelayEnd) {
        let policy = self.policy;
        let Some(relay) = self
            .streams
            .values_mut()
            .flat_map(|s| s.relays.iter_mut())
            .find(|r| live_attempt(r.state) == Some(attempt))
        else {
            return;
        };
        match end {
            RelayEnd::StreamGone | RelayEnd::Stopped => relay.state = RelayState::Idle,
            RelayEnd::Failed(_) => {
                let up_for = match relay.state {
                    RelayState::Up { since, .. } => Some(now.saturating_duration_since(since)),
                    _ => None,
                };
                let healthy = up_for.is_some_and(|up| up >= policy.healthy_after);
                if healthy {
                    relay.next_delay = policy.first_delay;
                }
                let delay = relay.next_delay;
                relay.next_delay = (delay * 2).min(policy.max_delay);
                let until = now + jittered(&mut self.rng, delay);
                relay.state = RelayState::Backoff { until };
            }
        }
    }

    /// Starts every relay whose delay is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (name, stream) in &mut self.streams {
            for relay in &mut stream.relays {
                if matches!(relay.state, RelayState::Backoff { until } if until <= now) {
                    begin(
                        &mut self.next_attempt,
                        &mut self.actions,
                        name,
                        stream.id,
                        relay,
                    );
                }
            }
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<RelayAction> {
        self.actions.pop_front()
    }

    /// When [`RelayPlanner::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams
            .values()
            .flat_map(|s| &s.relays)
            .filter_map(|r| match r.state {
                RelayState::Backoff { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Where the relay of `stream` to `edge` stands; `None` when the stream is not relayed.
    pub fn state(&self, stream: &str, edge: EdgeId) -> Option<RelayState> {
        self.streams
            .get(stream)?
            .relays
            .iter()
            .find(|r| r.edge == edge)
            .map(|r| r.state)
    }

    /// The stream and edge `attempt` relays, while it is under way.
    pub fn relay_of(&self, attempt: AttemptId) -> Option<(&str, EdgeId)> {
        self.streams.iter().find_map(|(name, stream)| {
            stream
                .relays
                .iter()
                .find(|r| live_attempt(r.state) == Some(attempt))
                .map(|r| (name.as_str(), r.edge))
        })
    }

    /// The transport the relay of `stream` to `edge` connected over, while its attempt lives.
    pub fn path(&self, stream: &str, edge: EdgeId) -> Option<RelayPath> {
        let relay = self
            .streams
            .get(stream)?
            .relays
            .iter()
            .find(|r| r.edge == edge)?;
        live_attempt(relay.state).and(relay.path)
    }

    fn relay_mut(&mut self, attempt: AttemptId) -> Option<&mut Relay> {
        self.streams
            .values_mut()
            .flat_map(|s| s.relays.iter_mut())
            .find(|r| live_attempt(r.state) == Some(attempt))
    }

    fn stop_all(&mut self, stream: &PlannedStream) {
        for relay in &stream.relays {
            if let Some(attempt) = live_attempt(relay.state) {
                self.actions.push_back(RelayAction::Stop { attempt });
            }
        }
    }
}

/// The attempt under way in `state`, if one is.
fn live_attempt(state: RelayState) -> Option<AttemptId> {
    match state {
        RelayState::Connecting { attempt } | RelayState::Up { attempt, .. } => Some(attempt),
        RelayState::Idle | RelayState::Backoff { .. } => None,
    }
}

/// Starts a new attempt of `relay`.
fn begin(
    next_attempt: &mut u64,
    actions: &mut VecDeque<RelayAction>,
    stream: &str,
    stream_id: StreamId,
    relay: &mut Relay,
) {
    let attempt = AttemptId(*next_attempt);
    *next_attempt += 1;
    relay.state = RelayState::Connecting { attempt };
    relay.path = None;
    actions.push_back(RelayAction::Start {
        attempt,
        stream: stream.to_owned(),
        stream_id,
        edge: relay.edge,
    });
}

/// `delay` with jitter: uniformly in its upper half, `[delay / 2, delay]`.
fn jittered(rng: &mut impl Rng, delay: Duration) -> Duration {
    let half = delay / 2;
    let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rng.gen_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const A: EdgeId = EdgeId(1);
    const B: EdgeId = EdgeId(2);
    const CAM: StreamId = StreamId(10);

    fn planner(edges: &[EdgeId], seed: u64) -> RelayPlanner<StdRng> {
        RelayPlanner::new(
            edges.to_vec(),
            RetryPolicy::default(),
            StdRng::seed_from_u64(seed),
        )
    }

    fn actions(planner: &mut RelayPlanner<StdRng>) -> Vec<RelayAction> {
        std::iter::from_fn(|| planner.poll_action()).collect()
    }

    /// The attempts of the Start actions among `actions`, by edge.
    fn started(actions: &[RelayAction]) -> Vec<(EdgeId, AttemptId)> {
        actions
            .iter()
            .filter_map(|a| match a {
                RelayAction::Start { edge, attempt, .. } => Some((*edge, *attempt)),
                _ => None,
            })
            .collect()
    }

    fn failed() -> RelayEnd {
        RelayEnd::Failed(RelayFailure::Link("connection refused".into()))
    }

    /// Publishes `cam` to one edge and returns its first attempt.
    fn published(planner: &mut RelayPlanner<StdRng>, now: Instant) -> AttemptId {
        planner.handle_stream_published(now, "cam", CAM);
        let started = started(&actions(planner));
        assert_eq!(started.len(), 1);
        started[0].1
    }

    #[test]
    fn a_published_stream_is_relayed_to_every_edge_once() {
        let now = Instant::now();
        let mut planner = planner(&[A, B], 1);
        planner.handle_stream_published(now, "cam", CAM);
        let first = actions(&mut planner);
        assert_eq!(
            first,
            [
                RelayAction::Start {
                    attempt: AttemptId(1),
                    stream: "cam".into(),
                    stream_id: CAM,
                    edge: A
                },
                RelayAction::Start {
                    attempt: AttemptId(2),
                    stream: "cam".into(),
                    stream_id: CAM,
                    edge: B
                },
            ]
        );
        // The same publication heard twice starts nothing more; nothing waits on a timer.
        planner.handle_stream_published(now, "cam", CAM);
        assert!(actions(&mut planner).is_empty());
        assert_eq!(planner.poll_timeout(), None);
        assert_eq!(
            planner.state("cam", B),
            Some(RelayState::Connecting {
                attempt: AttemptId(2)
            })
        );
        planner.handle_relay_up(now, AttemptId(2));
        assert_eq!(
            planner.state("cam", B),
            Some(RelayState::Up {
                attempt: AttemptId(2),
                since: now
            })
        );
    }

    #[test]
    fn failures_back_off_with_doubling_jittered_delays_up_to_the_longest() {
        let mut now = Instant::now();
        let mut planner = planner(&[A], 7);
        let mut attempt = published(&mut planner, now);
        let expected_ms = [500, 1000, 2000, 4000, 8000, 8000, 8000];
        for ms in expected_ms {
            planner.handle_relay_ended(now, attempt, &failed());
            assert!(actions(&mut planner).is_empty(), "nothing until the delay");
            let until = planner.poll_timeout().expect("a retry is planned");
            assert_eq!(planner.state("cam", A), Some(RelayState::Backoff { until }));
            let waited = until - now;
            let delay = Duration::from_millis(ms);
            assert!(
                waited >= delay / 2 && waited <= delay,
                "{waited:?} outside [{:?}, {delay:?}]",
                delay / 2
            );
            // Just before the deadline: nothing.
            planner.handle_timeout(until - Duration::from_millis(1));
            assert!(actions(&mut planner).is_empty());
            now = until;
            planner.handle_timeout(now);
            let retried = started(&actions(&mut planner));
            assert_eq!(retried.len(), 1);
            assert_ne!(retried[0].1, attempt, "a retry is a new attempt");
            attempt = retried[0].1;
        }
    }

    #[test]
    fn jitter_spreads_the_delays_and_one_seed_repeats_them() {
        let schedule = |seed| {
            let now = Instant::now();
            let mut planner = planner(&[A], seed);
            let attempt = published(&mut planner, now);
            planner.handle_relay_ended(now, attempt, &failed());
            planner.poll_timeout().unwrap() - now
        };
        assert_eq!(schedule(3), schedule(3));
        let delays: std::collections::HashSet<Duration> = (0..20).map(schedule).collect();
        assert!(delays.len() > 10, "jitter varies the delay: {delays:?}");
    }

    #[test]
    fn unpublishing_during_backoff_ends_the_relay_for_good() {
        let now = Instant::now();
        let mut planner = planner(&[A], 1);
        let attempt = published(&mut planner, now);
        planner.handle_relay_ended(now, attempt, &failed());
        planner.handle_stream_unpublished(now, "cam", CAM);
        assert!(
            actions(&mut planner).is_empty(),
            "nothing is under way to stop"
        );
        assert_eq!(planner.poll_timeout(), None);
        planner.handle_timeout(now + Duration::from_secs(60));
        assert!(actions(&mut planner).is_empty());
        assert_eq!(planner.state("cam", A), None);
    }

    #[test]
    fn unpublishing_stops_the_relays_under_way() {
        let now = Instant::now();
        let mut planner = planner(&[A, B], 1);
        planner.handle_stream_published(now, "cam", CAM);
        let attempts = started(&actions(&mut planner));
        planner.handle_relay_up(now, attempts[0].1);
        planner.handle_stream_unpublished(now, "cam", CAM);
        assert_eq!(
            actions(&mut planner),
            [
                RelayAction::Stop {
                    attempt: attempts[0].1
                },
                RelayAction::Stop {
                    attempt: attempts[1].1
                },
            ]
        );
        // Their links report back; nothing is retried.
        for (_, attempt) in attempts {
            planner.handle_relay_ended(now, attempt, &RelayEnd::Stopped);
        }
        assert!(actions(&mut planner).is_empty());
        assert_eq!(planner.poll_timeout(), None);
    }

    #[test]
    fn the_path_a_relay_connected_over_lasts_as_long_as_its_attempt() {
        let now = Instant::now();
        let mut planner = planner(&[A], 1);
        let first = published(&mut planner, now);
        assert_eq!(planner.path("cam", A), None);
        planner.handle_relay_up(now, first);
        planner.handle_relay_path(first, RelayPath::Tcp);
        assert_eq!(planner.path("cam", A), Some(RelayPath::Tcp));
        // A report about another attempt changes nothing.
        planner.handle_relay_path(AttemptId(first.0 + 7), RelayPath::Udp);
        assert_eq!(planner.path("cam", A), Some(RelayPath::Tcp));
        // Failed: the next attempt has not connected yet.
        planner.handle_relay_ended(now, first, &failed());
        assert_eq!(planner.path("cam", A), None);
        let at = planner.poll_timeout().unwrap();
        planner.handle_timeout(at);
        let next = started(&actions(&mut planner))[0].1;
        assert_eq!(planner.path("cam", A), None);
        planner.handle_relay_path(next, RelayPath::Udp);
        assert_eq!(planner.path("cam", A), Some(RelayPath::Udp));
    }

    #[test]
    fn an_edge_that_returns_is_relayed_to_again_and_is_up() {
        let now = Instant::now();
        let mut planner = planner(&[A], 1);
        let first = published(&mut planner, now);
        planner.handle_relay_up(now, first);
        // The edge goes away a second later, and two more tries find it away.
        let lost = now + Duration::from_secs(1);
        planner.handle_relay_ended(lost, first, &failed());
        for _ in 0..2 {
            let at = planner.poll_timeout().unwrap();
            planner.handle_timeout(at);
            let attempt = started(&actions(&mut planner))[0].1;
            planner.handle_relay_ended(at, attempt, &failed());
        }
        // The third finds it back.
        let at = planner.poll_timeout().unwrap();
        planner.handle_timeout(at);
        let attempt = started(&actions(&mut planner))[0].1;
        assert_eq!(attempt, AttemptId(first.0 + 3));
        planner.handle_relay_up(at, attempt);
        assert_eq!(
            planner.state("cam", A),
            Some(RelayState::Up { attempt, since: at })
        );
        assert_eq!(planner.poll_timeout(), None);
    }

    #[test]
    fn a_relay_that_stayed_up_starts_again_from_the_shortest_delay() {
        let mut now = Instant::now();
        let mut planner = planner(&[A], 5);
        let mut attempt = published(&mut planner, now);
        // Three quick failures: the next delay is 4 s.
        for _ in 0..3 {
            planner.handle_relay_ended(now, attempt, &failed());
            now = planner.poll_timeout().unwrap();
            planner.handle_timeout(now);
            attempt = started(&actions(&mut planner))[0].1;
        }
        // Up, but not for long: the delay keeps growing.
        planner.handle_relay_up(now, attempt);
        now += Duration::from_secs(2);
        planner.handle_relay_ended(now, attempt, &failed());
        let waited = planner.poll_timeout().unwrap() - now;
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        now += waited;
        planner.handle_timeout(now);
        attempt = started(&actions(&mut planner))[0].1;
        // Up for longer than healthy_after: back to the first delay.
        planner.handle_relay_up(now, attempt);
        now += Duration::from_secs(30);
        planner.handle_relay_ended(now, attempt, &failed());
        let waited = planner.poll_timeout().unwrap() - now;
        assert!(waited <= Duration::from_millis(500), "{waited:?}");
    }

    #[test]
    fn reports_of_attempts_the_planner_moved_on_from_are_ignored() {
        let now = Instant::now();
        let mut planner = planner(&[A], 1);
        let old = published(&mut planner, now);
        planner.handle_relay_ended(now, old, &failed());
        let at = planner.poll_timeout().unwrap();
        planner.handle_timeout(at);
        let new = started(&actions(&mut planner))[0].1;
        // The old link's late reports change nothing.
        planner.handle_relay_up(at, old);
        planner.handle_relay_ended(at, old, &failed());
        assert_eq!(
            planner.state("cam", A),
            Some(RelayState::Connecting { attempt: new })
        );
        assert!(actions(&mut planner).is_empty());
    }

    #[test]
    fn a_relay_whose_stream_is_gone_waits_for_the_stream() {
        let now = Instant::now();
        let mut planner = planner(&[A], 1);
        let attempt = published(&mut planner, now);
        planner.handle_relay_ended(now, attempt, &RelayEnd::StreamGone);
        assert_eq!(planner.state("cam", A), Some(RelayState::Idle));
        assert_eq!(planner.poll_timeout(), None);
        assert!(actions(&mut planner).is_empty());
        // The unpublish that follows forgets it.
        planner.handle_stream_unpublished(now, "cam", CAM);
        assert_eq!(planner.state("cam", A), None);
    }

    #[test]
    fn a_new_publication_of_the_name_replaces_the_old_relays() {
        let now = Instant::now();
        let mut planner = planner(&[A], 1);
        let old = published(&mut planner, now);
        planner.handle_relay_up(now, old);
        let newer = StreamId(11);
        planner.handle_stream_published(now, "cam", newer);
        let next = actions(&mut planner);
        assert_eq!(next[0], RelayAction::Stop { attempt: old });
        assert!(matches!(
            next[1],
            RelayAction::Start { stream_id, .. } if stream_id == newer
        ));
        // The old publication's late unpublish does not touch the new one.
        planner.handle_stream_unpublished(now, "cam", CAM);
        assert!(matches!(
            planner.state("cam", A),
            Some(RelayState::Connecting { .. })
        ));
        assert!(actions(&mut planner).is_empty());
    }

    #[test]
    fn access_list_changes_reach_the_relays_under_way_only() {
        let now = Instant::now();
        let mut planner = planner(&[A, B], 1);
        planner.handle_stream_published(now, "cam", CAM);
        let attempts = started(&actions(&mut planner));
        planner.handle_relay_up(now, attempts[0].1);
        planner.handle_relay_ended(now, attempts[1].1, &failed());
        let keys = vec!["k1".to_owned()];
        planner.handle_acl_changed("cam", &keys);
        planner.handle_acl_changed("other", &keys);
        assert_eq!(
            actions(&mut planner),
            [RelayAction::PassAcl {
                attempt: attempts[0].1,
                keys
            }]
        );
    }

    #[test]
    fn without_edges_nothing_is_relayed() {
        let now = Instant::now();
        let mut planner = planner(&[], 1);
        planner.handle_stream_published(now, "cam", CAM);
        assert!(actions(&mut planner).is_empty());
        assert_eq!(planner.poll_timeout(), None);
    }
}
