//! Which streams this node owns in the cluster, sans-IO: it compares what the node publishes
//! (the registry's streams, given to [`Ownership::handle_local_streams`]) with what it holds
//! in Redis, and asks the Redis side (`super::redis`) to claim, refresh and release.
//!
//! A publish is claimed before it is accepted (the publish path asks Redis itself and reports
//! the claim with [`Ownership::handle_claimed`]), so a second publisher elsewhere is refused.
//! Held claims are refreshed every [`STREAM_REFRESH`] (they live [`STREAM_TTL`]); a refresh
//! that finds the key gone (Redis restarted or was unreachable longer than the TTL) writes it
//! back, so ownership is re-asserted by itself. A stream that ends is released, only if the key
//! still holds our claim. A stream that lives here without a claim (published while Redis was
//! unreachable, or one a refresh found taken) is claimed again at each refresh; until then two
//! nodes may publish the name, which is logged (what to do then is the failover step's
//! decision).

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::lease::{NodeId, StreamClaim};
use crate::control::StreamId;

/// How long a stream's claim lives without a refresh.
pub const STREAM_TTL: Duration = Duration::from_secs(6);
/// How often held claims are refreshed.
pub const STREAM_REFRESH: Duration = Duration::from_secs(2);
/// How long a claim made for a publish may wait for the publish to show in the registry
/// before it is released (the publish was refused or failed after the claim).
pub const PENDING_GRACE: Duration = Duration::from_secs(5);

/// What the Redis side is asked to do for the streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnershipCommand {
    /// Claim `stream` (set it if absent or ours, with a new epoch); report with
    /// [`Ownership::handle_claim_result`].
    Claim { stream: String },
    /// Keep `claim` of `stream` alive, writing it back if the key is gone; report with
    /// [`Ownership::handle_refresh_result`].
    Refresh { stream: String, claim: StreamClaim },
    /// Delete `stream`'s key if it still holds `claim`.
    Release { stream: String, claim: StreamClaim },
}

/// What Redis answered a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimReply {
    /// The name is ours, as this publication.
    Claimed(StreamClaim),
    /// Another node publishes the name.
    Taken(StreamClaim),
}

/// What Redis answered a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshReply {
    /// The claim was still there.
    Refreshed,
    /// The key was gone and is written back.
    Reasserted,
    /// Another node's claim holds the name.
    Taken,
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnershipNote {
    /// A claim was written back after the key was lost.
    Reasserted { stream: String, epoch: u64 },
    /// The name is published here and claimed by `owner` (when its claim could be read) in
    /// Redis.
    Conflict {
        stream: String,
        owner: Option<NodeId>,
    },
}

#[derive(Debug)]
struct Owned {
    /// Our claim in Redis, when we hold one.
    claim: Option<StreamClaim>,
    /// The local publication; None while a claim waits for its publish.
    local: Option<StreamId>,
    /// When the claim was reported (for [`PENDING_GRACE`]).
    since: Instant,
    /// A claim is out for it.
    claiming: bool,
}

/// The streams this node owns in the cluster.
#[derive(Debug)]
pub struct Ownership {
    node: NodeId,
    streams: BTreeMap<String, Owned>,
    commands: VecDeque<OwnershipCommand>,
    next_refresh: Instant,
}

impl Ownership {
    /// Owns nothing yet.
    pub fn new(now: Instant, node: NodeId) -> Ownership {
        Ownership {
            node,
            streams: BTreeMap::new(),
            commands: VecDeque::new(),
            next_refresh: now + STREAM_REFRESH,
        }
    }

    /// Our claim of `stream`, if we hold one.
    pub fn claim(&self, stream: &str) -> Option<&StreamClaim> {
        self.streams.get(stream)?.claim.as_ref()
    }

    /// The publish path claimed `stream` in Redis for a publish about to be accepted.
    pub fn handle_claimed(&mut self, now: Instant, stream: &str, claim: StreamClaim) {
        match self.streams.entry(stream.to_owned()) {
            MapEntry::Occupied(mut entry) => {
                // The name was already ours here (a race with a local publisher): the key now
                // holds the new claim, which is what refreshes must match.
                let owned = entry.get_mut();
                owned.claim = Some(claim);
                owned.since = now;
            }
            MapEntry::Vacant(entry) => {
                entry.insert(Owned {
                    claim: Some(claim),
                    local: None,
                    since: now,
                    claiming: false,
                });
            }
        }
    }

    /// The streams published on this node now (name and publication), from the registry.
    pub fn handle_local_streams<'a>(
        &mut self,
        now: Instant,
        local: impl IntoIterator<Item = (&'a str, StreamId)>,
    ) {
        let mut seen = Vec::new();
        for (name, id) in local {
            seen.push(name);
            match self.streams.get_mut(name) {
                None => {
                    // Published without a claim (Redis was unreachable): claim it now.
                    self.streams.insert(
                        name.to_owned(),
                        Owned {
                            claim: None,
                            local: Some(id),
                            since: now,
                            claiming: true,
                        },
                    );
                    self.commands.push_back(OwnershipCommand::Claim {
                        stream: name.to_owned(),
                    });
                }
                Some(owned) if owned.local.is_none() => owned.local = Some(id),
                Some(owned) if owned.local != Some(id) => {
                    // A new publication of the name here, without the publish path's claim:
                    // it takes a new epoch.
                    owned.local = Some(id);
                    if !owned.claiming {
                        owned.claiming = true;
                        self.commands.push_back(OwnershipCommand::Claim {
                            stream: name.to_owned(),
                        });
                    }
                }
                Some(_) => {}
            }
        }
        seen.sort_unstable();
        let gone: Vec<String> = self
            .streams
            .iter()
            .filter(|(name, owned)| {
                seen.binary_search(&name.as_str()).is_err()
                    && (owned.local.is_some() || now >= owned.since + PENDING_GRACE)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(Owned {
                claim: Some(claim), ..
            }) = self.streams.remove(&name)
            {
                self.commands.push_back(OwnershipCommand::Release {
                    stream: name,
                    claim,
                });
            }
        }
    }

    /// Refreshes held claims and claims again what lives here without one, when it is time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + STREAM_REFRESH;
        for (name, owned) in &mut self.streams {
            match (&owned.claim, owned.local) {
                (Some(claim), _) => self.commands.push_back(OwnershipCommand::Refresh {
                    stream: name.clone(),
                    claim: claim.clone(),
                }),
                (None, Some(_)) if !owned.claiming => {
                    owned.claiming = true;
                    self.commands.push_back(OwnershipCommand::Claim {
                        stream: name.clone(),
                    });
                }
                (None, _) => {}
            }
        }
    }

    /// Redis answers again after it did not: every claim is refreshed (re-asserted) at once.
    pub fn handle_redis_back(&mut self, now: Instant) {
        self.next_refresh = now;
    }

    /// How a [`OwnershipCommand::Claim`] went (an error: it is tried again at the next
    /// refresh).
    pub fn handle_claim_result(
        &mut self,
        stream: &str,
        result: Result<ClaimReply, String>,
    ) -> Option<OwnershipNote> {
        let Some(owned) = self.streams.get_mut(stream) else {
            // The stream ended while the claim was out: give back what it got.
            if let Ok(ClaimReply::Claimed(claim)) = result {
                self.commands.push_back(OwnershipCommand::Release {
                    stream: stream.to_owned(),
                    claim,
                });
            }
            return None;
        };
        owned.claiming = false;
        match result {
            Ok(ClaimReply::Claimed(claim)) => {
                owned.claim = Some(claim);
                None
            }
            Ok(ClaimReply::Taken(theirs)) => Some(OwnershipNote::Conflict {
                stream: stream.to_owned(),
                owner: Some(theirs.node),
            }),
            Err(_) => None,
        }
    }

    /// How a [`OwnershipCommand::Refresh`] of `claim` went.
    pub fn handle_refresh_result(
        &mut self,
        stream: &str,
        claim: &StreamClaim,
        result: Result<(RefreshReply, Option<StreamClaim>), String>,
    ) -> Option<OwnershipNote> {
        let owned = self
            .streams
            .get_mut(stream)
            .filter(|o| o.claim.as_ref() == Some(claim))?;
        match result {
            Ok((RefreshReply::Refreshed, _)) | Err(_) => None,
            Ok((RefreshReply::Reasserted, _)) => Some(OwnershipNote::Reasserted {
                stream: stream.to_owned(),
                epoch: claim.epoch,
            }),
            Ok((RefreshReply::Taken, theirs)) => {
                owned.claim = None;
                Some(OwnershipNote::Conflict {
                    stream: stream.to_owned(),
                    owner: theirs.map(|c| c.node),
                })
            }
        }
    }

    /// The next command.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<OwnershipCommand> {
        self.commands.pop_front()
    }

    /// When the next refresh is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        self.next_refresh
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::new(Some("a"), 1)
    }

    fn claim(epoch: u64) -> StreamClaim {
        StreamClaim {
            node: node(),
            epoch,
            raw: format!("{{\"node\":\"a-00000001\",\"epoch\":{epoch}}}"),
        }
    }

    fn drain(o: &mut Ownership) -> Vec<OwnershipCommand> {
        std::iter::from_fn(|| o.poll_command()).collect()
    }

    #[test]
    fn a_claimed_publish_is_refreshed_while_it_lives_and_released_when_it_ends() {
        let start = Instant::now();
        let mut o = Ownership::new(start, node());
        o.handle_claimed(start, "cam", claim(1));
        o.handle_local_streams(start, [("cam", StreamId(7))]);
        assert!(drain(&mut o).is_empty(), "claimed already");
        assert_eq!(o.poll_timeout(), start + STREAM_REFRESH);
        o.handle_timeout(start + STREAM_REFRESH);
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Refresh {
                stream: "cam".into(),
                claim: claim(1)
            }]
        );
        assert_eq!(
            o.handle_refresh_result("cam", &claim(1), Ok((RefreshReply::Refreshed, None))),
            None
        );
        o.handle_local_streams(start + STREAM_REFRESH, []);
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Release {
                stream: "cam".into(),
                claim: claim(1)
            }]
        );
        assert_eq!(o.claim("cam"), None);
    }

    #[test]
    fn a_claim_whose_publish_never_shows_is_released_after_the_grace() {
        let start = Instant::now();
        let mut o = Ownership::new(start, node());
        o.handle_claimed(start, "cam", claim(2));
        o.handle_local_streams(start + PENDING_GRACE / 2, []);
        assert!(drain(&mut o).is_empty());
        o.handle_local_streams(start + PENDING_GRACE, []);
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Release {
                stream: "cam".into(),
                claim: claim(2)
            }]
        );
    }

    #[test]
    fn a_stream_published_without_a_claim_is_claimed_and_retried_until_it_is() {
        let start = Instant::now();
        let mut o = Ownership::new(start, node());
        o.handle_local_streams(start, [("cam", StreamId(1))]);
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Claim {
                stream: "cam".into()
            }]
        );
        // One claim out at a time.
        o.handle_local_streams(start, [("cam", StreamId(1))]);
        o.handle_timeout(start + STREAM_REFRESH);
        assert!(drain(&mut o).is_empty());
        assert_eq!(
            o.handle_claim_result("cam", Err("connection refused".into())),
            None
        );
        o.handle_timeout(start + STREAM_REFRESH * 2);
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Claim {
                stream: "cam".into()
            }]
        );
        let theirs = StreamClaim {
            node: NodeId::new(Some("b"), 2),
            epoch: 4,
            raw: String::new(),
        };
        assert_eq!(
            o.handle_claim_result("cam", Ok(ClaimReply::Taken(theirs))),
            Some(OwnershipNote::Conflict {
                stream: "cam".into(),
                owner: Some(NodeId::new(Some("b"), 2))
            })
        );
        o.handle_timeout(start + STREAM_REFRESH * 3);
        assert_eq!(drain(&mut o).len(), 1, "claimed again at the next refresh");
        o.handle_claim_result("cam", Ok(ClaimReply::Claimed(claim(5))));
        assert_eq!(o.claim("cam"), Some(&claim(5)));
    }

    #[test]
    fn a_new_publication_here_takes_a_new_claim() {
        let start = Instant::now();
        let mut o = Ownership::new(start, node());
        o.handle_claimed(start, "cam", claim(1));
        o.handle_local_streams(start, [("cam", StreamId(1))]);
        o.handle_local_streams(start, [("cam", StreamId(2))]);
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Claim {
                stream: "cam".into()
            }]
        );
    }

    #[test]
    fn a_claim_that_comes_back_after_its_stream_ended_is_given_back() {
        let start = Instant::now();
        let mut o = Ownership::new(start, node());
        o.handle_local_streams(start, [("cam", StreamId(1))]);
        drain(&mut o);
        o.handle_local_streams(start, []);
        assert!(drain(&mut o).is_empty(), "nothing held to release yet");
        o.handle_claim_result("cam", Ok(ClaimReply::Claimed(claim(3))));
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Release {
                stream: "cam".into(),
                claim: claim(3)
            }]
        );
    }

    #[test]
    fn after_redis_returns_claims_are_refreshed_at_once_and_a_rewrite_is_noted() {
        let start = Instant::now();
        let mut o = Ownership::new(start, node());
        o.handle_claimed(start, "cam", claim(9));
        o.handle_local_streams(start, [("cam", StreamId(1))]);
        let back = start + Duration::from_millis(300);
        o.handle_redis_back(back);
        assert_eq!(o.poll_timeout(), back);
        o.handle_timeout(back);
        assert_eq!(drain(&mut o).len(), 1);
        assert_eq!(
            o.handle_refresh_result("cam", &claim(9), Ok((RefreshReply::Reasserted, None))),
            Some(OwnershipNote::Reasserted {
                stream: "cam".into(),
                epoch: 9
            })
        );
        // A refresh that finds another node's claim drops ours and claims again later.
        let note = o.handle_refresh_result("cam", &claim(9), Ok((RefreshReply::Taken, None)));
        assert!(matches!(note, Some(OwnershipNote::Conflict { .. })));
        assert_eq!(o.claim("cam"), None);
        o.handle_timeout(back + STREAM_REFRESH);
        assert_eq!(
            drain(&mut o),
            [OwnershipCommand::Claim {
                stream: "cam".into()
            }]
        );
    }
}
