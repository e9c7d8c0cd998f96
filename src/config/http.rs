//! `[http]`: the HTTP/HTTPS listeners and the limits that keep one client from taking them over,
//! with the two value types only this section has: an address block ([`IpNet`]) and a CORS
//! origin ([`check_origin`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::error::ConfigError;

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
    pub fn validate(&self) -> Result<(), ConfigError> {
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
            check_origin(origin).map_err(|message| ConfigError::Invalid {
                key: "http.cors_origins",
                message,
            })?;
        }
        Ok(())
    }
}

/// An address block in `http.per_ip_exempt`: `127.0.0.0/8`, `::1`, `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;

    fn try_from(text: String) -> Result<IpNet, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.as_str(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl From<IpNet> for String {
    /// The block as `http.per_ip_exempt` spells it: a lone address without its full-length
    /// prefix (`::1`), a wider block with it (`127.0.0.0/8`).
    fn from(net: IpNet) -> String {
        let full = if net.addr.is_ipv4() { 32 } else { 128 };
        if net.prefix == full {
            net.addr.to_string()
        } else {
            format!("{}/{}", net.addr, net.prefix)
        }
    }
}

/// Why a `http.cors_origins` entry is refused, if it is: `*` or `scheme://host[:port]` exactly
/// as browsers send it in `Origin` (no path, no trailing slash).
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{origin:?} must start with http:// or https://"))?;
    if host.is_empty()
        || host.contains('/')
        || !host.bytes().all(|b| b.is_ascii_graphic())
        || host.bytes().any(|b| b.is_ascii_uppercase())
    {
        return Err(format!(
            "{origin:?} is not an origin as browsers send it: scheme://host[:port] in lower case, no path"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> IpNet {
        IpNet::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn address_blocks() {
        assert!(net("127.0.0.0/8").contains(ip("127.1.2.3")));
        assert!(!net("127.0.0.0/8").contains(ip("128.0.0.1")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("::1").contains(ip("::1")));
        assert!(!net("::1").contains(ip("127.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
        ] {
            assert!(IpNet::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        // Written back as read, so a printed config reads the same blocks.
        for text in [
            "127.0.0.0/8",
            "::1",
            "10.0.0.1",
            "2001:db8::/32",
            "0.0.0.0/0",
        ] {
            assert_eq!(String::from(net(text)), text);
        }
        assert_eq!(String::from(net("127.0.0.1/32")), "127.0.0.1");
    }

    #[test]
    fn origins_are_checked() {
        assert!(check_origin("*").is_ok());
        assert!(check_origin("https://a.example").is_ok());
        assert!(check_origin("http://127.0.0.1:8080").is_ok());
        for bad in [
            "a.example",
            "https://a.example/",
            "https://a.example/page",
            "https://",
            "https://A.example",
            "https://a b",
        ] {
            assert!(check_origin(bad).is_err(), "{bad:?}");
        }
    }
}
