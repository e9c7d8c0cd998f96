//! Routing players in a dynamic CDN (issue 14 step 4): an origin-only node and two edges
//! share a real `redis-server`.
//!
//! - `/lb?stream=NAME` answers a SERVING edge, the same one for a stream every time and from
//!   every node (players of a stream gather where its pull is), and different streams spread
//!   over both edges.
//! - A WHEP offer to the origin is redirected (307, query kept) to that edge, which pulls the
//!   stream for the player; `/rest-api/cdn/show_routes` on both nodes lists the route in WCS's
//!   shape and `/api/cdn` shows the pull on both sides.
//! - A draining edge is no longer chosen once its lease says so; an edge that dies is no
//!   longer chosen once its lease expires (the time is printed: BENCHMARKS.md's re-route
//!   time). With no edge serving, the origin plays the stream itself.
//!
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::config::cluster::ClusterRole;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};
use rtcdn_bench::media::read_packet;
use serde_json::Value;

mod common;
use common::{base_url, cluster_id, get_json, post_sdp_offer, raw_request, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(10);

fn cluster_node(redis_url: &str, roles: &[ClusterRole]) -> Node {
    common::pulling_node(redis_url, Some(roles), 60)
}

/// One WHEP play of "live" posted to `node` (no retry), its first packet received intact.
async fn play_once(node: &Node, certificate: &DtlsCertificate, what: &str) -> ClientSession {
    let mut player =
        ClientSession::connect(&base_url(node), Mode::Play, "live", certificate, TIMEOUT)
            .await
            .expect(what);
    let packet = player
        .recv_rtp(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("{what}: no media"));
    read_packet(&packet).expect("intact");
    player
}

/// `GET /lb` on `node` (with `?stream=` when given): the chosen node's id, or the status.
async fn lb(node: &Node, stream: Option<&str>) -> Result<String, StatusCode> {
    let url = match stream {
        Some(s) => format!("{}/lb?stream={s}", base_url(node)),
        None => format!("{}/lb", base_url(node)),
    };
    let answer = raw_request(Method::GET, &url, &[], Vec::new()).await;
    if answer.status != StatusCode::OK {
        return Err(answer.status);
    }
    let json: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert!(json["server"].is_string() && json["ws"].is_u64(), "{json}");
    assert!(json["whep"].as_str().unwrap().ends_with("/whep/"), "{json}");
    Ok(json["node"].as_str().expect("node id").to_owned())
}

/// Waits until `/lb` on `node` answers for `stream` with a node `accept` takes.
async fn wait_for_lb(
    node: &Node,
    stream: &str,
    limit: Duration,
    accept: impl Fn(&Result<String, StatusCode>) -> bool,
) -> Result<String, StatusCode> {
    let start = Instant::now();
    loop {
        let answer = lb(node, Some(stream)).await;
        if accept(&answer) || start.elapsed() > limit {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_are_routed_to_a_streams_edge_and_away_from_draining_or_dead_edges() {
    let redis = RedisServer::start();
    let origin = cluster_node(&redis.url(), &[ClusterRole::Origin]);
    let edge_a = cluster_node(&redis.url(), &[ClusterRole::Edge]);
    let edge_b = cluster_node(&redis.url(), &[ClusterRole::Edge]);
    let edges = [cluster_id(&edge_a), cluster_id(&edge_b)];

    // Every node's view lists both edges within a lease refresh or two.
    let both_known = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 && both_known.elapsed() < Duration::from_secs(8) {
        for i in 0..16 {
            if let Ok(id) = lb(&origin, Some(&format!("s{i}"))).await {
                seen.insert(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), 2, "16 streams spread over both edges: {seen:?}");
    assert!(seen.iter().all(|id| edges.contains(id)), "{seen:?}");

    // One stream, one edge: every time, from every node (once each has read both leases).
    let chosen = lb(&origin, Some("live")).await.expect("an edge");
    for node in [&origin, &edge_a, &edge_b] {
        let node: &Node = node;
        let answer = wait_for_lb(node, "live", Duration::from_secs(5), |a| {
            a.as_ref().is_ok_and(|id| *id == chosen)
        })
        .await;
        assert_eq!(answer, Ok(chosen.clone()));
        for _ in 0..5 {
            assert_eq!(lb(node, Some("live")).await, Ok(chosen.clone()));
        }
    }
    let (chosen_node, other_node) = if chosen == edges[0] {
        (edge_a, edge_b)
    } else {
        (edge_b, edge_a)
    };
    let other = cluster_id(&other_node);
    let chosen_node = &chosen_node;
    // Without a stream, either edge.
    assert!(edges.contains(&lb(&origin, None).await.expect("an edge")));

    // Publish on the origin; a WHEP offer there is sent to the stream's edge, query and all.
    let certificate = DtlsCertificate::generate().unwrap();
    let sender = common::publish_ws(&origin, "live", &certificate).await;
    let redirect = post_sdp_offer(
        &format!("{}/whep/live?key=k1", base_url(&origin)),
        Mode::Play,
        None,
    )
    .await;
    assert_eq!(
        redirect.status,
        StatusCode::TEMPORARY_REDIRECT,
        "{}",
        redirect.body
    );
    assert_eq!(
        redirect.headers["location"].to_str().unwrap(),
        format!("{}/whep/live?key=k1", base_url(chosen_node)),
    );
    // The bench client follows it; the edge pulls the stream for it.
    let player = play_once(
        &origin,
        &certificate,
        "a player through the origin's redirect",
    )
    .await;
    assert_eq!(
        chosen_node.signalling().session_count(),
        2,
        "relay and player on the edge"
    );
    assert_eq!(other_node.signalling().session_count(), 0);

    // The route, as WCS lists it, on both ends.
    let origin_id = cluster_id(&origin);
    let route = format!("1-{origin_id}-{chosen}");
    for node in [&origin, chosen_node] {
        let routes = get_json(&format!("{}/rest-api/cdn/show_routes", base_url(node))).await;
        assert_eq!(
            routes,
            serde_json::json!({ route.clone(): "live" }),
            "on {}",
            cluster_id(node)
        );
    }
    let routes = get_json(&format!(
        "{}/rest-api/cdn/show_routes",
        base_url(&other_node)
    ))
    .await;
    assert_eq!(routes, serde_json::json!({}));
    let cdn = get_json(&format!("{}/api/cdn", base_url(&origin))).await;
    assert_eq!(cdn["role"], "cluster");
    assert_eq!(cdn["pulls_out"][0]["node"], chosen.as_str(), "{cdn}");
    assert_eq!(cdn["pulls_out"][0]["state"], "up", "{cdn}");
    let cdn = get_json(&format!("{}/api/cdn", base_url(chosen_node))).await;
    assert_eq!(cdn["pulls_in"][0]["stream"], "live", "{cdn}");
    assert_eq!(cdn["pulls_in"][0]["from"], origin_id.as_str(), "{cdn}");
    assert_eq!(cdn["pulls_in"][0]["arrived"], true, "{cdn}");

    // The chosen edge drains: once its lease says so, the other edge is chosen.
    chosen_node.signalling().start_drain();
    let answer = wait_for_lb(&origin, "live", Duration::from_secs(5), |a| {
        a.as_ref().is_ok_and(|id| *id == other)
    })
    .await;
    assert_eq!(answer, Ok(other.clone()), "a draining edge is not chosen");
    player.close().await.unwrap();

    // The other edge dies without a word: chosen until its lease expires, then nobody is.
    let died = Instant::now();
    other_node.stop();
    let answer = wait_for_lb(&origin, "live", Duration::from_secs(10), |a| a.is_err()).await;
    let rerouted = died.elapsed();
    assert_eq!(answer, Err(StatusCode::SERVICE_UNAVAILABLE));
    assert!(rerouted <= Duration::from_secs(9), "{rerouted:?}");
    println!(
        "edge death: /lb stopped choosing it after {} ms",
        rerouted.as_millis()
    );

    // No edge serves: the origin plays the stream itself rather than refuse.
    let local = play_once(
        &origin,
        &certificate,
        "the origin plays it while no edge serves",
    )
    .await;
    local.close().await.unwrap();
    sender.stop().await.close().await.unwrap();
}
