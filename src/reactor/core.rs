//! One media core: a thread that owns a UDP socket, its sessions and its part of every stream.
//!
//! Each received datagram is classified by its first byte (RFC 7983) and handed to the session
//! that owns its source address: STUN to ICE, DTLS to the session's handshake task, SRTP to the
//! session. A publisher's packet is decrypted once in the receive buffer, then written, rewritten
//! and encrypted once per player straight into that player's pooled send buffer.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::control::{
    CoreCommand, CoreEvent, CoreId, EndReason, SessionId, SessionRole, SessionSpec, StreamId,
};
use crate::dtls::{DtlsCertificate, DtlsEvent, DtlsTransport};
use crate::reactor::io::{
    DatagramHandler, ResidenceHistogram, SendQueue, SocketId, UdpIo, Waker, RESIDENCE_BUCKETS,
};
use crate::reactor::mesh::{ForwardKind, Forwarded, MeshEndpoint};
use crate::retransmission_cache::RetransmissionCache;
use crate::sdp::MediaKind;
use crate::session::{
    LostPackets, ReceivedMedia, Session, SessionEvent, SessionTimeouts, MAX_LOST_PACKETS,
};
use crate::simulcast::{choose_layer, LayerDecision, LayerRates, LAYER_IDLE, MAX_LAYERS};

/// How often session timers (ICE consent, RTCP, keyframe throttling) are checked.
const TICK: Duration = Duration::from_millis(20);
/// How often simulcast players' layers are chosen again, from which layers were active (and
/// their bitrates, measured over the same period).
const LAYER_CHOICE_INTERVAL: Duration = Duration::from_millis(500);
/// Items taken from each other core's hand-off ring per wake-up; the rest wait for the next
/// poll, after this core's own datagrams and timers.
const HANDOFF_BATCH: usize = 64;
/// The most packets a new player is sent at once from the cached keyframe on: about a second of
/// 3 Mbit/s video. A longer run since the last keyframe would be a burst too big for a
/// player's link; the player waits for a fresh keyframe instead.
const KEYFRAME_REPLAY_MAX_PACKETS: usize = 300;
/// Room left in a hand-off ring after a keyframe replay, for the live packets that share it.
const REPLAY_RING_HEADROOM: usize = 256;
/// How long players wait for a replay from the publisher's core (its end marker may have been
/// dropped with a full ring) before they take live video and a keyframe request.
const REPLAY_TIMEOUT: Duration = Duration::from_millis(300);
/// How often players' bandwidth estimates and publishers' bitrates go to signalling.
const BITRATE_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a closed session's address is remembered so its DTLS close_notify still goes out.
const CLOSING_LINGER: Duration = Duration::from_secs(2);

/// Counters a core publishes for `/api/stats`. Written by the core once per tick.
#[derive(Debug, Default)]
pub struct CoreStats {
    /// Sessions on this core; the signalling thread places new sessions on the least loaded core.
    pub sessions: AtomicUsize,
    /// Media packets received from publishers and decrypted.
    pub rtp_received: AtomicU64,
    /// Media packets sent to players.
    pub rtp_sent: AtomicU64,
    /// STUN requests that failed ICE checks (bad integrity, unknown user).
    pub stun_rejected: AtomicU64,
    /// SRTP/SRTCP packets that failed authentication or replay checks.
    pub srtp_rejected: AtomicU64,
    /// Decrypted RTP/RTCP that did not parse or used an unknown payload type.
    pub rtp_malformed: AtomicU64,
    /// Datagrams from addresses no session owns.
    pub unknown_source: AtomicU64,
    /// Datagrams that are none of STUN, DTLS, RTP, RTCP.
    pub unclassified: AtomicU64,
    /// Packets dropped because another core's hand-off ring was full.
    pub handoff_dropped: AtomicU64,
    /// Packets players reported lost that the core sent again from its retransmission cache.
    pub retransmissions_sent: AtomicU64,
    /// Packets players reported lost that the cache did not hold: asked of the publisher.
    pub nacks_forwarded_upstream: AtomicU64,
    /// Packets players asked for again beyond their resend budget: dropped.
    pub retransmissions_throttled: AtomicU64,
    /// Video packets the node found missing from what it receives (from a publisher, or from
    /// the node a relay comes from) and asked for again, each request counted.
    pub upstream_losses_requested: AtomicU64,
    /// Of those, packets that arrived after all.
    pub upstream_losses_recovered: AtomicU64,
    /// Missing packets given up (too many requests, too late).
    pub upstream_losses_abandoned: AtomicU64,
    /// Players (and relays) whose video started on the keyframe the core's cache held.
    pub keyframe_cache_hits: AtomicU64,
    /// Players whose video had to wait for a keyframe requested from the publisher.
    pub keyframe_cache_misses: AtomicU64,
    /// Of `retransmissions_sent`, those sent on the player's retransmission stream (RTX).
    pub rtx_sent: AtomicU64,
    /// Publishers' retransmissions (RFC 4588) dropped without being forwarded: padding-only
    /// bandwidth probes, and copies of packets already received.
    pub rtx_dropped: AtomicU64,
    /// Heap allocations the core thread has made since it started (see [`crate::alloc_count`]);
    /// meaningful only when `counts_allocations` is set.
    pub allocations: AtomicU64,
    /// The part of `allocations` made while handling SRTP/SRTCP from peers and packets from
    /// other cores: the forwarding path, which should make none. The rest is control traffic
    /// (STUN, whose decoder allocates; DTLS handshakes; session setup) and timers.
    pub media_allocations: AtomicU64,
    /// Whether the process counts allocations (the `rtcdn` binary does).
    pub counts_allocations: std::sync::atomic::AtomicBool,
    /// How long received datagrams stayed in the core, kernel stamp to flush of their sends
    /// (cumulative counts per [`ResidenceHistogram`] bucket).
    pub residence: ResidenceCounts,
}

/// A published copy of a core's [`ResidenceHistogram`].
pub struct ResidenceCounts(Box<[AtomicU64]>);

impl Default for ResidenceCounts {
    fn default() -> Self {
        Self((0..RESIDENCE_BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl fmt::Debug for ResidenceCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ResidenceCounts({} measured)",
            self.nonzero().map(|(_, n)| n).sum::<u64>()
        )
    }
}

impl ResidenceCounts {
    fn store(&self, histogram: &ResidenceHistogram) {
        for (published, &count) in self.0.iter().zip(histogram.counts()) {
            if count != 0 {
                published.store(count, Ordering::Relaxed);
            }
        }
    }

    /// The buckets that hold anything: (index for [`ResidenceHistogram::bucket_range`], count).
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n != 0)
    }
}

#[derive(Default, Clone, Copy)]
struct Counters {
    rtp_received: u64,
    rtp_sent: u64,
    stun_rejected: u64,
    srtp_rejected: u64,
    rtp_malformed: u64,
    unknown_source: u64,
    unclassified: u64,
    retransmissions_sent: u64,
    nacks_forwarded_upstream: u64,
    retransmissions_throttled: u64,
    upstream_losses_requested: u64,
    upstream_losses_recovered: u64,
    upstream_losses_abandoned: u64,
    keyframe_cache_hits: u64,
    keyframe_cache_misses: u64,
    rtx_dropped: u64,
    rtx_sent: u64,
    media_allocations: u64,
}

/// Everything a core thread needs; built by the node before the thread starts.
pub struct CoreSetup {
    /// This core.
    pub id: CoreId,
    /// Its socket.
    pub io: UdpIo,
    /// Commands from signalling.
    pub commands: Receiver<CoreCommand>,
    /// Events to signalling.
    pub events: tokio::sync::mpsc::UnboundedSender<CoreEvent>,
    /// The runtime DTLS handshakes run on.
    pub runtime: tokio::runtime::Handle,
    /// Our DTLS certificate.
    pub certificate: DtlsCertificate,
    /// This core's ends of the cross-core rings.
    pub mesh: MeshEndpoint,
    /// Published counters.
    pub stats: Arc<CoreStats>,
    /// Connect and ICE consent timeouts of new sessions.
    pub timeouts: SessionTimeouts,
}

struct Entry {
    session: Session,
    dtls: Option<DtlsTransport>,
    /// The socket the session's datagrams use: the core's own, or a relay's private one (two
    /// relays to the same edge core must not share a 5-tuple).
    socket: SocketId,
    /// A new player whose video waits for the keyframe replay from the publisher's core:
    /// live video is held back until it arrives, so the player's first packet is the keyframe.
    awaiting_replay: bool,
}

#[derive(Default)]
struct LocalStream {
    publisher: Option<SessionId>,
    /// The core the publisher is on, when it is not this one.
    publisher_core: Option<CoreId>,
    players: Vec<SessionId>,
    /// Cores that have players of this stream (only on the publisher's core).
    remote_cores: Vec<CoreId>,
    /// When this core asked the publisher's core for a keyframe replay that has not ended yet.
    /// One per simulcast layer: players waiting for different layers wait for different
    /// replays.
    replay_requested: [Option<Instant>; MAX_LAYERS],
    /// The video this core forwarded, one cache per simulcast layer (each its own SSRC), to
    /// answer its players' NACKs here and start new players on the layer's newest keyframe:
    /// allocated with the first player of a video track (or with a publisher of video on this
    /// core), for as many layers as it has, dropped when the core has neither.
    video_caches: [Option<RetransmissionCache>; MAX_LAYERS],
    /// When each video layer last sent a packet here.
    layer_seen: [Option<Instant>; MAX_LAYERS],
    /// Bytes of each video layer since the last bitrate measurement.
    layer_bytes: [u64; MAX_LAYERS],
    /// Each layer's activity and bitrate, as last measured (see `choose_layers`).
    layer_rates: LayerRates,
}

struct Core {
    id: CoreId,
    commands: Receiver<CoreCommand>,
    events: tokio::sync::mpsc::UnboundedSender<CoreEvent>,
    runtime: tokio::runtime::Handle,
    certificate: DtlsCertificate,
    mesh: MeshEndpoint,
    stats: Arc<CoreStats>,
    timeouts: SessionTimeouts,
    waker: Waker,
    dtls_tx: Sender<(SessionId, DtlsEvent)>,
    dtls_rx: Receiver<(SessionId, DtlsEvent)>,
    sessions: HashMap<SessionId, Entry>,
    by_addr: HashMap<(SocketId, SocketAddr), SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    streams: HashMap<StreamId, LocalStream>,
    closing: HashMap<SessionId, (SocketAddr, Instant, DtlsTransport)>,
    /// Relays waiting for a socket: sockets are opened between polls, where the core has the
    /// `UdpIo` itself.
    relays_to_open: Vec<SessionSpec>,
    /// Relay sockets to close after the current poll.
    sockets_to_close: Vec<SocketId>,
    counters: Counters,
    /// Scratch lists reused between calls, so that ticks and control packets do not allocate.
    scratch: Scratch,
    shutdown: bool,
    seed: u64,
    /// When sessions' bitrates next go to signalling.
    next_bitrate_report: Instant,
    /// When simulcast players' layers are next chosen, and when layers were last measured.
    next_layer_choice: Instant,
    layers_measured_at: Option<Instant>,
}

struct Scratch {
    sessions: Vec<SessionId>,
    /// Control items from other cores: (stream, kind, payload range in `bytes`).
    control: Vec<(StreamId, ForwardKind, std::ops::Range<usize>)>,
    bytes: Vec<u8>,
    /// (stream, layer) pairs: keyframes simulcast players wait for, replays that expired.
    layer_requests: Vec<(StreamId, u8)>,
}

impl Scratch {
    /// Sized up front for a full batch (from one other core) of the largest control items,
    /// NACKs: how many sequence numbers players' NACKs miss in the caches varies, and must
    /// never make the hand-off allocate.
    fn new() -> Scratch {
        Scratch {
            sessions: Vec::new(),
            control: Vec::with_capacity(HANDOFF_BATCH),
            bytes: Vec::with_capacity(HANDOFF_BATCH * 2 * MAX_LOST_PACKETS),
            layer_requests: Vec::new(),
        }
    }
}

/// Runs a core until it is told to shut down.
pub fn run(setup: CoreSetup) {
    let CoreSetup {
        id,
        mut io,
        commands,
        events,
        runtime,
        certificate,
        mesh,
        stats,
        timeouts,
    } = setup;
    let (dtls_tx, dtls_rx) = std::sync::mpsc::channel();
    let waker = io.waker();
    let mut core = Core {
        id,
        commands,
        events,
        runtime,
        certificate,
        mesh,
        stats,
        timeouts,
        waker,
        dtls_tx,
        dtls_rx,
        sessions: HashMap::new(),
        by_addr: HashMap::new(),
        by_ufrag: HashMap::new(),
        streams: HashMap::new(),
        closing: HashMap::new(),
        relays_to_open: Vec::new(),
        sockets_to_close: Vec::new(),
        counters: Counters::default(),
        scratch: Scratch::new(),
        shutdown: false,
        next_bitrate_report: Instant::now() + BITRATE_REPORT_INTERVAL,
        next_layer_choice: Instant::now() + LAYER_CHOICE_INTERVAL,
        layers_measured_at: None,
        seed: (id.0 as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ std::process::id() as u64,
    };
    info!(
        core = id.0,
        addr = %io.local_addr(),
        backend = ?io.backend(),
        deferred_task_work = io.defers_task_work(),
        "media core started"
    );
    let mut next_tick = Instant::now() + TICK;
    while !core.shutdown {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        if let Err(e) = io.poll(Some(timeout), &mut core) {
            warn!(core = id.0, error = %e, "media socket error");
            std::thread::sleep(Duration::from_millis(10));
        }
        core.mesh.flush_wakes();
        core.open_and_close_relay_sockets(&mut io);
        let now = Instant::now();
        if now >= next_tick {
            core.handle_tick(now, io.send_queue());
            core.mesh.flush_wakes();
            next_tick = now + TICK;
        }
    }
    for (_, entry) in core.sessions.drain() {
        if let Some(dtls) = entry.dtls {
            dtls.close();
        }
    }
    info!(core = id.0, "media core stopped");
}

impl DatagramHandler for Core {
    fn on_datagram(
        &mut self,
        socket: SocketId,
        src: SocketAddr,
        data: &mut [u8],
        tx: &mut SendQueue,
    ) {
        let now = Instant::now();
        match data.first() {
            Some(0..=3) => self.handle_stun(now, socket, src, data, tx),
            Some(20..=63) => self.handle_dtls(socket, src, data),
            Some(128..=191) => {
                let before = crate::alloc_count::this_thread();
                self.handle_srtp(now, socket, src, data, tx);
                self.count_media_allocations(before);
            }
            _ => self.counters.unclassified += 1,
        }
    }

    fn on_wake(&mut self, tx: &mut SendQueue) {
        let now = Instant::now();
        while let Ok(command) = self.commands.try_recv() {
            self.handle_command(now, command, tx);
        }
        while let Ok((id, event)) = self.dtls_rx.try_recv() {
            self.handle_dtls_event(now, id, event, tx);
        }
        let before = crate::alloc_count::this_thread();
        let mut control = std::mem::take(&mut self.scratch.control);
        let mut bytes = std::mem::take(&mut self.scratch.bytes);
        control.clear();
        bytes.clear();
        let Core {
            mesh,
            streams,
            sessions,
            counters,
            ..
        } = self;
        mesh.drain(HANDOFF_BATCH, |item: &Forwarded| match item.kind {
            ForwardKind::Rtp {
                kind,
                keyframe,
                layer,
            } => {
                let media = ReceivedMedia {
                    kind,
                    len: item.payload().len(),
                    keyframe,
                    layer,
                };
                counters.rtp_sent += fan_out(
                    now,
                    streams,
                    sessions,
                    item.stream,
                    media,
                    item.payload(),
                    tx,
                );
            }
            ForwardKind::KeyframeReplay { keyframe, layer } => {
                counters.rtp_sent += replay_to_waiting(
                    now,
                    streams,
                    sessions,
                    item.stream,
                    (keyframe, layer),
                    item.payload(),
                    tx,
                );
            }
            other => {
                let start = bytes.len();
                bytes.extend_from_slice(item.payload());
                control.push((item.stream, other, start..bytes.len()));
            }
        });
        for (stream, kind, range) in control.drain(..) {
            self.handle_forwarded_control(now, stream, kind, &bytes[range], tx);
        }
        self.scratch.control = control;
        self.scratch.bytes = bytes;
        self.count_media_allocations(before);
    }
}

/// A layer's cache of a stream's video, when this core keeps it.
fn layer_cache(local: &mut LocalStream, layer: u8) -> Option<&mut RetransmissionCache> {
    local.video_caches.get_mut(usize::from(layer))?.as_mut()
}

/// Writes one decrypted packet to every local player of `stream` (of a simulcast stream's
/// video, to those its layer is for) and keeps a video packet for their NACKs and new players.
/// Returns the packets queued.
fn fan_out(
    now: Instant,
    streams: &mut HashMap<StreamId, LocalStream>,
    sessions: &mut HashMap<SessionId, Entry>,
    stream: StreamId,
    media: ReceivedMedia,
    plain: &[u8],
    tx: &mut SendQueue,
) -> u64 {
    let Some(local) = streams.get_mut(&stream) else {
        return 0;
    };
    let ReceivedMedia {
        kind,
        keyframe,
        layer,
        ..
    } = media;
    if let (MediaKind::Video, Some(seen)) = (kind, local.layer_seen.get_mut(usize::from(layer))) {
        *seen = Some(now);
        local.layer_bytes[usize::from(layer)] += plain.len() as u64;
    }
    if let (MediaKind::Video, Some(cache)) = (kind, layer_cache(local, layer)) {
        // Too long to keep, or a very late packet: a NACK for it goes to the publisher.
        if cache.insert(plain).is_ok() && keyframe {
            cache.note_keyframe(plain);
        }
    }
    let mut sent = 0;
    for player in &local.players {
        let Some(entry) = sessions.get_mut(player) else {
            continue;
        };
        let Some(remote) = entry.session.remote() else {
            continue;
        };
        if !entry.session.is_connected() || (entry.awaiting_replay && kind == MediaKind::Video) {
            continue;
        }
        let session = &mut entry.session;
        if kind == MediaKind::Video && session.take_layer(layer, keyframe) == LayerDecision::Drop {
            continue;
        }
        tx.push_with_on(entry.socket, remote, |buf| {
            session.write_rtp(now, kind, plain, buf)
        });
        sent += 1;
    }
    sent
}

/// Writes one packet of a keyframe replay from the publisher's core to the local players of
/// `stream` that wait for it, and keeps it in the core's cache (which lacked it: its first
/// player started the replay). Returns the packets queued.
fn replay_to_waiting(
    now: Instant,
    streams: &mut HashMap<StreamId, LocalStream>,
    sessions: &mut HashMap<SessionId, Entry>,
    stream: StreamId,
    (keyframe, layer): (bool, u8),
    plain: &[u8],
    tx: &mut SendQueue,
) -> u64 {
    let Some(local) = streams.get_mut(&stream) else {
        return 0;
    };
    if let Some(cache) = layer_cache(local, layer) {
        if cache.insert(plain).is_ok() && keyframe {
            cache.note_keyframe(plain);
        }
    }
    let mut sent = 0;
    for player in &local.players {
        let Some(entry) = sessions.get_mut(player).filter(|e| e.awaiting_replay) else {
            continue;
        };
        let Some(remote) = entry.session.remote() else {
            continue;
        };
        let session = &mut entry.session;
        // A player waiting for another layer waits for that layer's keyframe live.
        if session.take_layer(layer, keyframe) == LayerDecision::Drop {
            continue;
        }
        tx.push_with_on(entry.socket, remote, |buf| {
            session.write_rtp(now, MediaKind::Video, plain, buf)
        });
        sent += 1;
    }
    sent
}

impl Core {
    fn handle_stun(
        &mut self,
        now: Instant,
        socket: SocketId,
        src: SocketAddr,
        data: &[u8],
        tx: &mut SendQueue,
    ) {
        let id = match self.by_addr.get(&(socket, src)) {
            Some(id) => *id,
            None => match ice::local_ufrag(data).and_then(|ufrag| self.by_ufrag.get(ufrag)) {
                Some(id) => *id,
                None => {
                    self.counters.unknown_source += 1;
                    return;
                }
            },
        };
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Err(e) = entry.session.handle_stun(now, src, data) {
            self.counters.stun_rejected += 1;
            debug!(session = %id, error = %e, "STUN rejected");
        }
        self.drain_session(now, id, tx);
    }

    fn handle_dtls(&mut self, socket: SocketId, src: SocketAddr, data: &[u8]) {
        match self
            .by_addr
            .get(&(socket, src))
            .and_then(|id| self.sessions.get(id))
            .and_then(|e| e.dtls.as_ref())
        {
            Some(dtls) => dtls.handle_record(data),
            None => self.counters.unknown_source += 1,
        }
    }

    fn handle_srtp(
        &mut self,
        now: Instant,
        socket: SocketId,
        src: SocketAddr,
        data: &mut [u8],
        tx: &mut SendQueue,
    ) {
        let Some(&id) = self.by_addr.get(&(socket, src)) else {
            self.counters.unknown_source += 1;
            return;
        };
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        // RFC 5761 §4: RTCP packet types 192..=223 occupy the second byte's range that RTP
        // payload types 64..=95 (with the marker bit) would; those are never negotiated.
        let is_rtcp = data.get(1).is_some_and(|b| (192..=223).contains(b));
        if is_rtcp {
            if let Err(e) = entry.session.handle_srtcp(now, src, data) {
                self.count_media_error(&e);
            }
            self.drain_session(now, id, tx);
            return;
        }
        // Only a publisher's packets decrypt; anything else is counted and dropped.
        match entry.session.handle_srtp(now, src, data) {
            Ok(media) => {
                self.counters.rtp_received += 1;
                let stream = entry.session.stream();
                let plain = &data[..media.len];
                self.counters.rtp_sent += fan_out(
                    now,
                    &mut self.streams,
                    &mut self.sessions,
                    stream,
                    media,
                    plain,
                    tx,
                );
                if let Some(local) = self.streams.get(&stream) {
                    let forwarded = ForwardKind::Rtp {
                        kind: media.kind,
                        keyframe: media.keyframe,
                        layer: media.layer,
                    };
                    for core in &local.remote_cores {
                        self.mesh.send(*core, stream, forwarded, plain);
                    }
                }
            }
            Err(e) => self.count_media_error(&e),
        }
        self.drain_session(now, id, tx);
    }

    fn count_media_allocations(&mut self, before: Option<u64>) {
        if let (Some(before), Some(after)) = (before, crate::alloc_count::this_thread()) {
            self.counters.media_allocations += after - before;
        }
    }

    fn count_media_error(&mut self, error: &crate::session::SessionError) {
        use crate::session::SessionError;
        match error {
            SessionError::Srtp(_) | SessionError::NotKeyed => self.counters.srtp_rejected += 1,
            SessionError::Rtx(e) if !e.is_malformed() => self.counters.rtx_dropped += 1,
            _ => self.counters.rtp_malformed += 1,
        }
    }

    fn handle_command(&mut self, now: Instant, command: CoreCommand, tx: &mut SendQueue) {
        match command {
            CoreCommand::AddSession(spec) if matches!(spec.role, SessionRole::Relay { .. }) => {
                self.relays_to_open.push(*spec)
            }
            CoreCommand::AddSession(spec) => self.add_session(now, *spec, SocketId::MAIN, tx),
            CoreCommand::RemoveSession { id, reason } => {
                if let Some(entry) = self.sessions.get_mut(&id) {
                    entry.session.end(reason);
                    self.drain_session(now, id, tx);
                }
            }
            CoreCommand::AttachCore { stream, core } => {
                let local = self.streams.entry(stream).or_default();
                if !local.remote_cores.contains(&core) {
                    local.remote_cores.push(core);
                }
            }
            CoreCommand::DetachCore { stream, core } => {
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.remote_cores.retain(|c| *c != core);
                }
            }
            CoreCommand::LimitPublisher { id, bitrate_bps } => {
                if let Some(entry) = self.sessions.get_mut(&id) {
                    entry.session.limit_bitrate(now, bitrate_bps);
                    self.drain_session(now, id, tx);
                }
            }
            CoreCommand::Shutdown => self.shutdown = true,
        }
    }

    /// Opens sockets for new relays and closes those of ended ones; runs between polls.
    fn open_and_close_relay_sockets(&mut self, io: &mut UdpIo) {
        for socket in self.sockets_to_close.drain(..) {
            io.remove_socket(socket);
        }
        if self.relays_to_open.is_empty() {
            return;
        }
        let now = Instant::now();
        let bind = SocketAddr::new(io.local_addr().ip(), 0);
        for spec in std::mem::take(&mut self.relays_to_open) {
            match io.add_socket(bind) {
                Ok((socket, local)) => {
                    debug!(session = %spec.id, %local, "relay socket opened");
                    self.add_session(now, spec, socket, io.send_queue());
                }
                Err(e) => {
                    warn!(session = %spec.id, error = %e, "cannot open a relay socket");
                    let _ = self.events.send(CoreEvent::SessionEnded {
                        id: spec.id,
                        reason: EndReason::DtlsFailed(format!("no relay socket: {e}")),
                    });
                }
            }
        }
    }

    fn add_session(
        &mut self,
        now: Instant,
        spec: SessionSpec,
        socket: SocketId,
        tx: &mut SendQueue,
    ) {
        let id = spec.id;
        let stream = spec.stream;
        let publisher_core = spec.publisher_core;
        self.by_ufrag.insert(spec.local_ice.ufrag.clone(), id);
        if let SessionRole::Relay {
            remote_candidates, ..
        } = &spec.role
        {
            // Answers to our checks carry no USERNAME to find the session by.
            for candidate in remote_candidates {
                self.by_addr.insert((socket, *candidate), id);
            }
        }
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let session = Session::new(spec, now, self.timeouts, self.seed ^ id.0);
        info!(core = self.id.0, session = %id, stream = session.stream_name(), publisher = session.is_publisher(), "session started");
        let local = self.streams.entry(stream).or_default();
        if session.is_publisher() {
            local.publisher = Some(id);
        } else {
            local.players.push(id);
            local.publisher_core = publisher_core.filter(|c| *c != self.id);
        }
        // The publisher's core keeps its keyframes for the players still to come. Here, not on
        // the forwarding path, which must not allocate.
        let layers = session.video_layer_count();
        for cache in local.video_caches.iter_mut().take(layers) {
            cache.get_or_insert_with(RetransmissionCache::new);
        }
        self.sessions.insert(
            id,
            Entry {
                session,
                dtls: None,
                socket,
                awaiting_replay: false,
            },
        );
        // A relay's first connectivity checks are ready at once.
        self.drain_session(now, id, tx);
    }

    fn handle_dtls_event(
        &mut self,
        now: Instant,
        id: SessionId,
        event: DtlsEvent,
        tx: &mut SendQueue,
    ) {
        if let Some((remote, _, _)) = self.closing.get(&id) {
            // Only sessions on the core's own socket linger (relays close theirs at once).
            if let DtlsEvent::Transmit(record) = event {
                tx.push(*remote, &record);
            }
            return;
        }
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        match event {
            DtlsEvent::Transmit(record) => {
                if let Some(remote) = entry.session.remote() {
                    tx.push_on(entry.socket, remote, &record);
                }
            }
            DtlsEvent::Connected(keys) => entry.session.handle_dtls_connected(keys, now),
            DtlsEvent::Failed(error) => entry.session.end(EndReason::DtlsFailed(error.to_string())),
            DtlsEvent::Closed => entry.session.end(EndReason::DtlsClosed),
        }
        self.drain_session(now, id, tx);
    }

    fn handle_forwarded_control(
        &mut self,
        now: Instant,
        stream: StreamId,
        kind: ForwardKind,
        payload: &[u8],
        tx: &mut SendQueue,
    ) {
        match kind {
            ForwardKind::KeyframeRequest { layer } => self.request_keyframe(now, stream, layer, tx),
            ForwardKind::Nack { kind, layer } => {
                self.request_retransmission(
                    now,
                    stream,
                    (kind, layer),
                    LostPackets::from_be_bytes(payload),
                    tx,
                );
            }
            ForwardKind::SenderReport {
                kind,
                layer,
                ntp_time,
                rtp_time,
            } => self.send_sender_reports(now, stream, (kind, layer), ntp_time, rtp_time, tx),
            ForwardKind::KeyframeStart => {
                if let &[core, layer, ..] = payload {
                    self.replay_keyframe_to(now, CoreId(usize::from(core)), stream, layer, tx);
                }
            }
            ForwardKind::KeyframeReplayEnd { replayed, layer } => {
                self.end_replay(stream, layer, replayed)
            }
            ForwardKind::Rtp { .. } | ForwardKind::KeyframeReplay { .. } => {}
        }
    }

    /// Reaches the stream's publisher: `local` runs on its session when it is on this core,
    /// otherwise `remote` says what to hand to the publisher's core.
    fn ask_publisher(
        &mut self,
        now: Instant,
        stream: StreamId,
        tx: &mut SendQueue,
        local: impl FnOnce(&mut Session),
        remote_kind: ForwardKind,
        remote_payload: &[u8],
    ) {
        let Some(local_stream) = self.streams.get(&stream) else {
            return;
        };
        if let Some(publisher) = local_stream.publisher {
            if let Some(entry) = self.sessions.get_mut(&publisher) {
                local(&mut entry.session);
                self.drain_session(now, publisher, tx);
            }
        } else if let Some(core) = local_stream.publisher_core {
            self.mesh.send(core, stream, remote_kind, remote_payload);
        }
    }

    /// Asks the publisher for a keyframe of a simulcast layer (0 without simulcast).
    fn request_keyframe(&mut self, now: Instant, stream: StreamId, layer: u8, tx: &mut SendQueue) {
        self.ask_publisher(
            now,
            stream,
            tx,
            |publisher| publisher.request_keyframe(now, layer),
            ForwardKind::KeyframeRequest { layer },
            &[],
        );
    }

    /// The simulcast layer a player is to start on, or waits for: its target (0 without
    /// simulcast).
    fn target_layer(&self, id: SessionId) -> u8 {
        self.sessions
            .get(&id)
            .and_then(|e| e.session.video_layers())
            .map_or(0, |(_, target)| target)
    }

    /// Starts a connected player's video on the newest keyframe, so it need not wait for one
    /// from the publisher: from this core's cache, else replayed from the publisher's core;
    /// asks the publisher for one when neither has it.
    fn start_player(&mut self, now: Instant, id: SessionId, stream: StreamId, tx: &mut SendQueue) {
        if !self
            .sessions
            .get(&id)
            .is_some_and(|e| e.session.plays(MediaKind::Video))
        {
            return;
        }
        // An unpinned simulcast player starts on the highest layer the publisher sends now,
        // not on the last keyframe of a layer it paused.
        if let (Some(entry), Some(local)) = (self.sessions.get_mut(&id), self.streams.get(&stream))
        {
            if let Some((count, target)) = entry.session.layer_choice() {
                if let Some(layer) = choose_layer(&local.layer_rates, count, target, None) {
                    entry.session.retarget_layer(layer);
                }
            }
        }
        let layer = self.target_layer(id);
        if self.start_from_local_keyframe(now, id, stream, layer, tx) {
            self.counters.keyframe_cache_hits += 1;
            return;
        }
        let me = u8::try_from(self.id.0).unwrap_or(u8::MAX);
        let Core {
            streams,
            sessions,
            mesh,
            ..
        } = self;
        if let Some(local) = streams.get_mut(&stream) {
            if let Some(publisher_core) = local.publisher_core {
                // The publisher's core keeps the keyframe for players still to come: ask it to
                // replay it here, and hold this player's live video back until it has.
                if let Some(entry) = sessions.get_mut(&id) {
                    entry.awaiting_replay = true;
                }
                let requested = local.replay_requested.get_mut(usize::from(layer));
                if let Some(requested @ None) = requested {
                    *requested = Some(now);
                    mesh.send(
                        publisher_core,
                        stream,
                        ForwardKind::KeyframeStart,
                        &[me, layer],
                    );
                }
                return;
            }
        }
        self.counters.keyframe_cache_misses += 1;
        self.request_keyframe(now, stream, layer, tx);
    }

    /// Sends a player the packets from the keyframe this core cached on; false without one.
    fn start_from_local_keyframe(
        &mut self,
        now: Instant,
        id: SessionId,
        stream: StreamId,
        layer: u8,
        tx: &mut SendQueue,
    ) -> bool {
        let Core {
            streams,
            sessions,
            counters,
            ..
        } = self;
        let cached = streams
            .get(&stream)
            .and_then(|l| l.video_caches.get(usize::from(layer))?.as_ref())
            .and_then(|c| c.since_keyframe(KEYFRAME_REPLAY_MAX_PACKETS));
        let target = sessions
            .get_mut(&id)
            .and_then(|e| Some((e.socket, e.session.remote()?, &mut e.session)));
        let (Some(packets), Some((socket, remote, session))) = (cached, target) else {
            return false;
        };
        for (i, plain) in packets.enumerate() {
            // Starts a simulcast player on the layer (the first packet is its keyframe).
            if session.take_layer(layer, i == 0) == LayerDecision::Drop {
                continue;
            }
            tx.push_with_on(socket, remote, |buf| {
                session.write_rtp(now, MediaKind::Video, plain, buf)
            });
            counters.rtp_sent += 1;
        }
        true
    }

    /// On the publisher's core: another core's new players want to start on the cached
    /// keyframe. Sends them the packets from it on, or, when there are none (or the ring has
    /// no room for them next to the live packets), asks the publisher for a keyframe.
    fn replay_keyframe_to(
        &mut self,
        now: Instant,
        core: CoreId,
        stream: StreamId,
        layer: u8,
        tx: &mut SendQueue,
    ) {
        let Core { streams, mesh, .. } = self;
        let cache = streams
            .get(&stream)
            .and_then(|l| l.video_caches.get(usize::from(layer))?.as_ref());
        let count = cache
            .and_then(|c| c.since_keyframe(KEYFRAME_REPLAY_MAX_PACKETS))
            .map_or(0, Iterator::count);
        let fits = count + 1 + REPLAY_RING_HEADROOM <= mesh.free_slots(core);
        let replayed = count > 0 && fits;
        if let (true, Some(packets)) = (
            replayed,
            cache.and_then(|c| c.since_keyframe(KEYFRAME_REPLAY_MAX_PACKETS)),
        ) {
            for (i, plain) in packets.enumerate() {
                let kind = ForwardKind::KeyframeReplay {
                    keyframe: i == 0,
                    layer,
                };
                mesh.send(core, stream, kind, plain);
            }
        }
        mesh.send(
            core,
            stream,
            ForwardKind::KeyframeReplayEnd { replayed, layer },
            &[],
        );
        if !replayed {
            self.request_keyframe(now, stream, layer, tx);
        }
    }

    /// A keyframe replay this core asked for ended (or never came): its waiting players take
    /// live video from now on; without a replay they wait for the keyframe requested for them.
    /// Only the players waiting for that replay's layer.
    fn end_replay(&mut self, stream: StreamId, layer: u8, replayed: bool) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(requested) = local.replay_requested.get_mut(usize::from(layer)) {
            *requested = None;
        }
        let mut waited = 0;
        for player in &local.players {
            let waits = |e: &&mut Entry| {
                let target = e.session.video_layers().map_or(0, |(_, target)| target);
                e.awaiting_replay && target == layer
            };
            if let Some(entry) = self.sessions.get_mut(player).filter(waits) {
                entry.awaiting_replay = false;
                waited += 1;
            }
        }
        if replayed {
            self.counters.keyframe_cache_hits += waited;
        } else {
            // The publisher's core asked the publisher for a keyframe.
            self.counters.keyframe_cache_misses += waited;
        }
    }

    /// Answers a player's NACK: sends it the packets this core's cache holds, and asks the
    /// publisher for the rest.
    fn retransmit(
        &mut self,
        now: Instant,
        player: SessionId,
        stream: StreamId,
        kind: MediaKind,
        seqs: LostPackets,
        tx: &mut SendQueue,
    ) {
        let mut missed = [0u16; MAX_LOST_PACKETS];
        let mut misses = 0;
        // A simulcast player's numbers map to the layer it is sent now.
        let layer = match kind {
            MediaKind::Video => self
                .sessions
                .get(&player)
                .and_then(|e| e.session.video_layers())
                .and_then(|(current, _)| current)
                .unwrap_or(0),
            MediaKind::Audio => 0,
        };
        let cache = match kind {
            MediaKind::Video => self
                .streams
                .get(&stream)
                .and_then(|l| l.video_caches.get(usize::from(layer))?.as_ref()),
            MediaKind::Audio => None,
        };
        let mut target = self
            .sessions
            .get_mut(&player)
            .and_then(|e| Some((e.socket, e.session.remote()?, &mut e.session)));
        for &seq in seqs.as_slice() {
            let mut written = 0;
            if let (Some(plain), Some((socket, remote, session))) =
                (cache.and_then(|c| c.get(seq)), target.as_mut())
            {
                if !session.may_resend(now) {
                    // Over its budget: neither sent again nor asked of the publisher, which a
                    // player NACKing in a loop must not reach either.
                    self.counters.retransmissions_throttled += 1;
                    continue;
                }
                tx.push_with_on(*socket, *remote, |buf| {
                    written = session.write_retransmission(now, kind, plain, buf);
                    written
                });
            }
            if written > 0 {
                self.counters.retransmissions_sent += 1;
                if target.as_ref().is_some_and(|(_, _, s)| s.plays_rtx(kind)) {
                    self.counters.rtx_sent += 1;
                }
            } else {
                missed[misses] = seq;
                misses += 1;
            }
        }
        if misses > 0 {
            self.counters.nacks_forwarded_upstream += misses as u64;
            let missed = missed[..misses].iter().copied().collect();
            self.request_retransmission(now, stream, (kind, layer), missed, tx);
        }
    }

    fn request_retransmission(
        &mut self,
        now: Instant,
        stream: StreamId,
        (kind, layer): (MediaKind, u8),
        seqs: LostPackets,
        tx: &mut SendQueue,
    ) {
        let mut payload = [0u8; 2 * MAX_LOST_PACKETS];
        let len = seqs.to_be_bytes(&mut payload);
        self.ask_publisher(
            now,
            stream,
            tx,
            |publisher| publisher.request_retransmission(now, kind, layer, seqs.as_slice()),
            ForwardKind::Nack { kind, layer },
            &payload[..len],
        );
    }

    fn send_sender_reports(
        &mut self,
        now: Instant,
        stream: StreamId,
        (kind, layer): (MediaKind, u8),
        ntp: u64,
        rtp: u32,
        tx: &mut SendQueue,
    ) {
        let Some(local) = self.streams.get(&stream) else {
            return;
        };
        let mut players = std::mem::take(&mut self.scratch.sessions);
        players.clear();
        players.extend_from_slice(&local.players);
        for &player in &players {
            if let Some(entry) = self.sessions.get_mut(&player) {
                entry
                    .session
                    .handle_publisher_sender_report(kind, layer, ntp, rtp);
                self.drain_session(now, player, tx);
            }
        }
        self.scratch.sessions = players;
    }

    /// Acts on everything a session produced: sends its control packets, starts DTLS, reports to
    /// signalling, removes it when it ended.
    fn drain_session(&mut self, now: Instant, id: SessionId, tx: &mut SendQueue) {
        loop {
            let Some(entry) = self.sessions.get_mut(&id) else {
                return;
            };
            while let Some(transmit) = entry.session.poll_transmit() {
                tx.push_on(entry.socket, transmit.destination, &transmit.contents);
                entry.session.recycle(transmit.contents);
            }
            let socket = entry.socket;
            let Some(event) = entry.session.poll_event() else {
                return;
            };
            let stream = entry.session.stream();
            match event {
                SessionEvent::IceConnected { remote } => {
                    self.by_addr.insert((socket, remote), id);
                    self.start_dtls(id);
                }
                SessionEvent::RemoteChanged { remote } => {
                    self.by_addr.retain(|_, owner| *owner != id);
                    self.by_addr.insert((socket, remote), id);
                }
                SessionEvent::Connected => {
                    let _ = self.events.send(CoreEvent::SessionConnected { id });
                    let is_player = !entry.session.is_publisher();
                    info!(session = %id, stream = entry.session.stream_name(), "session connected");
                    if is_player {
                        self.start_player(now, id, stream, tx);
                    }
                }
                SessionEvent::MediaStarted => {
                    let _ = self.events.send(CoreEvent::MediaStarted { id });
                }
                SessionEvent::KeyframeRequested => {
                    // A simulcast player (or relay) needs its target layer's.
                    let layer = self.target_layer(id);
                    self.request_keyframe(now, stream, layer, tx)
                }
                SessionEvent::RetransmissionRequested { kind, seqs } => {
                    self.retransmit(now, id, stream, kind, seqs, tx)
                }
                SessionEvent::SenderReport {
                    kind,
                    layer,
                    ntp_time,
                    rtp_time,
                } => {
                    if let Some(local) = self.streams.get(&stream) {
                        for &core in &local.remote_cores {
                            self.mesh.send(
                                core,
                                stream,
                                ForwardKind::SenderReport {
                                    kind,
                                    layer,
                                    ntp_time,
                                    rtp_time,
                                },
                                &[],
                            );
                        }
                    }
                    let track = (kind, layer);
                    self.send_sender_reports(now, stream, track, ntp_time, rtp_time, tx);
                }
                SessionEvent::UpstreamRepair(counts) => {
                    self.counters.upstream_losses_requested += counts.requested;
                    self.counters.upstream_losses_recovered += counts.recovered;
                    self.counters.upstream_losses_abandoned += counts.abandoned;
                }
                SessionEvent::Ended(reason) => {
                    self.remove_session(now, id, reason);
                    return;
                }
            }
        }
    }

    fn start_dtls(&mut self, id: SessionId) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        if entry.dtls.is_some() {
            return;
        }
        let sender = self.dtls_tx.clone();
        let waker = self.waker.clone();
        let on_event = Arc::new(move |event: DtlsEvent| {
            let _ = sender.send((id, event));
            waker.wake();
        });
        entry.dtls = Some(DtlsTransport::start(
            &self.runtime,
            entry.session.dtls_role(),
            &self.certificate,
            entry.session.remote_fingerprint(),
            on_event,
        ));
    }

    fn remove_session(&mut self, now: Instant, id: SessionId, reason: EndReason) {
        let Some(entry) = self.sessions.remove(&id) else {
            return;
        };
        let session = entry.session;
        info!(core = self.id.0, session = %id, stream = session.stream_name(), publisher = session.is_publisher(), %reason, "session ended");
        self.by_addr.retain(|_, owner| *owner != id);
        self.by_ufrag.retain(|_, owner| *owner != id);
        let stream = session.stream();
        if let Some(local) = self.streams.get_mut(&stream) {
            if local.publisher == Some(id) {
                local.publisher = None;
            }
            local.players.retain(|p| *p != id);
            if local.players.is_empty() && local.publisher.is_none() {
                local.video_caches = Default::default();
            }
            if local.publisher.is_none() && local.players.is_empty() {
                self.streams.remove(&stream);
            }
        }
        if entry.socket != SocketId::MAIN {
            // A relay's socket is its own; its edge hears of the end over the WebSocket.
            self.sockets_to_close.push(entry.socket);
        } else if let Some(dtls) = entry.dtls {
            // A peer that is still there learns at once that we are gone (DTLS close_notify).
            if let (Some(remote), true) = (session.remote(), reason != EndReason::DtlsClosed) {
                dtls.close();
                self.closing.insert(id, (remote, now, dtls));
            }
        }
        let _ = self.events.send(CoreEvent::SessionEnded { id, reason });
    }

    fn handle_tick(&mut self, now: Instant, tx: &mut SendQueue) {
        let mut due = std::mem::take(&mut self.scratch.sessions);
        due.clear();
        due.extend(
            self.sessions
                .iter()
                .filter(|(_, e)| e.session.poll_timeout().is_some_and(|at| at <= now))
                .map(|(id, _)| *id),
        );
        for &id in &due {
            if let Some(entry) = self.sessions.get_mut(&id) {
                entry.session.handle_timeout(now);
                self.drain_session(now, id, tx);
            }
        }
        self.scratch.sessions = due;
        if now >= self.next_layer_choice {
            self.next_layer_choice = now + LAYER_CHOICE_INTERVAL;
            self.choose_layers(now);
        }
        self.request_layer_keyframes(now, tx);
        self.expire_replays(now, tx);
        if now >= self.next_bitrate_report {
            self.next_bitrate_report = now + BITRATE_REPORT_INTERVAL;
            self.report_bitrates();
        }
        self.closing
            .retain(|_, (_, since, _)| now.saturating_duration_since(*since) < CLOSING_LINGER);
        self.publish_stats(tx);
    }

    /// Measures each stream's layers (activity, bitrate) and moves unpinned simulcast players
    /// to the highest active layer (see [`choose_layer`]): off a layer the publisher paused,
    /// back when it resumes. The move takes effect at that layer's keyframe, asked for at once.
    fn choose_layers(&mut self, now: Instant) {
        let since = self.layers_measured_at.replace(now);
        let elapsed = since.map(|at| now.saturating_duration_since(at).as_secs_f64());
        for local in self.streams.values_mut() {
            for layer in 0..MAX_LAYERS {
                local.layer_rates.active[layer] = local.layer_seen[layer]
                    .is_some_and(|at| now.saturating_duration_since(at) < LAYER_IDLE);
                if let Some(elapsed) = elapsed.filter(|e| *e > 0.0) {
                    let bits = local.layer_bytes[layer] as f64 * 8.0;
                    local.layer_rates.bitrate_bps[layer] = (bits / elapsed) as u64;
                }
                local.layer_bytes[layer] = 0;
            }
        }
        for entry in self.sessions.values_mut() {
            let Some((count, target)) = entry.session.layer_choice() else {
                continue;
            };
            let Some(local) = self.streams.get(&entry.session.stream()) else {
                continue;
            };
            // Not the player's bandwidth estimate yet: it cannot grow past 1.5 x what the player
            // acknowledges (see crate::bwe::aimd), so a player moved down would never earn its
            // way back up. That needs probing (padding, or the next layer sent as a trial);
            // until then a player gets the highest layer the publisher sends.
            let estimate = None;
            if let Some(layer) = choose_layer(&local.layer_rates, count, target, estimate) {
                if entry.session.retarget_layer(layer) {
                    debug!(core = self.id.0, session = %entry.session.id(), from = target, to = layer, "simulcast layer retargeted");
                }
            }
        }
    }

    /// Asks for the keyframes simulcast players wait for to reach their target layer (again,
    /// while they still wait: a PLI can be lost).
    fn request_layer_keyframes(&mut self, now: Instant, tx: &mut SendQueue) {
        let mut wanted = std::mem::take(&mut self.scratch.layer_requests);
        wanted.clear();
        for entry in self.sessions.values_mut() {
            if !entry.session.is_connected() {
                continue;
            }
            if let Some(layer) = entry.session.poll_layer_keyframe_request(now) {
                wanted.push((entry.session.stream(), layer));
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        for &(stream, layer) in &wanted {
            self.request_keyframe(now, stream, layer, tx);
        }
        self.scratch.layer_requests = wanted;
    }

    fn report_bitrates(&self) {
        for (&id, entry) in &self.sessions {
            let estimate_bps = entry.session.bandwidth_estimate();
            let received_bps = entry.session.received_bitrate();
            if estimate_bps.is_some() || received_bps.is_some() {
                let _ = self.events.send(CoreEvent::Bitrates {
                    id,
                    estimate_bps,
                    received_bps,
                });
            }
        }
    }

    /// Replays whose end marker never came (dropped with a full ring): their players take
    /// live video and a keyframe request.
    fn expire_replays(&mut self, now: Instant, tx: &mut SendQueue) {
        let mut expired = std::mem::take(&mut self.scratch.layer_requests);
        expired.clear();
        for (&stream, local) in &self.streams {
            for (layer, requested) in local.replay_requested.iter().enumerate() {
                if requested.is_some_and(|at| now >= at + REPLAY_TIMEOUT) {
                    expired.push((stream, layer as u8));
                }
            }
        }
        for &(stream, layer) in &expired {
            self.end_replay(stream, layer, false);
            self.request_keyframe(now, stream, layer, tx);
        }
        self.scratch.layer_requests = expired;
    }

    fn publish_stats(&mut self, tx: &SendQueue) {
        let c = std::mem::take(&mut self.counters);
        let s = &self.stats;
        s.sessions.store(self.sessions.len(), Ordering::Relaxed);
        s.rtp_received.fetch_add(c.rtp_received, Ordering::Relaxed);
        s.rtp_sent.fetch_add(c.rtp_sent, Ordering::Relaxed);
        s.stun_rejected
            .fetch_add(c.stun_rejected, Ordering::Relaxed);
        s.srtp_rejected
            .fetch_add(c.srtp_rejected, Ordering::Relaxed);
        s.rtp_malformed
            .fetch_add(c.rtp_malformed, Ordering::Relaxed);
        s.unknown_source
            .fetch_add(c.unknown_source, Ordering::Relaxed);
        s.unclassified.fetch_add(c.unclassified, Ordering::Relaxed);
        s.retransmissions_sent
            .fetch_add(c.retransmissions_sent, Ordering::Relaxed);
        s.nacks_forwarded_upstream
            .fetch_add(c.nacks_forwarded_upstream, Ordering::Relaxed);
        s.retransmissions_throttled
            .fetch_add(c.retransmissions_throttled, Ordering::Relaxed);
        s.upstream_losses_requested
            .fetch_add(c.upstream_losses_requested, Ordering::Relaxed);
        s.upstream_losses_recovered
            .fetch_add(c.upstream_losses_recovered, Ordering::Relaxed);
        s.upstream_losses_abandoned
            .fetch_add(c.upstream_losses_abandoned, Ordering::Relaxed);
        s.keyframe_cache_hits
            .fetch_add(c.keyframe_cache_hits, Ordering::Relaxed);
        s.keyframe_cache_misses
            .fetch_add(c.keyframe_cache_misses, Ordering::Relaxed);
        s.rtx_dropped.fetch_add(c.rtx_dropped, Ordering::Relaxed);
        s.rtx_sent.fetch_add(c.rtx_sent, Ordering::Relaxed);
        s.handoff_dropped
            .store(self.mesh.dropped, Ordering::Relaxed);
        if let Some(n) = crate::alloc_count::this_thread() {
            s.allocations.store(n, Ordering::Relaxed);
            s.media_allocations
                .fetch_add(c.media_allocations, Ordering::Relaxed);
            s.counts_allocations.store(true, Ordering::Relaxed);
        }
        s.residence.store(tx.residence());
    }
}
