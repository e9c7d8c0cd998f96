//! `[[ice.servers]]`: the STUN and TURN servers handed to WHIP/WHEP clients (RFC 9725 §4.6),
//! with fixed credentials or a coturn `use-auth-secret` secret from which per-session ones are
//! minted (`crate::signalling::ice_servers`). Checked at start: a URL the browser would refuse
//! (`RTCPeerConnection` throws on it) is a config error here, not a failed call later.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::auth::config::Secret;

/// The default lifetime of minted TURN credentials (coturn's documentation uses a day).
pub const DEFAULT_TTL_SECS: u64 = 86_400;

/// `[ice]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IceConfig {
    /// The servers every WHIP/WHEP answer names in `Link: <…>; rel="ice-server"` headers.
    pub servers: Vec<IceServerConfig>,
}

/// One `[[ice.servers]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]` or `turns:…` URLs (RFC 7064,
    /// RFC 7065) of one server.
    pub urls: Vec<String>,
    /// A fixed TURN username (with `credential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The fixed TURN password for `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
    /// coturn's `static-auth-secret` (`use-auth-secret`, the "TURN REST API"): each session gets
    /// username `<expiry>:<session>` and password base64(HMAC-SHA1(secret, username)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Seconds minted credentials stay valid.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_SECS
}

impl IceConfig {
    /// Checks every entry's URLs and credentials.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.servers.iter().try_for_each(IceServerConfig::validate)
    }
}

impl IceServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.urls.is_empty() {
            return invalid("ice.servers.urls", "an entry needs at least one URL".into());
        }
        let mut turn = false;
        for url in &self.urls {
            turn |= check_url(url).map_err(|message| ConfigError::Invalid {
                key: "ice.servers.urls",
                message: format!("{url:?}: {message}"),
            })?;
        }
        let fixed = self.username.is_some() || self.credential.is_some();
        if self.username.is_some() != self.credential.is_some() {
            return invalid(
                "ice.servers.username",
                "username and credential must be set together".into(),
            );
        }
        if fixed && self.secret.is_some() {
            return invalid(
                "ice.servers.secret",
                "set either secret (minted credentials) or username and credential, not both"
                    .into(),
            );
        }
        if turn && !fixed && self.secret.is_none() {
            return invalid(
                "ice.servers.urls",
                format!(
                    "{:?}: a TURN server needs username and credential, or secret",
                    self.urls[0]
                ),
            );
        }
        // The values go inside quoted strings of a Link header.
        let fields = [
            ("ice.servers.username", self.username.as_deref()),
            (
                "ice.servers.credential",
                self.credential.as_ref().map(Secret::expose),
            ),
        ];
        for (key, value) in fields {
            if value.is_some_and(|v| v.is_empty() || !v.chars().all(quotable)) {
                return invalid(
                    key,
                    "must be non-empty printable ASCII without '\"' or '\\'".into(),
                );
            }
        }
        if self.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return invalid("ice.servers.secret", "must not be empty".into());
        }
        if !(60..=30 * 86_400).contains(&self.ttl_secs) {
            return invalid(
                "ice.servers.ttl_secs",
                "must be 60 to 2592000 (30 days)".into(),
            );
        }
        Ok(())
    }
}

/// A character that may stand inside a quoted string of a header as it is.
fn quotable(c: char) -> bool {
    (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' '
}

/// Checks one ICE server URL; `Ok(true)` for a TURN one.
fn check_url(url: &str) -> Result<bool, String> {
    let (scheme, rest) = url
        .split_once(':')
        .ok_or("not a URL (stun:, turn: or turns:)")?;
    let turn = match scheme {
        "stun" | "stuns" => false,
        "turn" | "turns" => true,
        _ => {
            return Err(format!(
                "scheme {scheme:?} is not stun, stuns, turn or turns"
            ))
        }
    };
    if rest.starts_with("//") {
        return Err("write stun:host or turn:host, without \"//\" (RFC 7064)".into());
    }
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    if let Some(query) = query {
        if !turn {
            return Err("a STUN URL takes no query".into());
        }
        if !matches!(query, "transport=udp" | "transport=tcp") {
            return Err(format!(
                "query {query:?}: only transport=udp or transport=tcp"
            ));
        }
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (ip, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
            ip.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
            (ip, after.strip_prefix(':'))
        }
        None if authority.matches(':').count() > 1 => {
            return Err("write an IPv6 host in brackets: turn:[2001:db8::1]:3478".into())
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    // A ':' is left only in a bracketed IPv6 address, already parsed above.
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !host_ok {
        return Err(format!("{host:?} is not a host name or address"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("{port:?} is not a port (1 to 65535)")),
        }
    }
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(servers: &str) -> Result<Config, String> {
        Config::from_toml(servers, Path::new("ice.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn static_and_secret_entries_parse() {
        let config = parse(
            r#"
[[ice.servers]]
urls = ["stun:stun.example.net", "stun:[2001:db8::1]:3478"]
[[ice.servers]]
urls = ["turn:192.0.2.7:3478?transport=udp", "turn:192.0.2.7:3478?transport=tcp"]
secret = "coturn-static-auth-secret"
[[ice.servers]]
urls = ["turns:turn.example.net:5349?transport=tcp"]
username = "viewer"
credential = "hunter2"
ttl_secs = 600
"#,
        )
        .unwrap();
        let servers = &config.ice.servers;
        assert_eq!(servers.len(), 3);
        assert!(servers[0].secret.is_none() && servers[0].username.is_none());
        assert_eq!(
            servers[1].secret.as_ref().unwrap().expose(),
            "coturn-static-auth-secret"
        );
        assert_eq!(servers[1].ttl_secs, super::DEFAULT_TTL_SECS);
        assert_eq!(servers[2].username.as_deref(), Some("viewer"));
        assert_eq!(servers[2].ttl_secs, 600);
        // Printed, the secrets are hidden.
        let printed = config.to_toml();
        assert!(!printed.contains("hunter2") && !printed.contains("coturn-static"));
    }

    #[test]
    fn bad_entries_name_the_key_and_the_problem() {
        for (entry, key, words) in [
            ("urls = []", "ice.servers.urls", "at least one"),
            ("urls = [\"http://x\"]", "ice.servers.urls", "scheme"),
            (
                "urls = [\"turn://x\"]\nsecret = \"s\"",
                "ice.servers.urls",
                "//",
            ),
            ("urls = [\"turn:x\"]", "ice.servers.urls", "needs username"),
            (
                "urls = [\"turn:x?transport=sctp\"]\nsecret = \"s\"",
                "ice.servers.urls",
                "transport",
            ),
            (
                "urls = [\"stun:x?transport=udp\"]",
                "ice.servers.urls",
                "no query",
            ),
            ("urls = [\"stun:x:0\"]", "ice.servers.urls", "port"),
            ("urls = [\"stun:x:99999\"]", "ice.servers.urls", "port"),
            ("urls = [\"stun:[::1\"]", "ice.servers.urls", "unclosed"),
            (
                "urls = [\"stun:2001:db8::1\"]",
                "ice.servers.urls",
                "brackets",
            ),
            ("urls = [\"stun:a b\"]", "ice.servers.urls", "host"),
            ("urls = [\"stun:\"]", "ice.servers.urls", "host"),
            (
                "urls = [\"turn:x\"]\nusername = \"u\"",
                "ice.servers.username",
                "together",
            ),
            (
                "urls = [\"turn:x\"]\nusername = \"u\"\ncredential = \"c\"\nsecret = \"s\"",
                "ice.servers.secret",
                "either",
            ),
            (
                "urls = [\"turn:x\"]\nusername = \"u\\\"\"\ncredential = \"c\"",
                "ice.servers.username",
                "printable",
            ),
            (
                "urls = [\"turn:x\"]\nsecret = \"s\"\nttl_secs = 10",
                "ice.servers.ttl_secs",
                "60",
            ),
            (
                "urls = [\"turn:x\"]\nsecret = \"\"",
                "ice.servers.secret",
                "empty",
            ),
            (
                "urls = [\"stun:x\"]\npassword = \"p\"",
                "password",
                "unknown",
            ),
        ] {
            let err = parse(&format!("[[ice.servers]]\n{entry}\n")).unwrap_err();
            assert!(err.contains(key) && err.contains(words), "{entry}: {err}");
        }
    }
}
