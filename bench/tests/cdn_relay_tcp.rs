//! An origin relays to an edge over TCP (`cdn.relay_transport = "tcp"`): the edge listens for
//! ICE-TCP (`media.tcp`, on by default), its answer lists its passive TCP candidate, the origin's publisher
//! core connects to it (RFC 6544, active) and the relay session's ICE, DTLS and SRTP go over
//! that connection, RFC 4571 framed. A player on the edge gets every packet intact; `/api/cdn`
//! says the relay is up over TCP; the edge accepted one ICE-TCP connection and the origin
//! opened one; forwarding into the connection allocates nothing on the origin's core.

use std::alloc::System;
use std::time::{Duration, Instant};

use rtcdn::alloc_count::CountingAllocator;
use rtcdn::auth::Secret;
use rtcdn::config::cdn::{CdnConfig, CdnNode, CdnRole, RelayTransport};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};
use rtcdn_bench::media::read_packet;

mod common;
use common::{
    get_json, loopback_config, play_until_media, stats_json, CoreStats, Streaming, CDN_SECRET,
};

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

/// An ICE-TCP counter of a node's `/api/stats`, summed over its cores.
async fn tcp_stat(base: &str, key: &str) -> u64 {
    let stats = stats_json(base).await;
    stats["cores"]
        .as_array()
        .expect("cores")
        .iter()
        .map(|core| {
            core["tcp"][key]
                .as_u64()
                .unwrap_or_else(|| panic!("no tcp.{key} in {core}"))
        })
        .sum()
}

fn edge_with_tcp() -> Node {
    let mut config = loopback_config(1);
    config.media.tcp = true;
    config.cdn = CdnConfig {
        role: CdnRole::Edge,
        secret: Some(Secret::new(CDN_SECRET)),
        ..CdnConfig::default()
    };
    Node::start(&config).expect("edge starts")
}

fn origin_of(edge: &Node, transport: RelayTransport) -> Node {
    let mut config = loopback_config(1);
    config.cdn = CdnConfig {
        role: CdnRole::Origin,
        load_balancing_enabled: true,
        nodes: vec![CdnNode {
            id: 1,
            host: "127.0.0.1".into(),
            ws: Some(edge.http_addr().port()),
            wss: None,
            rtmp: None,
        }],
        secret: Some(Secret::new(CDN_SECRET)),
        relay_transport: transport,
        ..CdnConfig::default()
    };
    Node::start(&config).expect("origin starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_transport_tcp_relays_over_an_ice_tcp_connection() {
    let edge = edge_with_tcp();
    let origin = origin_of(&edge, RelayTransport::Tcp);
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{}", edge.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "overtcp",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("publish to the origin");
    let sender = Streaming::start(publisher, 0);

    let mut player =
        play_until_media(&edge_base, "overtcp", &certificate, Duration::from_secs(30)).await;
    // Past the start (the keyframe replay, the first RTCP): steady forwarding from here.
    for _ in 0..100 {
        let packet = player
            .recv_rtp(Duration::from_secs(3))
            .await
            .expect("media keeps coming over the TCP relay");
        read_packet(&packet).expect("intact");
    }
    let before = CoreStats::settled(&origin_base).await;
    let mut got = 0;
    while got < 400 {
        let packet = player
            .recv_rtp(Duration::from_secs(3))
            .await
            .expect("media keeps coming over the TCP relay");
        read_packet(&packet).expect("intact");
        got += 1;
    }
    let after = CoreStats::settled(&origin_base).await;
    assert_eq!(
        after.sum("media_allocations") - before.sum("media_allocations"),
        0,
        "forwarding into the relay's TCP connection allocates nothing"
    );

    let view = get_json(&format!("{origin_base}/api/cdn")).await;
    assert_eq!(
        view["edges"][0]["relays"],
        serde_json::json!([{ "stream": "overtcp", "state": "up", "transport": "tcp" }]),
        "{view}"
    );
    assert_eq!(tcp_stat(&origin_base, "connects").await, 1);
    assert_eq!(tcp_stat(&origin_base, "connect_failures").await, 0);
    assert_eq!(tcp_stat(&origin_base, "open").await, 1);
    assert_eq!(
        tcp_stat(&edge_base, "accepted").await,
        1,
        "the edge took it"
    );
    assert_eq!(tcp_stat(&origin_base, "tx_dropped").await, 0);

    // The publisher leaves: the relay ends and its connection is closed by the origin.
    let publisher = sender.stop().await;
    publisher.close().await.expect("DELETE the WHIP resource");
    assert!(player.wait_ended(Duration::from_secs(10)).await.is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_stat(&origin_base, "closed_by_core").await < 1 {
        assert!(
            Instant::now() < deadline,
            "the relay's connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tcp_stat(&origin_base, "open").await, 0);
    origin.stop();
    edge.stop();
}

/// "tcp" toward an edge with `media.tcp = false`: its answer has no TCP candidate, the attempt fails
/// with a reason that names the setting, and nothing is relayed over UDP behind the operator's
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_transport_tcp_to_an_edge_without_ice_tcp_fails_and_says_why() {
    let mut config = loopback_config(1);
    config.media.tcp = false;
    config.cdn = CdnConfig {
        role: CdnRole::Edge,
        secret: Some(Secret::new(CDN_SECRET)),
        ..CdnConfig::default()
    };
    let edge = Node::start(&config).expect("edge starts");
    let origin = origin_of(&edge, RelayTransport::Tcp);
    let origin_base = format!("http://{}", origin.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "notcp",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("publish to the origin");
    let sender = Streaming::start(publisher, 0);
    // The attempt fails and backs off; it never comes up.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = get_json(&format!("{origin_base}/api/cdn")).await;
        let state = view["edges"][0]["relays"][0]["state"].clone();
        assert_ne!(state, "up", "{view}");
        if state == "backoff" {
            break;
        }
        assert!(Instant::now() < deadline, "never failed: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tcp_stat(&origin_base, "connects").await, 0);
    sender.stop().await.close().await.unwrap();
    origin.stop();
    edge.stop();
}
