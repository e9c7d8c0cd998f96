//! WHIP (RFC 9725) publish and WHEP play: an SDP offer in, a session on a core, an answer out.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};

use super::media::{self, StartError};
use super::{text, Signalling};
use crate::control::SessionId;
use crate::registry::{RegistryError, SessionKind};

fn refuse(error: StartError) -> Response<Full<Bytes>> {
    let status = match &error {
        StartError::Registry(RegistryError::NameInUse(_)) => StatusCode::CONFLICT,
        StartError::Registry(RegistryError::StreamNotFound(_)) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    text(status, error.to_string())
}

fn created(protocol: &str, stream: &str, started: media::Started) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(started.answer)));
    *response.status_mut() = StatusCode::CREATED;
    let location = format!("/{protocol}/{stream}/{}", started.id);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(LOCATION, value);
    }
    response
}

/// `POST /whip/{stream}`.
pub fn publish(state: &Signalling, stream: &str, offer: &str) -> Response<Full<Bytes>> {
    match media::start_publish(state, stream, offer) {
        Ok(started) => created("whip", stream, started),
        Err(e) => refuse(e),
    }
}

/// `POST /whep/{stream}`.
pub fn play(state: &Signalling, stream: &str, offer: &str) -> Response<Full<Bytes>> {
    match media::start_play(state, stream, offer) {
        Ok(started) => created("whep", stream, started),
        Err(e) => refuse(e),
    }
}

/// `DELETE /whip/{stream}/{session}` and `DELETE /whep/{stream}/{session}`. The path must name
/// the session's own protocol and stream: a player's id cannot end a publisher.
pub fn delete(
    state: &Signalling,
    protocol: &str,
    stream: &str,
    session: &str,
) -> Response<Full<Bytes>> {
    let id = u64::from_str_radix(session, 16).ok().map(SessionId);
    let want = if protocol == "whip" {
        SessionKind::Publisher
    } else {
        SessionKind::Player
    };
    let matches = id
        .and_then(|id| state.registry().session(id).cloned())
        .is_some_and(|entry| entry.kind == want && entry.stream_name == stream);
    if matches && id.is_some_and(|id| media::end_session(state, id)) {
        text(StatusCode::OK, "session ended")
    } else {
        text(
            StatusCode::NOT_FOUND,
            "no such session (it ended or never existed)",
        )
    }
}
