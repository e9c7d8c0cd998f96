//! The static CDN keeps an edge's players across an origin restart: the origin stops without
//! a word (its relay's connection closes, as when its process is killed), a new origin
//! relaying to the same edge comes up and the stream is published there again within the
//! edge's grace (15 s); the edge hands the new relay its players, which carry on in the same
//! session with their SSRCs and continuous sequence numbers. The edge runs two media cores,
//! so a player on another core than the stream's is re-attached too. Without a new copy
//! within the grace the players end with "Stopped by publisher stop".
//!
//! Everything is sent to 127.0.0.1 only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtcdn::config::cdn::CdnRole;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};

mod common;
use common::{
    base_url, cdn_node, cdn_origin_of, follow_numbering, get_json, publish_ws, Streaming,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// `node`'s `/api/streams` row of `name`, while it lists it.
async fn stream_row(node: &Node, name: &str) -> Option<serde_json::Value> {
    let streams = get_json(&format!("{}/api/streams", base_url(node))).await;
    streams
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_players_carry_on_when_the_origin_restarts_and_the_stream_is_published_again() {
    let edge = cdn_node(CdnRole::Edge, Vec::new());
    let origin = cdn_origin_of(&edge);
    let certificate = DtlsCertificate::generate().unwrap();
    let sender = publish_ws(&origin, "live", &certificate).await;

    // Players on both of the edge's cores, once the relay is there.
    let mut players = Vec::new();
    for _ in 0..4 {
        let player = loop {
            match ClientSession::connect(
                &base_url(&edge),
                Mode::Play,
                "live",
                &certificate,
                TIMEOUT,
            )
            .await
            {
                Ok(player) => break player,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        players.push(player);
    }
    let mut numbers: Vec<HashMap<_, _>> = vec![HashMap::new(); players.len()];
    for (player, tracks) in players.iter_mut().zip(&mut numbers) {
        let mut n = 0;
        follow_numbering(player, tracks, Duration::from_secs(5), |_| {
            n += 1;
            n == 50
        })
        .await;
        assert_eq!(n, 50, "every player got the relayed stream");
    }
    let row = stream_row(&edge, "live").await.expect("listed");
    let cores: std::collections::BTreeSet<u64> = row["players"]
        .as_array()
        .expect("players")
        .iter()
        .map(|p| p["core"].as_u64().expect("core"))
        .chain(row["core"].as_u64())
        .collect();
    assert_eq!(cores.len(), 2, "sessions on both cores of the edge: {row}");

    // The origin stops without a word (the publisher's session with it).
    let stopped = sender.stop().await;
    let died = Instant::now();
    origin.stop();
    drop(stopped);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let row = stream_row(&edge, "live")
        .await
        .expect("the edge keeps the stream for its players");
    assert_eq!(row["source"], "orphaned", "{row}");
    assert_eq!(row["players"].as_array().map(Vec::len), Some(4), "{row}");

    // A new origin comes up and the stream is published there.
    let origin = cdn_origin_of(&edge);
    let sender = Streaming::start(
        ClientSession::connect_ws(
            &format!("ws://{}/", origin.http_addr()),
            Mode::Publish,
            "live",
            &certificate,
            TIMEOUT,
        )
        .await
        .expect("publish on the new origin"),
        1_000_000,
    );
    for (player, tracks) in players.iter_mut().zip(&mut numbers) {
        let mut n = 0;
        follow_numbering(player, tracks, Duration::from_secs(10), |seq| {
            if seq >= 1_000_000 {
                n += 1;
            }
            n == 50
        })
        .await;
        assert_eq!(n, 50, "every player carried on with the new origin's media");
    }
    println!(
        "origin restart: every edge player had the new origin's media {:.2} s after the old one stopped",
        died.elapsed().as_secs_f64()
    );
    for player in players {
        player.close().await.expect("the same player session");
    }
    sender.stop().await.close().await.unwrap();

    // No new copy: the players end once the grace is over.
    let sender = publish_ws(&origin, "other", &certificate).await;
    let mut player = loop {
        match ClientSession::connect(&base_url(&edge), Mode::Play, "other", &certificate, TIMEOUT)
            .await
        {
            Ok(player) => break player,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    player
        .recv_rtp(Duration::from_secs(5))
        .await
        .expect("media");
    let stopped = sender.stop().await;
    origin.stop();
    drop(stopped);
    let lost = Instant::now();
    while stream_row(&edge, "other").await.is_some() {
        assert!(
            lost.elapsed() < rtcdn::control::registry::ORPHAN_GRACE + Duration::from_secs(3),
            "the orphan outlived its grace"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lost.elapsed() >= rtcdn::control::registry::ORPHAN_GRACE - Duration::from_millis(500));
    edge.stop();
}
