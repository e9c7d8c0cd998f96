//! Nodes of a dynamic CDN (`[cluster]`) find each other in Redis: two rtcdn processes list
//! each other in `/rest-api/cdn/show_nodes` (an admin endpoint); a node killed with SIGKILL
//! leaves the list once its lease expires (about 6 s; the time is printed), and the index of
//! live nodes is pruned of it; and when Redis is gone for a while and comes back empty, the
//! living nodes say so and write their leases back within a few seconds.
//!
//! A real `redis-server` on a loopback port; everything is sent to 127.0.0.1 only.

mod cluster_support;

use std::time::Duration;

use cluster_support::{http, wait_for, ClusterNode, RedisServer, ADMIN_TOKEN};

#[test]
fn nodes_see_each_other_a_killed_node_expires_and_leases_return_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let a = ClusterNode::start(&redis.url(), "a");
    let mut b = ClusterNode::start(&redis.url(), "b");
    assert!(
        a.id.starts_with("a-") && b.id.starts_with("b-"),
        "{} {}",
        a.id,
        b.id
    );

    // An admin endpoint: no token, no list.
    let (status, _, _) = http(a.http, "GET", "/rest-api/cdn/show_nodes", &[], "");
    assert_eq!(status, 401);
    let seen = wait_for(Duration::from_secs(10), || {
        a.show_node_ids() == [b.id.clone()] && b.show_node_ids() == [a.id.clone()]
    });
    assert!(
        seen.is_some(),
        "a: {:?}, b: {:?}",
        a.show_node_ids(),
        b.show_node_ids()
    );
    // /metrics says so too: Redis answers, two live nodes (this one included).
    assert!(
        wait_for(Duration::from_secs(5), || metric(&a, "rtcdn_cluster_nodes")
            == Some(2.0))
        .is_some(),
        "{:?}",
        metric(&a, "rtcdn_cluster_nodes")
    );
    assert_eq!(metric(&a, "rtcdn_cluster_redis_up"), Some(1.0));
    // WCS's POST form answers the same, with WCS's fields.
    let (status, _, body) = http(
        a.http,
        "POST",
        "/rest-api/cdn/show_nodes",
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        "{}",
    );
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let node = &nodes[0];
    assert_eq!(node["id"], b.id.as_str(), "{body}");
    assert_eq!(node["globalState"], "ACTIVE");
    assert_eq!(node["processingState"], "NEW_STREAMS_ALLOWED");
    assert_eq!(node["role"], "ORIGIN,EDGE");
    assert_eq!(node["state"], "SERVING");
    assert_eq!(
        node["ws"].as_str(),
        Some(format!("ws://127.0.0.1:{}/", b.http.port()).as_str())
    );

    // SIGKILL: b never says goodbye; its lease runs out.
    b.kill();
    let gone = wait_for(Duration::from_secs(10), || a.show_node_ids().is_empty())
        .expect("a killed node leaves show_nodes");
    println!(
        "a node killed with SIGKILL left show_nodes after {} ms",
        gone.as_millis()
    );
    // The lease lives 6 s past its last refresh, which came before the kill; the margin is
    // for the polling on a busy machine.
    assert!(gone <= Duration::from_secs(7), "{gone:?}");
    // Its key has expired, and a's next lease write prunes it from the index.
    assert_eq!(redis.get(&format!("rtcdn:node:{}", b.id)), None);
    let pruned = wait_for(Duration::from_secs(3), || {
        redis::cmd("ZSCORE")
            .arg("rtcdn:nodes")
            .arg(&b.id)
            .query::<Option<f64>>(&mut redis.connection())
            .unwrap()
            .is_none()
    });
    assert!(pruned.is_some(), "b stays in the index");

    // Redis goes away (a's next lease write, within 2 s, notices and says so) and comes back
    // with nothing: a's lease is back within a few seconds, and a node that joins then sees it.
    redis.kill();
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log_text()
            .contains("Redis is unreachable"))
        .is_some(),
        "{}",
        a.log_text()
    );
    assert_eq!(metric(&a, "rtcdn_cluster_redis_up"), Some(0.0));
    redis.restart();
    let key = format!("rtcdn:node:{}", a.id);
    let back = wait_for(Duration::from_secs(8), || redis.get(&key).is_some())
        .unwrap_or_else(|| panic!("a's lease is not back; a's log:\n{}", a.log_text()));
    println!(
        "after a Redis restart, the lease was back in {} ms",
        back.as_millis()
    );
    assert!(back <= Duration::from_secs(5), "{back:?}");
    let c = ClusterNode::start(&redis.url(), "c");
    assert!(
        wait_for(Duration::from_secs(5), || c.show_node_ids()
            == [a.id.clone()])
        .is_some(),
        "c sees {:?}",
        c.show_node_ids()
    );
    let log = a.log_text();
    assert!(log.contains("Redis answers again"), "{log}");
}

/// A sample without labels from `node`'s `/metrics`.
fn metric(node: &ClusterNode, name: &str) -> Option<f64> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, body) = http(
        node.http,
        "GET",
        "/metrics",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
