//! Which edge a player is sent to in a dynamic CDN (`/lb` and the WHEP redirect), sans-IO: the
//! cluster view's SERVING edges and their loads in, one edge out.
//!
//! - **Sticky per stream**: the edges are ranked for each stream by rendezvous hashing (the
//!   highest `hash(stream, node)` first), so every node that answers `/lb` ranks them the same
//!   way, and a stream's players go to its first edge: one pull serves them all.
//! - **Bounded load**: an edge is over its share when its sessions reach `(1 + ε)` times the
//!   edges' average (counting the player being placed), and never below the average plus
//!   [`MIN_HEADROOM`] — consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam
//!   2018). A stream whose first edge is over its share spills onto the next ones.
//! - **Two choices** for the spill: of the next two edges in the stream's order that are not
//!   over their share, the one with fewer sessions (the "power of two choices": near-even load
//!   without herding).
//!
//! Without a stream name, two edges are drawn at random and the one with fewer sessions wins.
//! An edge pulls through a transit node of its group chosen the same way ([`choose_transit`]).
//! Loads are the leases' (written every 2 s), so a burst of players between two writes follows
//! the same choice; the bound catches up at the next write.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::lease::NodeLease;
use super::view::ClusterView;
use crate::config::cluster::ClusterRole;

/// The ε of the bound: an edge takes new players until it has 25% more sessions than the
/// edges' average.
const LOAD_SLACK: f64 = 0.25;
/// The bound is never less than the average plus this many sessions: with few sessions, 25%
/// would move a small stream's second player to another edge and cost a second pull.
const MIN_HEADROOM: f64 = 10.0;
/// A fixed seed: every node of the cluster, whatever its build, must rank edges alike.
const RANK_SEED: u64 = 0x7274_6364_6e5f_6c62; // "rtcdn_lb"

/// The edge for a player of `stream` (None: any stream), from the SERVING edges of `view`;
/// `draw` gives random numbers for the stream-less case. None when no edge serves.
pub fn choose_edge<'a>(
    view: &'a ClusterView,
    stream: Option<&str>,
    draw: impl FnMut(usize) -> usize,
) -> Option<&'a NodeLease> {
    let edges: Vec<&NodeLease> = view.serving(ClusterRole::Edge).collect();
    choose(edges, stream, draw)
}

/// The transit node an edge of `group` pulls `stream` through: of the group's SERVING transit
/// nodes, chosen as edges are, so every edge of the group pulls a stream through the same
/// transit node (one relay from the origin per group) while the transit nodes share the
/// streams. None when the group has none.
pub fn choose_transit<'a>(
    view: &'a ClusterView,
    group: &str,
    stream: &str,
) -> Option<&'a NodeLease> {
    let transits: Vec<&NodeLease> = view
        .serving(ClusterRole::Transit)
        .filter(|node| node.group == group)
        .collect();
    choose(transits, Some(stream), |_| 0)
}

/// Of `edges`, the one for `stream` (see the module's doc).
fn choose<'a>(
    mut edges: Vec<&'a NodeLease>,
    stream: Option<&str>,
    mut draw: impl FnMut(usize) -> usize,
) -> Option<&'a NodeLease> {
    if edges.len() <= 1 {
        return edges.pop();
    }
    match stream {
        Some(stream) => {
            edges.sort_by_key(|edge| std::cmp::Reverse(rank(stream, edge)));
        }
        None => {
            // A partial Fisher-Yates shuffle: two distinct edges drawn at random, in front.
            for i in 0..2 {
                let j = i + draw(edges.len() - i);
                edges.swap(i, j);
            }
        }
    }
    let bound = load_bound(&edges);
    let open = |edge: &&&NodeLease| (edge.load.sessions as f64) < bound;
    if stream.is_some() && open(&&edges[0]) {
        return Some(edges[0]);
    }
    let mut spill = edges.iter().filter(open);
    match (spill.next(), spill.next()) {
        (Some(first), Some(second)) if second.load.sessions < first.load.sessions => Some(second),
        (Some(first), _) => Some(first),
        // Every edge is at its bound (it cannot be for all, but loads are floats): the least
        // loaded.
        (None, _) => edges.into_iter().min_by_key(|edge| edge.load.sessions),
    }
}

/// The sessions an edge may have before it takes no more players in the ranking.
fn load_bound(edges: &[&NodeLease]) -> f64 {
    let total: u64 = edges.iter().map(|edge| edge.load.sessions).sum();
    let average = (total + 1) as f64 / edges.len() as f64;
    ((1.0 + LOAD_SLACK) * average)
        .max(average + MIN_HEADROOM)
        .ceil()
}

/// The rendezvous score of `edge` for `stream`.
fn rank(stream: &str, edge: &NodeLease) -> u64 {
    let id = edge.id.as_str();
    let mut key = Vec::with_capacity(stream.len() + 1 + id.len());
    key.extend_from_slice(stream.as_bytes());
    // A separator no stream name contains, so ("ab", "c") and ("a", "bc") differ.
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    xxh3_64_with_seed(&key, RANK_SEED)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use super::*;
    use crate::cluster::lease::{NodeAddresses, NodeId, NodeLoad, NodeState};
    use crate::config::cluster::ClusterConfig;

    fn lease(n: u32, roles: &[ClusterRole], state: NodeState, sessions: u64) -> NodeLease {
        let mut config = ClusterConfig::new("redis://127.0.0.1");
        config.roles = roles.to_vec();
        let addresses = NodeAddresses {
            host: "127.0.0.1".into(),
            http_port: Some(8000 + n as u16),
            https_port: None,
        };
        let mut lease = NodeLease::new(NodeId::new(Some("n"), n), &config, &addresses, 0);
        lease.state = state;
        lease.load = NodeLoad {
            sessions,
            streams: 0,
        };
        lease
    }

    fn edges(loads: &[u64]) -> ClusterView {
        let mut nodes = vec![lease(100, &[ClusterRole::Origin], NodeState::Serving, 0)];
        for (i, &sessions) in loads.iter().enumerate() {
            nodes.push(lease(
                i as u32,
                &[ClusterRole::Edge],
                NodeState::Serving,
                sessions,
            ));
        }
        ClusterView::new(Instant::now(), nodes)
    }

    /// `view` with one more session on `node` (as its next lease would say).
    fn with_one_more_session(view: &ClusterView, node: &NodeId) -> ClusterView {
        let nodes = view
            .nodes()
            .iter()
            .cloned()
            .map(|mut n| {
                if n.id == *node {
                    n.load.sessions += 1;
                }
                n
            })
            .collect();
        ClusterView::new(Instant::now(), nodes)
    }

    fn no_draw(_: usize) -> usize {
        panic!("a stream's choice draws nothing")
    }

    #[test]
    fn only_serving_edges_are_chosen() {
        let mut nodes = vec![
            lease(1, &[ClusterRole::Origin], NodeState::Serving, 0),
            lease(2, &[ClusterRole::Edge], NodeState::Draining, 0),
        ];
        let view = ClusterView::new(Instant::now(), nodes.clone());
        assert!(choose_edge(&view, Some("s"), no_draw).is_none());
        nodes.push(lease(3, &[ClusterRole::Edge], NodeState::Serving, 500));
        let view = ClusterView::new(Instant::now(), nodes);
        for name in ["a", "b", "c", "d"] {
            assert_eq!(
                choose_edge(&view, Some(name), no_draw).unwrap().id,
                NodeId::new(Some("n"), 3)
            );
        }
    }

    #[test]
    fn a_stream_goes_to_the_same_edge_every_time_and_streams_spread() {
        let view = edges(&[0; 8]);
        let mut used = BTreeSet::new();
        for i in 0..64 {
            let name = format!("stream-{i}");
            let first = choose_edge(&view, Some(&name), no_draw).unwrap().id.clone();
            for _ in 0..3 {
                assert_eq!(choose_edge(&view, Some(&name), no_draw).unwrap().id, first);
            }
            used.insert(first);
        }
        assert!(
            used.len() >= 6,
            "64 streams on only {} of 8 edges",
            used.len()
        );
    }

    #[test]
    fn a_stream_stays_on_its_first_edge_until_it_is_over_its_share_then_spills_to_the_lesser_of_the_next_two(
    ) {
        let view = edges(&[10, 10, 10, 10]);
        let ranked = {
            let mut e: Vec<&NodeLease> = view.serving(ClusterRole::Edge).collect();
            e.sort_by_key(|edge| std::cmp::Reverse(rank("live", edge)));
            e.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
        };
        let loads_with = |loads: [u64; 3]| {
            let nodes = view
                .nodes()
                .iter()
                .cloned()
                .map(|mut n| {
                    if let Some(i) = ranked[..3].iter().position(|id| *id == n.id) {
                        n.load.sessions = loads[i];
                    }
                    n
                })
                .collect();
            ClusterView::new(Instant::now(), nodes)
        };
        let choose = |loads| {
            choose_edge(&loads_with(loads), Some("live"), no_draw)
                .unwrap()
                .id
                .clone()
        };
        // Under its share (the average 5.75 + 10): the first edge, however idle the others.
        assert_eq!(choose([12, 0, 0]), ranked[0]);
        // Over it (average 18.5, bound 29): the lesser of the next two; a tie keeps the order.
        assert_eq!(choose([40, 12, 11]), ranked[2]);
        assert_eq!(choose([40, 11, 12]), ranked[1]);
        assert_eq!(choose([40, 11, 11]), ranked[1]);
    }

    #[test]
    fn a_popular_stream_spills_over_to_more_edges_as_the_first_fill() {
        // Place 1,000 players of one stream, updating the loads as each arrives (as lease
        // writes would): every edge ends within the bound of the average.
        let mut view = edges(&[0; 5]);
        for _ in 0..1000 {
            let chosen = choose_edge(&view, Some("popular"), no_draw)
                .unwrap()
                .id
                .clone();
            view = with_one_more_session(&view, &chosen);
        }
        let loads: Vec<u64> = view
            .serving(ClusterRole::Edge)
            .map(|e| e.load.sessions)
            .collect();
        assert_eq!(loads.iter().sum::<u64>(), 1000);
        assert!(loads.iter().all(|&l| l <= 251), "{loads:?}");
        // With few players, they stay on the stream's first edges.
        let mut view = edges(&[100, 100, 100, 100, 100]);
        let mut used = BTreeSet::new();
        for _ in 0..20 {
            let chosen = choose_edge(&view, Some("small"), no_draw)
                .unwrap()
                .id
                .clone();
            used.insert(chosen.clone());
            view = with_one_more_session(&view, &chosen);
        }
        assert_eq!(used.len(), 1, "20 players of one stream on {used:?}");
    }

    #[test]
    fn without_a_stream_two_random_edges_are_compared() {
        let view = edges(&[5, 1, 9, 3]);
        let ids: Vec<NodeId> = view
            .serving(ClusterRole::Edge)
            .map(|e| e.id.clone())
            .collect();
        // The draws pick edges 2 (load 9) and then, of the rest, what is at index 3 (load 3).
        let mut draws = [2, 2].into_iter();
        let chosen = choose_edge(&view, None, |n| {
            let d = draws.next().unwrap();
            assert!(d < n);
            d
        })
        .unwrap();
        assert_eq!(chosen.id, ids[3]);
        // A loaded edge drawn first loses to a lighter one.
        let mut draws = [0, 0].into_iter();
        let chosen = choose_edge(&view, None, |_| draws.next().unwrap()).unwrap();
        assert_eq!(chosen.id, ids[1]);
    }

    #[test]
    fn an_edge_pulls_through_a_transit_of_its_group() {
        let mut nodes = vec![lease(1, &[ClusterRole::Origin], NodeState::Serving, 0)];
        let mut far = lease(2, &[ClusterRole::Transit], NodeState::Serving, 0);
        far.group = "far".into();
        nodes.push(far);
        let view = ClusterView::new(Instant::now(), nodes.clone());
        assert!(choose_transit(&view, "default", "live").is_none());
        assert_eq!(
            choose_transit(&view, "far", "live").unwrap().id,
            NodeId::new(Some("n"), 2)
        );
        for n in 3..7 {
            nodes.push(lease(n, &[ClusterRole::Transit], NodeState::Serving, 0));
        }
        nodes.push(lease(7, &[ClusterRole::Transit], NodeState::Draining, 0));
        let view = ClusterView::new(Instant::now(), nodes);
        let mut used = BTreeSet::new();
        for i in 0..32 {
            let name = format!("s{i}");
            let transit = choose_transit(&view, "default", &name).unwrap();
            assert_eq!(transit.group, "default");
            assert_ne!(transit.id, NodeId::new(Some("n"), 7), "a draining transit");
            assert_eq!(
                choose_transit(&view, "default", &name).unwrap().id,
                transit.id
            );
            used.insert(transit.id.clone());
        }
        assert!(used.len() >= 3, "32 streams through {used:?}");
    }

    #[test]
    fn every_node_ranks_alike() {
        // The ranking is a fixed function of the names: a change of hash or seed would send a
        // stream's players to different edges from nodes of different versions.
        let edge = lease(7, &[ClusterRole::Edge], NodeState::Serving, 0);
        assert_eq!(edge.id.as_str(), "n-00000007");
        assert_eq!(rank("live", &edge), 8_837_226_930_744_811_645);
    }
}
