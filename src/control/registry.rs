//! The node's stream registry, owned by the control plane ([`super::plane::ControlPlane`]):
//! which streams are live, which sessions belong to them and on which core each runs. The cores
//! never read it; they learn what they need through [`crate::control::CoreCommand`]s, which the
//! registry's methods return and the plane hands out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::{CoreCommand, CoreId, EndReason, PlayerLayer, SessionId, StreamId};
use crate::sdp::{Codec, Extmap, MediaKind};
use crate::session::Traffic;

/// Why a publish or play was refused; the signalling layer maps it to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A stream of that name is live.
    #[error("stream name is already in use: {0}")]
    NameInUse(String),
    /// No live stream has that name.
    #[error("stream not found: {0}")]
    StreamNotFound(String),
    /// The stream name is empty, too long or has characters outside `[A-Za-z0-9._~-]`.
    #[error("invalid stream name {0:?}: use 1 to 128 of A-Z a-z 0-9 . _ ~ -")]
    InvalidName(String),
}

/// A track of a live stream as the publisher negotiated it.
#[derive(Debug, Clone)]
pub struct StreamTrack {
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's codec (its payload type is the publisher's).
    pub codec: Codec,
    /// Header extensions the publisher's packets carry.
    pub extmaps: Vec<Extmap>,
    /// The simulcast layers' rids, lowest first; empty without simulcast. A player's
    /// `?layer=` names one of them.
    pub rids: Vec<String>,
}

/// Whether a session publishes or plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Publishes its stream.
    Publisher,
    /// Plays its stream.
    Player,
    /// Relays its stream to another node (origin → edge).
    Relay,
    /// Transcodes its stream's audio for a kind of player (the RTMP players' AAC): the
    /// players are counted, not it; no access list applies (each player was checked), and
    /// it ends with the stream.
    Transcoder,
}

impl SessionKind {
    /// What the control API and the metrics call it.
    pub fn name(self) -> &'static str {
        match self {
            SessionKind::Publisher => "publisher",
            SessionKind::Player => "player",
            SessionKind::Relay => "relay",
            SessionKind::Transcoder => "transcoder",
        }
    }
}

/// A live session as signalling knows it.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The session.
    pub id: SessionId,
    /// Publisher or player.
    pub kind: SessionKind,
    /// Its stream's name.
    pub stream_name: String,
    /// The core it runs on.
    pub core: CoreId,
    /// Set once ICE and DTLS are up.
    pub connected: bool,
    /// The secret of its WHIP/WHEP resource URL, if it has one.
    pub resource: Option<ResourceSecret>,
    /// The ACL key a player presented.
    pub acl_key: Option<String>,
    /// A player's estimated bandwidth, a publisher's received bitrate (bit/s), as last reported
    /// by its core.
    pub bitrate_bps: Option<u64>,
    /// A simulcast player's layer, as last reported by its core.
    pub layer: Option<PlayerLayer>,
    /// The share of packets lost over its last receiver report (in 256ths), as last reported:
    /// what the node missed of a publisher, the worst a player reported.
    pub loss_fraction: Option<u8>,
    /// The picture size a publisher's keyframes announced (VP8, H.264, VP9, AV1; an RTMP ingest's SPS).
    pub video_size: Option<(u16, u16)>,
    /// An RTMP publisher's keyframe interval (ms): RTMP cannot be asked for a keyframe, so a
    /// new player may wait this long.
    pub keyframe_interval_ms: Option<u32>,
    /// The media and repair requests it carried, as last reported by its core (once a second).
    pub traffic: Traffic,
    /// When the control plane accepted it (for its age in the control API).
    pub created: Instant,
    /// Where its signalling came from.
    pub client: ClientInfo,
}

impl SessionEntry {
    /// A session that has just been accepted: not connected, nothing reported yet.
    fn new(
        now: Instant,
        id: SessionId,
        kind: SessionKind,
        stream_name: &str,
        core: CoreId,
    ) -> SessionEntry {
        SessionEntry {
            id,
            kind,
            stream_name: stream_name.to_owned(),
            core,
            connected: false,
            resource: None,
            acl_key: None,
            bitrate_bps: None,
            layer: None,
            loss_fraction: None,
            video_size: None,
            keyframe_interval_ms: None,
            traffic: Traffic::default(),
            created: now,
            client: ClientInfo::default(),
        }
    }
}

/// Who asked for a session, as its signalling request showed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The HTTP or WebSocket peer.
    pub peer: Option<std::net::SocketAddr>,
    /// Its `User-Agent` header, cut at [`MAX_USER_AGENT`] bytes.
    pub user_agent: Option<String>,
    /// A publisher that is a relay of this CDN (it proved the CDN's secret): on an edge, the
    /// origin's copy of a stream.
    pub relay: bool,
    /// A publisher whose media comes in over another protocol (RTMP) and is fed to its core.
    pub ingest: bool,
}

/// The longest `User-Agent` kept: a client cannot make the registry hold more.
pub const MAX_USER_AGENT: usize = 256;

impl ClientInfo {
    /// From a peer address and a `User-Agent` value.
    pub fn new(peer: std::net::SocketAddr, user_agent: Option<&str>) -> ClientInfo {
        let user_agent = user_agent.map(|ua| {
            let mut end = ua.len().min(MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_owned()
        });
        ClientInfo {
            peer: Some(peer),
            user_agent,
            relay: false,
            ingest: false,
        }
    }

    /// The peer's address for a log line, `-` when there is none (an ingest fed in-process).
    pub fn peer_text(&self) -> String {
        self.peer.map_or_else(|| "-".to_owned(), |p| p.to_string())
    }
}

/// The secret last segment of a WHIP/WHEP resource URL (`/whip/NAME/SECRET`): 128 random bits,
/// shown only to the client that created the session. Listings show the session's public id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceSecret(u128);

impl ResourceSecret {
    /// The secret of 128 random bits (from the caller's RNG: the control plane draws none).
    pub fn new(random: u128) -> ResourceSecret {
        ResourceSecret(random)
    }

    /// Parses the 32 hex digits of a URL segment.
    pub fn parse(text: &str) -> Option<ResourceSecret> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(ResourceSecret)
    }
}

impl std::fmt::Display for ResourceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::fmt::Debug for ResourceSecret {
    // Logs never show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResourceSecret(<redacted>)")
    }
}

/// A live stream.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    /// The stream.
    pub id: StreamId,
    /// Its name.
    pub name: String,
    /// Its publisher; while orphaned, the one that was lost.
    pub publisher: SessionId,
    /// The publisher's core.
    pub core: CoreId,
    /// What the publisher sends.
    pub tracks: Vec<StreamTrack>,
    /// Players, with their cores.
    pub players: Vec<(SessionId, CoreId)>,
    /// Relays to other nodes; they run on the publisher's core.
    pub relays: Vec<SessionId>,
    /// Transcoders for its players; they run on the publisher's core.
    pub transcoders: Vec<SessionId>,
    /// Set once the publisher's first media packet arrived.
    pub media_flowing: bool,
    /// WCS ACL keys (CDN 2.2): when not empty, a player must present one of them. A new
    /// publish starts with none, open to all.
    pub acl: Vec<String>,
    /// What its players and relays that ended carried, as last reported: with the live
    /// sessions' it makes the stream's totals, which never go back.
    pub ended_traffic: Traffic,
    /// Since when the stream has no publisher: a relayed copy whose source was lost
    /// ([`Registry::orphan`]), its players and relays kept for the next copy to take over.
    pub orphaned_since: Option<Instant>,
    /// Since when its players have waited for a source that connects: kept while a copy that
    /// took them over has not connected yet, so that copies failing to connect one after the
    /// other never make them wait longer than [`ORPHAN_GRACE`] in all.
    waiting_since: Option<Instant>,
}

impl StreamEntry {
    /// Whether a player presenting `key` may play.
    pub fn acl_allows(&self, key: Option<&str>) -> bool {
        self.acl.is_empty() || key.is_some_and(|k| self.acl.iter().any(|a| a == k))
    }
}

/// A change to a stream's ACL keys (`/rest-api/cdn/stream/access_list/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclChange {
    /// Add these keys.
    Add(Vec<String>),
    /// Remove these keys.
    Remove(Vec<String>),
    /// Remove every key: open to all again.
    Clear,
    /// Set exactly these keys (how an origin's relay tells an edge).
    Set(Vec<String>),
}

/// How long the players of an orphaned stream wait for a new copy before they end: the
/// stream's claim in the cluster outlives a dead owner by up to its TTL (6 s), and its
/// publisher needs a moment to publish again elsewhere.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(15);

/// Whether a new copy of a stream can take over the players of the old one: the same kinds of
/// track in the same order, with the same codecs and simulcast layers, so what the players
/// negotiated still decodes.
fn tracks_fit(old: &[StreamTrack], new: &[StreamTrack]) -> bool {
    old.len() == new.len()
        && old.iter().zip(new).all(|(a, b)| {
            a.kind == b.kind
                && a.codec.name.eq_ignore_ascii_case(&b.codec.name)
                && a.codec.clock_rate == b.codec.clock_rate
                && a.codec.channels == b.codec.channels
                && a.rids.len() == b.rids.len()
        })
}

/// The most keys a stream's ACL holds, so one admin call cannot grow it without bound.
pub const MAX_ACL_KEYS: usize = 10_000;

/// The registry.
#[derive(Debug)]
pub struct Registry {
    streams: HashMap<String, StreamEntry>,
    sessions: HashMap<SessionId, SessionEntry>,
    resources: HashMap<ResourceSecret, SessionId>,
    core_load: Vec<usize>,
    next_stream: u64,
    /// Streams removed since [`Registry::take_unpublished`] was last asked.
    unpublished: Vec<(String, StreamId)>,
    /// Streams removed since the start.
    removed_streams: u64,
    /// Sessions ended since the start, by kind and [`EndReason::code`].
    ended_counts: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    /// Why the last [`MAX_ENDED`] sessions with a resource URL ended, oldest first: their
    /// clients may ask ([`Registry::ended`]).
    ended: VecDeque<(ResourceSecret, EndReason)>,
}

/// How many ended resources [`Registry::ended`] remembers: a client asks right after its
/// connection dropped, so a short memory is enough, and it stays bounded.
pub const MAX_ENDED: usize = 1024;

/// Checks a stream name: it becomes part of URLs and SDP `msid` tokens.
pub fn validate_stream_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.chars().take(140).collect()))
    }
}

impl Registry {
    /// An empty registry for `cores` media cores.
    pub fn new(cores: usize) -> Registry {
        Registry {
            streams: HashMap::new(),
            sessions: HashMap::new(),
            resources: HashMap::new(),
            core_load: vec![0; cores],
            next_stream: 1,
            unpublished: Vec::new(),
            removed_streams: 0,
            ended_counts: std::collections::BTreeMap::new(),
            ended: VecDeque::new(),
        }
    }

    /// The core with the fewest sessions.
    pub fn least_loaded_core(&self) -> CoreId {
        let index = self
            .core_load
            .iter()
            .enumerate()
            .min_by_key(|(_, load)| **load)
            .map(|(i, _)| i)
            .unwrap_or(0);
        CoreId(index)
    }

    /// A live stream by name.
    pub fn stream(&self, name: &str) -> Option<&StreamEntry> {
        self.streams.get(name)
    }

    /// All live streams.
    pub fn streams(&self) -> impl Iterator<Item = &StreamEntry> {
        self.streams.values()
    }

    /// A live session.
    pub fn session(&self, id: SessionId) -> Option<&SessionEntry> {
        self.sessions.get(&id)
    }

    /// Checks that `name` can be published, before any negotiation work.
    pub fn check_publish(&self, name: &str) -> Result<(), RegistryError> {
        validate_stream_name(name)?;
        if self.streams.contains_key(name) {
            return Err(RegistryError::NameInUse(name.to_owned()));
        }
        Ok(())
    }

    /// Registers a publisher on `core`.
    pub fn add_publisher(
        &mut self,
        now: Instant,
        name: &str,
        id: SessionId,
        core: CoreId,
        tracks: Vec<StreamTrack>,
    ) -> Result<StreamId, RegistryError> {
        self.check_publish(name)?;
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        self.streams.insert(
            name.to_owned(),
            StreamEntry {
                id: stream,
                name: name.to_owned(),
                publisher: id,
                core,
                tracks,
                players: Vec::new(),
                relays: Vec::new(),
                transcoders: Vec::new(),
                media_flowing: false,
                acl: Vec::new(),
                ended_traffic: Traffic::default(),
                orphaned_since: None,
                waiting_since: None,
            },
        );
        self.insert_session(SessionEntry::new(
            now,
            id,
            SessionKind::Publisher,
            name,
            core,
        ));
        Ok(stream)
    }

    /// Registers a player of `name` on `core`. Returns the commands for the publisher's core (to
    /// start handing packets to `core`, the first time that core gets a player of this stream).
    pub fn add_player(
        &mut self,
        now: Instant,
        name: &str,
        id: SessionId,
        core: CoreId,
    ) -> Result<Vec<(CoreId, CoreCommand)>, RegistryError> {
        let stream = self
            .streams
            .get_mut(name)
            .ok_or_else(|| RegistryError::StreamNotFound(name.to_owned()))?;
        let mut commands = Vec::new();
        let first_on_core = !stream.players.iter().any(|(_, c)| *c == core);
        if core != stream.core && first_on_core {
            commands.push((
                stream.core,
                CoreCommand::AttachCore {
                    stream: stream.id,
                    core,
                },
            ));
        }
        stream.players.push((id, core));
        self.insert_session(SessionEntry::new(now, id, SessionKind::Player, name, core));
        Ok(commands)
    }

    /// Registers a relay of `name` to another node. It runs on the publisher's core, which it
    /// returns, so the stream's packets reach it without crossing cores.
    pub fn add_relay(
        &mut self,
        now: Instant,
        name: &str,
        id: SessionId,
    ) -> Result<CoreId, RegistryError> {
        let stream = self
            .streams
            .get_mut(name)
            .ok_or_else(|| RegistryError::StreamNotFound(name.to_owned()))?;
        let core = stream.core;
        stream.relays.push(id);
        self.insert_session(SessionEntry::new(now, id, SessionKind::Relay, name, core));
        Ok(core)
    }

    /// Registers a transcoder of `name` for its players. It runs on the publisher's core,
    /// which it returns.
    pub fn add_transcoder(
        &mut self,
        now: Instant,
        name: &str,
        id: SessionId,
    ) -> Result<CoreId, RegistryError> {
        let stream = self
            .streams
            .get_mut(name)
            .ok_or_else(|| RegistryError::StreamNotFound(name.to_owned()))?;
        let core = stream.core;
        stream.transcoders.push(id);
        let kind = SessionKind::Transcoder;
        self.insert_session(SessionEntry::new(now, id, kind, name, core));
        Ok(core)
    }

    /// Remembers the ACL key a player presented.
    pub fn set_acl_key(&mut self, id: SessionId, key: Option<String>) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.acl_key = key;
        }
    }

    /// Changes the ACL keys of a live stream. Returns the keys it has now and the players whose
    /// key no longer lets them play (relays are never subject to it).
    pub fn change_acl(
        &mut self,
        name: &str,
        change: AclChange,
    ) -> Result<(Vec<String>, Vec<SessionId>), RegistryError> {
        let stream = self
            .streams
            .get_mut(name)
            .ok_or_else(|| RegistryError::StreamNotFound(name.to_owned()))?;
        match change {
            AclChange::Add(keys) => {
                for key in keys {
                    if !stream.acl.contains(&key) && stream.acl.len() < MAX_ACL_KEYS {
                        stream.acl.push(key);
                    }
                }
            }
            AclChange::Remove(keys) => stream.acl.retain(|k| !keys.contains(k)),
            AclChange::Clear => stream.acl.clear(),
            AclChange::Set(mut keys) => {
                keys.truncate(MAX_ACL_KEYS);
                stream.acl = keys;
            }
        }
        let stream = &self.streams[name];
        let refused = stream
            .players
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| {
                let key = self.sessions.get(id).and_then(|s| s.acl_key.as_deref());
                !stream.acl_allows(key)
            })
            .collect();
        Ok((stream.acl.clone(), refused))
    }

    /// Gives a session a WHIP/WHEP resource URL secret.
    pub fn set_resource(&mut self, id: SessionId, secret: ResourceSecret) {
        if let Some(session) = self.sessions.get_mut(&id) {
            if let Some(old) = session.resource.replace(secret) {
                self.resources.remove(&old);
            }
            self.resources.insert(secret, id);
        }
    }

    /// The session whose resource URL ends in `secret`.
    pub fn resource(&self, secret: ResourceSecret) -> Option<&SessionEntry> {
        self.resources
            .get(&secret)
            .and_then(|id| self.sessions.get(id))
    }

    fn insert_session(&mut self, entry: SessionEntry) {
        if let Some(load) = self.core_load.get_mut(entry.core.0) {
            *load += 1;
        }
        self.sessions.insert(entry.id, entry);
    }

    /// Marks a session connected.
    pub fn set_connected(&mut self, id: SessionId) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.connected = true;
            if let Some(stream) = self.streams.get_mut(&session.stream_name) {
                if stream.publisher == id {
                    stream.waiting_since = None;
                }
            }
        }
    }

    /// Records what a core reported of a session's bitrate.
    pub fn set_bitrate(&mut self, id: SessionId, bitrate_bps: u64) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.bitrate_bps = Some(bitrate_bps);
        }
    }

    /// Records what a core reported of a session's loss and a publisher's picture size; what
    /// it did not report this time stays as it was.
    pub fn set_quality(
        &mut self,
        id: SessionId,
        loss_fraction: Option<u8>,
        video_size: Option<(u16, u16)>,
    ) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.loss_fraction = loss_fraction.or(session.loss_fraction);
            session.video_size = video_size.or(session.video_size);
        }
    }

    /// Records what a core reported of a session's traffic so far.
    pub fn set_traffic(&mut self, id: SessionId, traffic: Traffic) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.traffic = traffic;
        }
    }

    /// What a stream's sessions carried so far: its publisher's and its players' and relays',
    /// the ended ones' included.
    pub fn stream_traffic(&self, stream: &StreamEntry) -> Traffic {
        let mut total = stream.ended_traffic;
        let sessions = stream
            .players
            .iter()
            .map(|(id, _)| *id)
            .chain(stream.relays.iter().copied())
            .chain([stream.publisher]);
        for id in sessions {
            if let Some(session) = self.sessions.get(&id) {
                total.add(&session.traffic);
            }
        }
        total
    }

    /// Records an RTMP publisher's keyframe interval.
    pub fn set_keyframe_interval(&mut self, id: SessionId, interval_ms: u32) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.keyframe_interval_ms = Some(interval_ms);
        }
    }

    /// Records what a core reported of a simulcast player's layer.
    pub fn set_layer(&mut self, id: SessionId, layer: PlayerLayer) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.layer = Some(layer);
        }
    }

    /// Records who asked for a session.
    pub fn set_client(&mut self, id: SessionId, client: ClientInfo) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.client = client;
        }
    }

    /// Every live session.
    pub fn sessions(&self) -> impl Iterator<Item = &SessionEntry> {
        self.sessions.values()
    }

    /// The lowest bandwidth estimated for a player of `stream`, if any player has one.
    pub fn weakest_player(&self, stream: &str) -> Option<u64> {
        self.streams
            .get(stream)?
            .players
            .iter()
            .filter_map(|(id, _)| self.sessions.get(id)?.bitrate_bps)
            .min()
    }

    /// The bitrate the publisher of `stream` sends, as last reported.
    pub fn publisher_bitrate(&self, stream: &str) -> Option<u64> {
        let publisher = self.streams.get(stream)?.publisher;
        self.sessions.get(&publisher)?.bitrate_bps
    }

    /// Marks a publisher's media as flowing.
    pub fn set_media_flowing(&mut self, id: SessionId) {
        if let Some(session) = self.sessions.get(&id) {
            if let Some(stream) = self.streams.get_mut(&session.stream_name) {
                if stream.publisher == id {
                    stream.media_flowing = true;
                }
            }
        }
    }

    /// Forgets a session. Returns the commands that follow: ending a publisher's players, and
    /// detaching a core that has no players of the stream left.
    pub fn remove_session(
        &mut self,
        id: SessionId,
        reason: &EndReason,
    ) -> Vec<(CoreId, CoreCommand)> {
        let Some(session) = self.forget(id, reason) else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        match session.kind {
            SessionKind::Publisher => {
                let Some(stream) = self.streams.get(&session.stream_name) else {
                    return commands;
                };
                if stream.publisher != id {
                    return commands;
                }
                commands = self.remove_stream(&session.stream_name);
            }
            SessionKind::Relay => {
                if let Some(stream) = self.streams.get_mut(&session.stream_name) {
                    stream.relays.retain(|r| *r != id);
                    stream.ended_traffic.add(&session.traffic);
                }
            }
            SessionKind::Transcoder => {
                if let Some(stream) = self.streams.get_mut(&session.stream_name) {
                    stream.transcoders.retain(|t| *t != id);
                }
            }
            SessionKind::Player => {
                let Some(stream) = self.streams.get_mut(&session.stream_name) else {
                    return commands;
                };
                stream.players.retain(|(p, _)| *p != id);
                stream.ended_traffic.add(&session.traffic);
                let core_still_used = stream.players.iter().any(|(_, c)| *c == session.core);
                if session.core != stream.core && !core_still_used {
                    commands.push((
                        stream.core,
                        CoreCommand::DetachCore {
                            stream: stream.id,
                            core: session.core,
                        },
                    ));
                }
            }
        }
        // An orphan nobody waits for any more is not worth a new copy.
        let abandoned = self.streams.get(&session.stream_name).is_some_and(|s| {
            s.orphaned_since.is_some() && s.players.is_empty() && s.relays.is_empty()
        });
        if abandoned {
            commands.extend(self.remove_stream(&session.stream_name));
        }
        commands
    }

    /// Removes a stream whose publisher is gone: its players, relays and transcoders end
    /// ([`EndReason::PublisherLeft`]). Returns the commands that remove them from their cores.
    fn remove_stream(&mut self, name: &str) -> Vec<(CoreId, CoreCommand)> {
        let Some(stream) = self.streams.remove(name) else {
            return Vec::new();
        };
        self.unpublished.push((stream.name.clone(), stream.id));
        self.removed_streams += 1;
        let on_its_core = stream.relays.into_iter().chain(stream.transcoders);
        let on_its_core = on_its_core.map(|id| (id, stream.core));
        let mut commands = Vec::new();
        for (player, core) in stream.players.into_iter().chain(on_its_core) {
            self.forget(player, &EndReason::PublisherLeft);
            commands.push((
                core,
                CoreCommand::RemoveSession {
                    id: player,
                    reason: EndReason::PublisherLeft,
                },
            ));
        }
        commands
    }

    /// A publisher relayed here (a copy of another node's stream) lost its source: `reason`
    /// [`EndReason::loses_source`], while the stream has players or relays. Forgets the
    /// publisher but keeps the stream and its sessions, orphaned since `now`, for the next
    /// copy to take over ([`Registry::adopt_or_publish`]) within [`ORPHAN_GRACE`]. False, and
    /// nothing done, for any other end: the caller removes the session as usual.
    pub fn orphan(&mut self, now: Instant, id: SessionId, reason: &EndReason) -> bool {
        let Some(session) = self.sessions.get(&id) else {
            return false;
        };
        if session.kind != SessionKind::Publisher || !session.client.relay || !reason.loses_source()
        {
            return false;
        }
        let name = session.stream_name.clone();
        let watched = self
            .streams
            .get(&name)
            .is_some_and(|s| s.publisher == id && (!s.players.is_empty() || !s.relays.is_empty()));
        if !watched {
            return false;
        }
        self.forget(id, reason);
        if let Some(stream) = self.streams.get_mut(&name) {
            stream.orphaned_since = Some(*stream.waiting_since.get_or_insert(now));
            stream.media_flowing = false;
        }
        true
    }

    /// Whether `stream` is a copy of another node's stream: relayed here, or orphaned and
    /// waiting for the next copy. A node never claims nor relays on a copy as its own.
    pub fn is_copy(&self, stream: &StreamEntry) -> bool {
        stream.orphaned_since.is_some()
            || self
                .sessions
                .get(&stream.publisher)
                .is_some_and(|p| p.client.relay)
    }

    /// Whether the stream `name` is orphaned: what a relay publishing it would take over.
    pub fn is_orphaned(&self, name: &str) -> bool {
        self.streams
            .get(name)
            .is_some_and(|s| s.orphaned_since.is_some())
    }

    /// The core a new publisher of `name` is to run on: an orphaned stream's own, where its
    /// players' routes start; else the least loaded.
    pub fn core_for_publisher(&self, name: &str) -> CoreId {
        match self.streams.get(name) {
            Some(stream) if stream.orphaned_since.is_some() => stream.core,
            _ => self.least_loaded_core(),
        }
    }

    /// A relay publishes `name` on `core`. When the stream is orphaned and the new copy's
    /// `tracks` fit what its players negotiated, the publisher takes it over: the same stream,
    /// its players and relays kept, the other cores with players attached again (returned).
    /// Otherwise the orphans end ([`EndReason::PublisherLeft`], returned) and the stream is
    /// published anew, as [`Registry::add_publisher`] does.
    pub fn adopt_or_publish(
        &mut self,
        now: Instant,
        name: &str,
        id: SessionId,
        core: CoreId,
        tracks: Vec<StreamTrack>,
    ) -> Result<(StreamId, Vec<(CoreId, CoreCommand)>), RegistryError> {
        let mut commands = Vec::new();
        if let Some(stream) = self
            .streams
            .get_mut(name)
            .filter(|s| s.orphaned_since.is_some())
        {
            if stream.core == core && tracks_fit(&stream.tracks, &tracks) {
                stream.publisher = id;
                stream.orphaned_since = None;
                stream.tracks = tracks;
                let mut cores: Vec<CoreId> = stream
                    .players
                    .iter()
                    .map(|(_, c)| *c)
                    .filter(|c| *c != core)
                    .collect();
                cores.sort_by_key(|c| c.0);
                cores.dedup();
                let stream_id = stream.id;
                commands.extend(cores.into_iter().map(|other| {
                    let attach = CoreCommand::AttachCore {
                        stream: stream_id,
                        core: other,
                    };
                    (core, attach)
                }));
                self.insert_session(SessionEntry::new(
                    now,
                    id,
                    SessionKind::Publisher,
                    name,
                    core,
                ));
                return Ok((stream_id, commands));
            }
            commands = self.remove_stream(name);
        }
        let stream = self.add_publisher(now, name, id, core, tracks)?;
        Ok((stream, commands))
    }

    /// Ends the orphaned streams whose players waited [`ORPHAN_GRACE`] by `now` for a new
    /// copy. Returns the commands that remove their sessions.
    pub fn expire_orphans(&mut self, now: Instant) -> Vec<(CoreId, CoreCommand)> {
        let expired: Vec<String> = self
            .streams
            .values()
            .filter(|s| s.orphaned_since.is_some_and(|at| now >= at + ORPHAN_GRACE))
            .map(|s| s.name.clone())
            .collect();
        expired
            .iter()
            .flat_map(|name| self.remove_stream(name))
            .collect()
    }

    /// When the next orphaned stream expires.
    pub fn next_orphan_expiry(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|s| s.orphaned_since)
            .min()
            .map(|at| at + ORPHAN_GRACE)
    }

    /// Ends a session for `reason`: [`Registry::remove_session`]'s commands plus the one that
    /// removes the session from its core. Empty when the session is unknown. The lost
    /// publisher of an orphaned stream ends the stream: its source left after all (a relay
    /// unpublishing after its media path closed), or an administrator ended it.
    pub fn end_session(&mut self, id: SessionId, reason: EndReason) -> Vec<(CoreId, CoreCommand)> {
        let Some(core) = self.sessions.get(&id).map(|s| s.core) else {
            let orphaned = self
                .streams
                .values()
                .find(|s| s.orphaned_since.is_some() && s.publisher == id)
                .map(|s| s.name.clone());
            return orphaned.map_or_else(Vec::new, |name| self.remove_stream(&name));
        };
        let mut commands = self.remove_session(id, &reason);
        commands.push((core, CoreCommand::RemoveSession { id, reason }));
        commands
    }

    /// Why the session of a resource URL ended, if it ended lately.
    pub fn ended(&self, secret: ResourceSecret) -> Option<&EndReason> {
        self.ended
            .iter()
            .rev()
            .find(|(s, _)| *s == secret)
            .map(|(_, reason)| reason)
    }

    /// Drops a session's entry, its core slot and its resource secret (remembering why it
    /// ended).
    fn forget(&mut self, id: SessionId, reason: &EndReason) -> Option<SessionEntry> {
        let session = self.sessions.remove(&id)?;
        let kind = session.kind.name();
        *self.ended_counts.entry((kind, reason.code())).or_default() += 1;
        if let Some(load) = self.core_load.get_mut(session.core.0) {
            *load = load.saturating_sub(1);
        }
        if let Some(secret) = session.resource {
            self.resources.remove(&secret);
            if self.ended.len() == MAX_ENDED {
                self.ended.pop_front();
            }
            self.ended.push_back((secret, reason.clone()));
        }
        Some(session)
    }

    /// Sessions ended since the start: (kind, reason code, count), `publisher`, `player` or
    /// `relay` and [`EndReason::code`].
    pub fn sessions_ended(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.ended_counts
            .iter()
            .map(|(&(kind, reason), &n)| (kind, reason, n))
    }

    /// A number that changes whenever a stream is published or removed, and only then: who
    /// follows the set of streams (the cluster's claims) looks again when it changed.
    pub fn stream_generation(&self) -> u64 {
        self.next_stream + self.removed_streams
    }

    /// The streams removed (their publishers gone) since the last call, oldest first: the
    /// relays of an origin stop with them.
    pub fn take_unpublished(&mut self) -> Vec<(String, StreamId)> {
        std::mem::take(&mut self.unpublished)
    }

    /// Sessions per core.
    pub fn core_load(&self) -> &[usize] {
        &self.core_load
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Instant;

    /// One VP8 video track: what the registry's and the control plane's tests publish.
    pub(in crate::control) fn track() -> Vec<StreamTrack> {
        vec![StreamTrack {
            kind: MediaKind::Video,
            codec: Codec {
                pt: 96,
                name: "VP8".into(),
                clock_rate: 90000,
                channels: None,
                fmtp: None,
                rtcp_fb: vec![],
                rtx_pt: None,
            },
            extmaps: vec![],
            rids: Vec::new(),
        }]
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_stream_name("cam-1.main_~x").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(129)] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn second_publish_of_a_live_name_is_refused() {
        let mut registry = Registry::new(2);
        registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        assert_eq!(
            registry
                .add_publisher(Instant::now(), "s", SessionId(2), CoreId(1), track())
                .unwrap_err(),
            RegistryError::NameInUse("s".into())
        );
    }

    #[test]
    fn players_on_other_cores_attach_once_and_detach_when_gone() {
        let mut registry = Registry::new(2);
        let stream = registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        let c = registry
            .add_player(Instant::now(), "s", SessionId(2), CoreId(1))
            .unwrap();
        assert!(
            matches!(c.as_slice(), [(CoreId(0), CoreCommand::AttachCore { stream: s, core: CoreId(1) })] if *s == stream)
        );
        assert!(registry
            .add_player(Instant::now(), "s", SessionId(3), CoreId(1))
            .unwrap()
            .is_empty());
        assert!(registry
            .add_player(Instant::now(), "s", SessionId(4), CoreId(0))
            .unwrap()
            .is_empty());
        assert!(registry
            .remove_session(SessionId(2), &EndReason::Deleted)
            .is_empty());
        let c = registry.remove_session(SessionId(3), &EndReason::Deleted);
        assert!(matches!(
            c.as_slice(),
            [(CoreId(0), CoreCommand::DetachCore { .. })]
        ));
        assert_eq!(
            registry
                .add_player(Instant::now(), "x", SessionId(5), CoreId(0))
                .unwrap_err(),
            RegistryError::StreamNotFound("x".into())
        );
    }

    #[test]
    fn a_resource_remembers_why_its_session_ended_for_a_while() {
        let mut registry = Registry::new(1);
        registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        registry
            .add_player(Instant::now(), "s", SessionId(2), CoreId(0))
            .unwrap();
        let (publisher, player) = (ResourceSecret::new(1), ResourceSecret::new(2));
        registry.set_resource(SessionId(1), publisher);
        registry.set_resource(SessionId(2), player);
        assert_eq!(registry.ended(player), None);
        registry.end_session(SessionId(1), EndReason::Deleted);
        assert_eq!(registry.ended(publisher), Some(&EndReason::Deleted));
        // Its player ended with it.
        assert_eq!(registry.ended(player), Some(&EndReason::PublisherLeft));
        // Bounded: the oldest are forgotten.
        for n in 0..MAX_ENDED as u64 {
            let id = SessionId(10 + n);
            registry
                .add_publisher(Instant::now(), "t", id, CoreId(0), track())
                .unwrap();
            registry.set_resource(id, ResourceSecret::new(u128::from(10 + n)));
            registry.end_session(id, EndReason::Terminated);
        }
        assert_eq!(registry.ended(publisher), None);
        assert_eq!(
            registry.ended(ResourceSecret::new(10)),
            Some(&EndReason::Terminated)
        );
        assert!(registry.ended.len() <= MAX_ENDED);
    }

    #[test]
    fn publisher_leaving_ends_its_players_and_frees_the_name() {
        let mut registry = Registry::new(2);
        let empty = registry.stream_generation();
        let id = registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        let published = registry.stream_generation();
        assert_ne!(published, empty);
        registry
            .add_player(Instant::now(), "s", SessionId(2), CoreId(1))
            .unwrap();
        assert_eq!(
            registry.stream_generation(),
            published,
            "a player is no stream"
        );
        // Nothing is unpublished while the publisher is there.
        assert!(registry.take_unpublished().is_empty());
        let c = registry.remove_session(SessionId(1), &EndReason::Deleted);
        assert_ne!(registry.stream_generation(), published);
        assert_eq!(
            registry.sessions_ended().collect::<Vec<_>>(),
            [("player", "publisher_left", 1), ("publisher", "deleted", 1)]
        );
        assert_eq!(registry.take_unpublished(), [("s".to_owned(), id)]);
        assert!(registry.take_unpublished().is_empty());
        assert!(matches!(
            c.as_slice(),
            [(
                CoreId(1),
                CoreCommand::RemoveSession {
                    id: SessionId(2),
                    reason: EndReason::PublisherLeft
                }
            )]
        ));
        assert!(registry.session(SessionId(2)).is_none());
        assert_eq!(registry.core_load(), &[0, 0]);
        registry
            .add_publisher(Instant::now(), "s", SessionId(3), CoreId(1), track())
            .unwrap();
    }

    #[test]
    fn resource_secrets_find_their_session_until_it_ends() {
        let mut registry = Registry::new(1);
        registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        registry
            .add_player(Instant::now(), "s", SessionId(2), CoreId(0))
            .unwrap();
        let (a, b) = (
            ResourceSecret::new(0x1234),
            ResourceSecret::new(u128::MAX - 7),
        );
        registry.set_resource(SessionId(1), a);
        registry.set_resource(SessionId(2), b);
        assert_eq!(registry.resource(a).map(|s| s.id), Some(SessionId(1)));
        let parsed = ResourceSecret::parse(&b.to_string()).unwrap();
        assert_eq!(registry.resource(parsed).map(|s| s.id), Some(SessionId(2)));
        assert!(!format!("{a:?}").contains(&a.to_string()), "Debug hides it");
        // The publisher's end takes its players' secrets along.
        registry.remove_session(SessionId(1), &EndReason::Deleted);
        assert!(registry.resource(a).is_none() && registry.resource(b).is_none());
        for bad in [
            "",
            "00",
            &"g".repeat(32),
            &"0".repeat(33),
            "+0000000000000000000000000000000",
        ] {
            assert!(ResourceSecret::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_streams_traffic_keeps_what_its_ended_players_carried() {
        let mut registry = Registry::new(1);
        registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        for id in [2, 3] {
            registry
                .add_player(Instant::now(), "s", SessionId(id), CoreId(0))
                .unwrap();
        }
        let publisher = Traffic {
            packets_in: 100,
            bytes_in: 100_000,
            keyframe_requests_out: 1,
            ..Traffic::default()
        };
        let player = Traffic {
            packets_out: 90,
            bytes_out: 90_000,
            nacks_in: 2,
            keyframe_requests_in: 1,
            ..Traffic::default()
        };
        registry.set_traffic(SessionId(1), publisher);
        registry.set_traffic(SessionId(2), player);
        registry.set_traffic(SessionId(3), player);
        let total = |registry: &Registry| registry.stream_traffic(registry.stream("s").unwrap());
        let before = total(&registry);
        assert_eq!(before.packets_in, 100);
        assert_eq!(before.packets_out, 180);
        assert_eq!(before.nacks_in, 4);
        assert_eq!(before.keyframe_requests_out, 1);
        // A player leaves: the stream's counters do not go back.
        registry.remove_session(SessionId(3), &EndReason::Deleted);
        assert_eq!(total(&registry), before);
    }

    #[test]
    fn ending_a_session_removes_it_from_its_core_with_the_reason() {
        let mut registry = Registry::new(2);
        registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        registry
            .add_player(Instant::now(), "s", SessionId(2), CoreId(1))
            .unwrap();
        let commands = registry.end_session(SessionId(2), EndReason::RestrictedAccess);
        assert!(matches!(
            commands.as_slice(),
            [
                (CoreId(0), CoreCommand::DetachCore { .. }),
                (
                    CoreId(1),
                    CoreCommand::RemoveSession {
                        id: SessionId(2),
                        reason: EndReason::RestrictedAccess
                    }
                )
            ]
        ));
        assert!(registry
            .end_session(SessionId(2), EndReason::Deleted)
            .is_empty());
        assert_eq!(registry.core_load(), &[1, 0]);
    }

    #[test]
    fn acl_keys_gate_players_and_reset_with_a_new_publish() {
        let mut registry = Registry::new(1);
        registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(0), track())
            .unwrap();
        for (id, key) in [(2, Some("k1")), (3, Some("k2")), (4, None)] {
            registry
                .add_player(Instant::now(), "s", SessionId(id), CoreId(0))
                .unwrap();
            registry.set_acl_key(SessionId(id), key.map(str::to_owned));
        }
        let keys = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Adding keys refuses whoever holds none of them: here the keyless player.
        let (acl, refused) = registry
            .change_acl("s", AclChange::Add(keys(&["k1", "k2", "k1"])))
            .unwrap();
        assert_eq!(acl, keys(&["k1", "k2"]));
        assert_eq!(refused, vec![SessionId(4)]);
        let (acl, refused) = registry
            .change_acl("s", AclChange::Remove(keys(&["k1"])))
            .unwrap();
        assert_eq!(acl, keys(&["k2"]));
        assert_eq!(refused, vec![SessionId(2), SessionId(4)]);
        assert!(registry.stream("s").unwrap().acl_allows(Some("k2")));
        assert!(!registry.stream("s").unwrap().acl_allows(None));
        let (acl, refused) = registry.change_acl("s", AclChange::Clear).unwrap();
        assert!(acl.is_empty() && refused.is_empty());
        assert_eq!(
            registry.change_acl("x", AclChange::Clear),
            Err(RegistryError::StreamNotFound("x".into()))
        );
        // A new publish of the name starts open.
        registry
            .change_acl("s", AclChange::Set(keys(&["z"])))
            .unwrap();
        registry.remove_session(SessionId(1), &EndReason::Deleted);
        registry
            .add_publisher(Instant::now(), "s", SessionId(9), CoreId(0), track())
            .unwrap();
        assert!(registry.stream("s").unwrap().acl.is_empty());
    }

    #[test]
    fn relays_run_on_the_publishers_core_and_end_with_it() {
        let mut registry = Registry::new(2);
        registry
            .add_publisher(Instant::now(), "s", SessionId(1), CoreId(1), track())
            .unwrap();
        assert_eq!(
            registry.add_relay(Instant::now(), "s", SessionId(9)),
            Ok(CoreId(1))
        );
        assert!(
            registry.stream("s").unwrap().players.is_empty(),
            "a relay is not a player"
        );
        let c = registry.remove_session(SessionId(1), &EndReason::Deleted);
        assert!(matches!(
            c.as_slice(),
            [(
                CoreId(1),
                CoreCommand::RemoveSession {
                    id: SessionId(9),
                    reason: EndReason::PublisherLeft
                }
            )]
        ));
        assert_eq!(
            registry.add_relay(Instant::now(), "s", SessionId(10)),
            Err(RegistryError::StreamNotFound("s".into()))
        );
    }

    #[test]
    fn transcoders_run_on_the_publishers_core_are_not_players_and_end_with_it() {
        let mut registry = Registry::new(2);
        let now = Instant::now();
        registry
            .add_publisher(now, "s", SessionId(1), CoreId(1), track())
            .unwrap();
        registry
            .add_player(now, "s", SessionId(2), CoreId(0))
            .unwrap();
        assert_eq!(
            registry.add_transcoder(now, "s", SessionId(9)),
            Ok(CoreId(1))
        );
        let stream = registry.stream("s").unwrap();
        assert_eq!((stream.players.len(), stream.relays.len()), (1, 0));
        assert_eq!(stream.transcoders, [SessionId(9)]);
        assert_eq!(
            registry.session(SessionId(9)).unwrap().kind.name(),
            "transcoder"
        );
        // Its end leaves the stream as it was.
        registry.remove_session(SessionId(9), &EndReason::Deleted);
        assert!(registry.stream("s").unwrap().transcoders.is_empty());
        registry.add_transcoder(now, "s", SessionId(10)).unwrap();
        let c = registry.remove_session(SessionId(1), &EndReason::Deleted);
        assert!(c.iter().any(|(core, command)| *core == CoreId(1)
            && matches!(
                command,
                CoreCommand::RemoveSession {
                    id: SessionId(10),
                    reason: EndReason::PublisherLeft
                }
            )));
        assert!(registry.session(SessionId(10)).is_none());
    }

    /// A registry with the relayed copy "s" published by session 1 on core 0, players 2 (core
    /// 0) and 3 (core 1).
    fn relayed_copy_with_players() -> Registry {
        let mut registry = Registry::new(2);
        let now = Instant::now();
        registry
            .add_publisher(now, "s", SessionId(1), CoreId(0), track())
            .unwrap();
        registry.set_client(
            SessionId(1),
            ClientInfo {
                relay: true,
                ..ClientInfo::default()
            },
        );
        registry
            .add_player(now, "s", SessionId(2), CoreId(0))
            .unwrap();
        registry
            .add_player(now, "s", SessionId(3), CoreId(1))
            .unwrap();
        registry
    }

    #[test]
    fn a_copy_that_lost_its_source_keeps_its_players_for_the_next_copy() {
        let t0 = Instant::now();
        let mut registry = relayed_copy_with_players();
        let id = registry.stream("s").unwrap().id;
        assert!(
            !registry.orphan(t0, SessionId(1), &EndReason::Deleted),
            "an unpublish is no loss"
        );
        assert!(registry.orphan(t0, SessionId(1), &EndReason::SourceLost));
        assert!(registry.session(SessionId(1)).is_none());
        let stream = registry.stream("s").unwrap();
        assert_eq!(stream.players.len(), 2);
        assert!(registry.is_orphaned("s") && registry.is_copy(stream));
        assert_eq!(registry.next_orphan_expiry(), Some(t0 + ORPHAN_GRACE));
        // A publisher that is not a relay cannot take the name meanwhile.
        assert_eq!(
            registry.check_publish("s"),
            Err(RegistryError::NameInUse("s".into()))
        );
        // The next copy runs on the stream's core and takes it over: the same stream, the
        // core with players attached again, no player ended.
        assert_eq!(registry.core_for_publisher("s"), CoreId(0));
        let (adopted, commands) = registry
            .adopt_or_publish(t0, "s", SessionId(9), CoreId(0), track())
            .unwrap();
        assert_eq!(adopted, id);
        assert!(matches!(
            commands.as_slice(),
            [(CoreId(0), CoreCommand::AttachCore { stream, core: CoreId(1) })] if *stream == id
        ));
        let stream = registry.stream("s").unwrap();
        assert_eq!(
            (
                stream.publisher,
                stream.orphaned_since,
                stream.players.len()
            ),
            (SessionId(9), None, 2)
        );
        assert_eq!(registry.next_orphan_expiry(), None);
        assert!(registry.take_unpublished().is_empty());
    }

    #[test]
    fn an_orphan_ends_when_no_copy_comes_or_one_does_not_fit() {
        let t0 = Instant::now();
        let mut registry = relayed_copy_with_players();
        registry.orphan(t0, SessionId(1), &EndReason::ConsentExpired);
        assert!(registry.expire_orphans(t0 + ORPHAN_GRACE / 2).is_empty());
        let ended = registry.expire_orphans(t0 + ORPHAN_GRACE);
        assert_eq!(ended.len(), 2, "{ended:?}");
        assert!(ended.iter().all(|(_, c)| matches!(
            c,
            CoreCommand::RemoveSession {
                reason: EndReason::PublisherLeft,
                ..
            }
        )));
        assert!(registry.stream("s").is_none());
        assert_eq!(registry.take_unpublished().len(), 1);

        // A copy of other codecs: the players end and the copy is published anew.
        let mut registry = relayed_copy_with_players();
        let old = registry.stream("s").unwrap().id;
        registry.orphan(t0, SessionId(1), &EndReason::SourceLost);
        let mut h264 = track();
        h264[0].codec.name = "H264".into();
        let (stream, commands) = registry
            .adopt_or_publish(t0, "s", SessionId(9), CoreId(0), h264)
            .unwrap();
        assert_ne!(stream, old);
        assert_eq!(commands.len(), 2);
        assert!(registry.stream("s").unwrap().players.is_empty());

        // The lost publisher's unpublish, arriving after its media path closed, ends the
        // orphan at once.
        let mut registry = relayed_copy_with_players();
        registry.orphan(t0, SessionId(1), &EndReason::TransportClosed);
        assert_eq!(
            registry.end_session(SessionId(1), EndReason::Deleted).len(),
            2
        );
        assert!(registry.stream("s").is_none());

        // A copy that took the players over and never connected leaves them waiting, but only
        // as long as the first loss allows.
        let mut registry = relayed_copy_with_players();
        registry.set_connected(SessionId(1));
        registry.orphan(t0, SessionId(1), &EndReason::SourceLost);
        let later = t0 + ORPHAN_GRACE / 2;
        registry
            .adopt_or_publish(later, "s", SessionId(9), CoreId(0), track())
            .unwrap();
        registry.set_client(
            SessionId(9),
            ClientInfo {
                relay: true,
                ..ClientInfo::default()
            },
        );
        assert!(registry.orphan(later, SessionId(9), &EndReason::NeverConnected));
        assert_eq!(registry.next_orphan_expiry(), Some(t0 + ORPHAN_GRACE));
        // One that connected and was lost later gives them a new grace.
        registry
            .adopt_or_publish(later, "s", SessionId(10), CoreId(0), track())
            .unwrap();
        registry.set_client(
            SessionId(10),
            ClientInfo {
                relay: true,
                ..ClientInfo::default()
            },
        );
        registry.set_connected(SessionId(10));
        assert!(registry.orphan(later, SessionId(10), &EndReason::ConsentExpired));
        assert_eq!(registry.next_orphan_expiry(), Some(later + ORPHAN_GRACE));

        // The last player leaving ends the orphan.
        let mut registry = relayed_copy_with_players();
        registry.orphan(t0, SessionId(1), &EndReason::SourceLost);
        registry.remove_session(SessionId(2), &EndReason::Deleted);
        assert!(registry.is_orphaned("s"));
        registry.remove_session(SessionId(3), &EndReason::Deleted);
        assert!(registry.stream("s").is_none());
        assert_eq!(registry.take_unpublished().len(), 1);

        // A copy nobody watches, or a publisher that is not a relay, is not kept.
        let mut registry = Registry::new(1);
        registry
            .add_publisher(t0, "p", SessionId(1), CoreId(0), track())
            .unwrap();
        registry
            .add_player(t0, "p", SessionId(2), CoreId(0))
            .unwrap();
        assert!(!registry.orphan(t0, SessionId(1), &EndReason::SourceLost));
    }

    #[test]
    fn least_loaded_core_balances() {
        let mut registry = Registry::new(2);
        registry
            .add_publisher(Instant::now(), "a", SessionId(1), CoreId(0), track())
            .unwrap();
        assert_eq!(registry.least_loaded_core(), CoreId(1));
    }
}
