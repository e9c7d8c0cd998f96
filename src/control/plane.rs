//! The node's control plane, one sans-IO owner of it: the [`Registry`] (streams, sessions,
//! access lists) and the [`RelayPlanner`] (each stream's relay to each CDN edge) behind one set
//! of `handle_*` inputs, each with the time where time matters, and one queue of
//! [`ControlAction`]s out ([`ControlPlane::poll_action`], [`ControlPlane::poll_timeout`]).
//!
//! It decides: who may publish a name (a second publisher of a taken name is refused; an
//! authorized one supersedes a publisher that never connected), who may play (the stream's
//! access list), which sessions end when a publisher leaves or a key is revoked, and with which
//! reason, and when each stream is relayed where, retried and stopped. The transports
//! (`signalling` for HTTP, WHIP/WHEP and WebSocket clients; `cdn::relay` for the links to the
//! edges) feed it what happened and carry its actions out: commands for the media cores,
//! statuses for whoever watches a session, relays to start and stop.

use std::collections::VecDeque;
use std::time::Instant;

use rand::Rng;
use tracing::info;

use super::registry::{
    AclChange, ClientInfo, Registry, RegistryError, ResourceSecret, SessionKind, StreamTrack,
    ORPHAN_GRACE,
};
use super::relay_planner::{
    AttemptId, EdgeId, RelayAction, RelayEnd, RelayPlanner, RelayState, RetryPolicy,
};
use super::status::SessionStatus;
use super::{
    CoreCommand, CoreEvent, CoreId, EgressSpec, EndReason, IngestSpec, RelayPath, SessionId,
    SessionSpec, StreamId,
};

/// What the control plane asks its transports to do, in order.
#[derive(Debug)]
pub enum ControlAction {
    /// Send `command` to the media core `core`.
    Core { core: CoreId, command: CoreCommand },
    /// Tell whoever watches `session` (a WebSocket client, a relay link) how it is doing.
    Status {
        session: SessionId,
        status: SessionStatus,
    },
    /// For the CDN's relay transport.
    Relay(RelayOrder),
}

/// What the relay transport is asked to do.
#[derive(Debug, Clone)]
pub enum RelayOrder {
    /// Relay `stream` (as it is now: `relayed`) to `edge`, as `attempt`: report how it goes
    /// with that id ([`ControlPlane::handle_relay_up`], [`ControlPlane::handle_relay_ended`]).
    Start {
        attempt: AttemptId,
        edge: EdgeId,
        stream: String,
        relayed: RelayedStream,
    },
    /// End `attempt`: unpublish on the edge, close the link and our relay session.
    Stop { attempt: AttemptId },
    /// Tell the edge of `attempt` the stream's access list is now `keys`.
    PassAcl {
        attempt: AttemptId,
        keys: Vec<String>,
    },
}

/// A live stream as a relay offers it to an edge.
#[derive(Debug, Clone)]
pub struct RelayedStream {
    /// Which publication of the name it is.
    pub id: StreamId,
    /// What the publisher sends.
    pub tracks: Vec<StreamTrack>,
    /// Its access list, which the edge enforces too.
    pub acl: Vec<String>,
}

/// A player the registry took: its stream, the stream's publisher's core and its own.
struct AdmittedPlayer {
    stream: StreamId,
    publisher_core: CoreId,
    core: CoreId,
}

/// Why a play was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayError {
    /// The stream is not live (or its name is invalid).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The stream's access list does not hold the player's key.
    #[error("restricted access")]
    RestrictedAccess,
}

/// What an access-list change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclChanged {
    /// The stream's keys now.
    pub keys: Vec<String>,
    /// How many players it ended ("Restricted access").
    pub ended: usize,
}

/// The node's control plane.
#[derive(Debug)]
pub struct ControlPlane<R> {
    registry: Registry,
    relays: RelayPlanner<R>,
    actions: VecDeque<ControlAction>,
}

impl<R: Rng> ControlPlane<R> {
    /// The control plane of a node with `cores` media cores that relays every stream to each of
    /// `edges` (none: a node that relays nothing), retrying as `policy` says with jitter drawn
    /// from `rng`.
    pub fn new(cores: usize, edges: Vec<EdgeId>, policy: RetryPolicy, rng: R) -> ControlPlane<R> {
        ControlPlane {
            registry: Registry::new(cores),
            relays: RelayPlanner::new(edges, policy, rng),
            actions: VecDeque::new(),
        }
    }

    /// The streams and sessions, to read.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where the relay of `stream` to `edge` stands; `None` when the stream is not relayed.
    pub fn relay_state(&self, stream: &str, edge: EdgeId) -> Option<RelayState> {
        self.relays.state(stream, edge)
    }

    /// The transport the relay of `stream` to `edge` connected over, while its attempt lives.
    pub fn relay_path(&self, stream: &str, edge: EdgeId) -> Option<RelayPath> {
        self.relays.path(stream, edge)
    }

    /// A client asks to publish `name`, before any negotiation work: refused when the name is
    /// invalid or live. A publisher that `supersedes` (authorized: a relay of this CDN, a token
    /// or hook holder) first ends a holder of the name that has not connected yet, so an offer
    /// that never connects cannot keep the name. A `relay` of this CDN may publish an orphaned
    /// stream: it takes its players over. Returns the superseded session, if any.
    pub fn handle_publish_requested(
        &mut self,
        now: Instant,
        name: &str,
        supersedes: bool,
        relay: bool,
    ) -> Result<Option<SessionId>, RegistryError> {
        super::registry::validate_stream_name(name)?;
        let mut superseded = None;
        if supersedes {
            let holder = self.registry.stream(name).map(|s| s.publisher);
            let unconnected =
                holder.filter(|id| self.registry.session(*id).is_some_and(|s| !s.connected));
            if let Some(holder) = unconnected {
                self.end_session(now, holder, EndReason::Superseded);
                superseded = Some(holder);
            }
        }
        // A relay's copy superseded that way leaves the stream orphaned for the next one.
        if relay && self.registry.is_orphaned(name) {
            return Ok(superseded);
        }
        self.registry.check_publish(name)?;
        Ok(superseded)
    }

    /// A negotiated publisher of `spec.stream_name`, with the tracks it sends, runs on `core`
    /// (its `spec.stream` is set here). Refused when the name is taken. A relay of this CDN
    /// publishing an orphaned stream takes it over (see [`Registry::adopt_or_publish`]; the
    /// core to run it on is [`Registry::core_for_publisher`]).
    pub fn handle_publish(
        &mut self,
        now: Instant,
        core: CoreId,
        mut spec: SessionSpec,
        tracks: Vec<StreamTrack>,
        client: ClientInfo,
    ) -> Result<StreamId, RegistryError> {
        let name = &spec.stream_name;
        let stream = if client.relay && self.registry.is_orphaned(name) {
            let (stream, commands) = self
                .registry
                .adopt_or_publish(now, name, spec.id, core, tracks)?;
            match commands.first() {
                Some((_, CoreCommand::RemoveSession { .. })) => {
                    info!(stream = %name, "the new copy's tracks do not fit what the stream's players negotiated: they end");
                }
                _ => {
                    info!(stream = %name, session = %spec.id, "a new copy of the stream takes its players over")
                }
            }
            self.commands(commands);
            stream
        } else {
            self.registry
                .add_publisher(now, name, spec.id, core, tracks)?
        };
        self.registry.set_client(spec.id, client);
        spec.stream = stream;
        spec.publisher_core = Some(core);
        self.core(core, CoreCommand::AddSession(Box::new(spec)));
        Ok(stream)
    }

    /// An ingest publisher (RTMP) of `spec.stream_name`, with the tracks it sends, runs on
    /// `core` (its `spec.stream` is set here); the core hears of it after the registry, as a
    /// WebRTC publisher's does. Refused when the name is invalid or taken; an origin's RTMP
    /// relay takes an orphaned stream over as a WebRTC relay does
    /// ([`handle_publish`](Self::handle_publish)).
    pub fn handle_ingest(
        &mut self,
        now: Instant,
        core: CoreId,
        mut spec: IngestSpec,
        tracks: Vec<StreamTrack>,
        client: ClientInfo,
    ) -> Result<StreamId, RegistryError> {
        super::registry::validate_stream_name(&spec.stream_name)?;
        let name = &spec.stream_name;
        let stream = if client.relay && self.registry.is_orphaned(name) {
            let (stream, commands) = self
                .registry
                .adopt_or_publish(now, name, spec.id, core, tracks)?;
            info!(stream = %name, session = %spec.id, "a new RTMP copy of the stream takes its players over");
            self.commands(commands);
            stream
        } else {
            self.registry
                .add_publisher(now, name, spec.id, core, tracks)?
        };
        self.registry.set_client(spec.id, client);
        spec.stream = stream;
        self.core(core, CoreCommand::AddIngest(Box::new(spec)));
        Ok(stream)
    }

    /// An ingest's encoder sends a keyframe every `interval_ms` (for the control API: players
    /// of an RTMP stream wait up to that long for their first picture when the cache has none).
    pub fn handle_keyframe_interval(&mut self, id: SessionId, interval_ms: u32) {
        self.registry.set_keyframe_interval(id, interval_ms);
    }

    /// A negotiated player of `spec.stream_name`, presenting `acl_key`, runs on `core` (its
    /// `spec.stream` and `spec.publisher_core` are set here). Refused when the stream is gone,
    /// was replaced or its access list does not let the key in.
    pub fn handle_play(
        &mut self,
        now: Instant,
        core: CoreId,
        mut spec: SessionSpec,
        acl_key: Option<String>,
        client: ClientInfo,
    ) -> Result<(), PlayError> {
        let admitted =
            self.admit_player(now, &spec.stream_name, spec.id, Some(core), acl_key, client)?;
        spec.stream = admitted.stream;
        spec.publisher_core = Some(admitted.publisher_core);
        self.core(core, CoreCommand::AddSession(Box::new(spec)));
        Ok(())
    }

    /// Registers player `id` of stream `name` on `core` (`None`: on the publisher's core) when
    /// the stream's access list lets `acl_key` in, for [`handle_play`](Self::handle_play) and
    /// [`handle_egress`](Self::handle_egress).
    fn admit_player(
        &mut self,
        now: Instant,
        name: &str,
        id: SessionId,
        core: Option<CoreId>,
        acl_key: Option<String>,
        client: ClientInfo,
    ) -> Result<AdmittedPlayer, PlayError> {
        let stream = self
            .registry
            .stream(name)
            .ok_or_else(|| RegistryError::StreamNotFound(name.to_owned()))?;
        if !stream.acl_allows(acl_key.as_deref()) {
            return Err(PlayError::RestrictedAccess);
        }
        let (stream, publisher_core) = (stream.id, stream.core);
        let core = core.unwrap_or(publisher_core);
        let commands = self.registry.add_player(now, name, id, core)?;
        self.registry.set_acl_key(id, acl_key);
        self.registry.set_client(id, client);
        self.commands(commands);
        Ok(AdmittedPlayer {
            stream,
            publisher_core,
            core,
        })
    }

    /// A player that is not a WebRTC peer (RTMP) of `spec.stream_name`, presenting `acl_key`:
    /// registered as a player of the stream, like a WHEP player (counted, ended with its
    /// publisher, kicked by the control API), and tapping the stream at its publisher's core
    /// (returned; `spec.stream` is set here). Refused as [`ControlPlane::handle_play`] is.
    pub fn handle_egress(
        &mut self,
        now: Instant,
        mut spec: EgressSpec,
        acl_key: Option<String>,
        client: ClientInfo,
    ) -> Result<CoreId, PlayError> {
        // On the publisher's core: no core is attached for it.
        let admitted = self.admit_player(now, &spec.stream_name, spec.id, None, acl_key, client)?;
        spec.stream = admitted.stream;
        self.core(admitted.core, CoreCommand::AddEgress(Box::new(spec)));
        Ok(admitted.core)
    }

    /// What an egress (an RTMP player) sent its client so far, kept as a core's report of a
    /// session's traffic is: in the stream's totals, the console and the metrics.
    pub fn handle_egress_traffic(&mut self, id: SessionId, traffic: crate::session::Traffic) {
        self.registry.set_traffic(id, traffic);
    }

    /// A relay link's session to an edge, for the publication `spec.stream` of
    /// `spec.stream_name`: it runs on the publisher's core (returned), so the stream's packets
    /// reach it without crossing cores. Refused when that publication is gone.
    pub fn handle_relay_session(
        &mut self,
        now: Instant,
        mut spec: SessionSpec,
    ) -> Result<CoreId, RegistryError> {
        let name = spec.stream_name.clone();
        if self.registry.stream(&name).map(|s| s.id) != Some(spec.stream) {
            return Err(RegistryError::StreamNotFound(name));
        }
        let core = self.registry.add_relay(now, &name, spec.id)?;
        spec.publisher_core = Some(core);
        self.core(core, CoreCommand::AddSession(Box::new(spec)));
        Ok(core)
    }

    /// A relay link's tap on the publication `spec.stream` of `spec.stream_name` (an RTMP push
    /// to an edge): registered as a relay of the stream (ended with it, never subject to its
    /// access list) and tapping it at its publisher's core (returned). Refused when that
    /// publication is gone.
    pub fn handle_relay_egress(
        &mut self,
        now: Instant,
        spec: EgressSpec,
    ) -> Result<CoreId, RegistryError> {
        let name = spec.stream_name.clone();
        if self.registry.stream(&name).map(|s| s.id) != Some(spec.stream) {
            return Err(RegistryError::StreamNotFound(name));
        }
        let core = self.registry.add_relay(now, &name, spec.id)?;
        self.core(core, CoreCommand::AddEgress(Box::new(spec)));
        Ok(core)
    }

    /// A transcoder's tap on the stream `spec.stream_name` for its players (the RTMP players'
    /// AAC): registered as a transcoder of the stream, not a player (its players are counted
    /// and were checked against the access list), and tapping it at its publisher's core
    /// (returned; `spec.stream` is set here).
    pub fn handle_transcoder_egress(
        &mut self,
        now: Instant,
        mut spec: EgressSpec,
    ) -> Result<CoreId, RegistryError> {
        let name = spec.stream_name.clone();
        spec.stream = self
            .registry
            .stream(&name)
            .ok_or_else(|| RegistryError::StreamNotFound(name.clone()))?
            .id;
        let core = self.registry.add_transcoder(now, &name, spec.id)?;
        self.core(core, CoreCommand::AddEgress(Box::new(spec)));
        Ok(core)
    }

    /// The cluster node `edge` pulls the stream `name` (a dynamic CDN, issue 14): it is relayed
    /// there once its media flows, until the node releases it or the stream ends.
    ///
    /// Tiers are origin → transit → edge, and only a `transit` node relays a copy it received
    /// (one it pulled from the owner itself), and may be asked for a stream before its copy
    /// has arrived. Any other node relays only what its own publisher sends: a copy there is
    /// refused as not found. So a relay never goes down more than two hops and pulls never loop.
    pub fn handle_pull_requested(
        &mut self,
        now: Instant,
        name: &str,
        edge: EdgeId,
        transit: bool,
    ) -> Result<(), RegistryError> {
        let not_found = || RegistryError::StreamNotFound(name.to_owned());
        match self.registry.stream(name) {
            Some(stream) => {
                if self.registry.is_copy(stream) && !transit {
                    return Err(not_found());
                }
            }
            None if transit => {}
            None => return Err(not_found()),
        }
        self.relays.handle_pull_requested(now, name, edge);
        self.pump_relays(now);
        Ok(())
    }

    /// The cluster node `edge` no longer pulls `name`: its relay stops.
    pub fn handle_pull_released(&mut self, now: Instant, name: &str, edge: EdgeId) {
        self.relays.handle_pull_released(now, name, edge);
        self.pump_relays(now);
    }

    /// A session was given a WHIP/WHEP resource URL ending in `secret`.
    pub fn handle_resource_created(&mut self, id: SessionId, secret: ResourceSecret) {
        self.registry.set_resource(id, secret);
    }

    /// Ends a session for `reason` (its client deleted it, an administrator terminated it):
    /// a publisher takes its players and relays with it. Returns false when it is unknown.
    pub fn handle_end_session(&mut self, now: Instant, id: SessionId, reason: EndReason) -> bool {
        self.end_session(now, id, reason)
    }

    /// Changes a live stream's access list: players whose key it no longer holds are ended
    /// with [`EndReason::RestrictedAccess`], and the relays pass the new list to the edges,
    /// which do the same.
    pub fn handle_acl_change(
        &mut self,
        now: Instant,
        name: &str,
        change: AclChange,
    ) -> Result<AclChanged, RegistryError> {
        let (keys, refused) = self.registry.change_acl(name, change)?;
        let ended = refused.len();
        for id in refused {
            self.end_session(now, id, EndReason::RestrictedAccess);
        }
        self.relays.handle_acl_changed(name, &keys);
        self.pump_relays(now);
        Ok(AclChanged { keys, ended })
    }

    /// What a media core reports: a session connected (its watcher hears), a publisher's media
    /// flows (its stream is relayed to every edge), a session ended (a publisher's players and
    /// relays end with it, its stream's relays stop), a session's bitrates (kept).
    pub fn handle_core_event(&mut self, now: Instant, event: &CoreEvent) {
        match event {
            CoreEvent::SessionConnected { id } => {
                self.registry.set_connected(*id);
                self.status(*id, SessionStatus::Connected);
            }
            CoreEvent::MediaStarted { id } => {
                self.registry.set_media_flowing(*id);
                let published = self
                    .registry
                    .session(*id)
                    .filter(|s| s.kind == SessionKind::Publisher)
                    .and_then(|s| self.registry.stream(&s.stream_name))
                    .filter(|stream| stream.publisher == *id)
                    .map(|stream| (stream.name.clone(), stream.id));
                self.status(*id, SessionStatus::MediaFlowing);
                if let Some((name, stream)) = published {
                    self.relays.handle_stream_published(now, &name, stream);
                    self.pump_relays(now);
                }
            }
            CoreEvent::SessionEnded { id, reason } => {
                let commands = if self.orphan(now, *id, reason) {
                    Vec::new()
                } else {
                    self.registry.remove_session(*id, reason)
                };
                self.status(*id, SessionStatus::Ended(reason.clone()));
                self.commands(commands);
                self.stop_unpublished(now);
            }
            CoreEvent::Bitrates {
                id,
                estimate_bps,
                received_bps,
                layer,
                loss_fraction,
                video_size,
                traffic,
            } => {
                if let Some(bps) = estimate_bps.or(*received_bps) {
                    self.registry.set_bitrate(*id, bps);
                }
                self.registry.set_traffic(*id, *traffic);
                self.registry.set_quality(*id, *loss_fraction, *video_size);
                if let Some(layer) = layer {
                    self.registry.set_layer(*id, *layer);
                }
            }
        }
    }

    /// `attempt`'s relay session to its edge connected.
    pub fn handle_relay_up(&mut self, now: Instant, attempt: AttemptId) {
        self.relays.handle_relay_up(now, attempt);
    }

    /// `attempt`'s relay session connected over `path`.
    pub fn handle_relay_path(&mut self, attempt: AttemptId, path: RelayPath) {
        self.relays.handle_relay_path(attempt, path);
    }

    /// `attempt` ended. Returns where its relay stands now (a failure backs off, to be tried
    /// again), or `None` when the planner had moved on from it (its stream was unpublished or
    /// published anew).
    pub fn handle_relay_ended(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        end: &RelayEnd,
    ) -> Option<RelayState> {
        let (stream, edge) = self
            .relays
            .relay_of(attempt)
            .map(|(stream, edge)| (stream.to_owned(), edge))?;
        self.relays.handle_relay_ended(now, attempt, end);
        self.pump_relays(now);
        self.relays.state(&stream, edge)
    }

    /// Does what is due at `now`: relays whose backoff is over start again; orphaned streams
    /// that no new copy took over end.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self.registry.expire_orphans(now);
        if !expired.is_empty() {
            info!(
                sessions = expired.len(),
                "no new copy of an orphaned stream came within {ORPHAN_GRACE:?}: its sessions end"
            );
        }
        self.commands(expired);
        self.stop_unpublished(now);
        self.relays.handle_timeout(now);
        self.pump_relays(now);
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<ControlAction> {
        self.actions.pop_front()
    }

    /// When [`ControlPlane::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (
            self.relays.poll_timeout(),
            self.registry.next_orphan_expiry(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Keeps the players and relays of a relayed publisher that lost its source (see
    /// [`Registry::orphan`]); false when the session ends as usual.
    fn orphan(&mut self, now: Instant, id: SessionId, reason: &EndReason) -> bool {
        let stream = self.registry.session(id).map(|s| s.stream_name.clone());
        if !self.registry.orphan(now, id, reason) {
            return false;
        }
        info!(
            stream = stream.as_deref().unwrap_or("-"),
            session = %id,
            %reason,
            "a relayed stream lost its source: its players wait up to {ORPHAN_GRACE:?} for a new copy"
        );
        true
    }

    /// Ends a session: its watcher hears why first, then its core removes it; a publisher's
    /// players and relays end with it, and its stream's relays stop.
    fn end_session(&mut self, now: Instant, id: SessionId, reason: EndReason) -> bool {
        if let Some(core) = self.registry.session(id).map(|s| s.core) {
            if self.orphan(now, id, &reason) {
                self.commands(vec![(core, CoreCommand::RemoveSession { id, reason })]);
                return true;
            }
        }
        let commands = self.registry.end_session(id, reason);
        let known = !commands.is_empty();
        self.commands(commands);
        self.stop_unpublished(now);
        known
    }

    /// The registry's commands, in order; a session the node ends is reported to its watcher
    /// before its core hears.
    fn commands(&mut self, commands: Vec<(CoreId, CoreCommand)>) {
        for (core, command) in commands {
            if let CoreCommand::RemoveSession { id, reason } = &command {
                self.status(*id, SessionStatus::Ended(reason.clone()));
            }
            self.core(core, command);
        }
    }

    /// Every stream the registry removed stops being relayed.
    fn stop_unpublished(&mut self, now: Instant) {
        for (name, id) in self.registry.take_unpublished() {
            self.relays.handle_stream_unpublished(now, &name, id);
        }
        self.pump_relays(now);
    }

    /// The planner's actions as orders for the relay transport: a start carries the stream as
    /// the registry has it.
    fn pump_relays(&mut self, now: Instant) {
        while let Some(action) = self.relays.poll_action() {
            let order = match action {
                RelayAction::Start {
                    attempt,
                    stream,
                    stream_id,
                    edge,
                } => {
                    let relayed = self
                        .registry
                        .stream(&stream)
                        .filter(|s| s.id == stream_id)
                        .map(|s| RelayedStream {
                            id: s.id,
                            tracks: s.tracks.clone(),
                            acl: s.acl.clone(),
                        });
                    let Some(relayed) = relayed else {
                        // Cannot happen while the planner hears of every unpublish; if it
                        // did, the relay waits for the stream.
                        self.relays
                            .handle_relay_ended(now, attempt, &RelayEnd::StreamGone);
                        continue;
                    };
                    RelayOrder::Start {
                        attempt,
                        edge,
                        stream,
                        relayed,
                    }
                }
                RelayAction::Stop { attempt } => RelayOrder::Stop { attempt },
                RelayAction::PassAcl { attempt, keys } => RelayOrder::PassAcl { attempt, keys },
            };
            self.actions.push_back(ControlAction::Relay(order));
        }
    }

    fn core(&mut self, core: CoreId, command: CoreCommand) {
        self.actions
            .push_back(ControlAction::Core { core, command });
    }

    fn status(&mut self, session: SessionId, status: SessionStatus) {
        self.actions
            .push_back(ControlAction::Status { session, status });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::control::registry::tests::track;
    use crate::control::relay_planner::RelayFailure;
    use crate::control::SessionRole;
    use crate::dtls::DtlsRole;

    const A: EdgeId = EdgeId(1);
    const B: EdgeId = EdgeId(2);
    const PUBLISHER: SessionId = SessionId(1);

    fn plane(edges: &[EdgeId]) -> ControlPlane<StdRng> {
        ControlPlane::new(
            2,
            edges.to_vec(),
            RetryPolicy::default(),
            StdRng::seed_from_u64(1),
        )
    }

    fn spec(id: SessionId, stream: &str, role: SessionRole) -> SessionSpec {
        let credentials = || ice::IceCredentials {
            ufrag: "u".into(),
            pwd: "p".into(),
        };
        SessionSpec {
            id,
            stream: StreamId(0),
            stream_name: stream.into(),
            role,
            local_ice: credentials(),
            remote_ice: credentials(),
            remote_fingerprint: [0; 32],
            dtls_role: DtlsRole::Server,
            publisher_core: None,
        }
    }

    fn publisher(id: SessionId, stream: &str) -> SessionSpec {
        spec(id, stream, SessionRole::Publisher { tracks: vec![] })
    }

    fn player(id: SessionId, stream: &str) -> SessionSpec {
        spec(id, stream, SessionRole::Player { tracks: vec![] })
    }

    fn actions(plane: &mut ControlPlane<StdRng>) -> Vec<ControlAction> {
        std::iter::from_fn(|| plane.poll_action()).collect()
    }

    fn started(actions: &[ControlAction]) -> Vec<(EdgeId, AttemptId)> {
        actions
            .iter()
            .filter_map(|a| match a {
                ControlAction::Relay(RelayOrder::Start { edge, attempt, .. }) => {
                    Some((*edge, *attempt))
                }
                _ => None,
            })
            .collect()
    }

    fn stopped(actions: &[ControlAction]) -> Vec<AttemptId> {
        actions
            .iter()
            .filter_map(|a| match a {
                ControlAction::Relay(RelayOrder::Stop { attempt }) => Some(*attempt),
                _ => None,
            })
            .collect()
    }

    /// The sessions removed from their cores, with their reasons, in order.
    fn removed(actions: &[ControlAction]) -> Vec<(SessionId, EndReason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                ControlAction::Core {
                    command: CoreCommand::RemoveSession { id, reason },
                    ..
                } => Some((*id, reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// The Ended statuses, in order.
    fn ended(actions: &[ControlAction]) -> Vec<(SessionId, EndReason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                ControlAction::Status {
                    session,
                    status: SessionStatus::Ended(reason),
                } => Some((*session, reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Publishes `cam` on core 0 and lets its media flow; returns the actions that followed.
    fn publish_cam(plane: &mut ControlPlane<StdRng>, now: Instant) -> Vec<ControlAction> {
        plane
            .handle_publish_requested(now, "cam", false, false)
            .unwrap();
        plane
            .handle_publish(
                now,
                CoreId(0),
                publisher(PUBLISHER, "cam"),
                track(),
                ClientInfo::default(),
            )
            .unwrap();
        plane.handle_core_event(now, &CoreEvent::SessionConnected { id: PUBLISHER });
        plane.handle_core_event(now, &CoreEvent::MediaStarted { id: PUBLISHER });
        actions(plane)
    }

    #[test]
    fn a_relayed_copy_that_lost_its_source_hands_its_players_to_the_next_copy() {
        let t0 = Instant::now();
        let mut plane = plane(&[]);
        let relay = || ClientInfo {
            relay: true,
            ..ClientInfo::default()
        };
        let stream = plane
            .handle_publish(t0, CoreId(0), publisher(PUBLISHER, "cam"), track(), relay())
            .unwrap();
        let viewer = SessionId(2);
        plane
            .handle_play(
                t0,
                CoreId(1),
                player(viewer, "cam"),
                None,
                ClientInfo::default(),
            )
            .unwrap();
        actions(&mut plane);
        // The origin's node died: its relay's connection closed without an unpublish.
        assert!(plane.handle_end_session(t0, PUBLISHER, EndReason::SourceLost));
        let lost = actions(&mut plane);
        assert_eq!(removed(&lost), [(PUBLISHER, EndReason::SourceLost)]);
        assert_eq!(plane.poll_timeout(), Some(t0 + ORPHAN_GRACE));
        // The publisher published again elsewhere, and that node's relay arrives.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            plane.handle_publish_requested(t1, "cam", true, true),
            Ok(None)
        );
        assert_eq!(
            plane.handle_publish_requested(t1, "cam", true, false),
            Err(RegistryError::NameInUse("cam".into())),
            "only a relay takes an orphan over"
        );
        let next = SessionId(7);
        assert_eq!(plane.registry().core_for_publisher("cam"), CoreId(0));
        let adopted = plane
            .handle_publish(t1, CoreId(0), publisher(next, "cam"), track(), relay())
            .unwrap();
        assert_eq!(adopted, stream, "the same stream: its players' routes stay");
        let taken_over = actions(&mut plane);
        assert!(ended(&taken_over).is_empty(), "{taken_over:?}");
        assert!(taken_over.iter().any(|a| matches!(
            a,
            ControlAction::Core {
                core: CoreId(0),
                command: CoreCommand::AttachCore {
                    core: CoreId(1),
                    ..
                }
            }
        )));
        assert!(taken_over.iter().any(|a| matches!(
            a,
            ControlAction::Core { core: CoreId(0), command: CoreCommand::AddSession(spec) }
                if spec.id == next && spec.stream == stream
        )));
        assert_eq!(plane.poll_timeout(), None);
        // Another copy arrives before this one connected (the old owner's relay came back as
        // the new owner's did): it supersedes it and takes the players over in turn.
        let third = SessionId(8);
        assert_eq!(
            plane.handle_publish_requested(t1, "cam", true, true),
            Ok(Some(next))
        );
        let superseded = actions(&mut plane);
        assert_eq!(removed(&superseded), [(next, EndReason::Superseded)]);
        assert_eq!(
            plane
                .handle_publish(t1, CoreId(0), publisher(third, "cam"), track(), relay())
                .unwrap(),
            stream
        );
        assert!(ended(&actions(&mut plane)).is_empty());
        let next = third;
        // It connects and plays; lost in turn, and nothing comes: the players end when a new
        // grace is over.
        plane.handle_core_event(t1, &CoreEvent::SessionConnected { id: next });
        plane.handle_core_event(
            t1,
            &CoreEvent::SessionEnded {
                id: next,
                reason: EndReason::ConsentExpired,
            },
        );
        assert!(removed(&actions(&mut plane)).is_empty());
        plane.handle_timeout(t1 + ORPHAN_GRACE - Duration::from_millis(1));
        assert!(ended(&actions(&mut plane)).is_empty());
        plane.handle_timeout(t1 + ORPHAN_GRACE);
        assert_eq!(
            ended(&actions(&mut plane)),
            [(viewer, EndReason::PublisherLeft)]
        );
        assert!(plane.registry().stream("cam").is_none());
    }

    #[test]
    fn a_publish_is_placed_on_its_core_and_relayed_to_each_edge_once_media_flows() {
        let now = Instant::now();
        let mut plane = plane(&[A, B]);
        plane
            .handle_publish_requested(now, "cam", false, false)
            .unwrap();
        let stream = plane
            .handle_publish(
                now,
                CoreId(1),
                publisher(PUBLISHER, "cam"),
                track(),
                ClientInfo::default(),
            )
            .unwrap();
        let placed = actions(&mut plane);
        assert!(matches!(
            &placed[..],
            [ControlAction::Core { core: CoreId(1), command: CoreCommand::AddSession(spec) }]
                if spec.stream == stream && spec.publisher_core == Some(CoreId(1))
        ));
        // Nothing is relayed before the media flows.
        plane.handle_core_event(now, &CoreEvent::SessionConnected { id: PUBLISHER });
        assert!(matches!(
            &actions(&mut plane)[..],
            [ControlAction::Status {
                session: PUBLISHER,
                status: SessionStatus::Connected
            }]
        ));
        plane.handle_core_event(now, &CoreEvent::MediaStarted { id: PUBLISHER });
        let flowing = actions(&mut plane);
        assert!(matches!(
            flowing[0],
            ControlAction::Status {
                session: PUBLISHER,
                status: SessionStatus::MediaFlowing
            }
        ));
        let edges: Vec<EdgeId> = started(&flowing).iter().map(|(e, _)| *e).collect();
        assert_eq!(edges, [A, B]);
        for action in &flowing[1..] {
            let ControlAction::Relay(RelayOrder::Start {
                stream: name,
                relayed,
                ..
            }) = action
            else {
                panic!("{action:?}");
            };
            assert_eq!(name, "cam");
            assert_eq!(relayed.id, stream);
            assert_eq!(relayed.tracks.len(), 1);
        }
        assert_eq!(plane.poll_timeout(), None);
    }

    #[test]
    fn unpublishing_ends_the_relays_and_the_players_with_the_publishers_reason() {
        let now = Instant::now();
        let mut plane = plane(&[A]);
        let attempts = started(&publish_cam(&mut plane, now));
        let (watcher, viewer) = (SessionId(2), SessionId(3));
        for (id, core) in [(watcher, CoreId(0)), (viewer, CoreId(1))] {
            plane
                .handle_play(now, core, player(id, "cam"), None, ClientInfo::default())
                .unwrap();
        }
        let relay = SessionId(4);
        let mut relay_spec = spec(
            relay,
            "cam",
            SessionRole::Relay {
                tracks: vec![],
                remote_candidates: vec![],
                path: crate::control::RelayPath::Udp,
                layers: None,
            },
        );
        relay_spec.stream = plane.registry().stream("cam").unwrap().id;
        assert_eq!(plane.handle_relay_session(now, relay_spec), Ok(CoreId(0)));
        plane.handle_relay_up(now, attempts[0].1);
        actions(&mut plane);

        plane.handle_core_event(
            now,
            &CoreEvent::SessionEnded {
                id: PUBLISHER,
                reason: EndReason::DtlsClosed,
            },
        );
        let after = actions(&mut plane);
        let left = EndReason::PublisherLeft;
        assert_eq!(
            ended(&after),
            [
                (PUBLISHER, EndReason::DtlsClosed),
                (watcher, left.clone()),
                (viewer, left.clone()),
                (relay, left.clone()),
            ]
        );
        assert_eq!(
            removed(&after),
            [
                (watcher, left.clone()),
                (viewer, left.clone()),
                (relay, left)
            ]
        );
        assert_eq!(stopped(&after), [attempts[0].1]);
        assert!(plane.registry().stream("cam").is_none());
        // The link's late report changes nothing, and nothing is retried.
        let end = RelayEnd::Failed(RelayFailure::Session(EndReason::PublisherLeft));
        assert_eq!(plane.handle_relay_ended(now, attempts[0].1, &end), None);
        assert!(actions(&mut plane).is_empty());
        assert_eq!(plane.poll_timeout(), None);
    }

    #[test]
    fn an_edge_failure_backs_off_and_is_retried_when_the_delay_is_over() {
        let mut now = Instant::now();
        let mut plane = plane(&[A, B]);
        let attempts = started(&publish_cam(&mut plane, now));
        plane.handle_relay_up(now, attempts[1].1);
        now += Duration::from_secs(1);
        let failure = RelayEnd::Failed(RelayFailure::Link("connection refused".into()));
        let state = plane.handle_relay_ended(now, attempts[0].1, &failure);
        let until = plane.poll_timeout().expect("a retry is planned");
        assert_eq!(state, Some(RelayState::Backoff { until }));
        assert!(until > now && until <= now + RetryPolicy::default().first_delay);
        assert!(actions(&mut plane).is_empty(), "nothing until the delay");
        plane.handle_timeout(until - Duration::from_millis(1));
        assert!(actions(&mut plane).is_empty());
        plane.handle_timeout(until);
        let retried = started(&actions(&mut plane));
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].0, A);
        assert_ne!(retried[0].1, attempts[0].1);
        assert_eq!(
            plane.relay_state("cam", A),
            Some(RelayState::Connecting {
                attempt: retried[0].1
            })
        );
        // The edge that stayed up is left alone.
        assert!(matches!(
            plane.relay_state("cam", B),
            Some(RelayState::Up { .. })
        ));
        assert_eq!(plane.poll_timeout(), None);
    }

    #[test]
    fn an_ingest_is_registered_before_its_core_hears_of_it_and_refused_on_a_taken_name() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        let ingest = |id, name: &str| IngestSpec {
            id,
            stream: StreamId(0),
            stream_name: name.into(),
            feed: crate::media::ingest_channel(4).1,
            video_codec: rtp::VideoCodec::H264,
        };
        let stream = plane
            .handle_ingest(
                now,
                CoreId(1),
                ingest(PUBLISHER, "cam"),
                track(),
                ClientInfo::default(),
            )
            .unwrap();
        assert_eq!(
            plane.registry().stream("cam").map(|s| s.publisher),
            Some(PUBLISHER)
        );
        match actions(&mut plane).as_slice() {
            [ControlAction::Core {
                core: CoreId(1),
                command: CoreCommand::AddIngest(spec),
            }] => assert_eq!((spec.id, spec.stream), (PUBLISHER, stream)),
            other => panic!("{other:?}"),
        }
        // A WebRTC publisher or another ingest of the live name is refused, and so is a bad name.
        let taken = Err(RegistryError::NameInUse("cam".into()));
        assert_eq!(
            plane.handle_publish_requested(now, "cam", false, false),
            taken.clone().map(|_: ()| None)
        );
        assert_eq!(
            plane.handle_ingest(
                now,
                CoreId(0),
                ingest(SessionId(2), "cam"),
                track(),
                ClientInfo::default()
            ),
            taken.map(|_: ()| stream)
        );
        assert!(plane
            .handle_ingest(
                now,
                CoreId(0),
                ingest(SessionId(3), "a/b"),
                track(),
                ClientInfo::default()
            )
            .is_err());
        assert!(actions(&mut plane).is_empty());
    }

    #[test]
    fn an_egress_is_a_player_on_the_publishers_core_and_ends_with_its_publisher() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        let egress = |id, name: &str| EgressSpec {
            id,
            stream: StreamId(0),
            stream_name: name.into(),
            layer: 0,
            audio: false,
            tap: crate::media::egress_channel(4).0,
        };
        let ingest = IngestSpec {
            id: PUBLISHER,
            stream: StreamId(0),
            stream_name: "cam".into(),
            feed: crate::media::ingest_channel(4).1,
            video_codec: rtp::VideoCodec::H264,
        };
        let stream = plane
            .handle_ingest(now, CoreId(1), ingest, track(), ClientInfo::default())
            .unwrap();
        actions(&mut plane);
        assert!(matches!(
            plane.handle_egress(
                now,
                egress(SessionId(5), "nope"),
                None,
                ClientInfo::default()
            ),
            Err(PlayError::Registry(RegistryError::StreamNotFound(_)))
        ));
        // A stream with an access list wants one of its keys, as from a WHEP player.
        plane
            .handle_acl_change(now, "cam", AclChange::Add(vec!["k1".into()]))
            .unwrap();
        actions(&mut plane);
        assert!(matches!(
            plane.handle_egress(
                now,
                egress(SessionId(5), "cam"),
                None,
                ClientInfo::default()
            ),
            Err(PlayError::RestrictedAccess)
        ));
        let core = plane
            .handle_egress(
                now,
                egress(SessionId(5), "cam"),
                Some("k1".into()),
                ClientInfo::default(),
            )
            .unwrap();
        assert_eq!(core, CoreId(1));
        match actions(&mut plane).as_slice() {
            [ControlAction::Core {
                core: CoreId(1),
                command: CoreCommand::AddEgress(spec),
            }] => assert_eq!((spec.id, spec.stream), (SessionId(5), stream)),
            other => panic!("{other:?}"),
        }
        let players = |plane: &ControlPlane<StdRng>| {
            plane.registry().stream("cam").map(|s| s.players.clone())
        };
        assert_eq!(players(&plane), Some(vec![(SessionId(5), CoreId(1))]));
        // The publisher stops: the egress is told why and its core removes it.
        plane.handle_end_session(now, PUBLISHER, EndReason::Deleted);
        let ended = actions(&mut plane);
        assert!(ended.iter().any(|a| matches!(
            a,
            ControlAction::Status {
                session: SessionId(5),
                status: SessionStatus::Ended(EndReason::PublisherLeft)
            }
        )));
        assert!(ended.iter().any(|a| matches!(
            a,
            ControlAction::Core {
                core: CoreId(1),
                command: CoreCommand::RemoveSession {
                    id: SessionId(5),
                    ..
                }
            }
        )));
    }

    #[test]
    fn a_relay_egress_taps_its_publication_past_the_access_list_and_ends_with_it() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        let ingest = IngestSpec {
            id: PUBLISHER,
            stream: StreamId(0),
            stream_name: "cam".into(),
            feed: crate::media::ingest_channel(4).1,
            video_codec: rtp::VideoCodec::H264,
        };
        let stream = plane
            .handle_ingest(now, CoreId(1), ingest, track(), ClientInfo::default())
            .unwrap();
        plane
            .handle_acl_change(now, "cam", AclChange::Add(vec!["k1".into()]))
            .unwrap();
        actions(&mut plane);
        let tap = |id, stream| EgressSpec {
            id,
            stream,
            stream_name: "cam".into(),
            layer: 0,
            audio: true,
            tap: crate::media::egress_channel(4).0,
        };
        // Another publication of the name (this one ended, a new one began) is not tapped.
        assert!(plane
            .handle_relay_egress(now, tap(SessionId(6), StreamId(stream.0 + 1)))
            .is_err());
        assert_eq!(
            plane.handle_relay_egress(now, tap(SessionId(7), stream)),
            Ok(CoreId(1))
        );
        assert!(matches!(
            actions(&mut plane).as_slice(),
            [ControlAction::Core { core: CoreId(1), command: CoreCommand::AddEgress(spec) }]
                if spec.id == SessionId(7) && spec.audio
        ));
        let stream_entry = plane.registry().stream("cam").unwrap();
        assert_eq!(stream_entry.relays, vec![SessionId(7)]);
        assert!(stream_entry.players.is_empty());
        plane.handle_end_session(now, PUBLISHER, EndReason::Deleted);
        assert!(actions(&mut plane).iter().any(|a| matches!(
            a,
            ControlAction::Core {
                command: CoreCommand::RemoveSession {
                    id: SessionId(7),
                    ..
                },
                ..
            }
        )));
    }

    #[test]
    fn a_transcoder_egress_is_neither_a_player_nor_held_to_the_access_list() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        let ingest = IngestSpec {
            id: PUBLISHER,
            stream: StreamId(0),
            stream_name: "cam".into(),
            feed: crate::media::ingest_channel(4).1,
            video_codec: rtp::VideoCodec::H264,
        };
        let stream = plane
            .handle_ingest(now, CoreId(1), ingest, track(), ClientInfo::default())
            .unwrap();
        plane
            .handle_acl_change(now, "cam", AclChange::Add(vec!["k1".into()]))
            .unwrap();
        actions(&mut plane);
        let tap = |stream_name: &str| EgressSpec {
            id: SessionId(7),
            stream: StreamId(0),
            stream_name: stream_name.into(),
            layer: 0,
            audio: true,
            tap: crate::media::egress_channel(4).0,
        };
        assert!(plane.handle_transcoder_egress(now, tap("other")).is_err());
        assert_eq!(
            plane.handle_transcoder_egress(now, tap("cam")),
            Ok(CoreId(1))
        );
        assert!(matches!(
            actions(&mut plane).as_slice(),
            [ControlAction::Core { core: CoreId(1), command: CoreCommand::AddEgress(spec) }]
                if spec.id == SessionId(7) && spec.stream == stream
        ));
        let entry = plane.registry().stream("cam").unwrap();
        assert!(entry.players.is_empty() && entry.relays.is_empty());
        // A new access list ends players without its key, not the transcoder.
        let changed = plane
            .handle_acl_change(now, "cam", AclChange::Set(vec!["k2".into()]))
            .unwrap();
        assert_eq!(changed.ended, 0);
        assert!(plane.registry().session(SessionId(7)).is_some());
    }

    #[test]
    fn a_second_publisher_of_a_taken_name_is_refused_unless_it_supersedes_an_unconnected_one() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        plane
            .handle_publish_requested(now, "cam", false, false)
            .unwrap();
        plane
            .handle_publish(
                now,
                CoreId(0),
                publisher(PUBLISHER, "cam"),
                track(),
                ClientInfo::default(),
            )
            .unwrap();
        actions(&mut plane);
        let taken = Err(RegistryError::NameInUse("cam".into()));
        assert_eq!(
            plane.handle_publish_requested(now, "cam", false, false),
            taken
        );
        // Even if it got past the request, the publish itself is refused.
        let second = SessionId(2);
        assert_eq!(
            plane
                .handle_publish(
                    now,
                    CoreId(1),
                    publisher(second, "cam"),
                    track(),
                    ClientInfo::default()
                )
                .map(|_| None),
            taken.clone()
        );
        assert!(actions(&mut plane).is_empty());
        assert!(plane
            .handle_publish_requested(now, "a b", false, false)
            .is_err());

        // An authorized publisher takes the name from one that never connected...
        assert_eq!(
            plane.handle_publish_requested(now, "cam", true, false),
            Ok(Some(PUBLISHER))
        );
        assert_eq!(
            removed(&actions(&mut plane)),
            [(PUBLISHER, EndReason::Superseded)]
        );
        // ...but not from one that did.
        plane
            .handle_publish(
                now,
                CoreId(1),
                publisher(second, "cam"),
                track(),
                ClientInfo::default(),
            )
            .unwrap();
        plane.handle_core_event(now, &CoreEvent::SessionConnected { id: second });
        actions(&mut plane);
        assert_eq!(
            plane.handle_publish_requested(now, "cam", true, false),
            taken
        );
        assert!(actions(&mut plane).is_empty());
    }

    #[test]
    fn an_acl_change_ends_the_players_it_refuses_and_reaches_the_relays() {
        let now = Instant::now();
        let mut plane = plane(&[A]);
        let attempts = started(&publish_cam(&mut plane, now));
        plane.handle_relay_up(now, attempts[0].1);
        let keyed = [(SessionId(2), Some("k1")), (SessionId(3), Some("k2"))];
        for (id, key) in keyed.into_iter().chain([(SessionId(4), None)]) {
            plane
                .handle_play(
                    now,
                    CoreId(0),
                    player(id, "cam"),
                    key.map(str::to_owned),
                    ClientInfo::default(),
                )
                .unwrap();
        }
        actions(&mut plane);
        let changed = plane
            .handle_acl_change(now, "cam", AclChange::Add(vec!["k1".into()]))
            .unwrap();
        assert_eq!(
            changed,
            AclChanged {
                keys: vec!["k1".into()],
                ended: 2
            }
        );
        let after = actions(&mut plane);
        let refused = [
            (SessionId(3), EndReason::RestrictedAccess),
            (SessionId(4), EndReason::RestrictedAccess),
        ];
        let mut ended_now = ended(&after);
        ended_now.sort_by_key(|(id, _)| *id);
        assert_eq!(ended_now, refused);
        let mut removed_now = removed(&after);
        removed_now.sort_by_key(|(id, _)| *id);
        assert_eq!(removed_now, refused);
        assert!(matches!(
            after.last(),
            Some(ControlAction::Relay(RelayOrder::PassAcl { attempt, keys }))
                if *attempt == attempts[0].1 && keys == &["k1".to_owned()]
        ));
        // A new player needs a listed key.
        assert_eq!(
            plane.handle_play(
                now,
                CoreId(0),
                player(SessionId(5), "cam"),
                Some("k2".into()),
                ClientInfo::default()
            ),
            Err(PlayError::RestrictedAccess)
        );
        assert_eq!(
            plane.handle_play(
                now,
                CoreId(0),
                player(SessionId(6), "gone"),
                None,
                ClientInfo::default()
            ),
            Err(PlayError::Registry(RegistryError::StreamNotFound(
                "gone".into()
            )))
        );
        assert!(actions(&mut plane).is_empty());
        assert!(plane
            .handle_acl_change(now, "gone", AclChange::Clear)
            .is_err());
    }

    #[test]
    fn a_client_ending_its_session_is_told_and_its_core_removes_it() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        publish_cam(&mut plane, now);
        let viewer = SessionId(2);
        plane
            .handle_play(
                now,
                CoreId(1),
                player(viewer, "cam"),
                None,
                ClientInfo::default(),
            )
            .unwrap();
        let played = actions(&mut plane);
        // The publisher's core starts handing the stream to the player's core.
        assert!(matches!(
            played[0],
            ControlAction::Core {
                core: CoreId(0),
                command: CoreCommand::AttachCore {
                    core: CoreId(1),
                    ..
                }
            }
        ));
        assert!(plane.handle_end_session(now, viewer, EndReason::Deleted));
        let after = actions(&mut plane);
        assert_eq!(removed(&after), [(viewer, EndReason::Deleted)]);
        assert!(after.iter().any(|a| matches!(
            a,
            ControlAction::Core {
                command: CoreCommand::DetachCore {
                    core: CoreId(1),
                    ..
                },
                ..
            }
        )));
        assert!(!plane.handle_end_session(now, viewer, EndReason::Deleted));
    }

    /// A copy of the stream "copy" relayed to this node: its publisher (a relay) connects and
    /// its media flows.
    fn publish_copy(plane: &mut ControlPlane<StdRng>, now: Instant) -> Vec<ControlAction> {
        let relayed = SessionId(7);
        plane
            .handle_publish_requested(now, "copy", true, false)
            .unwrap();
        let client = ClientInfo {
            relay: true,
            ..ClientInfo::default()
        };
        plane
            .handle_publish(now, CoreId(0), publisher(relayed, "copy"), track(), client)
            .unwrap();
        plane.handle_core_event(now, &CoreEvent::SessionConnected { id: relayed });
        plane.handle_core_event(now, &CoreEvent::MediaStarted { id: relayed });
        actions(plane)
    }

    #[test]
    fn a_pull_of_a_local_publish_is_relayed_and_released_but_a_relayed_copy_is_never_pulled() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        assert_eq!(
            plane.handle_pull_requested(now, "cam", B, false),
            Err(RegistryError::StreamNotFound("cam".into()))
        );
        publish_cam(&mut plane, now);
        plane.handle_pull_requested(now, "cam", B, false).unwrap();
        let pulled = started(&actions(&mut plane));
        assert_eq!(pulled.iter().map(|s| s.0).collect::<Vec<_>>(), [B]);
        plane.handle_pull_released(now, "cam", B);
        assert_eq!(stopped(&actions(&mut plane)), [pulled[0].1]);

        // A copy relayed to this node (its publisher is a relay) is not relayed on.
        publish_copy(&mut plane, now);
        assert_eq!(
            plane.handle_pull_requested(now, "copy", A, false),
            Err(RegistryError::StreamNotFound("copy".into()))
        );
        assert!(actions(&mut plane).is_empty());
    }

    #[test]
    fn a_transit_node_takes_a_pull_before_its_copy_arrives_and_relays_the_copy() {
        let now = Instant::now();
        let mut plane = plane(&[]);
        plane.handle_pull_requested(now, "copy", A, true).unwrap();
        assert!(
            started(&actions(&mut plane)).is_empty(),
            "nothing to relay yet"
        );
        // The copy the transit node pulled from the owner arrives and its media flows.
        let pulled = started(&publish_copy(&mut plane, now));
        assert_eq!(pulled.iter().map(|s| s.0).collect::<Vec<_>>(), [A]);
        // A second edge of the group, once the copy is here.
        plane.handle_pull_requested(now, "copy", B, true).unwrap();
        let pulled = started(&actions(&mut plane));
        assert_eq!(pulled.iter().map(|s| s.0).collect::<Vec<_>>(), [B]);
    }
}
