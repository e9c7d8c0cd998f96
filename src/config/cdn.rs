//! `[cdn]`: the static CDN (Flashphoner "CDN 1.0") settings of a node.
//!
//! An origin with load balancing enabled and a list of nodes relays every stream published to it
//! to each node (its edges) and sends players to an edge chosen by [`BalanceMode`]. An origin
//! with no nodes is a standalone node. An edge is an ordinary node that its origin publishes to.
//! The same settings can come from WCS's `flashphoner.properties` and `loadbalancing.xml`
//! (see [`crate::config::wcs`]). The CDN itself (relays, balancer) is `crate::cdn`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::config::{Secret, MIN_SECRET_LEN};
use crate::config::error::ConfigError;

/// `cdn.role`: what this node is in the CDN.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CdnRole {
    /// Takes publishers; relays their streams to `cdn.nodes` when load balancing is enabled.
    #[default]
    Origin,
    /// Takes streams relayed by an origin (an ordinary publisher to it) and serves players.
    Edge,
}

/// `cdn.stream_distribution`: how an origin rebroadcasts streams to its edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamDistribution {
    /// "webrtc": the origin publishes each stream to each edge over the WCS WebSocket protocol.
    #[default]
    WebRtc,
    /// "rtmp": the origin publishes each stream to each edge's RTMP listener (H.264, H.265, VP9
    /// and AV1 video and Opus audio as they came, over Enhanced RTMP); a stream RTMP cannot carry
    /// (VP8, simulcast, VP9 or AV1 with spatial layers) goes over WebRTC instead.
    Rtmp,
}

impl StreamDistribution {
    /// The TOML (and WCS) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamDistribution::WebRtc => "webrtc",
            StreamDistribution::Rtmp => "rtmp",
        }
    }
}

/// Parses a `stream_distribution` value (TOML or WCS, case-insensitive); the error says why it
/// is refused.
pub(crate) fn parse_stream_distribution(value: &str) -> Result<StreamDistribution, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "webrtc" => Ok(StreamDistribution::WebRtc),
        "rtmp" => Ok(StreamDistribution::Rtmp),
        _ => Err(format!("{value:?} is not \"webrtc\" or \"rtmp\"")),
    }
}

impl<'de> Deserialize<'de> for StreamDistribution {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        parse_stream_distribution(&value).map_err(|message| {
            serde::de::Error::custom(format!("cdn.stream_distribution = {message}"))
        })
    }
}

impl Serialize for StreamDistribution {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `cdn.relay_transport`: how an origin's relay sessions reach their edges' media ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RelayTransport {
    /// The edge's UDP host candidates only (rtcdn before 0.x did nothing else).
    Udp,
    /// The edge's passive ICE-TCP candidates (RFC 6544: the origin is the active side); the
    /// edge must listen for ICE-TCP (`media.tcp`, on by default).
    Tcp,
    /// UDP first; TCP when UDP has not connected within a few seconds and the edge offers TCP.
    #[default]
    Auto,
}

impl RelayTransport {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayTransport::Udp => "udp",
            RelayTransport::Tcp => "tcp",
            RelayTransport::Auto => "auto",
        }
    }
}

/// `cdn.mode`: how the balancer picks the edge for a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum BalanceMode {
    /// "roundrobin" (WCS `ROUNDROBIN`): each answering node in turn.
    #[serde(rename = "roundrobin")]
    RoundRobin,
    /// "fewest_calls" (WCS `FEWESTCALLS`, its default): the node with the fewest calls.
    #[default]
    #[serde(rename = "fewest_calls")]
    FewestCalls,
    /// "random" (WCS `RANDOM`): any answering node.
    #[serde(rename = "random")]
    Random,
    /// "less_loaded" (WCS `LESS_LOADED_NODE`): the node with the lowest system CPU load.
    #[serde(rename = "less_loaded")]
    LessLoaded,
}

impl BalanceMode {
    /// Parses a WCS `loadbalancing.xml` mode, case-insensitively: `ROUNDROBIN`, `FEWESTCALLS`,
    /// `RANDOM`, `LESS_LOADED_NODE`.
    pub fn from_wcs(value: &str) -> Option<BalanceMode> {
        match value.trim().to_ascii_uppercase().as_str() {
            "ROUNDROBIN" => Some(BalanceMode::RoundRobin),
            "FEWESTCALLS" => Some(BalanceMode::FewestCalls),
            "RANDOM" => Some(BalanceMode::Random),
            "LESS_LOADED_NODE" => Some(BalanceMode::LessLoaded),
            _ => None,
        }
    }

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceMode::RoundRobin => "roundrobin",
            BalanceMode::FewestCalls => "fewest_calls",
            BalanceMode::Random => "random",
            BalanceMode::LessLoaded => "less_loaded",
        }
    }
}

/// `[[cdn.nodes]]`: an edge of this origin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CdnNode {
    /// A number naming the node in logs and stats; unique in the list.
    pub id: u32,
    /// Name or address the origin relays to and players are sent to (WCS `<ip>`).
    pub host: String,
    /// Its plain WebSocket (and HTTP) port; rtcdn's `http.listen` port on that node.
    #[serde(default)]
    pub ws: Option<u16>,
    /// Its secure WebSocket (and HTTPS) port; rtcdn's `http.tls_listen` port on that node.
    #[serde(default)]
    pub wss: Option<u16>,
    /// Its RTMP port (WCS `<rtmp>`), where `stream_distribution = "rtmp"` pushes; else
    /// `cdn.rtmp_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp: Option<u16>,
}

impl CdnNode {
    /// What the Flashphoner Web SDK expects from its `lbUrl`:
    /// `{"server":"edge1","ws":8080,"wss":8443}` (a missing port is left out).
    pub fn lb_answer(&self) -> serde_json::Value {
        let mut answer = serde_json::json!({ "server": self.host });
        if let Some(ws) = self.ws {
            answer["ws"] = ws.into();
        }
        if let Some(wss) = self.wss {
            answer["wss"] = wss.into();
        }
        answer
    }

    /// Where the node answers `/?action=stat`: its plain HTTP port when it has one, else HTTPS.
    pub fn stat_url(&self) -> String {
        let host = super::addresses::url_host(&self.host);
        match (self.ws, self.wss) {
            (Some(port), _) => format!("http://{host}:{port}/?action=stat"),
            (None, Some(port)) => format!("https://{host}:{port}/?action=stat"),
            (None, None) => format!("http://{host}/?action=stat"),
        }
    }
}

/// `[cdn]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdnConfig {
    /// "origin" (default) or "edge".
    pub role: CdnRole,
    /// WCS `load_balancing_enabled`: an origin relays to `nodes` and balances players over them.
    pub load_balancing_enabled: bool,
    /// How streams reach the edges: "webrtc" (default) or "rtmp".
    pub stream_distribution: StreamDistribution,
    /// The edges' RTMP port for `stream_distribution = "rtmp"`, where a node names none.
    pub rtmp_port: u16,
    /// How a player's edge is chosen.
    pub mode: BalanceMode,
    /// Break ties between equally loaded nodes at random instead of taking the first.
    pub randomize: bool,
    /// The edges.
    pub nodes: Vec<CdnNode>,
    /// Seconds between two polls of each node's `/?action=stat`.
    pub stats_poll_secs: u64,
    /// Extra PEM CA certificates trusted when relaying to `wss://` nodes, besides the system's
    /// (for edges with a private CA or a self-signed certificate).
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Shared by the nodes of one CDN: an origin's relays prove it (with a short-lived token,
    /// never the secret itself) and edges take publishes only from relays that do.
    pub secret: Option<Secret>,
    /// Let an edge take publishes from anyone allowed by `auth.publish`, not only from relays.
    pub edge_accepts_publish: bool,
    /// How relays reach the edges: "udp", "tcp" or "auto" (default).
    pub relay_transport: RelayTransport,
}

impl Default for CdnConfig {
    fn default() -> Self {
        CdnConfig {
            role: CdnRole::Origin,
            load_balancing_enabled: false,
            stream_distribution: StreamDistribution::WebRtc,
            rtmp_port: 1935,
            mode: BalanceMode::FewestCalls,
            randomize: false,
            nodes: Vec::new(),
            stats_poll_secs: 2,
            tls_ca_file: None,
            secret: None,
            edge_accepts_publish: false,
            relay_transport: RelayTransport::Auto,
        }
    }
}

impl CdnConfig {
    /// Whether this node relays its streams to `nodes` and balances players over them.
    pub fn relays(&self) -> bool {
        self.role == CdnRole::Origin && self.load_balancing_enabled && !self.nodes.is_empty()
    }

    /// Checks what serde cannot. `own_listen` is this node's `http.listen`, to refuse an origin
    /// that would relay to itself.
    pub fn validate(&self, own_listen: SocketAddr) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        if self.stats_poll_secs == 0 {
            return invalid("cdn.stats_poll_secs", "must be at least 1".into());
        }
        if self.rtmp_port == 0 {
            return invalid("cdn.rtmp_port", "port 0".into());
        }
        if let Some(secret) = &self.secret {
            if secret.expose().len() < MIN_SECRET_LEN {
                return invalid(
                    "cdn.secret",
                    format!("at least {MIN_SECRET_LEN} characters (it signs relay tokens)"),
                );
            }
        }
        if self.secret.as_ref().map(Secret::expose) == Some(EXAMPLE_SECRET)
            && !own_listen.ip().is_loopback()
        {
            return invalid(
                "cdn.secret",
                "this is the shipped example's secret and the node listens beyond loopback: set your own (e.g. `openssl rand -hex 32`) on every node".into(),
            );
        }
        if self.role == CdnRole::Edge && !self.nodes.is_empty() {
            return invalid(
                "cdn.nodes",
                "an edge relays to no node; cdn.nodes is only for role = \"origin\"".into(),
            );
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.host.trim().is_empty()
                || node.host.chars().any(|c| c.is_whitespace() || c == '/')
            {
                return invalid(
                    "cdn.nodes.host",
                    format!(
                        "node id {}: {:?} is not a host name or address",
                        node.id, node.host
                    ),
                );
            }
            if node.ws.is_none() && node.wss.is_none() {
                return invalid(
                    "cdn.nodes.ws",
                    format!("node id {} ({}) needs a ws or wss port", node.id, node.host),
                );
            }
            if node.ws == Some(0) {
                return invalid("cdn.nodes.ws", format!("node id {}: port 0", node.id));
            }
            if node.wss == Some(0) {
                return invalid("cdn.nodes.wss", format!("node id {}: port 0", node.id));
            }
            if node.rtmp == Some(0) {
                return invalid("cdn.nodes.rtmp", format!("node id {}: port 0", node.id));
            }
            if self.nodes[..i].iter().any(|other| other.id == node.id) {
                return invalid("cdn.nodes.id", format!("node id {} appears twice", node.id));
            }
            if self.relays()
                && node.ws == Some(own_listen.port())
                && is_own_address(&node.host, own_listen.ip())
            {
                return invalid(
                    "cdn.nodes",
                    format!("node id {} ({}:{}) is this node's own http.listen; an origin cannot relay to itself", node.id, node.host, own_listen.port()),
                );
            }
        }
        if self.role == CdnRole::Edge && !self.edge_accepts_publish && self.secret.is_none() {
            return invalid(
                "cdn.secret",
                "an edge takes publishes only from relays that prove cdn.secret: set it (the same on the origin), or set cdn.edge_accepts_publish = true".into(),
            );
        }
        Ok(())
    }
}

/// Whether `host` names the address this node listens on (a loopback name counts when listening
/// on loopback or on every interface).
fn is_own_address(host: &str, listen: IpAddr) -> bool {
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) if host.eq_ignore_ascii_case("localhost") => IpAddr::from([127, 0, 0, 1]),
        Err(_) => return false,
    };
    ip == listen || (ip.is_loopback() && (listen.is_loopback() || listen.is_unspecified()))
}

/// The `cdn.secret` of the shipped `config/origin.toml` and `config/edge.toml`: good for trying
/// the CDN on one host, refused on a node that listens beyond loopback.
pub const EXAMPLE_SECRET: &str = "rtcdn-example-secret-change-me-0123456789";

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[cdn]` section's keys, checked as a node whose `http.listen` is `listen` checks them.
    fn parse_on(section: &str, listen: &str) -> Result<CdnConfig, String> {
        let cdn: CdnConfig = toml::from_str(section).map_err(|e| e.to_string())?;
        cdn.validate(listen.parse().unwrap())
            .map_err(|e| e.to_string())?;
        Ok(cdn)
    }

    fn parse(section: &str) -> Result<CdnConfig, String> {
        parse_on(section, "127.0.0.1:8080")
    }

    #[test]
    fn default_is_a_standalone_origin() {
        let cdn = parse("").unwrap();
        assert_eq!(cdn, CdnConfig::default());
        assert_eq!(cdn.role, CdnRole::Origin);
        assert!(!cdn.relays());
        // Load balancing on but no nodes: still standalone.
        let cdn = parse("load_balancing_enabled = true\n").unwrap();
        assert!(!cdn.relays());
    }

    #[test]
    fn toml_modes_and_nodes() {
        for (text, mode) in [
            ("roundrobin", BalanceMode::RoundRobin),
            ("fewest_calls", BalanceMode::FewestCalls),
            ("random", BalanceMode::Random),
            ("less_loaded", BalanceMode::LessLoaded),
        ] {
            let cdn = parse(&format!("mode = \"{text}\"\n")).unwrap();
            assert_eq!(cdn.mode, mode);
            assert_eq!(mode.as_str(), text);
        }
        let err = parse("mode = \"FEWESTCALLS\"\n").unwrap_err();
        assert!(err.contains("mode"), "{err}");
        let cdn = parse(
            "load_balancing_enabled = true\n[[nodes]]\nid = 1\nhost = \"a\"\nwss = 443\n[[nodes]]\nid = 2\nhost = \"b\"\nws = 8080\n",
        )
        .unwrap();
        assert!(cdn.relays());
        assert_eq!(cdn.nodes[0].wss, Some(443));
        assert_eq!(cdn.nodes[1].ws, Some(8080));
    }

    #[test]
    fn relay_transport_is_auto_unless_set() {
        assert_eq!(parse("").unwrap().relay_transport, RelayTransport::Auto);
        for mode in [
            RelayTransport::Udp,
            RelayTransport::Tcp,
            RelayTransport::Auto,
        ] {
            let cdn = parse(&format!("relay_transport = \"{}\"\n", mode.as_str())).unwrap();
            assert_eq!(cdn.relay_transport, mode);
        }
        for bad in ["\"quic\"", "\"TCP\"", "true"] {
            let err = parse(&format!("relay_transport = {bad}\n")).unwrap_err();
            assert!(err.contains("relay_transport"), "{bad} → {err}");
        }
    }

    #[test]
    fn rtmp_distribution_pushes_to_each_nodes_rtmp_port_or_the_default() {
        let cdn = parse("stream_distribution = \"RTMP\"\n[[nodes]]\nid = 1\nhost = \"a\"\nws = 1\nrtmp = 1936\n").unwrap();
        assert_eq!(cdn.stream_distribution, StreamDistribution::Rtmp);
        assert_eq!((cdn.rtmp_port, cdn.nodes[0].rtmp), (1935, Some(1936)));
        let cdn = parse("stream_distribution = \"webrtc\"\nrtmp_port = 1940\n").unwrap();
        assert_eq!(
            (cdn.stream_distribution, cdn.rtmp_port),
            (StreamDistribution::WebRtc, 1940)
        );
        let err = parse("stream_distribution = \"hls\"\n").unwrap_err();
        assert!(
            err.contains("cdn.stream_distribution") && err.contains("\"rtmp\""),
            "{err}"
        );
        assert!(parse("rtmp_port = 0\n")
            .unwrap_err()
            .contains("cdn.rtmp_port"));
        let err = parse("[[nodes]]\nid = 1\nhost = \"a\"\nws = 1\nrtmp = 0\n").unwrap_err();
        assert!(err.contains("cdn.nodes.rtmp"), "{err}");
    }

    #[test]
    fn bad_nodes_are_named() {
        let cases = [
            ("[[nodes]]\nid = 1\nhost = \"a\"\n", "cdn.nodes.ws"),
            ("[[nodes]]\nid = 1\nhost = \"\"\nws = 1\n", "cdn.nodes.host"),
            ("[[nodes]]\nid = 1\nhost = \"a\"\nws = 0\n", "cdn.nodes.ws"),
            ("[[nodes]]\nid = 1\nhost = \"a\"\nws = 1\n[[nodes]]\nid = 1\nhost = \"b\"\nws = 1\n", "cdn.nodes.id"),
            ("role = \"edge\"\n[[nodes]]\nid = 1\nhost = \"a\"\nws = 1\n", "cdn.nodes"),
            ("stats_poll_secs = 0\n", "cdn.stats_poll_secs"),
            ("load_balancing_enabled = true\n[[nodes]]\nid = 1\nhost = \"localhost\"\nws = 8080\n", "relay to itself"),
            ("[[nodes]]\nid = 1\nhost = \"a\"\nport = 1\n", "port"),
            ("role = \"relay\"\n", "role"),
            ("role = \"edge\"\n", "cdn.secret"),
            ("secret = \"short\"\n", "cdn.secret"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text:?} → {err}");
        }
        let err = parse_on(
            "secret = \"rtcdn-example-secret-change-me-0123456789\"\n",
            "0.0.0.0:8080",
        )
        .unwrap_err();
        assert!(err.contains("shipped example"), "{err}");
    }

    #[test]
    fn edges_need_a_secret_unless_they_take_any_publisher() {
        assert!(parse("role = \"edge\"\nedge_accepts_publish = true\n").is_ok());
        let cdn =
            parse("role = \"edge\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n").unwrap();
        assert!(
            !format!("{cdn:?}").contains("0123456789abcdef"),
            "Debug hides it"
        );
        // The example secret is fine on loopback, where the shipped configs listen.
        assert!(
            parse("role = \"edge\"\nsecret = \"rtcdn-example-secret-change-me-0123456789\"\n")
                .is_ok()
        );
    }

    #[test]
    fn node_answers() {
        let node = CdnNode {
            id: 1,
            host: "edge1".into(),
            ws: Some(8080),
            wss: Some(8443),
            rtmp: None,
        };
        assert_eq!(
            node.lb_answer(),
            serde_json::json!({"server": "edge1", "ws": 8080, "wss": 8443})
        );
        assert_eq!(node.stat_url(), "http://edge1:8080/?action=stat");
        let node = CdnNode {
            id: 2,
            host: "::1".into(),
            ws: None,
            wss: Some(443),
            rtmp: None,
        };
        assert_eq!(
            node.lb_answer(),
            serde_json::json!({"server": "::1", "wss": 443})
        );
        assert_eq!(node.stat_url(), "https://[::1]:443/?action=stat");
    }
}
