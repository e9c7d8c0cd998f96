//! WHIP (RFC 9725) publish and WHEP play: an SDP offer in, a session on a core, an answer out.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};
use rand::Rng;
use tracing::info;

use super::{text, Signalling};
use crate::control::{CoreCommand, EndReason, SessionId, SessionRole, SessionSpec};
use crate::dtls::DtlsRole;
use crate::negotiate::{self, LocalParams, NegotiationError};
use crate::registry::{validate_stream_name, RegistryError};
use crate::sdp;

fn refuse_registry(error: RegistryError) -> Response<Full<Bytes>> {
    let status = match error {
        RegistryError::NameInUse(_) => StatusCode::CONFLICT,
        RegistryError::StreamNotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    text(status, error.to_string())
}

fn refuse_negotiation(error: NegotiationError) -> Response<Full<Bytes>> {
    text(StatusCode::BAD_REQUEST, error.to_string())
}

fn created(protocol: &str, stream: &str, id: SessionId, answer: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer)));
    *response.status_mut() = StatusCode::CREATED;
    let location = format!("/{protocol}/{stream}/{id}");
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(LOCATION, value);
    }
    response
}

fn new_session_params(state: &Signalling, core: usize) -> (SessionId, ice::IceCredentials, LocalParams) {
    let mut rng = rand::thread_rng();
    let id = SessionId(rng.gen::<u64>() | 1);
    let local_ice = ice::IceCredentials::random(&mut rng);
    let local = LocalParams {
        ice_ufrag: local_ice.ufrag.clone(),
        ice_pwd: local_ice.pwd.clone(),
        fingerprint: state.certificate.fingerprint(),
        candidates: state.cores[core].candidates.clone(),
    };
    (id, local_ice, local)
}

fn remote_params(offer: &sdp::SessionDescription) -> Result<(ice::IceCredentials, [u8; 32], DtlsRole), NegotiationError> {
    let fingerprint = offer.fingerprint.as_ref().ok_or(sdp::SdpError::MissingFingerprint)?;
    let remote_ice = ice::IceCredentials { ufrag: offer.ice_ufrag.clone(), pwd: offer.ice_pwd.clone() };
    Ok((remote_ice, fingerprint.0, negotiate::dtls_setup(offer).1))
}

/// `POST /whip/{stream}`.
pub fn publish(state: &Signalling, stream: &str, offer_text: &str) -> Response<Full<Bytes>> {
    if let Err(e) = state.registry().check_publish(stream) {
        return refuse_registry(e);
    }
    let offer = match sdp::parse(offer_text) {
        Ok(offer) => offer,
        Err(e) => return refuse_negotiation(e.into()),
    };
    let (remote_ice, remote_fingerprint, dtls_role) = match remote_params(&offer) {
        Ok(params) => params,
        Err(e) => return refuse_negotiation(e),
    };
    let mut registry = state.registry();
    let core = registry.least_loaded_core();
    let (id, local_ice, local) = new_session_params(state, core.0);
    let answer = match negotiate::answer_publisher(&offer, &local) {
        Ok(answer) => answer,
        Err(e) => return refuse_negotiation(e),
    };
    let stream_id = match registry.add_publisher(stream, id, core, answer.stream_tracks) {
        Ok(stream_id) => stream_id,
        Err(e) => return refuse_registry(e),
    };
    drop(registry);
    let spec = SessionSpec {
        id,
        stream: stream_id,
        stream_name: stream.to_owned(),
        role: SessionRole::Publisher { tracks: answer.tracks },
        local_ice,
        remote_ice,
        remote_fingerprint,
        dtls_role,
        publisher_core: Some(core),
    };
    state.cores[core.0].send(CoreCommand::AddSession(Box::new(spec)));
    info!(session = %id, stream, core = core.0, "WHIP publish accepted");
    created("whip", stream, id, answer.sdp)
}

/// `POST /whep/{stream}`.
pub fn play(state: &Signalling, stream: &str, offer_text: &str) -> Response<Full<Bytes>> {
    if let Err(e) = validate_stream_name(stream) {
        return refuse_registry(e);
    }
    let Some(stream_entry) = state.registry().stream(stream).cloned() else {
        return refuse_registry(RegistryError::StreamNotFound(stream.to_owned()));
    };
    let offer = match sdp::parse(offer_text) {
        Ok(offer) => offer,
        Err(e) => return refuse_negotiation(e.into()),
    };
    let (remote_ice, remote_fingerprint, dtls_role) = match remote_params(&offer) {
        Ok(params) => params,
        Err(e) => return refuse_negotiation(e),
    };
    let mut registry = state.registry();
    let core = registry.least_loaded_core();
    let (id, local_ice, local) = new_session_params(state, core.0);
    let mut rng = rand::thread_rng();
    let answer = match negotiate::answer_player(&offer, stream, &stream_entry.tracks, &local, || rng.gen::<u32>() | 1) {
        Ok(answer) => answer,
        Err(e) => return refuse_negotiation(e),
    };
    // The stream may have ended while we negotiated: the registry has the final word.
    let commands = match registry.add_player(stream, id, core) {
        Ok(commands) => commands,
        Err(e) => return refuse_registry(e),
    };
    let publisher_core = registry.stream(stream).map(|s| s.core);
    let stream_id = registry.stream(stream).map(|s| s.id).unwrap_or(stream_entry.id);
    drop(registry);
    state.dispatch(commands);
    let spec = SessionSpec {
        id,
        stream: stream_id,
        stream_name: stream.to_owned(),
        role: SessionRole::Player { tracks: answer.tracks },
        local_ice,
        remote_ice,
        remote_fingerprint,
        dtls_role,
        publisher_core,
    };
    state.cores[core.0].send(CoreCommand::AddSession(Box::new(spec)));
    info!(session = %id, stream, core = core.0, "WHEP play accepted");
    created("whep", stream, id, answer.sdp)
}

/// `DELETE /whip/{stream}/{session}` and `DELETE /whep/{stream}/{session}`.
pub fn delete(state: &Signalling, session: &str) -> Response<Full<Bytes>> {
    let Ok(raw) = u64::from_str_radix(session, 16) else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    let id = SessionId(raw);
    let mut registry = state.registry();
    let Some(entry) = registry.session(id).cloned() else {
        return text(StatusCode::NOT_FOUND, "no such session (it ended or never existed)");
    };
    let mut commands = registry.remove_session(id);
    drop(registry);
    commands.push((entry.core, CoreCommand::RemoveSession { id, reason: EndReason::Deleted }));
    state.dispatch(commands);
    text(StatusCode::OK, "session ended")
}
