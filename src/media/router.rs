//! The router: which players get a stream's packets, and what flows back from them to the
//! publisher.
//!
//! One [`Router`] per core holds the core's part of every stream ([`LocalStream`]: the publisher,
//! or the core it is on; the players here; the other cores with players) and routes between them:
//!
//! - a publisher's packet fans out to the players here, each written, rewritten and encrypted
//!   straight into its own datagram, and crosses once to each other core that has players; in
//!   burst order (with UDP GSO) a frame's video is held plain and written player by player at
//!   the frame's end, so that a player's datagrams of the frame lie together (see `burst.rs`);
//! - players' keyframe requests go to the publisher's session, which merges them, and their
//!   NACKs are answered from the core's cache of the stream's video, the rest asked of the
//!   publisher;
//! - the publisher's sender reports are translated into each player's timestamps;
//! - a new player starts on the newest cached keyframe, replayed from the publisher's core when
//!   the publisher is elsewhere (a relay of every simulcast layer, on each layer's);
//! - simulcast players move between the layers the publisher sends.
//!
//! The router never sends a session's control packets itself: it lists the sessions it gave
//! input to (`take_touched`) and the core drains them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::control::{CoreId, SessionId, StreamId};
use crate::media::burst::{ends_frame, Burst};
use crate::media::forward::{ForwardKind, ForwardSink};
use crate::media::peer::{Peer, Peers};
use crate::media::retransmission_cache::RetransmissionCache;
use crate::media::tx::TxSink;
use crate::sdp::MediaKind;
use crate::session::{LostPackets, ReceivedMedia, Session, MAX_LOST_PACKETS};
use crate::simulcast::{
    choose_layer, LayerDecision, LayerRates, LAYER_IDLE, MAX_LAYERS, UNKNOWN_RATE,
};

/// A layer's bitrate is its mean over this many layer choices (two seconds): a keyframe is
/// many delta frames' worth of bytes, and the half second it falls into must not make the layer
/// look too big for a player's estimate.
const LAYER_RATE_PERIODS: usize = 4;

/// The most packets a new player is sent at once from the cached keyframe on: about a second of
/// 3 Mbit/s video. A longer run since the last keyframe would be a burst too big for a
/// player's link; the player waits for a fresh keyframe instead.
const KEYFRAME_REPLAY_MAX_PACKETS: usize = 300;
/// Room left in a hand-off ring after a keyframe replay, for the live packets that share it.
const REPLAY_RING_HEADROOM: usize = 256;
/// A burst's fan-out asks the sink to submit once this many datagrams were written since the
/// last submit (at a player's end): a delta frame of ~8 packets to 8 players, a keyframe to 1 or
/// 2, ~80–150 KB that the kernel copies while they are still in the cache.
const SUBMIT_AFTER: usize = 64;
/// How long a frame's first packets are held, across batches, for the rest of the frame (its
/// marker bit) in burst order. A batch often ends mid-frame: the reactor wakes on a frame's
/// first datagram, before the publisher's next ones arrive microseconds later, and each piece
/// then left as a GSO send of its own (~3 datagrams per send at 100 players where frames are
/// ~8 packets). A frame cannot be decoded before its last packet, so holding its first ones
/// costs a player nothing while the rest follows at once; a paced publisher's packets that
/// come further apart than this leave as they did before.
pub(super) const FRAME_HOLD: Duration = Duration::from_millis(1);
/// How long players wait for a replay from the publisher's core (its end marker may have been
/// dropped with a full ring) before they take live video and a keyframe request.
const REPLAY_TIMEOUT: Duration = Duration::from_millis(300);

/// The core's part of one stream.
#[derive(Default)]
pub(super) struct LocalStream {
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
    /// Each layer's activity and bitrate, as last measured (see [`Router::choose_layers`]).
    layer_rates: LayerRates,
    /// Each layer's bitrate over the last [`LAYER_RATE_PERIODS`] measurements, the mean of
    /// which is its `layer_rates` bitrate.
    layer_rate_window: LayerRateWindow,
    /// Keyframe requests for an ingest publisher, which cannot ask its encoder for one (RTMP
    /// has no such message): counted, and otherwise dropped.
    ingest_keyframe_requests: u64,
}

/// The last few bitrate measurements of a stream's layers.
#[derive(Default)]
struct LayerRateWindow {
    samples: [[u64; LAYER_RATE_PERIODS]; MAX_LAYERS],
    /// Where the next measurement goes.
    next: usize,
    /// How many measurements the window holds (fewer than its size at the start).
    filled: usize,
    /// For how many measurements each layer has been active.
    active_for: [usize; MAX_LAYERS],
    /// Each layer's rate over the last window it was active for whole.
    known: [Option<u64>; MAX_LAYERS],
}

impl LayerRateWindow {
    /// Adds one period's bitrates and which layers are active; returns each layer's rate: the
    /// mean over the window of the periods it sent in. A layer that started or resumed keeps
    /// the rate it had before ([`UNKNOWN_RATE`] if none) until the window holds only periods
    /// since (its first one is partial): measured from a period or two it would look small
    /// enough for players whose estimate it does not fit.
    fn push(
        &mut self,
        bitrates: [u64; MAX_LAYERS],
        active: [bool; MAX_LAYERS],
    ) -> [u64; MAX_LAYERS] {
        self.filled = (self.filled + 1).min(LAYER_RATE_PERIODS);
        let mut rates = [0; MAX_LAYERS];
        for layer in 0..MAX_LAYERS {
            let samples = &mut self.samples[layer];
            samples[self.next] = bitrates[layer];
            self.active_for[layer] = if active[layer] {
                self.active_for[layer] + 1
            } else {
                0
            };
            let (sum, periods) = samples[..self.filled]
                .iter()
                .filter(|&&bps| bps > 0)
                .fold((0, 0), |(sum, n), &bps| (sum + bps, n + 1));
            let mean = sum.checked_div(periods).unwrap_or(0);
            rates[layer] = if self.active_for[layer] > LAYER_RATE_PERIODS {
                self.known[layer] = Some(mean);
                mean
            } else {
                self.known[layer].unwrap_or(UNKNOWN_RATE)
            };
        }
        self.next = (self.next + 1) % LAYER_RATE_PERIODS;
        rates
    }
}

impl LocalStream {
    /// A layer's cache of the stream's video, when this core keeps it.
    fn layer_cache(&mut self, layer: u8) -> Option<&mut RetransmissionCache> {
        self.video_caches.get_mut(usize::from(layer))?.as_mut()
    }

    /// Accounts for a packet the publisher sent, when it arrives (whether or not its fan-out is
    /// held): its layer's activity and bytes, and a video packet kept for NACKs and new players.
    fn note_received(&mut self, now: Instant, media: ReceivedMedia, plain: &[u8]) {
        if media.kind != MediaKind::Video {
            return;
        }
        let layer = usize::from(media.layer);
        if let Some(seen) = self.layer_seen.get_mut(layer) {
            *seen = Some(now);
            self.layer_bytes[layer] += plain.len() as u64;
        }
        self.cache_video(media.layer, media.keyframe, plain);
    }

    /// Keeps a video packet for players' NACKs and new players.
    fn cache_video(&mut self, layer: u8, keyframe: bool, plain: &[u8]) {
        if let Some(cache) = self.layer_cache(layer) {
            // Too long to keep, or a very late packet: a NACK for it goes to the publisher.
            if cache.insert(plain).is_ok() && keyframe {
                cache.note_keyframe(plain);
            }
        }
    }
}

/// What the router counted since the core started.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RouterCounters {
    pub(super) rtp_sent: u64,
    pub(super) rtp_sent_bytes: u64,
    pub(super) retransmissions_sent: u64,
    pub(super) nacks_forwarded_upstream: u64,
    pub(super) retransmissions_throttled: u64,
    pub(super) keyframe_cache_hits: u64,
    pub(super) keyframe_cache_misses: u64,
    pub(super) rtx_sent: u64,
    pub(super) ingest_keyframe_requests: u64,
}

/// The streams of one core and the routes between their sessions (see the module docs).
pub(super) struct Router<F> {
    me: CoreId,
    streams: HashMap<StreamId, LocalStream>,
    forward: F,
    /// Sessions given input since the core last looked, in order: their output is to be
    /// drained.
    touched: VecDeque<SessionId>,
    counters: RouterCounters,
    /// When the earliest keyframe replay this core waits for is given up.
    replay_deadline: Option<Instant>,
    /// When the layers were last measured.
    layers_measured_at: Option<Instant>,
    /// Scratch list of (stream, layer) replays given up, kept so that expiring allocates nothing.
    expired: Vec<(StreamId, u8)>,
    /// The video burst held for fan-out player by player, when burst order is on.
    burst: Option<Burst>,
}

impl<F: ForwardSink> Router<F> {
    pub(super) fn new(me: CoreId, forward: F) -> Router<F> {
        Router {
            me,
            streams: HashMap::new(),
            forward,
            touched: VecDeque::new(),
            counters: RouterCounters::default(),
            replay_deadline: None,
            layers_measured_at: None,
            expired: Vec::new(),
            burst: None,
        }
    }

    pub(super) fn forward_sink_mut(&mut self) -> &mut F {
        &mut self.forward
    }

    pub(super) fn forward_sink(&self) -> &F {
        &self.forward
    }

    pub(super) fn counters(&self) -> RouterCounters {
        self.counters
    }

    /// Makes room to list every one of `sessions` sessions as touched (a sender report touches
    /// all of a stream's players), so that routing never allocates.
    pub(super) fn reserve_for(&mut self, sessions: usize) {
        let wanted = 2 * sessions + 16;
        if self.touched.capacity() < wanted {
            self.touched.reserve(wanted - self.touched.len());
        }
    }

    /// The next session given input since the last call.
    pub(super) fn take_touched(&mut self) -> Option<SessionId> {
        self.touched.pop_front()
    }

    /// Lists a session for the core to drain (and to arm its timer again).
    pub(super) fn touch(&mut self, id: SessionId) {
        self.touched.push_back(id);
    }

    /// When a keyframe replay this core waits for is due to be given up.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [self.replay_deadline, self.held_frame_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the held burst goes even without the rest of its frame: [`FRAME_HOLD`] after its
    /// first packet arrived. `None` when nothing is held.
    fn held_frame_deadline(&self) -> Option<Instant> {
        let first = self.burst.as_ref().and_then(Burst::held_since)?;
        Some(first + FRAME_HOLD)
    }

    /// A new session of this core joins its stream.
    pub(super) fn add_session(
        &mut self,
        id: SessionId,
        session: &Session,
        publisher_core: Option<CoreId>,
    ) {
        let local = self.streams.entry(session.stream()).or_default();
        if session.is_publisher() {
            local.publisher = Some(id);
        } else {
            local.players.push(id);
            local.publisher_core = publisher_core.filter(|c| *c != self.me);
        }
        // The publisher's core keeps its keyframes for the players still to come. Here, not on
        // the forwarding path, which must not allocate.
        let layers = session.video_layer_count();
        for cache in local.video_caches.iter_mut().take(layers) {
            cache.get_or_insert_with(RetransmissionCache::new);
        }
    }

    /// An ingest (see `crate::media::ingest`) publishes `stream` from this core: its packets
    /// are routed as a publisher's, and its video cached for NACKs and new players.
    pub(super) fn add_ingest(&mut self, id: SessionId, stream: StreamId) {
        let local = self.streams.entry(stream).or_default();
        local.publisher = Some(id);
        local.video_caches[0].get_or_insert_with(RetransmissionCache::new);
    }

    /// How many keyframe requests reached `stream`'s ingest publisher (and were dropped).
    pub(super) fn ingest_keyframe_requests(&self, stream: StreamId) -> u64 {
        self.streams
            .get(&stream)
            .map_or(0, |local| local.ingest_keyframe_requests)
    }

    /// The packets of `stream`'s video `layer` from the newest keyframe this core cached on
    /// (as for a new player), for an egress to start on; `None` without one.
    pub(super) fn cached_since_keyframe(
        &self,
        stream: StreamId,
        layer: u8,
    ) -> Option<impl Iterator<Item = &[u8]> + '_> {
        self.streams
            .get(&stream)?
            .video_caches
            .get(usize::from(layer))?
            .as_ref()?
            .since_keyframe(KEYFRAME_REPLAY_MAX_PACKETS)
    }

    /// A session of this core left its stream.
    pub(super) fn remove_session(&mut self, id: SessionId, stream: StreamId) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        if local.publisher == Some(id) {
            local.publisher = None;
        }
        local.players.retain(|p| *p != id);
        if local.publisher.is_none() && local.players.is_empty() {
            self.streams.remove(&stream);
        }
    }

    /// Forwards `stream` (published here) to `core`, which has players of it.
    pub(super) fn attach_core(&mut self, stream: StreamId, core: CoreId) {
        let local = self.streams.entry(stream).or_default();
        if !local.remote_cores.contains(&core) {
            local.remote_cores.push(core);
        }
    }

    /// Stops forwarding `stream` to `core`.
    pub(super) fn detach_core(&mut self, stream: StreamId, core: CoreId) {
        if let Some(local) = self.streams.get_mut(&stream) {
            local.remote_cores.retain(|c| *c != core);
        }
    }

    /// A packet a publisher on this core sent, decrypted in place: to the players here and,
    /// once each, to the other cores with players.
    pub(super) fn route_publisher_packet(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        stream: StreamId,
        media: ReceivedMedia,
        plain: &[u8],
        tx: &mut impl TxSink,
    ) {
        self.fan_out(now, peers, stream, media, plain, tx);
        if let Some(local) = self.streams.get(&stream) {
            let forwarded = ForwardKind::Rtp {
                kind: media.kind,
                keyframe: media.keyframe,
                layer: media.layer,
            };
            for core in &local.remote_cores {
                self.forward.forward(*core, stream, forwarded, plain);
            }
        }
    }

    /// An item from another core's router.
    pub(super) fn handle_forwarded(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        stream: StreamId,
        kind: ForwardKind,
        payload: &[u8],
        tx: &mut impl TxSink,
    ) {
        if !matches!(kind, ForwardKind::Rtp { .. }) {
            // Replays, their ends and the rest change what players take: the held burst goes
            // first, to the players as they were when it arrived.
            self.end_burst(peers, tx);
        }
        match kind {
            ForwardKind::Rtp {
                kind,
                keyframe,
                layer,
            } => {
                let media = ReceivedMedia {
                    kind,
                    len: payload.len(),
                    keyframe,
                    layer,
                };
                self.fan_out(now, peers, stream, media, payload, tx);
            }
            ForwardKind::KeyframeReplay { keyframe, layer } => {
                self.replay_to_waiting(now, peers, stream, (keyframe, layer), payload, tx);
            }
            ForwardKind::KeyframeRequest { layer } => {
                self.request_keyframe(now, peers, stream, layer)
            }
            ForwardKind::Nack { kind, layer } => {
                let seqs = LostPackets::from_be_bytes(payload);
                self.request_retransmission(now, peers, stream, (kind, layer), seqs);
            }
            ForwardKind::SenderReport {
                kind,
                layer,
                ntp_time,
                rtp_time,
            } => self.send_sender_reports(peers, stream, (kind, layer), ntp_time, rtp_time),
            ForwardKind::KeyframeStart => {
                if let &[core, layer, ..] = payload {
                    self.replay_keyframe_to(now, peers, CoreId(usize::from(core)), stream, layer);
                }
            }
            ForwardKind::KeyframeReplayEnd { replayed, layer } => {
                self.end_replay(peers, stream, layer, replayed)
            }
        }
    }

    /// Writes one decrypted packet to every local player of `stream` (of a simulcast stream's
    /// video, to those its layer is for) and keeps a video packet for their NACKs and new
    /// players. With burst order on, video is held and written at the burst's end, player by
    /// player (see [`Burst`]); anything else ends the burst held before it (so audio is not held
    /// behind video, and every player gets the publisher's packets in the order they came).
    fn fan_out(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        stream: StreamId,
        media: ReceivedMedia,
        plain: &[u8],
        tx: &mut impl TxSink,
    ) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        local.note_received(now, media, plain);
        if local.players.is_empty() {
            return;
        }
        let packet = (now, media, plain);
        let Some(burst) = &mut self.burst else {
            write_to_players(&mut self.counters, &local.players, peers, packet, tx);
            return;
        };
        if media.kind != MediaKind::Video {
            self.end_burst(peers, tx);
            if let Some(local) = self.streams.get(&stream) {
                write_to_players(&mut self.counters, &local.players, peers, packet, tx);
            }
            return;
        }
        if !burst.fits(stream, plain.len()) {
            self.end_burst(peers, tx);
        }
        if let Some(burst) = &mut self.burst {
            burst.hold(stream, now, media, plain);
        }
        if ends_frame(plain) {
            self.end_burst(peers, tx);
        }
    }

    /// Turns burst order on or off (off: every packet is written to every player at once). On
    /// suits a sink that sends each destination's datagrams of a burst together (UDP GSO);
    /// whoever drives the core then ends each batch of input with [`end_burst`](Self::end_burst).
    pub(super) fn set_burst_order(&mut self, on: bool, peers: &mut Peers, tx: &mut impl TxSink) {
        self.end_burst(peers, tx);
        match (on, self.burst.is_some()) {
            (true, false) => self.burst = Some(Burst::new()),
            (false, true) => self.burst = None,
            _ => {}
        }
    }

    /// The end of a batch of input: writes the held burst (see [`end_burst`](Self::end_burst)),
    /// unless its frame is unfinished and its first packet arrived less than [`FRAME_HOLD`]
    /// before `now`; then the rest of the frame may join it in the next batch, and
    /// [`poll_timeout`](Self::poll_timeout) says when it goes anyway.
    pub(super) fn end_batch(&mut self, now: Instant, peers: &mut Peers, tx: &mut impl TxSink) {
        if self.held_frame_deadline().is_some_and(|due| now < due) {
            tx.hold_residence(true);
            return;
        }
        self.end_burst(peers, tx);
    }

    /// Writes the held burst to the players of its stream, one player at a time: all of the
    /// burst's packets that a player takes, back to back, then the next player; the sink is
    /// asked to submit every [`SUBMIT_AFTER`] datagrams, at a player's end. Each player takes the
    /// packets as at once before: in order, with its layer decided packet by packet.
    pub(super) fn end_burst(&mut self, peers: &mut Peers, tx: &mut impl TxSink) {
        let Some(burst) = &mut self.burst else {
            return;
        };
        let Some(stream) = burst.stream() else {
            return;
        };
        tx.hold_residence(false);
        if let Some(local) = self.streams.get(&stream) {
            let mut queued = 0;
            for player in &local.players {
                let Some(peer) = peers.get_mut(player) else {
                    continue;
                };
                for packet in burst.packets() {
                    if write_packet(&mut self.counters, peer, packet, tx) {
                        queued += 1;
                    }
                }
                if queued >= SUBMIT_AFTER {
                    tx.submit();
                    queued = 0;
                }
            }
        }
        burst.clear();
    }

    /// Writes one packet of a keyframe replay from the publisher's core to the local players of
    /// `stream` that wait for it, and keeps it in the core's cache (which lacked it: its first
    /// player started the replay).
    fn replay_to_waiting(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        stream: StreamId,
        (keyframe, layer): (bool, u8),
        plain: &[u8],
        tx: &mut impl TxSink,
    ) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        local.cache_video(layer, keyframe, plain);
        for player in &local.players {
            let Some(peer) = peers.get_mut(player).filter(|p| p.awaiting_replay) else {
                continue;
            };
            let Some(remote) = peer.session.remote() else {
                continue;
            };
            let session = &mut peer.session;
            // A player waiting for another layer waits for that layer's keyframe live.
            if session.take_layer(layer, keyframe) == LayerDecision::Drop {
                continue;
            }
            let mut written = 0;
            tx.push_with_on(peer.socket, remote, |buf| {
                written = session.write_rtp(now, (MediaKind::Video, layer), plain, buf);
                written
            });
            self.counters.rtp_sent += 1;
            self.counters.rtp_sent_bytes += written as u64;
        }
    }

    /// Reaches the stream's publisher: `local` runs on its session when it is on this core,
    /// otherwise `remote` says what to hand to the publisher's core.
    fn ask_publisher(
        &mut self,
        peers: &mut Peers,
        stream: StreamId,
        local: impl FnOnce(&mut Session),
        remote_kind: ForwardKind,
        remote_payload: &[u8],
    ) {
        let Some(local_stream) = self.streams.get(&stream) else {
            return;
        };
        if let Some(publisher) = local_stream.publisher {
            if let Some(peer) = peers.get_mut(&publisher) {
                local(&mut peer.session);
                self.touched.push_back(publisher);
            }
        } else if let Some(core) = local_stream.publisher_core {
            self.forward
                .forward(core, stream, remote_kind, remote_payload);
        }
    }

    /// Asks the publisher for a keyframe of a simulcast layer (0 without simulcast).
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        stream: StreamId,
        layer: u8,
    ) {
        if let Some(local) = self.streams.get_mut(&stream) {
            // An ingest's keyframes come when its encoder sends them (its keyframe interval).
            if local.publisher.is_some_and(|p| !peers.contains_key(&p)) {
                local.ingest_keyframe_requests += 1;
                self.counters.ingest_keyframe_requests += 1;
                return;
            }
        }
        self.ask_publisher(
            peers,
            stream,
            |publisher| publisher.request_keyframe(now, layer),
            ForwardKind::KeyframeRequest { layer },
            &[],
        );
    }

    /// A publisher on this core sent a sender report: to the other cores with players, and
    /// translated to the players here.
    pub(super) fn handle_sender_report(
        &mut self,
        peers: &mut Peers,
        stream: StreamId,
        track: (MediaKind, u8),
        ntp_time: u64,
        rtp_time: u32,
    ) {
        if let Some(local) = self.streams.get(&stream) {
            let (kind, layer) = track;
            let report = ForwardKind::SenderReport {
                kind,
                layer,
                ntp_time,
                rtp_time,
            };
            for &core in &local.remote_cores {
                self.forward.forward(core, stream, report, &[]);
            }
        }
        self.send_sender_reports(peers, stream, track, ntp_time, rtp_time);
    }

    /// Gives the publisher's NTP↔RTP mapping of a track to every player of `stream` here, each
    /// translated into its own timestamps by its session.
    fn send_sender_reports(
        &mut self,
        peers: &mut Peers,
        stream: StreamId,
        (kind, layer): (MediaKind, u8),
        ntp: u64,
        rtp: u32,
    ) {
        let Some(local) = self.streams.get(&stream) else {
            return;
        };
        for &player in &local.players {
            if let Some(peer) = peers.get_mut(&player) {
                peer.session
                    .handle_publisher_sender_report(kind, layer, ntp, rtp);
                self.touched.push_back(player);
            }
        }
    }

    /// Starts a connected player's video on the newest keyframe, so it need not wait for one
    /// from the publisher: from this core's cache, else replayed from the publisher's core;
    /// asks the publisher for one when neither has it.
    pub(super) fn start_player(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        id: SessionId,
        stream: StreamId,
        tx: &mut impl TxSink,
    ) {
        // The held burst is in the cache the new player starts from: it must not get it twice.
        self.end_burst(peers, tx);
        let Some(peer) = peers.get_mut(&id) else {
            return;
        };
        if !peer.session.plays(MediaKind::Video) {
            return;
        }
        let relayed = peer.session.relayed_layers();
        if relayed > 0 {
            self.start_relayed_layers(now, peers, id, stream, relayed, tx);
            return;
        }
        // An unpinned simulcast player starts on the highest layer the publisher sends now,
        // not on the last keyframe of a layer it paused.
        if let (Some((count, target)), Some(local)) =
            (peer.session.layer_choice(), self.streams.get(&stream))
        {
            if let Some(layer) = choose_layer(&local.layer_rates, count, target, None) {
                peer.session.retarget_layer(layer);
            }
        }
        let layer = peer.target_layer();
        if self.start_from_local_keyframe(now, peer, stream, layer, tx) {
            self.counters.keyframe_cache_hits += 1;
            return;
        }
        let me = u8::try_from(self.me.0).unwrap_or(u8::MAX);
        if let Some(local) = self.streams.get_mut(&stream) {
            if let Some(publisher_core) = local.publisher_core {
                // The publisher's core keeps the keyframe for players still to come: ask it to
                // replay it here, and hold this player's live video back until it has.
                peer.awaiting_replay = true;
                if let Some(requested @ None) = local.replay_requested.get_mut(usize::from(layer)) {
                    *requested = Some(now);
                    let expires = now + REPLAY_TIMEOUT;
                    self.replay_deadline =
                        Some(self.replay_deadline.map_or(expires, |at| at.min(expires)));
                    self.forward.forward(
                        publisher_core,
                        stream,
                        ForwardKind::KeyframeStart,
                        &[me, layer],
                    );
                }
                return;
            }
        }
        self.start_on_requested_keyframe(now, peers, stream, layer);
    }

    /// Starts a relay that sends each of the stream's `layers` simulcast layers on its own
    /// SSRC: every layer on its newest cached keyframe, else on the keyframe asked of the
    /// publisher for it. A relay runs on its publisher's core (see
    /// [`crate::control::registry::Registry::add_relay`]), which keeps every layer's keyframe.
    fn start_relayed_layers(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        id: SessionId,
        stream: StreamId,
        layers: u8,
        tx: &mut impl TxSink,
    ) {
        for layer in 0..layers.min(MAX_LAYERS as u8) {
            let Some(peer) = peers.get_mut(&id) else {
                return;
            };
            if self.start_from_local_keyframe(now, peer, stream, layer, tx) {
                self.counters.keyframe_cache_hits += 1;
            } else {
                self.start_on_requested_keyframe(now, peers, stream, layer);
            }
        }
    }

    /// No cache here holds a keyframe of `stream`'s `layer` to start on: counts the miss and
    /// asks the publisher for one.
    fn start_on_requested_keyframe(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        stream: StreamId,
        layer: u8,
    ) {
        self.counters.keyframe_cache_misses += 1;
        self.request_keyframe(now, peers, stream, layer);
    }

    /// Sends a player the packets from the keyframe this core cached on; false without one.
    fn start_from_local_keyframe(
        &mut self,
        now: Instant,
        peer: &mut Peer,
        stream: StreamId,
        layer: u8,
        tx: &mut impl TxSink,
    ) -> bool {
        let cached = self
            .streams
            .get(&stream)
            .and_then(|l| l.video_caches.get(usize::from(layer))?.as_ref())
            .and_then(|c| c.since_keyframe(KEYFRAME_REPLAY_MAX_PACKETS));
        let (Some(packets), Some(remote)) = (cached, peer.session.remote()) else {
            return false;
        };
        for (i, plain) in packets.enumerate() {
            // Starts a simulcast player on the layer (the first packet is its keyframe).
            if peer.session.take_layer(layer, i == 0) == LayerDecision::Drop {
                continue;
            }
            let session = &mut peer.session;
            let mut written = 0;
            tx.push_with_on(peer.socket, remote, |buf| {
                written = session.write_rtp(now, (MediaKind::Video, layer), plain, buf);
                written
            });
            self.counters.rtp_sent += 1;
            self.counters.rtp_sent_bytes += written as u64;
        }
        true
    }

    /// On the publisher's core: another core's new players want to start on the cached
    /// keyframe. Sends them the packets from it on, or, when there are none (or the ring has
    /// no room for them next to the live packets), asks the publisher for a keyframe.
    fn replay_keyframe_to(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        core: CoreId,
        stream: StreamId,
        layer: u8,
    ) {
        let cache = self
            .streams
            .get(&stream)
            .and_then(|l| l.video_caches.get(usize::from(layer))?.as_ref());
        let count = cache
            .and_then(|c| c.since_keyframe(KEYFRAME_REPLAY_MAX_PACKETS))
            .map_or(0, Iterator::count);
        let fits = count + 1 + REPLAY_RING_HEADROOM <= self.forward.free_slots(core);
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
                self.forward.forward(core, stream, kind, plain);
            }
        }
        self.forward.forward(
            core,
            stream,
            ForwardKind::KeyframeReplayEnd { replayed, layer },
            &[],
        );
        if !replayed {
            self.request_keyframe(now, peers, stream, layer);
        }
    }

    /// A keyframe replay this core asked for ended (or never came): its waiting players take
    /// live video from now on; without a replay they wait for the keyframe requested for them.
    /// Only the players waiting for that replay's layer.
    fn end_replay(&mut self, peers: &mut Peers, stream: StreamId, layer: u8, replayed: bool) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(requested) = local.replay_requested.get_mut(usize::from(layer)) {
            *requested = None;
        }
        let mut waited = 0;
        for player in &local.players {
            let waits = |p: &&mut Peer| p.awaiting_replay && p.target_layer() == layer;
            if let Some(peer) = peers.get_mut(player).filter(waits) {
                peer.awaiting_replay = false;
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

    /// Replays whose end marker never came (dropped with a full ring): their players take
    /// live video and a keyframe request.
    pub(super) fn expire_replays(&mut self, now: Instant, peers: &mut Peers) {
        if self.replay_deadline.is_none_or(|at| at > now) {
            return;
        }
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        for (&stream, local) in &self.streams {
            for (layer, requested) in local.replay_requested.iter().enumerate() {
                if requested.is_some_and(|at| now >= at + REPLAY_TIMEOUT) {
                    expired.push((stream, layer as u8));
                }
            }
        }
        for &(stream, layer) in &expired {
            self.end_replay(peers, stream, layer, false);
            self.request_keyframe(now, peers, stream, layer);
        }
        self.expired = expired;
        self.replay_deadline = self
            .streams
            .values()
            .flat_map(|l| l.replay_requested.iter().flatten())
            .map(|at| *at + REPLAY_TIMEOUT)
            .min();
    }

    /// Answers a player's NACK of a track (and the simulcast layer its numbers belong to):
    /// sends it the packets this core's cache holds, and asks the publisher for the rest.
    pub(super) fn retransmit(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        player: SessionId,
        (kind, layer): (MediaKind, u8),
        seqs: LostPackets,
        tx: &mut impl TxSink,
    ) {
        let mut missed = [0u16; MAX_LOST_PACKETS];
        let mut misses = 0;
        let mut target = peers.get_mut(&player);
        let Some(stream) = target.as_ref().map(|p| p.session.stream()) else {
            return;
        };
        let cache = match kind {
            MediaKind::Video => self
                .streams
                .get(&stream)
                .and_then(|l| l.video_caches.get(usize::from(layer))?.as_ref()),
            MediaKind::Audio => None,
        };
        for &seq in seqs.as_slice() {
            let mut written = 0;
            if let (Some(plain), Some(peer)) = (cache.and_then(|c| c.get(seq)), target.as_mut()) {
                if let Some(remote) = peer.session.remote() {
                    if !peer.session.may_resend(now) {
                        // Over its budget: neither sent again nor asked of the publisher,
                        // which a player NACKing in a loop must not reach either.
                        self.counters.retransmissions_throttled += 1;
                        continue;
                    }
                    let session = &mut peer.session;
                    tx.push_with_on(peer.socket, remote, |buf| {
                        written = session.write_retransmission(now, (kind, layer), plain, buf);
                        written
                    });
                }
            }
            if written > 0 {
                self.counters.retransmissions_sent += 1;
                if target.as_ref().is_some_and(|p| p.session.plays_rtx(kind)) {
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
            self.request_retransmission(now, peers, stream, (kind, layer), missed);
        }
    }

    fn request_retransmission(
        &mut self,
        now: Instant,
        peers: &mut Peers,
        stream: StreamId,
        (kind, layer): (MediaKind, u8),
        seqs: LostPackets,
    ) {
        let mut payload = [0u8; 2 * MAX_LOST_PACKETS];
        let len = seqs.to_be_bytes(&mut payload);
        self.ask_publisher(
            peers,
            stream,
            |publisher| publisher.request_retransmission(now, kind, layer, seqs.as_slice()),
            ForwardKind::Nack { kind, layer },
            &payload[..len],
        );
    }

    /// Measures each stream's layers (activity, bitrate) and moves each unpinned simulcast
    /// player to the layer its [`LayerChooser`](crate::simulcast::LayerChooser) picks from them
    /// and its bandwidth estimate (as its [`LayerEstimate`](crate::simulcast::LayerEstimate)
    /// holds it): off a layer the publisher paused or its link does not carry,
    /// up again after a trial of the layer above (the highest active layer until its estimate
    /// is measured). The move takes effect at that layer's keyframe, asked for at once (the
    /// moved players are touched, with their keyframe request due now).
    pub(super) fn choose_layers(&mut self, now: Instant, peers: &mut Peers) {
        let since = self.layers_measured_at.replace(now);
        let elapsed = since.map(|at| now.saturating_duration_since(at).as_secs_f64());
        for local in self.streams.values_mut() {
            let mut bitrates = [0u64; MAX_LAYERS];
            for (layer, bitrate) in bitrates.iter_mut().enumerate() {
                local.layer_rates.active[layer] = local.layer_seen[layer]
                    .is_some_and(|at| now.saturating_duration_since(at) < LAYER_IDLE);
                if let Some(elapsed) = elapsed.filter(|e| *e > 0.0) {
                    let bits = local.layer_bytes[layer] as f64 * 8.0;
                    *bitrate = (bits / elapsed) as u64;
                }
                local.layer_bytes[layer] = 0;
            }
            if elapsed.is_some_and(|e| e > 0.0) {
                let active = local.layer_rates.active;
                local.layer_rates.bitrate_bps = local.layer_rate_window.push(bitrates, active);
            }
        }
        for (&id, peer) in peers.iter_mut() {
            let Some((count, target)) = peer.session.layer_choice() else {
                continue;
            };
            let Some(local) = self.streams.get(&peer.session.stream()) else {
                continue;
            };
            let estimate = peer.layer_estimate.update(
                peer.session.measured_bandwidth_estimate(),
                peer.session.bandwidth_congested(),
            );
            let chosen =
                peer.layer_chooser
                    .choose(now, &local.layer_rates, count, target, estimate);
            if let Some(layer) = chosen {
                if peer.session.retarget_layer(layer) {
                    debug!(core = self.me.0, session = %id, from = target, to = layer, estimate_bps = estimate, trial = peer.layer_chooser.in_trial(), "simulcast layer retargeted");
                    peer.layer_request_at = Some(now);
                    self.touched.push_back(id);
                }
            }
        }
    }
}

/// Writes one packet (with its arrival time) to every one of `players` at once.
fn write_to_players(
    counters: &mut RouterCounters,
    players: &[SessionId],
    peers: &mut Peers,
    packet: (Instant, ReceivedMedia, &[u8]),
    tx: &mut impl TxSink,
) {
    for player in players {
        if let Some(peer) = peers.get_mut(player) {
            write_packet(counters, peer, packet, tx);
        }
    }
}

/// Writes one packet (with its arrival time) to one player, rewritten and encrypted straight
/// into the sink's buffer, unless the player does not take it: not connected yet, waiting for
/// a keyframe replay (video), or on another simulcast layer. Returns whether it was queued.
fn write_packet(
    counters: &mut RouterCounters,
    peer: &mut Peer,
    (now, media, plain): (Instant, ReceivedMedia, &[u8]),
    tx: &mut impl TxSink,
) -> bool {
    let Some(remote) = peer.session.remote() else {
        return false;
    };
    let video = media.kind == MediaKind::Video;
    if !peer.session.is_connected() || (peer.awaiting_replay && video) {
        return false;
    }
    let session = &mut peer.session;
    if video && session.take_layer(media.layer, media.keyframe) == LayerDecision::Drop {
        return false;
    }
    let mut written = 0;
    tx.push_with_on(peer.socket, remote, |buf| {
        written = session.write_rtp(now, (media.kind, media.layer), plain, buf);
        written
    });
    counters.rtp_sent += 1;
    counters.rtp_sent_bytes += written as u64;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layers_bitrate_is_its_mean_over_the_last_periods_so_one_keyframe_does_not_double_it() {
        let mut window = LayerRateWindow::default();
        let all = [true; MAX_LAYERS];
        // Not known until a whole window measured the layers.
        for _ in 0..LAYER_RATE_PERIODS {
            assert_eq!(
                window.push([100, 500, 1_000], all),
                [UNKNOWN_RATE; MAX_LAYERS]
            );
        }
        assert_eq!(window.push([100, 500, 1_000], all), [100, 500, 1_000]);
        // A keyframe in the top layer's period.
        assert_eq!(window.push([100, 500, 5_000], all), [100, 500, 2_000]);
        // It leaves the window four periods later.
        for _ in 0..3 {
            assert_eq!(window.push([100, 500, 1_000], all), [100, 500, 2_000]);
        }
        assert_eq!(window.push([100, 500, 1_000], all), [100, 500, 1_000]);
    }

    #[test]
    fn a_resumed_layer_keeps_its_rate_until_a_whole_window_measured_it_again() {
        let mut window = LayerRateWindow::default();
        let all = [true; MAX_LAYERS];
        for _ in 0..6 {
            window.push([100, 500, 1_000], all);
        }
        // The top layer pauses: a silent period does not lower its rate; inactive, it keeps it.
        assert_eq!(window.push([100, 500, 0], all), [100, 500, 1_000]);
        let paused = [true, true, false];
        for _ in 0..4 {
            assert_eq!(window.push([100, 500, 0], paused), [100, 500, 1_000]);
        }
        // It resumes, its first period partial: still the rate from before, until the window
        // holds only whole periods since.
        assert_eq!(window.push([100, 500, 200], all), [100, 500, 1_000]);
        for _ in 0..3 {
            assert_eq!(window.push([100, 500, 1_200], all), [100, 500, 1_000]);
        }
        assert_eq!(window.push([100, 500, 1_200], all), [100, 500, 1_200]);
    }
}
