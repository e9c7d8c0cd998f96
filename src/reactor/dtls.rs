//! DTLS for a real node's media core: each handshake runs as a task on the signalling runtime
//! ([`DtlsTransport`]), and reports back to its core through a channel, waking the core's poll.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use crate::control::SessionId;
use crate::dtls::{DtlsCertificate, DtlsEvent, DtlsRole, DtlsTransport};
use crate::media::{DtlsAssociation, DtlsStarter};
use crate::reactor::io::Waker;

/// Starts a core's handshakes as tasks on `runtime`; their events come out of the receiver
/// [`HandshakeTasks::new`] returns, for `MediaCore::handle_dtls_event`.
pub(super) struct HandshakeTasks {
    runtime: tokio::runtime::Handle,
    certificate: DtlsCertificate,
    events: Sender<(SessionId, DtlsEvent)>,
    waker: Waker,
}

impl HandshakeTasks {
    /// Handshakes with `certificate` on `runtime`, whose events wake the core with `waker`.
    pub(super) fn new(
        runtime: tokio::runtime::Handle,
        certificate: DtlsCertificate,
        waker: Waker,
    ) -> (HandshakeTasks, Receiver<(SessionId, DtlsEvent)>) {
        let (events, receiver) = std::sync::mpsc::channel();
        let tasks = HandshakeTasks {
            runtime,
            certificate,
            events,
            waker,
        };
        (tasks, receiver)
    }
}

impl DtlsStarter for HandshakeTasks {
    type Association = DtlsTransport;

    fn start(
        &mut self,
        id: SessionId,
        role: DtlsRole,
        remote_fingerprint: [u8; 32],
    ) -> DtlsTransport {
        let sender = self.events.clone();
        let waker = self.waker.clone();
        let on_event = Arc::new(move |event: DtlsEvent| {
            let _ = sender.send((id, event));
            waker.wake();
        });
        DtlsTransport::start(
            &self.runtime,
            role,
            &self.certificate,
            remote_fingerprint,
            on_event,
        )
    }
}

impl DtlsAssociation for DtlsTransport {
    fn handle_record(&self, record: &[u8]) {
        DtlsTransport::handle_record(self, record);
    }

    fn close(&self) {
        DtlsTransport::close(self);
    }
}
