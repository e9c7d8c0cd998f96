//! The signalling thread's HTTP listener, an IO edge of the node: WHIP (`/whip/{stream}`), WHEP
//! (`/whep/{stream}`), the Flashphoner WebSocket protocol ([`flashphoner`]), the REST and admin
//! endpoints, the built-in page, the operator console, the control API, `/api/stats` and
//! `/metrics`. Requests are negotiated here (with
//! the sans-IO `crate::negotiate` and `crate::sdp`); nothing on this thread touches media
//! packets.
//!
//! It holds the node's control plane (`crate::control::plane::ControlPlane`) behind one lock,
//! shared with the other transports: HTTP requests and WebSocket clients, the cores' events and
//! the CDN's relay links (through `relay_host`) feed it with [`Signalling::control`], which
//! carries out its actions before the lock is let go — commands to the cores, statuses to each
//! session's [`Watcher`] (frames for a WebSocket client, the typed status for a relay link),
//! relay orders to the CDN's [`Relays`]; [`drive_control_timers`] calls it at its deadlines. It
//! reads the registry, and decides nothing the plane decides.

mod control_api;
pub mod cors;
pub mod drain;
pub mod flashphoner;
pub mod ice_servers;
pub mod limits;
mod listener;
pub mod media;
mod metrics;
pub mod pull;
mod relay_host;
pub(crate) mod rest;
mod send_timeout;
mod whip;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, info};

use self::cors::Cors;
use self::limits::Limits;
use crate::auth::{Authorizer, Credentials, RelayAuth};
use crate::bwe::alarm::BandwidthAlarm;
use crate::cdn::balancer::{render_stat, Balancer};
use crate::cdn::cpu::CpuSampler;
use crate::cdn::relay::Relays;
use crate::config::cdn::CdnConfig;
use crate::config::HttpConfig;
use crate::control::plane::{ControlAction, ControlPlane};
use crate::control::registry::{AclChange, ClientInfo, Registry, RegistryError};
use crate::control::relay_planner::{EdgeId, RetryPolicy};
use crate::control::status::SessionStatus;
use crate::control::{CoreCommand, CoreEvent, EndReason, SessionId};
use crate::dtls::DtlsCertificate;
use crate::reactor::core::CoreStats;
use crate::reactor::io::{ResidenceHistogram, Waker};
use crate::wcs_protocol::frames::StreamDescription;

/// The largest request body accepted (an SDP offer is a few KiB).
const MAX_BODY: usize = 64 * 1024;
/// How long a WebSocket client's session that its peer closed cleanly (DTLS close_notify) waits
/// before it is reported FAILED: the SDK closes its peer connection right after sending
/// unPublishStream or stopStream, over another transport, so the close can overtake the request,
/// whose answer (UNPUBLISHED, STOPPED) is the one the page expects.
const CLEAN_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
const INDEX_HTML: &str = include_str!("../web/index.html");
/// The operator console: it reads the control API (`control_api`) with the admin token.
const CONSOLE_HTML: &str = include_str!("../web/console.html");

/// How signalling reaches a media core.
#[derive(Clone)]
pub struct CoreHandle {
    /// Command queue.
    pub commands: std::sync::mpsc::Sender<CoreCommand>,
    /// Wakes the core to read its queue.
    pub waker: Waker,
    /// Host candidates of this core: each announced address with the core's port.
    pub candidates: Vec<SocketAddr>,
    /// Passive ICE-TCP host candidates of this core (empty without `media.tcp`): each
    /// announced address with the core's TCP port.
    pub tcp_candidates: Vec<SocketAddr>,
    /// The core's counters.
    pub stats: Arc<CoreStats>,
}

impl CoreHandle {
    /// Sends a command and wakes the core.
    pub fn send(&self, command: CoreCommand) {
        if self.commands.send(command).is_ok() {
            self.waker.wake();
        }
    }
}

/// Who hears of a session's status changes.
pub enum Watcher {
    /// A WebSocket client: the statuses become its protocol's frames.
    Client(ClientWatcher),
    /// A transport that reads the typed statuses as they are: a CDN relay link.
    Typed(tokio::sync::mpsc::UnboundedSender<SessionStatus>),
}

/// A WebSocket client waiting for news of one of its sessions.
pub struct ClientWatcher {
    /// The client's frame queue.
    pub out: tokio::sync::mpsc::UnboundedSender<String>,
    /// How the client knows the stream.
    pub description: StreamDescription,
    /// WCS's `NOT_ENOUGH_BANDWIDTH` rule for a player.
    pub bandwidth: BandwidthAlarm,
}

impl Watcher {
    /// Tells the watcher of a status change.
    fn deliver(&self, status: &SessionStatus) {
        match self {
            Watcher::Client(client) => {
                if let Some(frame) = client.description.session_status_frame(status) {
                    let _ = client.out.send(frame);
                }
            }
            Watcher::Typed(out) => {
                let _ = out.send(status.clone());
            }
        }
    }

    /// The WebSocket client's view of the session, if a client watches it.
    fn client(&self) -> Option<&ClientWatcher> {
        match self {
            Watcher::Client(client) => Some(client),
            Watcher::Typed(_) => None,
        }
    }
}

/// The node's control plane as the transports share it.
pub type NodeControl = ControlPlane<StdRng>;

/// A read-only view of the registry, under the control plane's lock: transports read it
/// freely, and change it only through the plane's `handle_*` inputs
/// ([`Signalling::control`]).
pub(crate) struct RegistryView<'a>(MutexGuard<'a, NodeControl>);

impl std::ops::Deref for RegistryView<'_> {
    type Target = Registry;

    fn deref(&self) -> &Registry {
        self.0.registry()
    }
}

/// State shared by all requests.
pub struct Signalling {
    /// The control plane: registry and relay planner. One lock shared by every transport (HTTP
    /// requests, WebSocket clients, the core events, the relay links), held for one input and
    /// the carrying out of its actions.
    control: Mutex<NodeControl>,
    /// Wakes [`drive_control_timers`] when the plane's next deadline moved.
    control_timer: Arc<Notify>,
    /// The media cores.
    pub cores: Vec<CoreHandle>,
    /// Our DTLS certificate (its fingerprint goes in answers).
    pub certificate: DtlsCertificate,
    /// Connection caps, timeouts and session rate (`[http]`).
    pub limits: Limits,
    /// Which pages may read answers (`http.cors_origins`).
    pub cors: Cors,
    /// Who to tell when sessions change: WebSocket clients, relay links.
    watchers: Arc<Mutex<HashMap<SessionId, Watcher>>>,
    /// An origin's relay transport, which carries out the plane's relay orders.
    pub relays: Option<Relays>,
    /// Picks the edge a player is sent to (an origin with edges); `cdn::poll_edge_stats`
    /// feeds it.
    pub balancer: Option<Arc<Mutex<Balancer>>>,
    /// This node's CPU load, for `/?action=stat`.
    pub cpu: Mutex<CpuSampler>,
    /// Who may publish, play and administer.
    pub auth: Authorizer,
    /// `cdn.secret`: an edge checks the origin's relays with it.
    pub relay_auth: Option<RelayAuth>,
    /// `bwe.limit_publisher`: the lowest bitrate a publisher is asked for, when publishers are
    /// limited to their weakest player's bandwidth.
    pub publisher_floor_bps: Option<u64>,
    /// The limit last sent to each limited publisher.
    pub publisher_limits: Mutex<HashMap<SessionId, u64>>,
    /// The dynamic CDN (`[cluster]`): publishes are claimed in Redis, `show_nodes` reads it.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Pull on demand (`[cluster]` with a `secret`): the streams pulled from other nodes, and
    /// the nodes pulling from this one.
    pub pulls: Option<Arc<pull::PullHub>>,
    /// `[[ice.servers]]`: the STUN/TURN servers WHIP/WHEP answers name.
    pub ice_servers: ice_servers::IceServers,
    /// `cdn.role`, for the control API.
    pub cdn_role: crate::config::cdn::CdnRole,
    /// Whether the node drains (takes no new sessions).
    pub drain: drain::Drain,
    /// When the node started: the wall clock for `/metrics`' start time, the monotonic one for
    /// its uptime.
    pub started: (Instant, std::time::SystemTime),
}

impl Signalling {
    /// Shared state for a node's cores.
    pub fn new(
        cores: Vec<CoreHandle>,
        certificate: DtlsCertificate,
        cdn: &CdnConfig,
        auth: Authorizer,
    ) -> Signalling {
        let balancer = cdn
            .relays()
            .then(|| Arc::new(Mutex::new(Balancer::new(cdn, rand::random()))));
        Signalling {
            control: Mutex::new(ControlPlane::new(
                cores.len(),
                Vec::new(),
                RetryPolicy::default(),
                StdRng::seed_from_u64(0),
            )),
            control_timer: Arc::new(Notify::new()),
            cores,
            certificate,
            limits: Limits::new(&HttpConfig::default()),
            cors: Cors::new(&HttpConfig::default().cors_origins),
            watchers: Arc::new(Mutex::new(HashMap::new())),
            relays: None,
            balancer,
            cpu: Mutex::new(CpuSampler::new()),
            auth,
            relay_auth: cdn
                .secret
                .as_ref()
                .map(|secret| RelayAuth::new(secret.expose())),
            publisher_floor_bps: None,
            publisher_limits: Mutex::new(HashMap::new()),
            cluster: None,
            pulls: None,
            ice_servers: ice_servers::IceServers::default(),
            cdn_role: cdn.role.clone(),
            drain: drain::Drain::default(),
            started: (Instant::now(), std::time::SystemTime::now()),
        }
    }

    /// A member of `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Signalling {
        self.cluster = Some(cluster);
        self
    }

    /// Pulls on demand with `hub`; relays between the cluster's nodes prove `secret` (the
    /// cluster's, in place of `cdn.secret`).
    pub fn with_pulls(mut self, hub: pull::PullHub, secret: &str) -> Signalling {
        self.pulls = Some(Arc::new(hub));
        self.relay_auth = Some(RelayAuth::new(secret));
        self
    }

    /// Relays every stream to each of `edges`, retrying as `policy` says with jitter seeded
    /// by `seed`: the plane's relay orders go to `relays`.
    pub fn with_relays(
        mut self,
        relays: Relays,
        edges: Vec<EdgeId>,
        policy: RetryPolicy,
        seed: u64,
    ) -> Signalling {
        let cores = self.cores.len();
        self.control = Mutex::new(ControlPlane::new(
            cores,
            edges,
            policy,
            StdRng::seed_from_u64(seed),
        ));
        self.relays = Some(relays);
        self
    }

    /// The listener limits and CORS policy of `http` instead of the defaults.
    pub fn with_http(mut self, http: &HttpConfig) -> Signalling {
        self.limits = Limits::new(http);
        self.cors = Cors::new(&http.cors_origins);
        self
    }

    /// Names the servers of `[[ice.servers]]` in WHIP/WHEP answers.
    pub fn with_ice(mut self, ice: &crate::config::ice::IceConfig) -> Signalling {
        self.ice_servers = ice_servers::IceServers::new(&ice.servers);
        self
    }

    /// Applies `[bwe]`.
    pub fn with_bwe(mut self, bwe: &crate::config::BweSettings) -> Signalling {
        self.publisher_floor_bps = bwe.limit_publisher.then_some(bwe.min_publisher_bps);
        self
    }

    /// With `bwe.limit_publisher`: asks the publisher of `stream` for no more than its
    /// weakest player's bandwidth (never below the floor), when that moved by 5% or more.
    fn limit_publisher(&self, stream: &str) {
        let Some(floor) = self.publisher_floor_bps else {
            return;
        };
        let (publisher, core, weakest) = {
            let registry = self.registry();
            let Some(entry) = registry.stream(stream) else {
                return;
            };
            (entry.publisher, entry.core, registry.weakest_player(stream))
        };
        let limit = weakest.map(|w| w.max(floor));
        let mut limits = self
            .publisher_limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = limits.get(&publisher).copied();
        let moved = match (last, limit) {
            (Some(a), Some(b)) => a.abs_diff(b) * 20 >= a,
            (None, None) => false,
            _ => true,
        };
        if !moved {
            return;
        }
        match limit {
            Some(bps) => limits.insert(publisher, bps),
            None => limits.remove(&publisher),
        };
        drop(limits);
        debug!(stream, limit_bps = ?limit, "publisher bitrate limit");
        self.cores[core.0].send(CoreCommand::LimitPublisher {
            id: publisher,
            bitrate_bps: limit,
        });
    }

    /// The edge the balancer picks for the next player, as the SDK's `lbUrl` wants it.
    pub fn choose_edge(&self) -> Option<crate::config::cdn::CdnNode> {
        let balancer = self.balancer.as_ref()?;
        let mut balancer = balancer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        balancer.choose().cloned()
    }

    /// Starts the node's drain (see [`drain`]): no new publish or play from now on, and the
    /// cluster lease says DRAINING. Returns false when it had started already.
    pub fn start_drain(&self) -> bool {
        if !self.drain.start() {
            return false;
        }
        if let Some(cluster) = &self.cluster {
            cluster.drain();
        }
        info!(
            sessions = self.session_count(),
            "draining: no new sessions; the node stops when its sessions end"
        );
        true
    }

    /// The node's sessions now (publishers, players, relays).
    pub fn session_count(&self) -> usize {
        self.registry().core_load().iter().sum()
    }

    /// Feeds the control plane one input (`now` is the time it is handled) and carries out
    /// what it decides, in order, before anyone else can feed it: a core's command never
    /// overtakes the one before it, a watcher hears a session end before the core removes it.
    pub fn control<T>(&self, input: impl FnOnce(&mut NodeControl, Instant) -> T) -> T {
        let mut plane = self.lock_control();
        let deadline = plane.poll_timeout();
        let streams = plane.registry().stream_generation();
        let out = input(&mut plane, Instant::now());
        while let Some(action) = plane.poll_action() {
            self.carry_out(action);
        }
        if plane.poll_timeout() != deadline {
            self.control_timer.notify_one();
        }
        let streams_changed = plane.registry().stream_generation() != streams;
        drop(plane);
        // The cluster claims and releases streams: it looks at the registry soon when one was
        // published or ended (not at every player's or core's report).
        if let (Some(cluster), true) = (&self.cluster, streams_changed) {
            cluster.nudge();
        }
        out
    }

    fn carry_out(&self, action: ControlAction) {
        match action {
            ControlAction::Core { core, command } => {
                if let Some(handle) = self.cores.get(core.0) {
                    handle.send(command);
                }
            }
            ControlAction::Status { session, status } => self.deliver(session, status),
            ControlAction::Relay(order) => {
                if let Some(relays) = &self.relays {
                    relays.carry_out(order);
                }
            }
        }
    }

    fn lock_control(&self) -> MutexGuard<'_, NodeControl> {
        // A panic while holding the lock would be a bug; the plane stays usable regardless.
        self.control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The registry, to read.
    pub(crate) fn registry(&self) -> RegistryView<'_> {
        RegistryView(self.lock_control())
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Watcher>> {
        self.watchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reports a session's status changes to `watcher`.
    pub fn watch(&self, id: SessionId, watcher: Watcher) {
        self.watchers().insert(id, watcher);
    }

    /// Stops reporting a session (its client ended it itself).
    pub fn unwatch(&self, id: SessionId) {
        self.watchers().remove(&id);
    }

    /// Tells a session's watcher how it is doing; an ended session's watcher is forgotten.
    /// A WebSocket client's session that its peer closed cleanly is reported after
    /// [`CLEAN_CLOSE_GRACE`], if the client has not stopped it itself by then.
    fn deliver(&self, id: SessionId, status: SessionStatus) {
        if status != SessionStatus::Ended(EndReason::DtlsClosed) {
            return deliver(&self.watchers, id, &status);
        }
        if !self.watchers().contains_key(&id) {
            return;
        }
        let watchers = Arc::clone(&self.watchers);
        tokio::spawn(async move {
            tokio::time::sleep(CLEAN_CLOSE_GRACE).await;
            deliver(&watchers, id, &status);
        });
    }

    /// Sends a frame built for each WebSocket player of `stream` (by its mediaSessionId).
    pub fn relay_stream_event(&self, stream: &str, build: impl Fn(&str) -> String) {
        let players: Vec<SessionId> = self
            .registry()
            .stream(stream)
            .map(|s| s.players.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default();
        let watchers = self.watchers();
        for id in players {
            if let Some(w) = watchers.get(&id).and_then(Watcher::client) {
                let _ = w.out.send(build(&w.description.media_session_id));
            }
        }
    }

    /// The mediaSessionId a WebSocket client gave a session, if it came from one.
    pub fn media_session_id(&self, id: SessionId) -> Option<String> {
        self.watchers()
            .get(&id)
            .and_then(Watcher::client)
            .map(|w| w.description.media_session_id.clone())
    }

    /// Changes a live stream's ACL keys: players whose key it no longer holds are ended with
    /// "Restricted access", and the relays tell the edges, which do the same. Returns the keys.
    pub fn change_acl(&self, name: &str, change: AclChange) -> Result<Vec<String>, RegistryError> {
        let changed = self.control(|plane, now| plane.handle_acl_change(now, name, change))?;
        // A stream published here is announced in the cluster; a copy's list came from its
        // owner, which announced it.
        let owned = {
            let registry = self.registry();
            registry.stream(name).is_some_and(|s| !registry.is_copy(s))
        };
        if let (Some(cluster), true) = (&self.cluster, owned) {
            let (cluster, name, keys) = (cluster.clone(), name.to_owned(), changed.keys.len());
            tokio::spawn(async move { cluster.announce_acl_change(&name, keys).await });
        }
        if changed.ended > 0 {
            info!(
                stream = name,
                ended = changed.ended,
                "players without a listed ACL key ended"
            );
        }
        Ok(changed.keys)
    }

    /// The session a WebSocket client calls `media_session_id`.
    pub fn session_by_media_session_id(&self, media_session_id: &str) -> Option<SessionId> {
        self.watchers()
            .iter()
            .find(|(_, w)| {
                w.client()
                    .is_some_and(|w| w.description.media_session_id == media_session_id)
            })
            .map(|(id, _)| *id)
    }

    /// A player's bandwidth estimate, after the control plane kept it: a WebSocket player
    /// whose estimate stays under its publisher's bitrate is told (WCS's `notEnoughBandwidth`
    /// stream event).
    fn handle_estimate(&self, id: SessionId, estimate: Option<u64>) {
        let (stream, publisher_bps) = {
            let registry = self.registry();
            if estimate.is_none() {
                return;
            }
            let Some(stream) = registry.session(id).map(|s| s.stream_name.clone()) else {
                return;
            };
            let publisher_bps = registry.publisher_bitrate(&stream);
            (stream, publisher_bps)
        };
        self.limit_publisher(&stream);
        let (Some(estimate), Some(publisher_bps)) = (estimate, publisher_bps) else {
            return;
        };
        let mut watchers = self.watchers();
        let Some(Watcher::Client(watcher)) = watchers.get_mut(&id) else {
            return;
        };
        if let Some(event) = watcher.bandwidth.update(estimate, publisher_bps) {
            info!(session = %id, stream = watcher.description.name, publisher_bps, estimate_bps = estimate, "not enough bandwidth");
            let _ = watcher.out.send(
                watcher
                    .description
                    .stream_event_frame("notEnoughBandwidth", json!({ "info": event.info() })),
            );
        }
    }

    /// Applies what a core reports: the control plane decides what follows.
    pub fn handle_core_event(&self, event: CoreEvent) {
        self.control(|plane, now| plane.handle_core_event(now, &event));
        match event {
            CoreEvent::Bitrates {
                id, estimate_bps, ..
            } => self.handle_estimate(id, estimate_bps),
            CoreEvent::SessionEnded { id, reason } => {
                self.publisher_limits
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&id);
                debug!(session = %id, %reason, "session forgotten");
            }
            CoreEvent::SessionConnected { .. } | CoreEvent::MediaStarted { .. } => {}
        }
    }
}

/// Tells a session's watcher in `watchers` how it is doing; an ended session's watcher is
/// forgotten.
fn deliver(watchers: &Mutex<HashMap<SessionId, Watcher>>, id: SessionId, status: &SessionStatus) {
    let mut watchers = watchers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let SessionStatus::Ended(_) = status {
        if let Some(watcher) = watchers.remove(&id) {
            watcher.deliver(status);
        }
    } else if let Some(watcher) = watchers.get(&id) {
        watcher.deliver(status);
    }
}

/// Calls the control plane's [`ControlPlane::handle_timeout`] at its deadlines (relays backing
/// off), for as long as the node lives.
pub async fn drive_control_timers(state: Weak<Signalling>) {
    let Some(wake) = state.upgrade().map(|s| Arc::clone(&s.control_timer)) else {
        return;
    };
    loop {
        let deadline = match state.upgrade() {
            Some(state) => state.lock_control().poll_timeout(),
            None => return,
        };
        match deadline {
            Some(at) => {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                }
            }
            None => wake.notified().await,
        }
        match state.upgrade() {
            Some(state) => state.control(|plane, now| plane.handle_timeout(now)),
            None => return,
        }
    }
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<Signalling>) {
    listener::serve(listener, state, None).await
}

/// Serves HTTPS (and so wss://) on `listener` until the task is dropped.
pub async fn serve_tls(
    listener: TcpListener,
    state: Arc<Signalling>,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    listener::serve(listener, state, Some(acceptor)).await
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Signalling>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if flashphoner::is_upgrade(&req) {
        return flashphoner::upgrade(req, state, peer);
    }
    let origin = req.headers().get(ORIGIN).cloned();
    let mut response = route(req, &state, peer).await;
    state
        .cors
        .apply(&path, origin.as_ref(), response.headers_mut());
    let refused = response.status().is_client_error() || response.status().is_server_error();
    // A 429 is logged where the session was refused.
    let logged = response.status() == StatusCode::TOO_MANY_REQUESTS;
    if refused && !logged && state.limits.may_log() {
        info!(%peer, %method, %path, status = response.status().as_u16(), "request refused");
    }
    response
}

/// One of the pages built into the binary.
fn html_page(page: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

async fn route(
    req: Request<Incoming>,
    state: &Signalling,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if req.method() == Method::OPTIONS && cors::is_admin(&path) {
        return text(
            StatusCode::FORBIDDEN,
            "admin endpoints do not answer cross-origin requests",
        );
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    if req.method() == Method::OPTIONS {
        let mut response = preflight();
        // A client's own OPTIONS (not a browser's CORS preflight, which would drop them) learns
        // the ICE servers before it creates its peer connection (RFC 9725 §4.6).
        let cors_preflight = req
            .headers()
            .contains_key(hyper::header::ACCESS_CONTROL_REQUEST_METHOD);
        if let (false, [protocol @ ("whip" | "whep"), stream]) = (cors_preflight, &segments[..]) {
            let credentials = http_credentials(state, &req, &query);
            whip::add_ice_server_links(
                state,
                protocol,
                &percent_decode(stream),
                &credentials,
                response.headers_mut(),
            );
        }
        return response;
    }
    if let (&Method::POST, ["whep", stream]) = (req.method(), segments.as_slice()) {
        if let Some(redirect) = redirect_player(state, stream, &query) {
            return redirect;
        }
    }
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, [""]) if query.split('&').any(|kv| kv == "action=stat") => node_stat(state),
        (Method::GET, ["lb"]) => load_balancer(state, &query),
        (Method::GET, ["console"]) => html_page(CONSOLE_HTML),
        (Method::GET, [""]) | (Method::GET, ["index.html"]) => html_page(INDEX_HTML),
        (Method::GET, ["api", "stats"]) => match state.auth.admin(bearer(&req).as_deref()) {
            Ok(()) => stats(state),
            Err(e) => whip::auth_refusal(&e),
        },
        (method @ (Method::GET | Method::DELETE), ["api", ..]) => {
            if let Err(e) = state.auth.admin(bearer(&req).as_deref()) {
                return whip::auth_refusal(&e);
            }
            match (method, &segments[1..]) {
                (Method::GET, ["sessions"]) => control_api::sessions(state),
                (Method::DELETE, ["sessions", id]) => control_api::kick(state, id),
                (Method::GET, ["streams"]) => control_api::streams(state),
                (Method::DELETE, ["streams", name]) => {
                    control_api::terminate_stream(state, &percent_decode(name))
                }
                (Method::GET, ["cdn"]) => control_api::cdn(state),
                (Method::GET, _) => {
                    text(StatusCode::NOT_FOUND, format!("no such resource: {path}"))
                }
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            }
        }
        (Method::GET, ["metrics"]) => match state.auth.admin(bearer(&req).as_deref()) {
            Ok(()) => {
                let mut response = text(StatusCode::OK, metrics::render(state));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                response
            }
            Err(e) => whip::auth_refusal(&e),
        },
        (
            Method::GET | Method::POST,
            ["rest-api", "stream", action @ ("find_all" | "find" | "terminate")],
        ) => {
            if let Err(e) = state.auth.admin(bearer(&req).as_deref()) {
                return whip::auth_refusal(&e);
            }
            let action = *action;
            match read_body(req).await {
                Ok(body) => rest::stream(state, action, &body),
                Err(response) => response,
            }
        }
        (Method::POST, ["rest-api", "cdn", "drain"]) => {
            match state.auth.admin(bearer(&req).as_deref()) {
                Ok(()) => rest::drain(state),
                Err(e) => whip::auth_refusal(&e),
            }
        }
        (Method::POST, ["rest-api", "v3", "cdn", "warmup"]) => {
            if let Err(e) = state.auth.admin(bearer(&req).as_deref()) {
                return whip::auth_refusal(&e);
            }
            match read_body(req).await {
                Ok(body) => pull::warmup(state, &body).await,
                Err(response) => response,
            }
        }
        (Method::POST, ["rest-api", "cdn", action @ ("pull" | "release")]) => {
            let release = *action == "release";
            let token = bearer(&req);
            match read_body(req).await {
                Ok(body) => pull::serve(state, token.as_deref(), &body, release).await,
                Err(response) => response,
            }
        }
        (Method::GET | Method::POST, ["rest-api", "cdn", "show_routes"]) => {
            match state.auth.admin(bearer(&req).as_deref()) {
                Ok(()) => rest::show_routes(state),
                Err(e) => whip::auth_refusal(&e),
            }
        }
        (Method::GET | Method::POST, ["rest-api", "cdn", "show_nodes"]) => {
            match state.auth.admin(bearer(&req).as_deref()) {
                Ok(()) => rest::show_nodes(state).await,
                Err(e) => whip::auth_refusal(&e),
            }
        }
        (
            Method::GET | Method::POST,
            ["rest-api", "cdn", "stream", "access_list", action @ ("add" | "remove" | "delete" | "print")],
        ) => {
            if let Err(e) = state.auth.admin(bearer(&req).as_deref()) {
                return whip::auth_refusal(&e);
            }
            let action = *action;
            match read_body(req).await {
                Ok(body) => rest::access_list(state, action, &body),
                Err(response) => response,
            }
        }
        (Method::POST, [protocol @ ("whip" | "whep"), stream]) => {
            if let Err(refused) = state.admit_session(peer.ip()) {
                return refused.response();
            }
            let stream = percent_decode(stream);
            let credentials = http_credentials(state, &req, &query);
            // WHEP `?layer=`: the simulcast layer to play (a rid, or low, mid, high).
            let layer = query_param(&query, "layer");
            let user_agent = req
                .headers()
                .get(hyper::header::USER_AGENT)
                .and_then(|v| v.to_str().ok());
            let client = ClientInfo::new(peer, user_agent);
            match sdp_body(req).await {
                Ok(offer) => {
                    let layer = layer.as_deref();
                    whip::start(
                        state,
                        protocol,
                        &stream,
                        &offer,
                        &credentials,
                        layer,
                        client,
                    )
                    .await
                }
                Err(response) => response,
            }
        }
        (Method::DELETE, [protocol @ ("whip" | "whep"), stream, resource]) => {
            let credentials = http_credentials(state, &req, &query);
            whip::delete(
                state,
                protocol,
                &percent_decode(stream),
                resource,
                &credentials,
            )
        }
        (Method::GET, [protocol @ ("whip" | "whep"), stream, resource]) => {
            whip::resource_state(state, protocol, &percent_decode(stream), resource)
        }
        (Method::PATCH, [protocol @ ("whip" | "whep"), stream, _resource]) => {
            let credentials = http_credentials(state, &req, &query);
            whip::patch(state, protocol, &percent_decode(stream), &credentials)
        }
        (_, ["whip" | "whep", ..]) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(StatusCode::NOT_FOUND, format!("no such resource: {path}")),
    }
}

fn preflight() -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::NO_CONTENT, "");
    let headers = response.headers_mut();
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, DELETE, PATCH, OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Content-Type, Authorization, If-Match"),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("86400"));
    headers.insert("accept-post", HeaderValue::from_static("application/sdp"));
    response
}

/// The token of an `Authorization: Bearer` header.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A relay token presented with `credentials` (a WebSocket `connection`'s `custom.relayToken`,
/// an RTMP push's `?relayToken=`): a relay of this CDN when it proves `cdn.secret`, else the
/// refusal is counted and kept for the refusal's text.
pub(crate) fn check_relay_token(state: &Signalling, token: &str, credentials: &mut Credentials) {
    let checked = match &state.relay_auth {
        Some(relay_auth) => relay_auth.verify(token),
        None => Err(crate::auth::TokenError::Malformed(
            "this node has no cdn.secret to check relay tokens with".into(),
        )),
    };
    match checked {
        Ok(()) => credentials.relay = true,
        Err(e) => {
            let refused = crate::auth::AuthError::InvalidToken(e.clone());
            state
                .auth
                .count_refusal(crate::auth::RefusedKind::Relay, &refused);
            credentials.relay_refused = Some(e);
        }
    }
}

/// The value of `key` in a query string, percent-decoded.
pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(percent_decode)
        .filter(|v| !v.is_empty())
}

/// What a WHIP/WHEP request presents: `Authorization: Bearer`, else `?token=` (for clients that
/// cannot set headers), and a WCS ACL key as `?aclAuth=` (`auth.acl_property`).
fn http_credentials(state: &Signalling, req: &Request<Incoming>, query: &str) -> Credentials {
    let mut credentials = Credentials::bearer(bearer(req).or_else(|| query_param(query, "token")));
    credentials.acl_key = query_param(query, state.auth.acl_property());
    credentials
}

/// Reads a body of at most [`MAX_BODY`] bytes as text.
async fn read_body(req: Request<Incoming>) -> Result<String, Response<Full<Bytes>>> {
    let body = limits::collect_body(req, MAX_BODY, "the body").await?;
    String::from_utf8(body.to_vec())
        .map_err(|_| text(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))
}

/// Reads an `application/sdp` body.
async fn sdp_body(req: Request<Incoming>) -> Result<String, Response<Full<Bytes>>> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/sdp, not {content_type:?}"),
        ));
    }
    let body = limits::collect_body(req, MAX_BODY, "the offer").await?;
    String::from_utf8(body.to_vec())
        .map_err(|_| text(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text"))
}

/// Decodes `%XX` escapes in a path segment; invalid escapes stay as they are (and then fail the
/// stream-name check).
fn percent_decode(segment: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Works on bytes, never on str slices: a '%' before a multi-byte character must not
        // split it.
        let escaped = match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => Some(high << 4 | low),
            _ => None,
        };
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /lb` (an origin's load balancer, the Flashphoner SDK's `lbUrl`): `{"server", "ws", "wss"}`
/// of the chosen edge: the static CDN's balancer, or in a cluster the edge `cluster::route`
/// chooses for `?stream=` (with `whep` and `node` added). 503 when no edge answers: the SDK falls back to `urlServer` only on a
/// timeout, so a clear error beats a stuck session less than an answer would, but there is none.
fn load_balancer(state: &Signalling, query: &str) -> Response<Full<Bytes>> {
    if state.balancer.is_some() {
        return match state.choose_edge() {
            Some(edge) => rest::json_response(&edge.lb_answer()),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no edge is answering"),
        };
    }
    let Some(cluster) = &state.cluster else {
        return text(
            StatusCode::NOT_FOUND,
            "this node has no edges to balance over",
        );
    };
    // `?stream=NAME`: players of one stream gather on few edges (see `cluster::route`).
    let stream = query_param(query, "stream");
    match cluster.choose_edge(stream.as_deref()) {
        Some(edge) => rest::json_response(&edge.lb_answer()),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no edge of the cluster is serving",
        ),
    }
}

/// A WHEP offer on a node that sends its players to edges: an origin of the static CDN, or a
/// cluster node without the edge role. The 307 keeps the method and the offer (RFC 9725
/// permits redirects) and the query (a token or an ACL key is for the edge too); `?local=1`
/// plays here. None: the node serves the player itself (also a cluster origin while no edge
/// serves: better a player on the origin than none).
fn redirect_player(
    state: &Signalling,
    raw_stream: &str,
    query: &str,
) -> Option<Response<Full<Bytes>>> {
    if query.split('&').any(|p| p == "local=1") {
        return None;
    }
    let whep_base = if state.balancer.is_some() {
        let edge = state.choose_edge();
        match edge.and_then(|edge| match (edge.ws, edge.wss) {
            (Some(port), _) => Some(("http", edge.host, port)),
            (None, Some(port)) => Some(("https", edge.host, port)),
            (None, None) => None,
        }) {
            Some((scheme, host, port)) => format!("{scheme}://{host}:{port}/whep/"),
            None => {
                return Some(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no edge is answering",
                ))
            }
        }
    } else {
        let cluster = state.cluster.as_ref()?;
        if cluster.has_role(crate::config::cluster::ClusterRole::Edge) {
            return None;
        }
        let stream = percent_decode(raw_stream);
        cluster.choose_edge(Some(&stream))?.whep
    };
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    // The stream's path segment as it came (still percent-encoded).
    let location = HeaderValue::from_str(&format!("{whep_base}{raw_stream}{query}")).ok()?;
    let mut response = text(
        StatusCode::TEMPORARY_REDIRECT,
        "play this stream from an edge",
    );
    response
        .headers_mut()
        .insert(hyper::header::LOCATION, location);
    Some(response)
}

/// `GET /?action=stat`: the WCS load report an origin polls (`calls=`, `systemCpuLoad=`, ...).
/// A draining node answers 503, which an origin's balancer takes as a node to skip, as it
/// skips one that does not answer.
fn node_stat(state: &Signalling) -> Response<Full<Bytes>> {
    if state.drain.is_draining() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: this node takes no new sessions",
        );
    }
    let (calls, streams, players) = {
        let registry = state.registry();
        let calls: usize = registry.core_load().iter().sum();
        let streams = registry.streams().count();
        let players = registry.streams().map(|s| s.players.len()).sum();
        (calls, streams, players)
    };
    let stat = state
        .cpu
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .stat(calls as u64);
    text(StatusCode::OK, render_stat(&stat, streams, players))
}

fn stats(state: &Signalling) -> Response<Full<Bytes>> {
    use std::sync::atomic::Ordering::Relaxed;
    let cores: Vec<serde_json::Value> = state
        .cores
        .iter()
        .enumerate()
        .map(|(i, core)| {
            let s = &core.stats;
            serde_json::json!({
                "core": i,
                "candidates": core.candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "sessions": s.sessions.load(Relaxed),
                "rtp_received": s.rtp_received.load(Relaxed),
                "rtp_sent": s.rtp_sent.load(Relaxed),
                "rtp_received_bytes": s.rtp_received_bytes.load(Relaxed),
                "rtp_sent_bytes": s.rtp_sent_bytes.load(Relaxed),
                "stun_rejected": s.stun_rejected.load(Relaxed),
                "srtp_rejected": s.srtp_rejected.load(Relaxed),
                "rtp_malformed": s.rtp_malformed.load(Relaxed),
                "unknown_source": s.unknown_source.load(Relaxed),
                "unclassified": s.unclassified.load(Relaxed),
                "handoff_dropped": s.handoff_dropped.load(Relaxed),
                "udp_datagrams_sent": s.udp_datagrams_sent.load(Relaxed),
                "udp_sends": s.udp_sends.load(Relaxed),
                "udp_gso_sends": s.udp_gso_sends.load(Relaxed),
                "udp_gso_fallbacks": s.udp_gso_fallbacks.load(Relaxed),
                "retransmissions_sent": s.retransmissions_sent.load(Relaxed),
                "nacks_forwarded_upstream": s.nacks_forwarded_upstream.load(Relaxed),
                "retransmissions_throttled": s.retransmissions_throttled.load(Relaxed),
                "upstream_losses_requested": s.upstream_losses_requested.load(Relaxed),
                "upstream_losses_recovered": s.upstream_losses_recovered.load(Relaxed),
                "upstream_losses_abandoned": s.upstream_losses_abandoned.load(Relaxed),
                "keyframe_cache_hits": s.keyframe_cache_hits.load(Relaxed),
                "keyframe_cache_misses": s.keyframe_cache_misses.load(Relaxed),
                "rtx_dropped": s.rtx_dropped.load(Relaxed),
                "rtx_sent": s.rtx_sent.load(Relaxed),
                "tcp_candidates": core.tcp_candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "tcp": s.tcp.to_json(),
                "allocations": s.counts_allocations.load(Relaxed).then(|| s.allocations.load(Relaxed)),
                "media_allocations": s.counts_allocations.load(Relaxed).then(|| s.media_allocations.load(Relaxed)),
                "residence_ns": s.residence.nonzero().map(|(i, n)| {
                    let (low, high) = ResidenceHistogram::bucket_range(i);
                    [low, high, n]
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let registry = state.registry();
    let streams: Vec<serde_json::Value> = registry
        .streams()
        .map(|s| {
            // Players' bandwidth as estimated from their transport-cc feedback (null without).
            let estimates: Vec<Option<u64>> = s
                .players
                .iter()
                .map(|(id, _)| registry.session(*id).and_then(|p| p.bitrate_bps))
                .collect();
            serde_json::json!({
                "name": s.name,
                "core": s.core.0,
                "media_flowing": s.media_flowing,
                "players": s.players.len(),
                "tracks": s.tracks.iter().map(|t| format!("{}/{}", t.codec.name, t.codec.clock_rate)).collect::<Vec<_>>(),
                "bitrate_bps": registry.publisher_bitrate(&s.name),
                "keyframe_interval_ms": registry.session(s.publisher).and_then(|p| p.keyframe_interval_ms),
                "player_bandwidth_bps": estimates,
            })
        })
        .collect();
    drop(registry);
    let panics = crate::panic_guard::counts();
    rest::json_response(
        &serde_json::json!({ "cores": cores, "streams": streams, "panics": panics }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Db"), "a-b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%e4%b8%ad"), "中");
        assert_eq!(percent_decode("%aé"), "%aé");
        assert_eq!(percent_decode("é%"), "é%");
    }
}
