//! Nobody but its origin's relays publishes on a CDN edge. Before, a `POST /whip/NAME` sent
//! straight to an edge, that never even did ICE, held NAME there: the origin's relay of the
//! real NAME then failed with "Stream name is already in use" (retried forever) and every
//! player sent to that edge got nothing. Now such publishes are refused with the reason, over
//! WHIP (403) and over the WebSocket protocol (FAILED), as is a relay that cannot prove the
//! CDN's secret; the real stream is relayed and plays on the edge. An edge that does take
//! publishes from clients (`cdn.edge_accepts_publish`) lets the relay take a name over from a
//! publisher that never connected.
//!
//! Everything is sent to 127.0.0.1 only.

use std::time::Duration;

use hyper::StatusCode;
use rtcdn::auth::Secret;
use rtcdn::config::cdn::{BalanceMode, CdnConfig, CdnNode, CdnRole};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientError, ClientSession, Mode};
use serde_json::json;

mod common;
use common::{
    cdn_node, loopback_config, metrics_text, play_until_media, post_sdp_offer, sample_sum,
    stream_listing, Streaming, CDN_SECRET,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn origin_for(edge: &Node, secret: &str) -> Node {
    let mut config = loopback_config(1);
    config.cdn = CdnConfig {
        role: CdnRole::Origin,
        load_balancing_enabled: true,
        mode: BalanceMode::RoundRobin,
        nodes: vec![CdnNode {
            id: 1,
            host: "127.0.0.1".into(),
            ws: Some(edge.http_addr().port()),
            wss: None,
            rtmp: None,
        }],
        secret: Some(Secret::new(secret)),
        ..CdnConfig::default()
    };
    Node::start(&config).expect("origin starts")
}

async fn edge_streams(edge: &Node) -> Vec<String> {
    let list = stream_listing(&format!("http://{}", edge.http_addr())).await;
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect()
}

async fn whip_squat(base: &str, stream: &str) -> common::Raw {
    post_sdp_offer(&format!("{base}/whip/{stream}"), Mode::Publish, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_publish_on_an_edge() {
    let edge = cdn_node(CdnRole::Edge, Vec::new());
    let edge_base = format!("http://{}", edge.http_addr());
    let edge_ws = format!("ws://{}/", edge.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    let squat = whip_squat(&edge_base, "live").await;
    assert_eq!(squat.status, StatusCode::FORBIDDEN, "{}", squat.body);
    assert!(
        squat
            .body
            .contains("only its origin's authenticated relays"),
        "{}",
        squat.body
    );
    let refused = ClientSession::connect_ws(&edge_ws, Mode::Publish, "live", &certificate, TIMEOUT)
        .await
        .err()
        .expect("a WebSocket publish is refused");
    assert!(
        matches!(&refused, ClientError::Refused(info) if info.starts_with("Forbidden: this node is a CDN edge")),
        "{refused}"
    );
    // A forged relay token is refused and says why.
    let refused = ClientSession::connect_ws_custom(
        &edge_ws,
        Mode::Publish,
        "live",
        &certificate,
        TIMEOUT,
        Some(json!({ "relayToken": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln" })),
    )
    .await
    .err()
    .expect("a forged relay token is refused");
    assert!(
        refused.to_string().contains("relay token refused"),
        "{refused}"
    );
    assert!(edge_streams(&edge).await.is_empty());
    // /metrics counted the three refused publishes and the forged relay token.
    let metrics = metrics_text(&edge_base, None).await;
    let refusals = |kind: &str, reason: &str| {
        let (kind, reason) = (format!("kind=\"{kind}\""), format!("reason=\"{reason}\""));
        sample_sum(&metrics, "rtcdn_auth_refusals_total{", &[&kind, &reason])
    };
    assert_eq!(refusals("publish", "edge_relay_only"), 3.0, "{metrics}");
    assert_eq!(refusals("relay", "invalid_token"), 1.0, "{metrics}");

    // The origin's relay proves the secret: the real stream plays on the edge.
    let origin = origin_for(&edge, CDN_SECRET);
    let origin_base = format!("http://{}", origin.http_addr());
    let publisher =
        ClientSession::connect(&origin_base, Mode::Publish, "live", &certificate, TIMEOUT)
            .await
            .expect("publish on the origin");
    let sender = Streaming::start(publisher, 0);
    let mut player =
        play_until_media(&edge_base, "live", &certificate, Duration::from_secs(20)).await;
    assert!(player.recv_rtp(Duration::from_secs(2)).await.is_some());
    sender.stop().await.close().await.unwrap();
    origin.stop();
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_the_wrong_secret_is_refused() {
    let edge = cdn_node(CdnRole::Edge, Vec::new());
    let origin = origin_for(&edge, "some-other-cdn-secret-0123456789abcdef");
    let origin_base = format!("http://{}", origin.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher =
        ClientSession::connect(&origin_base, Mode::Publish, "wrong", &certificate, TIMEOUT)
            .await
            .expect("publish on the origin");
    let sender = Streaming::start(publisher, 0);
    // The relay starts once media flows and is retried with backoff; give it a few tries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        edge_streams(&edge).await.is_empty(),
        "an origin that does not know the secret cannot publish on the edge"
    );
    let publisher = sender.stop().await;
    assert!(
        publisher.ended().is_none(),
        "the publisher on the origin is not harmed"
    );
    origin.stop();
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_takes_a_name_over_from_a_publisher_that_never_connected() {
    let mut config = loopback_config(1);
    config.cdn.role = CdnRole::Edge;
    config.cdn.secret = Some(Secret::new(CDN_SECRET));
    config.cdn.edge_accepts_publish = true;
    let edge = Node::start(&config).expect("edge starts");
    let edge_base = format!("http://{}", edge.http_addr());
    // A client may publish here, and holds the name without ever doing ICE.
    let squat = whip_squat(&edge_base, "held").await;
    assert_eq!(squat.status, StatusCode::CREATED, "{}", squat.body);
    assert_eq!(edge_streams(&edge).await, vec!["held".to_string()]);

    let origin = origin_for(&edge, CDN_SECRET);
    let origin_base = format!("http://{}", origin.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher =
        ClientSession::connect(&origin_base, Mode::Publish, "held", &certificate, TIMEOUT)
            .await
            .expect("publish on the origin");
    let sender = Streaming::start(publisher, 0);
    // Well before the squatter's connect timeout (10 s) the relay has the name.
    let mut player =
        play_until_media(&edge_base, "held", &certificate, Duration::from_secs(8)).await;
    assert!(player.recv_rtp(Duration::from_secs(2)).await.is_some());
    sender.stop().await.close().await.unwrap();
    origin.stop();
    edge.stop();
}
