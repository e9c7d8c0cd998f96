//! One session as its core keeps it: the sans-IO [`Session`], the socket its datagrams use, and
//! what the router and the timers note about it.

use std::collections::HashMap;
use std::time::Instant;

use crate::control::SessionId;
use crate::media::timers::entry_to_push;
use crate::media::tx::SocketId;
use crate::session::Session;
use crate::simulcast::{LayerChooser, LayerEstimate};

/// A core's sessions by id.
pub(super) type Peers = HashMap<SessionId, Peer>;

/// One session on a core.
pub(super) struct Peer {
    pub(super) session: Session,
    /// The socket the session's datagrams use: the core's own, or a relay's private one (two
    /// relays to the same edge core must not share a 5-tuple).
    pub(super) socket: SocketId,
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
    pub(super) fn new(session: Session, socket: SocketId) -> Peer {
        Peer {
            session,
            socket,
            awaiting_replay: false,
            armed: None,
            layer_request_at: None,
            layer_chooser: LayerChooser::default(),
            layer_estimate: LayerEstimate::default(),
        }
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
