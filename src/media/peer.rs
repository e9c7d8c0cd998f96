//! One session as its core keeps it: the sans-IO [`Session`], the socket its datagrams use, and
//! what the router and the timers note about it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::control::SessionId;
use crate::media::timers::entry_to_push;
use crate::media::tx::SocketId;
use crate::session::Session;
use crate::simulcast::{LayerChooser, LayerEstimate};

/// Candidate paths a client session's checks came on that are remembered: a browser checks its
/// UDP and TCP candidates side by side.
const PATHS: usize = 4;

/// A core's sessions by id.
pub(super) type Peers = HashMap<SessionId, Peer>;

/// One session on a core.
pub(super) struct Peer {
    pub(super) session: Session,
    /// The socket the session's datagrams use: the core's own, or a relay's private one (two
    /// relays to the same edge core must not share a 5-tuple).
    /// A client session's socket follows its selected path: the core's UDP socket or the ICE-TCP
    /// connection its checks came on (see [`Peer::note_path`]).
    pub(super) socket: SocketId,
    /// A relay session to another node: `socket` is its own (a UDP socket, or the TCP
    /// connection it opened), closed when it ends, and never changes.
    pub(super) own_socket: bool,
    /// The socket each of the client's recent check sources used, newest at `next - 1`, so
    /// that every answer leaves on the socket its check arrived on.
    paths: [Option<(SocketAddr, SocketId)>; PATHS],
    next_path: usize,
    /// A new player whose video waits for the keyframe replay from the publisher's core:
    /// live video is held back until it arrives, so the player's first packet is the keyframe.
    pub(super) awaiting_replay: bool,
    /// The timer entry that counts for this session (see `timers`).
    pub(super) armed: Option<Instant>,
    /// A simulcast player waiting for its target layer's keyframe: when to ask for it (again).
    pub(super) layer_request_at: Option<Instant>,
    /// An unpinned simulcast player's layer choice over time (its trials of the layer above).
    pub(super) layer_chooser: LayerChooser,
    /// The estimate its layer is chosen by.
    pub(super) layer_estimate: LayerEstimate,
}

impl Peer {
    /// A session on `socket`; `own_socket`: a relay's, opened for it alone.
    pub(super) fn new(session: Session, socket: SocketId, own_socket: bool) -> Peer {
        Peer {
            session,
            socket,
            own_socket,
            paths: [None; PATHS],
            next_path: 0,
            awaiting_replay: false,
            armed: None,
            layer_request_at: None,
            layer_chooser: LayerChooser::default(),
            layer_estimate: LayerEstimate::default(),
        }
    }

    /// A check from `src` arrived on `socket`. Relays (on a socket of their own) keep theirs.
    pub(super) fn note_path(&mut self, socket: SocketId, src: SocketAddr) {
        if !self.follows_paths() || self.paths.iter().flatten().any(|&p| p == (src, socket)) {
            return;
        }
        self.paths[self.next_path] = Some((src, socket));
        self.next_path = (self.next_path + 1) % PATHS;
    }

    /// Forgets the path `(src, socket)` (its connection closed); returns whether another
    /// path is left.
    pub(super) fn forget_path(&mut self, socket: SocketId, src: SocketAddr) -> bool {
        for path in &mut self.paths {
            if *path == Some((src, socket)) {
                *path = None;
            }
        }
        self.paths.iter().any(Option::is_some)
    }

    /// The socket that reaches `dst`: the one its last check came on, else the session's.
    pub(super) fn socket_for(&self, dst: SocketAddr) -> SocketId {
        if !self.follows_paths() {
            return self.socket;
        }
        (0..PATHS)
            .map(|k| (self.next_path + PATHS - 1 - k) % PATHS)
            .filter_map(|i| self.paths[i])
            .find(|&(addr, _)| addr == dst)
            .map_or(SocketId::MAIN, |(_, socket)| socket)
    }

    /// A client session (on the core's own socket or an ICE-TCP connection), not a relay.
    fn follows_paths(&self) -> bool {
        !self.own_socket
    }

    /// When the core must next visit this session: its own timers, or a layer's keyframe to ask
    /// for.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match (self.session.poll_timeout(), self.layer_request_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms this session's timer: the entry to push into the timer heap for its next deadline
    /// (no earlier than `floor`), noted as the one that counts; `None` when an entry at or before
    /// it is there already (see `timers`).
    pub(super) fn next_entry(&mut self, floor: Option<Instant>) -> Option<Instant> {
        let next = self
            .next_deadline()
            .map(|at| floor.map_or(at, |floor| at.max(floor)));
        let at = entry_to_push(self.armed, next)?;
        self.armed = Some(at);
        Some(at)
    }

    /// The simulcast layer this player is to start on, or waits for: its target (0 without
    /// simulcast).
    pub(super) fn target_layer(&self) -> u8 {
        self.session.video_layers().map_or(0, |(_, target)| target)
    }

    /// Whether this simulcast player waits for a keyframe of its target layer.
    pub(super) fn switching_layer(&self) -> bool {
        self.session
            .video_layers()
            .is_some_and(|(current, target)| current != Some(target))
    }
}
