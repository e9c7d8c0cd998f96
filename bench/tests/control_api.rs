//! The control API's session list: `GET /api/sessions` shows every live session (kind, stream,
//! core, state, bitrate, age), and the id it shows ends that session through WCS's
//! `/rest-api/stream/terminate`. An admin endpoint: a protected node wants its admin token.
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::auth::{Policy, Secret};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;

mod common;
use common::{loopback_config, publish_and_play, raw_request, send, test_node};

async fn list(base: &str) -> Vec<serde_json::Value> {
    let raw = raw_request(
        Method::GET,
        &format!("{base}/api/sessions"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.body);
    serde_json::from_str::<serde_json::Value>(&raw.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_and_one_is_ended_by_its_id() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (mut publisher, [kept, mut kicked]) = publish_and_play(&base, "ctl", &certificate).await;
    // Media until the publisher's bitrate is measured (over a receiver report period, reported
    // by its core once a second).
    let start = Instant::now();
    let mut seq = 0;
    let rows = loop {
        for _ in 0..50 {
            send(&mut publisher, &mut seq, 0, start).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let rows = list(&base).await;
        if rows[0]["bitrate_bps"].as_u64().unwrap_or(0) > 0 || start.elapsed().as_secs() > 6 {
            break rows;
        }
    };
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["publisher", "player", "player"],
        "oldest first: {rows:?}"
    );
    for row in &rows {
        // Where each came from: the bench's address, and its User-Agent.
        assert!(
            row["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{row}"
        );
        assert_eq!(row["user_agent"], rtcdn_bench::http::USER_AGENT, "{row}");
        assert_eq!(row["stream"], "ctl");
        assert_eq!(row["connected"], true, "{row}");
        assert!(row["age_secs"].as_f64().unwrap() >= 0.0);
        assert!(row["core"].as_u64().unwrap() < 2);
    }
    assert!(
        rows[0]["bitrate_bps"].as_u64().unwrap_or(0) > 100_000,
        "the publisher's bitrate: {}",
        rows[0]
    );

    // The third session, by the id the list shows.
    let id = rows[2]["id"].as_str().unwrap().to_owned();
    let body = serde_json::json!({ "mediaSessionId": id }).to_string();
    let raw = raw_request(
        Method::POST,
        &format!("{base}/rest-api/stream/terminate"),
        &[("content-type", "application/json")],
        body.into_bytes(),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.body);
    assert!(
        kicked.wait_ended(Duration::from_secs(5)).await.is_some(),
        "the terminated player's session ends"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let rows = loop {
        let rows = list(&base).await;
        if rows.len() == 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["id"] != id.as_str()));
    assert!(kept.ended().is_none(), "the other player plays on");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_list_wants_the_admin_token_on_a_protected_node() {
    let mut config = loopback_config(1);
    config.auth.publish = Policy::Token;
    config.auth.jwt_secret = Some(Secret::new("control-api-test-secret-0123456789abcdef"));
    config.auth.admin_token = Some(Secret::new("control-api-admin-token-0123"));
    let node = Node::start(&config).unwrap();
    let url = format!("http://{}/api/sessions", node.http_addr());
    let refused = raw_request(Method::GET, &url, &[], Vec::new()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let bearer = "Bearer control-api-admin-token-0123";
    let allowed = raw_request(Method::GET, &url, &[("authorization", bearer)], Vec::new()).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(allowed.body, "[]");
    node.stop();
}
