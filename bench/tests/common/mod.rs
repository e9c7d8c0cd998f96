//! Shared by the integration tests that run an in-process node and a synthetic publisher.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::time::Instant;

use rtcdn::cdn::config::{BalanceMode, CdnConfig, CdnNode, CdnRole};
use rtcdn::config::Config;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, AUDIO_PT, VIDEO_PT};
use rtcdn_bench::media::{write_packet, Probe};

/// A node on loopback with ephemeral ports and `threads` media cores.
pub fn test_node(threads: usize) -> Node {
    Node::start(&loopback_config(threads)).expect("node starts")
}

/// A CDN origin or edge on loopback with two media cores; an origin with `edges` balances
/// players over them round-robin.
pub fn cdn_node(role: CdnRole, edges: Vec<CdnNode>) -> Node {
    let mut config = loopback_config(2);
    config.cdn = CdnConfig {
        role,
        load_balancing_enabled: !edges.is_empty(),
        mode: BalanceMode::RoundRobin,
        nodes: edges,
        ..CdnConfig::default()
    };
    Node::start(&config).expect("node starts")
}

fn loopback_config(threads: usize) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.port_base = 0;
    config.media.threads = threads;
    config
}

/// Sends the publisher's next synthetic packet: four 1200-byte video packets (every fourth
/// marks a frame end) to one 160-byte audio packet, numbered by `seq`.
pub async fn send(publisher: &mut ClientSession, seq: &mut u64, phase: u32, start: Instant) {
    let mut buf = [0u8; 1500];
    let n = *seq;
    let video = n % 5 != 4; // four video packets to one audio packet
    let (pt, ssrc, len) = if video {
        (VIDEO_PT, publisher.video_ssrc, 1200)
    } else {
        (AUDIO_PT, publisher.audio_ssrc, 160)
    };
    let probe = Probe {
        sequence: n,
        sent_at_ns: start.elapsed().as_nanos() as u64,
        phase,
    };
    let len = write_packet(
        &mut buf,
        pt,
        ssrc,
        n as u16,
        (n as u32).wrapping_mul(3000),
        video && n % 4 == 3,
        probe,
        len,
    );
    publisher
        .send_rtp(&buf[..len])
        .await
        .expect("publisher sends");
    *seq += 1;
}
