//! Which addresses the node advertises in ICE host candidates: `media.announce`, else the bind
//! address, else (bound to the unspecified address) every interface's, then `media.nat_1to1`
//! mapping local addresses to the public ones a 1:1 NAT gives them (Janus's `nat_1_1_mapping`,
//! pion's and MediaMTX's NAT 1:1 IPs, `PUBLIC/LOCAL` in pion's notation).
//!
//! No IO: the caller reads the interfaces and whether an IPv6 socket also takes IPv4
//! (`net.ipv6.bindv6only`), so every rule here is tested with made-up hosts. Start-up code calls
//! [`host_candidates`] and logs [`loopback_only_warning`]; the SDP writer only ever sees the list.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, MediaConfig};

/// `host` as the host part of a URL: an IPv6 address in brackets, anything else as it is.
pub fn url_host(host: &str) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => format!("[{ip}]"),
        Err(_) => host.to_owned(),
    }
}

/// One `media.nat_1to1` entry: `"PUBLIC"` (every non-loopback local address of its family) or
/// `"PUBLIC/LOCAL"` (that local address only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nat1to1 {
    /// The address clients reach.
    pub public: IpAddr,
    /// The local address it maps; `None`: all of its family but loopback.
    pub local: Option<IpAddr>,
}

impl FromStr for Nat1to1 {
    type Err = String;

    fn from_str(s: &str) -> Result<Nat1to1, String> {
        let ip = |text: &str| {
            text.trim().parse::<IpAddr>().map_err(|_| {
                format!("{text:?} is not an IP address (write PUBLIC or PUBLIC/LOCAL)")
            })
        };
        let (public, local) = match s.split_once('/') {
            Some((public, local)) => (ip(public)?, Some(ip(local)?)),
            None => (ip(s)?, None),
        };
        if public.is_unspecified() || public.is_loopback() {
            return Err(format!("{public} cannot be reached by a client"));
        }
        if let Some(local) = local {
            if local.is_ipv4() != public.is_ipv4() {
                return Err(format!("{public} and {local} are not of one family"));
            }
            if local.is_unspecified() {
                return Err(format!("{local} is no interface's address"));
            }
        }
        Ok(Nat1to1 { public, local })
    }
}

impl fmt::Display for Nat1to1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            Some(local) => write!(f, "{}/{local}", self.public),
            None => write!(f, "{}", self.public),
        }
    }
}

impl<'de> Deserialize<'de> for Nat1to1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Nat1to1 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The cross-key rules of `media.nat_1to1` (each entry was checked when it was read).
pub fn validate(media: &MediaConfig) -> Result<(), ConfigError> {
    let invalid = |message: String| {
        Err(ConfigError::Invalid {
            key: "media.nat_1to1",
            message,
        })
    };
    if !media.nat_1to1.is_empty() && !media.announce.is_empty() {
        return invalid(
            "set media.announce (the exact list) or media.nat_1to1 (a mapping of the local addresses), not both".into(),
        );
    }
    for (i, a) in media.nat_1to1.iter().enumerate() {
        for b in &media.nat_1to1[..i] {
            let same_local = match (a.local, b.local) {
                (Some(x), Some(y)) => x == y,
                (None, None) => a.public.is_ipv4() == b.public.is_ipv4(),
                _ => false,
            };
            if same_local {
                return invalid(format!("{b} and {a} map the same local addresses"));
            }
        }
    }
    Ok(())
}

/// Where the advertised addresses came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `media.announce`.
    Announce,
    /// The bind address.
    Bind,
    /// The interfaces' addresses (bound to the unspecified address).
    Interfaces,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Announce => "media.announce",
            Source::Bind => "media.bind",
            Source::Interfaces => "interfaces",
        }
    }
}

/// The addresses of the host candidates, best first, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCandidates {
    /// In the order the answer lists them (the first gets the highest priority).
    pub addresses: Vec<IpAddr>,
    /// Where the local addresses came from.
    pub source: Source,
    /// Whether `media.nat_1to1` mapped any of them.
    pub mapped: bool,
}

impl HostCandidates {
    /// One line for the start-up log: the addresses and where they came from.
    pub fn summary(&self) -> String {
        let list: Vec<String> = self.addresses.iter().map(IpAddr::to_string).collect();
        let nat = if self.mapped { " + media.nat_1to1" } else { "" };
        format!("{} (from {}{nat})", list.join(", "), self.source.as_str())
    }
}

/// The host candidate addresses of a node configured as `media` on a host whose interfaces have
/// `interfaces` (up, without IPv6 link-local), where an IPv6 socket bound to `::` also takes
/// IPv4 when `dual_stack`.
///
/// `media.nat_1to1` puts each mapped public address first; the local address stays after it
/// unless `media.nat_1to1_keep_local` is off: clients on the node's own network (another VM of
/// the VPC, a LAN) then still reach it directly, at the cost of the private address in the
/// answer. Loopback comes last: local clients can use it, others cannot.
pub fn host_candidates(
    media: &MediaConfig,
    interfaces: &[IpAddr],
    dual_stack: bool,
) -> HostCandidates {
    let (locals, source) = if !media.announce.is_empty() {
        (media.announce.clone(), Source::Announce)
    } else if !media.bind.is_unspecified() {
        (vec![media.bind], Source::Bind)
    } else {
        // A socket bound to 0.0.0.0 takes IPv4 only; one bound to :: takes IPv6, and IPv4 too
        // (as v4-mapped addresses, which the reactor reports as IPv4) unless bindv6only is set.
        let v6_socket = media.bind.is_ipv6();
        let wanted = |ip: &&IpAddr| {
            if ip.is_ipv4() {
                !v6_socket || dual_stack
            } else {
                v6_socket
            }
        };
        (
            interfaces.iter().filter(wanted).copied().collect(),
            Source::Interfaces,
        )
    };
    let mapping = |local: IpAddr| {
        let exact = media.nat_1to1.iter().find(|n| n.local == Some(local));
        let family = || {
            media.nat_1to1.iter().find(|n| {
                n.local.is_none() && n.public.is_ipv4() == local.is_ipv4() && !local.is_loopback()
            })
        };
        exact.or_else(family).map(|n| n.public)
    };
    let mut publics = Vec::new();
    let mut kept = Vec::new();
    for local in locals {
        match mapping(local) {
            Some(public) => {
                publics.push(public);
                if media.nat_1to1_keep_local {
                    kept.push(local);
                }
            }
            None => kept.push(local),
        }
    }
    let mapped = !publics.is_empty();
    let mut addresses = publics;
    addresses.extend(kept);
    // Stable: the order within each group stays the interfaces' (or the config's).
    addresses.sort_by_key(IpAddr::is_loopback);
    let mut seen = Vec::with_capacity(addresses.len());
    addresses.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });
    HostCandidates {
        addresses,
        source,
        mapped,
    }
}

/// Why clients on other hosts will fail to connect though they can signal: HTTP listens beyond
/// loopback (`listens`, the HTTP and HTTPS listeners) but every candidate is a loopback address.
pub fn loopback_only_warning(listens: &[SocketAddr], candidates: &[IpAddr]) -> Option<String> {
    let public = listens.iter().find(|l| !l.ip().is_loopback())?;
    if candidates.is_empty() || !candidates.iter().all(IpAddr::is_loopback) {
        return None;
    }
    let list: Vec<String> = candidates.iter().map(IpAddr::to_string).collect();
    Some(format!(
        "HTTP listens on {public}, but the media ICE candidates are loopback only ({}): clients on other hosts can signal but never connect; set media.bind = \"0.0.0.0\" (--media-bind) or media.announce (--announce) to an address they reach",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_url_host_brackets_ipv6_only() {
        assert_eq!(url_host("2001:db8::1"), "[2001:db8::1]");
        assert_eq!(url_host("192.0.2.7"), "192.0.2.7");
        assert_eq!(url_host("edge1.example.com"), "edge1.example.com");
        assert_eq!(url_host("[::1]"), "[::1]");
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| ip(s)).collect()
    }

    /// A host with a private IPv4, a global IPv6 and loopback of both families.
    fn host() -> Vec<IpAddr> {
        ips(&["127.0.0.1", "10.0.0.5", "::1", "2001:db8::5"])
    }

    fn media(toml: &str) -> MediaConfig {
        Config::from_toml(&format!("[media]\n{toml}\n"), Path::new("m.toml"))
            .unwrap_or_else(|e| panic!("{toml}: {e}"))
            .media
    }

    fn candidates(toml: &str, dual_stack: bool) -> Vec<IpAddr> {
        host_candidates(&media(toml), &host(), dual_stack).addresses
    }

    #[test]
    fn announce_then_bind_then_interfaces() {
        assert_eq!(
            candidates(
                "announce = [\"192.0.2.1\", \"2001:db8::2\"]\nbind = \"0.0.0.0\"",
                true
            ),
            ips(&["192.0.2.1", "2001:db8::2"])
        );
        assert_eq!(candidates("bind = \"10.0.0.5\"", true), ips(&["10.0.0.5"]));
        assert_eq!(candidates("", true), ips(&["127.0.0.1"]));
        let all = host_candidates(&media("bind = \"0.0.0.0\""), &host(), true);
        assert_eq!(
            all.addresses,
            ips(&["10.0.0.5", "127.0.0.1"]),
            "IPv4 only, loopback last"
        );
        assert_eq!(all.source, Source::Interfaces);
    }

    #[test]
    fn bound_to_ipv6_unspecified_advertises_ipv6_and_ipv4_when_dual_stack() {
        assert_eq!(
            candidates("bind = \"::\"", true),
            ips(&["10.0.0.5", "2001:db8::5", "127.0.0.1", "::1"])
        );
        // net.ipv6.bindv6only = 1: the socket takes no IPv4.
        assert_eq!(
            candidates("bind = \"::\"", false),
            ips(&["2001:db8::5", "::1"])
        );
    }

    #[test]
    fn nat_1to1_maps_local_addresses_and_keeps_them_after_the_public_one() {
        let toml = "bind = \"0.0.0.0\"\nnat_1to1 = [\"203.0.113.7\"]";
        let mapped = host_candidates(&media(toml), &host(), true);
        assert_eq!(
            mapped.addresses,
            ips(&["203.0.113.7", "10.0.0.5", "127.0.0.1"])
        );
        assert!(mapped.mapped);
        assert_eq!(
            mapped.summary(),
            "203.0.113.7, 10.0.0.5, 127.0.0.1 (from interfaces + media.nat_1to1)"
        );
        let replaced = candidates(&format!("{toml}\nnat_1to1_keep_local = false"), true);
        assert_eq!(replaced, ips(&["203.0.113.7", "127.0.0.1"]));
        // A bind address is mapped the same way.
        assert_eq!(
            candidates("bind = \"10.0.0.5\"\nnat_1to1 = [\"203.0.113.7\"]", true),
            ips(&["203.0.113.7", "10.0.0.5"])
        );
        // PUBLIC/LOCAL maps that address only; a family's entry maps the rest.
        let two = host_candidates(
            &media("bind = \"::\"\nnat_1to1 = [\"2001:db8:ff::1/2001:db8::5\", \"198.51.100.1/10.0.0.9\"]"),
            &ips(&["10.0.0.5", "10.0.0.9", "2001:db8::5"]),
            true,
        );
        assert_eq!(
            two.addresses,
            ips(&[
                "198.51.100.1",
                "2001:db8:ff::1",
                "10.0.0.5",
                "10.0.0.9",
                "2001:db8::5"
            ])
        );
        // Nothing to map (loopback only): the list is the locals'.
        let none = host_candidates(&media("nat_1to1 = [\"203.0.113.7\"]"), &host(), true);
        assert_eq!(none.addresses, ips(&["127.0.0.1"]));
        assert!(!none.mapped);
        assert_eq!(none.summary(), "127.0.0.1 (from media.bind)");
    }

    #[test]
    fn nat_1to1_entries_are_checked() {
        let parse = |toml: &str| {
            Config::from_toml(&format!("[media]\n{toml}\n"), Path::new("m.toml"))
                .unwrap_err()
                .to_string()
        };
        for (toml, words) in [
            ("nat_1to1 = [\"nope\"]", "not an IP address"),
            ("nat_1to1 = [\"0.0.0.0\"]", "cannot be reached"),
            ("nat_1to1 = [\"127.0.0.1\"]", "cannot be reached"),
            ("nat_1to1 = [\"203.0.113.7/2001:db8::1\"]", "one family"),
            ("nat_1to1 = [\"203.0.113.7/0.0.0.0\"]", "no interface"),
            (
                "nat_1to1 = [\"203.0.113.7\", \"203.0.113.8\"]",
                "media.nat_1to1: 203.0.113.7 and 203.0.113.8 map the same",
            ),
            (
                "nat_1to1 = [\"203.0.113.7/10.0.0.1\", \"203.0.113.8/10.0.0.1\"]",
                "map the same",
            ),
            (
                "nat_1to1 = [\"203.0.113.7\"]\nannounce = [\"203.0.113.7\"]",
                "not both",
            ),
        ] {
            let err = parse(toml);
            assert!(
                err.contains("nat_1to1") && err.contains(words),
                "{toml}: {err}"
            );
        }
        // One bare entry per family is fine, and the entries read back as written.
        let config =
            media("nat_1to1 = [\"203.0.113.7\", \"2001:db8:ff::1\", \"198.51.100.1/10.0.0.9\"]");
        let printed: Vec<String> = config.nat_1to1.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            ["203.0.113.7", "2001:db8:ff::1", "198.51.100.1/10.0.0.9"]
        );
    }

    #[test]
    fn warns_when_http_is_public_but_media_is_loopback() {
        let http = |s: &str| s.parse::<SocketAddr>().unwrap();
        let loopback = ips(&["127.0.0.1"]);
        let warning = loopback_only_warning(&[http("0.0.0.0:8080")], &loopback).unwrap();
        assert!(
            warning.contains("0.0.0.0:8080") && warning.contains("127.0.0.1"),
            "{warning}"
        );
        assert!(loopback_only_warning(&[http("[::]:8080")], &ips(&["::1", "127.0.0.1"])).is_some());
        // HTTPS counts as well.
        assert!(loopback_only_warning(
            &[http("127.0.0.1:8080"), http("192.0.2.1:8443")],
            &loopback
        )
        .is_some());
        assert!(loopback_only_warning(&[http("127.0.0.1:8080")], &loopback).is_none());
        assert!(
            loopback_only_warning(&[http("0.0.0.0:8080")], &ips(&["127.0.0.1", "10.0.0.5"]))
                .is_none()
        );
    }
}
