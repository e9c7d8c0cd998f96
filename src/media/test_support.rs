//! What the harnesses that drive a [`MediaCore`](super::MediaCore) by hand share (its
//! behaviour tests, the simulator, the `session_input` fuzz target): the specs and tracks of the
//! sessions they open, and a test peer's side of the fixed test keys ([`peer_test_keys`]).
//! Public so that tests outside the crate reach it; never for real peers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials};
use rtp::srtp::SrtpContext;

use super::{peer_test_keys, Datagram, MediaCoreConfig};
use crate::control::{CoreId, PublishedTrack, SessionId, SessionRole, SessionSpec, StreamId};
use crate::dtls::DtlsRole;
use crate::sdp::MediaKind;
use crate::session::SessionTimeouts;

/// A core `id`'s config with the timeouts the harnesses use (10 s to connect, 30 s of consent)
/// and `seed` for its randomness.
pub fn core_config(id: CoreId, seed: u64) -> MediaCoreConfig {
    MediaCoreConfig {
        id,
        timeouts: SessionTimeouts {
            connect: Duration::from_secs(10),
            consent: Duration::from_secs(30),
        },
        seed,
    }
}

/// The spec of a session the harness's core answers as the DTLS server (keyed with the test
/// keys, so no fingerprint is checked), with its ICE credentials and the peer's, the stream's
/// publisher on core 0.
pub fn core_session_spec(
    id: SessionId,
    stream: StreamId,
    stream_name: &str,
    role: SessionRole,
    local_ice: IceCredentials,
    remote_ice: IceCredentials,
) -> SessionSpec {
    SessionSpec {
        id,
        stream,
        stream_name: stream_name.into(),
        role,
        local_ice,
        remote_ice,
        remote_fingerprint: [0; 32],
        dtls_role: DtlsRole::Server,
        publisher_core: Some(CoreId(0)),
    }
}

/// A published VP8 video track on payload type `pt`, without rtx, transport-cc or simulcast.
pub fn vp8_track(pt: u8) -> PublishedTrack {
    PublishedTrack {
        kind: MediaKind::Video,
        pt,
        clock_rate: 90_000,
        codec: "VP8".into(),
        rtx_pt: None,
        rtx_ssrcs: None,
        transport_cc: None,
        simulcast: None,
    }
}

/// A published Opus audio track on payload type `pt`, without transport-cc.
pub fn opus_track(pt: u8) -> PublishedTrack {
    PublishedTrack {
        kind: MediaKind::Audio,
        pt,
        clock_rate: 48_000,
        codec: "opus".into(),
        ..vp8_track(pt)
    }
}

/// The peer's controlling ICE agent of a session of `spec` on a core at `core_addr`: the
/// spec's credentials the other way round, the session id as its tie-breaker, its checks
/// started at `now`.
pub fn peer_agent(spec: &SessionSpec, core_addr: SocketAddr, now: Instant) -> IceControllingAgent {
    IceControllingAgent::new(
        spec.remote_ice.clone(),
        spec.local_ice.clone(),
        vec![core_addr],
        spec.id.0,
        now,
    )
}

/// A test peer's SRTP contexts: `(tx, rx)`, what it protects its packets with and what it
/// unprotects the core's with.
pub fn peer_srtp() -> (SrtpContext, SrtpContext) {
    let keys = peer_test_keys();
    let context = |key: &[u8], salt: &[u8]| {
        SrtpContext::new(keys.profile, key, salt).expect("the test keys make a context")
    };
    (
        context(&keys.local_key, &keys.local_salt),
        context(&keys.remote_key, &keys.remote_salt),
    )
}

/// What a test peer made of a datagram from a core ([`receive_from_core`]).
#[derive(Debug, PartialEq, Eq)]
pub enum FromCore<'a> {
    /// STUN, handed to the peer's ICE agent.
    Stun,
    /// SRTP, unprotected: the RTP packet.
    Rtp(&'a [u8]),
    /// SRTCP, unprotected: the RTCP packet (compound or not).
    Rtcp(&'a [u8]),
    /// SRTP or SRTCP that did not unprotect.
    Undecryptable(Datagram),
    /// DTLS, or something RFC 7983 does not name.
    Other(Datagram),
}

/// A test peer's side of a keyed session taking a datagram `from` the core: STUN goes to its
/// ICE `agent` (whatever the agent makes of it), SRTP and SRTCP are unprotected in place with
/// its `rx` context ([`peer_srtp`]).
pub fn receive_from_core<'a>(
    agent: &mut IceControllingAgent,
    rx: &mut SrtpContext,
    now: Instant,
    from: SocketAddr,
    data: &'a mut [u8],
) -> FromCore<'a> {
    let class = Datagram::classify(data);
    let opened = match class {
        Datagram::Stun => {
            let _ = agent.handle_packet(now, from, data);
            return FromCore::Stun;
        }
        Datagram::Rtp => rx.unprotect_rtp(data),
        Datagram::Rtcp => rx.unprotect_rtcp(data),
        Datagram::Dtls | Datagram::Unknown => return FromCore::Other(class),
    };
    match (opened, class) {
        (Ok(len), Datagram::Rtp) => FromCore::Rtp(&data[..len]),
        (Ok(len), _) => FromCore::Rtcp(&data[..len]),
        (Err(_), _) => FromCore::Undecryptable(class),
    }
}
