//! A node that cannot start (its TLS certificate is missing, the RTMP address it was given is
//! taken) says why and leaves nothing bound: an immediate restart with a fixed config would
//! otherwise find its media port taken.

use std::net::{TcpListener, UdpSocket};

use rtcdn::config::rtmp::DEFAULT_RTMP_LISTEN;
use rtcdn::config::Config;
use rtcdn::node::Node;

#[test]
fn a_bad_tls_path_fails_the_start_before_any_media_port_is_bound() {
    // A UDP port free a moment ago, for the media socket.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.http.tls_listen = "127.0.0.1:0".parse().unwrap();
    config.http.tls_certificate = Some("/nonexistent/rtcdn-test.pem".into());
    config.http.tls_private_key = Some("/nonexistent/rtcdn-test.key".into());
    config.media.port_base = port;
    config.media.threads = 1;
    let error = match Node::start(&config) {
        Ok(node) => {
            node.stop();
            panic!("a node started without its TLS certificate");
        }
        Err(e) => e.to_string(),
    };
    assert!(error.contains("rtcdn-test.pem"), "{error}");
    UdpSocket::bind(("127.0.0.1", port)).expect("the media port is free right after");
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_rtmp_address_given_but_taken_fails_the_start_before_any_media_port_is_bound() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_udp_port();
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.rtmp.listen = Some(taken.local_addr().unwrap());
    config.media.port_base = port;
    config.media.threads = 1;
    let error = match Node::start(&config) {
        Ok(node) => {
            node.stop();
            panic!("a node started without the RTMP address it was given");
        }
        Err(e) => e.to_string(),
    };
    let addr = taken.local_addr().unwrap().to_string();
    assert!(error.contains(&addr) && error.contains("RTMP"), "{error}");
    UdpSocket::bind(("127.0.0.1", port)).expect("the media port is free right after");
}

#[test]
fn the_default_rtmp_port_taken_leaves_the_node_running_without_rtmp() {
    // Taken by this test, or already by someone else (another node): the same case.
    let _taken = TcpListener::bind(DEFAULT_RTMP_LISTEN);
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.port_base = free_udp_port();
    config.media.threads = 1;
    let node = Node::start(&config).expect("the node starts");
    assert_eq!(node.rtmp_addr(), None);
    node.stop();
}
