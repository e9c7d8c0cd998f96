//! A publisher sends synthetic RTP over WHIP to an in-process rtcdn node with two media cores;
//! three players receive it over WHEP. Every payload must arrive intact and in order, through
//! real UDP, ICE, DTLS and SRTP, on the publisher's core and across cores.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;

mod common;
use common::{
    assert_players_get_every_packet, drain_rtp, publish_and_play, test_node, warm_up_until_received,
};

const MEASURED: u64 = 600;
const PLAYERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_players_get_every_packet_intact_and_in_order() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (mut publisher, mut players) =
        publish_and_play::<PLAYERS>(&base, "fanout", &certificate).await;

    let start = Instant::now();
    let mut seq = 0u64;
    let within = Duration::from_secs(10);
    warm_up_until_received(&mut publisher, &mut players, &mut seq, start, within).await;
    drain_rtp(&mut players, Duration::from_millis(50)).await;

    let gap = Duration::from_micros(300);
    assert_players_get_every_packet(&mut publisher, &mut players, &mut seq, start, MEASURED, gap)
        .await;

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
