//! The streams this node pulls from other nodes of the cluster, sans-IO: which node each came
//! from, and when a pull nobody watches is let go.
//!
//! A player asking for a stream that another node publishes makes this node ask that node
//! (the stream's owner in Redis) to relay it here ([`Pulls::handle_requested`]); the player
//! waits up to [`PULL_WAIT`] for it. The node then feeds [`Pulls::handle_local`] what its
//! registry holds, with the time: a pulled stream without a player for `cluster.idle_pull_secs`
//! is released ([`PullCommand::Release`]: the owner is asked to stop the relay, which ends the
//! copy here), and so is one that never arrived. A copy that ended by itself (its publisher
//! left the owner) is forgotten: the owner has dropped the pull already.
//!
//! A pulled copy that lost its source (its owner died: the registry keeps its players,
//! orphaned) looks for the stream's owner again ([`Pulls::due_repulls`]): when the publisher
//! publishes anew on another node, that node is asked to relay it here, and its copy takes
//! the players over.
//!
//! A warm pull (the warm-up list, WCS's `/rest-api/v3/cdn/warmup`: [`Pulls::set_warm`]) is
//! never released for idleness: it lasts until its publishing stops, as WCS's does.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::lease::NodeId;

/// How long a player waits for a stream this node pulls from another.
pub const PULL_WAIT: Duration = Duration::from_secs(6);
/// How long a requested pull may take to arrive before it is released (the owner may have
/// accepted it and failed to relay).
pub const ARRIVAL_GRACE: Duration = Duration::from_secs(12);
/// How often a pulled copy that lost its source looks for the stream's owner.
pub const REPULL_INTERVAL: Duration = Duration::from_millis(500);

/// What the node is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullCommand {
    /// Ask `owner` to stop relaying `stream` here.
    Release { stream: String, owner: NodeId },
}

/// A stream this node pulls, as [`Pulls::list`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulledStream<'a> {
    pub stream: &'a str,
    pub owner: &'a NodeId,
    /// Seen in the registry.
    pub arrived: bool,
    /// On the warm-up list.
    pub warm: bool,
}

#[derive(Debug)]
struct Pull {
    owner: NodeId,
    requested_at: Instant,
    /// Seen in the registry.
    arrived: bool,
    /// Since when it has been seen without a player (None: watched, warm, or not arrived).
    idle_since: Option<Instant>,
    /// On the warm-up list: kept without players.
    warm: bool,
    /// When the owner of an orphaned copy was last looked for.
    repulled_at: Option<Instant>,
}

/// The streams pulled to this node.
#[derive(Debug)]
pub struct Pulls {
    idle_after: Duration,
    pulls: BTreeMap<String, Pull>,
    commands: VecDeque<PullCommand>,
}

impl Pulls {
    /// Pulls released after `idle_after` without a player (`cluster.idle_pull_secs`).
    pub fn new(idle_after: Duration) -> Pulls {
        Pulls {
            idle_after,
            pulls: BTreeMap::new(),
            commands: VecDeque::new(),
        }
    }

    /// Whether `stream` is pulled (or asked for) from `owner`.
    pub fn is_pulled_from(&self, stream: &str, owner: &NodeId) -> bool {
        self.pulls.get(stream).is_some_and(|p| p.owner == *owner)
    }

    /// The pulls, by stream name: who each comes from, and whether it has arrived and is warm.
    pub fn list(&self) -> impl Iterator<Item = PulledStream<'_>> {
        self.pulls.iter().map(|(stream, pull)| PulledStream {
            stream,
            owner: &pull.owner,
            arrived: pull.arrived,
            warm: pull.warm,
        })
    }

    /// `owner` was asked to relay `stream` here. A pull from another owner (the stream was
    /// published anew elsewhere) replaces the old one, which is released.
    pub fn handle_requested(&mut self, now: Instant, stream: &str, owner: NodeId) {
        let pull = Pull {
            owner,
            requested_at: now,
            arrived: false,
            idle_since: None,
            warm: false,
            repulled_at: None,
        };
        if let Some(old) = self.pulls.insert(stream.to_owned(), pull) {
            if self.pulls[stream].owner != old.owner {
                self.commands.push_back(PullCommand::Release {
                    stream: stream.to_owned(),
                    owner: old.owner,
                });
            }
        }
    }

    /// Keeps `stream`'s pull without players until its publishing stops. False when it is
    /// not pulled.
    pub fn set_warm(&mut self, stream: &str) -> bool {
        self.pulls.get_mut(stream).map(|p| p.warm = true).is_some()
    }

    /// The registry's streams now, each with its number of players.
    pub fn handle_local<'a>(
        &mut self,
        now: Instant,
        streams: impl IntoIterator<Item = (&'a str, usize)>,
    ) {
        let local: BTreeMap<&str, usize> = streams.into_iter().collect();
        let idle_after = self.idle_after;
        let mut released = Vec::new();
        self.pulls.retain(|name, pull| {
            match local.get(name.as_str()) {
                Some(&players) => {
                    pull.arrived = true;
                    if players > 0 || pull.warm {
                        pull.idle_since = None;
                    } else if pull.idle_since.is_none() {
                        pull.idle_since = Some(now);
                    }
                    let idle_for = pull
                        .idle_since
                        .map(|since| now.saturating_duration_since(since));
                    if idle_for.is_some_and(|idle| idle >= idle_after) {
                        released.push((name.clone(), pull.owner.clone()));
                        return false;
                    }
                }
                // Ended by itself: the owner's relay is gone with it.
                None if pull.arrived => return false,
                None => {
                    if now.saturating_duration_since(pull.requested_at) >= ARRIVAL_GRACE {
                        released.push((name.clone(), pull.owner.clone()));
                        return false;
                    }
                }
            }
            true
        });
        for (stream, owner) in released {
            self.commands
                .push_back(PullCommand::Release { stream, owner });
        }
    }

    /// The pulled streams among `orphaned` (copies here that lost their source, their players
    /// waiting) whose owner is due to be looked for again: at once, then every
    /// [`REPULL_INTERVAL`]. A stream this node does not pull is not its to look for.
    pub fn due_repulls<'a>(
        &mut self,
        now: Instant,
        orphaned: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut due = Vec::new();
        for stream in orphaned {
            let Some(pull) = self.pulls.get_mut(stream) else {
                continue;
            };
            let waited = pull
                .repulled_at
                .map_or(REPULL_INTERVAL, |at| now.saturating_duration_since(at));
            if waited >= REPULL_INTERVAL {
                pull.repulled_at = Some(now);
                due.push(stream.to_owned());
            }
        }
        due
    }

    /// The next thing to do.
    pub fn poll_command(&mut self) -> Option<PullCommand> {
        self.commands.pop_front()
    }

    /// When a pull is next due for release (None: none is, while watched or warm).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pulls
            .values()
            .filter_map(|p| {
                if p.arrived {
                    p.idle_since.map(|since| since + self.idle_after)
                } else {
                    Some(p.requested_at + ARRIVAL_GRACE)
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(n: u32) -> NodeId {
        NodeId::new(None, n)
    }

    fn commands(pulls: &mut Pulls) -> Vec<PullCommand> {
        std::iter::from_fn(|| pulls.poll_command()).collect()
    }

    #[test]
    fn an_unwatched_pull_is_released_after_the_idle_time_and_a_watched_one_is_kept() {
        let idle = Duration::from_secs(60);
        let mut now = Instant::now();
        let mut pulls = Pulls::new(idle);
        pulls.handle_requested(now, "cam", owner(1));
        pulls.handle_requested(now, "desk", owner(2));
        assert!(pulls.is_pulled_from("cam", &owner(1)));
        assert!(!pulls.is_pulled_from("cam", &owner(2)));
        now += Duration::from_secs(1);
        pulls.handle_local(now, [("cam", 1), ("desk", 1)]);
        // cam keeps a player; desk's leaves at 10 s.
        for t in 2..=69 {
            now += Duration::from_secs(1);
            let desk = if t < 10 { 1 } else { 0 };
            pulls.handle_local(now, [("cam", 1), ("desk", desk)]);
            assert!(commands(&mut pulls).is_empty(), "at {t} s");
        }
        assert_eq!(pulls.poll_timeout(), Some(now + Duration::from_secs(1)));
        now += Duration::from_secs(1);
        pulls.handle_local(now, [("cam", 1), ("desk", 0)]);
        assert_eq!(
            commands(&mut pulls),
            [PullCommand::Release {
                stream: "desk".into(),
                owner: owner(2)
            }]
        );
        assert!(!pulls.is_pulled_from("desk", &owner(2)));
        assert!(pulls.is_pulled_from("cam", &owner(1)));
    }

    #[test]
    fn a_pull_that_never_arrives_is_released_and_one_that_ended_is_forgotten() {
        let mut now = Instant::now();
        let mut pulls = Pulls::new(Duration::from_secs(60));
        pulls.handle_requested(now, "cam", owner(1));
        pulls.handle_requested(now, "desk", owner(1));
        now += Duration::from_secs(1);
        pulls.handle_local(now, [("desk", 0)]);
        now += Duration::from_secs(1);
        // desk ended by itself (its publisher left the owner): nothing to release.
        pulls.handle_local(now, []);
        assert!(!pulls.is_pulled_from("desk", &owner(1)));
        assert!(commands(&mut pulls).is_empty());
        assert_eq!(
            pulls.poll_timeout(),
            Some(now - Duration::from_secs(2) + ARRIVAL_GRACE)
        );
        now += ARRIVAL_GRACE;
        pulls.handle_local(now, []);
        assert_eq!(
            commands(&mut pulls),
            [PullCommand::Release {
                stream: "cam".into(),
                owner: owner(1)
            }]
        );
        assert_eq!(pulls.poll_timeout(), None);
    }

    #[test]
    fn a_pull_from_a_new_owner_releases_the_old_one() {
        let now = Instant::now();
        let mut pulls = Pulls::new(Duration::from_secs(60));
        pulls.handle_requested(now, "cam", owner(1));
        pulls.handle_requested(now, "cam", owner(1));
        assert!(commands(&mut pulls).is_empty());
        pulls.handle_requested(now, "cam", owner(2));
        assert_eq!(
            commands(&mut pulls),
            [PullCommand::Release {
                stream: "cam".into(),
                owner: owner(1)
            }]
        );
    }

    #[test]
    fn an_orphaned_copy_looks_for_its_owner_at_once_then_every_interval() {
        let t0 = Instant::now();
        let mut pulls = Pulls::new(Duration::from_secs(60));
        pulls.handle_requested(t0, "cam", owner(1));
        pulls.handle_local(t0, [("cam", 1)]);
        assert_eq!(pulls.due_repulls(t0, ["cam", "other"]), ["cam"]);
        assert!(pulls
            .due_repulls(t0 + REPULL_INTERVAL / 2, ["cam"])
            .is_empty());
        assert_eq!(pulls.due_repulls(t0 + REPULL_INTERVAL, ["cam"]), ["cam"]);
        // The new owner's copy is asked for: the dead owner's pull is let go.
        pulls.handle_requested(t0 + REPULL_INTERVAL, "cam", owner(2));
        assert_eq!(
            commands(&mut pulls),
            [PullCommand::Release {
                stream: "cam".into(),
                owner: owner(1)
            }]
        );
        assert!(pulls.is_pulled_from("cam", &owner(2)));
        assert_eq!(
            pulls.due_repulls(t0 + REPULL_INTERVAL, ["cam"]),
            ["cam"],
            "a new pull looks at once when it is orphaned in turn"
        );
    }

    #[test]
    fn a_warm_pull_stays_without_players_until_its_stream_ends() {
        let mut now = Instant::now();
        let mut pulls = Pulls::new(Duration::from_secs(2));
        assert!(!pulls.set_warm("cam"));
        pulls.handle_requested(now, "cam", owner(1));
        assert!(pulls.set_warm("cam"));
        for _ in 0..100 {
            now += Duration::from_secs(1);
            pulls.handle_local(now, [("cam", 0)]);
        }
        assert!(commands(&mut pulls).is_empty());
        assert!(pulls.is_pulled_from("cam", &owner(1)));
        assert_eq!(pulls.poll_timeout(), None);
        pulls.handle_local(now, []);
        assert!(!pulls.is_pulled_from("cam", &owner(1)));
        assert!(commands(&mut pulls).is_empty());
    }
}
