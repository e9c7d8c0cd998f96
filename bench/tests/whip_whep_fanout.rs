//! A publisher sends synthetic RTP over WHIP to an in-process rtcdn node with two media cores;
//! three players receive it over WHEP. Every payload must arrive intact and in order, through
//! real UDP, ICE, DTLS and SRTP, on the publisher's core and across cores.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT, VIDEO_PT};
use rtcdn_bench::media::read_packet;

mod common;
use common::{send, test_node};

const MEASURED: u64 = 600;
const PLAYERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_players_get_every_packet_intact_and_in_order() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let mut publisher =
        ClientSession::connect(&base, Mode::Publish, "fanout", &certificate, timeout)
            .await
            .expect("publish");
    let mut players = Vec::new();
    for _ in 0..PLAYERS {
        players.push(
            ClientSession::connect(&base, Mode::Play, "fanout", &certificate, timeout)
                .await
                .expect("play"),
        );
    }

    // Warm up until every player receives: the server installs a player's keys a moment after
    // the client's DTLS finishes.
    let start = Instant::now();
    let mut seq = 0u64;
    let mut warm = [false; PLAYERS];
    while warm.iter().any(|w| !w) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "players never received warm-up packets"
        );
        send(&mut publisher, &mut seq, 0, start).await;
        for (i, player) in players.iter_mut().enumerate() {
            while let Some(packet) = player.recv_rtp(Duration::from_millis(5)).await {
                read_packet(&packet).expect("warm-up packet intact");
                warm[i] = true;
            }
        }
    }
    for player in &mut players {
        while player.recv_rtp(Duration::from_millis(50)).await.is_some() {}
    }

    let first = seq;
    for _ in 0..MEASURED {
        send(&mut publisher, &mut seq, 1, start).await;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    for (i, player) in players.iter_mut().enumerate() {
        let mut expected = first;
        while expected < first + MEASURED {
            let packet = player
                .recv_rtp(Duration::from_secs(3))
                .await
                .unwrap_or_else(|| panic!("player {i} missed packet {expected}"));
            let (probe, pt) = read_packet(&packet).unwrap_or_else(|e| panic!("player {i}: {e}"));
            assert_eq!(
                probe.phase, 1,
                "player {i}: warm-up packet after the measured ones"
            );
            assert_eq!(probe.sequence, expected, "player {i}: out of order or lost");
            let video = expected % 5 != 4;
            assert_eq!(
                pt,
                if video { VIDEO_PT } else { AUDIO_PT },
                "player {i}: payload type of packet {expected}"
            );
            expected += 1;
        }
    }

    // The publisher leaves: every player's session is ended by the server (DTLS close).
    publisher.close().await.expect("DELETE the WHIP resource");
    for (i, player) in players.iter_mut().enumerate() {
        let why = player.wait_ended(Duration::from_secs(5)).await;
        assert!(
            why.is_some(),
            "player {i} was not ended when the publisher left"
        );
    }
    node.stop();
}
