//! Transit tiers in a dynamic CDN (issue 14 step 3): an origin, a transit node and two edges
//! of one group share a real `redis-server`. Players on both edges of a stream published on
//! the origin get it through the transit node: the origin relays it once (to the transit
//! node), the transit node relays its copy to each edge, and `show_routes` shows the chain.
//! An edge is never asked to relay its copy on (loop prevention: only transit nodes relay a
//! copy). When the players leave, the edges release their pulls, then the transit node its own,
//! and the origin's relay ends.
//!
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::auth::RelayAuth;
use rtcdn::config::cluster::ClusterRole;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};
use rtcdn_bench::media::read_packet;

mod common;
use common::{base_url, cluster_id, get_json, raw_request, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_PULL_SECS: u64 = 2;

fn cluster_node(redis_url: &str, role: ClusterRole) -> Node {
    common::pulling_node(redis_url, Some(&[role]), IDLE_PULL_SECS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_pull_through_their_groups_transit_node_and_release_down_the_chain() {
    let redis = RedisServer::start();
    let origin = cluster_node(&redis.url(), ClusterRole::Origin);
    let transit = cluster_node(&redis.url(), ClusterRole::Transit);
    let edges = [
        cluster_node(&redis.url(), ClusterRole::Edge),
        cluster_node(&redis.url(), ClusterRole::Edge),
    ];
    let (o, t) = (cluster_id(&origin), cluster_id(&transit));
    let e: Vec<String> = edges.iter().map(cluster_id).collect();

    // Both edges' views list the transit node (a lease write and a view read or two).
    let deadline = Instant::now() + Duration::from_secs(8);
    for edge in &edges {
        let cluster = edge.signalling().cluster.clone().unwrap();
        while cluster.choose_transit("live").map(|n| n.id.to_string()) != Some(t.clone()) {
            assert!(
                Instant::now() < deadline,
                "an edge never saw the transit node"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let certificate = DtlsCertificate::generate().unwrap();
    let sender = common::publish_ws(&origin, "live", &certificate).await;

    let mut players = Vec::new();
    for edge in &edges {
        let asked = Instant::now();
        let mut player =
            ClientSession::connect(&base_url(edge), Mode::Play, "live", &certificate, TIMEOUT)
                .await
                .expect("the edge pulls the stream through the transit node");
        for _ in 0..50 {
            let packet = player
                .recv_rtp(Duration::from_secs(5))
                .await
                .expect("media through origin → transit → edge");
            read_packet(&packet).expect("intact after two relays");
        }
        println!(
            "pull through a transit node: 50 packets {} ms after the request",
            asked.elapsed().as_millis()
        );
        players.push(player);
    }
    assert_eq!(
        origin.signalling().session_count(),
        2,
        "publisher and one relay"
    );
    assert_eq!(
        transit.signalling().session_count(),
        3,
        "its copy and a relay per edge"
    );
    for edge in &edges {
        assert_eq!(
            edge.signalling().session_count(),
            2,
            "its copy and its player"
        );
    }

    // The chain in show_routes: origin → transit, transit → each edge.
    let routes = get_json(&format!("{}/rest-api/cdn/show_routes", base_url(&origin))).await;
    assert_eq!(routes, serde_json::json!({ format!("1-{o}-{t}"): "live" }));
    let routes = get_json(&format!("{}/rest-api/cdn/show_routes", base_url(&transit))).await;
    let routes = routes.as_object().expect("an object");
    assert_eq!(routes.len(), 3, "{routes:?}");
    for (from, to) in [(&t, &e[0]), (&t, &e[1]), (&o, &t)] {
        assert!(
            routes
                .iter()
                .any(|(id, stream)| id.ends_with(&format!("-{from}-{to}")) && stream == "live"),
            "{from} → {to} missing in {routes:?}"
        );
    }
    let routes = get_json(&format!("{}/rest-api/cdn/show_routes", base_url(&edges[0]))).await;
    assert_eq!(
        routes,
        serde_json::json!({ format!("1-{t}-{}", e[0]): "live" })
    );

    // An edge relays no copy on: a pull asked of it is refused.
    let token = format!(
        "Bearer {}",
        RelayAuth::new(common::CLUSTER_SECRET).mint(&e[1])
    );
    let body = format!("{{\"name\": \"live\", \"node\": \"{}\"}}", e[1]);
    let refused = raw_request(
        Method::POST,
        &format!("{}/rest-api/cdn/pull", base_url(&edges[0])),
        &[
            ("content-type", "application/json"),
            ("authorization", &token),
        ],
        body.into_bytes(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert_eq!(
        edges[0].signalling().session_count(),
        2,
        "no relay from an edge"
    );

    // The players leave: the edges release, then the transit node, then the origin's relay
    // ends.
    for player in players {
        player.close().await.unwrap();
    }
    let left = Instant::now();
    while origin.signalling().session_count() != 1 {
        assert!(
            left.elapsed() < Duration::from_secs(3 * IDLE_PULL_SECS + 6),
            "the origin still relays {:?} after the players left",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left.elapsed() >= Duration::from_secs(2 * IDLE_PULL_SECS) - Duration::from_millis(200),
        "the transit node released before its edges could: {:?}",
        left.elapsed()
    );
    assert_eq!(transit.signalling().session_count(), 0);
    for edge in &edges {
        assert_eq!(edge.signalling().session_count(), 0);
    }
    sender.stop().await.close().await.unwrap();
}
