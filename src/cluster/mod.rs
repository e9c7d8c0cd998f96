//! The dynamic CDN's shared state (`[cluster]`): nodes and the streams they publish, kept in
//! Redis as LiveKit, OvenMediaEngine and SRS keep theirs (see
//! `../shared/research/wcs-cdn-auth-and-clusters.md` §3).
//!
//! - [`lease`]: what is stored: node ids, leases, stream claims, key names.
//! - [`membership`] (sans-IO): the node's lease, written every 2 s for 6 s, and Redis's health.
//! - [`ownership`] (sans-IO): the streams this node owns: claimed on publish (a second
//!   publisher of the name elsewhere is refused), refreshed while published, re-asserted after
//!   Redis comes back, released on unpublish.
//! - [`pulls`] (sans-IO): the streams this node pulls from others, and when an unwatched one
//!   is let go.
//! - [`route`] (sans-IO): which edge a player is sent to (`/lb`, the WHEP redirect).
//! - [`store`] (IO): the Redis operations, one Lua script each.
//! - [`view`] (sans-IO): the live nodes as last read, for whatever chooses among them.
//! - this module (IO): [`Cluster`], the handle signalling holds, and [`run`], the task on the
//!   signalling runtime that feeds the two state machines (the registry's streams, the node's
//!   load, the time) and carries their commands out.
//!
//! Redis trouble never stops the node: what it serves goes on, a publish is accepted without a
//! claim (and claimed when Redis is back), and the log says when Redis was lost and when it
//! came back. Pulling on demand (`crate::signalling::pull`, with [`pulls`]) finds a stream's
//! owner and its address here; routing and failover (later steps of issue 14) will read the
//! cluster view from here too.

pub mod lease;
pub mod membership;
pub mod ownership;
pub mod pulls;
pub mod route;
pub mod store;
pub mod view;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use self::lease::StreamClaim;
use self::lease::{NodeAddresses, NodeId, NodeLease, NodeLoad};
use self::membership::{Membership, MembershipCommand, RedisHealth};
use self::ownership::{ClaimReply, Ownership, OwnershipCommand, OwnershipNote};
use self::store::{Store, StoreError};
use self::view::ClusterView;
use crate::config::cluster::{ClusterConfig, ClusterRole};
use crate::signalling::Signalling;

/// How long [`run`] waits after a nudge before it looks at the registry, so a burst of
/// changes (players joining) costs one look.
const NUDGE_DEBOUNCE: Duration = Duration::from_millis(20);
/// How long a publish waits for its claim while the lease writes fail.
pub const CLAIM_WHILE_DOWN: Duration = Duration::from_millis(300);

/// Why a publish was refused by the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefused {
    /// Another node publishes the name.
    #[error("stream {stream:?} is published on node {owner}")]
    Taken { stream: String, owner: NodeId },
}

/// This node's membership of a cluster, shared by signalling (which claims publishes through
/// it and reads the live nodes) and [`run`].
pub struct Cluster {
    node: NodeId,
    roles: Vec<ClusterRole>,
    group: String,
    store: Store,
    machines: Mutex<Machines>,
    view: Mutex<Arc<ClusterView>>,
    nudge: Notify,
}

struct Machines {
    membership: Membership,
    ownership: Ownership,
}

impl Cluster {
    /// Joins the cluster of `config` as a new node reached at `addresses`. Must be called on
    /// the signalling runtime (the Redis connection lives there); does not wait for Redis.
    pub fn new(config: &ClusterConfig, addresses: &NodeAddresses) -> Result<Cluster, StoreError> {
        let node = NodeId::new(config.node_id.as_deref(), rand::random());
        let store = Store::new(&config.redis_url)?;
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let now = Instant::now();
        let lease = NodeLease::new(node.clone(), config, addresses, started_at_ms);
        Ok(Cluster {
            store,
            machines: Mutex::new(Machines {
                membership: Membership::new(now, lease),
                ownership: Ownership::new(now, node.clone()),
            }),
            node,
            roles: config.roles.clone(),
            group: config.group.clone(),
            view: Mutex::new(Arc::new(ClusterView::default())),
            nudge: Notify::new(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// Whether this node has `role`.
    pub fn has_role(&self, role: ClusterRole) -> bool {
        self.roles.contains(&role)
    }

    /// The edge a player of `stream` is sent to (see [`route`]), from the view last read;
    /// None when no edge serves or the view is stale (its nodes may be gone).
    pub fn choose_edge(&self, stream: Option<&str>) -> Option<NodeLease> {
        let view = self.view();
        if !view.is_fresh(Instant::now()) {
            return None;
        }
        route::choose_edge(&view, stream, |n| rand::random::<u32>() as usize % n).cloned()
    }

    /// The transit node this node pulls `stream` through (see [`route::choose_transit`]): one
    /// of its group's, never itself; None when the group has none serving, this node is a
    /// transit node itself (it pulls from the owner), or the view is stale.
    pub fn choose_transit(&self, stream: &str) -> Option<NodeLease> {
        if self.has_role(ClusterRole::Transit) {
            return None;
        }
        let view = self.view();
        if !view.is_fresh(Instant::now()) {
            return None;
        }
        route::choose_transit(&view, &self.group, stream)
            .filter(|node| node.id != self.node)
            .cloned()
    }

    /// Claims `stream` for a publish about to be accepted here. Refused when another node
    /// publishes it. When Redis does not answer, the publish goes on unclaimed (logged) and is
    /// claimed once Redis is back: the node keeps serving. While the lease writes fail, Redis
    /// gets [`CLAIM_WHILE_DOWN`] to answer, not the whole [`store::OP_TIMEOUT`] (an unreachable
    /// host may take all of it to fail), but it is asked: it may be back before the lease
    /// writes notice, and a publisher elsewhere may hold the name again.
    pub async fn claim(&self, stream: &str) -> Result<(), ClaimRefused> {
        let limit = if self.machines().membership.redis_down() {
            CLAIM_WHILE_DOWN
        } else {
            store::OP_TIMEOUT
        };
        let asked = Instant::now();
        let mut result = self.store.claim(&self.node, stream, limit).await;
        if let (Err(StoreError::Redis(_)), Some(left)) =
            (&result, limit.checked_sub(asked.elapsed()))
        {
            // A connection that broke while Redis was away fails its first command and
            // reconnects: once more, within what is left.
            result = self.store.claim(&self.node, stream, left).await;
        }
        match result {
            Ok(ClaimReply::Claimed(claim)) => {
                debug!(stream, epoch = claim.epoch, "stream claimed in the cluster");
                self.machines()
                    .ownership
                    .handle_claimed(Instant::now(), stream, claim);
                Ok(())
            }
            Ok(ClaimReply::Taken(theirs)) => Err(ClaimRefused::Taken {
                stream: stream.to_owned(),
                owner: theirs.node,
            }),
            Err(e) => {
                warn!(stream, error = %e, "cannot claim the stream in the cluster: publishing it unclaimed; it is claimed when Redis answers again");
                Ok(())
            }
        }
    }

    /// The node drains: its lease says DRAINING with the next write, which is due at once.
    pub fn drain(&self) {
        self.machines().membership.set_draining(Instant::now());
        self.nudge();
    }

    /// The live nodes' leases, this one's included.
    pub async fn live_nodes(&self) -> Result<Vec<NodeLease>, StoreError> {
        self.store.live_nodes().await
    }

    /// The live nodes as last read (with every lease write, every 2 s).
    pub fn view(&self) -> Arc<ClusterView> {
        self.view
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Who publishes `stream` in the cluster, and which publication it is (None: nobody).
    pub async fn stream_owner(&self, stream: &str) -> Result<Option<StreamClaim>, StoreError> {
        self.store.stream_owner(stream).await
    }

    /// Tells the events channel that the access list of `stream`, published here, now holds
    /// `keys` keys (the keys themselves are players' credentials: never sent). The relays
    /// carry the list itself to the nodes that pull the stream.
    pub async fn announce_acl_change(&self, stream: &str, keys: usize) {
        let event = serde_json::json!({
            "event": "acl_changed",
            "stream": stream,
            "node": self.node,
            "keys": keys,
        });
        if let Err(e) = self.store.publish_event(&event).await {
            debug!(stream, error = %e, "cannot announce the access list change");
        }
    }

    /// Something changed in the registry (a stream may have ended): [`run`] looks soon.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Whether Redis answered the last lease write.
    pub fn redis_up(&self) -> bool {
        self.machines().membership.redis_up()
    }

    /// Whether the last lease write failed (at start, before any write, Redis is presumed up).
    pub fn redis_down(&self) -> bool {
        self.machines().membership.redis_down()
    }

    fn machines(&self) -> MutexGuard<'_, Machines> {
        // The machines stay consistent between calls; a panic elsewhere must not stop the node.
        self.machines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A Redis operation to carry out.
enum Command {
    Membership(MembershipCommand),
    Ownership(OwnershipCommand),
}

/// Keeps the node's lease and its streams' claims in Redis until `signalling` is gone.
pub async fn run(cluster: Arc<Cluster>, signalling: Weak<Signalling>) {
    info!(node = %cluster.node, "joining the cluster");
    loop {
        let Some(state) = signalling.upgrade() else {
            return;
        };
        let commands = plan(&cluster, &state, Instant::now());
        drop(state);
        for command in commands {
            carry_out(&cluster, command).await;
        }
        let deadline = {
            let machines = cluster.machines();
            let ownership = machines.ownership.poll_timeout();
            machines
                .membership
                .poll_timeout()
                .map_or(ownership, |m| m.min(ownership))
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = cluster.nudge.notified() => tokio::time::sleep(NUDGE_DEBOUNCE).await,
        }
    }
}

/// Feeds the machines the registry's streams, the node's load and the time; returns what is
/// due.
fn plan(cluster: &Cluster, state: &Signalling, now: Instant) -> Vec<Command> {
    // The cluster's lock first, then the plane's (never the other way round): the claims the
    // publish path reports and the streams read here stay in order.
    let mut machines = cluster.machines();
    {
        let registry = state.registry();
        let load = NodeLoad {
            sessions: registry.core_load().iter().sum::<usize>() as u64,
            streams: registry.streams().count() as u64,
        };
        machines.membership.set_load(load);
        // A copy relayed here (a pull) is its owner's, not ours to claim.
        let published = registry.streams().filter(|s| !registry.is_copy(s));
        machines
            .ownership
            .handle_local_streams(now, published.map(|s| (s.name.as_str(), s.id)));
    }
    machines.ownership.handle_timeout(now);
    let mut commands = Vec::new();
    if let Some(command) = machines.membership.poll_command(now) {
        commands.push(Command::Membership(command));
    }
    while let Some(command) = machines.ownership.poll_command() {
        commands.push(Command::Ownership(command));
    }
    commands
}

async fn carry_out(cluster: &Cluster, command: Command) {
    let store = &cluster.store;
    let node = &cluster.node;
    match command {
        Command::Membership(MembershipCommand::WriteLease { lease }) => {
            let result = store.write_lease(node, &lease).await;
            if result.is_ok() {
                read_view(cluster).await;
            }
            let now = Instant::now();
            let mut machines = cluster.machines();
            let health = machines
                .membership
                .handle_written(now, result.map_err(|e| e.to_string()));
            match health {
                Some(RedisHealth::Joined) => info!(node = %node, "in the cluster: lease written"),
                Some(RedisHealth::Lost { error }) => {
                    error!(node = %node, %error, "Redis is unreachable: serving what this node has, retrying (new publishes are not claimed until it answers)");
                }
                Some(RedisHealth::Back { down_for }) => {
                    info!(node = %node, down_ms = down_for.as_millis() as u64, "Redis answers again: lease and stream claims re-asserted");
                    machines.ownership.handle_redis_back(now);
                    drop(machines);
                    cluster.nudge();
                }
                None => {}
            }
        }
        Command::Ownership(OwnershipCommand::Claim { stream }) => {
            let result = store.claim(node, &stream, store::OP_TIMEOUT).await;
            if let Err(e) = &result {
                debug!(stream, error = %e, "stream claim failed");
            }
            let note = cluster
                .machines()
                .ownership
                .handle_claim_result(&stream, result.map_err(|e| e.to_string()));
            log_note(note);
        }
        Command::Ownership(OwnershipCommand::Refresh { stream, claim }) => {
            let result = store.refresh(node, &stream, &claim).await;
            let note = cluster.machines().ownership.handle_refresh_result(
                &stream,
                &claim,
                result.map_err(|e| e.to_string()),
            );
            log_note(note);
        }
        Command::Ownership(OwnershipCommand::Release { stream, claim }) => {
            match store.release(node, &stream, &claim).await {
                Ok(true) => debug!(
                    stream,
                    epoch = claim.epoch,
                    "stream released in the cluster"
                ),
                Ok(false) => debug!(stream, "stream claim already gone"),
                // The key expires by itself within its TTL.
                Err(e) => {
                    warn!(stream, error = %e, "cannot release the stream's claim; it expires by itself")
                }
            }
        }
    }
}

/// Reads the live nodes into the view; a failed read leaves the old view to go stale.
async fn read_view(cluster: &Cluster) {
    match cluster.store.live_nodes().await {
        Ok(nodes) => {
            let view = Arc::new(ClusterView::new(Instant::now(), nodes));
            *cluster
                .view
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = view;
        }
        Err(e) => debug!(error = %e, "cannot read the cluster's nodes"),
    }
}

fn log_note(note: Option<OwnershipNote>) {
    match note {
        Some(OwnershipNote::Reasserted { stream, epoch }) => {
            info!(stream, epoch, "stream claim re-asserted in the cluster");
        }
        Some(OwnershipNote::Conflict { stream, owner }) => {
            let owner = owner.map_or_else(|| "an unknown holder".to_owned(), |o| o.to_string());
            warn!(stream, %owner, "stream is published here and claimed by another node in the cluster (published while Redis was unreachable?); both keep publishing");
        }
        None => {}
    }
}
