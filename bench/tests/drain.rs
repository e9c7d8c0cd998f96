//! `POST /rest-api/cdn/drain` (admin): the node takes no new publish or play (503 with a
//! reason and `Retry-After` over WHIP/WHEP), answers an origin's `/?action=stat` poll with 503
//! so the origin's balancer skips it, keeps forwarding to the sessions it has, and is drained
//! once they end. Everything is sent to 127.0.0.1 only.

use std::time::Duration;

use hyper::{Method, StatusCode};
use rtcdn::auth::Secret;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::{DrainEnd, Node};
use rtcdn_bench::client::Mode;

mod common;
use common::{loopback_config, post_sdp_offer, publish_and_play, raw_request, Streaming};

const ADMIN: &str = "drain-test-admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_refuses_new_sessions_serves_its_own_and_is_drained_when_they_end() {
    let mut config = loopback_config(1);
    config.auth.admin_token = Some(Secret::new(ADMIN));
    let node = Node::start(&config).expect("node starts");
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (publisher, [mut player]) = publish_and_play(&base, "d", &certificate).await;
    let streaming = Streaming::start(publisher, 0);
    assert!(
        player.recv_rtp(Duration::from_secs(5)).await.is_some(),
        "media before the drain"
    );

    let drain = format!("{base}/rest-api/cdn/drain");
    let refused = raw_request(Method::POST, &drain, &[], Vec::new()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let bearer = format!("Bearer {ADMIN}");
    let answer = raw_request(
        Method::POST,
        &drain,
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(answer["state"], "DRAINING");
    assert_eq!(answer["sessions"], 2);

    for (url, mode) in [
        (format!("{base}/whep/d"), Mode::Play),
        (format!("{base}/whip/other"), Mode::Publish),
    ] {
        let refused = post_sdp_offer(&url, mode, None).await;
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{url}: {}",
            refused.body
        );
        assert!(refused.body.contains("draining"), "{}", refused.body);
        assert!(refused.headers.contains_key("retry-after"), "{url}");
    }
    let metrics = raw_request(
        Method::GET,
        &format!("{base}/metrics"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await;
    assert!(
        metrics.body.lines().any(|l| l == "rtcdn_draining 1"),
        "{}",
        metrics.body
    );
    let stat = raw_request(
        Method::GET,
        &format!("{base}/?action=stat"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(
        stat.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        stat.body
    );

    // The sessions it has go on: the player still gets the publisher's media (a packet every
    // 5 ms: the queue emptied first, 100 new ones span half a second past the drain).
    while player.try_recv_rtp().is_some() {}
    for n in 0..100 {
        assert!(
            player.recv_rtp(Duration::from_secs(2)).await.is_some(),
            "media during the drain stopped after {n} packets"
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), node.drained())
            .await
            .is_err(),
        "drained while two sessions were on it"
    );

    player.close().await.expect("the player leaves");
    streaming
        .stop()
        .await
        .close()
        .await
        .expect("the publisher leaves");
    let end = tokio::time::timeout(Duration::from_secs(5), node.drained())
        .await
        .expect("drained within 5 s of the last session's end");
    assert_eq!(end, DrainEnd::Drained);
    node.stop();
}
