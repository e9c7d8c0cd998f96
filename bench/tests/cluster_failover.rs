//! Origin failover in a dynamic CDN (issue 14 step 5): two origins and an edge share a real
//! `redis-server`. A stream published on origin A is pulled by the edge for a WHEP player;
//! A dies without a word (its relay's connection just closes), the publisher publishes the
//! same name on origin B as soon as the cluster lets it (A's claim expires), and the edge's
//! player keeps playing in the same session: the edge kept its players, looked for the
//! stream's new owner, pulled B's copy and handed it the players, with the player's SSRCs,
//! sequence numbers and timestamps carrying on. The playback gap is printed (BENCHMARKS.md).
//!
//! Everything is sent to 127.0.0.1 only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtcdn::config::cluster::ClusterRole;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};

mod common;
use common::{base_url, follow_numbering, get_json, RedisServer, Streaming};

const TIMEOUT: Duration = Duration::from_secs(10);

fn cluster_node(redis_url: &str, roles: &[ClusterRole]) -> Node {
    common::pulling_node(redis_url, Some(roles), 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_players_keep_playing_when_the_origin_dies_and_the_stream_is_published_anew() {
    let redis = RedisServer::start();
    let origin_a = cluster_node(&redis.url(), &[ClusterRole::Origin]);
    let origin_b = cluster_node(&redis.url(), &[ClusterRole::Origin]);
    let edge = cluster_node(&redis.url(), &[ClusterRole::Edge]);
    let certificate = DtlsCertificate::generate().unwrap();

    let sender = common::publish_ws(&origin_a, "live", &certificate).await;
    // The edge pulls the stream from A for its player.
    let mut player =
        ClientSession::connect(&base_url(&edge), Mode::Play, "live", &certificate, TIMEOUT)
            .await
            .expect("the edge plays the stream it pulls");
    let mut tracks = HashMap::new();
    let mut received = 0;
    follow_numbering(&mut player, &mut tracks, Duration::from_secs(5), |_| {
        received += 1;
        received == 200
    })
    .await;
    assert_eq!(received, 200, "the player got the stream from A");
    let ssrcs: Vec<u32> = tracks.keys().copied().collect();

    // A dies. Its publisher's connection dies with it (kept open here until A is gone, so
    // nothing unpublishes: a process killed says nothing either).
    let stopped = sender.stop().await;
    let died = Instant::now();
    origin_a.stop();
    drop(stopped);

    // The publisher publishes again on B, refused while A's claim lives.
    let republished = loop {
        let ws = format!("ws://{}/", origin_b.http_addr());
        match ClientSession::connect_ws(&ws, Mode::Publish, "live", &certificate, TIMEOUT).await {
            Ok(publisher) => break publisher,
            Err(e) => {
                assert!(
                    died.elapsed() < Duration::from_secs(12),
                    "B never took the name: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let published_again = died.elapsed();
    let sender = Streaming::start(republished, 1_000_000);

    // The same player session carries on with B's media, numbers continuous.
    let mut gap = None;
    let mut after = 0;
    follow_numbering(&mut player, &mut tracks, Duration::from_secs(12), |n| {
        if n >= 1_000_000 {
            gap.get_or_insert_with(|| died.elapsed());
            after += 1;
        }
        after == 200
    })
    .await;
    let gap = gap.expect("the player got B's media in the same session");
    assert_eq!(after, 200);
    let mut now_ssrcs: Vec<u32> = tracks.keys().copied().collect();
    let mut before = ssrcs.clone();
    now_ssrcs.sort_unstable();
    before.sort_unstable();
    assert_eq!(now_ssrcs, before, "the player's SSRCs stayed the same");
    println!(
        "origin failover: published again on B {:.2} s after A died; the edge player's media \
         resumed {:.2} s after A died ({:.2} s after the new publish)",
        published_again.as_secs_f64(),
        gap.as_secs_f64(),
        (gap - published_again).as_secs_f64()
    );
    assert!(
        gap - published_again < Duration::from_secs(5),
        "the edge re-pulled within a couple of seconds of the new publish"
    );

    // The edge lists the stream as a relayed copy again, with its one player.
    let streams = get_json(&format!("{}/api/streams", base_url(&edge))).await;
    let row = streams
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "live"))
        .cloned()
        .unwrap_or_else(|| panic!("{streams}"));
    assert_eq!(row["source"], "relay", "{row}");

    player
        .close()
        .await
        .expect("the player's session lived on: its DELETE found it");
    sender.stop().await.close().await.unwrap();
    origin_b.stop();
    edge.stop();
}
