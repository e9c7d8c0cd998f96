//! `GET /metrics` serves the node's counters in the Prometheus text format: it parses, and the
//! values move with real traffic (a synthetic publisher and two players over WHIP/WHEP). It is
//! an admin endpoint: with protected actions it needs the admin token, and it never carries
//! CORS headers.
//!
//! Everything is sent to 127.0.0.1 only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::auth::{Policy, Secret};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};

mod common;
use common::{loopback_config, raw_request, send, test_node};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Samples of a scrape: `name{labels}` → value. Every non-comment line must be a sample.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        assert!(series.starts_with("rtcdn_"), "unprefixed family: {line:?}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

/// The sum of every sample of `family` (over its labels).
fn total(samples: &HashMap<String, f64>, family: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.as_str() == family || k.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(base: &str, bearer: Option<&str>) -> common::Raw {
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("origin", "http://elsewhere.example")];
    if let Some(v) = authorization.as_deref() {
        headers.push(("authorization", v));
    }
    raw_request(
        Method::GET,
        &format!("{base}/metrics"),
        &headers,
        Vec::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let before = scrape(&base, None).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert_eq!(
        before.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        before.headers.get("access-control-allow-origin").is_none(),
        "an admin endpoint answers no other origin"
    );
    let before = parse(&before.body);
    let build = format!(
        "rtcdn_build_info{{version=\"0.1.0\",revision=\"{}\"}}",
        rtcdn::GIT_REVISION
    );
    assert_eq!(before[&build], 1.0, "{build}");
    assert_eq!(total(&before, "rtcdn_streams"), 0.0);

    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher = ClientSession::connect(&base, Mode::Publish, "m", &certificate, TIMEOUT)
        .await
        .expect("publish");
    let mut players = Vec::new();
    for _ in 0..2 {
        players.push(
            ClientSession::connect(&base, Mode::Play, "m", &certificate, TIMEOUT)
                .await
                .expect("play"),
        );
    }
    let start = Instant::now();
    let mut seq = 0;
    let mut received = 0;
    while received < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "players received {received}"
        );
        send(&mut publisher, &mut seq, 0, start).await;
        for player in &mut players {
            while player.recv_rtp(Duration::from_millis(1)).await.is_some() {
                received += 1;
            }
        }
    }
    // A core publishes its counters with its work, and 50 ms after it goes quiet at the latest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = parse(&scrape(&base, None).await.body);
    let moved = |family: &str| total(&after, family) - total(&before, family);
    assert!(
        moved("rtcdn_rtp_received_packets_total") >= 100.0,
        "received moved by {}",
        moved("rtcdn_rtp_received_packets_total")
    );
    assert!(
        moved("rtcdn_rtp_sent_packets_total") >= 200.0,
        "sent moved by {}",
        moved("rtcdn_rtp_sent_packets_total")
    );
    assert_eq!(
        total(&after, "rtcdn_sessions"),
        3.0,
        "a publisher and two players"
    );
    assert_eq!(total(&after, "rtcdn_streams"), 1.0);
    assert_eq!(after["rtcdn_stream_players{stream=\"m\"}"], 2.0);
    assert_eq!(after["rtcdn_stream_media_flowing{stream=\"m\"}"], 1.0);
    assert!(total(&after, "rtcdn_residence_seconds_count") > 0.0);
    assert_eq!(
        total(&after, "rtcdn_residence_seconds_count"),
        after
            .iter()
            .filter(|(k, _)| k.starts_with("rtcdn_residence_seconds_bucket")
                && k.contains("le=\"+Inf\""))
            .map(|(_, v)| v)
            .sum::<f64>(),
        "+Inf holds every measured packet"
    );
    assert_eq!(total(&after, "rtcdn_media_allocations_total"), 0.0);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_on_a_protected_node() {
    let mut config = loopback_config(1);
    config.auth.publish = Policy::Token;
    config.auth.jwt_secret = Some(Secret::new("metrics-test-secret-0123456789abcdef-01"));
    config.auth.admin_token = Some(Secret::new("metrics-admin-token-0123"));
    let node = Node::start(&config).expect("node starts");
    let base = format!("http://{}", node.http_addr());
    assert_eq!(scrape(&base, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&base, Some("wrong-token-000000000")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let ok = scrape(&base, Some("metrics-admin-token-0123")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(parse(&ok.body).contains_key("rtcdn_sessions{core=\"0\"}"));
    node.stop();
}
