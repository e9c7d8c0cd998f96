//! A new player starts on the keyframe the node cached, instead of waiting for its keyframe
//! request to reach the publisher (issue 11, keyframe cache).
//!
//! A synthetic VP8 publisher sends delta frames, one keyframe and more delta frames; a player
//! that joins afterwards, on the publisher's core or on another, gets the keyframe and
//! everything after it at once, with continuous sequence numbers that carry on into the live
//! packets, and the publisher is asked for no keyframe. A player of a stream whose keyframe is no longer cached asks the publisher as
//! before. Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode, VIDEO_PT};

mod common;
use common::{core_stat, test_node, wait_for_core_stat};

/// A video packet whose payload starts like VP8 (RFC 7741): a keyframe's first packet has the
/// start-of-partition bit and a clear inverse-keyframe bit; others are continuations.
fn vp8_packet(ssrc: u32, seq: u16, ts: u32, keyframe_start: bool) -> Vec<u8> {
    let mut p = vec![0u8; 1000];
    rtp::RtpHeaderBuilder::new(rtp::Pt::new(VIDEO_PT), seq, ts, rtp::Ssrc(ssrc))
        .write_to(&mut p)
        .unwrap();
    let payload = &mut p[12..];
    payload[0] = if keyframe_start { 0x10 } else { 0x00 };
    payload[1] = if keyframe_start { 0x00 } else { 0x01 };
    for (i, b) in payload[2..].iter_mut().enumerate() {
        *b = (i as u16 ^ seq) as u8;
    }
    p
}

/// A publisher of `stream` on the node at `base`, once the node receives its media: our side of
/// DTLS may finish before the node's, which drops what comes before its keys.
async fn publish(
    base: &str,
    stream: &str,
    certificate: &DtlsCertificate,
    sender: &mut Sender,
) -> ClientSession {
    let mut publisher = ClientSession::connect(
        base,
        Mode::Publish,
        stream,
        certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("publish");
    let deadline = Instant::now() + Duration::from_secs(10);
    while core_stat(base, "rtp_received").await == 0 {
        assert!(Instant::now() < deadline, "the node never received media");
        sender.frame(&mut publisher, 1, false).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    publisher
}

/// Numbers a publisher's frames: one SSRC, consecutive sequence numbers, one timestamp a frame.
struct Sender {
    seq: u16,
    ts: u32,
}

impl Sender {
    /// Sends one frame of `packets` packets; returns the sent packets.
    async fn frame(
        &mut self,
        publisher: &mut ClientSession,
        packets: usize,
        keyframe: bool,
    ) -> Vec<Vec<u8>> {
        self.ts = self.ts.wrapping_add(3000);
        let mut sent = Vec::new();
        for i in 0..packets {
            let p = vp8_packet(publisher.video_ssrc, self.seq, self.ts, keyframe && i == 0);
            publisher.send_rtp(&p).await.unwrap();
            self.seq = self.seq.wrapping_add(1);
            sent.push(p);
        }
        sent
    }
}

/// A player of `stream` that joins once the node took everything sent so far, with the
/// publisher's feedback until then set aside (what follows is the player's doing).
async fn join_later(
    base: &str,
    stream: &str,
    certificate: &DtlsCertificate,
    publisher: &mut ClientSession,
) -> ClientSession {
    tokio::time::sleep(Duration::from_millis(100)).await;
    while publisher
        .recv_rtcp(Duration::from_millis(50))
        .await
        .is_some()
    {}
    ClientSession::connect(
        base,
        Mode::Play,
        stream,
        certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("play")
}

/// Whether a PLI for `media_ssrc` reaches `publisher` within `window`.
async fn pli_within(publisher: &mut ClientSession, window: Duration) -> bool {
    let deadline = Instant::now() + window;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(packet) = publisher.recv_rtcp(left).await else {
            return false;
        };
        let ssrc = publisher.video_ssrc;
        if rtp::rtcp::RtcpIter::new(&packet)
            .flatten()
            .any(|r| matches!(r, rtp::rtcp::Rtcp::Pli(p) if p.media_ssrc.0 == ssrc))
        {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_player_starts_on_the_cached_keyframe() {
    starts_on_the_cached_keyframe(1).await;
}

/// The player lands on the other core: the publisher's core replays its keyframe there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_player_on_another_core_starts_on_the_keyframe_the_publishers_core_cached() {
    starts_on_the_cached_keyframe(2).await;
}

async fn starts_on_the_cached_keyframe(cores: usize) {
    let node = test_node(cores);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut sender = Sender { seq: 1000, ts: 0 };
    let mut publisher = publish(&base, "kf", &certificate, &mut sender).await;
    for _ in 0..5 {
        sender.frame(&mut publisher, 3, false).await;
    }
    let mut expected = sender.frame(&mut publisher, 4, true).await;
    for _ in 0..6 {
        expected.extend(sender.frame(&mut publisher, 3, false).await);
    }
    let mut player = join_later(&base, "kf", &certificate, &mut publisher).await;
    assert_eq!(
        player.remote_addr() == publisher.remote_addr(),
        cores == 1,
        "the player is on the publisher's core only when there is one core"
    );
    // The keyframe and every packet after it, at once, numbered without a gap.
    let mut first_seq = None;
    for (i, sent) in expected.iter().enumerate() {
        let Some(got) = player.recv_rtp(Duration::from_secs(2)).await else {
            panic!(
                "packet {i} of {} from the cache; keyframe cache hits {}, misses {}; {:?}",
                expected.len(),
                core_stat(&base, "keyframe_cache_hits").await,
                core_stat(&base, "keyframe_cache_misses").await,
                player.counters(),
            );
        };
        let header = rtp::RtpHeader::parse(&got).unwrap();
        assert_eq!(
            header.payload(),
            &sent[12..],
            "packet {i} intact and in order"
        );
        let first = *first_seq.get_or_insert(header.sequence_number());
        assert_eq!(header.sequence_number(), first.wrapping_add(i as u16));
    }
    assert!(
        !pli_within(&mut publisher, Duration::from_millis(600)).await,
        "the publisher was asked for a keyframe the node had"
    );
    assert_eq!(wait_for_core_stat(&base, "keyframe_cache_hits", 1).await, 1);
    assert_eq!(core_stat(&base, "keyframe_cache_misses").await, 0);

    // Live packets carry on from the cached ones.
    let live = sender.frame(&mut publisher, 3, false).await;
    for (i, sent) in live.iter().enumerate() {
        let got = player.recv_rtp(Duration::from_secs(2)).await.expect("live");
        let header = rtp::RtpHeader::parse(&got).unwrap();
        assert_eq!(header.payload(), &sent[12..]);
        assert_eq!(
            header.sequence_number(),
            first_seq.unwrap().wrapping_add((expected.len() + i) as u16)
        );
    }
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cached_keyframe_a_new_player_asks_the_publisher() {
    asks_the_publisher_without_a_cached_keyframe(1).await;
}

/// On another core than the publisher's, whose core has no keyframe to replay either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cached_keyframe_a_player_on_another_core_asks_the_publisher() {
    asks_the_publisher_without_a_cached_keyframe(2).await;
}

async fn asks_the_publisher_without_a_cached_keyframe(cores: usize) {
    let node = test_node(cores);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut sender = Sender { seq: 7, ts: 0 };
    let mut publisher = publish(&base, "nokf", &certificate, &mut sender).await;
    sender.frame(&mut publisher, 4, true).await;
    // More packets since the keyframe than a new player may be sent at once.
    for _ in 0..110 {
        sender.frame(&mut publisher, 3, false).await;
    }
    let mut player = join_later(&base, "nokf", &certificate, &mut publisher).await;
    assert!(
        pli_within(&mut publisher, Duration::from_secs(2)).await,
        "the new player's keyframe request never reached the publisher"
    );
    assert!(
        player.recv_rtp(Duration::from_millis(200)).await.is_none(),
        "stale packets were sent to the new player"
    );
    assert_eq!(
        wait_for_core_stat(&base, "keyframe_cache_misses", 1).await,
        1
    );
    assert_eq!(core_stat(&base, "keyframe_cache_hits").await, 0);
    node.stop();
}
