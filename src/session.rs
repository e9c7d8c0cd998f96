//! One WebRTC peer on a media core, sans-IO: ICE-lite, SRTP, and the RTCP a server must speak.
//!
//! The core feeds it datagrams and the time (`handle_*`) and drains what it wants to send and
//! what happened (`poll_transmit`, `poll_event`, `poll_timeout`). DTLS runs in its own task (see
//! [`crate::dtls`]); the core passes records there and hands the exported keys back here with
//! [`Session::handle_dtls_connected`]. Media packets are decrypted and encrypted in place in the
//! caller's buffers; only control packets (STUN, RTCP) are allocated.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceEvent, IceLiteAgent, Transmit};
use rtp::rtcp::{
    Items, Nack, NackPair, Pli, ReceiverReport, Remb, ReportBlock, Rtcp, RtcpIter, SenderReport,
};
use rtp::srtp::SrtpContext;
use rtp::{is_keyframe, Pt, RtpHeader, RtpRewriter, Ssrc, VideoCodec};

use crate::bwe::BweConfig;
use crate::control::{
    EndReason, PlayedTrack, PublishedTrack, SessionId, SessionRole, SessionSpec, StreamId,
};
use crate::dtls::{DtlsRole, SrtpKeyingMaterial};
use crate::loss_detector::{LossDetector, RepairCounts};
use crate::rtx::{self, RtxError, RtxSender};
use crate::sdp::MediaKind;
use crate::simulcast::{LayerDecision, LayerMap, LayerSwitch, MAX_LAYERS};
use crate::transport_cc::{PlayerFeedback, PublisherFeedback, MAX_FEEDBACK_LEN};

/// Keyframe requests toward a publisher are merged: at most one PLI per this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// How often a publisher gets a receiver report (and REMB).
const RECEIVER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The bitrate announced to publishers in REMB, so a browser ramps up to a useful rate instead of
/// staying at its cautious start estimate. rtcdn does no congestion control of its own (yet).
const REMB_BITRATE_BPS: u64 = 5_000_000;

/// A player's bandwidth estimator: the defaults, with a send history of 1,024 packets (16 KiB a
/// player; 1.2 s at 7 Mbit/s, longer than feedback ever takes).
const PLAYER_BWE: BweConfig = BweConfig {
    history_len: 1024,
    ..BweConfig::DEFAULT
};

/// Why the session refused a datagram. Counted and logged by the core, never fatal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// STUN that failed ICE checks.
    #[error("ICE: {0}")]
    Ice(#[from] ice::IceError),
    /// SRTP/SRTCP that failed authentication, replay checks or parsing.
    #[error("SRTP: {0}")]
    Srtp(rtp::Error),
    /// Plaintext RTP/RTCP that did not parse.
    #[error("RTP: {0}")]
    Rtp(rtp::Error),
    /// Media before the DTLS handshake finished.
    #[error("media before DTLS keys")]
    NotKeyed,
    /// Media from a payload type that was not negotiated.
    #[error("unnegotiated payload type {0}")]
    UnknownPayloadType(u8),
    /// Simulcast video from an SSRC that never carried a rid of the offer's layers.
    #[error("simulcast video from SSRC {0:#x} of no known layer")]
    UnknownLayer(u32),
    /// A player sent RTP (players only receive).
    #[error("unexpected RTP from a player")]
    UnexpectedRtp,
    /// A publisher's retransmission (RFC 4588) that carries no media to forward, or is bad.
    #[error("RTX: {0}")]
    Rtx(#[from] RtxError),
}

/// Something the core must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// ICE nominated this address: start DTLS towards it.
    IceConnected { remote: SocketAddr },
    /// The peer moved to another address (ICE re-nomination).
    RemoteChanged { remote: SocketAddr },
    /// SRTP keys are installed: media flows.
    Connected,
    /// A publisher's first media packet arrived.
    MediaStarted,
    /// A player asked for a keyframe (PLI or FIR): forward to the stream's publisher.
    KeyframeRequested,
    /// A player (or an edge, through a relay) lost these packets of a track, numbered as the
    /// publisher numbers them: answer from the core's retransmission cache, and ask the
    /// publisher to send the rest again.
    RetransmissionRequested { kind: MediaKind, seqs: LostPackets },
    /// A publisher's sender report: players get a translated one. Each simulcast layer has
    /// its own (its own SSRC and RTP timestamp base).
    SenderReport {
        kind: MediaKind,
        layer: u8,
        ntp_time: u64,
        rtp_time: u32,
    },
    /// What the publisher's loss detector asked for and got back since the last report.
    UpstreamRepair(RepairCounts),
    /// The session is over; the core removes it.
    Ended(EndReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    AwaitingIce,
    AwaitingDtls,
    Connected,
    Ended,
}

/// Receive statistics of one publisher SSRC, for receiver reports (RFC 3550 A.3).
#[derive(Debug, Default, Clone)]
struct ReceiveStats {
    ssrc: u32,
    base_seq: u64,
    highest_seq: Option<u64>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    last_sr_ntp_middle: u32,
    last_sr_at: Option<Instant>,
}

impl ReceiveStats {
    fn record(&mut self, ssrc: u32, seq: u16) {
        if self.ssrc != ssrc || self.highest_seq.is_none() {
            *self = ReceiveStats {
                ssrc,
                base_seq: u64::from(seq),
                highest_seq: Some(u64::from(seq)),
                ..Default::default()
            };
        }
        let highest = self.highest_seq.unwrap_or_default();
        let extended = extend_seq(highest, seq);
        if extended > highest {
            self.highest_seq = Some(extended);
        }
        self.received += 1;
    }

    fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let highest = self.highest_seq?;
        let expected = highest - self.base_seq + 1;
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .unwrap_or(0)
            .min(255) as u8;
        let delay_since_last_sr = self
            .last_sr_at
            .map(|at| (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32)
            .unwrap_or(0);
        Some(ReportBlock {
            ssrc: Ssrc(self.ssrc),
            fraction_lost,
            cumulative_lost: lost.min(0x7f_ffff) as i32,
            extended_highest_seq: highest as u32,
            jitter: 0,
            last_sr: self.last_sr_ntp_middle,
            delay_since_last_sr,
        })
    }
}

/// The most sequence numbers one retransmission request carries.
pub const MAX_LOST_PACKETS: usize = 64;

/// Sequence numbers a receiver reported lost (at most [`MAX_LOST_PACKETS`]), kept inline so
/// that a NACK travels from player to publisher without a heap allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LostPackets {
    len: u8,
    seqs: [u16; MAX_LOST_PACKETS],
}

/// Keeps the first [`MAX_LOST_PACKETS`] numbers; the rest are left out.
impl FromIterator<u16> for LostPackets {
    fn from_iter<I: IntoIterator<Item = u16>>(seqs: I) -> Self {
        let mut lost = LostPackets {
            len: 0,
            seqs: [0; MAX_LOST_PACKETS],
        };
        for seq in seqs.into_iter().take(MAX_LOST_PACKETS) {
            lost.seqs[usize::from(lost.len)] = seq;
            lost.len += 1;
        }
        lost
    }
}

impl LostPackets {
    /// Reads numbers written by [`LostPackets::to_be_bytes`].
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect()
    }

    /// The numbers as big-endian pairs of bytes, for the cross-core hand-off; returns the length.
    pub fn to_be_bytes(&self, out: &mut [u8; 2 * MAX_LOST_PACKETS]) -> usize {
        for (chunk, seq) in out.chunks_exact_mut(2).zip(self.as_slice()) {
            chunk.copy_from_slice(&seq.to_be_bytes());
        }
        2 * self.as_slice().len()
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.seqs[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for LostPackets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Packs sequence numbers into NACK (PID, BLP) pairs: each pair covers its PID and the 16 numbers
/// after it. Returns the pairs in `out` and their count; works on the stack.
fn nack_pairs(seqs: &[u16], out: &mut [NackPair; MAX_LOST_PACKETS]) -> usize {
    let mut sorted = [0u16; MAX_LOST_PACKETS];
    let n = seqs.len().min(MAX_LOST_PACKETS);
    if n == 0 {
        return 0;
    }
    sorted[..n].copy_from_slice(&seqs[..n]);
    // Sort in wrapping order relative to the first: 65535 comes before 0.
    let base = sorted[0];
    sorted[..n].sort_unstable_by_key(|s| s.wrapping_sub(base.wrapping_sub(0x8000)));
    let mut count: usize = 0;
    for (i, &seq) in sorted[..n].iter().enumerate() {
        if i > 0 && sorted[i - 1] == seq {
            continue;
        }
        match count.checked_sub(1).map(|last| &mut out[last]) {
            Some(pair) if (1..=16).contains(&seq.wrapping_sub(pair.pid)) => {
                pair.blp |= 1 << (seq.wrapping_sub(pair.pid) - 1)
            }
            _ => {
                out[count] = NackPair { pid: seq, blp: 0 };
                count += 1;
            }
        }
    }
    count
}

/// When the first of a publisher's per-layer loss detectors wants to run.
fn earliest_loss_timeout(detectors: &[Option<LossDetector>; MAX_LAYERS]) -> Option<Instant> {
    detectors
        .iter()
        .flatten()
        .filter_map(LossDetector::poll_timeout)
        .min()
}

/// Extends a 16-bit sequence number to 64 bits next to the highest one seen (RFC 3550 A.1).
fn extend_seq(highest: u64, seq: u16) -> u64 {
    let cycle = highest & !0xffff;
    let candidate = cycle | u64::from(seq);
    let highest_low = highest & 0xffff;
    if seq < 0x8000 && highest_low >= 0x8000 && u64::from(seq) + 0x8000 < highest_low {
        candidate + 0x1_0000
    } else if u64::from(seq) > highest_low + 0x8000 && cycle > 0 {
        candidate - 0x1_0000
    } else {
        candidate
    }
}

/// Receive statistics slots of a publisher: audio, then one per video layer.
const STATS_SLOTS: usize = 1 + MAX_LAYERS;

/// A publisher's statistics slot of a track's layer (audio has one layer, 0).
fn stats_slot(kind: MediaKind, layer: u8) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1 + usize::from(layer).min(MAX_LAYERS - 1),
    }
}

struct PublisherState {
    tracks: Vec<PublishedTrack>,
    /// One per SSRC the publisher sends: see [`stats_slot`]. Boxed like `video_loss`.
    stats: Box<[ReceiveStats; STATS_SLOTS]>,
    /// The video's simulcast layers, when it sends several.
    layers: Option<LayerMap>,
    media_started: bool,
    /// Per video layer: each layer's keyframes are requested (and throttled) on their own.
    last_keyframe_request: [Option<Instant>; MAX_LAYERS],
    pending_keyframe_request: [Option<Instant>; MAX_LAYERS],
    next_receiver_report: Option<Instant>,
    /// Gaps in the video, per layer, asked for again at once (see [`crate::loss_detector`]);
    /// `None` without a video track or beyond its layers. Boxed, with the session: a player's
    /// state is much smaller, and most sessions are players.
    video_loss: Box<[Option<LossDetector>; MAX_LAYERS]>,
    /// The video codec, when rtcdn can tell its keyframes.
    video_codec: Option<VideoCodec>,
    /// Transport-cc feedback for the publisher's bandwidth estimate, when negotiated.
    transport_cc: Option<Box<PublisherFeedback>>,
    /// Bytes received since `bitrate_since`, and the bitrate measured over the last period.
    received_bytes: u64,
    bitrate_since: Option<Instant>,
    bitrate_bps: u64,
    /// The bitrate announced in REMB: [`REMB_BITRATE_BPS`], or what `bwe.limit_publisher`
    /// allows (its weakest player's bandwidth).
    remb_bps: u64,
}

/// A publisher's media packet, decrypted in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedMedia {
    /// The track it belongs to.
    pub kind: MediaKind,
    /// The plaintext RTP length.
    pub len: usize,
    /// Whether it is part of a video keyframe.
    pub keyframe: bool,
    /// The simulcast layer (0 without simulcast, and for audio).
    pub layer: u8,
}

/// The codec behind an rtpmap name, for keyframe detection.
fn video_codec(name: &str) -> Option<VideoCodec> {
    match name.to_ascii_uppercase().as_str() {
        "VP8" => Some(VideoCodec::Vp8),
        "VP9" => Some(VideoCodec::Vp9),
        "H264" => Some(VideoCodec::H264),
        "AV1" | "AV1X" => Some(VideoCodec::Av1),
        _ => None,
    }
}

impl PublisherState {
    /// Turns a retransmission (RFC 4588) in `packet` back into the media packet it carries,
    /// in place; other packets are left alone. Returns the length of what to handle as media.
    fn restore_rtx(
        &mut self,
        srtp: &mut SrtpContext,
        packet: &mut [u8],
    ) -> Result<usize, RtxError> {
        let (stats, layers) = (&self.stats, &mut self.layers);
        // A simulcast layer's RTX SSRC repairs that layer's media SSRC (both learned from
        // their rids); without simulcast, the track's one media SSRC.
        let media_ssrc = |kind, header: &RtpHeader<'_>| match (kind, layers.as_mut()) {
            (MediaKind::Video, Some(layers)) => layers
                .rtx_layer(header)
                .map_or(0, |layer| layers.media_ssrc(layer)),
            _ => stats[stats_slot(kind, 0)].ssrc,
        };
        rtx::restore_publisher_rtx(&self.tracks, media_ssrc, srtp, packet)
    }

    /// The layer of a video packet: 0 without simulcast.
    fn video_layer(&mut self, header: &RtpHeader<'_>) -> Result<u8, SessionError> {
        match self.layers.as_mut() {
            Some(layers) => layers
                .media_layer(header)
                .ok_or(SessionError::UnknownLayer(header.ssrc().0)),
            None => Ok(0),
        }
    }
}

struct PlayerTrack {
    track: PlayedTrack,
    rewriter: RtpRewriter,
    /// Where the packets the player reports lost go again, when it negotiated rtx.
    rtx: Option<RtxSender>,
    packets_sent: u32,
    octets_sent: u32,
}

struct PlayerState {
    tracks: [Option<PlayerTrack>; 2],
    /// How many packets the node may still send this player again from its cache.
    resends: ResendBudget,
    /// Transport-wide numbers and the bandwidth estimate, when transport-cc is negotiated.
    /// Boxed: most of a player's state, allocated once with the session.
    transport_cc: Option<Box<PlayerFeedback>>,
    /// The simulcast layer of its video, when the stream has several.
    layers: Option<LayerSwitch>,
}

/// Packets a player may have sent again per second, and in one burst: far above what real loss
/// asks for (10% of a 8 Mbit/s stream is ~80 a second), low enough that a player that NACKs in
/// a loop cannot make its core spend its time, or its uplink, on it.
pub const RESEND_RATE_PER_SEC: u64 = 200;
/// See [`RESEND_RATE_PER_SEC`].
pub const RESEND_BURST: u64 = 400;

/// A token bucket of resends, refilled with time.
#[derive(Debug)]
struct ResendBudget {
    tokens: u64,
    /// When the last whole token was added.
    refilled_at: Option<Instant>,
}

impl ResendBudget {
    fn full() -> ResendBudget {
        ResendBudget {
            tokens: RESEND_BURST,
            refilled_at: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let since = self.refilled_at.get_or_insert(now);
        let earned =
            now.saturating_duration_since(*since).as_millis() as u64 * RESEND_RATE_PER_SEC / 1000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(RESEND_BURST);
            // Keep the fraction of a token that was not added yet.
            *since += Duration::from_millis(earned * 1000 / RESEND_RATE_PER_SEC);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

enum RoleState {
    Publisher(PublisherState),
    Player(PlayerState),
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

/// The ICE side a session plays: ICE-lite for clients that connect to us, controlling for the
/// relays rtcdn opens to other nodes.
#[allow(clippy::large_enum_variant)] // One per session, never moved on the packet path.
enum IceAgent {
    Lite(IceLiteAgent),
    Controlling(IceControllingAgent),
}

impl IceAgent {
    fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<(), ice::IceError> {
        match self {
            IceAgent::Lite(a) => a.handle_packet(now, from, packet),
            IceAgent::Controlling(a) => a.handle_packet(now, from, packet),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            IceAgent::Lite(a) => a.handle_timeout(now),
            IceAgent::Controlling(a) => a.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            IceAgent::Lite(a) => a.poll_transmit(),
            IceAgent::Controlling(a) => a.poll_transmit(),
        }
    }
    fn poll_event(&mut self) -> Option<IceEvent> {
        match self {
            IceAgent::Lite(a) => a.poll_event(),
            IceAgent::Controlling(a) => a.poll_event(),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            IceAgent::Lite(a) => a.poll_timeout(),
            IceAgent::Controlling(a) => a.poll_timeout(),
        }
    }
    /// Authenticated media counts as consent for a lite agent; a controlling agent runs its own
    /// consent checks.
    fn renew_consent(&mut self, now: Instant, from: SocketAddr) {
        if let IceAgent::Lite(a) = self {
            a.renew_consent(now, from);
        }
    }
}

/// How long a session may take: to connect, and between consent checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// From creation until ICE and DTLS are both done.
    pub connect: Duration,
    /// ICE consent (RFC 7675).
    pub consent: Duration,
}

/// One WebRTC peer: a publisher, a player, or a relay to another node.
pub struct Session {
    id: SessionId,
    stream: StreamId,
    stream_name: String,
    ice: IceAgent,
    dtls_role: DtlsRole,
    remote_fingerprint: [u8; 32],
    phase: Phase,
    /// Until ICE and DTLS are done: when the session gives up (and frees its stream name).
    connect_deadline: Option<Instant>,
    remote: Option<SocketAddr>,
    srtp_rx: Option<SrtpContext>,
    srtp_tx: Option<SrtpContext>,
    rtcp_ssrc: u32,
    role: RoleState,
    events: VecDeque<SessionEvent>,
    transmits: VecDeque<Transmit>,
    /// Buffers of sent control packets, handed back by [`Session::recycle`]: RTCP is written
    /// into them, so a session's steady state allocates nothing.
    spare_buffers: Vec<Vec<u8>>,
}

impl Session {
    /// Creates a session from what signalling negotiated. `seed` gives the session its random
    /// values (RTCP SSRC, RTP sequence/timestamp bases) without reading a global RNG.
    pub fn new(spec: SessionSpec, now: Instant, timeouts: SessionTimeouts, seed: u64) -> Session {
        let consent_timeout = timeouts.consent;
        let mut random = SplitMix64(seed);
        let ice = match &spec.role {
            SessionRole::Relay {
                remote_candidates, ..
            } => {
                let mut agent = IceControllingAgent::new(
                    spec.local_ice,
                    spec.remote_ice,
                    remote_candidates.clone(),
                    random.next(),
                    now,
                );
                agent.set_consent_timeout(consent_timeout);
                IceAgent::Controlling(agent)
            }
            _ => {
                let mut agent = IceLiteAgent::new(spec.local_ice, spec.remote_ice, now);
                agent.set_consent_timeout(consent_timeout);
                IceAgent::Lite(agent)
            }
        };
        let role = match spec.role {
            SessionRole::Publisher { tracks } => RoleState::Publisher(PublisherState {
                video_loss: {
                    let video = tracks.iter().find(|t| t.kind == MediaKind::Video);
                    let layers = video.map_or(0, |t| {
                        t.simulcast
                            .as_ref()
                            .map_or(1, |s| s.rids.len().clamp(1, MAX_LAYERS))
                    });
                    Box::new(std::array::from_fn(|layer| {
                        (layer < layers).then(LossDetector::new)
                    }))
                },
                layers: tracks
                    .iter()
                    .find_map(|t| t.simulcast.clone())
                    .map(LayerMap::new),
                video_codec: tracks
                    .iter()
                    .find(|t| t.kind == MediaKind::Video)
                    .and_then(|t| video_codec(&t.codec)),
                transport_cc: tracks
                    .iter()
                    .find_map(|t| t.transport_cc)
                    .map(|id| Box::new(PublisherFeedback::new(id))),
                received_bytes: 0,
                bitrate_since: None,
                bitrate_bps: 0,
                remb_bps: REMB_BITRATE_BPS,
                tracks,
                stats: Default::default(),
                media_started: false,
                last_keyframe_request: [None; MAX_LAYERS],
                pending_keyframe_request: [None; MAX_LAYERS],
                next_receiver_report: None,
            }),
            SessionRole::Player { tracks } | SessionRole::Relay { tracks, .. } => {
                let transport_cc = tracks
                    .iter()
                    .find_map(|t| t.transport_cc)
                    .and_then(|id| PlayerFeedback::new(id, now, PLAYER_BWE))
                    .map(Box::new);
                let layers = tracks
                    .iter()
                    .find_map(|t| t.layers)
                    .map(|l| LayerSwitch::new(l.target, l.pinned));
                let mut slots: [Option<PlayerTrack>; 2] = [None, None];
                for track in tracks {
                    let rewriter = RtpRewriter::new(
                        Ssrc(track.ssrc),
                        Pt::new(track.pt),
                        random.next() as u16,
                        random.next() as u32,
                    );
                    let rtx = track.rtx.map(|rtx| {
                        RtxSender::new(Ssrc(rtx.ssrc), Pt::new(rtx.pt), random.next() as u16)
                    });
                    let slot = kind_index(track.kind);
                    slots[slot] = Some(PlayerTrack {
                        track,
                        rewriter,
                        rtx,
                        packets_sent: 0,
                        octets_sent: 0,
                    });
                }
                RoleState::Player(PlayerState {
                    tracks: slots,
                    resends: ResendBudget::full(),
                    transport_cc,
                    layers,
                })
            }
        };
        Session {
            id: spec.id,
            stream: spec.stream,
            stream_name: spec.stream_name,
            ice,
            dtls_role: spec.dtls_role,
            remote_fingerprint: spec.remote_fingerprint,
            phase: Phase::AwaitingIce,
            connect_deadline: Some(now + timeouts.connect),
            remote: None,
            srtp_rx: None,
            srtp_tx: None,
            rtcp_ssrc: random.next() as u32 | 1,
            role,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            spare_buffers: Vec::new(),
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// The stream it publishes or plays.
    pub fn stream(&self) -> StreamId {
        self.stream
    }
    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }
    /// Whether it publishes.
    pub fn is_publisher(&self) -> bool {
        matches!(self.role, RoleState::Publisher(_))
    }
    /// The peer's nominated address.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }
    /// Our DTLS role.
    pub fn dtls_role(&self) -> DtlsRole {
        self.dtls_role
    }
    /// The fingerprint the peer's DTLS certificate must have.
    pub fn remote_fingerprint(&self) -> [u8; 32] {
        self.remote_fingerprint
    }
    /// Whether it plays a track of this kind (a publisher plays none).
    pub fn plays(&self, kind: MediaKind) -> bool {
        matches!(&self.role, RoleState::Player(p) if p.tracks[kind_index(kind)].is_some())
    }
    /// Whether it negotiated a retransmission stream (RTX) for its track of this kind.
    pub fn plays_rtx(&self, kind: MediaKind) -> bool {
        matches!(&self.role, RoleState::Player(p)
            if p.tracks[kind_index(kind)].as_ref().is_some_and(|t| t.track.rtx.is_some()))
    }
    /// Whether it publishes a track of this kind.
    pub fn publishes(&self, kind: MediaKind) -> bool {
        matches!(&self.role, RoleState::Publisher(p) if p.tracks.iter().any(|t| t.kind == kind))
    }
    /// Whether SRTP keys are installed.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// A STUN datagram from `from`.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let result = self.ice.handle_packet(now, from, data);
        self.drain_ice();
        result.map_err(SessionError::from)
    }

    /// The DTLS handshake finished: install SRTP contexts.
    pub fn handle_dtls_connected(&mut self, keys: SrtpKeyingMaterial, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        let rx = SrtpContext::new(keys.profile, &keys.remote_key, &keys.remote_salt);
        let tx = SrtpContext::new(keys.profile, &keys.local_key, &keys.local_salt);
        match (rx, tx) {
            (Ok(rx), Ok(tx)) => {
                self.srtp_rx = Some(rx);
                self.srtp_tx = Some(tx);
                self.phase = Phase::Connected;
                self.connect_deadline = None;
                self.events.push_back(SessionEvent::Connected);
                if let RoleState::Publisher(publisher) = &mut self.role {
                    publisher.next_receiver_report = Some(now + RECEIVER_REPORT_INTERVAL);
                }
            }
            (Err(e), _) | (_, Err(e)) => self.end(EndReason::DtlsFailed(format!("SRTP keys: {e}"))),
        }
    }

    /// Ends the session (once); the core removes it after draining events.
    pub fn end(&mut self, reason: EndReason) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ended;
            self.events.push_back(SessionEvent::Ended(reason));
        }
    }

    /// A publisher's SRTP packet: authenticated and decrypted in place, to be forwarded to
    /// players.
    pub fn handle_srtp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Result<ReceivedMedia, SessionError> {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return Err(SessionError::UnexpectedRtp);
        };
        let srtp = self.srtp_rx.as_mut().ok_or(SessionError::NotKeyed)?;
        let len = srtp.unprotect_rtp(data).map_err(SessionError::Srtp)?;
        self.ice.renew_consent(now, from);
        if let Some(feedback) = publisher.transport_cc.as_mut() {
            // Every packet the publisher's estimate counts, probes and repeats too: recorded
            // before a retransmission is unwrapped or dropped.
            if let Ok(header) = RtpHeader::parse(&data[..len]) {
                feedback.on_packet(now, &header);
            }
        }
        let len = publisher.restore_rtx(srtp, &mut data[..len])?;
        // Media only: padding probes would make the publisher look faster than its players
        // need to be (the NOT_ENOUGH_BANDWIDTH comparison).
        publisher.received_bytes += len as u64;
        let header = RtpHeader::parse(&data[..len]).map_err(SessionError::Rtp)?;
        let pt = header.payload_type().value();
        let track = publisher
            .tracks
            .iter()
            .find(|t| t.pt == pt)
            .ok_or(SessionError::UnknownPayloadType(pt))?;
        let kind = track.kind;
        let layer = match kind {
            MediaKind::Video => publisher.video_layer(&header)?,
            MediaKind::Audio => 0,
        };
        let (ssrc, seq) = (header.ssrc().0, header.sequence_number());
        publisher.stats[stats_slot(kind, layer)].record(ssrc, seq);
        let loss = publisher.video_loss.get_mut(usize::from(layer));
        let gap = match (kind, loss.and_then(Option::as_mut)) {
            (MediaKind::Video, Some(loss)) => loss.on_packet(now, ssrc, seq),
            _ => false,
        };
        let keyframe = match (kind, publisher.video_codec) {
            (MediaKind::Video, Some(codec)) => is_keyframe(codec, header.payload()),
            _ => false,
        };
        if !publisher.media_started {
            publisher.media_started = true;
            self.events.push_back(SessionEvent::MediaStarted);
        }
        if gap {
            self.request_lost_video(now);
        }
        Ok(ReceivedMedia {
            kind,
            len,
            keyframe,
            layer,
        })
    }

    /// An SRTCP packet from the peer.
    pub fn handle_srtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Result<(), SessionError> {
        let srtp = self.srtp_rx.as_mut().ok_or(SessionError::NotKeyed)?;
        let len = srtp.unprotect_rtcp(data).map_err(SessionError::Srtp)?;
        self.ice.renew_consent(now, from);
        for packet in RtcpIter::new(&data[..len]) {
            match packet.map_err(SessionError::Rtp)? {
                Rtcp::SenderReport(sr) => self.handle_sender_report(now, &sr),
                Rtcp::Pli(_) | Rtcp::Fir(_) if !self.is_publisher() => {
                    self.events.push_back(SessionEvent::KeyframeRequested)
                }
                Rtcp::Nack(nack) => self.handle_nack(&nack),
                Rtcp::TransportCc(feedback) => {
                    if let Some(f) = self.player_feedback() {
                        f.on_feedback(now, &feedback);
                    }
                }
                Rtcp::Remb(remb) => {
                    if let Some(f) = self.player_feedback() {
                        f.on_remb(now, remb.bitrate_bps);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn player_feedback(&mut self) -> Option<&mut PlayerFeedback> {
        match &mut self.role {
            RoleState::Player(player) => player.transport_cc.as_deref_mut(),
            RoleState::Publisher(_) => None,
        }
    }

    /// A player's available bandwidth as estimated from its transport-cc feedback; `None`
    /// without transport-cc (or for a publisher).
    pub fn bandwidth_estimate(&self) -> Option<u64> {
        match &self.role {
            RoleState::Player(player) => player
                .transport_cc
                .as_deref()
                .map(PlayerFeedback::estimate_bps),
            RoleState::Publisher(_) => None,
        }
    }

    /// Asks a publisher to send at most `bitrate_bps` (REMB, which Chromium's estimate is
    /// capped by, transport-cc or not), or lifts the limit; a change goes out at once.
    pub fn limit_bitrate(&mut self, now: Instant, bitrate_bps: Option<u64>) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let remb = bitrate_bps.map_or(REMB_BITRATE_BPS, |b| b.min(REMB_BITRATE_BPS));
        if remb != publisher.remb_bps {
            publisher.remb_bps = remb;
            if self.srtp_tx.is_some() {
                self.send_receiver_report(now);
            }
        }
    }

    /// A publisher's bitrate over the last receiver report period (about a second).
    pub fn received_bitrate(&self) -> Option<u64> {
        match &self.role {
            RoleState::Publisher(p) => Some(p.bitrate_bps),
            RoleState::Player(_) => None,
        }
    }

    /// A player's NACK names packets in its own sequence space; the publisher knows them by its
    /// own numbers.
    fn handle_nack(&mut self, nack: &Nack<'_>) {
        let RoleState::Player(player) = &self.role else {
            return;
        };
        let Some(track) = player
            .tracks
            .iter()
            .flatten()
            .find(|t| t.track.ssrc == nack.media_ssrc.0)
        else {
            return;
        };
        let seqs: LostPackets = nack
            .lost()
            .filter_map(|seq| track.rewriter.source_sequence(seq))
            .collect();
        if !seqs.is_empty() {
            self.events
                .push_back(SessionEvent::RetransmissionRequested {
                    kind: track.track.kind,
                    seqs,
                });
        }
    }

    /// Asks a publisher to send packets of a track again (generic NACK, RFC 4585 §6.2.1), for
    /// what no core's retransmission cache held: the publisher's copy is forwarded again, and
    /// receivers that already have it drop the duplicate. Video packets this node already asked
    /// for less than a round trip ago are left out (see [`LossDetector::should_request`]).
    pub fn request_retransmission(
        &mut self,
        now: Instant,
        kind: MediaKind,
        layer: u8,
        seqs: &[u16],
    ) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let mut wanted = [0u16; MAX_LOST_PACKETS];
        let mut count = 0;
        for &seq in seqs.iter().take(MAX_LOST_PACKETS) {
            let loss = publisher.video_loss.get_mut(usize::from(layer));
            let merged = match (kind, loss.and_then(Option::as_mut)) {
                (MediaKind::Video, Some(loss)) => !loss.should_request(now, seq),
                _ => false,
            };
            if !merged {
                wanted[count] = seq;
                count += 1;
            }
        }
        self.send_nack(kind, layer, &wanted[..count]);
    }

    /// Asks for the video packets the loss detector found missing (or still misses a round
    /// trip after asking), and reports what it did.
    fn request_lost_video(&mut self, now: Instant) {
        for layer in 0..MAX_LAYERS as u8 {
            let RoleState::Publisher(publisher) = &mut self.role else {
                return;
            };
            let Some(loss) = publisher.video_loss[usize::from(layer)].as_mut() else {
                continue;
            };
            let mut seqs = [0u16; MAX_LOST_PACKETS];
            let count = loss.poll_requests(now, &mut seqs);
            let counts = loss.take_counts();
            // A NACK carries at most MAX_LOST_PACKETS; what is left is due again at the next
            // tick.
            self.send_nack(MediaKind::Video, layer, &seqs[..count]);
            if counts != RepairCounts::default() {
                self.events.push_back(SessionEvent::UpstreamRepair(counts));
            }
        }
    }

    fn send_nack(&mut self, kind: MediaKind, layer: u8, seqs: &[u16]) {
        let RoleState::Publisher(publisher) = &self.role else {
            return;
        };
        let media_ssrc = publisher.stats[stats_slot(kind, layer)].ssrc;
        if media_ssrc == 0 || seqs.is_empty() {
            return;
        }
        let mut pairs = [NackPair::default(); MAX_LOST_PACKETS];
        let count = nack_pairs(seqs, &mut pairs);
        let nack = Nack {
            sender_ssrc: Ssrc(self.rtcp_ssrc),
            media_ssrc: Ssrc(media_ssrc),
            pairs: Items::from_slice(&pairs[..count]),
        };
        self.send_rtcp(&[Rtcp::Nack(nack)]);
    }

    fn handle_sender_report(&mut self, now: Instant, sr: &SenderReport) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let Some(index) = publisher
            .stats
            .iter()
            .position(|s| s.ssrc == sr.sender_ssrc.0 && s.highest_seq.is_some())
        else {
            return;
        };
        let stats = &mut publisher.stats[index];
        stats.last_sr_ntp_middle = (sr.ntp_time >> 16) as u32;
        stats.last_sr_at = Some(now);
        let (kind, layer) = match index {
            0 => (MediaKind::Audio, 0),
            video => (MediaKind::Video, (video - 1) as u8),
        };
        self.events.push_back(SessionEvent::SenderReport {
            kind,
            layer,
            ntp_time: sr.ntp_time,
            rtp_time: sr.rtp_time,
        });
    }

    /// Writes a forwarded packet for this player into `out`: copied from `plain`, rewritten to the
    /// player's SSRC, payload type, sequence and timestamp, and encrypted. Returns the datagram
    /// length, or 0 when this player does not take the packet (not connected, no such track).
    pub fn write_rtp(
        &mut self,
        now: Instant,
        kind: MediaKind,
        plain: &[u8],
        out: &mut [u8],
    ) -> usize {
        self.write_player_rtp(now, kind, plain, out, false)
    }

    /// Writes a packet this player reported lost again, from the node's cache. With rtx
    /// negotiated, as a retransmission (RFC 4588) on the player's RTX stream: the number the
    /// player asked for in front of the payload, the timestamp it first went out with. Without,
    /// rewritten and encrypted exactly as [`Session::write_rtp`] first wrote it, so it carries
    /// the number the player asked for and an SRTP index it never received. Returns 0, writing
    /// nothing, unless the player's current mapping wrote that packet: a packet from before the
    /// player joined or from an earlier source would carry a number that belonged to other
    /// contents (and, resent as it went out, reuse an SRTP index, so a GCM nonce).
    pub fn write_retransmission(
        &mut self,
        now: Instant,
        kind: MediaKind,
        plain: &[u8],
        out: &mut [u8],
    ) -> usize {
        self.write_player_rtp(now, kind, plain, out, true)
    }

    /// Whether this player takes a video packet of simulcast `layer` (`keyframe` when it starts
    /// a keyframe), moving it to its target layer at the target's keyframe (see
    /// [`LayerSwitch`]). Every packet, without simulcast.
    pub fn take_layer(&mut self, layer: u8, keyframe: bool) -> LayerDecision {
        match &mut self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => layers.on_packet(layer, keyframe),
            _ => LayerDecision::Forward,
        }
    }

    /// Moves a simulcast player's target layer (the layers it can get changed); false when
    /// it pinned its layer, has none, or already targets `layer`.
    pub fn retarget_layer(&mut self, layer: u8) -> bool {
        match &mut self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => layers.retarget(layer),
            _ => false,
        }
    }

    /// A simulcast player's layer choice: `(count, target)`, when the core may move it (to
    /// another layer the publisher sends); `None` without simulcast or when it pinned one.
    pub fn layer_choice(&self) -> Option<(u8, u8)> {
        match &self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                tracks,
                ..
            }) if !layers.pinned() => {
                let count = tracks.iter().flatten().find_map(|t| t.track.layers)?.count;
                Some((count, layers.target()))
            }
            _ => None,
        }
    }

    /// A simulcast player's layers: `(current, target)`; `None` without simulcast.
    pub fn video_layers(&self) -> Option<(Option<u8>, u8)> {
        match &self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => Some((layers.current(), layers.target())),
            _ => None,
        }
    }

    /// The layer whose keyframe this player waits for, when one is due to be asked for again
    /// (see [`LayerSwitch::poll_keyframe_request`]).
    pub fn poll_layer_keyframe_request(&mut self, now: Instant) -> Option<u8> {
        match &mut self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => layers.poll_keyframe_request(now),
            _ => None,
        }
    }

    /// How many simulcast layers a publisher sends (1 without simulcast), or a player's stream
    /// has; 0 without video.
    pub fn video_layer_count(&self) -> usize {
        match &self.role {
            RoleState::Publisher(p) => p.video_loss.iter().flatten().count(),
            RoleState::Player(p) if p.tracks[kind_index(MediaKind::Video)].is_some() => p
                .tracks
                .iter()
                .flatten()
                .find_map(|t| t.track.layers)
                .map_or(1, |l| usize::from(l.count).clamp(1, MAX_LAYERS)),
            RoleState::Player(_) => 0,
        }
    }

    /// Whether this player may have one more packet sent again now ([`RESEND_RATE_PER_SEC`]);
    /// takes it from its budget if so. Never for a publisher.
    pub fn may_resend(&mut self, now: Instant) -> bool {
        match &mut self.role {
            RoleState::Player(player) => player.resends.take(now),
            RoleState::Publisher(_) => false,
        }
    }

    fn write_player_rtp(
        &mut self,
        now: Instant,
        kind: MediaKind,
        plain: &[u8],
        out: &mut [u8],
        only_if_written: bool,
    ) -> usize {
        let (RoleState::Player(player), Some(srtp)) = (&mut self.role, self.srtp_tx.as_mut())
        else {
            return 0;
        };
        let Some(track) = player.tracks[kind_index(kind)].as_mut() else {
            return 0;
        };
        let len = plain.len();
        if len + 32 > out.len() {
            return 0;
        }
        if only_if_written {
            let Ok(header) = RtpHeader::parse(plain) else {
                return 0;
            };
            let Some(osn) = track
                .rewriter
                .written_sequence(header.ssrc(), header.sequence_number())
            else {
                return 0;
            };
            if let Some(rtx) = track.rtx.as_mut() {
                // Under the mapping that wrote it: the timestamp it went out with.
                let Some(timestamp) = track.rewriter.output_timestamp(header.timestamp()) else {
                    return 0;
                };
                // Not counted in the sender report's packets: those are the media SSRC's.
                let Ok(len) = rtx.write(plain, osn, timestamp, out) else {
                    return 0;
                };
                if let Some(feedback) = player.transport_cc.as_mut() {
                    // A new packet on the transport: a number of its own, when the copied
                    // header has the element (else the player's feedback just never sees it).
                    feedback.stamp_new(now, &mut out[..len]);
                }
                return srtp.protect_rtp(out, len).unwrap_or(0);
            }
        }
        // With transport-cc the element gets room now and its number once the packet is
        // rewritten; a packet whose extensions cannot take it goes out without one (the same
        // way every time, so a retransmission is still the same bytes).
        let stamped = player
            .transport_cc
            .as_ref()
            .and_then(|f| f.copy_with_room(plain, out).ok());
        let len = match stamped {
            Some(len) => len,
            None => {
                out[..len].copy_from_slice(plain);
                len
            }
        };
        if track.rewriter.rewrite(&mut out[..len]).is_err() {
            return 0;
        }
        if let (Some(feedback), Some(_)) = (player.transport_cc.as_mut(), stamped) {
            let video = kind == MediaKind::Video;
            if feedback
                .stamp(now, &mut out[..len], video, only_if_written)
                .is_err()
            {
                return 0;
            }
        }
        match srtp.protect_rtp(out, len) {
            Ok(n) => {
                track.packets_sent = track.packets_sent.wrapping_add(1);
                track.octets_sent = track.octets_sent.wrapping_add(len as u32);
                n
            }
            Err(_) => 0,
        }
    }

    /// The publisher sent a sender report: send this player the same NTP↔RTP mapping in its own
    /// SSRC and timestamp space, so its browser keeps audio and video in sync.
    /// With simulcast, only the report of the video layer it is sent applies: each layer has
    /// its own timestamp base.
    pub fn handle_publisher_sender_report(
        &mut self,
        kind: MediaKind,
        layer: u8,
        ntp_time: u64,
        rtp_time: u32,
    ) {
        let RoleState::Player(player) = &mut self.role else {
            return;
        };
        if let (MediaKind::Video, Some(layers)) = (kind, &player.layers) {
            if layers.current() != Some(layer) {
                return;
            }
        }
        let Some(track) = player.tracks[kind_index(kind)].as_mut() else {
            return;
        };
        let Some(rtp_time) = track.rewriter.output_timestamp(rtp_time) else {
            return;
        };
        let sr = SenderReport {
            sender_ssrc: Ssrc(track.track.ssrc),
            ntp_time,
            rtp_time,
            packet_count: track.packets_sent,
            octet_count: track.octets_sent,
            reports: Items::default(),
        };
        self.send_rtcp(&[Rtcp::SenderReport(sr)]);
    }

    /// Asks a publisher for a keyframe; requests closer together than the throttle interval are
    /// merged into one PLI sent when the interval ends.
    /// `layer` is the simulcast layer whose SSRC the PLI names (0 without simulcast).
    pub fn request_keyframe(&mut self, now: Instant, layer: u8) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let index = usize::from(layer).min(MAX_LAYERS - 1);
        let due = publisher.last_keyframe_request[index].map(|at| at + KEYFRAME_REQUEST_INTERVAL);
        match due {
            Some(due) if due > now => {
                publisher.pending_keyframe_request[index].get_or_insert(due);
            }
            _ => self.send_keyframe_request(now, index),
        }
    }

    fn send_keyframe_request(&mut self, now: Instant, layer: usize) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        publisher.pending_keyframe_request[layer] = None;
        let video_ssrc = publisher.stats[stats_slot(MediaKind::Video, layer as u8)].ssrc;
        if video_ssrc == 0 || self.srtp_tx.is_none() {
            // Nothing to ask yet: the first keyframe is on its way anyway.
            return;
        }
        publisher.last_keyframe_request[layer] = Some(now);
        let pli = Pli {
            sender_ssrc: Ssrc(self.rtcp_ssrc),
            media_ssrc: Ssrc(video_ssrc),
        };
        self.send_rtcp(&[Rtcp::Pli(pli)]);
    }

    fn send_receiver_report(&mut self, now: Instant) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        publisher.next_receiver_report = Some(now + RECEIVER_REPORT_INTERVAL);
        if let Some(since) = publisher.bitrate_since {
            let elapsed = now.saturating_duration_since(since).as_secs_f64();
            if elapsed > 0.0 {
                publisher.bitrate_bps = (publisher.received_bytes as f64 * 8.0 / elapsed) as u64;
            }
            if let Some(feedback) = publisher.transport_cc.as_mut() {
                feedback.set_bitrate(publisher.bitrate_bps);
            }
        }
        publisher.received_bytes = 0;
        publisher.bitrate_since = Some(now);
        // Recoveries since the last request are reported here at the latest.
        for counts in publisher
            .video_loss
            .iter_mut()
            .flatten()
            .map(LossDetector::take_counts)
            .filter(|c| *c != RepairCounts::default())
        {
            self.events.push_back(SessionEvent::UpstreamRepair(counts));
        }
        let mut reports = [ReportBlock::default(); STATS_SLOTS];
        let mut ssrcs = [Ssrc(0); STATS_SLOTS];
        let mut count = 0;
        for block in publisher
            .stats
            .iter_mut()
            .filter_map(|s| s.report_block(now))
        {
            reports[count] = block;
            ssrcs[count] = block.ssrc;
            count += 1;
        }
        if count == 0 {
            return;
        }
        let sender_ssrc = Ssrc(self.rtcp_ssrc);
        let rr = Rtcp::ReceiverReport(ReceiverReport {
            sender_ssrc,
            reports: Items::from_slice(&reports[..count]),
        });
        let remb = Rtcp::Remb(Remb {
            sender_ssrc,
            bitrate_bps: publisher.remb_bps,
            ssrcs: Items::from_slice(&ssrcs[..count]),
        });
        self.send_rtcp(&[rr, remb]);
    }

    fn send_rtcp(&mut self, packets: &[Rtcp<'_>]) {
        if self.remote.is_none() || self.srtp_tx.is_none() {
            return;
        }
        let len: usize = packets.iter().map(|p| p.encoded_len()).sum();
        let mut buf = self.spare_buffers.pop().unwrap_or_default();
        buf.clear();
        // Room for the SRTCP index and tag.
        buf.resize(len + 64, 0);
        let mut at = 0;
        for packet in packets {
            match packet.write_to(&mut buf[at..]) {
                Ok(n) => at += n,
                Err(_) => {
                    self.spare_buffers.push(buf);
                    return;
                }
            }
        }
        self.queue_srtcp(buf, at);
    }

    /// Protects the RTCP in `buf[..len]` (which has room for SRTCP's index and tag) and queues
    /// it to the peer.
    fn queue_srtcp(&mut self, mut buf: Vec<u8>, len: usize) {
        let (Some(remote), Some(srtp)) = (self.remote, self.srtp_tx.as_mut()) else {
            self.spare_buffers.push(buf);
            return;
        };
        match srtp.protect_rtcp(&mut buf, len) {
            Ok(n) => {
                buf.truncate(n);
                self.transmits.push_back(Transmit {
                    destination: remote,
                    contents: buf,
                });
            }
            Err(_) => self.spare_buffers.push(buf),
        }
    }

    /// Sends the publisher the transport-cc feedback that is due.
    fn send_transport_feedback(&mut self, now: Instant) {
        loop {
            let RoleState::Publisher(publisher) = &mut self.role else {
                return;
            };
            let media_ssrc = publisher
                .stats
                .iter()
                .rev()
                .map(|s| s.ssrc)
                .find(|&s| s != 0)
                .unwrap_or(0);
            let Some(feedback) = publisher.transport_cc.as_mut() else {
                return;
            };
            let mut buf = self.spare_buffers.pop().unwrap_or_default();
            buf.clear();
            buf.resize(MAX_FEEDBACK_LEN + 64, 0);
            let written = feedback.poll_feedback(
                now,
                self.rtcp_ssrc,
                media_ssrc,
                &mut buf[..MAX_FEEDBACK_LEN],
            );
            match written {
                Some(len) => self.queue_srtcp(buf, len),
                None => {
                    self.spare_buffers.push(buf);
                    return;
                }
            }
        }
    }

    /// Gives back the buffer of a sent [`Transmit`] for the next control packet.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        // A few are enough: a session queues at most a handful of control packets at a time.
        if self.spare_buffers.len() < 4 && buffer.capacity() <= 2048 {
            self.spare_buffers.push(buffer);
        }
    }

    /// Time passed: ICE consent, merged keyframe requests, receiver reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.connect_deadline.is_some_and(|at| at <= now) {
            self.connect_deadline = None;
            if matches!(self.phase, Phase::AwaitingIce | Phase::AwaitingDtls) {
                let ice = self.phase == Phase::AwaitingDtls;
                self.end(EndReason::ConnectTimeout { ice });
            }
        }
        self.ice.handle_timeout(now);
        self.drain_ice();
        let (pending, report, loss, feedback) = match &self.role {
            RoleState::Publisher(p) => (
                p.pending_keyframe_request,
                p.next_receiver_report,
                earliest_loss_timeout(&p.video_loss),
                p.transport_cc.as_ref().and_then(|f| f.poll_timeout()),
            ),
            RoleState::Player(_) => ([None; MAX_LAYERS], None, None, None),
        };
        if feedback.is_some_and(|at| at <= now) {
            self.send_transport_feedback(now);
        }
        if loss.is_some_and(|at| at <= now) {
            self.request_lost_video(now);
        }
        for (layer, at) in pending.into_iter().enumerate() {
            if at.is_some_and(|at| at <= now) {
                self.send_keyframe_request(now, layer);
            }
        }
        if report.is_some_and(|at| at <= now) {
            self.send_receiver_report(now);
        }
    }

    /// When [`Session::handle_timeout`] wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.ice.poll_timeout();
        if let Some(at) = self.connect_deadline {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if let RoleState::Publisher(p) = &self.role {
            let loss = earliest_loss_timeout(&p.video_loss);
            let feedback = p.transport_cc.as_ref().and_then(|f| f.poll_timeout());
            for at in [p.next_receiver_report, loss, feedback]
                .into_iter()
                .chain(p.pending_keyframe_request)
                .flatten()
            {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// A control datagram to send (STUN, RTCP).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Something that happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    fn drain_ice(&mut self) {
        while let Some(transmit) = self.ice.poll_transmit() {
            self.transmits.push_back(transmit);
        }
        while let Some(event) = self.ice.poll_event() {
            match event {
                IceEvent::Connected { remote } => {
                    self.remote = Some(remote);
                    if self.phase == Phase::AwaitingIce {
                        self.phase = Phase::AwaitingDtls;
                    }
                    self.events.push_back(SessionEvent::IceConnected { remote });
                }
                IceEvent::RemoteChanged { remote } => {
                    self.remote = Some(remote);
                    self.events
                        .push_back(SessionEvent::RemoteChanged { remote });
                }
                IceEvent::Disconnected { reason } => {
                    let reason = match reason {
                        ice::DisconnectReason::NeverConnected => EndReason::NeverConnected,
                        _ => EndReason::ConsentExpired,
                    };
                    self.end(reason);
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }
}

/// A tiny deterministic generator for per-session random values (SSRCs, sequence bases), so the
/// session needs no global RNG.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::RtxStream;

    #[test]
    fn sequence_extension_wraps_forward_and_back() {
        assert_eq!(extend_seq(10, 11), 11);
        assert_eq!(extend_seq(0xfff0, 0x0005), 0x1_0005);
        assert_eq!(extend_seq(0x1_0005, 0xfff0), 0xfff0);
        assert_eq!(extend_seq(0x1_0005, 0x0003), 0x1_0003);
    }

    #[test]
    fn nack_pairs_cover_every_sequence_number_once() {
        let seqs = [10u16, 12, 26, 27, 11, 10, 65535, 0];
        let mut out = [NackPair::default(); MAX_LOST_PACKETS];
        let count = nack_pairs(&seqs, &mut out);
        let pairs = &out[..count];
        let mut covered: Vec<u16> = pairs.iter().flat_map(|p| p.lost()).collect();
        covered.sort_unstable();
        assert_eq!(covered, [0, 10, 11, 12, 26, 27, 65535]);
        // 65535 covers 0 and 10..=12 (offsets 1, 11, 12, 13) across the wrap; 26 starts a pair.
        assert_eq!(
            pairs[0],
            NackPair {
                pid: 65535,
                blp: 1 | 1 << 10 | 1 << 11 | 1 << 12
            }
        );
        assert_eq!(pairs[1], NackPair { pid: 26, blp: 1 });
        assert_eq!(pairs.len(), 2, "{pairs:?}");
    }

    #[test]
    fn receive_stats_count_loss() {
        let mut stats = ReceiveStats::default();
        for seq in [100u16, 101, 103, 104] {
            stats.record(7, seq);
        }
        let block = stats.report_block(Instant::now()).unwrap();
        assert_eq!(block.ssrc, Ssrc(7));
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.extended_highest_seq, 104);
        assert_eq!(block.fraction_lost, (256 / 5) as u8);
    }

    fn publisher_spec() -> SessionSpec {
        SessionSpec {
            id: SessionId(1),
            stream: StreamId(1),
            stream_name: "s".into(),
            role: SessionRole::Publisher { tracks: Vec::new() },
            local_ice: ice::IceCredentials {
                ufrag: "locl".into(),
                pwd: "local-password-0123456789".into(),
            },
            remote_ice: ice::IceCredentials {
                ufrag: "remt".into(),
                pwd: "remote-password-0123456789".into(),
            },
            remote_fingerprint: [0; 32],
            dtls_role: DtlsRole::Client,
            publisher_core: None,
        }
    }

    /// A connected player of one video track (SSRC 0x5eed, PT 96), with fixed SRTP keys.
    fn connected_player() -> Session {
        connected_player_with(None)
    }

    /// [`connected_player`] with `rtx` negotiated.
    fn connected_player_with(rtx: Option<RtxStream>) -> Session {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Player {
            tracks: vec![PlayedTrack {
                kind: MediaKind::Video,
                pt: 96,
                ssrc: 0x5eed,
                rtx,
                transport_cc: None,
                layers: None,
            }],
        };
        let now = Instant::now();
        let session = connected_with_test_keys(spec, now);
        assert!(session.is_connected());
        session
    }

    /// A session of `spec` with ICE skipped and DTLS done: fixed SRTP keys (the peer's side is
    /// [`peer_context`]).
    fn connected_with_test_keys(spec: SessionSpec, now: Instant) -> Session {
        let timeouts = SessionTimeouts {
            connect: Duration::from_secs(10),
            consent: Duration::from_secs(30),
        };
        let mut session = Session::new(spec, now, timeouts, 7);
        let keys = SrtpKeyingMaterial {
            profile: rtp::srtp::SrtpProfile::AeadAes128Gcm,
            local_key: vec![1; 16],
            local_salt: vec![2; 12],
            remote_key: vec![3; 16],
            remote_salt: vec![4; 12],
        };
        session.handle_dtls_connected(keys, now);
        session
    }

    fn source_packet(ssrc: u32, seq: u16) -> Vec<u8> {
        let mut p = vec![0u8; 200];
        rtp::RtpHeaderBuilder::new(Pt::new(100), seq, u32::from(seq) * 3000, Ssrc(ssrc))
            .write_to(&mut p)
            .unwrap();
        p[12..].fill(seq as u8);
        p
    }

    #[test]
    fn a_retransmission_is_the_original_datagram_and_only_for_packets_the_player_was_sent() {
        let mut player = connected_player();
        let mut sent = Vec::new();
        for seq in 100..105u16 {
            let mut out = [0u8; 1500];
            let n = player.write_rtp(
                Instant::now(),
                MediaKind::Video,
                &source_packet(1, seq),
                &mut out,
            );
            assert!(n > 0);
            sent.push(out[..n].to_vec());
        }
        // The same number, timestamp and SRTP index: byte for byte the first datagram.
        let mut out = [0u8; 1500];
        let n = player.write_retransmission(
            Instant::now(),
            MediaKind::Video,
            &source_packet(1, 102),
            &mut out,
        );
        assert_eq!(&out[..n], sent[2].as_slice());
        // Not sent to this player (before it joined, not yet, another source): nothing.
        for (ssrc, seq) in [(1, 99), (1, 105), (2, 102)] {
            let n = player.write_retransmission(
                Instant::now(),
                MediaKind::Video,
                &source_packet(ssrc, seq),
                &mut out,
            );
            assert_eq!(n, 0, "ssrc {ssrc} seq {seq}");
        }
        assert_eq!(
            player.write_retransmission(
                Instant::now(),
                MediaKind::Audio,
                &source_packet(1, 102),
                &mut out
            ),
            0
        );
        // The mapping is untouched: the next packet follows on.
        let n = player.write_rtp(
            Instant::now(),
            MediaKind::Video,
            &source_packet(1, 105),
            &mut out,
        );
        let header = RtpHeader::parse(&out[..n]).unwrap();
        let first = RtpHeader::parse(&sent[0]).unwrap();
        assert_eq!(
            header.sequence_number(),
            first.sequence_number().wrapping_add(5)
        );
        assert!(player.plays(MediaKind::Video) && !player.plays(MediaKind::Audio));
    }

    /// The SRTP context of the peer's side of [`connected_player_with`]'s keys: `receiving`
    /// what the session sends, or sending what it receives.
    fn peer_context(receiving: bool) -> SrtpContext {
        let (key, salt) = if receiving { (1, 2) } else { (3, 4) };
        SrtpContext::new(
            rtp::srtp::SrtpProfile::AeadAes128Gcm,
            &[key; 16],
            &[salt; 12],
        )
        .unwrap()
    }

    #[test]
    fn a_player_with_rtx_gets_what_it_lost_on_its_rtx_stream() {
        let rtx = RtxStream {
            pt: 97,
            ssrc: 0x7e57,
        };
        let mut player = connected_player_with(Some(rtx));
        let mut rx = peer_context(true);
        let mut sent = Vec::new();
        for seq in 100..105u16 {
            let mut out = [0u8; 1500];
            let n = player.write_rtp(
                Instant::now(),
                MediaKind::Video,
                &source_packet(1, seq),
                &mut out,
            );
            let n = rx.unprotect_rtp(&mut out[..n]).unwrap();
            sent.push(out[..n].to_vec());
        }
        let mut rtx_seq = None;
        for (lost, original) in [(102u16, &sent[2]), (100, &sent[0])] {
            let mut out = [0u8; 1500];
            let n = player.write_retransmission(
                Instant::now(),
                MediaKind::Video,
                &source_packet(1, lost),
                &mut out,
            );
            let n = rx
                .unprotect_rtp(&mut out[..n])
                .expect("decrypts as the player would");
            let header = RtpHeader::parse(&out[..n]).unwrap();
            let original = RtpHeader::parse(original).unwrap();
            assert_eq!(header.ssrc(), Ssrc(0x7e57));
            assert_eq!(header.payload_type(), Pt::new(97));
            assert_eq!(header.timestamp(), original.timestamp());
            let osn = u16::from_be_bytes([header.payload()[0], header.payload()[1]]);
            assert_eq!(
                osn,
                original.sequence_number(),
                "the number the player lost"
            );
            assert_eq!(&header.payload()[2..], original.payload());
            // Its own numbers, one after the other.
            let expected = rtx_seq.map_or(header.sequence_number(), |s: u16| s.wrapping_add(1));
            assert_eq!(header.sequence_number(), expected);
            rtx_seq = Some(header.sequence_number());
        }
        // Still only what the current mapping wrote.
        let mut out = [0u8; 1500];
        for (ssrc, seq) in [(1, 99), (1, 105), (2, 102)] {
            let n = player.write_retransmission(
                Instant::now(),
                MediaKind::Video,
                &source_packet(ssrc, seq),
                &mut out,
            );
            assert_eq!(n, 0, "ssrc {ssrc} seq {seq}");
        }
        // A NACK naming the RTX stream asks for nothing; one naming the media stream does.
        let mut tx = peer_context(false);
        for (ssrc, asks) in [(0x7e57, false), (0x5eed, true)] {
            let lost = RtpHeader::parse(&sent[1]).unwrap().sequence_number();
            let mut buf = nack_for(ssrc, lost);
            let len = buf.len() - 20;
            let n = tx.protect_rtcp(&mut buf, len).unwrap();
            player
                .handle_srtcp(
                    Instant::now(),
                    "127.0.0.1:5000".parse().unwrap(),
                    &mut buf[..n],
                )
                .unwrap();
            let asked = std::iter::from_fn(|| player.poll_event())
                .any(|e| matches!(e, SessionEvent::RetransmissionRequested { .. }));
            assert_eq!(asked, asks, "NACK for {ssrc:#x}");
        }
    }

    #[test]
    fn a_limited_publisher_is_sent_the_limit_in_remb_at_once_and_in_every_report() {
        let now = Instant::now();
        let mut publisher = connected_publisher(None, now);
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        publisher.remote = Some(from);
        let (mut tx, mut rx) = (peer_context(false), peer_context(true));
        for seq in 1..=5u16 {
            let plain = source_packet(1, seq);
            let mut buf = [0u8; 1500];
            buf[..plain.len()].copy_from_slice(&plain);
            let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            publisher.handle_srtp(now, from, &mut buf[..n]).unwrap();
        }
        let mut remb_sent = |publisher: &mut Session| {
            let mut rembs = Vec::new();
            while let Some(mut t) = publisher.poll_transmit() {
                let n = rx.unprotect_rtcp(&mut t.contents).unwrap();
                for packet in RtcpIter::new(&t.contents[..n]).flatten() {
                    if let Rtcp::Remb(remb) = packet {
                        rembs.push(remb.bitrate_bps);
                    }
                }
            }
            rembs
        };
        publisher.handle_timeout(now + RECEIVER_REPORT_INTERVAL);
        assert_eq!(remb_sent(&mut publisher), [REMB_BITRATE_BPS]);
        publisher.limit_bitrate(now + Duration::from_millis(1100), Some(300_000));
        assert_eq!(remb_sent(&mut publisher), [300_000], "at once");
        publisher.handle_timeout(now + Duration::from_millis(2200));
        assert_eq!(remb_sent(&mut publisher), [300_000], "in the next report");
        publisher.limit_bitrate(now + Duration::from_millis(2300), None);
        assert_eq!(remb_sent(&mut publisher), [REMB_BITRATE_BPS], "lifted");
    }

    /// A connected publisher of one VP8 track (PT 100), with rtx `(pt, (media, rtx SSRCs))`
    /// if given, and fixed SRTP keys (the peer's are [`peer_context`]'s).
    fn connected_publisher(rtx: Option<(u8, (u32, u32))>, now: Instant) -> Session {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Publisher {
            tracks: vec![PublishedTrack {
                kind: MediaKind::Video,
                pt: 100,
                clock_rate: 90_000,
                codec: "VP8".into(),
                rtx_pt: rtx.map(|(pt, _)| pt),
                rtx_ssrcs: rtx.map(|(_, ssrcs)| ssrcs),
                transport_cc: None,
                simulcast: None,
            }],
        };
        connected_with_test_keys(spec, now)
    }

    /// A NACK of `media_ssrc` for packet `seq`, with room for the SRTCP overhead after it.
    fn nack_for(media_ssrc: u32, seq: u16) -> Vec<u8> {
        let pairs = [NackPair { pid: seq, blp: 0 }];
        let nack = Rtcp::Nack(Nack {
            sender_ssrc: Ssrc(9),
            media_ssrc: Ssrc(media_ssrc),
            pairs: Items::from_slice(&pairs),
        });
        let mut buf = vec![0u8; nack.encoded_len() + 20];
        nack.write_to(&mut buf).unwrap();
        buf
    }

    #[test]
    fn a_publishers_rtx_packet_is_handled_as_the_media_packet_it_carries() {
        let now = Instant::now();
        let mut publisher = connected_publisher(Some((101, (1, 2))), now);
        let mut tx = peer_context(false);
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut receive = |plain: &[u8]| {
            let mut buf = [0u8; 1500];
            buf[..plain.len()].copy_from_slice(plain);
            let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            publisher
                .handle_srtp(now, from, &mut buf[..n])
                .map(|m| (m.kind, buf[..m.len].to_vec()))
        };
        for seq in [10u16, 11, 13] {
            assert_eq!(
                receive(&source_packet(1, seq)).unwrap(),
                (MediaKind::Video, source_packet(1, seq))
            );
        }
        // 12 was lost and comes on the RTX stream: OSN, then the payload.
        let rtx = |rtx_seq: u16, osn: u16| {
            let original = source_packet(1, osn);
            let mut p = original[..12].to_vec();
            p[1] = 101;
            p[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
            p[8..12].copy_from_slice(&2u32.to_be_bytes());
            p.extend_from_slice(&osn.to_be_bytes());
            p.extend_from_slice(&original[12..]);
            p
        };
        assert_eq!(
            receive(&rtx(500, 12)).unwrap(),
            (MediaKind::Video, source_packet(1, 12))
        );
        // Again, or for a packet that came: not forwarded twice.
        for (rtx_seq, osn) in [(501, 12), (502, 11)] {
            assert!(matches!(
                receive(&rtx(rtx_seq, osn)),
                Err(SessionError::Rtx(RtxError::AlreadyReceived))
            ));
        }
        // A padding-only probe.
        let mut probe = rtx(503, 14)[..12].to_vec();
        probe[0] |= 0x20;
        probe.extend_from_slice(&[0, 0, 0, 4]);
        assert!(matches!(
            receive(&probe),
            Err(SessionError::Rtx(RtxError::Empty))
        ));
        // Receive statistics count the repaired packet as received.
        let RoleState::Publisher(state) = &mut publisher.role else {
            unreachable!()
        };
        let block = state.stats[kind_index(MediaKind::Video)]
            .report_block(now)
            .unwrap();
        assert_eq!((block.ssrc, block.cumulative_lost), (Ssrc(1), 0));
        assert_eq!(block.extended_highest_seq, 13);
    }

    fn ended(session: &mut Session) -> Option<EndReason> {
        while let Some(event) = session.poll_event() {
            if let SessionEvent::Ended(reason) = event {
                return Some(reason);
            }
        }
        None
    }

    #[test]
    fn a_session_that_never_connects_ends_at_the_connect_timeout() {
        let start = Instant::now();
        let timeouts = SessionTimeouts {
            connect: Duration::from_secs(10),
            consent: Duration::from_secs(30),
        };
        let mut session = Session::new(publisher_spec(), start, timeouts, 7);
        // The connect deadline comes before anything the ICE agent waits for.
        assert_eq!(
            session.poll_timeout(),
            Some(start + Duration::from_secs(10))
        );
        session.handle_timeout(start + Duration::from_secs(9));
        assert_eq!(ended(&mut session), None);
        session.handle_timeout(start + Duration::from_secs(10));
        assert_eq!(
            ended(&mut session),
            Some(EndReason::ConnectTimeout { ice: false })
        );
    }

    #[test]
    fn resends_are_budgeted_per_player() {
        let mut budget = ResendBudget::full();
        let start = Instant::now();
        let granted = (0..1000).filter(|_| budget.take(start)).count() as u64;
        assert_eq!(granted, RESEND_BURST, "a burst takes the bucket, no more");
        // Refilled at the rate, with no fraction lost between calls.
        let mut more = 0;
        for ms in 1..=1000u64 {
            while budget.take(start + Duration::from_millis(ms)) {
                more += 1;
            }
        }
        assert_eq!(more, RESEND_RATE_PER_SEC, "one second earns the rate");
    }

    /// A connected publisher of simulcast VP8 (PT 100, RTX 101) with layers `l`, `h`: the
    /// RTP stream id in extension 10, the repaired one in 11.
    fn simulcast_publisher() -> Session {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Publisher {
            tracks: vec![PublishedTrack {
                kind: MediaKind::Video,
                pt: 100,
                clock_rate: 90_000,
                codec: "VP8".into(),
                rtx_pt: Some(101),
                rtx_ssrcs: None,
                transport_cc: None,
                simulcast: Some(crate::control::SimulcastLayers {
                    rids: vec!["l".into(), "h".into()],
                    rid_ext: 10,
                    repaired_rid_ext: Some(11),
                }),
            }],
        };
        let now = Instant::now();
        let mut publisher = connected_with_test_keys(spec, now);
        publisher.remote = Some("127.0.0.1:5000".parse().unwrap());
        publisher
    }

    /// A VP8 packet; `rid` in extension `ext` when given; a keyframe start when `key`.
    fn layer_packet(pt: u8, ssrc: u32, seq: u16, rid: Option<(u8, &[u8])>, key: bool) -> Vec<u8> {
        let ext: Vec<rtp::ExtensionElement<'_>> = rid
            .map(|(id, data)| rtp::ExtensionElement { id, data })
            .into_iter()
            .collect();
        let mut header =
            rtp::RtpHeaderBuilder::new(Pt::new(pt), seq, u32::from(seq) * 3000, Ssrc(ssrc));
        header.extensions = &ext;
        let mut p = vec![0u8; header.encoded_len() + 20];
        let at = header.write_to(&mut p).unwrap();
        // VP8 payload descriptor with S=1, PID 0; then a frame header whose P bit (0 for a
        // keyframe) starts the payload.
        p[at] = 0x10;
        p[at + 1] = if key { 0x00 } else { 0x01 };
        p
    }

    #[test]
    fn a_simulcast_publishers_layers_are_told_apart_by_rid_and_each_reported_and_asked_on_its_own()
    {
        let mut publisher = simulcast_publisher();
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (mut tx, mut rx) = (peer_context(false), peer_context(true));
        let mut receive = |publisher: &mut Session, plain: &[u8]| {
            let mut buf = [0u8; 1500];
            buf[..plain.len()].copy_from_slice(plain);
            let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            publisher
                .handle_srtp(now, from, &mut buf[..n])
                .map(|m| (m.layer, m.keyframe, buf[..m.len].to_vec()))
        };
        // Unknown until an SSRC carried a rid.
        assert!(matches!(
            receive(&mut publisher, &layer_packet(100, 5, 1, None, true)),
            Err(SessionError::UnknownLayer(5))
        ));
        let first_h = layer_packet(100, 9, 50, Some((10, b"h")), true);
        assert_eq!(
            receive(&mut publisher, &first_h).unwrap(),
            (1, true, first_h.clone())
        );
        assert_eq!(
            receive(
                &mut publisher,
                &layer_packet(100, 7, 1, Some((10, b"l")), false)
            )
            .unwrap()
            .0,
            0
        );
        for seq in [2u16, 4] {
            assert_eq!(
                receive(&mut publisher, &layer_packet(100, 7, seq, None, false))
                    .unwrap()
                    .0,
                0
            );
        }
        assert_eq!(
            receive(&mut publisher, &layer_packet(100, 9, 51, None, false))
                .unwrap()
                .0,
            1
        );
        // Layer l's packet 3 comes on its RTX SSRC, known by the repaired rid.
        let original = layer_packet(100, 7, 3, None, false);
        let mut repair = layer_packet(101, 70, 900, Some((11, b"l")), false);
        let header_len = RtpHeader::parse(&repair).unwrap().payload_offset();
        repair.truncate(header_len);
        repair.extend_from_slice(&3u16.to_be_bytes());
        repair.extend_from_slice(&original[12..]);
        let (layer, _, restored) = receive(&mut publisher, &repair).unwrap();
        assert_eq!(layer, 0);
        let restored = RtpHeader::parse(&restored).unwrap();
        assert_eq!((restored.ssrc(), restored.sequence_number()), (Ssrc(7), 3));

        // One report block per layer SSRC.
        publisher.handle_timeout(now + RECEIVER_REPORT_INTERVAL);
        let mut blocks = Vec::new();
        let mut plis = Vec::new();
        let mut drain =
            |publisher: &mut Session, blocks: &mut Vec<(u32, u32)>, plis: &mut Vec<u32>| {
                while let Some(mut t) = publisher.poll_transmit() {
                    let n = rx.unprotect_rtcp(&mut t.contents).unwrap();
                    for packet in RtcpIter::new(&t.contents[..n]).flatten() {
                        match packet {
                            Rtcp::ReceiverReport(rr) => blocks.extend(
                                rr.reports
                                    .iter()
                                    .map(|b| (b.ssrc.0, b.extended_highest_seq)),
                            ),
                            Rtcp::Pli(pli) => plis.push(pli.media_ssrc.0),
                            _ => {}
                        }
                    }
                }
            };
        drain(&mut publisher, &mut blocks, &mut plis);
        blocks.sort_unstable();
        assert_eq!(blocks, [(7, 4), (9, 51)]);
        // Keyframe requests name the layer's SSRC, and are throttled per layer.
        publisher.request_keyframe(now, 1);
        publisher.request_keyframe(now, 0);
        publisher.request_keyframe(now, 1);
        drain(&mut publisher, &mut blocks, &mut plis);
        assert_eq!(plis, [9, 7]);
    }

    #[test]
    fn a_switching_player_changes_layer_at_the_targets_keyframe_with_continuous_numbers() {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Player {
            tracks: vec![PlayedTrack {
                kind: MediaKind::Video,
                pt: 96,
                ssrc: 0x5eed,
                rtx: None,
                transport_cc: None,
                layers: Some(crate::control::PlayerLayers {
                    count: 2,
                    target: 1,
                    pinned: false,
                }),
            }],
        };
        let now = Instant::now();
        let mut player = connected_with_test_keys(spec, now);
        let mut rx = peer_context(true);
        // Layer 0 is SSRC 7 (seq from 100), layer 1 SSRC 9 (seq from 5000).
        let mut sent = Vec::new();
        let mut offer = |player: &mut Session, layer: u8, seq: u16, key: bool| {
            let ssrc = if layer == 0 { 7 } else { 9 };
            let plain = layer_packet(100, ssrc, seq, None, key);
            if player.take_layer(layer, key) == LayerDecision::Drop {
                return;
            }
            let mut out = [0u8; 1500];
            let n = player.write_rtp(now, MediaKind::Video, &plain, &mut out);
            assert!(n > 0);
            let n = rx.unprotect_rtp(&mut out[..n]).unwrap();
            let header = RtpHeader::parse(&out[..n]).unwrap();
            sent.push((
                header.sequence_number(),
                plain == out[..n].to_vec(),
                key,
                layer,
            ));
        };
        offer(&mut player, 0, 100, true);
        offer(&mut player, 1, 5000, false);
        offer(&mut player, 1, 5001, true);
        offer(&mut player, 0, 101, false);
        offer(&mut player, 1, 5002, false);
        assert!(player.retarget_layer(0));
        offer(&mut player, 1, 5003, false);
        offer(&mut player, 0, 102, false);
        offer(&mut player, 0, 103, true);
        offer(&mut player, 1, 5004, true);
        offer(&mut player, 0, 104, false);
        let layers: Vec<(bool, u8)> = sent
            .iter()
            .map(|&(_, _, key, layer)| (key, layer))
            .collect();
        // Started at layer 1's keyframe; back to 0 at layer 0's keyframe only.
        assert_eq!(
            layers,
            [(true, 1), (false, 1), (false, 1), (true, 0), (false, 0)]
        );
        let seqs: Vec<u16> = sent.iter().map(|s| s.0).collect();
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1), "{seqs:?}");
        }
    }
}
