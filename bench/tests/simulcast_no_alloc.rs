//! Forwarding a simulcast stream makes no heap allocation either: each layer's packets in,
//! mapped to their layer, cached per layer, handed to the other core, sent to the players of
//! that layer only, including a player's switch to another layer at its keyframe.
//!
//! The node runs in this process with the counting allocator the `rtcdn` binary installs; each
//! media core reports the allocations it made while handling media in `/api/stats`.
//! Everything is sent to 127.0.0.1 only.

use std::alloc::System;
use std::time::{Duration, Instant};

use rtcdn::alloc_count::CountingAllocator;
use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode, OfferOptions};

mod common;
use common::{core_stat, simulcast_video, test_node, CoreStats, SimulcastPublisher};

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

/// (media allocations, packets sent) summed over the cores.
async fn totals(base: &str) -> (u64, u64) {
    let stats = CoreStats::settled(base).await;
    (stats.sum("media_allocations"), stats.sum("rtp_sent"))
}

/// Packets the players got, per layer (the payload names it).
async fn drain(players: &mut [ClientSession]) -> [usize; 3] {
    let mut got = [0; 3];
    for player in players {
        while let Some(p) = player.recv_rtp(Duration::from_millis(50)).await {
            if let Some((_, layer @ 0..=2, _)) = simulcast_video(&p) {
                got[usize::from(layer)] += 1;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_forwarding_allocates_nothing_on_the_media_cores() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let mut publisher = SimulcastPublisher::connect(&base, "sim", &certificate).await;
    let start = Instant::now();
    while core_stat(&base, "rtp_received").await < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no media arrived"
        );
        for layer in 0..3 {
            publisher.frame(layer, 1, true).await;
        }
    }
    let mut players = Vec::new();
    for layer in [Some("l"), None, Some("l"), None] {
        let options = OfferOptions {
            layer,
            ..OfferOptions::default()
        };
        players.push(
            ClientSession::connect_with(&base, Mode::Play, "sim", &certificate, timeout, options)
                .await
                .expect("play"),
        );
    }
    // Everything once per session and stream happens before the window: first packets,
    // caches, a first switch (h pauses, the default players move to m, h resumes).
    for _ in 0..5 {
        for layer in 0..3 {
            publisher.frame(layer, 1, true).await;
            publisher.frame(layer, 2, false).await;
        }
    }
    assert!(drain(&mut players).await.iter().sum::<usize>() > 0);
    let (before, sent_before) = totals(&base).await;

    // The window: live frames, then h pauses long enough for the default players to move to
    // m at its keyframe, then h resumes and they move back at h's keyframe.
    for _ in 0..20 {
        for layer in 0..3 {
            publisher.frame(layer, 2, false).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_millis(2500) {
        publisher.frame(0, 1, false).await;
        publisher.frame(1, 1, false).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.frame(1, 2, true).await;
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_millis(1200) {
        for layer in 0..3 {
            publisher.frame(layer, 1, false).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.frame(2, 2, true).await;
    for _ in 0..20 {
        for layer in 0..3 {
            publisher.frame(layer, 2, false).await;
        }
    }
    let got = drain(&mut players).await;
    let (after, sent_after) = totals(&base).await;
    assert!(
        got[0] > 100 && got[2] > 50,
        "the players got {got:?} in the window"
    );
    assert!(
        got[1] > 0,
        "the default players moved to m for a while: {got:?}"
    );
    let total: usize = got.iter().sum();
    assert!(sent_after - sent_before >= total as u64);
    assert_eq!(
        after - before,
        0,
        "allocations on the forwarding path while forwarding {} packets",
        sent_after - sent_before
    );
    drop(node);
}
