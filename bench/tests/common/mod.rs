//! Shared by the integration tests that run an in-process node and a synthetic publisher.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;

use rtcdn::auth::Secret;
use rtcdn::config::cdn::{BalanceMode, CdnConfig, CdnNode, CdnRole};
use rtcdn::config::cluster::{ClusterConfig, ClusterRole};
use rtcdn::config::Config;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT, VIDEO_PT};
use rtcdn_bench::media::{read_packet, write_packet, Probe, RtpFields, Vp8Part};

/// A node on loopback with ephemeral ports and `threads` media cores.
pub fn test_node(threads: usize) -> Node {
    Node::start(&loopback_config(threads)).expect("node starts")
}

/// The `cdn.secret` the tests' origins and edges share.
pub const CDN_SECRET: &str = "test-cdn-secret-0123456789abcdef-0123";

/// A CDN origin or edge on loopback with two media cores; an origin with `edges` balances
/// players over them round-robin. Both know [`CDN_SECRET`].
pub fn cdn_node(role: CdnRole, edges: Vec<CdnNode>) -> Node {
    let mut config = loopback_config(2);
    config.cdn = CdnConfig {
        role,
        load_balancing_enabled: !edges.is_empty(),
        mode: BalanceMode::RoundRobin,
        nodes: edges,
        secret: Some(Secret::new(CDN_SECRET)),
        ..CdnConfig::default()
    };
    Node::start(&config).expect("node starts")
}

/// An edge and an origin relaying to it, both from [`cdn_node`]: `(origin, edge)`.
pub fn cdn_pair() -> (Node, Node) {
    let edge = cdn_node(CdnRole::Edge, Vec::new());
    let origin = cdn_origin_of(&edge);
    (origin, edge)
}

/// An origin from [`cdn_node`] that relays to `edge` alone (node id 1, over its HTTP port).
pub fn cdn_origin_of(edge: &Node) -> Node {
    cdn_node(
        CdnRole::Origin,
        vec![CdnNode {
            id: 1,
            host: "127.0.0.1".into(),
            ws: Some(edge.http_addr().port()),
            wss: None,
            rtmp: None,
        }],
    )
}

/// The `cluster.secret` the tests' cluster nodes share.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789abcdef";

/// A dynamic-CDN node that pulls: on loopback (one media core, no RTMP) in the cluster of
/// `redis_url`, with `roles` (None: the default), [`CLUSTER_SECRET`] and `idle_pull_secs`.
pub fn pulling_node(redis_url: &str, roles: Option<&[ClusterRole]>, idle_pull_secs: u64) -> Node {
    let mut config = loopback_config(1);
    config.rtmp.enabled = false;
    let mut cluster = ClusterConfig::new(redis_url);
    cluster.secret = Some(Secret::new(CLUSTER_SECRET));
    if let Some(roles) = roles {
        cluster.roles = roles.to_vec();
    }
    cluster.idle_pull_secs = idle_pull_secs;
    config.cluster = Some(cluster);
    Node::start(&config).expect("node starts")
}

/// An SDK (WebSocket) publisher of `stream` on `node`, sending synthetic media until stopped.
pub async fn publish_ws(node: &Node, stream: &str, certificate: &DtlsCertificate) -> Streaming {
    let ws = format!("ws://{}/", node.http_addr());
    let publisher = ClientSession::connect_ws(
        &ws,
        Mode::Publish,
        stream,
        certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("publish over the WebSocket");
    Streaming::start(publisher, 0)
}

/// `http://` and a node's HTTP address.
pub fn base_url(node: &Node) -> String {
    format!("http://{}", node.http_addr())
}

/// A cluster node's id.
pub fn cluster_id(node: &Node) -> String {
    node.signalling()
        .cluster
        .as_ref()
        .expect("in a cluster")
        .node_id()
        .to_string()
}

/// A standalone node's config on loopback with ephemeral ports and `threads` media cores.
pub fn loopback_config(threads: usize) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.port_base = 0;
    config.media.threads = threads;
    config
}

/// Whether the `n`th packet [`send`] sends is video: four video packets to one audio packet.
pub fn is_video(n: u64) -> bool {
    n % 5 != 4
}

/// The RTP sequence number [`send`] gives its `n`th packet: each SSRC is numbered on its own,
/// without gaps, as a real sender numbers it (a node asks again for what a gap skips).
pub fn rtp_seq(n: u64) -> u16 {
    let index = if is_video(n) { n - (n + 1) / 5 } else { n / 5 };
    index as u16
}

/// Whether the `n`th packet [`send`] sends carries the marker bit (ends a video frame).
fn is_frame_end(n: u64) -> bool {
    is_video(n) && n % 4 == 3
}

/// Sends the publisher's next synthetic packet: four 1200-byte video packets (every fourth
/// marks a frame end) to one 160-byte audio packet, numbered by `seq` (see [`rtp_seq`]). Video
/// starts like VP8 but never as a keyframe: a node that saw one would start new players on it
/// from its cache, and these tests' players expect the live packets first.
pub async fn send(publisher: &mut ClientSession, seq: &mut u64, phase: u32, start: Instant) {
    let mut buf = [0u8; 1500];
    let probe = Probe {
        sequence: *seq,
        sent_at_ns: start.elapsed().as_nanos() as u64,
        phase,
    };
    let ssrcs = (publisher.video_ssrc, publisher.audio_ssrc);
    let len = write_synthetic(&mut buf, ssrcs, probe);
    publisher
        .send_rtp(&buf[..len])
        .await
        .expect("publisher sends");
    *seq += 1;
}

/// Writes the packet [`send`] sends as its `probe.sequence`th, with these (video, audio) SSRCs,
/// into `buf`; returns its length.
pub fn write_synthetic(
    buf: &mut [u8],
    (video_ssrc, audio_ssrc): (u32, u32),
    probe: Probe,
) -> usize {
    let n = probe.sequence;
    let video = is_video(n);
    let (pt, ssrc, len) = if video {
        (VIDEO_PT, video_ssrc, 1200)
    } else {
        (AUDIO_PT, audio_ssrc, 160)
    };
    // The video packet before this one (one back, or two across an audio packet).
    let previous_video = n
        .checked_sub(1)
        .filter(|&p| is_video(p))
        .or(n.checked_sub(2));
    let vp8 = video.then(|| match previous_video {
        Some(p) if !is_frame_end(p) => Vp8Part::Continuation,
        _ => Vp8Part::DeltaStart,
    });
    let fields = RtpFields {
        pt,
        ssrc,
        seq: rtp_seq(n),
        ts: (n as u32).wrapping_mul(3000),
        marker: is_frame_end(n),
    };
    write_packet(buf, fields, vp8, probe, len)
}

/// A publisher of `stream` on the node at `base` (WHIP) and `N` players of it (WHEP), all
/// connected (their DTLS done; the node keys a session a moment later, see [`warm_up`]).
pub async fn publish_and_play<const N: usize>(
    base: &str,
    stream: &str,
    certificate: &DtlsCertificate,
) -> (ClientSession, [ClientSession; N]) {
    let timeout = Duration::from_secs(10);
    let publisher = ClientSession::connect(base, Mode::Publish, stream, certificate, timeout)
        .await
        .expect("publish");
    let mut players = Vec::with_capacity(N);
    for _ in 0..N {
        players.push(
            ClientSession::connect(base, Mode::Play, stream, certificate, timeout)
                .await
                .expect("play"),
        );
    }
    let Ok(players) = players.try_into() else {
        unreachable!("{N} players were connected")
    };
    (publisher, players)
}

/// Sends the publisher's warm-up packets ([`send`]'s, phase 0) until every player has received
/// one that `learn` takes, each checked intact: the node keys a player's session a moment after
/// the client's DTLS is done, and a relayed stream arrives later still. Returns what `learn`
/// took last from each player's packets; panics after `within`.
pub async fn warm_up<T>(
    publisher: &mut ClientSession,
    players: &mut [ClientSession],
    seq: &mut u64,
    start: Instant,
    within: Duration,
    mut learn: impl FnMut(&[u8]) -> Option<T>,
) -> Vec<T> {
    let began = Instant::now();
    let mut learnt: Vec<Option<T>> = players.iter().map(|_| None).collect();
    while learnt.iter().any(Option::is_none) {
        assert!(
            began.elapsed() < within,
            "players never received warm-up packets"
        );
        send(publisher, seq, 0, start).await;
        for (player, slot) in players.iter_mut().zip(&mut learnt) {
            while let Some(packet) = player.recv_rtp(Duration::from_millis(5)).await {
                read_packet(&packet).expect("warm-up packet intact");
                if let Some(value) = learn(&packet) {
                    *slot = Some(value);
                }
            }
        }
    }
    learnt.into_iter().flatten().collect()
}

/// [`warm_up`] until every player has received a packet, whatever it was.
pub async fn warm_up_until_received(
    publisher: &mut ClientSession,
    players: &mut [ClientSession],
    seq: &mut u64,
    start: Instant,
    within: Duration,
) {
    warm_up(publisher, players, seq, start, within, |_| Some(())).await;
}

/// [`warm_up`] until every player has received video, then drains the warm-up packets: how each
/// player numbers the publisher's video, in the players' order.
pub async fn warm_up_video_mappings(
    publisher: &mut ClientSession,
    players: &mut [ClientSession],
    seq: &mut u64,
    start: Instant,
    within: Duration,
) -> Vec<Mapping> {
    let mappings = warm_up(publisher, players, seq, start, within, Mapping::of_video).await;
    drain_rtp(players, Duration::from_millis(50)).await;
    mappings
}

/// Sends `count` of the publisher's packets ([`send`]'s, phase 1), `gap` apart, and checks with
/// [`assert_every_packet_in_order`] that every player gets every one.
pub async fn assert_players_get_every_packet(
    publisher: &mut ClientSession,
    players: &mut [ClientSession],
    seq: &mut u64,
    start: Instant,
    count: u64,
    gap: Duration,
) {
    let first = *seq;
    for _ in 0..count {
        send(publisher, seq, 1, start).await;
        tokio::time::sleep(gap).await;
    }
    assert_every_packet_in_order(players, 1, first..first + count).await;
}

/// Checks that every player gets the publisher's packets `sent` ([`send`]'s, of `phase`),
/// intact, in order and none lost, each on the payload type of its kind.
pub async fn assert_every_packet_in_order(
    players: &mut [ClientSession],
    phase: u32,
    sent: std::ops::Range<u64>,
) {
    for (i, player) in players.iter_mut().enumerate() {
        for expected in sent.clone() {
            let packet = player
                .recv_rtp(Duration::from_secs(3))
                .await
                .unwrap_or_else(|| panic!("player {i} missed packet {expected}"));
            let (probe, pt) = read_packet(&packet).unwrap_or_else(|e| panic!("player {i}: {e}"));
            assert_eq!(
                (probe.phase, probe.sequence),
                (phase, expected),
                "player {i}: out of order, lost, or a packet of another phase"
            );
            let kind_pt = if is_video(expected) {
                VIDEO_PT
            } else {
                AUDIO_PT
            };
            assert_eq!(pt, kind_pt, "player {i}: payload type of packet {expected}");
        }
    }
}

/// Has every player lose every `every`th video packet of the publisher's next `count` once on
/// its way from the node (by the player's numbers, from `mappings`), sends those packets
/// ([`send`]'s, phase 1, 300 µs apart), and checks that every player got every one of them,
/// intact, but the lost ones. Returns the lost packets (the publisher's numbers).
pub async fn send_losing_video(
    publisher: &mut ClientSession,
    players: &mut [ClientSession],
    mappings: &[Mapping],
    (seq, start): (&mut u64, Instant),
    count: u64,
    every: usize,
) -> Vec<u64> {
    let first = *seq;
    let until = first + count;
    let lost: Vec<u64> = (first..until)
        .filter(|&n| is_video(n))
        .step_by(every)
        .collect();
    for (player, mapping) in players.iter().zip(mappings) {
        player.lose_once(mapping.ssrc, lost.iter().map(|&n| mapping.seq(n)));
    }
    while *seq < until {
        send(publisher, seq, 1, start).await;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    for (i, player) in players.iter_mut().enumerate() {
        let mut received = BTreeSet::new();
        while let Some(packet) = player.recv_rtp(Duration::from_millis(300)).await {
            received.insert(read_packet(&packet).expect("packet intact").0.sequence);
        }
        let expected: BTreeSet<u64> = (first..until).filter(|n| !lost.contains(n)).collect();
        assert_eq!(received, expected, "player {i} got all but the lost ones");
    }
    lost
}

/// Has every player NACK the publisher's packets `lost`, by its own numbers (from `mappings`).
pub async fn nack_lost(players: &mut [ClientSession], mappings: &[Mapping], lost: &[u64]) {
    for (player, mapping) in players.iter_mut().zip(mappings) {
        let seqs: Vec<u16> = lost.iter().map(|&n| mapping.seq(n)).collect();
        player.send_rtcp(&nack(mapping.ssrc, &seqs)).await.unwrap();
    }
}

/// Takes the packets the players still have coming, until each was quiet for `quiet`.
pub async fn drain_rtp(players: &mut [ClientSession], quiet: Duration) {
    for player in players {
        while player.recv_rtp(quiet).await.is_some() {}
    }
}

/// How a player numbers the publisher's video ([`send`]'s packets): its SSRC, and the offsets of
/// its sequence numbers and timestamps from the publisher's.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    pub ssrc: u32,
    pub seq_offset: u16,
    pub ts_offset: u32,
}

impl Mapping {
    /// The mapping a video packet a player received shows (`None` for audio): a [`warm_up`]
    /// learner.
    pub fn of_video(packet: &[u8]) -> Option<Mapping> {
        let (probe, pt) = read_packet(packet).ok()?;
        let header = rtp::RtpHeader::parse(packet).ok()?;
        (pt == VIDEO_PT).then(|| Mapping {
            ssrc: header.ssrc().0,
            seq_offset: header
                .sequence_number()
                .wrapping_sub(rtp_seq(probe.sequence)),
            ts_offset: header
                .timestamp()
                .wrapping_sub((probe.sequence as u32).wrapping_mul(3000)),
        })
    }

    /// The player's sequence number of the publisher's `n`th packet.
    pub fn seq(&self, n: u64) -> u16 {
        rtp_seq(n).wrapping_add(self.seq_offset)
    }

    /// The player's timestamp of the publisher's `n`th packet.
    pub fn ts(&self, n: u64) -> u32 {
        (n as u32).wrapping_mul(3000).wrapping_add(self.ts_offset)
    }

    /// Checks that `header`, which `player` got for the publisher's `n`th packet (sent again),
    /// carries the SSRC, sequence number and timestamp the player knows it by.
    pub fn assert_numbers(&self, header: &rtp::RtpHeader<'_>, n: u64, player: usize) {
        assert_eq!(header.ssrc().0, self.ssrc, "player {player}: the SSRC");
        let numbers = (header.sequence_number(), header.timestamp());
        assert_eq!(
            numbers,
            (self.seq(n), self.ts(n)),
            "player {player}: the number and timestamp packet {n} first went out with"
        );
    }
}

/// Plays `stream` from `base` until a packet arrives; retries while the relay is (re)connecting.
pub async fn play_until_media(
    base: &str,
    stream: &str,
    certificate: &DtlsCertificate,
    within: Duration,
) -> ClientSession {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < within,
            "{stream} never played from {base}"
        );
        if let Ok(mut player) = ClientSession::connect(
            base,
            Mode::Play,
            stream,
            certificate,
            Duration::from_secs(5),
        )
        .await
        {
            if let Some(packet) = player.recv_rtp(Duration::from_secs(2)).await {
                read_packet(&packet).expect("relayed packet intact");
                return player;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A publisher sending synthetic media from its own task until stopped.
pub struct Streaming {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<ClientSession>,
}

impl Streaming {
    /// Starts sending, numbering packets from `seq`, one every 5 ms.
    pub fn start(mut publisher: ClientSession, mut seq: u64) -> Streaming {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            while stopped.try_recv().is_err() {
                send(&mut publisher, &mut seq, 1, start).await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            publisher
        });
        Streaming { stop, task }
    }

    /// Stops sending and gives the publisher back.
    pub async fn stop(self) -> ClientSession {
        let _ = self.stop.send(());
        self.task.await.expect("the sending task")
    }
}

/// The per-core counters of a node's `/api/stats`, as the cores last published them: a core
/// publishes its counters with its work, at most every 20 ms, and 50 ms after it goes quiet.
pub struct CoreStats {
    cores: Vec<serde_json::Value>,
}

impl CoreStats {
    /// The counters as published now.
    pub async fn fetch(base: &str) -> CoreStats {
        let mut json = stats_json(base).await;
        let serde_json::Value::Array(cores) = json["cores"].take() else {
            panic!("no cores in {json}")
        };
        CoreStats { cores }
    }

    /// The counters once the cores have published what they did so far (twice their latest).
    pub async fn settled(base: &str) -> CoreStats {
        tokio::time::sleep(Duration::from_millis(100)).await;
        CoreStats::fetch(base).await
    }

    /// `key` summed over the cores.
    pub fn sum(&self, key: &str) -> u64 {
        self.cores.iter().map(|core| Self::get(core, key)).sum()
    }

    /// The cores whose `key` is not zero.
    pub fn cores_with(&self, key: &str) -> usize {
        self.cores.iter().filter(|c| Self::get(c, key) > 0).count()
    }

    fn get(core: &serde_json::Value, key: &str) -> u64 {
        core[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in {core}"))
    }
}

/// A node's `/api/stats`: its cores' counters, its streams, its panics.
pub async fn stats_json(base: &str) -> serde_json::Value {
    get_json(&format!("{base}/api/stats")).await
}

/// A node's WCS REST listing of its streams (`/rest-api/stream/find_all`).
pub async fn stream_listing(base: &str) -> serde_json::Value {
    get_json(&format!("{base}/rest-api/stream/find_all")).await
}

/// GETs `url`, which must answer 200 with JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    let response = rtcdn_bench::http::request(Method::GET, url, None, String::new())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status, StatusCode::OK, "{url}: {}", response.body);
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// A per-core counter of a node's `/api/stats`, summed over its cores.
pub async fn core_stat(base: &str, key: &str) -> u64 {
    CoreStats::fetch(base).await.sum(key)
}

/// Polls [`core_stat`] until it reaches `want` or 3 s pass (see [`CoreStats`] for when cores
/// publish); returns the last value.
pub async fn wait_for_core_stat(base: &str, key: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = core_stat(base, key).await;
        if got >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response with all its headers (`rtcdn_bench::http::request` keeps only `Location`).
pub struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request with arbitrary headers and a byte body.
pub async fn raw_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Raw {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect to the node");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body))).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Raw {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// POSTs a fresh SDP offer (`mode` decides publish or play) to a WHIP/WHEP `url`, with
/// `Authorization: Bearer` when `bearer` is given. Nothing is meant to connect.
pub async fn post_sdp_offer(url: &str, mode: Mode, bearer: Option<&str>) -> Raw {
    let certificate = DtlsCertificate::generate().unwrap();
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/sdp")];
    if let Some(value) = authorization.as_deref() {
        headers.push(("authorization", value));
    }
    let offer = rtcdn_bench::client::sdp_offer(mode, &certificate);
    raw_request(Method::POST, url, &headers, offer.into_bytes()).await
}

/// A generic NACK (RFC 4585) for `seqs` of `media_ssrc`, one pair per number.
pub fn nack(media_ssrc: u32, seqs: &[u16]) -> Vec<u8> {
    let pairs: Vec<rtp::rtcp::NackPair> = seqs
        .iter()
        .map(|&pid| rtp::rtcp::NackPair { pid, blp: 0 })
        .collect();
    let nack = rtp::rtcp::Nack {
        sender_ssrc: rtp::Ssrc(7),
        media_ssrc: rtp::Ssrc(media_ssrc),
        pairs: rtp::rtcp::Items::from_slice(&pairs),
    };
    let mut buf = vec![0u8; 16 + 4 * pairs.len()];
    let n = rtp::rtcp::Rtcp::Nack(nack).write_to(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

pub const SIMULCAST_SSRCS: [u32; 3] = [0x1000_0001, 0x2000_0001, 0x3000_0001];
/// Packets of a layer that carry its rid, as Chromium's first packets do.
pub const RID_PACKETS: u16 = 10;

/// One simulcast layer's numbering.
#[derive(Default, Clone, Copy)]
pub struct SimulcastLayer {
    pub seq: u16,
    pub ts: u32,
    pub sent: u16,
}

/// A publisher of three simulcast layers (`OfferOptions::simulcast`), each on its own SSRC.
pub struct SimulcastPublisher {
    pub session: ClientSession,
    pub layers: [SimulcastLayer; 3],
}

impl SimulcastPublisher {
    /// Publishes `stream` on the node at `base` with three layers, each numbered from its own
    /// start (1000, 20 000, 40 000).
    pub async fn connect(
        base: &str,
        stream: &str,
        certificate: &DtlsCertificate,
    ) -> SimulcastPublisher {
        let options = rtcdn_bench::client::OfferOptions {
            simulcast: true,
            ..Default::default()
        };
        let timeout = Duration::from_secs(10);
        let session =
            ClientSession::connect_with(base, Mode::Publish, stream, certificate, timeout, options)
                .await
                .expect("publish simulcast");
        SimulcastPublisher {
            session,
            layers: [1000, 20_000, 40_000].map(|seq| SimulcastLayer {
                seq,
                ..SimulcastLayer::default()
            }),
        }
    }

    /// Sends a frame of `packets` packets on `layer`; the payload names the layer, and a
    /// keyframe's first packet starts like a VP8 keyframe (RFC 7741).
    pub async fn frame(&mut self, layer: usize, packets: usize, keyframe: bool) {
        self.next_frame(layer);
        for i in 0..packets {
            self.send_packet(layer, 400, keyframe && i == 0, &[]).await;
        }
    }

    /// Moves `layer`'s timestamp on to its next frame.
    pub fn next_frame(&mut self, layer: usize) {
        let numbering = &mut self.layers[layer];
        numbering.ts = numbering.ts.wrapping_add(3000);
    }

    /// Sends the next packet of `layer`, in its current frame, with `payload_len` payload
    /// bytes: the first two start like a VP8 keyframe when `keyframe_start` (else like the
    /// rest of a frame), the third names the layer, `tail` follows. The layer's first
    /// [`RID_PACKETS`] packets carry its rid. Returns the packet's number within its layer.
    pub async fn send_packet(
        &mut self,
        layer: usize,
        payload_len: usize,
        keyframe_start: bool,
        tail: &[u8],
    ) -> u16 {
        let numbering = &mut self.layers[layer];
        let ext = [rtp::ExtensionElement {
            id: rtcdn_bench::client::RID_EXT_ID,
            data: rtcdn_bench::client::SIMULCAST_RIDS[layer].as_bytes(),
        }];
        let mut header = rtp::RtpHeaderBuilder::new(
            rtp::Pt::new(VIDEO_PT),
            numbering.seq,
            numbering.ts,
            rtp::Ssrc(SIMULCAST_SSRCS[layer]),
        );
        if numbering.sent < RID_PACKETS {
            header.extensions = &ext;
        }
        let mut p = vec![0u8; header.encoded_len() + payload_len];
        let at = header.write_to(&mut p).unwrap();
        p[at] = if keyframe_start { 0x10 } else { 0x00 };
        p[at + 1] = if keyframe_start { 0x00 } else { 0x01 };
        p[at + 2] = layer as u8;
        p[at + 3..at + 3 + tail.len()].copy_from_slice(tail);
        let number = numbering.sent;
        numbering.seq = numbering.seq.wrapping_add(1);
        numbering.sent += 1;
        self.session.send_rtp(&p).await.unwrap();
        number
    }

    /// Whether a PLI for `layer`'s SSRC arrives within `window`.
    pub async fn pli_for(&mut self, layer: usize, window: Duration) -> bool {
        let deadline = Instant::now() + window;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(packet) = self.session.recv_rtcp(left).await else {
                return false;
            };
            if rtp::rtcp::RtcpIter::new(&packet)
                .flatten()
                .any(|r| matches!(r, rtp::rtcp::Rtcp::Pli(p) if p.media_ssrc.0 == SIMULCAST_SSRCS[layer]))
            {
                return true;
            }
        }
        false
    }
}

/// A video packet a player received, as [`SimulcastPublisher::frame`] wrote it: its sequence
/// number, the layer its payload names, and whether it starts a keyframe. `None` for anything
/// else.
pub fn simulcast_video(packet: &[u8]) -> Option<(u16, u8, bool)> {
    let header = rtp::RtpHeader::parse(packet).ok()?;
    let payload = header.payload();
    if header.payload_type().value() != VIDEO_PT || payload.len() < 3 {
        return None;
    }
    let keyframe = payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0;
    Some((header.sequence_number(), payload[2], keyframe))
}

/// A `redis-server` on a free 127.0.0.1 port with no persistence, killed on drop (Debian's
/// package; `scripts/test.sh` installs it).
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian: apt-get install redis-server; scripts/test.sh installs it)");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server does not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pings(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node on loopback with one media core in the cluster of `redis_url`.
pub fn cluster_node(redis_url: &str) -> Node {
    let mut config = loopback_config(1);
    config.rtmp.enabled = false;
    config.cluster = Some(ClusterConfig::new(redis_url));
    Node::start(&config).expect("node starts")
}

/// A node's `/metrics` text, with the admin token when one is given.
pub async fn metrics_text(base: &str, admin_token: Option<&str>) -> String {
    let authorization = admin_token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|v| vec![("authorization", v)])
        .unwrap_or_default();
    let scrape = raw_request(
        Method::GET,
        &format!("{base}/metrics"),
        &headers,
        Vec::new(),
    )
    .await;
    assert_eq!(scrape.status, StatusCode::OK, "{}", scrape.body);
    scrape.body
}

/// The sum of the `/metrics` samples whose line starts with `series` (`name{`) and holds every
/// one of `labels` (`key="value"`).
pub fn sample_sum(text: &str, series: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// What a player saw of one SSRC: the last sequence number and timestamp.
#[derive(Debug, Clone, Copy)]
pub struct TrackNumbers {
    pub seq: u16,
    pub ts: u32,
}

/// Receives RTP on `player` until `until` says stop or `limit` passes without a packet;
/// checks that each SSRC's sequence numbers run on without a gap or a repeat and its
/// timestamps never go back. Returns the time of the last packet received.
pub async fn follow_numbering(
    player: &mut ClientSession,
    tracks: &mut HashMap<u32, TrackNumbers>,
    limit: Duration,
    mut until: impl FnMut(u64) -> bool,
) -> Instant {
    let mut last = Instant::now();
    while let Some(packet) = player.recv_rtp(limit).await {
        last = Instant::now();
        let header = rtp::RtpHeader::parse(&packet).expect("RTP");
        let (ssrc, seq, ts) = (
            header.ssrc().0,
            header.sequence_number(),
            header.timestamp(),
        );
        if let Some(before) = tracks.get(&ssrc) {
            assert_eq!(
                seq,
                before.seq.wrapping_add(1),
                "SSRC {ssrc:#x}: sequence numbers run on ({before:?} then {seq})"
            );
            assert!(
                ts.wrapping_sub(before.ts) < 0x8000_0000,
                "SSRC {ssrc:#x}: the timestamp went back ({before:?} then {ts})"
            );
        }
        tracks.insert(ssrc, TrackNumbers { seq, ts });
        let (probe, _) = read_packet(&packet).expect("intact");
        if until(probe.sequence) {
            break;
        }
    }
    last
}

/// ffmpeg publishing `seconds` of test pattern and tone to `url`, as the users do.
pub fn ffmpeg_publish(url: &str, seconds: u32) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-profile:v",
            "baseline",
        ])
        .args(["-tune", "zerolatency"])
        .args(["-g", "60", "-bf", "0", "-c:a", "aac", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (scripts/test.sh installs it)")
}

/// The H.264 NAL unit types a packet carries: its single NAL unit, or the unit an FU-A
/// fragment starts (none for a later fragment).
pub fn nal_types(payload: &[u8]) -> Option<u8> {
    let t = payload.first()? & 0x1F;
    if t == 28 {
        let fu = payload.get(1)?;
        return (fu & 0x80 != 0).then_some(fu & 0x1F);
    }
    Some(t)
}

/// Every RTP packet `player` receives for `window`, in order.
pub async fn collect_rtp(player: &mut ClientSession, window: Duration) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Some(p) = player.recv_rtp(Duration::from_millis(300)).await {
            packets.push(p);
        }
    }
    packets
}

/// Plays `stream` once it is live (the node registers it at the encoder's sequence header).
pub async fn play_when_live(
    base: &str,
    stream: &str,
    certificate: &DtlsCertificate,
) -> ClientSession {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let timeout = Duration::from_secs(10);
        match ClientSession::connect(base, Mode::Play, stream, certificate, timeout).await {
            Ok(player) => return player,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the RTMP stream never went live: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// x265's H.265 as an RTMP encoder publishes it (ffmpeg, ultrafast, no B-frames, an IDR each 30
/// frames, 320x240 test pattern): the VPS, SPS and PPS its `hvcC` carries, and each access
/// unit's NAL units without delimiters (the first without those parameter sets; x265 repeats
/// them in each later IDR's unit).
pub struct X265Stream {
    pub parameter_sets: Vec<Vec<u8>>,
    pub units: Vec<Vec<Vec<u8>>>,
    /// Which units hold an IRAP picture.
    pub keyframes: Vec<bool>,
}

impl X265Stream {
    /// Encodes `frames` frames (ffmpeg's libx265 must be installed: scripts/test.sh does).
    pub fn encode(frames: usize) -> X265Stream {
        let output = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error"])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
            .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"])
            .args(["-c:v", "libx265", "-preset", "ultrafast", "-x265-params"])
            .arg("keyint=30:min-keyint=30:scenecut=0:bframes=0:aud=1:log-level=error")
            .args(["-f", "hevc", "pipe:1"])
            .output()
            .expect("ffmpeg runs (scripts/test.sh installs it)");
        assert!(output.status.success(), "{output:?}");
        let mut units: Vec<Vec<Vec<u8>>> = Vec::new();
        for nal in annex_b_nal_units(&output.stdout) {
            if rtp::h265::nal_type(nal[0]) == rtp::h265::NAL_AUD {
                units.push(Vec::new());
            } else {
                units.last_mut().expect("an AUD first").push(nal.to_vec());
            }
        }
        assert_eq!(units.len(), frames);
        let (parameter_sets, first) = units[0]
            .iter()
            .cloned()
            .partition(|nal| is_h265_parameter_set(nal));
        units[0] = first;
        let parameter_sets: Vec<Vec<u8>> = parameter_sets;
        assert_eq!(
            parameter_sets.len(),
            3,
            "x265's VPS, SPS and PPS come first"
        );
        let keyframes = units
            .iter()
            .map(|unit| {
                unit.iter()
                    .any(|nal| rtp::h265::is_irap(rtp::h265::nal_type(nal[0])))
            })
            .collect();
        X265Stream {
            parameter_sets,
            units,
            keyframes,
        }
    }

    /// The `hvcC` of the parameter sets (the SPS's profile, tier, level and format).
    pub fn hvcc(&self) -> Vec<u8> {
        let sps = rtp::H265Sps::parse(&self.parameter_sets[1]).expect("x265's SPS parses");
        assert_eq!((sps.width, sps.height), (320, 240));
        let [vps, sps_nal, pps] = [0, 1, 2].map(|i| self.parameter_sets[i].as_slice());
        rtcdn::rtmp::flv::HevcConfig::from_sps(&sps, 4, [vps, sps_nal, pps]).write()
    }

    /// Each unit as an `hvc1` frame body with its keyframe flag: NAL units with 4-byte length
    /// prefixes, after a zero composition time where `composition(keyframe)` says the frame
    /// goes as CodedFrames (CodedFramesX has none).
    pub fn bodies(&self, composition: impl Fn(bool) -> bool) -> Vec<(bool, Vec<u8>)> {
        self.units
            .iter()
            .zip(&self.keyframes)
            .map(|(unit, &keyframe)| {
                let mut body = if composition(keyframe) {
                    vec![0, 0, 0]
                } else {
                    Vec::new()
                };
                for nal in unit {
                    body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    body.extend_from_slice(nal);
                }
                (keyframe, body)
            })
            .collect()
    }
}

/// The NAL units of an Annex B byte stream.
pub fn annex_b_nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let starts: Vec<usize> = stream
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1])
        .map(|(i, _)| i + 3)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).map_or(stream.len(), |next| next - 3);
            let mut nal = &stream[start..end];
            // A four-byte start code's leading zero belongs to no unit.
            while nal.last() == Some(&0) {
                nal = &nal[..nal.len() - 1];
            }
            nal
        })
        .collect()
}

/// An H.265 VPS, SPS or PPS.
pub fn is_h265_parameter_set(nal: &[u8]) -> bool {
    matches!(
        rtp::h265::nal_type(nal[0]),
        rtp::h265::NAL_VPS | rtp::h265::NAL_SPS | rtp::h265::NAL_PPS
    )
}
