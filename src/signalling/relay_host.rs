//! The node's side of its CDN relays: what a relay link asks of it (a relay session registered
//! and placed on the publisher's core, that session's status) and what it reports (its relay
//! is up, or ended), all through the control plane signalling holds.

use tokio::sync::mpsc::UnboundedSender;

use super::{media, Signalling, Watcher};
use crate::cdn::relay::{RelayHost, RelaySession, RelayTap};
use crate::control::relay_planner::{AttemptId, RelayEnd, RelayState};
use crate::control::status::SessionStatus;
use crate::control::{
    CoreCommand, EgressSpec, EndReason, RelayPath, SessionId, SessionRole, SessionSpec, StreamId,
};
use crate::media::egress_channel;

/// Packets an RTMP push's tap holds: a second and a half of a 2.5 Mbit/s stream and its audio,
/// time for a slow edge connection to catch up before frames are skipped.
const RELAY_TAP_PACKETS: usize = 512;

impl RelayHost for Signalling {
    fn open_relay_session(
        &self,
        session: RelaySession,
        status: UnboundedSender<SessionStatus>,
    ) -> Option<SessionId> {
        let id = super::media::new_session_id();
        let spec = SessionSpec {
            id,
            stream: session.stream_id,
            stream_name: session.stream,
            role: SessionRole::Relay {
                tracks: session.tracks,
                remote_candidates: session.remote_candidates,
                path: session.path,
                layers: session.layers,
            },
            local_ice: session.local_ice,
            remote_ice: session.remote_ice,
            remote_fingerprint: session.remote_fingerprint,
            dtls_role: session.dtls_role,
            publisher_core: None,
        };
        // Watched before the plane's actions are carried out: an end of the stream reaches
        // the link after its session started, both as a status and on the core's queue.
        self.control(|plane, now| {
            plane.handle_relay_session(now, spec).ok()?;
            self.watch(id, Watcher::Typed(status));
            Some(id)
        })
    }

    fn open_relay_tap(
        &self,
        stream: &str,
        stream_id: StreamId,
        layer: u8,
        audio: bool,
        status: UnboundedSender<SessionStatus>,
    ) -> Option<RelayTap> {
        let id = media::new_session_id();
        let (tap, receiver) = egress_channel(RELAY_TAP_PACKETS);
        let spec = EgressSpec {
            id,
            stream: stream_id,
            stream_name: stream.to_owned(),
            layer,
            audio,
            tap,
        };
        // Watched with the plane held: the stream's end cannot come in between.
        self.control(|plane, now| {
            let core = plane.handle_relay_egress(now, spec).ok()?;
            self.watch(id, Watcher::Typed(status));
            Some(RelayTap { id, core, receiver })
        })
    }

    fn request_keyframe(&self, tap: &RelayTap) {
        self.cores[tap.core.0].send(CoreCommand::RequestKeyframe { id: tap.id });
    }

    fn close_relay_session(&self, id: SessionId) {
        self.unwatch(id);
        media::end_session(self, id, EndReason::Deleted);
    }

    fn relay_up(&self, attempt: AttemptId, path: RelayPath) {
        self.control(|plane, now| {
            plane.handle_relay_up(now, attempt);
            plane.handle_relay_path(attempt, path);
        });
    }

    fn relay_ended(&self, attempt: AttemptId, end: &RelayEnd) -> Option<RelayState> {
        self.control(|plane, now| plane.handle_relay_ended(now, attempt, end))
    }
}
