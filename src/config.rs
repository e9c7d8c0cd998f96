//! Configuration: the embedded default, a TOML file, and command-line overrides.
//!
//! Every key is documented in `config/standalone.toml`. Unknown keys are errors, so a typo never
//! silently falls back to a default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::cdn::config::CdnConfig;
use crate::signalling::limits::IpNet;

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
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
}

/// `[bwe]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
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

/// `[http]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Address of the HTTPS/WSS listener, served when a TLS certificate and key are set.
    pub tls_listen: SocketAddr,
    /// PEM certificate chain for HTTPS/WSS.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key for `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// Open connections at most, both listeners together; past it new ones get 503.
    pub max_connections: usize,
    /// Open connections at most from one address (IPv6: one /64); past it new ones get 429.
    pub max_connections_per_ip: usize,
    /// Seconds from accept, or from the end of the previous answer on a keep-alive connection,
    /// to a complete request head; past it the connection is closed.
    pub header_read_timeout_secs: u64,
    /// Seconds from a request's head to the end of its body; past it: 408 and closed.
    pub body_read_timeout_secs: u64,
    /// Seconds from a WebSocket upgrade to the client's `connection` message.
    pub websocket_connect_timeout_secs: u64,
    /// Seconds the node's writes may stay blocked by a client that does not read.
    pub send_timeout_secs: u64,
    /// Sessions (WHIP, WHEP, publishStream, playStream) one address may start per second...
    pub sessions_per_ip_per_sec: f64,
    /// ...and at once, after a pause.
    pub session_burst_per_ip: u32,
    /// Addresses free of the per-address cap and session rate (a local reverse proxy).
    pub per_ip_exempt: Vec<IpNet>,
    /// Origins whose pages may read answers (`*`: any); admin endpoints answer none.
    pub cors_origins: Vec<String>,
}

/// `[media]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address the media UDP sockets bind to.
    pub bind: IpAddr,
    /// Addresses advertised as ICE host candidates. Empty: the bind address, or every interface's
    /// address when binding to the unspecified address.
    pub announce: Vec<IpAddr>,
    /// UDP port of media thread 0; thread `i` uses `port_base + i`. 0 gives every thread an
    /// ephemeral port (tests run many nodes at once).
    pub port_base: u16,
    /// Number of media threads; 0 means one per CPU core.
    pub threads: usize,
    /// I/O backend: "auto", "io_uring" or "mmsg".
    pub backend: String,
}

/// `[dtls]`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DtlsConfig {
    /// PEM certificate; when unset a self-signed ECDSA P-256 certificate is generated at start.
    pub certificate: Option<PathBuf>,
    /// PEM private key for `certificate`.
    pub private_key: Option<PathBuf>,
}

/// `[session]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Seconds without ICE consent (RFC 7675) before a session is dropped.
    pub consent_timeout_secs: u64,
    /// Seconds a new session has to complete ICE and DTLS before it is dropped and its stream
    /// name freed.
    pub connect_timeout_secs: u64,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: "info", "debug", "rtcdn=debug,warn", ...
    pub level: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            tls_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8443)),
            tls_certificate: None,
            tls_private_key: None,
            max_connections: 10_000,
            max_connections_per_ip: 128,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            websocket_connect_timeout_secs: 10,
            send_timeout_secs: 30,
            sessions_per_ip_per_sec: 10.0,
            session_burst_per_ip: 40,
            per_ip_exempt: ["127.0.0.0/8", "::1"]
                .into_iter()
                .map(|net| IpNet::try_from(net.to_owned()).expect("a valid block"))
                .collect(),
            cors_origins: vec!["*".into()],
        }
    }
}

impl HttpConfig {
    /// Checks the listener's limits and CORS origins.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let at_least_one = |key, value: u64| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        at_least_one("http.max_connections", self.max_connections as u64)?;
        at_least_one(
            "http.max_connections_per_ip",
            self.max_connections_per_ip as u64,
        )?;
        at_least_one(
            "http.header_read_timeout_secs",
            self.header_read_timeout_secs,
        )?;
        at_least_one("http.body_read_timeout_secs", self.body_read_timeout_secs)?;
        at_least_one(
            "http.websocket_connect_timeout_secs",
            self.websocket_connect_timeout_secs,
        )?;
        at_least_one("http.send_timeout_secs", self.send_timeout_secs)?;
        at_least_one(
            "http.session_burst_per_ip",
            u64::from(self.session_burst_per_ip),
        )?;
        // Below one session a day the Retry-After would be meaningless.
        if !(self.sessions_per_ip_per_sec >= 1e-5 && self.sessions_per_ip_per_sec.is_finite()) {
            return Err(ConfigError::Invalid {
                key: "http.sessions_per_ip_per_sec",
                message: format!(
                    "{} is not a positive rate (exempt addresses with http.per_ip_exempt instead)",
                    self.sessions_per_ip_per_sec
                ),
            });
        }
        if self.cors_origins.is_empty() {
            return Err(ConfigError::Invalid {
                key: "http.cors_origins",
                message: "list at least one origin, or \"*\"".into(),
            });
        }
        for origin in &self.cors_origins {
            crate::signalling::cors::check_origin(origin).map_err(|message| {
                ConfigError::Invalid {
                    key: "http.cors_origins",
                    message,
                }
            })?;
        }
        Ok(())
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            announce: Vec::new(),
            port_base: 31000,
            threads: 0,
            backend: "auto".into(),
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
        }
    }
}

/// Why a configuration was refused. The message names the file and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML did not parse or a key is unknown or has the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key has a value outside its range.
    #[error("invalid config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// A command-line argument is wrong.
    #[error("invalid argument: {0}")]
    Argument(String),
    /// A Flashphoner WCS file (`--wcs-config`) has a wrong value, element or syntax.
    #[error("invalid WCS config {}:{line}: {key}: {message}", path.display())]
    Wcs {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Run the node with this configuration.
    Run(Box<Config>),
    /// Print usage and exit.
    Help,
    /// Print the version and exit.
    Version,
    /// `rtcdn demo`: run the shipped origin and edge (`config/origin.toml`, `config/edge.toml`)
    /// in one process.
    Demo,
    /// `rtcdn token`: print a client token.
    Token(crate::auth::cli::MintRequest),
    /// `rtcdn token --help`.
    TokenHelp,
}

/// Usage text for `--help`.
pub const USAGE: &str = "\
rtcdn: a real-time WebRTC CDN node (WHIP/WHEP)

USAGE:
    rtcdn [OPTIONS]
    rtcdn demo             run a CDN origin (http://127.0.0.1:8080) and an edge
                           (http://127.0.0.1:8180) in one process
    rtcdn token ...        print a client token (JWT) for a node with a \"token\" policy
                           (rtcdn token --help)

OPTIONS:
    --config FILE          read a TOML config (see config/standalone.toml, origin.toml, edge.toml)
    --wcs-config DIR       read Flashphoner WCS flashphoner.properties and loadbalancing.xml from DIR
    --http ADDR            HTTP listen address (default 127.0.0.1:8080)
    --https ADDR           HTTPS/WSS listen address (default 127.0.0.1:8443; needs --tls-cert/--tls-key)
    --tls-cert FILE        PEM certificate chain for HTTPS/WSS
    --tls-key FILE         PEM private key for HTTPS/WSS
    --media-bind IP        media bind address (default 127.0.0.1)
    --announce IP          advertise this address in ICE candidates (repeatable)
    --udp-port-base PORT   UDP port of media thread 0 (default 31000)
    --media-threads N      media threads, 0 = one per core (default 0)
    --media-backend NAME   auto | io_uring | mmsg (default auto)
    --log LEVEL            log filter, e.g. info, debug, rtcdn=trace (default info)
    -h, --help             print this help
    -V, --version          print the version
";

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
        self.http.validate_limits()?;
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
        if !(30_000..=50_000_000).contains(&self.bwe.min_publisher_bps) {
            return Err(ConfigError::Invalid {
                key: "bwe.min_publisher_bps",
                message: "must be 30000 to 50000000 (bit/s)".into(),
            });
        }
        self.cdn.validate(self.http.listen)?;
        self.auth.validate()?;
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

    /// Parses the command line (without the program name).
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
        let mut args = args.into_iter().peekable();
        if args.peek().map(String::as_str) == Some("token") {
            args.next();
            let env_secret = std::env::var("RTCDN_JWT_SECRET").ok();
            return Ok(
                match crate::auth::cli::parse_token_args(args, env_secret)? {
                    Some(request) => Command::Token(request),
                    None => Command::TokenHelp,
                },
            );
        }
        if args.peek().map(String::as_str) == Some("demo") {
            args.next();
            return match args.next() {
                None => Ok(Command::Demo),
                Some(flag) if flag == "-h" || flag == "--help" => Ok(Command::Help),
                Some(other) => Err(ConfigError::Argument(format!(
                    "demo takes no arguments, got {other:?}"
                ))),
            };
        }
        let mut config: Option<Config> = None;
        let mut config_flag: Option<&'static str> = None;
        let mut overrides: Vec<(String, String)> = Vec::new();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "-V" | "--version" => return Ok(Command::Version),
                "--config" | "--wcs-config" | "--http" | "--https" | "--tls-cert" | "--tls-key"
                | "--media-bind" | "--announce" | "--udp-port-base" | "--media-threads"
                | "--media-backend" | "--log" => {
                    let value = match inline {
                        Some(v) => v,
                        None => args.next().ok_or_else(|| {
                            ConfigError::Argument(format!("{flag} needs a value"))
                        })?,
                    };
                    if flag == "--config" || flag == "--wcs-config" {
                        let this = if flag == "--config" {
                            "--config"
                        } else {
                            "--wcs-config"
                        };
                        if let Some(earlier) = config_flag {
                            return Err(ConfigError::Argument(format!(
                                "{this} cannot be used with {earlier}: give one config"
                            )));
                        }
                        config_flag = Some(this);
                        config = Some(if flag == "--config" {
                            Config::load(Path::new(&value))?
                        } else {
                            crate::cdn::wcs::load_wcs_dir(Path::new(&value))?
                        });
                    } else {
                        overrides.push((flag, value));
                    }
                }
                other => {
                    return Err(ConfigError::Argument(format!(
                        "unknown argument {other:?} (see --help)"
                    )))
                }
            }
        }
        let mut config = config.unwrap_or_default();
        for (flag, value) in overrides {
            config.apply_flag(&flag, &value)?;
        }
        config.validate()?;
        Ok(Command::Run(Box::new(config)))
    }

    fn apply_flag(&mut self, flag: &str, value: &str) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value
                .parse()
                .map_err(|e| ConfigError::Argument(format!("{flag} {value:?}: {e}")))
        }
        match flag {
            "--http" => self.http.listen = parse(flag, value)?,
            "--https" => self.http.tls_listen = parse(flag, value)?,
            "--tls-cert" => self.http.tls_certificate = Some(PathBuf::from(value)),
            "--tls-key" => self.http.tls_private_key = Some(PathBuf::from(value)),
            "--media-bind" => self.media.bind = parse(flag, value)?,
            "--announce" => self.media.announce.push(parse(flag, value)?),
            "--udp-port-base" => self.media.port_base = parse(flag, value)?,
            "--media-threads" => self.media.threads = parse(flag, value)?,
            "--media-backend" => self.media.backend = value.to_owned(),
            "--log" => self.log.level = value.to_owned(),
            _ => unreachable!("from_args only passes known flags"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, ConfigError> {
        Config::from_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn no_arguments_is_the_embedded_default() {
        let Command::Run(config) = args(&[]).unwrap() else {
            panic!("expected Run")
        };
        assert_eq!(
            config.http.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.media.port_base, 31000);
        assert_eq!(config.media.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn flags_override() {
        let Command::Run(config) = args(&[
            "--http",
            "127.0.0.1:9000",
            "--udp-port-base=40000",
            "--media-threads",
            "3",
        ])
        .unwrap() else {
            panic!("expected Run")
        };
        assert_eq!(config.http.listen.port(), 9000);
        assert_eq!(config.media.port_base, 40000);
        assert_eq!(config.media_threads(), 3);
    }

    #[test]
    fn bad_flags_are_named() {
        let err = args(&["--bogus"]).unwrap_err().to_string();
        assert!(err.contains("--bogus"), "{err}");
        let err = args(&["--udp-port-base", "abc"]).unwrap_err().to_string();
        assert!(err.contains("--udp-port-base"), "{err}");
        let err = args(&["--media-backend", "kqueue"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("media.backend"), "{err}");
        assert!(matches!(args(&["--http"]), Err(ConfigError::Argument(_))));
    }

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
        assert_eq!(config.auth.publish, crate::auth::Policy::Token);
        assert_eq!(config.auth.play, crate::auth::Policy::Open);
        assert_eq!(config.session.connect_timeout_secs, 10);
    }

    #[test]
    fn token_subcommand() {
        let Command::Token(request) = args(&[
            "token",
            "--secret",
            "0123456789abcdef0123456789abcdef",
            "--play",
            "*",
        ])
        .unwrap() else {
            panic!("expected Token")
        };
        assert_eq!(request.grant.play, vec!["*"]);
        assert_eq!(args(&["token", "--help"]).unwrap(), Command::TokenHelp);
    }

    #[test]
    fn demo_and_wcs_config_arguments() {
        assert_eq!(args(&["demo"]).unwrap(), Command::Demo);
        assert_eq!(args(&["demo", "--help"]).unwrap(), Command::Help);
        let err = args(&["demo", "--http", "x"]).unwrap_err().to_string();
        assert!(err.contains("demo"), "{err}");
        let err = args(&["--log", "info", "demo"]).unwrap_err().to_string();
        assert!(err.contains("demo"), "{err}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wcs-example");
        let dir = dir.to_str().unwrap();
        let Command::Run(config) =
            args(&["--wcs-config", dir, "--udp-port-base", "33000"]).unwrap()
        else {
            panic!("expected Run")
        };
        assert!(config.cdn.relays());
        assert_eq!(config.media.port_base, 33000);
        let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/origin.toml");
        let err = args(&["--config", toml.to_str().unwrap(), "--wcs-config", dir])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--wcs-config") && err.contains("--config"),
            "{err}"
        );
        let err = args(&["--wcs-config", "/nonexistent-rtcdn-dir"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("flashphoner.properties"), "{err}");
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
}
