//! A node answers its players' NACKs from its own retransmission cache (issue 11, step 1).
//!
//! A synthetic publisher and four players on a node with two media cores, so players sit both
//! on the publisher's core and on the other one. Each player really loses some video packets on
//! the node→player hop (dropped before SRTP, as the network would) and NACKs them: the node sends
//! them again with the player's own sequence numbers and timestamps and intact payloads, and the
//! publisher hears no NACK for them. A packet older than the cache is still asked of the
//! publisher, in its own numbering. Everything is sent to 127.0.0.1 only.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn::media::retransmission_cache::CACHE_SLOTS;
use rtcdn_bench::client::{ClientSession, VIDEO_PT};
use rtcdn_bench::media::read_packet;

mod common;
use common::{
    core_stat, drain_rtp, nack, nack_lost, publish_and_play, rtp_seq, send, send_losing_video,
    test_node, wait_for_core_stat, warm_up_video_mappings,
};

const STREAM: &str = "rtx-cache";
const PLAYERS: usize = 4;

/// The sequence numbers the publisher was NACKed for its video within `window`.
async fn nacked_at_publisher(publisher: &mut ClientSession, window: Duration) -> Vec<u16> {
    let mut nacked = Vec::new();
    let deadline = Instant::now() + window;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(packet) = publisher.recv_rtcp(left).await else {
            break;
        };
        for rtcp in rtp::rtcp::RtcpIter::new(&packet).flatten() {
            if let rtp::rtcp::Rtcp::Nack(n) = rtcp {
                if n.media_ssrc.0 == publisher.video_ssrc {
                    nacked.extend(n.lost());
                }
            }
        }
    }
    nacked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_nacks_are_answered_from_the_cache_on_their_own_core() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (mut publisher, mut players) =
        publish_and_play::<PLAYERS>(&base, STREAM, &certificate).await;
    // Each core has its own socket: a player on the publisher's core talks to the same address.
    let same_core: Vec<bool> = players
        .iter()
        .map(|p| p.remote_addr() == publisher.remote_addr())
        .collect();
    assert!(
        same_core.contains(&true) && same_core.contains(&false),
        "players on both cores: {same_core:?}"
    );

    // Warm up until every player receives video, and learn how it numbers it.
    let start = Instant::now();
    let mut seq = 0u64;
    let within = Duration::from_secs(10);
    let mappings =
        warm_up_video_mappings(&mut publisher, &mut players, &mut seq, start, within).await;
    while publisher
        .recv_rtcp(Duration::from_millis(50))
        .await
        .is_some()
    {}

    // Every player loses every third of the next video packets on its way from the node.
    let sending = (&mut seq, start);
    let lost = send_losing_video(&mut publisher, &mut players, &mappings, sending, 60, 3).await;
    for (i, player) in players.iter().enumerate() {
        assert_eq!(player.counters().rtp_lost, lost.len() as u64, "player {i}");
    }

    // Each NACKs what it lost, in its own numbering.
    nack_lost(&mut players, &mappings, &lost).await;
    for (i, (player, mapping)) in players.iter_mut().zip(&mappings).enumerate() {
        let mut repaired = BTreeSet::new();
        while repaired.len() < lost.len() {
            let packet = player
                .recv_rtp(Duration::from_secs(2))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "player {i} (same core as the publisher: {}) got {repaired:?} of {lost:?}",
                        same_core[i]
                    )
                });
            let header = rtp::RtpHeader::parse(&packet).unwrap();
            let (probe, pt) = read_packet(&packet).expect("retransmission intact");
            assert_eq!(pt, VIDEO_PT);
            assert_eq!(packet.len(), 1200, "the whole packet");
            assert!(lost.contains(&probe.sequence), "player {i}: {probe:?}");
            mapping.assert_numbers(&header, probe.sequence, i);
            assert!(repaired.insert(probe.sequence), "player {i}: twice");
        }
        assert_eq!(player.counters().srtp_failures, 0, "player {i}");
    }
    let nacked = nacked_at_publisher(&mut publisher, Duration::from_secs(1)).await;
    assert!(
        nacked.is_empty(),
        "the cache answered, yet the publisher was asked for {nacked:?}"
    );
    let answered = (PLAYERS * lost.len()) as u64;
    assert_eq!(
        wait_for_core_stat(&base, "retransmissions_sent", answered).await,
        answered
    );
    assert_eq!(core_stat(&base, "nacks_forwarded_upstream").await, 0);

    // Once more video than the cache holds went by, the first lost packet is a miss: one
    // player on each core asks again, and the publisher is asked, by its own number.
    let old = lost[0];
    let later = seq + (CACHE_SLOTS as u64) * 5 / 4 + 20;
    while seq < later {
        for _ in 0..50 {
            send(&mut publisher, &mut seq, 2, start).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drain_rtp(&mut players, Duration::from_millis(100)).await;
    let askers = [
        same_core.iter().position(|s| *s).unwrap(),
        same_core.iter().position(|s| !*s).unwrap(),
    ];
    for &i in &askers {
        let seqs = [mappings[i].seq(old)];
        players[i]
            .send_rtcp(&nack(mappings[i].ssrc, &seqs))
            .await
            .unwrap();
    }
    let nacked = nacked_at_publisher(&mut publisher, Duration::from_secs(1)).await;
    assert_eq!(
        nacked,
        [rtp_seq(old), rtp_seq(old)],
        "each miss reached the publisher"
    );
    assert_eq!(
        wait_for_core_stat(&base, "nacks_forwarded_upstream", 2).await,
        2
    );
    assert_eq!(core_stat(&base, "retransmissions_sent").await, answered);
    for &i in &askers {
        assert!(
            players[i]
                .recv_rtp(Duration::from_millis(200))
                .await
                .is_none(),
            "player {i} got something for a packet the node no longer has"
        );
    }
    node.stop();
}
