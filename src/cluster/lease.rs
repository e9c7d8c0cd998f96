//! What the cluster keeps in Redis, as types: the node's identity ([`NodeId`]), its lease
//! ([`NodeLease`], JSON under [`Keys::node`]), a stream's owner ([`StreamClaim`], JSON under
//! [`Keys::stream`]) and the key names themselves. Sans-IO: nothing here talks to Redis.

use serde::{Deserialize, Serialize};

use crate::config::cluster::{ClusterConfig, ClusterRole};

/// A node's id in the cluster: the configured prefix and a random suffix drawn at start, so
/// a restarted node is a new node and never refreshes the lease of its previous life.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// The id of a node started with `prefix` (`cluster.node_id`) and the random `suffix`.
    pub fn new(prefix: Option<&str>, suffix: u32) -> NodeId {
        match prefix {
            Some(prefix) => NodeId(format!("{prefix}-{suffix:08x}")),
            None => NodeId(format!("{suffix:08x}")),
        }
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    /// A node id as another node names it (a pull request).
    fn from(id: &str) -> NodeId {
        NodeId(id.to_owned())
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a node takes new players and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NodeState {
    /// Takes new work.
    Serving,
    /// Serves what it has, takes nothing new, leaves when it is done.
    Draining,
}

/// What a node reports of its load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Its sessions: publishers, players and relays.
    pub sessions: u64,
    /// Its live streams.
    pub streams: u64,
}

/// A node's lease: what every node of the cluster reads about it while it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLease {
    /// Its id.
    pub id: NodeId,
    /// What it does.
    pub roles: Vec<ClusterRole>,
    /// Its group (edges pull through the transit nodes of their group).
    pub group: String,
    /// SERVING or DRAINING.
    pub state: NodeState,
    /// The host other nodes and players reach it by.
    pub host: String,
    /// Its WebSocket URL (`ws://host:port/`), when it listens for plain HTTP.
    pub ws: Option<String>,
    /// Its secure WebSocket URL (`wss://host:port/`), when it listens for HTTPS.
    pub wss: Option<String>,
    /// Where its WHEP endpoints start (`http://host:port/whep/`).
    pub whep: String,
    /// Its load when the lease was last written.
    pub load: NodeLoad,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Its rtcdn version.
    pub version: String,
}

/// Where a node is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    /// Host name or address.
    pub host: String,
    /// Plain HTTP/WebSocket port.
    pub http_port: Option<u16>,
    /// HTTPS/secure WebSocket port.
    pub https_port: Option<u16>,
}

impl NodeLease {
    /// A serving node's first lease.
    pub fn new(
        id: NodeId,
        config: &ClusterConfig,
        addresses: &NodeAddresses,
        started_at_ms: u64,
    ) -> NodeLease {
        let host = crate::config::addresses::url_host(&addresses.host);
        let ws = addresses.http_port.map(|p| format!("ws://{host}:{p}/"));
        let wss = addresses.https_port.map(|p| format!("wss://{host}:{p}/"));
        let whep = match (addresses.http_port, addresses.https_port) {
            (Some(p), _) => format!("http://{host}:{p}/whep/"),
            (None, Some(p)) => format!("https://{host}:{p}/whep/"),
            (None, None) => format!("http://{host}/whep/"),
        };
        NodeLease {
            id,
            roles: config.roles.clone(),
            group: config.group.clone(),
            state: NodeState::Serving,
            host: addresses.host.clone(),
            ws,
            wss,
            whep,
            load: NodeLoad::default(),
            started_at_ms,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// What `/lb` answers when it sends a player here: the static CDN's `server`, `ws` and
    /// `wss` (ports, as WCS's balancer gives them) with the WHEP base and the node's id.
    pub fn lb_answer(&self) -> serde_json::Value {
        let port = |url: &Option<String>| {
            url.as_deref()
                .and_then(|u| u.parse::<hyper::Uri>().ok())
                .and_then(|u| u.port_u16())
        };
        let mut answer = serde_json::json!({
            "server": self.host,
            "whep": self.whep,
            "node": self.id,
        });
        if let Some(ws) = port(&self.ws) {
            answer["ws"] = ws.into();
        }
        if let Some(wss) = port(&self.wss) {
            answer["wss"] = wss.into();
        }
        answer
    }

    /// The node as WCS's `/rest-api/cdn/show_nodes` lists it (`id`, `globalState`,
    /// `processingState`, `role`), with rtcdn's own fields beside them. `id` is the node's
    /// cluster id, not its address (several nodes may share a host); `role` joins several roles
    /// with commas; a DRAINING node is PASSIVE and allows no new streams.
    pub fn show_node(&self) -> serde_json::Value {
        let role = self
            .roles
            .iter()
            .map(|r| r.as_str().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(",");
        let (global, processing) = match self.state {
            NodeState::Serving => ("ACTIVE", "NEW_STREAMS_ALLOWED"),
            NodeState::Draining => ("PASSIVE", "NEW_STREAMS_DENIED"),
        };
        serde_json::json!({
            "id": self.id,
            "globalState": global,
            "processingState": processing,
            "role": role,
            "roles": self.roles,
            "group": self.group,
            "state": self.state,
            "host": self.host,
            "ws": self.ws,
            "wss": self.wss,
            "whep": self.whep,
            "load": self.load,
            "startedAtMs": self.started_at_ms,
            "version": self.version,
        })
    }
}

/// A stream's registration: the node that publishes it and which publication it is. The
/// epoch grows at every (re)publish of the name in the cluster, so a reader can tell a new
/// source from a late word about the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClaim {
    /// The owner.
    pub node: NodeId,
    /// The publication.
    pub epoch: u64,
    /// The value as stored in Redis: compare-and-refresh and compare-and-delete match it.
    pub raw: String,
}

#[derive(Deserialize)]
struct ClaimJson {
    node: NodeId,
    epoch: u64,
}

impl StreamClaim {
    /// Reads a stream key's value (`{"node": ID, "epoch": N}`); None when it is not one.
    pub fn parse(raw: &str) -> Option<StreamClaim> {
        let json: ClaimJson = serde_json::from_str(raw).ok()?;
        Some(StreamClaim {
            node: json.node,
            epoch: json.epoch,
            raw: raw.to_owned(),
        })
    }
}

/// The Redis names of a cluster: every key starts with `rtcdn:`.
pub struct Keys;

impl Keys {
    /// A node's lease.
    pub fn node(id: &NodeId) -> String {
        format!("{}{id}", Self::NODE_PREFIX)
    }
    /// What node keys start with.
    pub const NODE_PREFIX: &'static str = "rtcdn:node:";
    /// The sorted set of live nodes, scored by lease expiry (Redis time, ms).
    pub const NODES: &'static str = "rtcdn:nodes";
    /// The pub/sub channel of cluster events (stream_up, stream_down, node_up, node_draining).
    pub const EVENTS: &'static str = "rtcdn:events";

    /// A stream's owner.
    pub fn stream(name: &str) -> String {
        format!("rtcdn:stream:{name}")
    }

    /// A stream name's publication counter.
    pub fn epoch(name: &str) -> String {
        format!("rtcdn:epoch:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(host: &str, http: Option<u16>, https: Option<u16>) -> NodeLease {
        let mut config = ClusterConfig::new("redis://127.0.0.1");
        config.roles = vec![ClusterRole::Transit, ClusterRole::Edge];
        let addresses = NodeAddresses {
            host: host.into(),
            http_port: http,
            https_port: https,
        };
        NodeLease::new(NodeId::new(Some("eu"), 0xab), &config, &addresses, 7)
    }

    #[test]
    fn ids_take_the_prefix_and_a_fresh_suffix() {
        assert_eq!(
            NodeId::new(Some("eu-edge"), 0x1f).as_str(),
            "eu-edge-0000001f"
        );
        assert_eq!(NodeId::new(None, 0xdeadbeef).as_str(), "deadbeef");
        assert_eq!(Keys::node(&NodeId::new(None, 1)), "rtcdn:node:00000001");
    }

    #[test]
    fn a_lease_names_its_urls_and_reads_back() {
        let l = lease("10.0.0.5", Some(8080), Some(8443));
        assert_eq!(l.ws.as_deref(), Some("ws://10.0.0.5:8080/"));
        assert_eq!(l.wss.as_deref(), Some("wss://10.0.0.5:8443/"));
        assert_eq!(l.whep, "http://10.0.0.5:8080/whep/");
        let json = serde_json::to_string(&l).unwrap();
        assert!(json.contains("\"state\":\"SERVING\""), "{json}");
        assert_eq!(serde_json::from_str::<NodeLease>(&json).unwrap(), l);
        let l = lease("::1", None, Some(443));
        assert_eq!(l.whep, "https://[::1]:443/whep/");
        assert_eq!(l.ws, None);
    }

    #[test]
    fn show_nodes_speaks_wcs_and_more() {
        let mut l = lease("h", Some(1), None);
        let shown = l.show_node();
        assert_eq!(shown["id"], "eu-000000ab");
        assert_eq!(shown["globalState"], "ACTIVE");
        assert_eq!(shown["processingState"], "NEW_STREAMS_ALLOWED");
        assert_eq!(shown["role"], "TRANSIT,EDGE");
        assert_eq!(shown["roles"], serde_json::json!(["transit", "edge"]));
        l.state = NodeState::Draining;
        assert_eq!(l.show_node()["globalState"], "PASSIVE");
    }

    #[test]
    fn the_fuzz_seeds_and_garbage_pass_the_fuzz_body() {
        for seed in ["claim", "lease"] {
            let path = format!(
                "{}/fuzz/corpus/seed-cluster_records/{seed}",
                env!("CARGO_MANIFEST_DIR")
            );
            let data = std::fs::read(&path).unwrap();
            crate::fuzzing::fuzz_cluster_records(&data);
        }
        let lease = include_str!("../../fuzz/corpus/seed-cluster_records/lease");
        assert!(
            serde_json::from_str::<NodeLease>(lease).is_ok(),
            "the seed is a lease"
        );
        for garbage in [&b"{\"node\":1}"[..], b"\xff", b"[]", b"{\"epoch\":1e400}"] {
            crate::fuzzing::fuzz_cluster_records(garbage);
        }
    }

    #[test]
    fn claims_parse_or_are_refused() {
        let claim = StreamClaim::parse("{\"node\":\"a-1\",\"epoch\":3}").unwrap();
        assert_eq!((claim.node.as_str(), claim.epoch), ("a-1", 3));
        assert_eq!(claim.raw, "{\"node\":\"a-1\",\"epoch\":3}");
        assert!(StreamClaim::parse("a-1").is_none());
        assert!(StreamClaim::parse("{\"node\":\"a\",\"epoch\":-1}").is_none());
    }
}
