//! The cluster as this node last read it, sans-IO: the live nodes' leases and when they were
//! read. Whatever chooses among nodes (the relay planner's pulls, `/lb` and WHEP routing, in
//! later steps of issue 14) reads this view instead of asking Redis on every decision; it is
//! refreshed with every lease write (every 2 s), and a view older than a lease's life is stale:
//! its nodes may be gone.

use std::time::Instant;

use super::lease::{NodeId, NodeLease, NodeState};
use super::membership::LEASE_TTL;
use crate::config::cluster::ClusterRole;

/// The live nodes as last read.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    nodes: Vec<NodeLease>,
    read_at: Option<Instant>,
}

impl ClusterView {
    /// The nodes read from Redis at `now`.
    pub fn new(now: Instant, nodes: Vec<NodeLease>) -> ClusterView {
        ClusterView {
            nodes,
            read_at: Some(now),
        }
    }

    /// Every live node, this one included.
    pub fn nodes(&self) -> &[NodeLease] {
        &self.nodes
    }

    /// The node `id`, if it was live.
    pub fn node(&self, id: &NodeId) -> Option<&NodeLease> {
        self.nodes.iter().find(|n| n.id == *id)
    }

    /// The SERVING nodes with `role`.
    pub fn serving(&self, role: ClusterRole) -> impl Iterator<Item = &NodeLease> {
        self.nodes
            .iter()
            .filter(move |n| n.state == NodeState::Serving && n.roles.contains(&role))
    }

    /// Whether it was read within a lease's life of `now` (never read: not fresh).
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.read_at
            .is_some_and(|at| now.saturating_duration_since(at) < LEASE_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lease::NodeAddresses;
    use crate::config::cluster::ClusterConfig;

    fn lease(n: u32, roles: &[ClusterRole], state: NodeState) -> NodeLease {
        let mut config = ClusterConfig::new("redis://127.0.0.1");
        config.roles = roles.to_vec();
        let addresses = NodeAddresses {
            host: "127.0.0.1".into(),
            http_port: Some(8080),
            https_port: None,
        };
        let mut lease = NodeLease::new(NodeId::new(None, n), &config, &addresses, 0);
        lease.state = state;
        lease
    }

    #[test]
    fn serving_nodes_by_role_and_freshness() {
        let now = Instant::now();
        let view = ClusterView::new(
            now,
            vec![
                lease(1, &[ClusterRole::Origin], NodeState::Serving),
                lease(
                    2,
                    &[ClusterRole::Edge, ClusterRole::Transit],
                    NodeState::Serving,
                ),
                lease(3, &[ClusterRole::Edge], NodeState::Draining),
            ],
        );
        let ids = |role| -> Vec<String> { view.serving(role).map(|n| n.id.to_string()).collect() };
        assert_eq!(ids(ClusterRole::Edge), ["00000002"]);
        assert_eq!(ids(ClusterRole::Origin), ["00000001"]);
        assert_eq!(ids(ClusterRole::Transit), ["00000002"]);
        assert!(view.node(&NodeId::new(None, 3)).is_some());
        assert!(view.node(&NodeId::new(None, 4)).is_none());
        assert!(view.is_fresh(now + LEASE_TTL / 2));
        assert!(!view.is_fresh(now + LEASE_TTL));
        assert!(!ClusterView::default().is_fresh(now));
    }
}
