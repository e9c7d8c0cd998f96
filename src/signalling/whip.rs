//! WHIP (RFC 9725) publish and WHEP play: an SDP offer in, a session on a core, an answer out.
//!
//! A resource's URL ends in a secret ([`ResourceSecret`]) that only its creator learns, from the
//! `Location` of the `201`: listings show the session's public id, which ends nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, CONTENT_TYPE, LINK, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Response, StatusCode};

use super::media::{self, HookStanding, StartError};
use super::pull::PullFailure;
use super::{text, Signalling};
use crate::auth::{Action, AuthError, Credentials};
use crate::control::registry::{ClientInfo, RegistryError, ResourceSecret, SessionKind};
use crate::control::{EndReason, SessionId};

/// The answer to a request the auth policy refused: 401 (with `WWW-Authenticate`, RFC 6750)
/// when a token could make it work, else 403.
pub(crate) fn auth_refusal(error: &AuthError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = text(status, error.to_string());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"rtcdn\""),
        );
    }
    response
}

fn refuse(error: StartError) -> Response<Full<Bytes>> {
    let status = match &error {
        StartError::Auth(e) => return auth_refusal(e),
        StartError::Registry(RegistryError::NameInUse(_)) => StatusCode::CONFLICT,
        StartError::Registry(RegistryError::StreamNotFound(_)) => StatusCode::NOT_FOUND,
        StartError::Pull(PullFailure::NotInCdn) => StatusCode::NOT_FOUND,
        StartError::Pull(PullFailure::Origin(_)) => StatusCode::BAD_GATEWAY,
        StartError::Draining => {
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
        _ => StatusCode::BAD_REQUEST,
    };
    text(status, error.to_string())
}

fn created(
    state: &Signalling,
    protocol: &str,
    stream: &str,
    started: media::Started,
) -> Response<Full<Bytes>> {
    let secret = ResourceSecret::new(rand::random());
    state.control(|plane, _| plane.handle_resource_created(started.id, secret));
    let mut response = Response::new(Full::new(Bytes::from(started.answer)));
    *response.status_mut() = StatusCode::CREATED;
    let location = format!("/{protocol}/{stream}/{secret}");
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(LOCATION, value);
    }
    // The session's public id tags its TURN username, so coturn's log names the session.
    append_links(state, &started.id.to_string(), headers);
    response
}

/// The `Link: <…>; rel="ice-server"` headers, credentials minted for `tag`.
fn append_links(state: &Signalling, tag: &str, headers: &mut HeaderMap) {
    if state.ice_servers.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for link in state.ice_servers.links(now, tag) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.append(LINK, value);
        }
    }
}

/// `OPTIONS /whip/{stream}` and `OPTIONS /whep/{stream}`: the ICE servers a client should use,
/// for clients that create their peer connection before they POST (the built-in page). Only
/// for a client the policy's token rule lets publish or play the stream (a REST hook is asked
/// at the POST): TURN credentials are not for anyone who asks.
pub fn add_ice_server_links(
    state: &Signalling,
    protocol: &str,
    stream: &str,
    credentials: &Credentials,
    headers: &mut HeaderMap,
) {
    // Withholding the links is no refusal to count: the POST that follows is checked.
    if state
        .auth
        .would_allow(action_of(protocol).0, stream, credentials)
    {
        let tag = format!("{:016x}", rand::random::<u64>());
        append_links(state, &tag, headers);
    }
}

/// `POST /whip/{stream}` and `POST /whep/{stream}`.
pub async fn start(
    state: &Signalling,
    protocol: &str,
    stream: &str,
    offer: &str,
    credentials: &Credentials,
    layer: Option<&str>,
    client: ClientInfo,
) -> Response<Full<Bytes>> {
    let (action, _) = action_of(protocol);
    let fields = media::http_stream_fields(stream, action == Action::Publish);
    let authorized = match media::authorize(
        state,
        action,
        stream,
        credentials,
        HookStanding::Request,
        &fields,
    )
    .await
    {
        Ok(authorized) => authorized,
        Err(e) => return auth_refusal(&e),
    };
    if action == Action::Publish {
        if let Err(e) = media::claim_in_cluster(state, stream, &authorized).await {
            return refuse(e.into());
        }
    }
    let pulled = match action {
        Action::Play => super::pull::pull_in_cluster(state, stream).await,
        Action::Publish => Ok(()),
    };
    let started = match action {
        Action::Publish => media::start_publish(state, stream, offer, authorized, client),
        Action::Play => media::start_play(
            state,
            stream,
            offer,
            authorized,
            credentials.acl_key.as_deref(),
            layer,
            client,
        ),
    };
    match super::pull::explain_missing(started, pulled) {
        Ok(started) => created(state, protocol, stream, started),
        Err(e) => refuse(e),
    }
}

/// Whether a request on an existing resource may go on: the policy's token rule applies; a
/// REST hook is not asked again (it allowed the POST, and the URL's secret proves the client).
fn check_resource_request(
    state: &Signalling,
    action: Action,
    stream: &str,
    credentials: &Credentials,
) -> Result<(), AuthError> {
    state.auth.check(action, stream, credentials).map(|_| ())
}

fn action_of(protocol: &str) -> (Action, SessionKind) {
    if protocol == "whip" {
        (Action::Publish, SessionKind::Publisher)
    } else {
        (Action::Play, SessionKind::Player)
    }
}

/// `PATCH /whip/{stream}/{resource}`: checked like the POST, then refused: RFC 9725 §4.3.1 lets
/// a server without trickle ICE answer 405; rtcdn puts every candidate in the answer.
pub fn patch(
    state: &Signalling,
    protocol: &str,
    stream: &str,
    credentials: &Credentials,
) -> Response<Full<Bytes>> {
    if let Err(e) = check_resource_request(state, action_of(protocol).0, stream, credentials) {
        return auth_refusal(&e);
    }
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported: all candidates are in the answer",
    )
}

/// `DELETE /whip/{stream}/{resource}` and `DELETE /whep/{stream}/{resource}`: `resource` is the
/// secret of the session's `Location`, and the path must name the session's own protocol and
/// stream (a player's URL cannot end a publisher). With the admin token, `resource` may be a
/// session's public id instead.
pub fn delete(
    state: &Signalling,
    protocol: &str,
    stream: &str,
    resource: &str,
    credentials: &Credentials,
) -> Response<Full<Bytes>> {
    let (action, kind) = action_of(protocol);
    let admin = state.auth.is_admin_token(credentials.token.as_deref());
    if !admin {
        if let Err(e) = check_resource_request(state, action, stream, credentials) {
            return auth_refusal(&e);
        }
    }
    let session = {
        let registry = state.registry();
        let by_secret = ResourceSecret::parse(resource).and_then(|s| registry.resource(s));
        let by_public_id = || {
            let id = u64::from_str_radix(resource, 16).ok().map(SessionId)?;
            registry.session(id)
        };
        by_secret
            .or_else(|| admin.then(by_public_id).flatten())
            .filter(|entry| entry.kind == kind && entry.stream_name == stream)
            .map(|entry| entry.id)
    };
    let reason = if admin {
        EndReason::Terminated
    } else {
        EndReason::Deleted
    };
    if session.is_some_and(|id| media::end_session(state, id, reason)) {
        text(StatusCode::OK, "session ended")
    } else {
        text(
            StatusCode::NOT_FOUND,
            "no such session (it ended or never existed)",
        )
    }
}

/// `GET /whip/{stream}/{resource}` and `GET /whep/{stream}/{resource}`: how the session of a
/// resource URL stands, for its client (the URL's secret proves it): `{"state": "live",
/// "connected"}` while it lives, `{"state": "ended", "reason", "code"}` for a while after it
/// ended (see `Registry::ended`), so that a page whose connection dropped can say why. 404
/// otherwise.
pub fn resource_state(
    state: &Signalling,
    protocol: &str,
    stream: &str,
    resource: &str,
) -> Response<Full<Bytes>> {
    let (_, kind) = action_of(protocol);
    let answer = ResourceSecret::parse(resource).and_then(|secret| {
        let registry = state.registry();
        if let Some(entry) = registry.resource(secret) {
            return (entry.kind == kind && entry.stream_name == stream).then(|| {
                serde_json::json!({ "state": "live", "connected": entry.connected })
            });
        }
        registry.ended(secret).map(|reason| {
            serde_json::json!({ "state": "ended", "reason": reason.to_string(), "code": reason.code() })
        })
    });
    match answer {
        Some(body) => super::control_api::json_response(&body),
        None => text(
            StatusCode::NOT_FOUND,
            "no such session (it ended long ago or never existed)",
        ),
    }
}
