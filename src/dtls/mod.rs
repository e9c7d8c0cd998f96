//! DTLS for media sessions: the handshake driver around the dtls crate (0.17), SRTP key export,
//! and a record layer of our own for after the handshake. An IO room: the dtls crate is not
//! sans-IO, so every handshake runs as a task on a tokio runtime owned by another thread, behind
//! a channel-fed `webrtc_util::conn::Conn`.
//!
//! A media core (`crate::media`) starts a handshake when a session's ICE connects, through the
//! reactor's starter, which creates a [`DtlsTransport`]. The core hands it every DTLS datagram
//! of the session's peer (RFC 7983, told apart by `crate::media::demux`) through
//! [`DtlsTransport::handle_record`] and sends every [`DtlsEvent::Transmit`] to the peer. Once
//! connected, the exported SRTP keys go back to the core as [`DtlsEvent::Connected`]; SRTP
//! itself is the session's (`crate::session`). Tests, the simulator and the fuzz targets key
//! sessions without DTLS (`crate::media::NoDtls`); the real-socket and browser tests cover this.
//!
//! Each transport costs one task of ours plus the two tasks `dtls::conn::DTLSConn::new` spawns
//! (a record reader and a record writer); all of them end when the transport is dropped. In the
//! client role they end as soon as the handshake is done: a small record layer of our own
//! ([`record`]) handles the alerts that may still come, on the caller's thread.

mod cert;
mod conn;
pub(crate) mod guard;
pub(crate) mod record;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ::dtls::cipher_suite::CipherSuiteId;
use ::dtls::config::{ClientAuthType, Config, ExtendedMasterSecretType};
use ::dtls::conn::DTLSConn;
use ::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtp::srtp::SrtpProfile;
use tokio::sync::{mpsc, Notify};
use webrtc_util::KeyingMaterialExporter;

pub use cert::DtlsCertificate;
use conn::{ChanConn, Sink};
use guard::HandshakeGuard;
use record::EstablishedRecords;

/// Errors of certificate handling and of a DTLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// The handshake failed (protocol error, fatal alert from the peer, no common cipher...).
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    /// The peer's certificate does not hash to the `a=fingerprint` from its SDP.
    #[error("DTLS peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    /// The peer did not agree on any of our SRTP protection profiles.
    #[error("no SRTP protection profile negotiated")]
    NoSrtpProfile,
    /// Loading or generating our certificate failed.
    #[error("DTLS certificate: {0}")]
    Certificate(String),
    /// Exporting the SRTP keying material failed.
    #[error("SRTP key export: {0}")]
    KeyExport(String),
    /// The handshake did not complete within the handshake timeout.
    #[error("DTLS handshake timed out")]
    Timeout,
}

/// Our DTLS role. With `a=setup:active` in our SDP we are the `Client`; with `passive`, the
/// `Server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    Client,
    Server,
}

/// SRTP master keys and salts from the DTLS exporter (RFC 5764 §4.2), split by direction:
/// `local_*` protect what we send, `remote_*` what we receive.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeyingMaterial {
    pub profile: SrtpProfile,
    pub local_key: Vec<u8>,
    pub local_salt: Vec<u8>,
    pub remote_key: Vec<u8>,
    pub remote_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeyingMaterial {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeyingMaterial")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl SrtpKeyingMaterial {
    /// Splits the exporter output `client_key | server_key | client_salt | server_salt`.
    pub fn from_exported(
        profile: SrtpProfile,
        role: DtlsRole,
        material: &[u8],
    ) -> Result<Self, DtlsError> {
        let (k, s) = (profile.key_len(), profile.salt_len());
        if material.len() != 2 * (k + s) {
            return Err(DtlsError::KeyExport(format!(
                "expected {} bytes of keying material, got {}",
                2 * (k + s),
                material.len()
            )));
        }
        let client_key = &material[..k];
        let server_key = &material[k..2 * k];
        let client_salt = &material[2 * k..2 * k + s];
        let server_salt = &material[2 * k + s..];
        let (local_key, local_salt, remote_key, remote_salt) = match role {
            DtlsRole::Client => (client_key, client_salt, server_key, server_salt),
            DtlsRole::Server => (server_key, server_salt, client_key, client_salt),
        };
        Ok(SrtpKeyingMaterial {
            profile,
            local_key: local_key.to_vec(),
            local_salt: local_salt.to_vec(),
            remote_key: remote_key.to_vec(),
            remote_salt: remote_salt.to_vec(),
        })
    }
}

/// What a [`DtlsTransport`] reports through its `on_event` callback.
#[derive(Debug, Clone)]
pub enum DtlsEvent {
    /// A datagram to send to the peer (one or more DTLS records, at most `mtu` bytes of
    /// handshake payload per record).
    Transmit(Vec<u8>),
    /// The handshake completed and the peer's certificate matched the fingerprint.
    Connected(SrtpKeyingMaterial),
    /// The handshake failed. Terminal.
    Failed(DtlsError),
    /// After `Connected`: the peer sent close_notify or a fatal alert. Terminal.
    Closed,
}

/// Tunables of a [`DtlsTransport`]; `Default` is what [`DtlsTransport::start`] uses.
#[derive(Debug, Clone)]
pub struct DtlsTransportConfig {
    /// Fail with [`DtlsError::Timeout`] if the handshake has not completed by then.
    pub handshake_timeout: Duration,
    /// SRTP profiles we offer (client) / accept (server), in order of preference.
    pub srtp_profiles: Vec<SrtpProfile>,
    /// Maximum handshake fragment size per record (the dtls crate's `mtu`).
    pub mtu: usize,
    /// Extended master secret (RFC 7627): required by default; Chromium and Firefox send it.
    pub require_extended_master_secret: bool,
}

impl Default for DtlsTransportConfig {
    fn default() -> Self {
        DtlsTransportConfig {
            handshake_timeout: Duration::from_secs(15),
            srtp_profiles: vec![SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80],
            mtu: 1200,
            require_extended_master_secret: true,
        }
    }
}

/// How long a transport that was `close()`d and then dropped may still run to get its
/// close_notify out.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One peer's DTLS association (see the module docs).
pub struct DtlsTransport {
    records: mpsc::Sender<Vec<u8>>,
    /// Set when the handshake task handed the association over to our own record layer.
    established: Arc<OnceLock<EstablishedRecords>>,
    sink: Arc<Sink>,
    /// What the dtls crate's reader may be given (only the reactor thread locks it).
    guard: Mutex<HandshakeGuard>,
    close: Arc<Notify>,
    closing: AtomicBool,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DtlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsTransport").finish_non_exhaustive()
    }
}

impl DtlsTransport {
    /// Starts the handshake on `runtime` with the default [`DtlsTransportConfig`].
    ///
    /// Every event, including outgoing records, is delivered by calling `on_event` from a tokio
    /// worker thread; it must be cheap and must not block. `remote_fingerprint` is the SHA-256
    /// from the peer's `a=fingerprint`; the peer's leaf certificate must hash to it.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        role: DtlsRole,
        certificate: &DtlsCertificate,
        remote_fingerprint: [u8; 32],
        on_event: Arc<dyn Fn(DtlsEvent) + Send + Sync>,
    ) -> Self {
        Self::start_with_config(
            runtime,
            role,
            certificate,
            remote_fingerprint,
            DtlsTransportConfig::default(),
            on_event,
        )
    }

    /// [`DtlsTransport::start`] with explicit tunables.
    pub fn start_with_config(
        runtime: &tokio::runtime::Handle,
        role: DtlsRole,
        certificate: &DtlsCertificate,
        remote_fingerprint: [u8; 32],
        config: DtlsTransportConfig,
        on_event: Arc<dyn Fn(DtlsEvent) + Send + Sync>,
    ) -> Self {
        let (records, rx) = mpsc::channel(conn::INBOUND_QUEUE);
        let sink = Arc::new(Sink::new(on_event));
        let close = Arc::new(Notify::new());
        let established = Arc::new(OnceLock::new());
        let driver = Driver {
            role,
            certificate: certificate.clone(),
            remote_fingerprint,
            config,
            conn: Arc::new(ChanConn::new(rx, Arc::clone(&sink))),
            sink: Arc::clone(&sink),
            close: Arc::clone(&close),
            established: Arc::clone(&established),
        };
        let task = runtime.spawn(driver.run());
        DtlsTransport {
            records,
            established,
            sink,
            guard: Mutex::new(HandshakeGuard::default()),
            close,
            closing: AtomicBool::new(false),
            task,
        }
    }

    /// Feeds one incoming DTLS datagram. Never blocks: if the transport is backlogged or gone,
    /// the datagram is dropped (the peer retransmits handshake flights).
    pub fn handle_record(&self, record: &[u8]) {
        if record.is_empty() || self.closing.load(Ordering::Relaxed) {
            return;
        }
        if let Some(established) = self.established.get() {
            if established.ends_association(record) {
                tracing::debug!("dtls: the peer closed the association");
                self.sink.terminal(DtlsEvent::Closed);
            }
            return;
        }
        let admitted = self
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(record);
        if let Err(why) = admitted {
            tracing::debug!(len = record.len(), %why, "dtls: dropped a datagram");
            return;
        }
        if self.sink.is_connected() && guard::has_plaintext_alert(record) {
            tracing::debug!(
                len = record.len(),
                "dtls: dropped an unauthenticated (plaintext) alert after the handshake"
            );
            return;
        }
        if self.records.try_send(record.to_vec()).is_err() {
            tracing::trace!(
                len = record.len(),
                "dtls: inbound queue full or closed, record dropped"
            );
        }
    }

    /// Sends close_notify (if connected; delivered as `Transmit`) and stops. After this returns,
    /// `on_event` only receives that `Transmit`, even if the transport is dropped right away.
    pub fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.sink.finish();
            match self.established.get() {
                Some(established) => self.sink.transmit(established.close_notify()),
                None => self.close.notify_one(),
            }
        }
    }
}

impl Drop for DtlsTransport {
    fn drop(&mut self) {
        if self.closing.load(Ordering::Acquire) {
            // Let the task send close_notify; it exits on its own (bounded by CLOSE_GRACE).
            return;
        }
        self.sink.stop();
        self.task.abort();
    }
}

struct Driver {
    role: DtlsRole,
    certificate: DtlsCertificate,
    remote_fingerprint: [u8; 32],
    config: DtlsTransportConfig,
    conn: Arc<ChanConn>,
    sink: Arc<Sink>,
    close: Arc<Notify>,
    established: Arc<OnceLock<EstablishedRecords>>,
}

impl Driver {
    async fn run(self) {
        let mismatch = Arc::new(AtomicBool::new(false));
        let dtls_config = self.dtls_config(Arc::clone(&mismatch));
        let is_client = self.role == DtlsRole::Client;

        let handshake = tokio::time::timeout(
            self.config.handshake_timeout,
            DTLSConn::new(self.conn.clone(), dtls_config, is_client, None),
        );
        let dtls = tokio::select! {
            result = handshake => match result {
                Ok(Ok(dtls)) => dtls,
                Ok(Err(e)) => {
                    let err = if mismatch.load(Ordering::Acquire) {
                        DtlsError::FingerprintMismatch
                    } else {
                        DtlsError::Handshake(e.to_string())
                    };
                    tracing::debug!(role = ?self.role, %err, "dtls handshake failed");
                    self.sink.terminal(DtlsEvent::Failed(err));
                    return;
                }
                Err(_elapsed) => {
                    self.sink.terminal(DtlsEvent::Failed(DtlsError::Timeout));
                    return;
                }
            },
            // Closed during the handshake: dropping the handshake future drops the DTLSConn
            // and with it the dtls crate's tasks.
            _ = self.close.notified() => return,
        };

        match self.keying_material(&dtls).await {
            Ok(keys) if is_client => {
                // The server's Finished has arrived: nothing of the handshake is left to
                // retransmit, so the connection (and its tasks and buffers) can go. The record
                // layer is in place before anyone learns that the session is connected.
                if let Some(records) = self.record_layer(&dtls).await {
                    let _ = self.established.set(records);
                    self.sink.connected(DtlsEvent::Connected(keys));
                    return;
                }
                self.sink.connected(DtlsEvent::Connected(keys));
            }
            Ok(keys) => self.sink.connected(DtlsEvent::Connected(keys)),
            Err(err) => {
                tracing::debug!(role = ?self.role, %err, "dtls post-handshake check failed");
                let _ = tokio::time::timeout(CLOSE_GRACE, dtls.close()).await;
                self.sink.terminal(DtlsEvent::Failed(err));
                return;
            }
        }

        // Keep reading so that close_notify / fatal alerts are noticed; application data
        // (there is none in WebRTC without data channels over this transport) is dropped, so
        // the buffer only has to be there.
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                result = dtls.read(&mut buf, None) => match result {
                    Ok(_) | Err(::dtls::Error::ErrBufferTooSmall) => {}
                    Err(e) => {
                        tracing::debug!(role = ?self.role, error = %e, "dtls connection ended");
                        self.sink.terminal(DtlsEvent::Closed);
                        return;
                    }
                },
                _ = self.close.notified() => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, dtls.close()).await;
                    return;
                }
            }
        }
    }

    /// Our record layer for the association, if the negotiated suite is the one it supports.
    async fn record_layer(&self, dtls: &DTLSConn) -> Option<EstablishedRecords> {
        let state = dtls.connection_state().await;
        let secrets = state.key_log_data().ok()?;
        EstablishedRecords::derive(
            self.role,
            &secrets.local_random,
            &secrets.remote_random,
            &secrets.master_secret,
        )
    }

    fn dtls_config(&self, mismatch: Arc<AtomicBool>) -> Config {
        let expected = self.remote_fingerprint;
        let verify = move |certs: &[Vec<u8>], _chains: &[_]| -> Result<(), ::dtls::Error> {
            match certs.first() {
                Some(leaf) if cert::sha256(leaf) == expected => Ok(()),
                _ => {
                    mismatch.store(true, Ordering::Release);
                    Err(::dtls::Error::Other(
                        "certificate fingerprint mismatch".into(),
                    ))
                }
            }
        };
        Config {
            certificates: vec![self.certificate.dtls_certificate()],
            srtp_protection_profiles: self
                .config
                .srtp_profiles
                .iter()
                .map(|&p| to_dtls_profile(p))
                .collect(),
            // As server: make the client send its certificate so that it can be checked.
            client_auth: ClientAuthType::RequireAnyClientCert,
            // WebRTC certificates are self-signed; trust comes from the SDP fingerprint.
            insecure_skip_verify: true,
            verify_peer_certificate: Some(Arc::new(verify)),
            extended_master_secret: if self.config.require_extended_master_secret {
                ExtendedMasterSecretType::Require
            } else {
                ExtendedMasterSecretType::Request
            },
            mtu: self.config.mtu,
            // Sent as SNI by the client. Without it the crate would use "localhost" (and warn),
            // since our Conn has no remote address.
            server_name: "rtcdn".to_owned(),
            // As client we offer only the suites our post-handshake record layer speaks (the
            // same record protection; RSA for peers with RSA certificates, as GStreamer's
            // default one is). As server the crate's defaults stay.
            cipher_suites: if self.role == DtlsRole::Client {
                vec![
                    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
                    CipherSuiteId::Tls_Ecdhe_Rsa_With_Aes_128_Gcm_Sha256,
                ]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    async fn keying_material(&self, dtls: &DTLSConn) -> Result<SrtpKeyingMaterial, DtlsError> {
        let state = dtls.connection_state().await;
        // The crate already ran the callback; check again on the final state in case a code path
        // skipped it (e.g. a future resumption path).
        match state.peer_certificates.first() {
            Some(leaf) if cert::sha256(leaf) == self.remote_fingerprint => {}
            Some(_) => return Err(DtlsError::FingerprintMismatch),
            None => return Err(DtlsError::Handshake("peer sent no certificate".into())),
        }
        let profile = from_dtls_profile(dtls.selected_srtpprotection_profile())
            .filter(|p| self.config.srtp_profiles.contains(p))
            .ok_or(DtlsError::NoSrtpProfile)?;
        let len = 2 * (profile.key_len() + profile.salt_len());
        let material = state
            .export_keying_material("EXTRACTOR-dtls_srtp", &[], len)
            .await
            .map_err(|e| DtlsError::KeyExport(e.to_string()))?;
        SrtpKeyingMaterial::from_exported(profile, self.role, &material)
    }
}

fn to_dtls_profile(p: SrtpProfile) -> SrtpProtectionProfile {
    match p {
        SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        SrtpProfile::Aes128CmHmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    }
}

fn from_dtls_profile(p: SrtpProtectionProfile) -> Option<SrtpProfile> {
    match p {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(SrtpProfile::AeadAes128Gcm),
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
            Some(SrtpProfile::Aes128CmHmacSha1_80)
        }
        _ => None,
    }
}
