//! The dynamic CDN's planners on virtual time: nodes with their real sans-IO machines —
//! `Membership` (the lease), `Ownership` (stream claims), `Pulls` (what an edge pulls and when
//! it looks for a stream's owner again) and the router's `choose_edge` — against a model of
//! the Redis scripts in `cluster::store` (the same semantics: a claim is set-if-absent or ours
//! with a new epoch, a refresh writes a lost key back, a release deletes only our claim, keys
//! expire), all stepped every 50 ms on one virtual clock. Each scenario runs from many seeds
//! (nodes start at seeded offsets, so their refreshes fall at every phase) in well under a
//! second, and checks the timing bounds the real nodes promise:
//!
//! - an origin dies: the name is free for another node within the claim's life after its last
//!   refresh, the new claim's epoch is higher, and an edge whose copy lost its source asks the
//!   new owner within one re-pull interval of the new claim;
//! - an edge dies: `/lb`'s choice stops naming it within a lease's life and a view refresh;
//! - Redis restarts empty: leases and claims are written back within a refresh, and another
//!   node can take a name only in that window (the known double-publish window).
//!
//! What the IO around the machines does is modelled in a few lines each (the publish path's
//! claim, an edge's re-pull, a relay's arrival); the real IO is covered by the process tests
//! (`bench/tests/cluster_*.rs`) and the browser test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtcdn::cluster::lease::{NodeAddresses, NodeId, NodeLease, StreamClaim};
use rtcdn::cluster::membership::{Membership, MembershipCommand, LEASE_REFRESH, LEASE_TTL};
use rtcdn::cluster::ownership::{
    ClaimReply, Ownership, OwnershipCommand, RefreshReply, STREAM_REFRESH, STREAM_TTL,
};
use rtcdn::cluster::pulls::{PullCommand, Pulls, REPULL_INTERVAL};
use rtcdn::cluster::route::choose_edge;
use rtcdn::cluster::view::ClusterView;
use rtcdn::config::cluster::{ClusterConfig, ClusterRole};
use rtcdn::control::StreamId;

const TICK: Duration = Duration::from_millis(50);
/// How often a publisher refused for a taken name tries again.
const PUBLISH_RETRY: Duration = Duration::from_millis(200);
const SEEDS: u64 = 40;

/// Redis as the scripts use it, expiring keys on the virtual clock.
#[derive(Default)]
struct Store {
    leases: BTreeMap<NodeId, (NodeLease, Instant)>,
    claims: BTreeMap<String, (StreamClaim, Instant)>,
    epochs: BTreeMap<String, u64>,
}

impl Store {
    fn write_lease(&mut self, now: Instant, json: &str) {
        let lease: NodeLease = serde_json::from_str(json).expect("a lease");
        self.leases
            .insert(lease.id.clone(), (lease, now + LEASE_TTL));
    }

    fn live(&self, now: Instant) -> Vec<NodeLease> {
        self.leases
            .values()
            .filter(|(_, expiry)| *expiry > now)
            .map(|(lease, _)| lease.clone())
            .collect()
    }

    fn owner(&self, now: Instant, stream: &str) -> Option<StreamClaim> {
        self.claims
            .get(stream)
            .filter(|(_, expiry)| *expiry > now)
            .map(|(claim, _)| claim.clone())
    }

    fn write_claim(
        &mut self,
        now: Instant,
        stream: &str,
        node: &NodeId,
        epoch: u64,
    ) -> StreamClaim {
        let raw = serde_json::json!({ "node": node, "epoch": epoch }).to_string();
        let claim = StreamClaim::parse(&raw).expect("a claim");
        self.claims
            .insert(stream.to_owned(), (claim.clone(), now + STREAM_TTL));
        claim
    }

    /// CLAIM: refused when another node's claim holds the key; else a new epoch.
    fn claim(&mut self, now: Instant, stream: &str, node: &NodeId) -> ClaimReply {
        if let Some(held) = self.owner(now, stream).filter(|c| c.node != *node) {
            return ClaimReply::Taken(held);
        }
        let epoch = self.epochs.entry(stream.to_owned()).or_default();
        *epoch += 1;
        let epoch = *epoch;
        ClaimReply::Claimed(self.write_claim(now, stream, node, epoch))
    }

    /// REFRESH: ours is extended, a lost key written back, another node's reported.
    fn refresh(
        &mut self,
        now: Instant,
        stream: &str,
        claim: &StreamClaim,
    ) -> (RefreshReply, Option<StreamClaim>) {
        match self.owner(now, stream) {
            Some(held) if held.raw == claim.raw => {
                self.write_claim(now, stream, &claim.node, claim.epoch);
                (RefreshReply::Refreshed, None)
            }
            None => {
                self.write_claim(now, stream, &claim.node, claim.epoch);
                let epoch = self.epochs.entry(stream.to_owned()).or_default();
                *epoch = (*epoch).max(claim.epoch);
                (RefreshReply::Reasserted, None)
            }
            Some(held) => (RefreshReply::Taken, Some(held)),
        }
    }

    /// RELEASE: deletes our claim only.
    fn release(&mut self, now: Instant, stream: &str, claim: &StreamClaim) {
        if self
            .owner(now, stream)
            .is_some_and(|held| held.raw == claim.raw)
        {
            self.claims.remove(stream);
        }
    }

    /// Redis restarted without persistence.
    fn clear(&mut self) {
        *self = Store::default();
    }
}

/// A stream relayed to a node from `source`, with its players.
struct Copy {
    source: NodeId,
    players: usize,
    /// Its relay's connection closed: the players wait for the next copy.
    orphaned: bool,
}

struct SimNode {
    id: NodeId,
    membership: Membership,
    ownership: Ownership,
    pulls: Pulls,
    view: ClusterView,
    alive: bool,
    /// Streams published here.
    published: BTreeMap<String, StreamId>,
    copies: BTreeMap<String, Copy>,
    /// When each lease write and claim refresh of this node reached the store.
    lease_writes: Vec<Instant>,
    claim_writes: BTreeMap<String, Instant>,
    /// Owners this node asked to relay a stream: (when, stream, owner).
    asked: Vec<(Instant, String, NodeId)>,
}

impl SimNode {
    fn new(now: Instant, index: u32, role: ClusterRole) -> SimNode {
        let id = NodeId::new(Some(&format!("n{index}")), index);
        let mut config = ClusterConfig::new("redis://model");
        config.roles = vec![role];
        let addresses = NodeAddresses {
            host: format!("10.0.0.{index}"),
            http_port: Some(8080),
            https_port: None,
        };
        let lease = NodeLease::new(id.clone(), &config, &addresses, 0);
        SimNode {
            membership: Membership::new(now, lease),
            ownership: Ownership::new(now, id.clone()),
            pulls: Pulls::new(Duration::from_secs(60)),
            view: ClusterView::new(now, Vec::new()),
            id,
            alive: true,
            published: BTreeMap::new(),
            copies: BTreeMap::new(),
            lease_writes: Vec::new(),
            claim_writes: BTreeMap::new(),
            asked: Vec::new(),
        }
    }

    /// What the node's cluster task and pull loop do at `now`.
    fn step(&mut self, now: Instant, store: &mut Store) {
        if !self.alive {
            return;
        }
        if let Some(MembershipCommand::WriteLease { lease }) = self.membership.poll_command(now) {
            store.write_lease(now, &lease);
            self.lease_writes.push(now);
            self.membership.handle_written(now, Ok(()));
            // A node reads the live nodes after each lease write.
            self.view = ClusterView::new(now, store.live(now));
        }
        let published: Vec<(String, StreamId)> = self
            .published
            .iter()
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        self.ownership
            .handle_local_streams(now, published.iter().map(|(n, id)| (n.as_str(), *id)));
        self.ownership.handle_timeout(now);
        while let Some(command) = self.ownership.poll_command() {
            match command {
                OwnershipCommand::Claim { stream } => {
                    let reply = store.claim(now, &stream, &self.id);
                    if matches!(reply, ClaimReply::Claimed(_)) {
                        self.claim_writes.insert(stream.clone(), now);
                    }
                    self.ownership.handle_claim_result(&stream, Ok(reply));
                }
                OwnershipCommand::Refresh { stream, claim } => {
                    let reply = store.refresh(now, &stream, &claim);
                    if reply.0 != RefreshReply::Taken {
                        self.claim_writes.insert(stream.clone(), now);
                    }
                    self.ownership
                        .handle_refresh_result(&stream, &claim, Ok(reply));
                }
                OwnershipCommand::Release { stream, claim } => store.release(now, &stream, &claim),
            }
        }
        self.pulls.handle_local(
            now,
            self.copies.iter().map(|(n, c)| (n.as_str(), c.players)),
        );
        let orphaned: Vec<String> = self
            .copies
            .iter()
            .filter(|(_, c)| c.orphaned)
            .map(|(n, _)| n.clone())
            .collect();
        // `signalling::pull`'s re-pull: ask the stream's owner unless it is the copy's source.
        for stream in self
            .pulls
            .due_repulls(now, orphaned.iter().map(String::as_str))
        {
            let Some(owner) = store.owner(now, &stream).map(|c| c.node) else {
                continue;
            };
            if owner != self.id && !self.pulls.is_pulled_from(&stream, &owner) {
                self.pulls.handle_requested(now, &stream, owner.clone());
                self.asked.push((now, stream, owner));
            }
        }
        while let Some(PullCommand::Release { .. }) = self.pulls.poll_command() {}
    }

    /// The publish path: claim the name, then publish; false when another node holds it.
    fn publish(&mut self, now: Instant, store: &mut Store, stream: &str, id: StreamId) -> bool {
        match store.claim(now, stream, &self.id) {
            ClaimReply::Claimed(claim) => {
                self.claim_writes.insert(stream.to_owned(), now);
                self.ownership.handle_claimed(now, stream, claim);
                self.published.insert(stream.to_owned(), id);
                true
            }
            ClaimReply::Taken(_) => false,
        }
    }
}

struct Cluster {
    now: Instant,
    store: Store,
    nodes: Vec<SimNode>,
    rng: StdRng,
}

impl Cluster {
    /// Nodes of `roles`, each joining at a seeded offset within a lease refresh.
    fn new(seed: u64, roles: &[ClusterRole]) -> Cluster {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = Instant::now();
        let nodes = roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let offset =
                    Duration::from_millis(rng.gen_range(0..LEASE_REFRESH.as_millis() as u64));
                SimNode::new(start + offset, i as u32 + 1, *role)
            })
            .collect();
        Cluster {
            now: start,
            store: Store::default(),
            nodes,
            rng,
        }
    }

    fn tick(&mut self) {
        self.now += TICK;
        for node in &mut self.nodes {
            node.step(self.now, &mut self.store);
        }
        // A relay asked of a live owner that publishes the stream arrives at the next tick and
        // takes the copy over.
        let publishers: BTreeMap<NodeId, Vec<String>> = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| (n.id.clone(), n.published.keys().cloned().collect()))
            .collect();
        for node in &mut self.nodes {
            for (_, stream, owner) in &node.asked {
                let serves = publishers.get(owner).is_some_and(|s| s.contains(stream));
                if let (true, Some(copy)) = (serves, node.copies.get_mut(stream)) {
                    if copy.orphaned {
                        copy.source = owner.clone();
                        copy.orphaned = false;
                    }
                }
            }
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.tick();
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        let until = self.now + limit;
        while self.now < until {
            self.tick();
            if done(self) {
                return true;
            }
        }
        false
    }

    /// The node dies without a word: no more writes; the relays from it close at once, which
    /// orphans the copies that have players.
    fn kill(&mut self, index: usize) {
        self.nodes[index].alive = false;
        let dead = self.nodes[index].id.clone();
        for node in &mut self.nodes {
            for copy in node.copies.values_mut() {
                if copy.source == dead && copy.players > 0 {
                    copy.orphaned = true;
                }
            }
        }
    }

    /// `puller` pulls `stream` from its owner for `players` players, and the copy arrives.
    fn pull(&mut self, puller: usize, stream: &str, players: usize) {
        let owner = self.store.owner(self.now, stream).expect("published").node;
        let now = self.now;
        let node = &mut self.nodes[puller];
        node.pulls.handle_requested(now, stream, owner.clone());
        node.copies.insert(
            stream.to_owned(),
            Copy {
                source: owner,
                players,
                orphaned: false,
            },
        );
    }
}

#[test]
fn an_origins_stream_moves_to_the_next_publisher_and_the_edge_asks_it_at_once() {
    for seed in 0..SEEDS {
        let mut cluster = Cluster::new(
            seed,
            &[ClusterRole::Origin, ClusterRole::Origin, ClusterRole::Edge],
        );
        let (a, b, edge) = (0, 1, 2);
        cluster.run_for(Duration::from_secs(3));
        let now = cluster.now;
        assert!(cluster.nodes[a].publish(now, &mut cluster.store, "live", StreamId(1)));
        let first_epoch = cluster.store.owner(now, "live").unwrap().epoch;
        cluster.run_for(Duration::from_millis(300));
        cluster.pull(edge, "live", 3);
        // A dies after a seeded while: the phase of its last refresh varies.
        let lived = Duration::from_millis(cluster.rng.gen_range(1_000..6_000));
        cluster.run_for(lived);
        cluster.kill(a);
        let died = cluster.now;
        let last_refresh = cluster.nodes[a].claim_writes["live"];
        let last_lease = *cluster.nodes[a].lease_writes.last().unwrap();

        // The publisher tries B every PUBLISH_RETRY until the name is free.
        let mut next_try = died;
        let mut published_at = None;
        while published_at.is_none() {
            assert!(
                cluster.now < died + STREAM_TTL + Duration::from_secs(2),
                "seed {seed}: B never got the name"
            );
            cluster.tick();
            if cluster.now >= next_try {
                next_try = cluster.now + PUBLISH_RETRY;
                let now = cluster.now;
                if cluster.nodes[b].publish(now, &mut cluster.store, "live", StreamId(2)) {
                    published_at = Some(now);
                }
            }
        }
        let published_at = published_at.unwrap();
        assert!(
            published_at >= last_refresh + STREAM_TTL,
            "seed {seed}: B took the name {:?} after A's last refresh, before it expired",
            published_at - last_refresh
        );
        assert!(
            published_at <= last_refresh + STREAM_TTL + PUBLISH_RETRY + TICK,
            "seed {seed}: B waited {:?} past A's claim",
            published_at - (last_refresh + STREAM_TTL)
        );
        let claim = cluster.store.owner(published_at, "live").unwrap();
        assert!(claim.epoch > first_epoch, "seed {seed}: a new epoch");

        // The edge's orphaned copy asks B within one re-pull interval, and B's copy takes over.
        let b_id = cluster.nodes[b].id.clone();
        assert!(
            cluster.run_until(REPULL_INTERVAL + TICK, |c| {
                c.nodes[edge].copies["live"].source == b_id
                    && !c.nodes[edge].copies["live"].orphaned
            }),
            "seed {seed}: the edge did not re-pull from B"
        );
        let asked_b = cluster.nodes[edge]
            .asked
            .iter()
            .find(|(_, s, o)| s == "live" && *o == b_id)
            .map(|(at, _, _)| *at)
            .expect("asked B");
        assert!(
            asked_b - published_at <= REPULL_INTERVAL + TICK,
            "seed {seed}"
        );
        assert_eq!(
            cluster.nodes[edge].asked.len(),
            1,
            "seed {seed}: the dead owner was not asked again: {:?}",
            cluster.nodes[edge].asked
        );

        // A has left the edge's view within a lease's life and a view refresh.
        let a_id = cluster.nodes[a].id.clone();
        assert!(
            cluster.run_until(LEASE_TTL + LEASE_REFRESH, |c| c.nodes[edge]
                .view
                .node(&a_id)
                .is_none()),
            "seed {seed}: A stayed in the edge's view"
        );
        assert!(
            cluster.now <= last_lease + LEASE_TTL + LEASE_REFRESH + TICK,
            "seed {seed}"
        );
    }
}

#[test]
fn a_dead_edge_stops_being_chosen_within_a_lease_and_a_view_refresh() {
    for seed in 0..SEEDS {
        let mut cluster = Cluster::new(
            seed,
            &[ClusterRole::Origin, ClusterRole::Edge, ClusterRole::Edge],
        );
        cluster.run_for(Duration::from_secs(5));
        let streams: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
        let chosen = |c: &Cluster| -> Vec<NodeId> {
            streams
                .iter()
                .filter_map(|s| choose_edge(&c.nodes[0].view, Some(s), |_| 0).map(|n| n.id.clone()))
                .collect()
        };
        let dying = cluster.nodes[1].id.clone();
        assert!(
            chosen(&cluster).contains(&dying),
            "seed {seed}: both edges in use"
        );
        let lived = Duration::from_millis(cluster.rng.gen_range(0..4_000));
        cluster.run_for(lived);
        cluster.kill(1);
        let last_lease = *cluster.nodes[1].lease_writes.last().unwrap();
        assert!(
            cluster.run_until(LEASE_TTL + LEASE_REFRESH + TICK, |c| !chosen(c)
                .contains(&dying))
        );
        let gone = cluster.now;
        assert!(
            gone <= last_lease + LEASE_TTL + LEASE_REFRESH + TICK,
            "seed {seed}: chosen {:?} after its last lease write",
            gone - last_lease
        );
        // Once gone, never chosen again, and every stream has an edge.
        for _ in 0..100 {
            cluster.tick();
            let now = chosen(&cluster);
            assert!(
                !now.contains(&dying) && now.len() == streams.len(),
                "seed {seed}"
            );
        }
    }
}

#[test]
fn after_redis_restarts_empty_leases_and_claims_are_back_within_a_refresh() {
    for seed in 0..SEEDS {
        let mut cluster = Cluster::new(seed, &[ClusterRole::Origin, ClusterRole::Origin]);
        cluster.run_for(Duration::from_secs(3));
        let now = cluster.now;
        assert!(cluster.nodes[0].publish(now, &mut cluster.store, "live", StreamId(1)));
        let epoch = cluster.store.owner(now, "live").unwrap().epoch;
        let lived = Duration::from_millis(cluster.rng.gen_range(0..4_000));
        cluster.run_for(lived);
        cluster.store.clear();
        let cleared = cluster.now;
        let a_id = cluster.nodes[0].id.clone();
        // Another node could take the name only until A's next refresh writes it back: the
        // double-publish window, at most one refresh long.
        let mut taken_at = None;
        let back = cluster.run_until(STREAM_REFRESH + TICK, |c| {
            c.store
                .owner(c.now, "live")
                .is_some_and(|claim| claim.node == a_id)
        });
        assert!(back, "seed {seed}: A's claim was not written back");
        let claim_back = cluster.now;
        assert!(claim_back - cleared <= STREAM_REFRESH + TICK, "seed {seed}");
        assert!(
            cluster.store.owner(claim_back, "live").unwrap().epoch >= epoch,
            "seed {seed}: the epoch never goes back"
        );
        let now = cluster.now;
        if cluster.nodes[1].publish(now, &mut cluster.store, "live", StreamId(2)) {
            taken_at = Some(now);
        }
        assert_eq!(taken_at, None, "seed {seed}: the name is held again");
        assert!(
            cluster.run_until(LEASE_REFRESH + TICK, |c| c.store.live(c.now).len() == 2),
            "seed {seed}: the leases were not written back within a refresh"
        );
    }
}
