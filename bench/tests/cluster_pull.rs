//! Pull on demand in a dynamic CDN (`[cluster]` with a `secret`, issue 14 step 3): a WHEP
//! player asks node b for a stream published on node a, right after the publish and with no
//! retry: b asks a, a relays the stream to b, and the player's first packet arrives intact
//! (the first-frame time of this cold pull is printed for BENCHMARKS.md). A stream published
//! nowhere is 404 at once. Once the player leaves, b releases the pull after
//! `cluster.idle_pull_secs` and a's relay ends. A warm-up (`/rest-api/v3/cdn/warmup`) pulls
//! the stream without a player and keeps it past the idle time, until its publishing stops.
//! Without Redis, a play of a stream the node does not have is refused at once. Refusals say
//! what a WCS edge says: "CDN stream not found" for a stream published nowhere, "Failed to
//! connect to origin stream" when it cannot be pulled (WHEP `404` and `502`).
//!
//! A real `redis-server` on a loopback port; everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientError, ClientSession, Mode};
use rtcdn_bench::media::read_packet;

mod common;
use common::{get_json, post_sdp_offer, raw_request, Raw, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_PULL_SECS: u64 = 2;

/// A cluster node that pulls, with a short idle time.
fn pulling_node(redis_url: &str) -> Node {
    common::pulling_node(redis_url, None, IDLE_PULL_SECS)
}

/// `POST /rest-api/v3/cdn/warmup` of `name` on `base`.
async fn warmup(base: &str, name: &str) -> Raw {
    let body = format!("{{\"name\": \"{name}\"}}");
    raw_request(
        Method::POST,
        &format!("{base}/rest-api/v3/cdn/warmup"),
        &[("content-type", "application/json")],
        body.into_bytes(),
    )
    .await
}

/// The row of `name` in an `/api/streams` listing, or null.
fn stream_row(streams: &serde_json::Value, name: &str) -> serde_json::Value {
    streams
        .as_array()
        .or_else(|| streams["streams"].as_array())
        .expect("a list of streams")
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_default()
}

/// Whether `base` lists the stream `name` in `/api/streams`.
async fn lists(base: &str, name: &str) -> bool {
    let streams = get_json(&format!("{base}/api/streams")).await;
    !stream_row(&streams, name).is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_on_another_node_gets_the_stream_pulled_and_an_unwatched_pull_ends() {
    let redis = RedisServer::start();
    let a = pulling_node(&redis.url());
    let b = pulling_node(&redis.url());
    let b_base = format!("http://{}", b.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    // Published nowhere: 404 at once, nothing pulled.
    let asked = Instant::now();
    let nowhere = post_sdp_offer(&format!("{b_base}/whep/nowhere"), Mode::Play, None).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND, "{}", nowhere.body);
    assert!(
        nowhere.body.starts_with("CDN stream not found"),
        "{}",
        nowhere.body
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // An SDK player is told what a WCS edge tells it, word for word.
    let b_ws = format!("ws://{}/", b.http_addr());
    match ClientSession::connect_ws(&b_ws, Mode::Play, "nowhere", &certificate, TIMEOUT).await {
        Err(ClientError::Refused(info)) => assert_eq!(info, "CDN stream not found"),
        other => panic!("{:?}", other.map(|_| "a session")),
    }

    let sender = common::publish_ws(&a, "live", &certificate).await;
    assert!(!lists(&b_base, "live").await, "b has no copy yet");

    // Right after the publish, one try: the player waits for the pull.
    let asked = Instant::now();
    let mut player = ClientSession::connect(&b_base, Mode::Play, "live", &certificate, TIMEOUT)
        .await
        .expect("b pulls the stream for its player");
    let answered = asked.elapsed();
    let first = player
        .recv_rtp(Duration::from_secs(5))
        .await
        .expect("media arrives through the pull");
    let first_packet = asked.elapsed();
    read_packet(&first).expect("pulled packet intact");
    for _ in 0..100 {
        let packet = player
            .recv_rtp(Duration::from_secs(2))
            .await
            .expect("media keeps arriving");
        read_packet(&packet).expect("pulled packet intact");
    }
    println!(
        "cold pull: WHEP answer after {} ms, first media packet after {} ms",
        answered.as_millis(),
        first_packet.as_millis()
    );
    assert_eq!(a.signalling().session_count(), 2, "a's publisher and relay");
    let a_streams = get_json(&format!("http://{}/api/streams", a.http_addr())).await;
    let row = stream_row(&a_streams, "live");
    assert_eq!(row["relays"][0]["state"], "up", "{row}");
    // An SDK player on b plays the same copy.
    let mut sdk = ClientSession::connect_ws(&b_ws, Mode::Play, "live", &certificate, TIMEOUT)
        .await
        .expect("an SDK player on b");
    let packet = sdk
        .recv_rtp(Duration::from_secs(5))
        .await
        .expect("SDK media");
    read_packet(&packet).expect("pulled packet intact");
    sdk.close().await.unwrap();
    assert_eq!(
        a.signalling().session_count(),
        2,
        "one relay for both players"
    );

    // The player leaves: after idle_pull_secs without one, b lets the pull go and a's relay
    // ends.
    player.close().await.unwrap();
    let left = Instant::now();
    while lists(&b_base, "live").await {
        assert!(
            left.elapsed() < Duration::from_secs(IDLE_PULL_SECS + 5),
            "the unwatched pull is still there after {:?}",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let released = left.elapsed();
    println!(
        "unwatched pull released {} ms after its last player left",
        released.as_millis()
    );
    assert!(
        released >= Duration::from_secs(IDLE_PULL_SECS) - Duration::from_millis(100),
        "released after {released:?}, before idle_pull_secs"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.signalling().session_count() != 1 {
        assert!(Instant::now() < deadline, "a's relay to b never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The warm-up list: pulled without a player, kept past idle_pull_secs, until the
    // publishing stops.
    let warm = warmup(&b_base, "nowhere").await;
    assert_eq!(warm.status, StatusCode::NOT_FOUND, "{}", warm.body);
    let warm = warmup(&b_base, "live").await;
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.body);
    assert!(warm.body.contains("\"pulled\""), "{}", warm.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lists(&b_base, "live").await {
        assert!(Instant::now() < deadline, "the warm-up never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(IDLE_PULL_SECS + 1)).await;
    assert!(
        lists(&b_base, "live").await,
        "a warm pull is kept without players"
    );
    sender.stop().await.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lists(&b_base, "live").await {
        assert!(
            Instant::now() < deadline,
            "the warm copy outlived its publishing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without Redis the owner of a name cannot be known: a play of a stream b does not have is
    // refused at once, not after Redis's timeout.
    drop(redis);
    let b_cluster = b.signalling().cluster.clone().expect("b is in a cluster");
    let deadline = Instant::now() + Duration::from_secs(8);
    while b_cluster.redis_up() {
        assert!(Instant::now() < deadline, "b never noticed Redis is gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = Instant::now();
    let refused = post_sdp_offer(&format!("{b_base}/whep/live"), Mode::Play, None).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.body);
    assert!(
        refused
            .body
            .starts_with("Failed to connect to origin stream: Redis is unreachable"),
        "{}",
        refused.body
    );
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    match ClientSession::connect_ws(&b_ws, Mode::Play, "live", &certificate, TIMEOUT).await {
        Err(ClientError::Refused(info)) => assert_eq!(info, "Failed to connect to origin stream"),
        other => panic!("{:?}", other.map(|_| "a session")),
    }
    a.stop();
    b.stop();
}
