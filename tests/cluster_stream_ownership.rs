//! A stream name is published on one node of a dynamic CDN at a time: a publish on node A
//! claims the name in Redis (with an epoch that grows at every publish), a publish of the same
//! name on node B is refused as a taken name is on one node (WHIP 409, "Stream name is
//! already in use"), and once A's publisher leaves, B may publish it as a new epoch; each
//! change (and an access list change on the owner) goes out on the `rtcdn:events` channel. When
//! Redis restarts empty, B writes its claim back (same epoch) within a few seconds, and A is
//! refused again.
//!
//! A real `redis-server` on a loopback port; everything is sent to 127.0.0.1 only.

mod cluster_support;

use std::time::Duration;

use cluster_support::{http, wait_for, ClusterNode, RedisServer, ADMIN_TOKEN};

/// The owner and epoch of `stream` in Redis.
fn claim(redis: &RedisServer, stream: &str) -> Option<(String, u64)> {
    let raw = redis.get(&format!("rtcdn:stream:{stream}"))?;
    let json: serde_json::Value = serde_json::from_str(&raw).expect("a JSON claim");
    Some((json["node"].as_str()?.to_owned(), json["epoch"].as_u64()?))
}

#[test]
fn a_name_published_on_one_node_is_refused_on_another_until_it_is_unpublished() {
    let mut redis = RedisServer::start();
    let a = ClusterNode::start(&redis.url(), "a");
    let b = ClusterNode::start(&redis.url(), "b");
    let events = redis.events();

    let (status, location, body) = a.whip_publish("cam");
    assert_eq!(status, 201, "{body}\n{}", a.log_text());
    let (owner, first_epoch) = claim(&redis, "cam").expect("claimed on publish");
    assert_eq!(owner, a.id);

    let (status, _, body) = b.whip_publish("cam");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already in use"), "{body}");
    // The claim is refreshed while the publisher stays: still there after its TTL.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(claim(&redis, "cam"), Some((a.id.clone(), first_epoch)));
    assert_eq!(b.whip_publish("cam").0, 409);

    // A's publisher leaves: the claim is released at once and B may publish.
    assert_eq!(a.whip_delete(&location.expect("a Location")), 200);
    let released = wait_for(Duration::from_secs(3), || claim(&redis, "cam").is_none())
        .expect("released on unpublish");
    println!(
        "claim released {} ms after the publisher left",
        released.as_millis()
    );
    let (status, _, body) = b.whip_publish("cam");
    assert_eq!(status, 201, "{body}\n{}", b.log_text());
    let (owner, second_epoch) = claim(&redis, "cam").unwrap();
    assert_eq!(owner, b.id);
    assert!(second_epoch > first_epoch, "{second_epoch} > {first_epoch}");
    assert_eq!(a.whip_publish("cam").0, 409);
    // An access list change on the owner is announced (how many keys, never the keys).
    let (status, _, body) = http(
        b.http,
        "POST",
        "/rest-api/cdn/stream/access_list/add",
        &[
            ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
            ("content-type", "application/json"),
        ],
        r#"{"name": "cam", "keys": ["key-one", "key-two"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    // Each change went out on the events channel, in order.
    let stream_event = |event: &serde_json::Value| {
        (
            event["event"].as_str().unwrap_or_default().to_owned(),
            event["node"].as_str().unwrap_or_default().to_owned(),
            event["epoch"].as_u64(),
        )
    };
    let want = [
        ("stream_up".to_owned(), a.id.clone(), Some(first_epoch)),
        ("stream_down".to_owned(), a.id.clone(), None),
        ("stream_up".to_owned(), b.id.clone(), Some(second_epoch)),
        ("acl_changed".to_owned(), b.id.clone(), None),
    ];
    assert!(
        wait_for(Duration::from_secs(2), || events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["stream"] == "cam")
            .map(stream_event)
            .eq(want.iter().cloned()))
        .is_some(),
        "{:?}",
        events.lock().unwrap()
    );
    let acl_event = events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "acl_changed")
        .cloned()
        .unwrap();
    assert_eq!(acl_event["keys"], 2, "{acl_event}");
    assert!(!acl_event.to_string().contains("key-one"), "{acl_event}");

    // Redis restarts with nothing: B writes its claim back, with its epoch.
    redis.restart();
    let back = wait_for(Duration::from_secs(8), || {
        claim(&redis, "cam") == Some((b.id.clone(), second_epoch))
    })
    .unwrap_or_else(|| panic!("b's claim is not back; b's log:\n{}", b.log_text()));
    println!(
        "after a Redis restart, the claim was back in {} ms",
        back.as_millis()
    );
    assert!(back <= Duration::from_secs(5), "{back:?}");
    assert_eq!(a.whip_publish("cam").0, 409);
    // The epoch counter came back with it: the next publish still counts up.
    let counter: Option<u64> = redis.get("rtcdn:epoch:cam").and_then(|v| v.parse().ok());
    assert_eq!(counter, Some(second_epoch));
    assert!(b.log_text().contains("stream claim re-asserted"));
}

#[test]
fn a_stream_published_while_redis_is_down_is_accepted_at_once_and_claimed_when_it_returns() {
    let mut redis = RedisServer::start();
    let a = ClusterNode::start(&redis.url(), "a");
    redis.kill();
    // The node notices at its next lease write (every 2 s).
    assert!(
        wait_for(Duration::from_secs(5), || a
            .log_text()
            .contains("Redis is unreachable"))
        .is_some(),
        "{}",
        a.log_text()
    );
    let asked = std::time::Instant::now();
    let (status, _, body) = a.whip_publish("cam");
    assert_eq!(status, 201, "{body}");
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "the publish waited {:?} for Redis",
        asked.elapsed()
    );
    redis.restart();
    let claimed = wait_for(Duration::from_secs(8), || {
        claim(&redis, "cam").is_some_and(|(owner, _)| owner == a.id)
    })
    .unwrap_or_else(|| panic!("never claimed; a's log:\n{}", a.log_text()));
    println!("claimed {} ms after Redis came back", claimed.as_millis());
    assert!(claimed <= Duration::from_secs(5), "{claimed:?}");
}
