//! A transit node dies in a dynamic CDN (issue 14 step 5): an origin, two transit nodes and an
//! edge of one group share a real `redis-server`. The edge's player gets the stream through
//! the transit node the stream hashes to; that node stops without a word. The edge keeps its
//! player, and once the dead node's lease has expired it pulls through the other transit node;
//! the player carries on in the same session, its numbering continuous. The time is printed.
//!
//! Everything is sent to 127.0.0.1 only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtcdn::config::cluster::ClusterRole;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};

mod common;
use common::{base_url, cluster_id, follow_numbering, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(10);

fn cluster_node(redis_url: &str, role: ClusterRole) -> Node {
    common::pulling_node(redis_url, Some(&[role]), 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_re_routes_through_another_transit_node_when_its_transit_node_dies() {
    let redis = RedisServer::start();
    let origin = cluster_node(&redis.url(), ClusterRole::Origin);
    let mut transits = vec![
        cluster_node(&redis.url(), ClusterRole::Transit),
        cluster_node(&redis.url(), ClusterRole::Transit),
    ];
    let edge = cluster_node(&redis.url(), ClusterRole::Edge);
    let ids: Vec<String> = transits.iter().map(cluster_id).collect();

    // The edge's view lists both transit nodes.
    let cluster = edge.signalling().cluster.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while cluster.view().serving(ClusterRole::Transit).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the edge never saw both transit nodes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chosen = cluster
        .choose_transit("live")
        .expect("a transit node")
        .id
        .to_string();
    let at = ids
        .iter()
        .position(|id| *id == chosen)
        .expect("one of ours");

    let certificate = DtlsCertificate::generate().unwrap();
    let sender = common::publish_ws(&origin, "live", &certificate).await;
    let mut player =
        ClientSession::connect(&base_url(&edge), Mode::Play, "live", &certificate, TIMEOUT)
            .await
            .expect("the edge pulls the stream through a transit node");
    let mut numbers = HashMap::new();
    let mut n = 0;
    follow_numbering(&mut player, &mut numbers, Duration::from_secs(5), |_| {
        n += 1;
        n == 50
    })
    .await;
    assert_eq!(n, 50, "media through origin → transit → edge");
    assert_eq!(
        transits[at].signalling().session_count(),
        2,
        "the chosen transit relays"
    );

    // The chosen transit node dies; the other one takes over once its lease has expired.
    let died = Instant::now();
    transits.remove(at).stop();
    let mut after = 0;
    let resumed = Instant::now() + Duration::from_secs(30);
    let mut resumed_after = None;
    follow_numbering(&mut player, &mut numbers, Duration::from_secs(12), |_| {
        if died.elapsed() > Duration::from_millis(500) {
            resumed_after.get_or_insert_with(|| died.elapsed());
            after += 1;
        }
        after == 50 || Instant::now() > resumed
    })
    .await;
    assert_eq!(
        after, 50,
        "the player carried on through the other transit node"
    );
    assert_eq!(
        transits[0].signalling().session_count(),
        2,
        "the other transit node relays now (its copy and its relay to the edge)"
    );
    println!(
        "transit failover: the edge player's media resumed {:.2} s after its transit node died",
        resumed_after.expect("resumed").as_secs_f64()
    );
    player.close().await.expect("the same player session");
    sender.stop().await.close().await.unwrap();
}
