//! `[cluster]`: the dynamic CDN, where nodes find each other and who publishes what in Redis.
//!
//! No `[cluster]` section means no Redis at all: a single node and the static CDN (`[cdn]`) work
//! as they always did. With it, the node keeps a lease in Redis (its identity, roles, group,
//! addresses, load and state) and registers the streams published to it, so that a name is
//! published on one node of the cluster at a time.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The longest `cluster.node_id` prefix (the node's id adds a dash and 8 hex digits).
pub const MAX_NODE_ID_PREFIX: usize = 48;

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    /// Takes publishers; its streams are pulled from it.
    Origin,
    /// Pulls from origins and is pulled from by the edges of its group.
    Transit,
    /// Takes players; pulls what they ask for.
    Edge,
}

impl ClusterRole {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterRole::Origin => "origin",
            ClusterRole::Transit => "transit",
            ClusterRole::Edge => "edge",
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the cluster's Redis is: `redis://[user:password@]host[:port][/db]`.
    pub redis_url: String,
    /// A readable prefix of this node's id; the node adds a random suffix at every start, so a
    /// restarted node never takes over the lease of its previous life. None: the suffix alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// What this node does; at least one.
    #[serde(default = "default_roles")]
    pub roles: Vec<ClusterRole>,
    /// Edges pull through the transit nodes of their own group.
    #[serde(default = "default_group")]
    pub group: String,
    /// Seconds an edge keeps pulling a stream nobody watches.
    #[serde(default = "default_idle_pull_secs")]
    pub idle_pull_secs: u64,
    /// Seconds a draining node (SIGTERM, `POST /rest-api/cdn/drain`) waits for its sessions
    /// to end before it exits.
    #[serde(default = "default_drain_secs")]
    pub drain_secs: u64,
    /// The host name or address other nodes and players reach this node by. None: the
    /// `http.listen` address when it is a specific one, else the first `media.announce`
    /// address (or the media bind address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_host: Option<String>,
}

fn default_roles() -> Vec<ClusterRole> {
    vec![ClusterRole::Origin, ClusterRole::Edge]
}

fn default_group() -> String {
    "default".into()
}

fn default_idle_pull_secs() -> u64 {
    60
}

fn default_drain_secs() -> u64 {
    60
}

impl ClusterConfig {
    /// A cluster config with every default, for `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            redis_url: redis_url.into(),
            node_id: None,
            roles: default_roles(),
            group: default_group(),
            idle_pull_secs: default_idle_pull_secs(),
            drain_secs: default_drain_secs(),
            public_host: None,
        }
    }

    /// Whether the node has `role`.
    pub fn has_role(&self, role: ClusterRole) -> bool {
        self.roles.contains(&role)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        let url = self.redis_url.trim();
        if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
            let why = if url.starts_with("rediss://") {
                "rediss:// (Redis over TLS) is not supported yet: reach Redis over a private network or a local TLS tunnel".to_owned()
            } else {
                format!("{:?} is not a redis:// URL", crate::config::redact_url(url))
            };
            return invalid("cluster.redis_url", why);
        }
        if let Err(e) = redis::Client::open(url) {
            return invalid(
                "cluster.redis_url",
                format!("{}: {e}", crate::config::redact_url(url)),
            );
        }
        if let Some(prefix) = &self.node_id {
            if prefix.is_empty()
                || prefix.len() > MAX_NODE_ID_PREFIX
                || !prefix.chars().all(id_char)
            {
                return invalid(
                    "cluster.node_id",
                    format!("{prefix:?}: 1 to {MAX_NODE_ID_PREFIX} of A-Z a-z 0-9 . _ -"),
                );
            }
        }
        if self.roles.is_empty() {
            return invalid(
                "cluster.roles",
                "at least one of \"origin\", \"transit\", \"edge\"".into(),
            );
        }
        for (i, role) in self.roles.iter().enumerate() {
            if self.roles[..i].contains(role) {
                return invalid(
                    "cluster.roles",
                    format!("{:?} appears twice", role.as_str()),
                );
            }
        }
        if self.group.is_empty() || self.group.len() > 64 || !self.group.chars().all(id_char) {
            return invalid(
                "cluster.group",
                format!("{:?}: 1 to 64 of A-Z a-z 0-9 . _ -", self.group),
            );
        }
        if !(1..=86_400).contains(&self.idle_pull_secs) {
            return invalid("cluster.idle_pull_secs", "must be 1 to 86400".into());
        }
        if !(1..=86_400).contains(&self.drain_secs) {
            return invalid("cluster.drain_secs", "must be 1 to 86400".into());
        }
        if let Some(host) = &self.public_host {
            if host.trim().is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
                return invalid(
                    "cluster.public_host",
                    format!("{host:?} is not a host name or address"),
                );
            }
        }
        Ok(())
    }
}

/// The characters of node ids and group names: they appear in Redis keys and URLs.
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(section: &str) -> Result<ClusterConfig, String> {
        let cluster: ClusterConfig = toml::from_str(section).map_err(|e| e.to_string())?;
        cluster.validate().map_err(|e| e.to_string())?;
        Ok(cluster)
    }

    #[test]
    fn defaults_need_only_the_url() {
        let cluster = parse("redis_url = \"redis://127.0.0.1:6379\"\n").unwrap();
        assert_eq!(cluster, ClusterConfig::new("redis://127.0.0.1:6379"));
        assert_eq!(cluster.roles, [ClusterRole::Origin, ClusterRole::Edge]);
        assert_eq!(cluster.group, "default");
        assert_eq!((cluster.idle_pull_secs, cluster.drain_secs), (60, 60));
        let err = parse("group = \"a\"\n").unwrap_err();
        assert!(err.contains("redis_url"), "{err}");
    }

    #[test]
    fn every_key_reads_back() {
        let cluster = parse(
            "redis_url = \"redis://:pw@redis.internal:6380/2\"\nnode_id = \"eu-edge\"\nroles = [\"transit\", \"edge\"]\ngroup = \"eu-west\"\nidle_pull_secs = 5\ndrain_secs = 300\npublic_host = \"edge1.example.net\"\n",
        )
        .unwrap();
        assert_eq!(cluster.node_id.as_deref(), Some("eu-edge"));
        assert!(cluster.has_role(ClusterRole::Transit) && !cluster.has_role(ClusterRole::Origin));
        let again = parse(&toml::to_string(&cluster).unwrap()).unwrap();
        assert_eq!(again, cluster);
    }

    #[test]
    fn bad_values_are_named() {
        let url = "redis_url = \"redis://127.0.0.1\"\n";
        for (text, key) in [
            ("redis_url = \"http://x\"\n", "cluster.redis_url"),
            ("redis_url = \"rediss://x\"\n", "not supported yet"),
            ("redis_url = \"redis://\"\n", "cluster.redis_url"),
            ("node_id = \"a b\"\n", "cluster.node_id"),
            ("node_id = \"\"\n", "cluster.node_id"),
            ("roles = []\n", "cluster.roles"),
            ("roles = [\"edge\", \"edge\"]\n", "appears twice"),
            ("roles = [\"relay\"]\n", "roles"),
            ("group = \"a/b\"\n", "cluster.group"),
            ("idle_pull_secs = 0\n", "cluster.idle_pull_secs"),
            ("drain_secs = 0\n", "cluster.drain_secs"),
            ("public_host = \"a b\"\n", "cluster.public_host"),
            ("redis = \"x\"\n", "redis"),
        ] {
            let text = if text.starts_with("redis_url") {
                text.to_owned()
            } else {
                format!("{url}{text}")
            };
            let err = parse(&text).unwrap_err();
            assert!(err.contains(key), "{text:?} → {err}");
        }
        let long = format!(
            "{url}node_id = \"{}\"\n",
            "a".repeat(MAX_NODE_ID_PREFIX + 1)
        );
        assert!(parse(&long).unwrap_err().contains("cluster.node_id"));
    }

    #[test]
    fn a_password_in_the_url_is_not_echoed_in_errors() {
        let err = parse("redis_url = \"http://user:hunter2@x/\"\n").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_shipped_example_is_a_valid_cluster_node_and_no_section_means_no_cluster() {
        let config = crate::config::Config::from_toml(
            include_str!("../../config/cluster.toml"),
            std::path::Path::new("config/cluster.toml"),
        )
        .unwrap();
        let cluster = config.cluster.expect("the example has a [cluster]");
        assert_eq!(cluster.node_id.as_deref(), Some("node"));
        assert!(
            crate::config::Config::from_toml("", std::path::Path::new("x"))
                .unwrap()
                .cluster
                .is_none()
        );
        // The printed config hides a password in the URL.
        let config = crate::config::Config {
            cluster: Some(ClusterConfig::new("redis://:hunter2@r:6379")),
            ..Default::default()
        };
        let printed = config.to_toml();
        assert!(
            printed.contains("[cluster]") && !printed.contains("hunter2"),
            "{printed}"
        );
    }
}
