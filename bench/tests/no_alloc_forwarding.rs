//! The whole forwarding path of a running node makes no heap allocation: SRTP in, decrypt,
//! fan-out to players on the publisher's core and across the hand-off ring to another core,
//! rewrite and encrypt per player, plus the RTCP that rides along (sender reports translated to
//! every player, keyframe requests relayed to the publisher, NACKs answered from the cores'
//! retransmission caches while the packets are recent and relayed to the publisher once they
//! are older than the caches).
//!
//! The node runs in this process with the same counting allocator the `rtcdn` binary installs;
//! each media core counts the allocations it makes while handling media and reports them in
//! `/api/stats`.

use std::alloc::System;
use std::time::{Duration, Instant};

use rtcdn::alloc_count::CountingAllocator;
use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::VIDEO_PT;
use rtcdn_bench::media::read_packet;

mod common;
use common::{drain_rtp, publish_and_play, send, test_node, warm_up, CoreStats};

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

const PLAYERS: usize = 4;
const MEASURED: u64 = 1500;

#[derive(Debug, Default, Clone, Copy)]
struct CoreTotals {
    rtp_received: u64,
    rtp_sent: u64,
    allocations: u64,
    media_allocations: u64,
    cores_with_sessions: usize,
}

async fn core_totals(base: &str) -> CoreTotals {
    let stats = CoreStats::settled(base).await;
    CoreTotals {
        rtp_received: stats.sum("rtp_received"),
        rtp_sent: stats.sum("rtp_sent"),
        allocations: stats.sum("allocations"),
        media_allocations: stats.sum("media_allocations"),
        cores_with_sessions: stats.cores_with("sessions"),
    }
}

fn rtcp(packet: rtp::rtcp::Rtcp<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; packet.encoded_len()];
    let n = packet.write_to(&mut buf).expect("RTCP fits");
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_allocates_nothing_on_the_media_cores() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (mut publisher, mut players) =
        publish_and_play::<PLAYERS>(&base, "noalloc", &certificate).await;

    // Warm up until every player receives video, and remember each player's video SSRC and
    // latest sequence number for the NACK below.
    let start = Instant::now();
    let mut seq = 0u64;
    let within = Duration::from_secs(10);
    let video = warm_up(
        &mut publisher,
        &mut players,
        &mut seq,
        start,
        within,
        |packet| {
            let header = rtp::RtpHeader::parse(packet).unwrap();
            (header.payload_type().value() == VIDEO_PT)
                .then(|| (header.ssrc().0, header.sequence_number()))
        },
    )
    .await;
    // Everything that happens once per session or stream (first sender report, first keyframe
    // request, buffers of the hand-off and of RTCP) has happened once before the window.
    let video_ssrc = publisher.video_ssrc;
    let sr = |n: u64| {
        rtcp(rtp::rtcp::Rtcp::SenderReport(rtp::rtcp::SenderReport {
            sender_ssrc: rtp::Ssrc(video_ssrc),
            ntp_time: (0xe000_0000u64 + n) << 32,
            rtp_time: (n as u32).wrapping_mul(3000),
            packet_count: n as u32,
            octet_count: n as u32 * 1200,
            reports: rtp::rtcp::Items::default(),
        }))
    };
    let requests: Vec<Vec<Vec<u8>>> = video
        .iter()
        .map(|&(ssrc, last)| {
            let pli = rtp::rtcp::Pli {
                sender_ssrc: rtp::Ssrc(7),
                media_ssrc: rtp::Ssrc(ssrc),
            };
            let pairs = [rtp::rtcp::NackPair {
                pid: last,
                blp: 0b101,
            }];
            let nack = rtp::rtcp::Nack {
                sender_ssrc: rtp::Ssrc(7),
                media_ssrc: rtp::Ssrc(ssrc),
                pairs: rtp::rtcp::Items::from_slice(&pairs),
            };
            vec![
                rtcp(rtp::rtcp::Rtcp::Pli(pli)),
                rtcp(rtp::rtcp::Rtcp::Nack(nack)),
            ]
        })
        .collect();
    publisher.send_rtcp(&sr(seq)).await.unwrap();
    for (player, packets) in players.iter_mut().zip(&requests) {
        for p in packets {
            player.send_rtcp(p).await.unwrap();
        }
    }
    for _ in 0..100 {
        send(&mut publisher, &mut seq, 0, start).await;
    }
    drain_rtp(&mut players, Duration::from_millis(50)).await;

    let before = core_totals(&base).await;
    assert_eq!(
        before.cores_with_sessions, 2,
        "the test wants sessions on both cores: {before:?}"
    );
    assert!(
        before.allocations > 0,
        "the cores count allocations (session setup makes some): {before:?}"
    );
    let first = seq;
    for i in 0..MEASURED {
        send(&mut publisher, &mut seq, 0, start).await;
        if i % 300 == 150 {
            publisher.send_rtcp(&sr(seq)).await.unwrap();
            for (player, packets) in players.iter_mut().zip(&requests) {
                for p in packets {
                    player.send_rtcp(p).await.unwrap();
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    // Every player gets every measured packet, so the window really forwarded them.
    for (i, player) in players.iter_mut().enumerate() {
        let mut got = 0;
        while got < MEASURED {
            let packet = player
                .recv_rtp(Duration::from_secs(3))
                .await
                .unwrap_or_else(|| panic!("player {i} got {got} of {MEASURED}"));
            let (probe, _) = read_packet(&packet).unwrap();
            if probe.sequence >= first {
                got += 1;
            }
        }
    }
    let after = core_totals(&base).await;
    let forwarded = after.rtp_sent - before.rtp_sent;
    assert!(
        forwarded >= MEASURED * PLAYERS as u64,
        "forwarded {forwarded}: {before:?} -> {after:?}"
    );
    assert!(after.rtp_received - before.rtp_received >= MEASURED);
    assert_eq!(
        after.media_allocations - before.media_allocations,
        0,
        "allocations on the forwarding path while forwarding {forwarded} packets ({} on the cores in all)",
        after.allocations - before.allocations
    );
    drop(node);
}
