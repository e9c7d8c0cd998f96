//! The load run: N publishers, M players per stream, over WHIP/WHEP or the Flashphoner
//! WebSocket protocol, against one node or an origin whose `/lb` spreads players over edges.
//!
//! Phases: publishers connect and start sending (warm-up packets); players ramp up (the session
//! ramp is measured: setup time and time to first packet); once every player has received, the
//! measured window starts: every packet carries phase 1, and loss, order, corruption and one-way
//! latency are counted per player; then publishers stop, in-flight packets drain, sessions close.
//!
//! With `player_loss_percent`, every player drops that share of its video on arrival and asks
//! for it again with NACKs ([`crate::repair`]): a measured packet that comes back fills its gap
//! late and counts as received, and the report adds what was lost, asked for and repaired, with
//! the nodes' own repair counters over the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rtcdn::dtls::DtlsCertificate;
use serde_json::{json, Value};

use crate::client::{ClientSession, Mode, OfferOptions, AUDIO_PT, VIDEO_PT};
use crate::limit::{LimitOptions, LimitReport};
use crate::link::Transport;
use crate::media::{
    read_media, write_packet, MediaEvent, MediaShape, Probe, ProbeError, RtpFields, Shaper, Vp8Part,
};
use crate::repair::RepairCounts;
use crate::rtp_publish::RtpPublisher;
use crate::stats::{median, own_cpu, process_cpu, Histogram};

/// Signalling protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalling {
    /// WHIP to publish, WHEP to play.
    Whip,
    /// The Flashphoner WebSocket protocol (publishStream / playStream).
    Ws,
}

/// Where the run's streams come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The bench publishes each stream to the server over `signalling`.
    Signalled,
    /// The bench sends each stream's packets as plain RTP to a server's input ports (see
    /// [`crate::rtp_publish`]); players play over `signalling`.
    Rtp(std::net::SocketAddr),
    /// Something else publishes the streams (another bench, a peer's own source): the bench
    /// only plays. Packets count as measured when they arrive within the window.
    Elsewhere,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The node (or origin) base URL, `http://host:port`.
    pub server: String,
    /// WebSocket URL for `Signalling::Ws` publishers; `None`: `ws://` + the server's authority.
    pub ws_url: Option<String>,
    /// Signalling protocol for publishers and players.
    pub signalling: Signalling,
    /// Players ask `GET {server}/lb` for an edge, each player separately.
    pub lb: bool,
    /// Stream name prefix; streams are `{prefix}-{i}`.
    pub stream: String,
    /// Published streams.
    pub streams: usize,
    /// Players per stream.
    pub players: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// The media each publisher sends.
    pub shape: MediaShape,
    /// Session setups in flight at once during the ramp.
    pub concurrency: usize,
    /// Session setups started per second during the ramp (0: as fast as `concurrency` allows).
    pub rate: f64,
    /// Time one session may take to connect (retries on refusal included, for CDN edges that
    /// do not have the stream yet).
    pub setup_timeout: Duration,
    /// Time every player may take to receive its first packet.
    pub warmup_timeout: Duration,
    /// How long to wait for in-flight packets after the publishers stop.
    pub drain: Duration,
    /// The node processes whose CPU time to read (`/proc/PID/stat`).
    pub server_pids: Vec<u32>,
    /// Nodes whose residence histogram (`/api/stats`) to report, besides `server`: a CDN's
    /// edges.
    pub stats_servers: Vec<String>,
    /// Measure the raw forwarding limit first (fan-out = players per stream) and quote ratios.
    pub baseline: bool,
    /// Print live progress to stderr every second.
    pub progress: bool,
    /// Share of its video datagrams (percent) each player drops on arrival, and then asks for
    /// again with NACKs; 0: none dropped, no NACKs sent.
    pub player_loss_percent: f64,
    /// How long after the publishers start the players' ramp starts (e.g. a keyframe interval,
    /// so players can start on the node's cached keyframe).
    pub ramp_delay: Duration,
    /// Players offer transport-cc, so the node numbers every packet it sends them (the
    /// players send no feedback): what numbering costs the node.
    pub transport_cc: bool,
    /// How publishers and players reach the node's media ports: UDP, or ICE-TCP.
    pub transport: Transport,
    /// Where the streams come from.
    pub publish: Publish,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            server: "http://127.0.0.1:8080".into(),
            ws_url: None,
            signalling: Signalling::Whip,
            lb: false,
            stream: "bench".into(),
            streams: 1,
            players: 10,
            seconds: 5.0,
            shape: MediaShape::default(),
            concurrency: 16,
            rate: 0.0,
            setup_timeout: Duration::from_secs(15),
            warmup_timeout: Duration::from_secs(15),
            drain: Duration::from_secs(1),
            server_pids: Vec::new(),
            stats_servers: Vec::new(),
            baseline: false,
            progress: false,
            player_loss_percent: 0.0,
            ramp_delay: Duration::ZERO,
            transport_cc: false,
            transport: Transport::Udp,
            publish: Publish::Signalled,
        }
    }
}

const PHASE_WARMUP: u32 = 0;
const PHASE_MEASURED: u32 = 1;
/// With injected loss, after the window: players drop nothing more, and the publishers go on for
/// [`LOSS_TAIL`], so every packet a player dropped is followed by one it receives (a gap shows a
/// loss only once a later packet arrives) and is asked for.
const PHASE_TAIL: u32 = 2;
const LOSS_TAIL: Duration = Duration::from_millis(300);
/// How long a player's leaving (WHEP DELETE, WebSocket close) may take at the end of a run.
const PLAYER_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Skipped packet numbers a player keeps for late copies (repairs) to fill: far more than the
/// packets a second of loss skips at the rates the bench sends.
const MAX_SKIPPED: u64 = 4096;

/// The per-core counters of a node's `/api/stats` about loss repair and keyframe starts that the
/// report quotes; a node that lacks one (an older node, or `rtx_sent` before RTX) is not
/// reported for it.
pub const NODE_REPAIR_COUNTERS: [&str; 9] = [
    "retransmissions_sent",
    "rtx_sent",
    "nacks_forwarded_upstream",
    "retransmissions_throttled",
    "upstream_losses_requested",
    "upstream_losses_recovered",
    "upstream_losses_abandoned",
    "keyframe_cache_hits",
    "keyframe_cache_misses",
];

struct Shared {
    clock: Instant,
    phase: AtomicU32,
    stop: AtomicBool,
    done: AtomicBool,
    /// Every player has left (and told the node): the publishers may go.
    players_gone: AtomicBool,
    players_connected: AtomicUsize,
    players_failed: AtomicUsize,
    players_warm: AtomicUsize,
    sent: AtomicU64,
}

#[derive(Default)]
struct PublisherCounters {
    measured: AtomicU64,
    error: Mutex<Option<String>>,
}

#[derive(Default)]
struct PlayerStats {
    stream: usize,
    connected: bool,
    setup: Option<Duration>,
    /// From the session request to the first RTP packet, and to the first packet of a keyframe.
    first_packet: Option<Duration>,
    first_keyframe: Option<Duration>,
    received_any: u64,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Sequence numbers skipped (a live loss estimate; the report counts against what was sent).
    gaps: u64,
    /// Measured packets that filled a gap: repaired ones, when the player NACKs.
    late: u64,
    corrupted: u64,
    foreign: u64,
    /// The newest publisher packet number seen (warm-up or measured).
    last_sequence: Option<u64>,
    /// Numbers skipped before `last_sequence` and not received since; kept only when the player
    /// NACKs, at most [`MAX_SKIPPED`].
    skipped: BTreeSet<u64>,
    repair: RepairCounts,
    latency_us: Histogram,
    interval_latency_us: Histogram,
    ended_early: Option<String>,
    error: Option<String>,
}

/// Server-side counters from `/api/stats`, summed over cores.
#[derive(Debug, Clone, Default)]
struct NodeCounters {
    rtp_received: u64,
    rtp_sent: u64,
    srtp_rejected: u64,
    handoff_dropped: u64,
    /// Allocations made by the node's media threads, all and on the forwarding path; `None`
    /// when the node does not count them.
    allocations: Option<u64>,
    media_allocations: Option<u64>,
    /// Residence histogram buckets, `(low ns, high ns) -> count`, summed over cores.
    residence: BTreeMap<(u64, u64), u64>,
    /// The [`NODE_REPAIR_COUNTERS`] the node has, summed over cores.
    repair: BTreeMap<&'static str, u64>,
}

/// How long packets stayed in one node during the window (its `residence_ns` histogram):
/// kernel receive stamp to the send of what they caused.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResidence {
    pub server: String,
    pub packets: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl NodeResidence {
    /// The window's residence: `after - before`, bucket by bucket; `None` if the node measured
    /// nothing (an older node, or no timestamps).
    fn between(server: &str, before: &NodeCounters, after: &NodeCounters) -> Option<Self> {
        let mut histogram = Histogram::default();
        for (&(low, high), &count) in &after.residence {
            let n = count.saturating_sub(before.residence.get(&(low, high)).copied().unwrap_or(0));
            // The bucket's middle: the node's buckets are at most 1/8 wide.
            histogram.record_n(low + (high - low) / 2, n);
        }
        if histogram.is_empty() {
            return None;
        }
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Some(Self {
            server: server.to_owned(),
            packets: histogram.len(),
            p50_us: us(histogram.quantile(0.5)),
            p99_us: us(histogram.quantile(0.99)),
            p999_us: us(histogram.quantile(0.999)),
            max_us: us(histogram.max()),
        })
    }
}

/// What a run found. `to_json` gives the flat object `--json` prints.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub signalling: String,
    /// `udp` or `tcp` (`RunOptions::transport`).
    pub transport: String,
    pub streams: usize,
    pub players_requested: usize,
    pub publishers_connected: usize,
    pub players_connected: usize,
    pub players_failed: usize,
    pub players_without_packets: usize,
    pub players_ended_early: usize,
    pub ramp_seconds: f64,
    pub sessions_per_second: f64,
    pub setup_ms_p50: f64,
    pub setup_ms_p99: f64,
    pub setup_ms_max: f64,
    /// Session request to first RTP packet, over players.
    pub first_packet_ms_p50: f64,
    pub first_packet_ms_p95: f64,
    pub first_packet_ms_p99: f64,
    pub first_packet_ms_max: f64,
    /// Session request to the first video packet that starts a keyframe, over the players that
    /// got one.
    pub first_keyframe_ms_p50: f64,
    pub first_keyframe_ms_p95: f64,
    pub first_keyframe_ms_max: f64,
    pub players_without_keyframe: usize,
    pub measured_seconds: f64,
    pub packets_sent: u64,
    pub packets_expected: u64,
    pub packets_received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub corrupted: u64,
    /// Measured packets that arrived after a later one and filled its gap (repairs), counted in
    /// `packets_received`; only when players NACK.
    pub packets_late: u64,
    pub loss: f64,
    /// The injected loss (`RunOptions::player_loss_percent`), and the players' sums over their
    /// whole sessions (warm-up included): video packets dropped on first arrival, copies
    /// dropped again, packets NACKed, numbers requested (retries included), NACK packets sent,
    /// packets that came back, and those given up or still missing at the end.
    pub player_loss_percent: f64,
    pub packets_lost: u64,
    pub packets_lost_again: u64,
    pub packets_nacked: u64,
    /// Of those, packets the injected loss had not dropped (reordered or lost on the way).
    pub packets_nacked_undropped: u64,
    pub nack_requests: u64,
    pub nacks_sent: u64,
    pub packets_repaired: u64,
    pub packets_unrepaired: u64,
    /// `packets_repaired / (packets_repaired + packets_unrepaired)`; `None` with nothing missed.
    pub repair_ratio: Option<f64>,
    pub out_pps: f64,
    pub in_pps: f64,
    pub latency_us_p50: u64,
    pub latency_us_p90: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub server_cpu_ns_per_packet: Option<f64>,
    pub node_rtp_sent_pps: Option<f64>,
    pub node_srtp_rejected: Option<u64>,
    pub node_handoff_dropped: Option<u64>,
    /// Heap allocations on the node's media threads in the window, and per packet it sent.
    pub node_allocations: Option<u64>,
    pub node_allocations_per_packet: Option<f64>,
    /// Of those, the ones made while forwarding (SRTP/SRTCP in, packets between cores).
    pub node_media_allocations: Option<u64>,
    /// Per node (`--server` first, then `--stats-server`s): time packets spent in it.
    pub residence: Vec<NodeResidence>,
    /// The nodes' [`NODE_REPAIR_COUNTERS`] over the whole run (before the publishers connect to
    /// after the drain), summed over cores and over `--server` and the `--stats-server`s; a
    /// counter no node has is absent.
    pub node_repair: BTreeMap<String, u64>,
    pub client_cpu_cores: Option<f64>,
    pub baseline: Option<LimitReport>,
    pub first_errors: Vec<String>,
}

impl RunReport {
    /// Server CPU per forwarded packet as a multiple of the raw limit's CPU per packet.
    pub fn baseline_ratio(&self) -> Option<f64> {
        let baseline = self.baseline.as_ref()?.cpu_ns_per_packet;
        Some(self.server_cpu_ns_per_packet? / baseline).filter(|r| r.is_finite())
    }

    /// Whether every connected player received every measured packet intact and in order (a
    /// repaired packet counts as received, late), and, with injected loss, got back every
    /// packet it missed over its whole session.
    pub fn clean(&self) -> bool {
        self.players_failed == 0
            && self.players_without_packets == 0
            && self.packets_received == self.packets_expected
            && self.corrupted == 0
            && self.out_of_order == 0
            && self.duplicates == 0
            && self.packets_unrepaired == 0
    }

    /// The report as a flat JSON object.
    pub fn to_json(&self) -> Value {
        let mut value = self.to_json_without_node_repair();
        if let Some(object) = value.as_object_mut() {
            for key in NODE_REPAIR_COUNTERS {
                object.insert(format!("node_{key}"), json!(self.node_repair.get(key)));
            }
        }
        value
    }

    fn to_json_without_node_repair(&self) -> Value {
        json!({
            "signalling": self.signalling,
            "transport": self.transport,
            "streams": self.streams,
            "players_requested": self.players_requested,
            "publishers_connected": self.publishers_connected,
            "players_connected": self.players_connected,
            "players_failed": self.players_failed,
            "players_without_packets": self.players_without_packets,
            "players_ended_early": self.players_ended_early,
            "ramp_seconds": round3(self.ramp_seconds),
            "sessions_per_second": round1(self.sessions_per_second),
            "setup_ms_p50": round1(self.setup_ms_p50),
            "setup_ms_p99": round1(self.setup_ms_p99),
            "setup_ms_max": round1(self.setup_ms_max),
            "first_packet_ms_p50": round1(self.first_packet_ms_p50),
            "first_packet_ms_p95": round1(self.first_packet_ms_p95),
            "first_packet_ms_p99": round1(self.first_packet_ms_p99),
            "first_packet_ms_max": round1(self.first_packet_ms_max),
            "first_keyframe_ms_p50": round1(self.first_keyframe_ms_p50),
            "first_keyframe_ms_p95": round1(self.first_keyframe_ms_p95),
            "first_keyframe_ms_max": round1(self.first_keyframe_ms_max),
            "players_without_keyframe": self.players_without_keyframe,
            "measured_seconds": round3(self.measured_seconds),
            "packets_sent": self.packets_sent,
            "packets_expected": self.packets_expected,
            "packets_received": self.packets_received,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "corrupted": self.corrupted,
            "packets_late": self.packets_late,
            "loss": self.loss,
            "player_loss_percent": self.player_loss_percent,
            "packets_lost": self.packets_lost,
            "packets_lost_again": self.packets_lost_again,
            "packets_nacked": self.packets_nacked,
            "packets_nacked_undropped": self.packets_nacked_undropped,
            "nack_requests": self.nack_requests,
            "nacks_sent": self.nacks_sent,
            "packets_repaired": self.packets_repaired,
            "packets_unrepaired": self.packets_unrepaired,
            "repair_ratio": self.repair_ratio.map(|r| (r * 10_000.0).round() / 10_000.0),
            "out_pps": self.out_pps.round(),
            "in_pps": self.in_pps.round(),
            "latency_us_p50": self.latency_us_p50,
            "latency_us_p90": self.latency_us_p90,
            "latency_us_p99": self.latency_us_p99,
            "latency_us_max": self.latency_us_max,
            "server_cpu_seconds": self.server_cpu_seconds.map(round3),
            "server_cpu_cores": self.server_cpu_cores.map(round3),
            "server_cpu_ns_per_packet": self.server_cpu_ns_per_packet.map(round1),
            "node_rtp_sent_pps": self.node_rtp_sent_pps.map(f64::round),
            "node_srtp_rejected": self.node_srtp_rejected,
            "node_handoff_dropped": self.node_handoff_dropped,
            "node_allocations": self.node_allocations,
            "node_allocations_per_packet": self.node_allocations_per_packet,
            "node_media_allocations": self.node_media_allocations,
            "residence": self.residence.iter().map(|r| (r.server.clone(), json!({
                "packets": r.packets,
                "p50_us": r.p50_us,
                "p99_us": r.p99_us,
                "p999_us": r.p999_us,
                "max_us": r.max_us,
            }))).collect::<serde_json::Map<_, _>>(),
            "client_cpu_cores": self.client_cpu_cores.map(round3),
            "baseline": self.baseline.as_ref().map(LimitReport::to_json),
            "server_cpu_vs_baseline": self.baseline_ratio().map(|r| (r * 100.0).round() / 100.0),
            "errors": self.first_errors,
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// Where one session signals: a WHIP/WHEP base URL or a WebSocket URL.
async fn target_for(options: &RunOptions, mode: Mode, stream: &str) -> anyhow::Result<String> {
    let (host_port, ws_port) = if options.lb && mode == Mode::Play {
        // `?stream=`: a dynamic CDN sends a stream's players to the same few edges (the static
        // CDN's balancer ignores it).
        let url = format!(
            "{}/lb?stream={}",
            options.server.trim_end_matches('/'),
            stream
        );
        let response = crate::http::request(hyper::Method::GET, &url, None, String::new())
            .await
            .context("GET /lb")?;
        if !response.status.is_success() {
            bail!(
                "GET /lb: HTTP {}: {}",
                response.status.as_u16(),
                response.body
            );
        }
        let lb: Value = serde_json::from_str(&response.body).context("the /lb answer is JSON")?;
        let server = lb["server"].as_str().context("/lb without a server")?;
        let port = lb["ws"]
            .as_u64()
            .context("/lb without a ws port (wss-only edges are not supported by the bench)")?;
        let host = if server.contains(':') {
            format!("[{server}]")
        } else {
            server.to_owned()
        };
        (format!("{host}:{port}"), true)
    } else {
        (authority(&options.server).to_owned(), false)
    };
    Ok(match options.signalling {
        Signalling::Whip => format!("http://{host_port}"),
        Signalling::Ws => match (&options.ws_url, ws_port) {
            (Some(url), false) => url.clone(),
            _ => format!("ws://{host_port}/"),
        },
    })
}

async fn connect_once(
    options: &RunOptions,
    mode: Mode,
    stream: &str,
    certificate: &DtlsCertificate,
    timeout: Duration,
) -> anyhow::Result<ClientSession> {
    let target = target_for(options, mode, stream).await?;
    let offer = OfferOptions {
        transport_cc: options.transport_cc && mode == Mode::Play,
        transport: options.transport,
        ..OfferOptions::default()
    };
    let session = match options.signalling {
        Signalling::Whip => {
            ClientSession::connect_with(&target, mode, stream, certificate, timeout, offer).await
        }
        Signalling::Ws => {
            ClientSession::connect_ws_with(&target, mode, stream, certificate, timeout, None, offer)
                .await
        }
    };
    session.with_context(|| {
        format!(
            "{} {stream} at {target}",
            if mode == Mode::Publish {
                "publish"
            } else {
                "play"
            }
        )
    })
}

/// Connects, retrying refusals (a CDN edge gets the stream a moment after the origin) until
/// `options.setup_timeout`.
async fn connect(
    options: &RunOptions,
    mode: Mode,
    stream: &str,
    certificate: &DtlsCertificate,
) -> anyhow::Result<ClientSession> {
    let deadline = Instant::now() + options.setup_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connect_once(
            options,
            mode,
            stream,
            certificate,
            left.max(Duration::from_millis(100)),
        )
        .await
        {
            Ok(session) => return Ok(session),
            Err(e) if Instant::now() + Duration::from_millis(100) >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A stream's sender: a WHIP or WebSocket session, or plain RTP to a server's ports.
enum Source {
    Session(ClientSession),
    Rtp(RtpPublisher),
}

impl Source {
    fn video_ssrc(&self) -> u32 {
        match self {
            Source::Session(s) => s.video_ssrc,
            Source::Rtp(r) => r.video_ssrc,
        }
    }

    fn audio_ssrc(&self) -> u32 {
        match self {
            Source::Session(s) => s.audio_ssrc,
            Source::Rtp(r) => r.audio_ssrc,
        }
    }

    /// RTCP from the server; plain RTP senders hear none (the server's RTCP goes nowhere).
    fn try_recv_rtcp(&mut self) -> Option<Vec<u8>> {
        match self {
            Source::Session(s) => s.try_recv_rtcp(),
            Source::Rtp(_) => None,
        }
    }

    async fn send(&mut self, video: bool, packet: &[u8]) -> anyhow::Result<()> {
        match self {
            Source::Session(s) => Ok(s.send_rtp(packet).await?),
            Source::Rtp(r) => Ok(r.send(video, packet).await?),
        }
    }

    async fn close(self) {
        if let Source::Session(s) = self {
            let _ = s.close().await;
        }
    }
}

async fn publisher_loop(
    mut publisher: Source,
    shape: MediaShape,
    shared: Arc<Shared>,
    counters: Arc<PublisherCounters>,
) {
    let mut shaper = Shaper::new(shape);
    let start = tokio::time::Instant::now();
    let mut buf = vec![0u8; 1500];
    let (mut sequence, mut video_seq, mut audio_seq) = (0u64, 0u16, 0u16);
    'outer: while !shared.stop.load(Relaxed) {
        // Answer keyframe requests as an encoder does: with the next frame.
        while let Some(packet) = publisher.try_recv_rtcp() {
            let video = publisher.video_ssrc();
            if rtp::rtcp::RtcpIter::new(&packet)
                .flatten()
                .any(|r| match r {
                    rtp::rtcp::Rtcp::Pli(pli) => pli.media_ssrc.0 == video,
                    rtp::rtcp::Rtcp::Fir(_) => true,
                    _ => false,
                })
            {
                shaper.request_keyframe();
            }
        }
        let (at, event) = shaper.next_event();
        tokio::time::sleep_until(start + at).await;
        let count = match event {
            MediaEvent::Video { packets, .. } => packets,
            MediaEvent::Audio { .. } => 1,
        };
        for i in 0..count {
            if shared.stop.load(Relaxed) {
                break 'outer;
            }
            let phase = shared.phase.load(Relaxed);
            let probe = Probe {
                sequence,
                sent_at_ns: shared.clock.elapsed().as_nanos() as u64,
                phase,
            };
            let len = match event {
                MediaEvent::Video {
                    frame, keyframe, ..
                } => {
                    video_seq = video_seq.wrapping_add(1);
                    let fields = RtpFields {
                        pt: VIDEO_PT,
                        ssrc: publisher.video_ssrc(),
                        seq: video_seq,
                        ts: (frame as u32).wrapping_mul(90_000 / shape.fps.max(1)),
                        marker: i + 1 == count,
                    };
                    let part = match (i, keyframe) {
                        (0, true) => Vp8Part::KeyframeStart,
                        (0, false) => Vp8Part::DeltaStart,
                        _ => Vp8Part::Continuation,
                    };
                    write_packet(&mut buf, fields, Some(part), probe, shape.video_packet)
                }
                MediaEvent::Audio { index } => {
                    audio_seq = audio_seq.wrapping_add(1);
                    let fields = RtpFields {
                        pt: AUDIO_PT,
                        ssrc: publisher.audio_ssrc(),
                        seq: audio_seq,
                        ts: (index as u32).wrapping_mul(48_000 / shape.audio_pps.max(1)),
                        marker: false,
                    };
                    write_packet(&mut buf, fields, None, probe, shape.audio_packet)
                }
            };
            let video = matches!(event, MediaEvent::Video { .. });
            if let Err(e) = publisher.send(video, &buf[..len]).await {
                *counters.error.lock().unwrap() = Some(e.to_string());
                break 'outer;
            }
            sequence += 1;
            shared.sent.fetch_add(1, Relaxed);
            if phase == PHASE_MEASURED {
                counters.measured.fetch_add(1, Relaxed);
            }
        }
        // RTCP from the node (receiver reports, keyframe requests) is not acted upon.
        while publisher.try_recv_rtcp().is_some() {}
    }
    // Leave once the players have left.
    while !shared.players_gone.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.close().await;
}

impl PlayerStats {
    /// Follows the publisher's packet numbers, warm-up and measured (a measured packet lost
    /// first and repaired later may be the window's first), and counts what happens to the
    /// measured ones. `repairing`: the player NACKs, so a packet that fills a gap is late, not
    /// out of order.
    fn follow(&mut self, sequence: u64, measured: bool, repairing: bool) {
        let Some(last) = self.last_sequence else {
            self.last_sequence = Some(sequence);
            return;
        };
        if sequence > last {
            if measured {
                self.gaps += sequence - last - 1;
            }
            if repairing {
                let from = (last + 1).max(sequence.saturating_sub(MAX_SKIPPED));
                self.skipped.extend(from..sequence);
                while self.skipped.len() as u64 > MAX_SKIPPED {
                    self.skipped.pop_first();
                }
            }
            self.last_sequence = Some(sequence);
            return;
        }
        let filled = self.skipped.remove(&sequence);
        if !measured {
            return;
        }
        if filled {
            self.late += 1;
        } else if sequence == last {
            self.duplicates += 1;
        } else {
            self.out_of_order += 1;
        }
    }
}

async fn player_loop(
    mut player: ClientSession,
    requested: Instant,
    shared: Arc<Shared>,
    stats: Arc<Mutex<PlayerStats>>,
    repairing: bool,
    measured_by_arrival: bool,
) {
    let mut dropping = repairing;
    loop {
        // A publisher elsewhere (`--play-only`) never pauses: the run's end must not wait for
        // a quiet moment.
        if shared.done.load(Relaxed) {
            break;
        }
        if dropping && shared.phase.load(Relaxed) == PHASE_TAIL {
            player.set_loss(0.0);
            dropping = false;
        }
        let next = match player.try_recv_rtp() {
            Some(packet) => Some(packet),
            None => player.recv_rtp(Duration::from_millis(200)).await,
        };
        let Some(packet) = next else {
            if shared.done.load(Relaxed) {
                break;
            }
            if let Some(why) = player.ended() {
                if !shared.stop.load(Relaxed) {
                    stats.lock().unwrap().ended_early = Some(why);
                }
                // Keep the session until the run is done so its counts stay.
                while !shared.done.load(Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                break;
            }
            continue;
        };
        let now_ns = shared.clock.elapsed().as_nanos() as u64;
        let mut s = stats.lock().unwrap();
        s.received_any += 1;
        if s.first_packet.is_none() {
            s.first_packet = Some(requested.elapsed());
            shared.players_warm.fetch_add(1, Relaxed);
        }
        match read_media(&packet) {
            Ok(received) => {
                let probe = received.probe;
                if s.first_keyframe.is_none()
                    && received.pt == VIDEO_PT
                    && received.vp8 == Some(Vp8Part::KeyframeStart)
                {
                    s.first_keyframe = Some(requested.elapsed());
                }
                let latency = now_ns.saturating_sub(probe.sent_at_ns) / 1000;
                s.interval_latency_us.record(latency);
                // A publisher elsewhere marks its own phases: what arrives within this run's
                // window is what this run measured.
                let measured = if measured_by_arrival {
                    shared.phase.load(Relaxed) == PHASE_MEASURED
                } else {
                    probe.phase == PHASE_MEASURED
                };
                s.follow(probe.sequence, measured, repairing);
                if measured {
                    s.received += 1;
                    s.latency_us.record(latency);
                }
            }
            Err(ProbeError::NotSynthetic) => s.foreign += 1,
            Err(_) => s.corrupted += 1,
        }
    }
    stats.lock().unwrap().repair = player.counters().repair;
    // Ended by the node already (its publisher left early): the DELETE is answered 404.
    let _ = tokio::time::timeout(PLAYER_CLOSE_TIMEOUT, player.close()).await;
}

async fn node_counters(server: &str) -> Option<NodeCounters> {
    let url = format!("{}/api/stats", server.trim_end_matches('/'));
    let response = crate::http::request(hyper::Method::GET, &url, None, String::new())
        .await
        .ok()?;
    let stats: Value = serde_json::from_str(&response.body).ok()?;
    let mut c = NodeCounters::default();
    for core in stats["cores"].as_array()? {
        let get = |k: &str| core[k].as_u64().unwrap_or(0);
        c.rtp_received += get("rtp_received");
        c.rtp_sent += get("rtp_sent");
        c.srtp_rejected += get("srtp_rejected");
        c.handoff_dropped += get("handoff_dropped");
        for key in NODE_REPAIR_COUNTERS {
            if let Some(n) = core[key].as_u64() {
                *c.repair.entry(key).or_default() += n;
            }
        }
        if let Some(n) = core["allocations"].as_u64() {
            c.allocations = Some(c.allocations.unwrap_or(0) + n);
        }
        if let Some(n) = core["media_allocations"].as_u64() {
            c.media_allocations = Some(c.media_allocations.unwrap_or(0) + n);
        }
        for bucket in core["residence_ns"].as_array().into_iter().flatten() {
            if let (Some(low), Some(high), Some(n)) =
                (bucket[0].as_u64(), bucket[1].as_u64(), bucket[2].as_u64())
            {
                if high > low {
                    *c.residence.entry((low, high)).or_default() += n;
                }
            }
        }
    }
    Some(c)
}

/// The counters of `--server` and then of every `--stats-server`.
async fn nodes_counters(options: &RunOptions) -> Vec<Option<NodeCounters>> {
    let mut all = Vec::with_capacity(1 + options.stats_servers.len());
    for server in std::iter::once(&options.server).chain(&options.stats_servers) {
        all.push(node_counters(server).await);
    }
    all
}

fn servers_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| process_cpu(p)).sum()
}

/// Runs the bench once against a live node and returns its report.
pub async fn run(options: &RunOptions) -> anyhow::Result<RunReport> {
    if options.streams == 0 || options.players == 0 || options.seconds <= 0.0 {
        bail!("streams, players and seconds must be positive");
    }
    let baseline = if options.baseline {
        let limit = LimitOptions {
            fanout: options.players,
            seconds: 2.0,
            packet_size: options.shape.video_packet,
            ..LimitOptions::default()
        };
        Some(tokio::task::spawn_blocking(move || crate::limit::measure(&limit)).await??)
    } else {
        None
    };
    let certificate = DtlsCertificate::generate().context("a DTLS certificate")?;
    let shared = Arc::new(Shared {
        clock: Instant::now(),
        phase: AtomicU32::new(PHASE_WARMUP),
        stop: AtomicBool::new(false),
        done: AtomicBool::new(false),
        players_gone: AtomicBool::new(false),
        players_connected: AtomicUsize::new(0),
        players_failed: AtomicUsize::new(0),
        players_warm: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
    });
    let names: Vec<String> = (0..options.streams)
        .map(|i| format!("{}-{i}", options.stream))
        .collect();

    // The nodes' repair and keyframe counters count from here: players start during the ramp.
    let nodes_at_start = nodes_counters(options).await;

    // Publishers: connected one by one, each starts sending warm-up media at once.
    let mut publishers = Vec::new();
    let mut publisher_tasks = Vec::new();
    let sources = match options.publish {
        Publish::Elsewhere => 0,
        Publish::Signalled | Publish::Rtp(_) => names.len(),
    };
    for (index, name) in names.iter().enumerate().take(sources) {
        let session = match options.publish {
            Publish::Rtp(base) => Source::Rtp(
                RtpPublisher::bind(base, index)
                    .await
                    .with_context(|| format!("plain RTP sender of {name}"))?,
            ),
            _ => Source::Session(connect(options, Mode::Publish, name, &certificate).await?),
        };
        let counters = Arc::new(PublisherCounters::default());
        publisher_tasks.push(tokio::spawn(publisher_loop(
            session,
            options.shape,
            shared.clone(),
            counters.clone(),
        )));
        publishers.push(counters);
    }

    // Progress.
    let players: Vec<Arc<Mutex<PlayerStats>>> = (0..options.streams * options.players)
        .map(|i| {
            Arc::new(Mutex::new(PlayerStats {
                stream: i % options.streams,
                ..PlayerStats::default()
            }))
        })
        .collect();
    let progress = options.progress.then(|| {
        tokio::spawn(progress_loop(
            shared.clone(),
            players.clone(),
            options.streams * options.players,
        ))
    });

    // The ramp.
    tokio::time::sleep(options.ramp_delay).await;
    let ramp_start = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut player_tasks = Vec::new();
    let options_shared = Arc::new(options.clone());
    for (i, stats) in players.iter().enumerate() {
        if options.rate > 0.0 {
            let at = ramp_start + Duration::from_secs_f64(i as f64 / options.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let (options, certificate, shared, stats) = (
            options_shared.clone(),
            certificate.clone(),
            shared.clone(),
            stats.clone(),
        );
        let name = names[i % names.len()].clone();
        player_tasks.push(tokio::spawn(async move {
            let requested = Instant::now();
            let result = connect(&options, Mode::Play, &name, &certificate).await;
            drop(permit);
            match result {
                Ok(session) => {
                    let repairing = options.player_loss_percent > 0.0;
                    if repairing {
                        session.enable_nack(options.player_loss_percent);
                    }
                    {
                        let mut s = stats.lock().unwrap();
                        s.connected = true;
                        s.setup = Some(requested.elapsed());
                    }
                    shared.players_connected.fetch_add(1, Relaxed);
                    let by_arrival = options.publish == Publish::Elsewhere;
                    player_loop(session, requested, shared, stats, repairing, by_arrival).await;
                }
                Err(e) => {
                    stats.lock().unwrap().error = Some(format!("{e:#}"));
                    shared.players_failed.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    let total = players.len();
    while shared.players_connected.load(Relaxed) + shared.players_failed.load(Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ramp_seconds = ramp_start.elapsed().as_secs_f64();

    // Warm-up: until every connected player has received (and at least half a second).
    let warm_start = Instant::now();
    loop {
        let connected = shared.players_connected.load(Relaxed);
        let warm = shared.players_warm.load(Relaxed);
        let waited = warm_start.elapsed();
        if (warm >= connected && waited >= Duration::from_millis(500))
            || waited >= options.warmup_timeout
        {
            break;
        }
        if !publishers.is_empty() && publishers.iter().all(|p| p.error.lock().unwrap().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The measured window.
    let cpu_before = servers_cpu(&options.server_pids);
    let own_before = own_cpu();
    let nodes_before = nodes_counters(options).await;
    let window_start = Instant::now();
    shared.phase.store(PHASE_MEASURED, Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(options.seconds)).await;
    let repairing = options.player_loss_percent > 0.0;
    if repairing {
        shared.phase.store(PHASE_TAIL, Relaxed);
    } else {
        shared.stop.store(true, Relaxed);
    }
    let measured_seconds = window_start.elapsed().as_secs_f64();
    let cpu_after = servers_cpu(&options.server_pids);
    let own_after = own_cpu();
    let nodes_after = nodes_counters(options).await;
    if repairing {
        tokio::time::sleep(LOSS_TAIL).await;
        shared.stop.store(true, Relaxed);
    }
    tokio::time::sleep(options.drain).await;
    let nodes_at_end = nodes_counters(options).await;
    shared.done.store(true, Relaxed);
    // Players leave first (WHEP DELETE, or their WebSocket closed) while their streams still
    // exist, as viewers do; then the publishers. A server that keeps a player until it is told
    // (a peer without rtcdn's "publisher left" ending) is not left serving dead viewers.
    for task in player_tasks {
        let _ = task.await;
    }
    shared.players_gone.store(true, Relaxed);
    for task in publisher_tasks {
        let _ = task.await;
    }
    if let Some(progress) = progress {
        progress.abort();
    }

    // The report.
    let mut report = RunReport {
        signalling: match options.signalling {
            Signalling::Whip => "whip".into(),
            Signalling::Ws => "ws".into(),
        },
        transport: options.transport.name().into(),
        streams: options.streams,
        players_requested: total,
        publishers_connected: publishers.len(),
        ramp_seconds,
        measured_seconds,
        baseline,
        player_loss_percent: options.player_loss_percent,
        ..RunReport::default()
    };
    let sent: Vec<u64> = publishers
        .iter()
        .map(|p| p.measured.load(Relaxed))
        .collect();
    report.packets_sent = sent.iter().sum();
    for p in &publishers {
        if let Some(e) = p.error.lock().unwrap().clone() {
            report.first_errors.push(format!("publisher: {e}"));
        }
    }
    let (mut latency, mut setup, mut first, mut keyframe) = (
        Histogram::default(),
        Histogram::default(),
        Histogram::default(),
        Histogram::default(),
    );
    for stats in &players {
        let s = stats.lock().unwrap();
        if !s.connected {
            report.players_failed += 1;
            if report.first_errors.len() < 5 {
                report
                    .first_errors
                    .push(s.error.clone().unwrap_or_default());
            }
            continue;
        }
        report.players_connected += 1;
        // Nothing is known to have been sent to a player of a stream published elsewhere.
        report.packets_expected += sent.get(s.stream).copied().unwrap_or(0);
        report.packets_received += s.received;
        report.duplicates += s.duplicates;
        report.out_of_order += s.out_of_order;
        report.corrupted += s.corrupted;
        report.packets_late += s.late;
        add_repair(&mut report, &s.repair);
        if s.received == 0 {
            report.players_without_packets += 1;
        }
        if let Some(why) = &s.ended_early {
            report.players_ended_early += 1;
            if report.first_errors.len() < 5 {
                report.first_errors.push(format!("player ended: {why}"));
            }
        }
        latency.merge(&s.latency_us);
        if let Some(d) = s.setup {
            setup.record(d.as_micros() as u64);
        }
        if let Some(d) = s.first_packet {
            first.record(d.as_micros() as u64);
        }
        match s.first_keyframe {
            Some(d) => keyframe.record(d.as_micros() as u64),
            None => report.players_without_keyframe += 1,
        }
    }
    let missed = report.packets_repaired + report.packets_unrepaired;
    report.repair_ratio = (missed > 0).then(|| report.packets_repaired as f64 / missed as f64);
    let unique = report.packets_received - report.duplicates;
    report.loss = if report.packets_expected == 0 {
        0.0
    } else {
        1.0 - unique as f64 / report.packets_expected as f64
    };
    report.out_pps = report.packets_sent as f64 / measured_seconds;
    report.in_pps = report.packets_received as f64 / measured_seconds;
    report.sessions_per_second = if ramp_seconds > 0.0 {
        report.players_connected as f64 / ramp_seconds
    } else {
        0.0
    };
    report.setup_ms_p50 = setup.quantile(0.5) as f64 / 1000.0;
    report.setup_ms_p99 = setup.quantile(0.99) as f64 / 1000.0;
    report.setup_ms_max = setup.max() as f64 / 1000.0;
    report.first_packet_ms_p50 = first.quantile(0.5) as f64 / 1000.0;
    report.first_packet_ms_p95 = first.quantile(0.95) as f64 / 1000.0;
    report.first_packet_ms_p99 = first.quantile(0.99) as f64 / 1000.0;
    report.first_packet_ms_max = first.max() as f64 / 1000.0;
    report.first_keyframe_ms_p50 = keyframe.quantile(0.5) as f64 / 1000.0;
    report.first_keyframe_ms_p95 = keyframe.quantile(0.95) as f64 / 1000.0;
    report.first_keyframe_ms_max = keyframe.max() as f64 / 1000.0;
    report.latency_us_p50 = latency.quantile(0.5);
    report.latency_us_p90 = latency.quantile(0.9);
    report.latency_us_p99 = latency.quantile(0.99);
    report.latency_us_max = latency.max();
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu = after.saturating_sub(before).as_secs_f64();
        report.server_cpu_seconds = Some(cpu);
        report.server_cpu_cores = Some(cpu / measured_seconds);
        if report.packets_received > 0 {
            report.server_cpu_ns_per_packet = Some(cpu * 1e9 / report.packets_received as f64);
        }
    }
    if let (Some(before), Some(after)) = (own_before, own_after) {
        report.client_cpu_cores =
            Some(after.saturating_sub(before).as_secs_f64() / measured_seconds);
    }
    for (start, end) in nodes_at_start.iter().zip(&nodes_at_end) {
        if let (Some(start), Some(end)) = (start, end) {
            for (key, n) in &end.repair {
                if let Some(before) = start.repair.get(key) {
                    *report.node_repair.entry(key.to_string()).or_default() +=
                        n.saturating_sub(*before);
                }
            }
        }
    }
    let servers = std::iter::once(&options.server).chain(&options.stats_servers);
    for ((server, before), after) in servers.zip(&nodes_before).zip(&nodes_after) {
        if let (Some(before), Some(after)) = (before, after) {
            report
                .residence
                .extend(NodeResidence::between(server, before, after));
        }
    }
    if let (Some(Some(before)), Some(Some(after))) = (nodes_before.first(), nodes_after.first()) {
        report.node_rtp_sent_pps =
            Some(after.rtp_sent.saturating_sub(before.rtp_sent) as f64 / measured_seconds);
        report.node_srtp_rejected = Some(after.srtp_rejected.saturating_sub(before.srtp_rejected));
        report.node_handoff_dropped =
            Some(after.handoff_dropped.saturating_sub(before.handoff_dropped));
        if let (Some(a), Some(b)) = (after.allocations, before.allocations) {
            let n = a.saturating_sub(b);
            let sent = after.rtp_sent.saturating_sub(before.rtp_sent);
            report.node_allocations = Some(n);
            report.node_allocations_per_packet = (sent > 0).then(|| n as f64 / sent as f64);
        }
        if let (Some(a), Some(b)) = (after.media_allocations, before.media_allocations) {
            report.node_media_allocations = Some(a.saturating_sub(b));
        }
    }
    Ok(report)
}

/// Adds a player's loss and repair counts to the report's sums.
fn add_repair(report: &mut RunReport, repair: &RepairCounts) {
    report.packets_lost += repair.lost;
    report.packets_lost_again += repair.lost_again;
    report.packets_nacked += repair.nack.nacked;
    report.packets_nacked_undropped += repair.nack.nacked_undropped;
    report.nack_requests += repair.nack.requests;
    report.nacks_sent += repair.nacks_sent;
    report.packets_repaired += repair.nack.repaired;
    report.packets_unrepaired += repair.nack.abandoned + repair.nack.pending;
}

async fn progress_loop(shared: Arc<Shared>, players: Vec<Arc<Mutex<PlayerStats>>>, total: usize) {
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (mut received_any, mut received, mut gaps) = (0u64, 0u64, 0u64);
        let mut late = 0u64;
        let mut latency = Histogram::default();
        for stats in &players {
            let mut s = stats.lock().unwrap();
            received_any += s.received_any;
            received += s.received - s.duplicates;
            gaps += s.gaps;
            late += s.late;
            latency.merge(&s.interval_latency_us);
            s.interval_latency_us = Histogram::default();
        }
        let now = Instant::now();
        let seconds = (now - last.0).as_secs_f64();
        let sent = shared.sent.load(Relaxed);
        let out_pps = (sent - last.1) as f64 / seconds;
        let in_pps = (received_any - last.2) as f64 / seconds;
        last = (now, sent, received_any);
        let phase = if shared.stop.load(Relaxed) {
            "drain"
        } else if shared.phase.load(Relaxed) == PHASE_MEASURED {
            "measure"
        } else if shared.phase.load(Relaxed) == PHASE_TAIL {
            "tail"
        } else {
            "ramp/warm"
        };
        // Late packets filled gaps counted before: repaired, not lost.
        let gaps = gaps.saturating_sub(late);
        let loss = if received + gaps == 0 {
            0.0
        } else {
            gaps as f64 / (received + gaps) as f64
        };
        eprintln!(
            "[{:6.1}s] {phase:<9} players {}/{} ({} failed, {} receiving)  out {:.0} pkt/s  in {:.0} pkt/s  loss {:.3}%  latency p50 {:.2} ms p99 {:.2} ms",
            shared.clock.elapsed().as_secs_f64(),
            shared.players_connected.load(Relaxed),
            total,
            shared.players_failed.load(Relaxed),
            shared.players_warm.load(Relaxed),
            out_pps,
            in_pps,
            loss.max(0.0) * 100.0,
            latency.quantile(0.5) as f64 / 1000.0,
            latency.quantile(0.99) as f64 / 1000.0,
        );
    }
}

/// Runs `repeat` times (stream names differ per run); returns all reports and their medians
/// (each number the median over runs).
pub async fn run_repeated(
    options: &RunOptions,
    repeat: usize,
) -> anyhow::Result<(Vec<RunReport>, Value)> {
    let mut reports = Vec::new();
    for i in 0..repeat.max(1) {
        let mut o = options.clone();
        if repeat > 1 {
            o.stream = format!("{}-r{i}", options.stream);
        }
        reports.push(run(&o).await?);
        if i + 1 < repeat {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let jsons: Vec<Value> = reports.iter().map(RunReport::to_json).collect();
    Ok((reports, median_object(&jsons)))
}

/// The per-key median of flat JSON objects' numbers (nested objects recursively); other values
/// are taken from the first.
pub fn median_object(objects: &[Value]) -> Value {
    let Some(Value::Object(first)) = objects.first() else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for (key, value) in first {
        let values: Vec<&Value> = objects.iter().map(|o| &o[key]).collect();
        let merged = match value {
            Value::Number(_) => {
                let numbers: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
                let m = median(&numbers);
                if value.is_f64() {
                    json!((m * 1000.0).round() / 1000.0)
                } else {
                    json!(m.round() as u64)
                }
            }
            Value::Object(_) => median_object(&values.into_iter().cloned().collect::<Vec<_>>()),
            other => other.clone(),
        };
        out.insert(key.clone(), merged);
    }
    Value::Object(out)
}

/// Human text for a report.
pub fn describe(r: &RunReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("signalling         {}", r.signalling));
    line(format!("transport          {}", r.transport));
    line(format!(
        "sessions           {} publishers, {}/{} players connected ({} failed, {} without packets, {} ended early)",
        r.publishers_connected, r.players_connected, r.players_requested, r.players_failed, r.players_without_packets, r.players_ended_early
    ));
    line(format!(
        "session ramp       {:.0} sessions/s ({} in {:.2} s); setup p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        r.sessions_per_second, r.players_connected, r.ramp_seconds, r.setup_ms_p50, r.setup_ms_p99, r.setup_ms_max
    ));
    line(format!(
        "first media        from the session request: first packet p50 {:.1} ms p95 {:.1} ms max {:.1} ms; first keyframe p50 {:.1} ms p95 {:.1} ms max {:.1} ms ({} players without one)",
        r.first_packet_ms_p50, r.first_packet_ms_p95, r.first_packet_ms_max, r.first_keyframe_ms_p50, r.first_keyframe_ms_p95, r.first_keyframe_ms_max, r.players_without_keyframe
    ));
    line(format!("measured           {:.2} s", r.measured_seconds));
    line(format!(
        "packets out        {} ({:.0}/s from publishers)",
        r.packets_sent, r.out_pps
    ));
    line(format!(
        "packets in         {} of {} expected ({:.0}/s at players), loss {:.4}%",
        r.packets_received,
        r.packets_expected,
        r.in_pps,
        r.loss * 100.0
    ));
    line(format!(
        "integrity          {} corrupted, {} out of order, {} duplicates, {} late (repaired)",
        r.corrupted, r.out_of_order, r.duplicates, r.packets_late
    ));
    if r.player_loss_percent > 0.0 {
        line(format!(
            "loss repair        {}% of video dropped at players: {} lost (+{} copies lost again), {} NACKed ({} not dropped here: reordered or lost on the way; {} requests in {} NACKs), {} repaired, {} unrepaired, repair ratio {}",
            r.player_loss_percent, r.packets_lost, r.packets_lost_again, r.packets_nacked, r.packets_nacked_undropped, r.nack_requests, r.nacks_sent, r.packets_repaired, r.packets_unrepaired,
            r.repair_ratio.map_or("-".to_string(), |x| format!("{:.2}%", x * 100.0))
        ));
    }
    if !r.node_repair.is_empty() {
        let counters: Vec<String> = NODE_REPAIR_COUNTERS
            .iter()
            .filter_map(|key| Some(format!("{key} {}", r.node_repair.get(*key)?)))
            .collect();
        line(format!(
            "node repair        {} (whole run, all nodes read)",
            counters.join(", ")
        ));
    }
    line(format!(
        "one-way latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms (publisher -> node -> player, one clock)",
        r.latency_us_p50 as f64 / 1000.0,
        r.latency_us_p90 as f64 / 1000.0,
        r.latency_us_p99 as f64 / 1000.0,
        r.latency_us_max as f64 / 1000.0
    ));
    match (r.server_cpu_seconds, r.server_cpu_ns_per_packet) {
        (Some(cpu), Some(ns)) => line(format!(
            "server CPU         {cpu:.2} s ({:.2} cores), {ns:.0} ns per forwarded packet",
            r.server_cpu_cores.unwrap_or(0.0)
        )),
        _ => line("server CPU         not measured (pass --server-pid PID)".into()),
    }
    if let Some(pps) = r.node_rtp_sent_pps {
        line(format!(
            "node counters      {pps:.0} RTP sent/s; {} SRTP rejected, {} hand-off drops in the window",
            r.node_srtp_rejected.unwrap_or(0),
            r.node_handoff_dropped.unwrap_or(0)
        ));
    }
    if let (Some(n), Some(per)) = (r.node_allocations, r.node_allocations_per_packet) {
        line(format!(
            "node allocations   {n} on the media threads in the window ({per:.6} per packet sent), {} of them on the forwarding path",
            r.node_media_allocations.map_or("?".to_string(), |m| m.to_string())
        ));
    }
    for n in &r.residence {
        line(format!(
            "node residence     p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs over {} packets at {} (kernel receive -> send)",
            n.p50_us, n.p99_us, n.p999_us, n.max_us, n.packets, n.server
        ));
    }
    if let Some(c) = r.client_cpu_cores {
        line(format!(
            "bench CPU          {c:.2} cores (the client itself)"
        ));
    }
    if let Some(b) = &r.baseline {
        line(format!("raw limit          {}", crate::limit::describe(b)));
        if let Some(ratio) = r.baseline_ratio() {
            line(format!(
                "server vs limit    {ratio:.2}x the raw limit's CPU per forwarded packet"
            ));
        }
    }
    for e in &r.first_errors {
        line(format!("error              {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_that_fills_a_gap_is_late_only_when_players_nack() {
        let mut s = PlayerStats::default();
        // Warm-up 1, 2; measured 3 lost and repaired after 4, 5; then 5 again and 4 again.
        for (sequence, measured) in [(1, false), (2, false), (4, true), (5, true), (3, true)] {
            s.follow(sequence, measured, true);
        }
        assert_eq!((s.late, s.gaps, s.out_of_order, s.duplicates), (1, 1, 0, 0));
        s.follow(5, true, true);
        s.follow(4, true, true);
        assert_eq!((s.late, s.out_of_order, s.duplicates), (1, 1, 1));
        assert!(s.skipped.is_empty());

        // Without NACKs, a packet behind the newest is out of order, as before.
        let mut s = PlayerStats::default();
        for sequence in [1, 3, 2] {
            s.follow(sequence, true, false);
        }
        assert_eq!((s.late, s.gaps, s.out_of_order), (0, 1, 1));

        // The skipped numbers kept are bounded.
        let mut s = PlayerStats::default();
        s.follow(0, false, true);
        s.follow(10 * MAX_SKIPPED, false, true);
        assert_eq!(s.skipped.len() as u64, MAX_SKIPPED);
    }
}
