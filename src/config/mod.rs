//! The node configuration: the embedded default, a TOML file, and its validation. Read once at
//! start (reading the files is its only IO); every other room takes its section by value, and
//! none of this imports them back.
//!
//! Every key is documented in `config/standalone.toml`. Unknown keys are errors, so a typo never
//! silently falls back to a default.
//!
//! The modules, from the bottom up (each uses only those before it): [`error`] ([`ConfigError`]),
//! then the sections [`http`], [`rtmp`], [`cdn`] and [`cluster`] (with `[auth]`, which is `crate::auth::config`), this
//! module (the whole [`Config`] and its small sections), [`wcs`] (a Flashphoner WCS folder read
//! into a [`Config`]) and [`cli`] (the command line, which also hands `rtcdn token` to
//! `crate::auth::cli`). None of them imports signalling, the CDN or the reactor, which use them.

pub mod addresses;
pub mod cdn;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod http;
pub mod ice;
pub mod rtmp;
pub mod wcs;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::config::{AuthConfig, REDACTED};
use cdn::CdnConfig;
pub use error::ConfigError;
pub use http::{HttpConfig, IpNet};

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP signalling (WHIP, WHEP, the web page; later the WebSocket protocol).
    pub http: HttpConfig,
    /// Media sockets and threads.
    pub media: MediaConfig,
    /// DTLS certificate.
    pub dtls: DtlsConfig,
    /// Session timeouts.
    pub session: SessionConfig,
    /// Logging.
    pub log: LogConfig,
    /// The static CDN: origin or edge, the edges an origin relays to, player balancing.
    pub cdn: CdnConfig,
    /// Who may publish, play and administer.
    pub auth: AuthConfig,
    /// What players' bandwidth estimates may do to publishers.
    pub bwe: BweSettings,
    /// The RTMP ingest listener.
    pub rtmp: rtmp::RtmpConfig,
    /// The dynamic CDN on Redis; absent: no Redis at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<cluster::ClusterConfig>,
    /// The STUN/TURN servers handed to WHIP/WHEP clients.
    pub ice: ice::IceConfig,
}

/// `[bwe]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BweSettings {
    /// WCS's behaviour: ask each publisher (REMB) to send no more than its weakest player's
    /// estimated bandwidth. Off by default: one viewer on a thin link would lower the picture
    /// for everyone.
    pub limit_publisher: bool,
    /// The lowest bitrate a publisher is asked for (WCS's `webrtc_cc2_min_remb_bitrate_bps`).
    pub min_publisher_bps: u64,
}

impl Default for BweSettings {
    fn default() -> Self {
        BweSettings {
            limit_publisher: false,
            min_publisher_bps: 100_000,
        }
    }
}

/// `[media]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address the media UDP sockets bind to.
    pub bind: IpAddr,
    /// Addresses advertised as ICE host candidates. Empty: the bind address, or every interface's
    /// address when binding to the unspecified address (`::` takes IPv4 too, unless the host
    /// sets `net.ipv6.bindv6only`).
    pub announce: Vec<IpAddr>,
    /// 1:1 NAT: `"PUBLIC"` or `"PUBLIC/LOCAL"`; the public address is advertised before the
    /// local one it maps ([`addresses`]).
    pub nat_1to1: Vec<addresses::Nat1to1>,
    /// Whether a mapped local address is still advertised (after its public one), for clients
    /// on the node's own network.
    pub nat_1to1_keep_local: bool,
    /// UDP port of media thread 0; thread `i` uses `port_base + i`. 0 gives every thread an
    /// ephemeral port (tests run many nodes at once).
    pub port_base: u16,
    /// Number of media threads; 0 means one per CPU core.
    pub threads: usize,
    /// I/O backend: "auto", "io_uring" or "mmsg".
    pub backend: String,
    /// UDP GSO: a frame's packets to one player leave in one send with `UDP_SEGMENT` (the kernel
    /// segments them, at about half the cost of separate sends). Sockets whose kernel refuses it
    /// fall back to one send per datagram by themselves; `false` never tries.
    pub gso: bool,
    /// Passive ICE-TCP (RFC 6544): each media thread also listens on TCP and answers list TCP
    /// host candidates beside the UDP ones, for viewers whose networks block UDP.
    pub tcp: bool,
    /// TCP port of media thread 0 (thread `i`: `tcp_port_base + i`); unset: the UDP ports.
    pub tcp_port_base: Option<u16>,
    /// ICE-TCP connections one media thread keeps open at a time; more are closed at accept.
    pub tcp_max_connections: usize,
    /// ICE-TCP connections one media thread keeps open from one IP address (0: no limit), so
    /// one host cannot take the whole table; more are closed at accept. Not lower by default:
    /// the viewers who need ICE-TCP sit behind firewalls, and often behind one NAT address.
    pub tcp_max_connections_per_ip: usize,
}

impl MediaConfig {
    /// The TCP port of media thread `i` (0: ephemeral).
    pub fn tcp_port(&self, i: usize) -> u16 {
        match self.tcp_port_base.unwrap_or(self.port_base) {
            0 => 0,
            base => base + i as u16,
        }
    }
}

/// `[dtls]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DtlsConfig {
    /// PEM certificate; when unset a self-signed ECDSA P-256 certificate is generated at start.
    pub certificate: Option<PathBuf>,
    /// PEM private key for `certificate`.
    pub private_key: Option<PathBuf>,
}

/// `[session]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Seconds without ICE consent (RFC 7675) before a session is dropped.
    pub consent_timeout_secs: u64,
    /// Seconds a new session has to complete ICE and DTLS before it is dropped and its stream
    /// name freed.
    pub connect_timeout_secs: u64,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: "info", "debug", "rtcdn=debug,warn", ...
    pub level: String,
    /// `"text"` (one line a record, coloured on a terminal) or `"json"` (one JSON object a
    /// line, for log shippers).
    pub format: LogFormat,
}

/// How log records are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            announce: Vec::new(),
            nat_1to1: Vec::new(),
            nat_1to1_keep_local: true,
            port_base: 31000,
            threads: 0,
            backend: "auto".into(),
            gso: true,
            tcp: true,
            tcp_port_base: None,
            tcp_max_connections: 256,
            tcp_max_connections_per_ip: 64,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            consent_timeout_secs: 30,
            connect_timeout_secs: 10,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Parses a TOML document; `path` only names the source in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Checks values serde cannot: ranges and cross-key rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.validate()?;
        if !["auto", "io_uring", "mmsg"].contains(&self.media.backend.as_str()) {
            return Err(ConfigError::Invalid {
                key: "media.backend",
                message: format!(
                    "{:?} is not one of auto, io_uring, mmsg",
                    self.media.backend
                ),
            });
        }
        let threads = self.media_threads();
        if usize::from(self.media.port_base) + threads - 1 > usize::from(u16::MAX) {
            return Err(ConfigError::Invalid {
                key: "media.port_base",
                message: format!(
                    "{} + {threads} threads runs past port 65535",
                    self.media.port_base
                ),
            });
        }
        if let Some(base) = self.media.tcp_port_base {
            if usize::from(base) + threads - 1 > usize::from(u16::MAX) {
                return Err(ConfigError::Invalid {
                    key: "media.tcp_port_base",
                    message: format!("{base} + {threads} threads runs past port 65535"),
                });
            }
        }
        if self.media.tcp && !(1..=32768).contains(&self.media.tcp_max_connections) {
            return Err(ConfigError::Invalid {
                key: "media.tcp_max_connections",
                message: "between 1 and 32768".into(),
            });
        }
        if self.media.threads > 1024 {
            return Err(ConfigError::Invalid {
                key: "media.threads",
                message: "at most 1024".into(),
            });
        }
        if self.dtls.certificate.is_some() != self.dtls.private_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "dtls.certificate",
                message: "dtls.certificate and dtls.private_key must be set together".into(),
            });
        }
        if self.http.tls_certificate.is_some() != self.http.tls_private_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "http.tls_certificate",
                message: "http.tls_certificate and http.tls_private_key must be set together"
                    .into(),
            });
        }
        if self.session.consent_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "session.consent_timeout_secs",
                message: "must be at least 1".into(),
            });
        }
        if !(1..=300).contains(&self.session.connect_timeout_secs) {
            return Err(ConfigError::Invalid {
                key: "session.connect_timeout_secs",
                message: "must be 1 to 300".into(),
            });
        }
        if let Some(ip) = self.media.announce.iter().find(|ip| ip.is_unspecified()) {
            return Err(ConfigError::Invalid {
                key: "media.announce",
                message: format!("{ip} cannot be reached by a client"),
            });
        }
        addresses::validate(&self.media)?;
        if !(30_000..=50_000_000).contains(&self.bwe.min_publisher_bps) {
            return Err(ConfigError::Invalid {
                key: "bwe.min_publisher_bps",
                message: "must be 30000 to 50000000 (bit/s)".into(),
            });
        }
        self.cdn.validate(self.http.listen)?;
        self.auth.validate()?;
        self.rtmp.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            if self.cdn.role == cdn::CdnRole::Edge || self.cdn.relays() {
                return Err(ConfigError::Invalid {
                    key: "cluster",
                    message: "a node is in the static CDN ([cdn] edge, or an origin with nodes) or in a dynamic one ([cluster]), not both".into(),
                });
            }
        }
        self.ice.validate()?;
        Ok(())
    }

    /// The number of media threads to run.
    pub fn media_threads(&self) -> usize {
        if self.media.threads > 0 {
            self.media.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The configuration as a TOML file with every key (`rtcdn --print-config`). Secrets
    /// (`auth.jwt_secret`, `auth.admin_token`, `cdn.secret`) and what may carry one in a hook URL
    /// (user info, query) read `"<redacted>"`; everything else reads back as the same config.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        // Secrets hide themselves (their Serialize); a URL is a plain string.
        if let Some(url) = &mut shown.auth.rest_hook_url {
            *url = redact_url(url);
        }
        for app in &mut shown.auth.apps {
            app.url = redact_url(&app.url);
        }
        if let Some(cluster) = &mut shown.cluster {
            cluster.redis_url = redact_url(&cluster.redis_url);
        }
        toml::to_string(&shown).expect("every config value has a TOML form")
    }
}

/// `url` with its user info (`user:password@`) and query, which may hold credentials, replaced
/// by `<redacted>`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((path, _)) => format!("{path}?{REDACTED}"),
        None => path.to_owned(),
    };
    format!("{scheme}://{host}{path}")
}

/// The shipped `config/origin.toml`.
pub const ORIGIN_TOML: &str = include_str!("../../config/origin.toml");
/// The shipped `config/edge.toml`.
pub const EDGE_TOML: &str = include_str!("../../config/edge.toml");

/// The origin and edge configs `rtcdn demo` runs in one process: the shipped
/// `config/origin.toml` and `config/edge.toml`.
pub fn demo_configs() -> Result<(Config, Config), ConfigError> {
    let origin = Config::from_toml(ORIGIN_TOML, Path::new("config/origin.toml"))?;
    let edge = Config::from_toml(EDGE_TOML, Path::new("config/edge.toml"))?;
    Ok((origin, edge))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::cdn::{BalanceMode, CdnNode, CdnRole, EXAMPLE_SECRET};

    #[test]
    fn toml_unknown_key_is_named() {
        let err = Config::from_toml("[media]\nport_bse = 5\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port_bse") && err.contains("x.toml"), "{err}");
    }

    #[test]
    fn toml_wrong_type_and_range() {
        let err = Config::from_toml("[media]\nport_base = \"x\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port_base"), "{err}");
        let err = Config::from_toml(
            "[media]\nport_base = 65535\nthreads = 4\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("media.port_base"), "{err}");
        let err = Config::from_toml("[dtls]\ncertificate = \"c.pem\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dtls.certificate"), "{err}");
    }

    #[test]
    fn auth_and_session_keys_are_checked() {
        let parse = |text: &str| Config::from_toml(text, Path::new("a.toml"));
        for (text, key) in [
            ("[auth]\npublish = \"token\"\n", "auth.jwt_secret"),
            ("[auth]\njwt_secret = \"short\"\n", "auth.jwt_secret"),
            ("[auth]\nadmin_token = \"short\"\n", "auth.admin_token"),
            ("[auth]\nplay = \"maybe\"\n", "play"),
            ("[auth]\nplay = \"hook\"\n", "auth.rest_hook_url"),
            ("[auth]\nrest_hook_url = \"ftp://x/\"\n", "auth.rest_hook_url"),
            ("[auth]\nrest_hook_timeout_secs = 0\n", "auth.rest_hook_timeout_secs"),
            ("[[auth.apps]]\nkey = \"a\"\nurl = \"http://b/\"\n[[auth.apps]]\nkey = \"a\"\nurl = \"http://c/\"\n", "auth.apps.key"),
            ("[[auth.apps]]\nkey = \"a\"\nurl = \"no url\"\n", "auth.apps.url"),
            ("[auth]\nleeway_secs = 3600\n", "auth.leeway_secs"),
            (
                "[session]\nconnect_timeout_secs = 0\n",
                "session.connect_timeout_secs",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} → {err}");
        }
        let config = parse(
            "[auth]\npublish = \"token\"\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        assert_eq!(config.auth.publish, crate::auth::config::Policy::Token);
        assert_eq!(config.auth.play, crate::auth::config::Policy::Open);
        assert_eq!(config.session.connect_timeout_secs, 10);
    }

    #[test]
    fn http_limits_are_checked_and_named() {
        for (toml, key) in [
            ("max_connections = 0", "http.max_connections"),
            ("max_connections_per_ip = 0", "http.max_connections_per_ip"),
            (
                "header_read_timeout_secs = 0",
                "http.header_read_timeout_secs",
            ),
            ("body_read_timeout_secs = 0", "http.body_read_timeout_secs"),
            (
                "websocket_connect_timeout_secs = 0",
                "http.websocket_connect_timeout_secs",
            ),
            (
                "sessions_per_ip_per_sec = 0.0",
                "http.sessions_per_ip_per_sec",
            ),
            (
                "sessions_per_ip_per_sec = nan",
                "http.sessions_per_ip_per_sec",
            ),
            ("session_burst_per_ip = 0", "http.session_burst_per_ip"),
            ("send_timeout_secs = 0", "http.send_timeout_secs"),
            ("cors_origins = []", "http.cors_origins"),
            ("cors_origins = [\"example.com\"]", "http.cors_origins"),
            ("per_ip_exempt = [\"10.0.0.0/40\"]", "per_ip_exempt"),
        ] {
            let err = Config::from_toml(&format!("[http]\n{toml}\n"), Path::new("h.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let config = Config::from_toml(
            "[http]\ncors_origins = [\"https://a.example\"]\nper_ip_exempt = []\n",
            Path::new("h.toml"),
        )
        .unwrap();
        assert_eq!(config.http.cors_origins, ["https://a.example"]);
        assert!(config.http.per_ip_exempt.is_empty());
    }

    #[test]
    fn shipped_standalone_config_parses_to_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/standalone.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_standalone_configs_example_edge_parses_once_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/standalone.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // The table's lines, up to the blank line after it, without their "# ".
        let table = text
            .find("# [[cdn.nodes]]")
            .expect("the example edge table");
        let end = table + text[table..].find("\n\n").expect("a blank line after it");
        let uncommented: String = text[table..end]
            .lines()
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
            .collect();
        let text = format!("{}{uncommented}{}", &text[..table], &text[end..]);
        let config = Config::from_toml(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.cdn.nodes,
            vec![CdnNode {
                id: 1,
                host: "edge1.example.com".into(),
                ws: Some(8080),
                wss: Some(8443),
                rtmp: Some(1935),
            }]
        );
    }

    #[test]
    fn shipped_origin_and_edge_parse() {
        let (origin, edge) = demo_configs().unwrap();
        assert_eq!(
            origin.http.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(origin.media.port_base, 31000);
        assert_eq!(origin.cdn.role, CdnRole::Origin);
        assert!(origin.cdn.relays());
        assert_eq!(origin.cdn.mode, BalanceMode::RoundRobin);
        assert_eq!(
            origin.cdn.nodes,
            vec![CdnNode {
                id: 1,
                host: "127.0.0.1".into(),
                ws: Some(8180),
                wss: None,
                rtmp: None,
            }]
        );
        assert_eq!(
            edge.http.listen,
            "127.0.0.1:8180".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            edge.http.tls_listen,
            "127.0.0.1:8543".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(edge.media.port_base, 32000);
        assert_eq!(edge.cdn.role, CdnRole::Edge);
        assert!(!edge.cdn.relays());
        // The origin's node is the edge.
        assert_eq!(origin.cdn.nodes[0].ws, Some(edge.http.listen.port()));
        // The files on disk are the embedded ones.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        assert_eq!(Config::load(&dir.join("origin.toml")).unwrap(), origin);
        assert_eq!(Config::load(&dir.join("edge.toml")).unwrap(), edge);
        assert_eq!(origin.cdn.secret.unwrap().expose(), EXAMPLE_SECRET);
    }

    #[test]
    fn cdn_errors_name_the_file_and_line() {
        let parse = |text: &str| {
            Config::from_toml(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string()
        };
        let err = parse("[cdn]\nmode = \"FEWESTCALLS\"\n");
        assert!(err.contains("mode") && err.contains("t.toml"), "{err}");
        let err = parse("[cdn]\nstream_distribution = \"srt\"\n");
        assert!(
            err.contains("cdn.stream_distribution")
                && err.contains("t.toml")
                && err.contains("line 2"),
            "{err}"
        );
        // The section is checked against this node's own http.listen.
        let err = parse("[http]\nlisten = \"0.0.0.0:8080\"\n[cdn]\nsecret = \"rtcdn-example-secret-change-me-0123456789\"\n");
        assert!(err.contains("shipped example"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_as_the_same_config_with_secrets_redacted() {
        use crate::auth::config::Secret;
        let (origin, edge) = demo_configs().unwrap();
        let everything = Config::from_toml(
            r#"
[http]
tls_certificate = "/etc/rtcdn/cert.pem"
tls_private_key = "/etc/rtcdn/key.pem"
per_ip_exempt = ["10.0.0.0/8", "2001:db8::1"]
[media]
bind = "0.0.0.0"
announce = ["192.0.2.1", "2001:db8::2"]
[dtls]
certificate = "d.pem"
private_key = "d.key"
[auth]
publish = "token"
play = "hook"
jwt_secret = "jwt-secret-0123456789abcdef0123456789"
admin_token = "admin-token-0123456789"
rest_hook_url = "https://hook-user:hook-password@hooks.example/app?token=hook-token"
[[auth.apps]]
key = "a"
url = "http://apps.example/a"
[cdn]
role = "edge"
secret = "cdn-secret-0123456789abcdef0123456789"
tls_ca_file = "ca.pem"
"#,
            Path::new("everything.toml"),
        )
        .unwrap();
        for config in [Config::default(), origin, edge, everything] {
            let printed = config.to_toml();
            let back: Config =
                toml::from_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
            let mut expected = config.clone();
            let redact = |secret: &mut Option<Secret>| {
                if secret.is_some() {
                    *secret = Some(Secret::new(REDACTED));
                }
            };
            redact(&mut expected.auth.jwt_secret);
            redact(&mut expected.auth.admin_token);
            redact(&mut expected.cdn.secret);
            if let Some(url) = &mut expected.auth.rest_hook_url {
                *url = redact_url(url);
            }
            assert_eq!(back, expected, "{printed}");
            for secret in [
                "secret-0123",
                "admin-token",
                "hook-password",
                "hook-token",
                EXAMPLE_SECRET,
            ] {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
        }
    }

    #[test]
    fn hook_url_credentials_are_redacted() {
        for (url, shown) in [
            ("http://hooks.example/app", "http://hooks.example/app"),
            (
                "https://u:p@hooks.example:8443/app",
                "https://<redacted>@hooks.example:8443/app",
            ),
            (
                "http://hooks.example/app?token=t#f",
                "http://hooks.example/app?<redacted>",
            ),
            ("http://u@h?x=1", "http://<redacted>@h?<redacted>"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
