//! Handshake records that used to panic the dtls crate's parsers, sent to a real node from the
//! address that just passed ICE, while the node waits for that peer's ClientHello: they are
//! dropped before the crate sees them, so nothing panics (`/api/stats` `panics` stays empty),
//! that peer's handshake still completes, and a publisher→player session on the same node keeps
//! delivering.
//!
//! Everything is sent to 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceEvent};
use rtcdn::dtls::{DtlsCertificate, DtlsEvent, DtlsRole, DtlsTransport};
use rtcdn::media::Datagram;
use rtcdn::sdp::{self, Codec, Direction, Fingerprint, MediaKind, OfferMedia, OfferParams, Setup};
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT};
use rtcdn_bench::http;
use rtcdn_bench::media::read_packet;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

mod common;

const TIMEOUT: Duration = Duration::from_secs(15);

/// An empty ClientKeyExchange (the crate indexed its first byte).
const EMPTY_CLIENT_KEY_EXCHANGE: &str = "16fefd0000000000000000000c100000000000000000000000";
/// A ClientHello header whose fragment_length covers the empty ServerKeyExchange behind it; the
/// crate walks by length and parsed the ServerKeyExchange.
const HIDDEN_SERVER_KEY_EXCHANGE: &str = concat!(
    "16fefd000000000000200500250100000000200500250100000c00000000000000000000",
    "0000150101000000000000150100"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handshake_records_from_a_peer_are_dropped() {
    let node = common::test_node(1);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher =
        ClientSession::connect(&base, Mode::Publish, "healthy", &certificate, TIMEOUT)
            .await
            .expect("publish");
    let mut player = ClientSession::connect(&base, Mode::Play, "healthy", &certificate, TIMEOUT)
        .await
        .expect("play");
    let (mut seq, start) = (0, Instant::now());
    let players = std::slice::from_mut(&mut player);
    common::warm_up_until_received(&mut publisher, players, &mut seq, start, TIMEOUT).await;
    common::drain_rtp(players, Duration::from_millis(100)).await;

    let mut peer = RawPeer::offer(&base, "attacked", &certificate).await;
    peer.complete_ice().await;
    for hex in [EMPTY_CLIENT_KEY_EXCHANGE, HIDDEN_SERVER_KEY_EXCHANGE] {
        let datagram = unhex(hex);
        for _ in 0..3 {
            peer.send(&datagram).await;
        }
    }
    // The crate's reader would have panicked by now (it runs on the node's signalling runtime).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = common::stats_json(&base).await;
    assert_eq!(stats["panics"], serde_json::json!({}), "{stats}");
    peer.complete_dtls(&certificate).await;

    let first = seq;
    for _ in 0..50 {
        common::send(&mut publisher, &mut seq, 1, start).await;
    }
    for expected in first..first + 50 {
        let packet = player
            .recv_rtp(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("the player missed packet {expected}"));
        let (probe, _) = read_packet(&packet).expect("intact");
        assert_eq!(probe.sequence, expected, "lost or reordered");
    }
    node.stop();
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A publisher that runs ICE itself and offers `a=setup:active`, so that the node is the DTLS
/// server and its dtls crate reads whatever this peer sends while it waits for a ClientHello.
struct RawPeer {
    socket: UdpSocket,
    ice: IceControllingAgent,
    remote_fingerprint: [u8; 32],
    remote: Option<SocketAddr>,
}

impl RawPeer {
    async fn offer(base: &str, stream: &str, certificate: &DtlsCertificate) -> RawPeer {
        let local = IceCredentials::random(&mut rand::thread_rng());
        let mut opus = Codec::new(AUDIO_PT, "opus", 48000, Some(2));
        opus.fmtp = Some("minptime=10;useinbandfec=1".into());
        let offer = sdp::write_offer(&OfferParams {
            ice_ufrag: local.ufrag.clone(),
            ice_pwd: local.pwd.clone(),
            fingerprint: Fingerprint(certificate.fingerprint()),
            media: vec![OfferMedia {
                mid: "0".into(),
                kind: MediaKind::Audio,
                direction: Direction::SendOnly,
                codecs: vec![opus],
                extmaps: Vec::new(),
                send: None,
                send_rids: Vec::new(),
            }],
            active_tcp: None,
        })
        .replace("a=setup:actpass", "a=setup:active");
        let url = format!("{base}/whip/{stream}");
        let response = http::post_offer(&url, offer).await.expect("WHIP offer");
        let answer = sdp::parse(&response.body).expect("answer parses");
        assert_eq!(answer.setup, Setup::Passive, "the node is the DTLS server");
        let candidates = answer
            .candidates
            .iter()
            .copied()
            .filter(SocketAddr::is_ipv4);
        let remote_ice = IceCredentials {
            ufrag: answer.ice_ufrag.clone(),
            pwd: answer.ice_pwd.clone(),
        };
        let ice = IceControllingAgent::new(
            local,
            remote_ice,
            candidates.collect(),
            rand::random(),
            Instant::now(),
        );
        RawPeer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            ice,
            remote_fingerprint: answer.fingerprint.expect("a fingerprint").0,
            remote: None,
        }
    }

    async fn complete_ice(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while self.remote.is_none() {
            assert!(Instant::now() < deadline, "ICE did not connect");
            self.step(None).await;
        }
    }

    async fn send(&self, datagram: &[u8]) {
        let remote = self.remote.expect("ICE connected");
        self.socket.send_to(datagram, remote).await.unwrap();
    }

    /// Runs a DTLS client handshake from the same address; panics unless it connects.
    async fn complete_dtls(&mut self, certificate: &DtlsCertificate) {
        let (tx, mut events) = mpsc::unbounded_channel();
        let dtls = DtlsTransport::start(
            &tokio::runtime::Handle::current(),
            DtlsRole::Client,
            certificate,
            self.remote_fingerprint,
            Arc::new(move |event| {
                let _ = tx.send(event);
            }),
        );
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "DTLS did not connect");
            while let Ok(event) = events.try_recv() {
                match event {
                    DtlsEvent::Transmit(datagram) => self.send(&datagram).await,
                    DtlsEvent::Connected(_) => return,
                    other => panic!("the handshake after the bad records failed: {other:?}"),
                }
            }
            self.step(Some(&dtls)).await;
        }
    }

    /// Sends what ICE has to send, then handles one datagram or waits a little.
    async fn step(&mut self, dtls: Option<&DtlsTransport>) {
        while let Some(t) = self.ice.poll_transmit() {
            self.socket
                .send_to(&t.contents, t.destination)
                .await
                .unwrap();
        }
        while let Some(event) = self.ice.poll_event() {
            if let IceEvent::Connected { remote } = event {
                self.remote = Some(remote);
            }
        }
        let mut buf = [0u8; 2048];
        let wait = Duration::from_millis(10);
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((len, from))) => match Datagram::classify(&buf[..len]) {
                Datagram::Stun => {
                    let _ = self.ice.handle_packet(Instant::now(), from, &buf[..len]);
                }
                Datagram::Dtls => {
                    if let Some(dtls) = dtls {
                        dtls.handle_record(&buf[..len]);
                    }
                }
                _ => {}
            },
            _ => self.ice.handle_timeout(Instant::now()),
        }
    }
}
