//! Simulcast through a CDN (step 1): an origin relays a simulcast stream to an edge as one
//! plain stream of its highest layer. The bench client publishes layers `l`, `m`, `h` to the
//! origin; a player on the edge gets layer `h` only, from a keyframe on, numbered without a gap.
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode};

mod common;
use common::{cdn_pair, simulcast_video, SimulcastPublisher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_gets_the_highest_layer_of_a_simulcast_stream() {
    let (origin, edge) = cdn_pair();
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{}", edge.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let mut publisher = SimulcastPublisher::connect(&origin_base, "simcdn", &certificate).await;
    // Each round starts every layer on a keyframe: whenever the relay and the edge's player
    // start, a keyframe of theirs is close.
    let start = Instant::now();
    let mut player = None;
    while player.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the stream never appeared on the edge"
        );
        for layer in 0..3 {
            publisher.frame(layer, 1, true).await;
            publisher.frame(layer, 2, false).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        player = ClientSession::connect(&edge_base, Mode::Play, "simcdn", &certificate, timeout)
            .await
            .ok();
    }
    let mut player = player.unwrap();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(30) && got.len() < 60 {
        for layer in 0..3 {
            publisher.frame(layer, 1, true).await;
            publisher.frame(layer, 2, false).await;
        }
        while let Some(p) = player.recv_rtp(Duration::from_millis(30)).await {
            got.extend(simulcast_video(&p));
        }
    }
    assert!(
        got.len() >= 60,
        "the edge's player got {} packets",
        got.len()
    );
    assert!(got[0].2, "starts on a keyframe: {:?}", &got[..5]);
    assert!(
        got.iter().all(|&(_, layer, _)| layer == 2),
        "layer h only: {got:?}"
    );
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0.wrapping_add(1),
            "numbered without a gap"
        );
    }
    origin.stop();
    edge.stop();
}
