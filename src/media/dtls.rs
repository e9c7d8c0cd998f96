//! How a media core gets its sessions' DTLS handshakes done without doing IO itself.
//!
//! The `dtls` crate is not sans-IO: on a real node each handshake runs as a task (see
//! [`crate::dtls::DtlsTransport`] and the reactor's starter), and its outcome comes back to the
//! core as a [`DtlsEvent`](crate::dtls::DtlsEvent) through `MediaCore::handle_dtls_event`. The
//! core only starts a handshake when ICE connects ([`DtlsStarter`]), hands it the records that
//! arrive and closes it ([`DtlsAssociation`]). [`NoDtls`] starts nothing, for driving a core with
//! no threads at all: its sessions are keyed with fixed keys instead
//! (`MediaCore::connect_with_test_keys`, the peer's side from [`peer_test_keys`]).

use rtp::srtp::SrtpProfile;

use crate::control::SessionId;
use crate::dtls::{DtlsRole, SrtpKeyingMaterial};

/// Starts the DTLS handshake of a session whose ICE connected.
pub trait DtlsStarter {
    /// One session's handshake (and, once connected, its association).
    type Association: DtlsAssociation;

    /// Starts session `id`'s handshake in `role` with a peer whose certificate must hash to
    /// `remote_fingerprint`. What comes of it reaches the core as DTLS events for `id`.
    fn start(
        &mut self,
        id: SessionId,
        role: DtlsRole,
        remote_fingerprint: [u8; 32],
    ) -> Self::Association;
}

/// One session's DTLS, as the core sees it.
pub trait DtlsAssociation {
    /// A DTLS datagram from the peer.
    fn handle_record(&self, record: &[u8]);
    /// Sends close_notify (as a `Transmit` event, when connected) and stops.
    fn close(&self);
}

/// A [`DtlsStarter`] that starts nothing: DTLS records are dropped, and sessions are keyed
/// with fixed keys through `MediaCore::connect_with_test_keys`. For tests, simulations and
/// fuzzing; a real peer's handshake never completes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDtls;

/// The association of [`NoDtls`]: ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAssociation;

impl DtlsStarter for NoDtls {
    type Association = NoAssociation;

    fn start(&mut self, _: SessionId, _: DtlsRole, _: [u8; 32]) -> NoAssociation {
        NoAssociation
    }
}

impl DtlsAssociation for NoAssociation {
    fn handle_record(&self, _: &[u8]) {}
    fn close(&self) {}
}

/// The fixed SRTP keys `MediaCore::connect_with_test_keys` installs, as the core uses them:
/// AES-128-GCM, local key `[1; 16]` and salt `[2; 12]`, remote key `[3; 16]` and salt `[4; 12]`
/// (the keys of the session unit tests). Never for real peers.
#[doc(hidden)]
pub fn test_keys() -> SrtpKeyingMaterial {
    SrtpKeyingMaterial {
        profile: SrtpProfile::AeadAes128Gcm,
        local_key: vec![1; 16],
        local_salt: vec![2; 12],
        remote_key: vec![3; 16],
        remote_salt: vec![4; 12],
    }
}

/// [`test_keys`] as the peer uses them (local and remote swapped): what a test client protects
/// its packets with and unprotects the core's with.
#[doc(hidden)]
pub fn peer_test_keys() -> SrtpKeyingMaterial {
    let keys = test_keys();
    SrtpKeyingMaterial {
        profile: keys.profile,
        local_key: keys.remote_key,
        local_salt: keys.remote_salt,
        remote_key: keys.local_key,
        remote_salt: keys.local_salt,
    }
}
