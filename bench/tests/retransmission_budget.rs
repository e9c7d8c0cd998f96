//! A player that NACKs in a loop is held to its resend budget: the node sends it at most a
//! burst (and then the rate) of packets again from its cache, drops the rest without asking the
//! publisher, and another player's NACK is still answered. Without the budget, one player could
//! make its core spend its time re-encrypting for it.
//!
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn::session::{RESEND_BURST, RESEND_RATE_PER_SEC};
use rtcdn_bench::client::{ClientSession, VIDEO_PT};
use rtcdn_bench::media::read_packet;

mod common;
use common::{core_stat, nack, publish_and_play, send, test_node};

/// The SSRC and sequence numbers of the video packets a player has received since last asked.
async fn received_video(player: &mut ClientSession) -> Option<(u32, Vec<u16>)> {
    let mut got: Option<(u32, Vec<u16>)> = None;
    while let Some(packet) = player.recv_rtp(Duration::from_millis(20)).await {
        let (_, pt) = read_packet(&packet).expect("packet intact");
        if pt == VIDEO_PT {
            let header = rtp::RtpHeader::parse(&packet).unwrap();
            let (_, seqs) = got.get_or_insert((header.ssrc().0, Vec::new()));
            seqs.push(header.sequence_number());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_nacking_in_a_loop_is_held_to_its_budget() {
    let node = test_node(1);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let (mut publisher, [mut flooder, mut other]) =
        publish_and_play(&base, "budget", &certificate).await;
    // Until both players receive video, then a little more so that 16 recent packets are
    // cached and were written to them.
    let start = Instant::now();
    let mut seq = 0;
    let (mut flooder_seen, mut other_seen) = (None, None);
    while flooder_seen.is_none() || other_seen.is_none() {
        assert!(start.elapsed() < timeout, "players never received video");
        for _ in 0..40 {
            send(&mut publisher, &mut seq, 0, start).await;
        }
        flooder_seen = flooder_seen.or(received_video(&mut flooder).await);
        other_seen = other_seen.or(received_video(&mut other).await);
    }
    for _ in 0..40 {
        send(&mut publisher, &mut seq, 0, start).await;
    }
    let (flooder_ssrc, flooder_seqs) = received_video(&mut flooder).await.expect("video");
    let (other_ssrc, other_seqs) = received_video(&mut other).await.expect("video");
    let other_last = *other_seqs.last().unwrap();

    // 1,600 resend requests for 16 packets it has, in a tight loop.
    let recent = &flooder_seqs[flooder_seqs.len() - 16..];
    let flood = nack(flooder_ssrc, recent);
    let flood_started = Instant::now();
    for _ in 0..100 {
        flooder.send_rtcp(&flood).await.unwrap();
    }
    // The client drops copies of packets it has (SRTP replays), so the node's count tells.
    let elapsed = flood_started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resent = core_stat(&base, "retransmissions_sent").await;
    let allowed = RESEND_BURST + RESEND_RATE_PER_SEC * (elapsed.as_millis() as u64 + 999) / 1000;
    assert!(
        resent <= allowed,
        "{resent} packets sent again in {elapsed:?}, more than the budget's {allowed}"
    );
    assert!(
        resent >= RESEND_BURST / 2,
        "the budget's burst is served: {resent}"
    );
    let throttled = core_stat(&base, "retransmissions_throttled").await;
    assert_eq!(
        resent + throttled,
        1600,
        "the rest was dropped and counted: {resent} sent again, {throttled} throttled"
    );
    assert_eq!(
        core_stat(&base, "nacks_forwarded_upstream").await,
        0,
        "nothing of the flood reached the publisher"
    );

    // The other player's budget is its own: its NACK is answered (counted by the node: the
    // client drops the copy of a packet it has).
    other
        .send_rtcp(&nack(other_ssrc, &[other_last]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        core_stat(&base, "retransmissions_sent").await,
        resent + 1,
        "the other player's NACK is answered"
    );
    assert_eq!(
        core_stat(&base, "retransmissions_throttled").await,
        throttled
    );
    node.stop();
}
