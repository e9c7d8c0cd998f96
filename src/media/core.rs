//! [`MediaCore`]: everything one media core does, sans-IO.
//!
//! It owns the core's sessions, finds the session of each datagram (by source address, or by
//! ICE ufrag for a peer's first check), feeds it, and acts on what the session reports: starts
//! DTLS when ICE connects, lets the [`Router`] route media and feedback, reports to signalling,
//! removes ended sessions. Time comes in with every input; the core never reads the clock.
//! Its outputs are datagrams (into a [`TxSink`]), items for other cores (into a
//! [`ForwardSink`]), events for signalling ([`MediaCore::poll_event`]), sockets to open or
//! close for relays ([`MediaCore::poll_socket_request`]) and when it next wants
//! [`MediaCore::handle_timeout`] ([`MediaCore::poll_timeout`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::control::{
    CoreCommand, CoreEvent, CoreId, EgressSpec, EndReason, IngestSpec, SessionId, SessionRole,
    SessionSpec, StreamId,
};
use crate::dtls::DtlsEvent;
use crate::media::counters::MediaCounters;
use crate::media::demux::Datagram;
use crate::media::dtls::{test_keys, DtlsAssociation, DtlsStarter};
use crate::media::egress::Egresses;
use crate::media::forward::{ForwardKind, ForwardSink};
use crate::media::ingest::IngestFeed;
use crate::media::peer::{Peer, Peers};
use crate::media::router::Router;
use crate::media::timers::SessionTimers;
use crate::media::tx::{SocketId, TxSink};
use crate::sdp::MediaKind;
use crate::session::{
    ReceivedMedia, Session, SessionError, SessionEvent, SessionTimeouts, Traffic,
};
use crate::simulcast::{LayerChooser, KEYFRAME_REQUEST_INTERVAL};

/// How often simulcast players' layers are chosen again, from which layers were active (and
/// their bitrates, measured over the same period).
const LAYER_CHOICE_INTERVAL: Duration = Duration::from_millis(500);
/// How often players' bandwidth estimates and publishers' bitrates go to signalling.
const BITRATE_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a closed session's address is remembered so its DTLS close_notify still goes out.
const CLOSING_LINGER: Duration = Duration::from_secs(2);
/// A session whose deadline is still due after its timeout was handled is visited again this
/// much later, not at once: a core must never spin on one session.
const MIN_TIMER_STEP: Duration = Duration::from_millis(1);

/// Packets taken from each ingest's ring per call of [`MediaCore::handle_ingests`]: the rest
/// wait for the next turn, after the core's datagrams and timers.
const INGEST_BATCH: usize = 256;

/// An ingest publisher on this core (see `crate::media::ingest`).
struct Ingest {
    stream: StreamId,
    stream_name: String,
    feed: IngestFeed,
    started_at: Instant,
    packets: u64,
    bytes: u64,
    /// `bytes` at the last bitrate report, and when that was.
    reported: (u64, Instant),
    video_codec: rtp::VideoCodec,
    /// The picture size its keyframes announced (an H.264 or H.265 SPS, a VP9 scalability
    /// structure, an AV1 sequence header).
    video_size: Option<(u16, u16)>,
}

/// What a core is, beyond its sessions.
#[derive(Debug, Clone, Copy)]
pub struct MediaCoreConfig {
    /// This core.
    pub id: CoreId,
    /// Connect and ICE consent timeouts of new sessions.
    pub timeouts: SessionTimeouts,
    /// Seeds the sessions' random values (SSRCs, sequence bases); a fixed seed makes a core
    /// deterministic.
    pub seed: u64,
}

/// What a core needs from the IO layer for a relay session: each relay has a socket of its own.
#[derive(Debug)]
pub enum SocketRequest {
    /// Open a socket for this relay, then hand both to [`MediaCore::handle_socket_opened`] (or
    /// the failure to [`MediaCore::handle_socket_failed`]).
    Open(Box<SessionSpec>),
    /// The relay that used this socket ended: close it.
    Close(SocketId),
}

/// A session that ended while its peer was still there: its DTLS close_notify may still have to
/// go out to `remote`.
struct Closing<A> {
    socket: SocketId,
    remote: SocketAddr,
    since: Instant,
    _association: A,
}

/// One media core (see the module docs). `D` starts DTLS handshakes, `F` carries items to
/// other cores.
pub struct MediaCore<D: DtlsStarter, F: ForwardSink> {
    id: CoreId,
    timeouts: SessionTimeouts,
    seed: u64,
    dtls: D,
    peers: Peers,
    associations: HashMap<SessionId, D::Association>,
    by_addr: HashMap<(SocketId, SocketAddr), SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    closing: HashMap<SessionId, Closing<D::Association>>,
    /// When the earliest closed session stops lingering.
    closing_deadline: Option<Instant>,
    router: Router<F>,
    timers: SessionTimers,
    /// Sessions' deadlines are armed no earlier than this (see [`MIN_TIMER_STEP`]).
    timer_floor: Option<Instant>,
    events: VecDeque<CoreEvent>,
    socket_requests: VecDeque<SocketRequest>,
    counters: MediaCounters,
    shutdown: bool,
    /// When sessions' bitrates next go to signalling.
    next_bitrate_report: Instant,
    /// When simulcast players' layers are next chosen.
    next_layer_choice: Instant,
    /// Scratch lists reused between calls, so that timers do not allocate.
    due: Vec<SessionId>,
    layer_requests: Vec<(StreamId, u8)>,
    /// Publishers that are not WebRTC peers, by the id signalling knows them by.
    ingests: HashMap<SessionId, Ingest>,
    /// Players that are not WebRTC peers, tapping streams published here.
    egresses: Egresses,
}

impl<D: DtlsStarter, F: ForwardSink> MediaCore<D, F> {
    /// A core with no sessions, at `now`.
    pub fn new(config: MediaCoreConfig, dtls: D, forward: F, now: Instant) -> Self {
        MediaCore {
            id: config.id,
            timeouts: config.timeouts,
            seed: config.seed,
            dtls,
            peers: HashMap::new(),
            associations: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            closing: HashMap::new(),
            closing_deadline: None,
            router: Router::new(config.id, forward),
            timers: SessionTimers::default(),
            timer_floor: None,
            events: VecDeque::new(),
            socket_requests: VecDeque::new(),
            counters: MediaCounters::default(),
            shutdown: false,
            next_bitrate_report: now + BITRATE_REPORT_INTERVAL,
            next_layer_choice: now + LAYER_CHOICE_INTERVAL,
            due: Vec::new(),
            layer_requests: Vec::new(),
            ingests: HashMap::new(),
            egresses: Egresses::default(),
        }
    }

    /// This core.
    pub fn id(&self) -> CoreId {
        self.id
    }

    /// Sessions on this core.
    pub fn session_count(&self) -> usize {
        self.peers.len()
    }

    /// The session `id`, when it is on this core.
    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.peers.get(&id).map(|p| &p.session)
    }

    /// Whether signalling told the core to stop.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown
    }

    /// Totals since the core started.
    pub fn counters(&self) -> MediaCounters {
        let r = self.router.counters();
        MediaCounters {
            rtp_sent: r.rtp_sent,
            rtp_sent_bytes: r.rtp_sent_bytes,
            retransmissions_sent: r.retransmissions_sent,
            nacks_forwarded_upstream: r.nacks_forwarded_upstream,
            retransmissions_throttled: r.retransmissions_throttled,
            keyframe_cache_hits: r.keyframe_cache_hits,
            keyframe_cache_misses: r.keyframe_cache_misses,
            rtx_sent: r.rtx_sent,
            ingest_keyframe_requests: r.ingest_keyframe_requests,
            ..self.counters
        }
    }

    /// Where items for other cores go.
    pub fn forward_sink(&self) -> &F {
        self.router.forward_sink()
    }

    /// Where items for other cores go, to drain them (a [`ForwardQueue`](crate::media::ForwardQueue))
    /// or wake the cores they are for.
    pub fn forward_sink_mut(&mut self) -> &mut F {
        self.router.forward_sink_mut()
    }

    /// An event for signalling.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// A socket to open or close for a relay.
    pub fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.socket_requests.pop_front()
    }

    /// When [`MediaCore::handle_timeout`] wants to run next: the earliest session deadline, a
    /// keyframe replay to give up, a closed session to forget, and (while the core has
    /// sessions or ingests) the bitrate report and the simulcast layer choice.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let busy = !self.peers.is_empty() || !self.ingests.is_empty();
        // Layer choices are for players (peers): an ingest alone must not keep a deadline
        // that `handle_timeout` never moves on, or the core spins.
        let players = !self.peers.is_empty();
        [
            self.timers.next(),
            self.router.poll_timeout(),
            self.closing_deadline,
            busy.then_some(self.next_bitrate_report),
            players.then_some(self.next_layer_choice),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One datagram from `src` on `socket`. `buf` is decrypted in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        src: SocketAddr,
        buf: &mut [u8],
        tx: &mut impl TxSink,
    ) {
        match Datagram::classify(buf) {
            Datagram::Stun => self.handle_stun(now, socket, src, buf, tx),
            Datagram::Dtls => self.handle_dtls(socket, src, buf),
            kind @ (Datagram::Rtp | Datagram::Rtcp) => {
                let before = crate::alloc_count::this_thread();
                let rtcp = kind == Datagram::Rtcp;
                self.handle_media(now, (socket, src), buf, rtcp, tx);
                self.count_media_allocations(before);
            }
            Datagram::Unknown => self.counters.unclassified += 1,
        }
    }

    /// The ICE-TCP connection `socket` from `src` closed. A session whose selected pair was on
    /// it ends now, not at its consent deadline half a minute later, unless its checks also
    /// came on another path (ICE may move it there; consent decides): a browser behind a
    /// firewall that drops UDP has no other way back, and its players and stream slots would
    /// otherwise linger.
    pub fn handle_tcp_closed(&mut self, now: Instant, socket: SocketId, src: SocketAddr) {
        let Some(id) = self.by_addr.remove(&(socket, src)) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.forget_path(socket, src) {
            return;
        }
        self.remove_session(now, id, EndReason::TransportClosed);
    }

    /// An item from another core (see [`ForwardKind`]).
    pub fn handle_forwarded(
        &mut self,
        now: Instant,
        stream: StreamId,
        kind: ForwardKind,
        payload: &[u8],
        tx: &mut impl TxSink,
    ) {
        let before = crate::alloc_count::this_thread();
        self.router
            .handle_forwarded(now, &mut self.peers, stream, kind, payload, tx);
        self.drain_touched(now, tx);
        self.count_media_allocations(before);
    }

    /// A command from signalling.
    pub fn handle_command(&mut self, now: Instant, command: CoreCommand, tx: &mut impl TxSink) {
        match command {
            CoreCommand::AddSession(spec) if matches!(spec.role, SessionRole::Relay { .. }) => {
                self.socket_requests.push_back(SocketRequest::Open(spec))
            }
            CoreCommand::AddSession(spec) => self.add_session(now, *spec, SocketId::MAIN, tx),
            CoreCommand::AddIngest(spec) => self.add_ingest(now, *spec),
            CoreCommand::AddEgress(spec) => self.add_egress(now, *spec, tx),
            CoreCommand::RequestKeyframe { id } => {
                if let Some((stream, layer, _)) = self.egresses.tap_mut(id) {
                    self.router
                        .request_keyframe(now, &mut self.peers, stream, layer);
                    self.drain_touched(now, tx);
                }
            }
            CoreCommand::RemoveSession { id, reason } if self.egresses.contains(id) => {
                self.egresses.remove(id);
                info!(core = self.id.0, session = %id, %reason, "egress ended");
                self.events
                    .push_back(CoreEvent::SessionEnded { id, reason });
            }
            CoreCommand::RemoveSession { id, reason } if self.ingests.contains_key(&id) => {
                self.remove_ingest(now, id, reason)
            }
            CoreCommand::RemoveSession { id, reason } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.session.end(reason);
                    self.drain_session(now, id, tx);
                }
            }
            CoreCommand::AttachCore { stream, core } => self.router.attach_core(stream, core),
            CoreCommand::DetachCore { stream, core } => self.router.detach_core(stream, core),
            CoreCommand::LimitPublisher { id, bitrate_bps } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.session.limit_bitrate(now, bitrate_bps);
                    self.drain_session(now, id, tx);
                }
            }
            CoreCommand::PinLayer { id, layer } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    if peer.session.pin_layer(layer) {
                        // The new layer's keyframe is asked for at once.
                        peer.layer_request_at = Some(now);
                    }
                    // Unpinned, its estimate chooses afresh: no trial or backoff from before.
                    peer.layer_chooser = LayerChooser::default();
                    self.drain_session(now, id, tx);
                }
            }
            CoreCommand::Shutdown => self.shutdown = true,
        }
    }

    /// The socket a [`SocketRequest::Open`] asked for: the relay starts on it.
    pub fn handle_socket_opened(
        &mut self,
        now: Instant,
        spec: SessionSpec,
        socket: SocketId,
        tx: &mut impl TxSink,
    ) {
        self.add_session(now, spec, socket, tx);
    }

    /// No socket for the relay `id`: it ends before it started.
    pub fn handle_socket_failed(&mut self, id: SessionId, error: &str) {
        self.events.push_back(CoreEvent::SessionEnded {
            id,
            reason: EndReason::DtlsFailed(format!("no relay socket: {error}")),
        });
    }

    /// The relay connection `socket` failed or its peer closed it (a relay over TCP): its relay
    /// session ends now, as one whose peer never came or went away, instead of at its connect
    /// or consent timeout.
    pub fn handle_socket_lost(&mut self, now: Instant, socket: SocketId, tx: &mut impl TxSink) {
        let Some((&id, peer)) = self
            .peers
            .iter_mut()
            .find(|(_, p)| p.own_socket && p.socket == socket)
        else {
            return;
        };
        let reason = if peer.session.is_connected() {
            EndReason::ConsentExpired
        } else {
            EndReason::NeverConnected
        };
        peer.session.end(reason);
        self.drain_session(now, id, tx);
    }

    /// What session `id`'s DTLS handshake (or association) reports.
    pub fn handle_dtls_event(
        &mut self,
        now: Instant,
        id: SessionId,
        event: DtlsEvent,
        tx: &mut impl TxSink,
    ) {
        if let Some(closing) = self.closing.get(&id) {
            // Only client sessions linger (relays close their sockets at once).
            if let DtlsEvent::Transmit(record) = event {
                tx.push_on(closing.socket, closing.remote, &record);
            }
            return;
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match event {
            DtlsEvent::Transmit(record) => {
                if let Some(remote) = peer.session.remote() {
                    tx.push_on(peer.socket, remote, &record);
                }
            }
            DtlsEvent::Connected(keys) => peer.session.handle_dtls_connected(keys, now),
            DtlsEvent::Failed(error) => peer.session.end(EndReason::DtlsFailed(error.to_string())),
            DtlsEvent::Closed => peer.session.end(EndReason::DtlsClosed),
        }
        self.drain_session(now, id, tx);
    }

    /// Keys session `id`'s SRTP with the fixed [`test_keys`](crate::media::test_keys), as if
    /// its DTLS handshake had completed: for driving a core without DTLS (tests, a simulator);
    /// the peer uses [`peer_test_keys`](crate::media::peer_test_keys).
    #[doc(hidden)]
    pub fn connect_with_test_keys(&mut self, now: Instant, id: SessionId, tx: &mut impl TxSink) {
        self.handle_dtls_event(now, id, DtlsEvent::Connected(test_keys()), tx);
    }

    /// Turns burst order on or off (off by default). On, a publisher's video packets are held
    /// (plain, in a bounded buffer) until the frame's last packet, a packet of something else,
    /// or [`end_batch`](Self::end_batch), then written player by player: each player's packets
    /// of the burst back to back, the sink asked to [`submit`](TxSink::submit) every few
    /// players. That suits a sink that sends a destination's datagrams of a burst together (UDP
    /// GSO), which held them until the frame's end anyway. Whoever turns it on must call
    /// `end_batch` after each batch of input (a poll's datagrams, a hand-off drain).
    pub fn set_burst_order(&mut self, on: bool, tx: &mut impl TxSink) {
        self.router.set_burst_order(on, &mut self.peers, tx);
    }

    /// The end of a batch of input: writes the held burst (see
    /// [`set_burst_order`](Self::set_burst_order)) to its players, unless it is a frame
    /// without its last packet yet whose first arrived less than a millisecond before `now`:
    /// that one waits for the rest of the frame in the next batches, until
    /// [`poll_timeout`](Self::poll_timeout) (then [`handle_timeout`](Self::handle_timeout)
    /// writes it).
    pub fn end_batch(&mut self, now: Instant, tx: &mut impl TxSink) {
        let before = crate::alloc_count::this_thread();
        self.router.end_batch(now, &mut self.peers, tx);
        self.count_media_allocations(before);
    }

    /// Time passed: visits the sessions whose deadline came, and runs the core's own periodic
    /// work when it is due.
    pub fn handle_timeout(&mut self, now: Instant, tx: &mut impl TxSink) {
        // Layer choices and replays given up change what players take: a held burst goes out
        // first (a frame held across batches, whose time is up or not).
        self.router.end_burst(&mut self.peers, tx);
        if !self.peers.is_empty() && now >= self.next_layer_choice {
            self.next_layer_choice = now + LAYER_CHOICE_INTERVAL;
            // Moved players' keyframe requests come due now, and are made below.
            self.router.choose_layers(now, &mut self.peers);
            self.drain_touched(now, tx);
        }
        self.visit_due_sessions(now, tx);
        self.router.expire_replays(now, &mut self.peers);
        self.drain_touched(now, tx);
        if now >= self.next_bitrate_report {
            self.next_bitrate_report = now + BITRATE_REPORT_INTERVAL;
            self.report_bitrates(now);
        }
        if self.closing_deadline.is_some_and(|at| at <= now) {
            self.closing
                .retain(|_, c| now.saturating_duration_since(c.since) < CLOSING_LINGER);
            self.closing_deadline = self
                .closing
                .values()
                .map(|c| c.since + CLOSING_LINGER)
                .min();
        }
    }

    /// Ends every session's DTLS (close_notify to peers that are there) as the core stops.
    /// Sessions are dropped without events.
    pub fn close(&mut self) {
        for (_, association) in self.associations.drain() {
            association.close();
        }
        self.peers.clear();
        self.ingests.clear();
        self.egresses.clear();
    }

    /// Routes what the ingests queued (at most [`INGEST_BATCH`] packets each), like a WebRTC
    /// publisher's decrypted packets; ends an ingest whose sender is gone. Returns whether
    /// packets are left for another call.
    pub fn handle_ingests(&mut self, now: Instant, tx: &mut impl TxSink) -> bool {
        if self.ingests.is_empty() {
            return false;
        }
        let before = crate::alloc_count::this_thread();
        let mut left = false;
        let mut finished = None;
        for (&id, ingest) in &mut self.ingests {
            for _ in 0..INGEST_BATCH {
                let Some(packet) = ingest.feed.pop() else {
                    break;
                };
                if ingest.packets == 0 {
                    // Signalling marks the stream live, as for a WebRTC publisher's first packet.
                    self.events.push_back(CoreEvent::SessionConnected { id });
                    self.events.push_back(CoreEvent::MediaStarted { id });
                }
                let plain = packet.packet();
                ingest.packets += 1;
                ingest.bytes += plain.len() as u64;
                self.counters.rtp_received += 1;
                self.counters.rtp_received_bytes += plain.len() as u64;
                if packet.kind() == MediaKind::Video && packet.keyframe() {
                    // Parameter sets go before every keyframe; a new one may announce a new size.
                    if let Some(size) = rtp::RtpHeader::parse(plain)
                        .ok()
                        .and_then(|h| rtp::keyframe_size(ingest.video_codec, h.payload()))
                    {
                        ingest.video_size = Some(size);
                    }
                }
                let media = ReceivedMedia {
                    kind: packet.kind(),
                    len: plain.len(),
                    keyframe: packet.keyframe(),
                    layer: 0,
                };
                self.router.route_publisher_packet(
                    now,
                    &mut self.peers,
                    ingest.stream,
                    media,
                    plain,
                    tx,
                );
                self.egresses
                    .feed(ingest.stream, media.kind, (media.keyframe, 0), plain);
            }
            left |= ingest.feed.has_queued();
            if ingest.feed.is_finished() {
                finished = Some(id);
            }
        }
        self.drain_touched(now, tx);
        self.count_media_allocations(before);
        if let Some(id) = finished {
            self.remove_ingest(now, id, EndReason::Deleted);
        }
        left
    }

    fn add_ingest(&mut self, now: Instant, spec: IngestSpec) {
        info!(core = self.id.0, session = %spec.id, stream = spec.stream_name, "ingest started");
        self.router.add_ingest(spec.id, spec.stream);
        self.ingests.insert(
            spec.id,
            Ingest {
                stream: spec.stream,
                stream_name: spec.stream_name,
                feed: spec.feed,
                started_at: now,
                packets: 0,
                bytes: 0,
                reported: (0, now),
                video_codec: spec.video_codec,
                video_size: None,
            },
        );
    }

    /// Starts an egress on the stream's newest cached keyframe, or asks the publisher for one.
    fn add_egress(&mut self, now: Instant, spec: EgressSpec, tx: &mut impl TxSink) {
        info!(core = self.id.0, session = %spec.id, stream = spec.stream_name, layer = spec.layer, "egress started");
        let (id, stream, layer) = (spec.id, spec.stream, spec.layer);
        self.egresses.add(spec);
        if layer == super::egress::AUDIO_ONLY_LAYER {
            // Audio only: no keyframe to start on or ask for.
            self.events.push_back(CoreEvent::SessionConnected { id });
            return;
        }
        let mut started = false;
        if let (Some(packets), Some((_, _, tap))) = (
            self.router.cached_since_keyframe(stream, layer),
            self.egresses.tap_mut(id),
        ) {
            for plain in packets {
                tap.push(!started, plain);
                started = true;
            }
            tap.wake();
        }
        if started {
            debug!(session = %id, "egress starts on the cached keyframe");
        } else {
            self.router
                .request_keyframe(now, &mut self.peers, stream, layer);
            self.drain_touched(now, tx);
        }
        // Signalling counts it as a connected player at once: it has no handshake.
        self.events.push_back(CoreEvent::SessionConnected { id });
    }

    fn remove_ingest(&mut self, now: Instant, id: SessionId, reason: EndReason) {
        let Some(ingest) = self.ingests.remove(&id) else {
            return;
        };
        let duration = now.saturating_duration_since(ingest.started_at);
        info!(
            core = self.id.0,
            session = %id,
            stream = ingest.stream_name,
            %reason,
            duration_s = %format_args!("{:.1}", duration.as_secs_f64()),
            packets_in = ingest.packets,
            bytes_in = ingest.bytes,
            keyframe_requests_dropped = self.router.ingest_keyframe_requests(ingest.stream),
            "ingest ended"
        );
        self.router.remove_session(id, ingest.stream);
        self.events
            .push_back(CoreEvent::SessionEnded { id, reason });
    }

    fn visit_due_sessions(&mut self, now: Instant, tx: &mut impl TxSink) {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        while let Some((at, id)) = self.timers.pop_due(now) {
            // Entries that no longer count (see `timers`) are skipped.
            if let Some(peer) = self.peers.get_mut(&id).filter(|p| p.armed == Some(at)) {
                peer.armed = None;
                due.push(id);
            }
        }
        self.timer_floor = Some(now + MIN_TIMER_STEP);
        let mut wanted = std::mem::take(&mut self.layer_requests);
        wanted.clear();
        for &id in &due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.session.poll_timeout().is_some_and(|at| at <= now) {
                peer.session.handle_timeout(now);
            }
            if peer.layer_request_at.is_some_and(|at| at <= now) {
                peer.layer_request_at = None;
                if peer.session.is_connected() {
                    if let Some(layer) = peer.session.poll_layer_keyframe_request(now) {
                        wanted.push((peer.session.stream(), layer));
                    }
                    // Still waiting: ask again when the player's request interval is over.
                    if peer.switching_layer() {
                        peer.layer_request_at = Some(now + KEYFRAME_REQUEST_INTERVAL);
                    }
                }
            }
            self.router.touch(id);
        }
        self.due = due;
        self.drain_touched(now, tx);
        // Players of one stream waiting for the same layer share one request.
        wanted.sort_unstable();
        wanted.dedup();
        for &(stream, layer) in &wanted {
            self.router
                .request_keyframe(now, &mut self.peers, stream, layer);
        }
        self.layer_requests = wanted;
        self.drain_touched(now, tx);
    }

    fn report_bitrates(&mut self, now: Instant) {
        // An ingest's bitrate is what came through its ring since the last report.
        for (&id, ingest) in &mut self.ingests {
            let (bytes, at) = std::mem::replace(&mut ingest.reported, (ingest.bytes, now));
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            if elapsed > 0.0 {
                let bps = ((ingest.bytes - bytes) as f64 * 8.0 / elapsed) as u64;
                self.events.push_back(CoreEvent::Bitrates {
                    id,
                    estimate_bps: None,
                    received_bps: Some(bps),
                    layer: None,
                    loss_fraction: None,
                    video_size: ingest.video_size,
                    traffic: Traffic {
                        packets_in: ingest.packets,
                        bytes_in: ingest.bytes,
                        ..Traffic::default()
                    },
                });
            }
        }
        for (&id, peer) in &self.peers {
            let estimate_bps = peer.session.bandwidth_estimate();
            let received_bps = peer.session.received_bitrate();
            let layer = peer.session.player_layer();
            let loss_fraction = peer.session.loss_fraction();
            let video_size = peer.session.video_size();
            let traffic = peer.session.traffic();
            if estimate_bps.is_some()
                || received_bps.is_some()
                || layer.is_some()
                || loss_fraction.is_some()
                || traffic != Traffic::default()
            {
                self.events.push_back(CoreEvent::Bitrates {
                    id,
                    estimate_bps,
                    received_bps,
                    layer,
                    loss_fraction,
                    video_size,
                    traffic,
                });
            }
        }
    }

    fn handle_stun(
        &mut self,
        now: Instant,
        socket: SocketId,
        src: SocketAddr,
        data: &[u8],
        tx: &mut impl TxSink,
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
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.note_path(socket, src);
        if let Err(e) = peer.session.handle_stun(now, src, data) {
            self.counters.stun_rejected += 1;
            debug!(session = %id, error = %e, "STUN rejected");
        }
        self.drain_session(now, id, tx);
    }

    fn handle_dtls(&mut self, socket: SocketId, src: SocketAddr, data: &[u8]) {
        match self
            .by_addr
            .get(&(socket, src))
            .and_then(|id| self.associations.get(id))
        {
            Some(association) => association.handle_record(data),
            None => self.counters.unknown_source += 1,
        }
    }

    /// SRTP or SRTCP (`rtcp`) from a session's peer.
    fn handle_media(
        &mut self,
        now: Instant,
        (socket, src): (SocketId, SocketAddr),
        data: &mut [u8],
        rtcp: bool,
        tx: &mut impl TxSink,
    ) {
        let Some(&id) = self.by_addr.get(&(socket, src)) else {
            self.counters.unknown_source += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if rtcp {
            if let Err(e) = peer.session.handle_srtcp(now, src, data) {
                self.count_media_error(&e);
            }
            self.drain_session(now, id, tx);
            return;
        }
        // Only a publisher's packets decrypt; anything else is counted and dropped.
        let wire_len = data.len() as u64;
        match peer.session.handle_srtp(now, src, data) {
            Ok(media) => {
                self.counters.rtp_received += 1;
                self.counters.rtp_received_bytes += wire_len;
                let stream = peer.session.stream();
                let plain = &data[..media.len];
                self.router
                    .route_publisher_packet(now, &mut self.peers, stream, media, plain, tx);
                self.egresses
                    .feed(stream, media.kind, (media.keyframe, media.layer), plain);
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

    fn count_media_error(&mut self, error: &SessionError) {
        match error {
            SessionError::Srtp(_) | SessionError::NotKeyed => self.counters.srtp_rejected += 1,
            SessionError::Rtx(e) if !e.is_malformed() => self.counters.rtx_dropped += 1,
            _ => self.counters.rtp_malformed += 1,
        }
    }

    fn add_session(
        &mut self,
        now: Instant,
        spec: SessionSpec,
        socket: SocketId,
        tx: &mut impl TxSink,
    ) {
        let id = spec.id;
        let publisher_core = spec.publisher_core;
        let relay = matches!(spec.role, SessionRole::Relay { .. });
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
        self.router.add_session(id, &session, publisher_core);
        self.peers.insert(id, Peer::new(session, socket, relay));
        // Room for the new session's timer entries and routing, made here so that the media
        // path never allocates for them.
        self.timers.reserve_for(self.peers.len());
        self.router.reserve_for(self.peers.len());
        let events = self.peers.len() + 16;
        if self.events.capacity() < events {
            // A bitrate report is one event per session; a first packet makes one too.
            self.events.reserve(events - self.events.len());
        }
        // A relay's first connectivity checks are ready at once.
        self.drain_session(now, id, tx);
    }

    fn start_dtls(&mut self, id: SessionId) {
        if self.associations.contains_key(&id) {
            return;
        }
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let association = self.dtls.start(
            id,
            peer.session.dtls_role(),
            peer.session.remote_fingerprint(),
        );
        self.associations.insert(id, association);
    }

    fn remove_session(&mut self, now: Instant, id: SessionId, reason: EndReason) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        let session = peer.session;
        let traffic = session.traffic();
        let duration = now.saturating_duration_since(session.started_at());
        info!(
            core = self.id.0,
            session = %id,
            stream = session.stream_name(),
            publisher = session.is_publisher(),
            %reason,
            duration_s = %format_args!("{:.1}", duration.as_secs_f64()),
            packets_in = traffic.packets_in,
            bytes_in = traffic.bytes_in,
            packets_out = traffic.packets_out,
            bytes_out = traffic.bytes_out,
            "session ended"
        );
        self.by_addr.retain(|_, owner| *owner != id);
        self.by_ufrag.retain(|_, owner| *owner != id);
        self.router.remove_session(id, session.stream());
        let association = self.associations.remove(&id);
        if peer.own_socket {
            // A relay's socket (or TCP connection) is its own; its edge hears of the end over the WebSocket.
            self.socket_requests
                .push_back(SocketRequest::Close(peer.socket));
        } else if let Some(association) = association {
            // A peer that is still there learns at once that we are gone (DTLS close_notify).
            if let (Some(remote), true) = (session.remote(), reason != EndReason::DtlsClosed) {
                association.close();
                self.closing.insert(
                    id,
                    Closing {
                        socket: peer.socket,
                        remote,
                        since: now,
                        _association: association,
                    },
                );
                let until = now + CLOSING_LINGER;
                self.closing_deadline = Some(self.closing_deadline.map_or(until, |d| d.min(until)));
            }
        }
        self.events
            .push_back(CoreEvent::SessionEnded { id, reason });
    }

    /// Lists session `id` as given input and acts on everything it and the sessions the router
    /// touched on the way produced.
    fn drain_session(&mut self, now: Instant, id: SessionId, tx: &mut impl TxSink) {
        self.router.touch(id);
        self.drain_touched(now, tx);
    }

    /// Drains every session the core or the router gave input to, until none is left.
    fn drain_touched(&mut self, now: Instant, tx: &mut impl TxSink) {
        while let Some(id) = self.router.take_touched() {
            self.drain_one(now, id, tx);
        }
    }

    /// Acts on everything one session produced: sends its control packets, starts DTLS,
    /// routes what concerns its stream, reports to signalling, removes it when it ended; then
    /// arms its timer.
    fn drain_one(&mut self, now: Instant, id: SessionId, tx: &mut impl TxSink) {
        loop {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            while let Some(transmit) = peer.session.poll_transmit() {
                let socket = peer.socket_for(transmit.destination);
                tx.push_on(socket, transmit.destination, &transmit.contents);
                peer.session.recycle(transmit.contents);
            }
            let Some(event) = peer.session.poll_event() else {
                // Its deadline may have moved with this input: armed again while the session is
                // at hand (this runs once per packet a publisher sends).
                if let Some(at) = peer.next_entry(self.timer_floor) {
                    self.push_timer(at, id);
                }
                return;
            };
            let stream = peer.session.stream();
            match event {
                SessionEvent::IceConnected { remote } => {
                    // A client's media follows its selected pair, over UDP or ICE-TCP.
                    peer.socket = peer.socket_for(remote);
                    self.by_addr.insert((peer.socket, remote), id);
                    self.start_dtls(id);
                }
                SessionEvent::RemoteChanged { remote } => {
                    peer.socket = peer.socket_for(remote);
                    self.by_addr.retain(|_, owner| *owner != id);
                    self.by_addr.insert((peer.socket, remote), id);
                }
                SessionEvent::Connected => {
                    self.events.push_back(CoreEvent::SessionConnected { id });
                    info!(session = %id, stream = peer.session.stream_name(), "session connected");
                    if !peer.session.is_publisher() {
                        if peer.session.video_layers().is_some() {
                            // A simulcast player asks for its target layer's keyframe.
                            peer.layer_request_at = Some(now);
                        }
                        self.router
                            .start_player(now, &mut self.peers, id, stream, tx);
                    }
                }
                SessionEvent::MediaStarted => {
                    self.events.push_back(CoreEvent::MediaStarted { id });
                }
                SessionEvent::KeyframeRequested { layer } => {
                    self.router
                        .request_keyframe(now, &mut self.peers, stream, layer);
                }
                SessionEvent::RetransmissionRequested { kind, layer, seqs } => self
                    .router
                    .retransmit(now, &mut self.peers, id, (kind, layer), seqs, tx),
                SessionEvent::SenderReport {
                    kind,
                    layer,
                    ntp_time,
                    rtp_time,
                } => self.router.handle_sender_report(
                    &mut self.peers,
                    stream,
                    (kind, layer),
                    ntp_time,
                    rtp_time,
                ),
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

    /// Pushes session `id`'s timer entry at `at` (see [`Peer::next_entry`]).
    fn push_timer(&mut self, at: Instant, id: SessionId) {
        let peers = &self.peers;
        self.timers.push(at, id, |at, id| {
            peers.get(&id).is_some_and(|p| p.armed == Some(at))
        });
    }
}
