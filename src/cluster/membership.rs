//! The node's membership, sans-IO: when its lease is written to Redis, what it says, and
//! whether Redis answers. Time comes in (`now`), commands and a deadline go out; the Redis
//! side (`super::redis`) runs the commands and reports how they went.
//!
//! The lease lives [`LEASE_TTL`] and is written every [`LEASE_REFRESH`], so a node that dies
//! (SIGKILL, power) is gone from the live set within [`LEASE_TTL`] while two lost refreshes in
//! a row are survived. While Redis does not answer, the write is retried sooner, backing off
//! from [`RETRY_FIRST`] to [`LEASE_REFRESH`]: the node keeps serving what it has, and its lease
//! is back within a retry of Redis's return.

use std::time::{Duration, Instant};

use super::lease::{NodeLease, NodeLoad, NodeState};

/// How long a lease lives without a refresh.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a lease is written.
pub const LEASE_REFRESH: Duration = Duration::from_secs(2);
/// The first retry after a failed write; it doubles up to [`LEASE_REFRESH`].
pub const RETRY_FIRST: Duration = Duration::from_millis(250);

/// What the Redis side is asked to do for the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipCommand {
    /// Write the lease (its JSON) for [`LEASE_TTL`] and index the node as live until then.
    WriteLease { lease: String },
}

/// Redis's health as the lease writes see it, when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisHealth {
    /// The first write went through.
    Joined,
    /// A write failed after writes went through (or the first one failed).
    Lost { error: String },
    /// A write went through again after `down_for` of failures.
    Back { down_for: Duration },
}

/// The node's lease and its writing.
#[derive(Debug)]
pub struct Membership {
    lease: NodeLease,
    /// When the next write is due.
    next_write: Instant,
    /// A write is out and not answered.
    writing: bool,
    /// Since when writes fail, and the retry delay now.
    down: Option<(Instant, Duration)>,
    /// Whether a write ever went through.
    joined: bool,
}

impl Membership {
    /// A node with `lease` that joins at once.
    pub fn new(now: Instant, lease: NodeLease) -> Membership {
        Membership {
            lease,
            next_write: now,
            writing: false,
            down: None,
            joined: false,
        }
    }

    /// The lease as it stands.
    pub fn lease(&self) -> &NodeLease {
        &self.lease
    }

    /// The node's load now; it goes out with the next write.
    pub fn set_load(&mut self, load: NodeLoad) {
        self.lease.load = load;
    }

    /// The node drains: the lease says so at once.
    pub fn set_draining(&mut self, now: Instant) {
        if self.lease.state != NodeState::Draining {
            self.lease.state = NodeState::Draining;
            self.next_write = self.next_write.min(now);
        }
    }

    /// Whether Redis answered the last write.
    pub fn redis_up(&self) -> bool {
        self.joined && self.down.is_none()
    }

    /// Whether the last write failed (not before the first write: at start Redis is presumed
    /// up).
    pub fn redis_down(&self) -> bool {
        self.down.is_some()
    }

    /// The next command, when one is due at `now`.
    #[must_use]
    pub fn poll_command(&mut self, now: Instant) -> Option<MembershipCommand> {
        if self.writing || now < self.next_write {
            return None;
        }
        self.writing = true;
        let lease = serde_json::to_string(&self.lease).expect("a lease is plain JSON");
        Some(MembershipCommand::WriteLease { lease })
    }

    /// How the last [`MembershipCommand::WriteLease`] went. Returns Redis's health when it
    /// changed.
    pub fn handle_written(
        &mut self,
        now: Instant,
        result: Result<(), String>,
    ) -> Option<RedisHealth> {
        self.writing = false;
        match result {
            Ok(()) => {
                self.next_write = now + LEASE_REFRESH;
                let change = match self.down.take() {
                    Some((since, _)) => Some(RedisHealth::Back {
                        down_for: now.saturating_duration_since(since),
                    }),
                    None if !self.joined => Some(RedisHealth::Joined),
                    None => None,
                };
                self.joined = true;
                change
            }
            Err(error) => {
                let (change, since, delay) = match self.down {
                    Some((since, delay)) => (None, since, (delay * 2).min(LEASE_REFRESH)),
                    None => (Some(RedisHealth::Lost { error }), now, RETRY_FIRST),
                };
                self.down = Some((since, delay));
                self.next_write = now + delay;
                change
            }
        }
    }

    /// When the next write is due (None while one is out).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.writing).then_some(self.next_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lease::{NodeAddresses, NodeId};
    use crate::config::cluster::ClusterConfig;

    fn membership(now: Instant) -> Membership {
        let addresses = NodeAddresses {
            host: "127.0.0.1".into(),
            http_port: Some(8080),
            https_port: None,
        };
        let config = ClusterConfig::new("redis://127.0.0.1");
        let lease = NodeLease::new(NodeId::new(Some("n"), 1), &config, &addresses, 0);
        Membership::new(now, lease)
    }

    fn written(command: Option<MembershipCommand>) -> NodeLease {
        match command {
            Some(MembershipCommand::WriteLease { lease }) => serde_json::from_str(&lease).unwrap(),
            None => panic!("no write"),
        }
    }

    #[test]
    fn the_lease_is_written_at_once_then_every_refresh_with_the_load() {
        let start = Instant::now();
        let mut m = membership(start);
        assert!(
            !m.redis_up() && !m.redis_down(),
            "unknown until the first write"
        );
        assert_eq!(m.poll_timeout(), Some(start));
        let first = written(m.poll_command(start));
        assert_eq!(first.state, NodeState::Serving);
        // One write at a time.
        assert_eq!(m.poll_command(start), None);
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(m.handle_written(start, Ok(())), Some(RedisHealth::Joined));
        assert!(m.redis_up());
        assert_eq!(m.poll_timeout(), Some(start + LEASE_REFRESH));
        assert_eq!(m.poll_command(start + LEASE_REFRESH / 2), None);
        m.set_load(NodeLoad {
            sessions: 3,
            streams: 1,
        });
        let second = written(m.poll_command(start + LEASE_REFRESH));
        assert_eq!(second.load.sessions, 3);
        assert_eq!(m.handle_written(start + LEASE_REFRESH, Ok(())), None);
        // Refreshes come well inside the lease's life.
        const { assert!(LEASE_REFRESH.as_millis() * 2 < LEASE_TTL.as_millis()) };
    }

    #[test]
    fn a_failing_redis_is_retried_with_backoff_and_its_return_is_reported() {
        let start = Instant::now();
        let mut m = membership(start);
        let _ = m.poll_command(start);
        m.handle_written(start, Ok(()));
        let mut now = start + LEASE_REFRESH;
        let _ = m.poll_command(now);
        let lost = m.handle_written(now, Err("connection refused".into()));
        assert_eq!(
            lost,
            Some(RedisHealth::Lost {
                error: "connection refused".into()
            })
        );
        assert!(!m.redis_up() && m.redis_down());
        let mut delays = Vec::new();
        for _ in 0..5 {
            let due = m.poll_timeout().unwrap();
            delays.push(due - now);
            now = due;
            assert!(m.poll_command(now).is_some());
            assert_eq!(m.handle_written(now, Err("still".into())), None);
        }
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 2000].map(Duration::from_millis)
        );
        let due = m.poll_timeout().unwrap();
        let _ = m.poll_command(due);
        assert_eq!(
            m.handle_written(due, Ok(())),
            Some(RedisHealth::Back {
                down_for: due - (start + LEASE_REFRESH)
            })
        );
        assert!(m.redis_up());
        assert_eq!(m.poll_timeout(), Some(due + LEASE_REFRESH));
    }

    #[test]
    fn draining_is_written_at_once() {
        let start = Instant::now();
        let mut m = membership(start);
        let _ = m.poll_command(start);
        m.handle_written(start, Ok(()));
        let now = start + Duration::from_millis(100);
        m.set_draining(now);
        assert_eq!(m.poll_timeout(), Some(now));
        assert_eq!(written(m.poll_command(now)).state, NodeState::Draining);
    }
}
