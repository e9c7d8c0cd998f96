//! The simulated world: nodes (one `MediaCore` each), browsers, and the network between them,
//! all on one virtual clock.
//!
//! Signalling is the part a simulator does not need to reproduce: a scenario adds sessions to
//! a node's core with the `CoreCommand`s signalling would send (on a CDN's origin, through the
//! node's own control plane, which then decides what follows), and keys each session's SRTP
//! with the fixed test keys once ICE is up on both ends (as DTLS would have). Everything that
//! happens after that — STUN, SRTP, RTCP, retransmissions, relays, timeouts — is the node's
//! own code, driven by [`World::run_for`] from deadline to deadline.
//!
//! The cores run in burst order (`MediaCore::set_burst_order`), as a node with UDP GSO (the
//! default) runs them: what a step delivered is a batch, ended before the nodes' output is put
//! on the network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::IceCredentials;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rtcdn::control::plane::{ControlAction, ControlPlane, RelayOrder};
use rtcdn::control::registry::ClientInfo;
use rtcdn::control::relay_planner::{AttemptId, EdgeId, RelayEnd, RelayFailure, RetryPolicy};
use rtcdn::control::status::SessionStatus;
use rtcdn::control::{
    CoreCommand, CoreEvent, CoreId, EndReason, PlayedTrack, PlayerLayer, PlayerLayers,
    PublishedTrack, RtxStream, SessionId, SessionRole, SessionSpec, SimulcastLayers, StreamId,
};
use rtcdn::dtls::{DtlsEvent, DtlsRole};
use rtcdn::media::test_support::{core_session_spec, opus_track, vp8_track};
use rtcdn::media::{
    peer_test_keys, ForwardQueue, MediaCore, MediaCoreConfig, MemorySink, NoDtls, SocketId,
    SocketRequest,
};
use rtcdn::sdp::MediaKind;
use rtcdn::session::SessionTimeouts;

use crate::net::{LinkConfig, Network};
use crate::peer::{Keys, Peer, VideoShape, AUDIO_PT, RID_EXT, VIDEO_PT};

/// The payload type of a player's RTX stream, when it negotiates one.
const PLAYER_RTX_PT: u8 = 101;

/// The consent timeout every node runs with (rtcdn's default).
pub const CONSENT: Duration = Duration::from_secs(30);

/// A node: one media core, its main socket's address, and the relay sockets it opened.
pub struct Node {
    pub addr: SocketAddr,
    pub core: MediaCore<NoDtls, ForwardQueue>,
    sink: MemorySink,
    /// Relay sockets: id → address.
    sockets: HashMap<SocketId, SocketAddr>,
    /// The relay session each relay socket was opened for.
    relay_sockets: HashMap<SessionId, SocketAddr>,
    next_socket: u16,
    pub events: Vec<(Instant, CoreEvent)>,
    /// Streams published here: name → id.
    pub streams: HashMap<String, StreamId>,
    /// The node is down: it receives nothing and its timers do not run.
    pub down: bool,
}

impl Node {
    /// The session's end reason, if it ended.
    pub fn ended(&self, id: SessionId) -> Option<&EndReason> {
        self.events.iter().find_map(|(_, e)| match e {
            CoreEvent::SessionEnded { id: ended, reason } if *ended == id => Some(reason),
            _ => None,
        })
    }

    pub fn connected(&self, id: SessionId) -> bool {
        self.events
            .iter()
            .any(|(_, e)| *e == CoreEvent::SessionConnected { id })
    }
}

/// Where a session's other end is, and whether its keys were handed out.
#[derive(Clone, Copy)]
enum Far {
    /// A browser: index into `World::peers`.
    Peer(usize),
    /// The edge end of a relay: (node, session).
    Relay(usize, SessionId),
}

struct Pending {
    node: usize,
    id: SessionId,
    far: Far,
}

/// A relay from one node to another: its session on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    pub origin: usize,
    pub origin_session: SessionId,
    pub edge: usize,
    pub edge_session: SessionId,
}

/// An origin's CDN: the origin's control plane deciding (its publishers, players and relay
/// sessions are placed through it, as signalling places them), the world carrying out its
/// actions as the node's transports do: core commands to the origin's core, relay orders as the
/// `cdn::relay` links carry them out (a link to an edge that is down fails at once, as a
/// refused connection does; a killed edge closes its links).
pub struct Cdn {
    pub origin: usize,
    pub plane: ControlPlane<StdRng>,
    attempts: HashMap<AttemptId, Relay>,
    /// Every attempt the planner started: when, which, and to which node.
    pub starts: Vec<(Instant, AttemptId, usize)>,
}

pub struct World {
    pub now: Instant,
    pub cdn: Option<Cdn>,
    pub net: Network,
    pub nodes: Vec<Node>,
    pub peers: Vec<Peer>,
    /// Sessions whose SRTP is keyed once ICE is up on both ends.
    pending: Vec<Pending>,
    next_session: u64,
    next_stream: u64,
    seed: u64,
    /// Datagrams carried, for a sense of how much happened.
    pub delivered: u64,
}

/// What a player negotiates beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlayOptions {
    /// The layers of a simulcast stream's video it is sent (pinned or not).
    pub layers: Option<PlayerLayers>,
    /// The transport-wide sequence number's extension id, when it negotiates transport-cc.
    pub transport_cc: Option<u8>,
    /// It negotiates an RTX stream for its video, as browsers do: what it reports lost comes
    /// back on it, with transport-wide numbers of their own.
    pub rtx: bool,
}

/// A browser session: where it is in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Browser {
    pub node: usize,
    pub session: SessionId,
    pub peer: usize,
}

fn credentials(tag: &str) -> IceCredentials {
    IceCredentials {
        ufrag: format!("{tag}u"),
        pwd: format!("{tag}-password-0123456789abc"),
    }
}

fn keys_of(material: rtcdn::dtls::SrtpKeyingMaterial) -> Keys {
    Keys {
        tx_key: material.local_key,
        tx_salt: material.local_salt,
        rx_key: material.remote_key,
        rx_salt: material.remote_salt,
    }
}

impl World {
    pub fn new(seed: u64) -> World {
        let now = Instant::now();
        World {
            now,
            cdn: None,
            net: Network::new(seed),
            nodes: Vec::new(),
            peers: Vec::new(),
            pending: Vec::new(),
            next_session: 1,
            next_stream: 1,
            seed,
            delivered: 0,
        }
    }

    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let addr = SocketAddr::from(([10, 0, 0, index as u8 + 1], 4000));
        self.nodes.push(Node {
            addr,
            core: self.new_core(index),
            sink: MemorySink::new(),
            sockets: HashMap::new(),
            relay_sockets: HashMap::new(),
            next_socket: 1,
            events: Vec::new(),
            streams: HashMap::new(),
            down: false,
        });
        index
    }

    fn new_core(&self, index: usize) -> MediaCore<NoDtls, ForwardQueue> {
        let config = MediaCoreConfig {
            id: CoreId(0),
            timeouts: SessionTimeouts {
                connect: Duration::from_secs(10),
                consent: CONSENT,
            },
            seed: self.seed ^ (index as u64 + 1),
        };
        burst_ordered(MediaCore::new(
            config,
            NoDtls,
            ForwardQueue::new(),
            self.now,
        ))
    }

    /// Relays every stream published on `origin` to each of `edges`, as the origin's control
    /// plane decides. Enable it before anything is published on `origin`.
    pub fn enable_cdn(&mut self, origin: usize, edges: &[usize], policy: RetryPolicy) {
        let edges = edges.iter().map(|&e| EdgeId(e as u32)).collect();
        self.cdn = Some(Cdn {
            origin,
            plane: ControlPlane::new(1, edges, policy, StdRng::seed_from_u64(self.seed)),
            attempts: HashMap::new(),
            starts: Vec::new(),
        });
    }

    /// The node stops: it drops every datagram and forgets its sessions, as a killed process.
    /// The origin's links to it close.
    pub fn kill(&mut self, node: usize) {
        if let Some(cdn) = &mut self.cdn {
            let closed: Vec<(AttemptId, Relay)> = cdn
                .attempts
                .iter()
                .filter(|(_, r)| r.edge == node)
                .map(|(a, r)| (*a, *r))
                .collect();
            for (attempt, relay) in closed {
                cdn.attempts.remove(&attempt);
                let failure = RelayFailure::Link("the edge closed the connection".into());
                cdn.plane
                    .handle_relay_ended(self.now, attempt, &RelayEnd::Failed(failure));
                cdn.plane
                    .handle_end_session(self.now, relay.origin_session, EndReason::Deleted);
            }
            self.carry_out_control_actions();
        }
        let n = &mut self.nodes[node];
        n.down = true;
        n.core = burst_ordered(MediaCore::new(
            MediaCoreConfig {
                id: CoreId(0),
                timeouts: SessionTimeouts {
                    connect: Duration::from_secs(10),
                    consent: CONSENT,
                },
                seed: 0,
            },
            NoDtls,
            ForwardQueue::new(),
            self.now,
        ));
        n.streams.clear();
        n.sockets.clear();
        n.relay_sockets.clear();
        self.pending.retain(|p| p.node != node);
    }

    /// A killed node starts again, empty.
    pub fn restart(&mut self, node: usize) {
        self.nodes[node].core = self.new_core(node + 100);
        self.nodes[node].down = false;
    }

    fn peer_addr(&self) -> SocketAddr {
        let n = self.peers.len() as u16;
        SocketAddr::from(([10, 1, (n / 200) as u8, (n % 200) as u8 + 1], 6000))
    }

    fn new_session(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        id
    }

    fn stream_id(&mut self, node: usize, name: &str) -> StreamId {
        if let Some(id) = self.nodes[node].streams.get(name) {
            return *id;
        }
        let id = StreamId(self.next_stream);
        self.next_stream += 1;
        self.nodes[node].streams.insert(name.to_string(), id);
        id
    }

    fn spec(&mut self, node: usize, stream: &str, role: SessionRole) -> SessionSpec {
        let id = self.new_session();
        core_session_spec(
            id,
            self.stream_id(node, stream),
            stream,
            role,
            credentials(&format!("n{node}s{}", id.0)),
            credentials(&format!("p{}", id.0)),
        )
    }

    /// Places a session on `node`: through the control plane on a CDN's origin, as signalling
    /// does, else straight on its core.
    fn add_session(&mut self, node: usize, spec: SessionSpec) {
        if let Some(cdn) = self.cdn.as_mut().filter(|c| c.origin == node) {
            let (now, core) = (self.now, CoreId(0));
            let name = spec.stream_name.clone();
            match &spec.role {
                SessionRole::Publisher { .. } => {
                    cdn.plane
                        .handle_publish_requested(now, &name, false, false)
                        .expect("a free stream name");
                    let stream = cdn
                        .plane
                        .handle_publish(now, core, spec, Vec::new(), ClientInfo::default())
                        .expect("a free stream name");
                    self.nodes[node].streams.insert(name, stream);
                }
                SessionRole::Player { .. } => cdn
                    .plane
                    .handle_play(now, core, spec, None, ClientInfo::default())
                    .expect("a live stream"),
                SessionRole::Relay { .. } => {
                    cdn.plane
                        .handle_relay_session(now, spec)
                        .expect("a live stream");
                }
            }
            self.carry_out_control_actions();
            return;
        }
        let n = &mut self.nodes[node];
        n.core.handle_command(
            self.now,
            CoreCommand::AddSession(Box::new(spec)),
            &mut n.sink,
        );
    }

    /// A browser publishes `stream` (VP8 video and Opus audio) to `node`.
    pub fn publish(&mut self, node: usize, stream: &str) -> Browser {
        self.publish_with(node, stream, &[])
    }

    /// A browser publishes `stream` to `node` with its video as simulcast `layers` (rid and
    /// shape, lowest first), each its own SSRC announced by its rid.
    pub fn publish_simulcast(
        &mut self,
        node: usize,
        stream: &str,
        layers: &[(&str, VideoShape)],
    ) -> Browser {
        self.publish_with(node, stream, layers)
    }

    fn publish_with(
        &mut self,
        node: usize,
        stream: &str,
        layers: &[(&str, VideoShape)],
    ) -> Browser {
        let mut tracks = publisher_tracks();
        if !layers.is_empty() {
            tracks[0].simulcast = Some(SimulcastLayers {
                rids: layers.iter().map(|(rid, _)| rid.to_string()).collect(),
                rid_ext: RID_EXT,
                repaired_rid_ext: None,
            });
        }
        let role = SessionRole::Publisher { tracks };
        let spec = self.spec(node, stream, role);
        let id = spec.id;
        let addr = self.peer_addr();
        let mut peer = Peer::publisher(
            &format!("publisher {stream}"),
            addr,
            self.nodes[node].addr,
            spec.remote_ice.clone(),
            spec.local_ice.clone(),
            &keys_of(peer_test_keys()),
            (0x5000_0000 + id.0 as u32, 0x6000_0000 + id.0 as u32),
            self.seed ^ id.0,
            self.now,
        );
        if !layers.is_empty() {
            peer.publisher_mut()
                .set_simulcast(0x5800_0000 + (id.0 as u32) * 16, layers);
        }
        self.add_session(node, spec);
        self.peers.push(peer);
        let index = self.peers.len() - 1;
        self.pending.push(Pending {
            node,
            id,
            far: Far::Peer(index),
        });
        Browser {
            node,
            session: id,
            peer: index,
        }
    }

    /// A browser plays `stream` from `node`.
    pub fn play(&mut self, node: usize, stream: &str) -> Browser {
        self.play_with(node, stream, PlayOptions::default())
    }

    /// A browser plays `stream` from `node`, negotiating `options`.
    pub fn play_with(&mut self, node: usize, stream: &str, options: PlayOptions) -> Browser {
        let n = self.next_session as u32;
        let role = SessionRole::Player {
            tracks: vec![
                PlayedTrack {
                    kind: MediaKind::Video,
                    pt: 100,
                    ssrc: 0x7000_0000 + n,
                    rtx: options.rtx.then_some(RtxStream {
                        pt: PLAYER_RTX_PT,
                        ssrc: 0x7200_0000 + n,
                    }),
                    transport_cc: options.transport_cc,
                    layers: options.layers,
                },
                PlayedTrack {
                    kind: MediaKind::Audio,
                    pt: AUDIO_PT,
                    ssrc: 0x7100_0000 + n,
                    rtx: None,
                    transport_cc: options.transport_cc,
                    layers: None,
                },
            ],
        };
        let spec = self.spec(node, stream, role);
        let id = spec.id;
        let addr = self.peer_addr();
        let mut peer = Peer::player(
            &format!("player {} of {stream}", id.0),
            addr,
            self.nodes[node].addr,
            spec.remote_ice.clone(),
            spec.local_ice.clone(),
            &keys_of(peer_test_keys()),
            self.seed ^ id.0,
            self.now,
        );
        if let Some(extension_id) = options.transport_cc {
            peer.player_mut().enable_transport_cc(extension_id);
        }
        if options.rtx {
            peer.player_mut()
                .enable_rtx(PLAYER_RTX_PT, 0x7200_0000 + n, 0x7000_0000 + n);
        }
        self.add_session(node, spec);
        self.peers.push(peer);
        let index = self.peers.len() - 1;
        self.pending.push(Pending {
            node,
            id,
            far: Far::Peer(index),
        });
        Browser {
            node,
            session: id,
            peer: index,
        }
    }

    /// A player's client pins its simulcast layer (`None`: the estimate chooses again), as
    /// signalling would on its request.
    pub fn pin_layer(&mut self, browser: Browser, layer: Option<u8>) {
        let n = &mut self.nodes[browser.node];
        n.core.handle_command(
            self.now,
            CoreCommand::PinLayer {
                id: browser.session,
                layer,
            },
            &mut n.sink,
        );
    }

    /// A simulcast player's layer as its node has it.
    pub fn player_layer(&self, browser: Browser) -> Option<PlayerLayer> {
        self.nodes[browser.node]
            .core
            .session(browser.session)?
            .player_layer()
    }

    /// A player's bandwidth estimate as its node has it, once measured.
    pub fn estimate(&self, browser: Browser) -> Option<u64> {
        self.nodes[browser.node]
            .core
            .session(browser.session)?
            .measured_bandwidth_estimate()
    }

    /// Relays `stream` from `origin` to `edge`, as the origin's CDN relay does: a publisher
    /// session on the edge, and a relay session (a player that checks the edge) on the origin.
    pub fn relay(&mut self, origin: usize, edge: usize, stream: &str) -> Relay {
        let edge_spec = self.spec(
            edge,
            stream,
            SessionRole::Publisher {
                tracks: publisher_tracks(),
            },
        );
        let edge_session = edge_spec.id;
        let n = self.next_session as u32;
        let mut origin_spec = self.spec(
            origin,
            stream,
            SessionRole::Relay {
                tracks: vec![
                    PlayedTrack {
                        kind: MediaKind::Video,
                        pt: VIDEO_PT,
                        ssrc: 0x8000_0000 + n,
                        rtx: None,
                        transport_cc: None,
                        layers: None,
                    },
                    PlayedTrack {
                        kind: MediaKind::Audio,
                        pt: AUDIO_PT,
                        ssrc: 0x8100_0000 + n,
                        rtx: None,
                        transport_cc: None,
                        layers: None,
                    },
                ],
                remote_candidates: vec![self.nodes[edge].addr],
                path: rtcdn::control::RelayPath::Udp,
                layers: None,
            },
        );
        // The two ends know each other's credentials from the offer and the answer.
        origin_spec.local_ice = edge_spec.remote_ice.clone();
        origin_spec.remote_ice = edge_spec.local_ice.clone();
        origin_spec.dtls_role = DtlsRole::Client;
        let origin_session = origin_spec.id;
        self.add_session(edge, edge_spec);
        self.add_session(origin, origin_spec);
        self.pending.push(Pending {
            node: edge,
            id: edge_session,
            far: Far::Relay(origin, origin_session),
        });
        Relay {
            origin,
            origin_session,
            edge,
            edge_session,
        }
    }

    /// Ends a session as signalling would (a WHEP DELETE).
    pub fn remove(&mut self, node: usize, id: SessionId) {
        if let Some(cdn) = self.cdn.as_mut().filter(|c| c.origin == node) {
            cdn.plane
                .handle_end_session(self.now, id, EndReason::Deleted);
            self.carry_out_control_actions();
            return;
        }
        let n = &mut self.nodes[node];
        n.core.handle_command(
            self.now,
            CoreCommand::RemoveSession {
                id,
                reason: EndReason::Deleted,
            },
            &mut n.sink,
        );
    }

    /// Sets both directions between a browser and its node.
    pub fn set_browser_link(&mut self, browser: Browser, config: LinkConfig) {
        let (a, b) = (self.peers[browser.peer].addr, self.nodes[browser.node].addr);
        self.net.set_path(a, b, config);
    }

    /// Sets the link from a browser's node to the browser: what it receives.
    pub fn set_downlink(&mut self, browser: Browser, config: LinkConfig) {
        let (node, peer) = (self.nodes[browser.node].addr, self.peers[browser.peer].addr);
        self.net.set_link(node, peer, config);
    }

    /// The address of the origin's socket for a relay, once opened.
    pub fn relay_addr(&self, relay: Relay) -> SocketAddr {
        self.nodes[relay.origin].relay_sockets[&relay.origin_session]
    }

    /// Sets both directions between a relay's two sockets.
    pub fn set_relay_link(&mut self, relay: Relay, config: LinkConfig) {
        let addr = self.relay_addr(relay);
        self.net.set_path(addr, self.nodes[relay.edge].addr, config);
    }

    /// Runs the world for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.step(until) {}
    }

    /// Runs until `done` holds, at most `limit`; returns whether it did.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let until = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(until) {
                return done(self);
            }
        }
    }

    /// Moves the clock to the earliest deadline (up to `until`), runs everything due and
    /// carries what it sent. Returns false once `until` is reached.
    fn step(&mut self, until: Instant) -> bool {
        let next = self
            .nodes
            .iter()
            .filter(|n| !n.down)
            .filter_map(|n| n.core.poll_timeout())
            .chain(self.peers.iter().filter_map(Peer::poll_timeout))
            .chain(self.net.poll_timeout())
            .chain(self.cdn.as_ref().and_then(|c| c.plane.poll_timeout()))
            .min()
            .map_or(until, |at| at.min(until));
        self.now = self.now.max(next);
        let now = self.now;
        for peer in &mut self.peers {
            if peer.poll_timeout().is_some_and(|at| at <= now) {
                peer.handle_timeout(now);
            }
        }
        for node in self.nodes.iter_mut().filter(|n| !n.down) {
            if node.core.poll_timeout().is_some_and(|at| at <= now) {
                node.core.handle_timeout(now, &mut node.sink);
            }
        }
        if let Some(cdn) = &mut self.cdn {
            if cdn.plane.poll_timeout().is_some_and(|at| at <= now) {
                cdn.plane.handle_timeout(now);
            }
        }
        while let Some(datagram) = self.net.poll_deliver(now) {
            self.delivered += 1;
            self.deliver(datagram.src, datagram.dst, datagram.bytes);
        }
        self.flush();
        self.now < until
    }

    fn deliver(&mut self, src: SocketAddr, dst: SocketAddr, mut bytes: Vec<u8>) {
        let now = self.now;
        for node in self.nodes.iter_mut().filter(|n| !n.down) {
            let socket = if node.addr == dst {
                Some(SocketId::MAIN)
            } else {
                node.sockets
                    .iter()
                    .find(|(_, addr)| **addr == dst)
                    .map(|(id, _)| *id)
            };
            if let Some(socket) = socket {
                node.core
                    .handle_datagram(now, socket, src, &mut bytes, &mut node.sink);
                return;
            }
        }
        if let Some(peer) = self.peers.iter_mut().find(|p| p.addr == dst) {
            peer.handle_datagram(now, src, &bytes);
        }
    }

    /// Puts everything the nodes and browsers sent on the network, handles the cores' socket
    /// requests and events, and keys the sessions whose ICE is up.
    fn flush(&mut self) {
        let now = self.now;
        for node in &mut self.nodes {
            node.core.end_batch(now, &mut node.sink);
        }
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            while let Some(request) = node.core.poll_socket_request() {
                match request {
                    SocketRequest::Open(spec) => {
                        let socket = SocketId(node.next_socket);
                        node.next_socket += 1;
                        let addr = SocketAddr::new(node.addr.ip(), 5000 + socket.0);
                        node.sockets.insert(socket, addr);
                        node.relay_sockets.insert(spec.id, addr);
                        node.core
                            .handle_socket_opened(now, *spec, socket, &mut node.sink);
                    }
                    SocketRequest::Close(socket) => {
                        node.sockets.remove(&socket);
                    }
                }
            }
            while let Some(event) = node.core.poll_event() {
                if let Some(cdn) = self.cdn.as_mut().filter(|c| c.origin == index) {
                    cdn.plane.handle_core_event(now, &event);
                }
                node.events.push((now, event));
            }
            let forwarded: Vec<_> = node.core.forward_sink_mut().drain().collect();
            assert!(
                forwarded.is_empty(),
                "one core per node: nothing crosses cores"
            );
            for sent in node.sink.drain().collect::<Vec<_>>() {
                let src = if sent.socket == SocketId::MAIN {
                    node.addr
                } else {
                    match node.sockets.get(&sent.socket) {
                        Some(addr) => *addr,
                        None => continue,
                    }
                };
                if !node.down {
                    self.net.send(now, src, sent.destination, &sent.contents);
                }
            }
        }
        for peer in &mut self.peers {
            while let Some((dst, bytes)) = peer.poll_transmit() {
                self.net.send(now, peer.addr, dst, &bytes);
            }
        }
        self.key_connected_sessions();
        self.carry_out_control_actions();
    }

    /// Carries out what the origin's control plane decided, as the node's transports do.
    fn carry_out_control_actions(&mut self) {
        let now = self.now;
        let mut acted = false;
        while let Some(action) = self.cdn.as_mut().and_then(|c| c.plane.poll_action()) {
            acted = true;
            let Some(cdn) = self.cdn.as_mut() else {
                return;
            };
            match action {
                ControlAction::Core { command, .. } => {
                    let origin = &mut self.nodes[cdn.origin];
                    origin.core.handle_command(now, command, &mut origin.sink);
                }
                // A relay session's news is its link's (`cdn::relay`).
                ControlAction::Status { session, status } => {
                    let attempt = cdn
                        .attempts
                        .iter()
                        .find(|(_, r)| r.origin_session == session)
                        .map(|(a, _)| *a);
                    let Some(attempt) = attempt else { continue };
                    match status {
                        SessionStatus::Connected => cdn.plane.handle_relay_up(now, attempt),
                        SessionStatus::MediaFlowing => {}
                        SessionStatus::Ended(reason) => {
                            cdn.attempts.remove(&attempt);
                            let failure = RelayEnd::Failed(RelayFailure::Session(reason));
                            cdn.plane.handle_relay_ended(now, attempt, &failure);
                        }
                    }
                }
                ControlAction::Relay(RelayOrder::Start {
                    attempt,
                    stream,
                    edge,
                    ..
                }) => {
                    let edge = edge.0 as usize;
                    cdn.starts.push((now, attempt, edge));
                    if self.nodes[edge].down {
                        let refused =
                            RelayEnd::Failed(RelayFailure::Link("connection refused".into()));
                        cdn.plane.handle_relay_ended(now, attempt, &refused);
                    } else {
                        let origin = cdn.origin;
                        let relay = self.relay(origin, edge, &stream);
                        if let Some(cdn) = self.cdn.as_mut() {
                            cdn.attempts.insert(attempt, relay);
                        }
                    }
                }
                ControlAction::Relay(RelayOrder::Stop { attempt }) => {
                    if let Some(relay) = cdn.attempts.remove(&attempt) {
                        cdn.plane
                            .handle_end_session(now, relay.origin_session, EndReason::Deleted);
                        self.remove(relay.edge, relay.edge_session);
                    }
                }
                ControlAction::Relay(RelayOrder::PassAcl { .. }) => {}
            }
        }
        if acted {
            self.flush();
        }
    }

    fn key_connected_sessions(&mut self) {
        let now = self.now;
        let mut keyed = Vec::new();
        for (i, pending) in self.pending.iter().enumerate() {
            let near_up = self.nodes[pending.node]
                .core
                .session(pending.id)
                .is_some_and(|s| s.remote().is_some());
            let far_up = match pending.far {
                Far::Peer(peer) => self.peers[peer].is_connected(),
                Far::Relay(node, id) => self.nodes[node]
                    .core
                    .session(id)
                    .is_some_and(|s| s.remote().is_some()),
            };
            if near_up && far_up {
                keyed.push(i);
            }
        }
        for i in keyed.into_iter().rev() {
            let pending = self.pending.remove(i);
            let node = &mut self.nodes[pending.node];
            node.core
                .connect_with_test_keys(now, pending.id, &mut node.sink);
            if let Far::Relay(origin, id) = pending.far {
                let origin = &mut self.nodes[origin];
                let keys = peer_test_keys();
                origin.core.handle_dtls_event(
                    now,
                    id,
                    DtlsEvent::Connected(keys),
                    &mut origin.sink,
                );
            }
        }
        if self.nodes.iter().any(|n| !n.sink.is_empty()) {
            self.flush();
        }
    }
}

/// A new core, holding bursts.
fn burst_ordered(mut core: MediaCore<NoDtls, ForwardQueue>) -> MediaCore<NoDtls, ForwardQueue> {
    core.set_burst_order(true, &mut MemorySink::new());
    core
}

fn publisher_tracks() -> Vec<PublishedTrack> {
    vec![vp8_track(VIDEO_PT), opus_track(AUDIO_PT)]
}
