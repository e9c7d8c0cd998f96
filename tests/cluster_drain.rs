//! SIGTERM drains a node of a dynamic CDN (`[cluster]`): its lease says DRAINING at once (so
//! no node sends viewers to it), it refuses new sessions with 503 and a reason, keeps the ones
//! it has, and exits once they end, not before.
//!
//! A real `redis-server` on a loopback port; everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

mod cluster_support;
use cluster_support::{ClusterNode, RedisServer};

#[test]
fn sigterm_drains_a_cluster_node_until_its_last_session_ends() {
    let redis = RedisServer::start();
    let mut node = ClusterNode::start(&redis.url(), "drain");
    let lease_key = format!("rtcdn:node:{}", node.id);
    let state = |redis: &RedisServer| -> Option<String> {
        let lease: serde_json::Value = serde_json::from_str(&redis.get(&lease_key)?).ok()?;
        lease["state"].as_str().map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&redis).as_deref() != Some("SERVING") {
        assert!(
            Instant::now() < deadline,
            "no SERVING lease: {:?}",
            redis.get(&lease_key)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A session that stays (a publisher that never connects lives connect_timeout_secs).
    let (status, location, body) = node.whip_publish("kept");
    assert_eq!(status, 201, "{body}");
    let location = location.expect("a resource");

    node.terminate();
    let deadline = Instant::now() + Duration::from_secs(3);
    while state(&redis).as_deref() != Some("DRAINING") {
        assert!(
            Instant::now() < deadline,
            "the lease never said DRAINING: {:?}\n{}",
            redis.get(&lease_key),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _, body) = node.whip_publish("new");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    assert!(
        !node.exited_within(Duration::from_secs(1)),
        "the node left while a session was still on it"
    );

    assert_eq!(node.whip_delete(&location), 200);
    assert!(
        node.exited_within(Duration::from_secs(5)),
        "the node did not exit once drained:\n{}",
        node.log_text()
    );
    assert!(
        node.log_text().contains("drained: no session left"),
        "{}",
        node.log_text()
    );
}
