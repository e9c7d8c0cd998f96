//! Starting and ending media sessions, shared by every signalling protocol (WHIP/WHEP and the
//! Flashphoner WebSocket protocol): negotiate, register, place on a core.

use rand::Rng;
use tracing::info;

use serde_json::{json, Value};

use super::Signalling;
use crate::auth::{
    Action, AuthError, Authorized, Credentials, HookError, HookMethod, HookSession, RefusedKind,
    Verdict,
};
use crate::control::plane::PlayError;
use crate::control::registry::{validate_stream_name, ClientInfo, RegistryError};
use crate::control::{EndReason, SessionId, SessionRole, SessionSpec, StreamId};
use crate::dtls::DtlsRole;
use crate::negotiate::{self, LocalParams, NegotiationError};
use crate::sdp;

/// Why a publish or play could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The client may not do this.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The name is taken, unknown or invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The offer cannot be answered.
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
    /// A stream this node pulls from another node of the cluster is not here.
    #[error(transparent)]
    Pull(#[from] super::pull::PullFailure),
    /// The node drains: it takes no new sessions.
    #[error(
        "this node is draining (shutting down) and takes no new sessions: connect to another node"
    )]
    Draining,
}

/// A session that was placed on a core.
pub struct Started {
    /// The session.
    pub id: SessionId,
    /// The SDP answer for the client.
    pub answer: String,
}

/// A fresh session id: random, so that ids do not reveal how many sessions the node served,
/// and never 0.
pub(crate) fn new_session_id() -> SessionId {
    SessionId(rand::random::<u64>() | 1)
}

fn new_session_params(
    state: &Signalling,
    core: usize,
) -> (SessionId, ice::IceCredentials, LocalParams) {
    let mut rng = rand::thread_rng();
    let id = new_session_id();
    let local_ice = ice::IceCredentials::random(&mut rng);
    let local = LocalParams {
        ice_ufrag: local_ice.ufrag.clone(),
        ice_pwd: local_ice.pwd.clone(),
        fingerprint: state.certificate.fingerprint(),
        candidates: state.cores[core].candidates.clone(),
        tcp_candidates: state.cores[core].tcp_candidates.clone(),
    };
    (id, local_ice, local)
}

fn remote_params(
    offer: &sdp::SessionDescription,
) -> Result<(ice::IceCredentials, [u8; 32], DtlsRole), NegotiationError> {
    let fingerprint = offer
        .fingerprint
        .as_ref()
        .ok_or(sdp::SdpError::MissingFingerprint)?;
    let remote_ice = ice::IceCredentials {
        ufrag: offer.ice_ufrag.clone(),
        pwd: offer.ice_pwd.clone(),
    };
    Ok((remote_ice, fingerprint.0, negotiate::dtls_setup(offer).1))
}

/// Where a client's standing with the application's REST hooks comes from.
pub enum HookStanding<'a> {
    /// A WebSocket client: its `connect` hook was asked when it connected (`None` when no
    /// policy used hooks then).
    Connected(Option<&'a HookSession>),
    /// A WHIP/WHEP request: `connect` is asked first, as appKey `defaultApp`, with the bearer
    /// token as `custom.token`.
    Request,
}

/// Whether a client may do `action` on the stream `name`: the policy, then the application's
/// REST hook where the policy says so. `fields` describe the stream to the hook
/// (`mediaSessionId`, `name`, `published`, ...).
pub async fn authorize(
    state: &Signalling,
    action: Action,
    name: &str,
    credentials: &Credentials,
    standing: HookStanding<'_>,
    fields: &Value,
) -> Result<Authorized, AuthError> {
    if let Verdict::Allowed(authorized) = state.auth.check(action, name, credentials)? {
        return Ok(authorized);
    }
    ask_hooks(state, action, credentials, standing, fields)
        .await
        .inspect_err(|e| state.auth.count_refusal(action.into(), e))
}

/// The REST hook's answer on what [`authorize`]'s policy left to it.
async fn ask_hooks(
    state: &Signalling,
    action: Action,
    credentials: &Credentials,
    standing: HookStanding<'_>,
    fields: &Value,
) -> Result<Authorized, AuthError> {
    let no_connect = || HookError::Failed {
        method: HookMethod::Connect.name(),
        why: "the connection was not checked by the connect hook".into(),
    };
    let hooks = state.auth.hooks().ok_or_else(no_connect)?;
    let asked;
    let session = match standing {
        HookStanding::Connected(session) => session.ok_or_else(no_connect)?,
        HookStanding::Request => {
            let custom = match &credentials.token {
                Some(token) => json!({ "token": token }),
                None => json!({}),
            };
            let connection = json!({
                "appKey": "defaultApp",
                "mediaProviders": ["WebRTC"],
                "custom": custom,
            });
            let session_id = crate::wcs_protocol::client::media_session_id();
            asked = hooks
                .connect("defaultApp", &session_id, &connection)
                .await?;
            &asked
        }
    };
    let method = match action {
        Action::Publish => HookMethod::PublishStream,
        Action::Play => HookMethod::PlayStream,
    };
    hooks.stream(session, method, fields).await?;
    Ok(Authorized::Hook)
}

/// Claims `stream` in the cluster for a publish, when the node is in one: refused, as a taken
/// name is refused on one node ("Stream name is already in use"), when another node of the
/// cluster publishes it. A name live on this node is left to the control plane (which refuses
/// it, or lets an authorized publisher supersede an unconnected one; the cluster task claims
/// the new publication), and so is a relay of the static CDN, whose origin owns the stream.
pub async fn claim_in_cluster(
    state: &Signalling,
    stream: &str,
    authorized: &Authorized,
) -> Result<(), RegistryError> {
    let Some(cluster) = &state.cluster else {
        return Ok(());
    };
    validate_stream_name(stream)?;
    if *authorized == Authorized::Relay || state.registry().stream(stream).is_some() {
        return Ok(());
    }
    cluster.claim(stream).await.map_err(|refused| {
        info!(stream, why = %refused, "publish refused: the name is taken in the cluster");
        RegistryError::NameInUse(stream.to_owned())
    })
}

/// Publishes `stream` with an SDP offer, for a client [`authorize`] let through. The control
/// plane decides whether the name may be taken; an authorized client (a relay of this CDN, a
/// token or hook holder) supersedes a publisher of the name that has not connected yet, so an
/// offer that never connects cannot keep the name.
pub fn start_publish(
    state: &Signalling,
    stream: &str,
    offer_text: &str,
    authorized: Authorized,
    mut client: ClientInfo,
) -> Result<Started, StartError> {
    validate_stream_name(stream)?;
    if state.drain.is_draining() {
        return Err(StartError::Draining);
    }
    client.relay = matches!(authorized, Authorized::Relay);
    let supersedes = matches!(
        authorized,
        Authorized::Relay | Authorized::Token { .. } | Authorized::Hook
    );
    let superseded = state.control(|plane, now| {
        plane.handle_publish_requested(now, stream, supersedes, client.relay)
    })?;
    if let Some(publisher) = superseded {
        info!(session = %publisher, stream, "an unconnected publisher gave its name up to an authorized one");
    }
    let offer = sdp::parse(offer_text).map_err(NegotiationError::from)?;
    let (remote_ice, remote_fingerprint, dtls_role) = remote_params(&offer)?;
    // Negotiated under the plane's lock: the name cannot be taken meanwhile.
    let (id, core, answer) = state.control(|plane, now| -> Result<_, StartError> {
        // A relay taking over an orphaned stream runs where the stream's players' routes start.
        let core = plane.registry().core_for_publisher(stream);
        let (id, local_ice, local) = new_session_params(state, core.0);
        let answer = negotiate::answer_publisher(&offer, &local)?;
        let spec = SessionSpec {
            id,
            stream: StreamId(0),
            stream_name: stream.to_owned(),
            role: SessionRole::Publisher {
                tracks: answer.tracks,
            },
            local_ice,
            remote_ice,
            remote_fingerprint,
            dtls_role,
            publisher_core: Some(core),
        };
        plane.handle_publish(now, core, spec, answer.stream_tracks, client.clone())?;
        Ok((id, core, answer.sdp))
    })?;
    info!(session = %id, stream, core = core.0, by = ?authorized, peer = %client.peer_text(), user_agent = client.user_agent.as_deref().unwrap_or("-"), "publish accepted");
    Ok(Started { id, answer })
}

/// Plays `stream` with an SDP offer, for a client [`authorize`] let through that presented
/// `acl_key` (the control plane checks it against the stream's access list).
pub fn start_play(
    state: &Signalling,
    stream: &str,
    offer_text: &str,
    authorized: Authorized,
    acl_key: Option<&str>,
    layer: Option<&str>,
    client: ClientInfo,
) -> Result<Started, StartError> {
    validate_stream_name(stream)?;
    if state.drain.is_draining() {
        return Err(StartError::Draining);
    }
    let stream_entry = state
        .registry()
        .stream(stream)
        .cloned()
        .ok_or_else(|| RegistryError::StreamNotFound(stream.to_owned()))?;
    let offer = sdp::parse(offer_text).map_err(NegotiationError::from)?;
    let (remote_ice, remote_fingerprint, dtls_role) = remote_params(&offer)?;
    // The stream may end, be replaced, or have its access list changed while we negotiate: the
    // control plane decides, under the same lock.
    let (id, core, answer) = state.control(|plane, now| -> Result<_, StartError> {
        let core = plane.registry().least_loaded_core();
        let (id, local_ice, local) = new_session_params(state, core.0);
        let mut rng = rand::thread_rng();
        let tracks = &stream_entry.tracks;
        let answer = negotiate::answer_player(&offer, stream, tracks, &local, layer, || {
            rng.gen::<u32>() | 1
        })?;
        let spec = SessionSpec {
            id,
            stream: stream_entry.id,
            stream_name: stream.to_owned(),
            role: SessionRole::Player {
                tracks: answer.tracks,
            },
            local_ice,
            remote_ice,
            remote_fingerprint,
            dtls_role,
            publisher_core: Some(stream_entry.core),
        };
        plane
            .handle_play(now, core, spec, acl_key.map(str::to_owned), client.clone())
            .map_err(|e| match e {
                PlayError::Registry(e) => StartError::Registry(e),
                PlayError::RestrictedAccess => {
                    let refused = AuthError::RestrictedAccess;
                    state.auth.count_refusal(RefusedKind::Play, &refused);
                    refused.into()
                }
            })?;
        Ok((id, core, answer.sdp))
    })?;
    info!(session = %id, stream, core = core.0, by = ?authorized, peer = %client.peer_text(), user_agent = client.user_agent.as_deref().unwrap_or("-"), "play accepted");
    Ok(Started { id, answer })
}

/// The stream fields a WHIP/WHEP request shows a REST hook, as a Flashphoner client's
/// `publishStream` / `playStream` would.
pub fn http_stream_fields(name: &str, published: bool) -> Value {
    json!({
        "mediaSessionId": crate::wcs_protocol::client::media_session_id(),
        "name": name,
        "published": published,
        "hasVideo": true,
        "hasAudio": true,
        "status": "PENDING",
        "record": false,
        "mediaProvider": "WebRTC",
    })
}

/// Ends a session at the client's (or an administrator's) request. Returns false when it is
/// unknown (already ended).
pub fn end_session(state: &Signalling, id: SessionId, reason: EndReason) -> bool {
    state.control(|plane, now| plane.handle_end_session(now, id, reason))
}
