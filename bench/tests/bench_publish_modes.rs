//! The bench's other ways of getting streams, which drive a peer server with the same client
//! (bench/scripts/peer-janus.sh): publishing as plain RTP to a server's input ports
//! (`--rtp-publish`), and playing streams something else publishes (`--play-only`).
//!
//! rtcdn has no plain RTP input, so the first test puts a small gateway in front of the node:
//! it receives the bench's plain RTP on the stream's video and audio ports and publishes it over
//! WHIP, and the bench's own players check every byte of it.

use std::net::SocketAddr;
use std::time::Duration;

use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode};
use rtcdn_bench::rtp_publish::stream_ports;
use rtcdn_bench::run::{run, Publish, RunOptions};
use tokio::net::UdpSocket;

mod common;
use common::{base_url, test_node};

/// A video socket on an ephemeral port and an audio socket two ports above it, as stream 0 of a
/// series starting at the video port sends.
async fn rtp_input() -> (UdpSocket, UdpSocket) {
    for _ in 0..50 {
        let video = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let base = video.local_addr().unwrap();
        let Some((_, audio)) = stream_ports(base, 0) else {
            continue;
        };
        if let Ok(audio) = UdpSocket::bind(audio).await {
            return (video, audio);
        }
    }
    panic!("no free pair of ports two apart");
}

/// Publishes what arrives on the two sockets over `publisher`, each packet given the session's
/// SSRC of its kind.
async fn gateway(video: UdpSocket, audio: UdpSocket, mut publisher: ClientSession) {
    let (mut vbuf, mut abuf) = ([0u8; 1500], [0u8; 1500]);
    loop {
        let (buf, n, ssrc) = tokio::select! {
            r = video.recv(&mut vbuf) => (&mut vbuf, r.unwrap(), publisher.video_ssrc),
            r = audio.recv(&mut abuf) => (&mut abuf, r.unwrap(), publisher.audio_ssrc),
        };
        if n < 12 {
            continue;
        }
        buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        publisher.send_rtp(&buf[..n]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rtp_published_streams_reach_the_players_intact() {
    let node = test_node(1);
    let server = base_url(&node);
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher = ClientSession::connect(
        &server,
        Mode::Publish,
        "rtpin-0",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("the gateway publishes");
    let (video, audio) = rtp_input().await;
    let base: SocketAddr = video.local_addr().unwrap();
    let gateway = tokio::spawn(gateway(video, audio, publisher));

    let players = 3;
    let report = run(&RunOptions {
        server: server.clone(),
        stream: "rtpin".into(),
        players,
        seconds: 2.0,
        publish: Publish::Rtp(base),
        ..RunOptions::default()
    })
    .await
    .expect("the bench runs");
    let text = rtcdn_bench::run::describe(&report);
    assert_eq!(report.players_connected, players, "{text}");
    assert!(report.packets_sent > 0, "{text}");
    // Audio and video reach the gateway on two sockets, which it may read in either order:
    // order across the tracks is not checked, but every packet arrives, intact, once.
    assert_eq!(
        report.packets_expected,
        report.packets_sent * players as u64,
        "{text}"
    );
    assert_eq!(report.packets_received, report.packets_expected, "{text}");
    assert_eq!((report.corrupted, report.duplicates), (0, 0), "{text}");
    gateway.abort();
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_only_players_play_what_another_run_publishes() {
    let node = test_node(1);
    let server = base_url(&node);
    let publishing = RunOptions {
        server: server.clone(),
        stream: "elsewhere".into(),
        players: 1,
        seconds: 5.0,
        ..RunOptions::default()
    };
    let playing = RunOptions {
        players: 3,
        seconds: 1.5,
        publish: Publish::Elsewhere,
        ..publishing.clone()
    };
    let (published, played) = tokio::join!(run(&publishing), async {
        // The publishing run connects its publisher first; players that come too early are
        // refused and retry within the setup timeout anyway.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        let played = run(&playing).await;
        (played, started.elapsed())
    });
    let (played, took) = played;
    // It ends with its own window, while the other run still publishes (its players used to
    // wait for a quiet moment that never came).
    assert!(
        took < Duration::from_secs(4),
        "the play-only run took {took:?} of the publisher's 5 s"
    );
    let published = published.expect("the publishing run");
    let played = played.expect("the playing run");
    let text = rtcdn_bench::run::describe(&played);
    assert_eq!(played.publishers_connected, 0, "{text}");
    assert_eq!(played.players_connected, 3, "{text}");
    assert_eq!(played.players_without_packets, 0, "{text}");
    // About 310 packets/s for 1.5 s to each of 3 players; the window counts arrivals.
    assert!(
        played.packets_received > 3 * 300,
        "measured by arrival:\n{text}"
    );
    assert_eq!((played.corrupted, played.duplicates), (0, 0), "{text}");
    assert_eq!(
        played.packets_expected, 0,
        "nothing known to be sent:\n{text}"
    );
    assert!(!played.clean(), "a play-only run cannot claim no loss");
    assert!(
        published.clean(),
        "{}",
        rtcdn_bench::run::describe(&published)
    );
    node.stop();
}
