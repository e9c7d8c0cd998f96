//! A node that cannot start (here: its TLS certificate is missing) says why and leaves nothing
//! bound: an immediate restart with a fixed config would otherwise find its media port taken.

use std::net::UdpSocket;

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
