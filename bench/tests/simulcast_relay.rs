//! Simulcast through a CDN: an origin relays every layer of a simulcast stream to an edge, each
//! on its own SSRC naming its rid, and the edge's players choose and pin layers as the
//! origin's do. The bench client publishes layers `l`, `m`, `h` to the origin.
//!
//! - A default player on the edge gets layer `h` only, from a keyframe on, numbered without a
//!   gap.
//! - Through a hop that can lose the relay's packets: a player pinned to `?layer=l` gets `l`'s
//!   payloads and a default one `h`'s, and neither node's media cores allocate while every
//!   layer crosses (the node runs in this process with the counting allocator the `rtcdn`
//!   binary installs); a packet of `l` lost between origin and edge is asked
//!   for by the edge naming the layer's stream and sent again from the origin's cache, on the
//!   layer's retransmission stream, without the publisher being asked; the pinned player's
//!   keyframe request reaches the publisher as one for `l`'s SSRC.
//!
//! Everything is sent to 127.0.0.1 (and 127.0.0.2, the edge's announced address, which a
//! UDP hop in the test listens on) only.

use std::alloc::System;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtcdn::alloc_count::CountingAllocator;
use rtcdn::auth::Secret;
use rtcdn::config::cdn::{CdnConfig, CdnRole};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::media::Datagram;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode, OfferOptions, VIDEO_PT};
use tokio::net::UdpSocket;

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

mod common;
use common::{
    cdn_origin_of, cdn_pair, core_stat, loopback_config, simulcast_video, wait_for_core_stat,
    SimulcastLayer, SimulcastPublisher, CDN_SECRET, SIMULCAST_SSRCS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_gets_the_highest_layer_of_a_simulcast_stream() {
    let (origin, edge) = cdn_pair();
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{}", edge.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let mut publisher = SimulcastPublisher::connect(&origin_base, "simcdn", &certificate).await;
    // Each round starts every layer on a keyframe: whenever the relay and the edge's player
    // start, a keyframe of theirs is close.
    let start = Instant::now();
    let mut player = None;
    while player.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the stream never appeared on the edge"
        );
        for layer in 0..3 {
            publisher.frame(layer, 1, true).await;
            publisher.frame(layer, 2, false).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        player = ClientSession::connect(&edge_base, Mode::Play, "simcdn", &certificate, timeout)
            .await
            .ok();
    }
    let mut player = player.unwrap();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(30) && got.len() < 60 {
        for layer in 0..3 {
            publisher.frame(layer, 1, true).await;
            publisher.frame(layer, 2, false).await;
        }
        while let Some(p) = player.recv_rtp(Duration::from_millis(30)).await {
            got.extend(simulcast_video(&p));
        }
    }
    assert!(
        got.len() >= 60,
        "the edge's player got {} packets",
        got.len()
    );
    assert!(got[0].2, "starts on a keyframe: {:?}", &got[..5]);
    assert!(
        got.iter().all(|&(_, layer, _)| layer == 2),
        "layer h only: {got:?}"
    );
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0.wrapping_add(1),
            "numbered without a gap"
        );
    }
    origin.stop();
    edge.stop();
}

/// Payload bytes of each layer's packets: the hop tells layer `l`'s packets apart by their
/// size (they are encrypted; only the header is readable, and the relay's SSRCs are its own).
const PAYLOAD: [usize; 3] = [100, 400, 900];
/// The relay's SRTP packets of layer `l`: header, the rid element, the payload, the tag.
const LAYER_L_SRTP: std::ops::Range<usize> = 100..300;

/// Sends one packet, a frame, of `layer`: its payload names the layer and the frame's number,
/// and a keyframe starts like a VP8 keyframe (RFC 7741). Returns the frame's number.
async fn frame(publisher: &mut SimulcastPublisher, layer: usize, keyframe: bool) -> u16 {
    publisher.next_frame(layer);
    let number = publisher.layers[layer].sent.to_be_bytes();
    publisher
        .send_packet(layer, PAYLOAD[layer], keyframe, &number)
        .await
}

/// A UDP hop in front of the edge's media ports, which the edge announces on 127.0.0.2: what
/// is sent to 127.0.0.2:<port> goes on to 127.0.0.1:<port> from a socket of the hop's for each
/// sender, and the answers back. Armed, it loses the next RTP packet of layer `l` towards the
/// edge.
#[derive(Clone, Default)]
struct LossyHop {
    armed: Arc<AtomicBool>,
    /// The packets lost: (SSRC, sequence number).
    lost: Arc<Mutex<Vec<(u32, u16)>>>,
}

impl LossyHop {
    async fn start(edge_ports: &[SocketAddr]) -> LossyHop {
        let hop = LossyHop::default();
        for back in edge_ports {
            let front = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), back.port());
            let front = Arc::new(UdpSocket::bind(front).await.expect("bind 127.0.0.2"));
            tokio::spawn(hop.clone().run(front, *back));
        }
        hop
    }

    async fn run(self, front: Arc<UdpSocket>, back: SocketAddr) {
        let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            let packet = &buf[..n];
            if self.loses(packet) {
                continue;
            }
            let flow = match flows.get(&from) {
                Some(flow) => flow.clone(),
                None => {
                    let flow = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    let (answers, front) = (flow.clone(), front.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 2048];
                        while let Ok((n, _)) = answers.recv_from(&mut buf).await {
                            let _ = front.send_to(&buf[..n], from).await;
                        }
                    });
                    flows.insert(from, flow.clone());
                    flow
                }
            };
            let _ = flow.send_to(packet, back).await;
        }
    }

    /// Whether to lose this datagram: armed, and an RTP packet (not RTCP, STUN or DTLS) of
    /// layer `l`'s size.
    fn loses(&self, packet: &[u8]) -> bool {
        if Datagram::classify(packet) != Datagram::Rtp || !LAYER_L_SRTP.contains(&packet.len()) {
            return false;
        }
        if self
            .armed
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        let header = rtp::RtpHeader::parse(packet).expect("an RTP header");
        self.lost
            .lock()
            .unwrap()
            .push((header.ssrc().0, header.sequence_number()));
        true
    }
}

/// An edge that announces its media on 127.0.0.2 (where the hop listens), and an origin that
/// relays to it: `(origin, edge)`.
fn origin_and_edge_behind_a_hop() -> (Node, Node) {
    let mut config = loopback_config(2);
    config.media.announce = vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))];
    config.cdn = CdnConfig {
        role: CdnRole::Edge,
        secret: Some(Secret::new(CDN_SECRET)),
        ..CdnConfig::default()
    };
    let edge = Node::start(&config).expect("edge starts");
    let origin = cdn_origin_of(&edge);
    (origin, edge)
}

/// Sends a frame of every layer.
async fn round(publisher: &mut SimulcastPublisher, keyframe: bool) {
    for layer in 0..3 {
        frame(publisher, layer, keyframe).await;
    }
}

/// A WHEP player of `simhop` on the edge, pinned to `layer` (`?layer=`) when given.
async fn play(
    base: &str,
    layer: Option<&'static str>,
    certificate: &DtlsCertificate,
) -> Result<ClientSession, rtcdn_bench::client::ClientError> {
    let options = OfferOptions {
        layer,
        ..OfferOptions::default()
    };
    let timeout = Duration::from_secs(5);
    ClientSession::connect_with(base, Mode::Play, "simhop", certificate, timeout, options).await
}

/// Moves what the pinned and the default player received into `got`.
fn take(pinned: &mut ClientSession, default: &mut ClientSession, got: &mut [Vec<Vec<u8>>; 2]) {
    while let Some(p) = pinned.try_recv_rtp() {
        got[0].push(p);
    }
    while let Some(p) = default.try_recv_rtp() {
        got[1].push(p);
    }
}

/// What a player got: (sequence number, layer, the frame's number).
fn frames(packets: &[Vec<u8>]) -> Vec<(u16, u8, u16)> {
    packets
        .iter()
        .filter_map(|p| {
            let header = rtp::RtpHeader::parse(p).ok()?;
            let payload = header.payload();
            (header.payload_type().value() == VIDEO_PT && payload.len() >= 5).then(|| {
                let number = u16::from_be_bytes([payload[3], payload[4]]);
                (header.sequence_number(), payload[2], number)
            })
        })
        .collect()
}

/// Whether a PLI for each layer's SSRC reached the publisher within `window`.
async fn plis(publisher: &mut SimulcastPublisher, window: Duration) -> [bool; 3] {
    let mut got = [false; 3];
    let deadline = Instant::now() + window;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(packet) = publisher.session.recv_rtcp(left).await else {
            break;
        };
        for rtcp in rtp::rtcp::RtcpIter::new(&packet).flatten() {
            if let rtp::rtcp::Rtcp::Pli(pli) = rtcp {
                if let Some(layer) = SIMULCAST_SSRCS.iter().position(|&s| s == pli.media_ssrc.0) {
                    got[layer] = true;
                }
            }
        }
    }
    got
}

/// The sequence numbers of the NACKs that reached the publisher within `window`.
async fn nacked(publisher: &mut SimulcastPublisher, window: Duration) -> Vec<(u32, u16)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + window;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(packet) = publisher.session.recv_rtcp(left).await else {
            break;
        };
        for rtcp in rtp::rtcp::RtcpIter::new(&packet).flatten() {
            if let rtp::rtcp::Rtcp::Nack(nack) = rtcp {
                got.extend(nack.lost().map(|seq| (nack.media_ssrc.0, seq)));
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_crosses_the_relay_and_is_repaired_and_asked_for_on_its_own() {
    let (origin, edge) = origin_and_edge_behind_a_hop();
    let hop = LossyHop::start(edge.media_addrs()).await;
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{}", edge.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let options = OfferOptions {
        simulcast: true,
        ..OfferOptions::default()
    };
    let session = ClientSession::connect_with(
        &origin_base,
        Mode::Publish,
        "simhop",
        &certificate,
        timeout,
        options,
    )
    .await
    .expect("publish to the origin");
    let mut publisher = SimulcastPublisher {
        session,
        layers: [1000, 20_000, 40_000].map(|seq| SimulcastLayer {
            seq,
            ..SimulcastLayer::default()
        }),
    };

    // Keyframes until a player pinned to `l` plays on the edge: the relay is up and the edge
    // knows the layers (an edge without them would refuse no layer, and send `h`).
    let start = Instant::now();
    let mut pinned = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the stream never appeared on the edge"
        );
        round(&mut publisher, true).await;
        round(&mut publisher, false).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        if let Ok(player) = play(&edge_base, Some("l"), &certificate).await {
            break player;
        }
    };
    let mut default = play(&edge_base, None, &certificate)
        .await
        .expect("a default player on the edge");
    let mut got: [Vec<Vec<u8>>; 2] = Default::default();
    // Until both play.
    while start.elapsed() < Duration::from_secs(30)
        && (frames(&got[0]).len() < 5 || frames(&got[1]).len() < 5)
    {
        round(&mut publisher, true).await;
        for _ in 0..2 {
            round(&mut publisher, false).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        take(&mut pinned, &mut default, &mut got);
    }
    let (pinned_got, default_got) = (frames(&got[0]), frames(&got[1]));
    assert!(
        pinned_got.iter().all(|f| f.1 == 0) && !pinned_got.is_empty(),
        "the player pinned to l gets l's payloads only: {pinned_got:?}"
    );
    assert!(
        default_got.iter().all(|f| f.1 == 2) && !default_got.is_empty(),
        "the default player gets h's: {default_got:?}"
    );

    // Forwarding every layer across the relay allocates nothing, on either node.
    let allocations = |base: String| async move {
        // Cores publish their counters once per 20 ms tick.
        tokio::time::sleep(Duration::from_millis(100)).await;
        core_stat(&base, "media_allocations").await
    };
    let before = [
        allocations(origin_base.clone()).await,
        allocations(edge_base.clone()).await,
    ];
    for base in [&origin_base, &edge_base] {
        assert!(
            core_stat(base, "allocations").await > 0,
            "{base}: the cores count allocations (session setup makes some)"
        );
    }
    let sent_before = core_stat(&origin_base, "rtp_sent").await;
    for _ in 0..30 {
        round(&mut publisher, false).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = [
        allocations(origin_base.clone()).await,
        allocations(edge_base.clone()).await,
    ];
    assert!(
        core_stat(&origin_base, "rtp_sent").await >= sent_before + 90,
        "the relay sent every layer"
    );
    assert_eq!(after, before, "media allocations (origin, edge)");
    take(&mut pinned, &mut default, &mut got);

    // One packet of `l` is lost between the origin and the edge. The edge sees the gap in
    // the layer's stream and asks the origin, naming that stream; the origin's cache has it
    // and sends it again on the layer's retransmission stream, which the edge knows by the
    // rid it repairs. The publisher is never asked.
    while publisher
        .session
        .recv_rtcp(Duration::from_millis(50))
        .await
        .is_some()
    {}
    let rtx_before = core_stat(&origin_base, "rtx_sent").await;
    let recovered_before = core_stat(&edge_base, "upstream_losses_recovered").await;
    hop.armed.store(true, Ordering::SeqCst);
    let first_after = publisher.layers[0].sent;
    for _ in 0..10 {
        round(&mut publisher, false).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!hop.armed.load(Ordering::SeqCst), "nothing of l to lose");
    assert_eq!(hop.lost.lock().unwrap().len(), 1);
    assert!(
        wait_for_core_stat(&origin_base, "rtx_sent", rtx_before + 1).await > rtx_before,
        "the origin sent the lost packet again"
    );
    assert!(
        wait_for_core_stat(
            &edge_base,
            "upstream_losses_recovered",
            recovered_before + 1
        )
        .await
            > recovered_before,
        "the edge got what it lost"
    );
    let asked = nacked(&mut publisher, Duration::from_millis(300)).await;
    assert!(asked.is_empty(), "the publisher was asked for {asked:?}");
    // The pinned player got every frame of `l` since, the repaired one too, each under the
    // number the gap left for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    take(&mut pinned, &mut default, &mut got);
    let mut after: Vec<_> = frames(&got[0])
        .into_iter()
        .filter(|f| f.2 >= first_after)
        .collect();
    after.sort_by_key(|f| f.2);
    after.dedup();
    let numbers: Vec<u16> = after.iter().map(|f| f.2).collect();
    assert_eq!(
        numbers,
        (first_after..first_after + 10).collect::<Vec<_>>(),
        "every frame of l: {after:?}"
    );
    for pair in after.windows(2) {
        assert_eq!(pair[1].0, pair[0].0.wrapping_add(1), "{after:?}");
    }

    // The pinned player asks for a keyframe: the edge asks the origin for `l`'s, and the
    // origin the publisher. (Frames first: every layer stays active meanwhile.)
    round(&mut publisher, false).await;
    while publisher
        .session
        .recv_rtcp(Duration::from_millis(50))
        .await
        .is_some()
    {}
    let pinned_ssrc = rtp::RtpHeader::parse(&got[0][0]).unwrap().ssrc();
    let pli = rtp::rtcp::Rtcp::Pli(rtp::rtcp::Pli {
        sender_ssrc: rtp::Ssrc(7),
        media_ssrc: pinned_ssrc,
    });
    let mut buf = [0u8; 64];
    let n = pli.write_to(&mut buf).unwrap();
    pinned.send_rtcp(&buf[..n]).await.unwrap();
    let asked = plis(&mut publisher, Duration::from_millis(1200)).await;
    assert_eq!(asked, [true, false, false], "a keyframe of l only");

    publisher.session.close().await.unwrap();
    origin.stop();
    edge.stop();
}
