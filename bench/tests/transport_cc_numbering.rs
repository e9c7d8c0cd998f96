//! A player that offers transport-cc gets rtcdn's own transport-wide sequence number on every
//! packet (audio and video in one sequence, the payload intact); one that does not gets none.
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode, OfferOptions, TRANSPORT_CC_EXT_ID};
use rtcdn_bench::media::read_packet;

mod common;
use common::{drain_rtp, send, test_node, warm_up_until_received};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_packet_to_a_transport_cc_player_is_numbered() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let mut publisher = ClientSession::connect(&base, Mode::Publish, "twcc", &certificate, timeout)
        .await
        .expect("publish");
    let twcc = OfferOptions {
        transport_cc: true,
        ..OfferOptions::default()
    };
    let numbered =
        ClientSession::connect_with(&base, Mode::Play, "twcc", &certificate, timeout, twcc)
            .await
            .expect("play with transport-cc");
    let plain = ClientSession::connect(&base, Mode::Play, "twcc", &certificate, timeout)
        .await
        .expect("play without");
    let start = Instant::now();
    let mut seq = 0u64;
    let mut players = [numbered, plain];
    warm_up_until_received(&mut publisher, &mut players, &mut seq, start, timeout).await;
    drain_rtp(&mut players, Duration::from_millis(100)).await;
    let [mut numbered, mut plain] = players;
    for _ in 0..200 {
        send(&mut publisher, &mut seq, 0, start).await;
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let mut numbers = Vec::new();
    while let Some(packet) = numbered.recv_rtp(Duration::from_millis(300)).await {
        read_packet(&packet).expect("payload intact after the extension");
        let header = rtp::RtpHeader::parse(&packet).unwrap();
        let number = rtp::twcc::transport_seq(&header, TRANSPORT_CC_EXT_ID)
            .expect("a transport-wide number on every packet");
        numbers.push(number);
    }
    assert!(numbers.len() > 150, "{} packets", numbers.len());
    // One sequence for audio and video, without gaps (loopback loses nothing).
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "{numbers:?}");
    }
    let mut others = 0;
    while let Some(packet) = plain.recv_rtp(Duration::from_millis(300)).await {
        let header = rtp::RtpHeader::parse(&packet).unwrap();
        assert_eq!(rtp::twcc::transport_seq(&header, TRANSPORT_CC_EXT_ID), None);
        others += 1;
    }
    assert_eq!(others, numbers.len());
    node.stop();
}
