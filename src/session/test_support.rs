//! What the session tests share: a spec, a session connected with fixed SRTP keys and the
//! peer's side of those keys, and the RTP packets they feed it.

use std::time::{Duration, Instant};

use rtp::srtp::{SrtpContext, SrtpProfile};
use rtp::{Pt, RtpHeader, RtpHeaderBuilder, Ssrc};

use super::{Session, SessionTimeouts};
use crate::control::{SessionId, SessionRole, SessionSpec, StreamId};
use crate::dtls::{DtlsRole, SrtpKeyingMaterial};

/// A publisher of no tracks, for tests to give the role they need.
pub(super) fn publisher_spec() -> SessionSpec {
    SessionSpec {
        id: SessionId(1),
        stream: StreamId(1),
        stream_name: "s".into(),
        role: SessionRole::Publisher { tracks: Vec::new() },
        local_ice: ice::IceCredentials {
            ufrag: "locl".into(),
            pwd: "local-password-0123456789".into(),
        },
        remote_ice: ice::IceCredentials {
            ufrag: "remt".into(),
            pwd: "remote-password-0123456789".into(),
        },
        remote_fingerprint: [0; 32],
        dtls_role: DtlsRole::Client,
        publisher_core: None,
    }
}

/// A session of `spec` with ICE skipped and DTLS done: fixed SRTP keys (the peer's side is
/// [`peer_context`]).
pub(super) fn connected_with_test_keys(spec: SessionSpec, now: Instant) -> Session {
    let timeouts = SessionTimeouts {
        connect: Duration::from_secs(10),
        consent: Duration::from_secs(30),
    };
    let mut session = Session::new(spec, now, timeouts, 7);
    let keys = SrtpKeyingMaterial {
        profile: SrtpProfile::AeadAes128Gcm,
        local_key: vec![1; 16],
        local_salt: vec![2; 12],
        remote_key: vec![3; 16],
        remote_salt: vec![4; 12],
    };
    session.handle_dtls_connected(keys, now);
    session
}

/// The peer's side of [`connected_with_test_keys`]'s keys: `receiving` what the session
/// sends, or sending what it receives.
pub(super) fn peer_context(receiving: bool) -> SrtpContext {
    let (key, salt) = if receiving { (1, 2) } else { (3, 4) };
    SrtpContext::new(SrtpProfile::AeadAes128Gcm, &[key; 16], &[salt; 12]).unwrap()
}

/// The datagram a peer sends for the RTP packet `plain`: protected with `tx` (a
/// [`peer_context`] that is not `receiving`).
pub(super) fn srtp_datagram(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    buf[..plain.len()].copy_from_slice(plain);
    let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    buf[..n].to_vec()
}

/// A 200-byte RTP packet of PT 100, its payload filled with the low byte of `seq`.
pub(super) fn source_packet(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 200];
    RtpHeaderBuilder::new(Pt::new(100), seq, u32::from(seq) * 3000, Ssrc(ssrc))
        .write_to(&mut p)
        .unwrap();
    p[12..].fill(seq as u8);
    p
}

/// A VP8 packet; `rid` in extension `ext` when given; a keyframe start when `key`.
pub(super) fn layer_packet(
    pt: u8,
    ssrc: u32,
    seq: u16,
    rid: Option<(u8, &[u8])>,
    key: bool,
) -> Vec<u8> {
    let ext: Vec<rtp::ExtensionElement<'_>> = rid
        .map(|(id, data)| rtp::ExtensionElement { id, data })
        .into_iter()
        .collect();
    let mut header = RtpHeaderBuilder::new(Pt::new(pt), seq, u32::from(seq) * 3000, Ssrc(ssrc));
    header.extensions = &ext;
    let mut p = vec![0u8; header.encoded_len() + 20];
    let at = header.write_to(&mut p).unwrap();
    // VP8 payload descriptor with S=1, PID 0; then a frame header whose P bit (0 for a
    // keyframe) starts the payload.
    p[at] = 0x10;
    p[at + 1] = if key { 0x00 } else { 0x01 };
    p
}

/// A packet's header extension elements, as (id, data) pairs in their order.
pub(super) fn extension_elements(header: &RtpHeader<'_>) -> Vec<(u8, Vec<u8>)> {
    header
        .extensions()
        .into_iter()
        .flat_map(|e| e.iter())
        .map(|e| (e.id, e.data.to_vec()))
        .collect()
}
