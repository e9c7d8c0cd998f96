//! The node's side of its CDN relays: what a relay link asks of it (a live stream's tracks, a
//! relay session registered and placed on the publisher's core, that session's status), done on
//! the registry and cores signalling holds.

use tokio::sync::mpsc::UnboundedSender;

use super::{media, Signalling, Watcher};
use crate::cdn::relay::{RelayHost, RelaySession, RelayedStream};
use crate::control::status::SessionStatus;
use crate::control::{CoreCommand, EndReason, SessionId, SessionRole, SessionSpec};

impl RelayHost for Signalling {
    fn relayed_stream(&self, name: &str) -> Option<RelayedStream> {
        self.registry().stream(name).map(|s| RelayedStream {
            id: s.id,
            tracks: s.tracks.clone(),
            acl: s.acl.clone(),
        })
    }

    fn open_relay_session(
        &self,
        session: RelaySession,
        status: UnboundedSender<SessionStatus>,
    ) -> Option<SessionId> {
        let id = SessionId(rand::random::<u64>() | 1);
        // Under the registry's lock until the core has the session: an end of the stream comes
        // after it, both to the watcher and on the core's queue.
        let mut registry = self.registry();
        if registry.stream(&session.stream).map(|s| s.id) != Some(session.stream_id) {
            return None;
        }
        let core = registry.add_relay(&session.stream, id).ok()?;
        self.watch(id, Watcher::Typed(status));
        let spec = SessionSpec {
            id,
            stream: session.stream_id,
            stream_name: session.stream,
            role: SessionRole::Relay {
                tracks: session.tracks,
                remote_candidates: session.remote_candidates,
                layers: session.layers,
            },
            local_ice: session.local_ice,
            remote_ice: session.remote_ice,
            remote_fingerprint: session.remote_fingerprint,
            dtls_role: session.dtls_role,
            publisher_core: Some(core),
        };
        self.cores[core.0].send(CoreCommand::AddSession(Box::new(spec)));
        drop(registry);
        Some(id)
    }

    fn close_relay_session(&self, id: SessionId) {
        self.unwatch(id);
        media::end_session(self, id, EndReason::Deleted);
    }
}
