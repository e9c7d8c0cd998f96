//! A node whose media binds `::` advertises the host's IPv6 and IPv4 addresses (the socket
//! takes both unless the host sets `net.ipv6.bindv6only`), and one bound to `0.0.0.0` only its
//! IPv4 ones; `media.nat_1to1` puts the public address first. Nothing is sent anywhere: the
//! test reads the candidates each core will put in its answers.

use std::net::IpAddr;

use rtcdn::config::addresses::Nat1to1;
use rtcdn::config::Config;
use rtcdn::node::Node;

fn candidates(bind: &str, nat: &[&str]) -> Option<Vec<IpAddr>> {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.rtmp.enabled = false;
    config.media.bind = bind.parse().unwrap();
    config.media.port_base = 0;
    config.media.threads = 1;
    config.media.nat_1to1 = nat.iter().map(|n| n.parse::<Nat1to1>().unwrap()).collect();
    let node = match Node::start(&config) {
        Ok(node) => node,
        // A host without IPv6 cannot bind `::`.
        Err(e) if bind == "::" => {
            eprintln!("skipping {bind}: {e}");
            return None;
        }
        Err(e) => panic!("{bind}: {e}"),
    };
    let ips = node.signalling().cores[0]
        .candidates
        .iter()
        .map(|c| c.ip())
        .collect();
    node.stop();
    Some(ips)
}

#[test]
fn ipv6_unspecified_advertises_both_families_and_ipv4_unspecified_only_ipv4() {
    let v4 = candidates("0.0.0.0", &[]).unwrap();
    assert!(v4.iter().all(IpAddr::is_ipv4), "{v4:?}");
    assert!(v4.contains(&"127.0.0.1".parse().unwrap()), "{v4:?}");
    let Some(both) = candidates("::", &[]) else {
        return;
    };
    assert!(both.contains(&"::1".parse().unwrap()), "{both:?}");
    let dual_stack =
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").map_or(true, |v| v.trim() == "0");
    assert_eq!(
        both.contains(&"127.0.0.1".parse().unwrap()),
        dual_stack,
        "{both:?}"
    );
    // Loopback last, of either family.
    let first_loopback = both.iter().position(IpAddr::is_loopback).unwrap();
    assert!(
        both[first_loopback..].iter().all(IpAddr::is_loopback),
        "{both:?}"
    );
}

#[test]
fn nat_1to1_public_address_comes_first() {
    let mapped = candidates("127.0.0.1", &["203.0.113.7/127.0.0.1"]).unwrap();
    assert_eq!(
        mapped,
        [
            "203.0.113.7".parse::<IpAddr>().unwrap(),
            "127.0.0.1".parse().unwrap()
        ]
    );
}
