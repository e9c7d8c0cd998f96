//! One Flashphoner WebSocket session: what each client message does. The socket loop in
//! [`super`] feeds text frames in; every frame out goes through the session's queue, the same
//! queue the media cores' notifications use, so a client sees `setRemoteSDP` before the
//! `PUBLISHING` that follows it.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use crate::auth::{Action, Credentials, HookSession};
use crate::control::registry::RegistryError;
use crate::control::registry::{AclChange, ClientInfo};
use crate::control::{EndReason, SessionId};
use crate::negotiate::NegotiationError;
use crate::signalling::media::{self, HookStanding, StartError};
use crate::signalling::{ClientWatcher, Signalling, Watcher};
use crate::wcs_protocol::frames::{
    self, fail_frame, failed_frame, frame, str_field, StreamDescription,
};

/// A stream this WebSocket session publishes or plays.
struct OwnStream {
    session: SessionId,
    description: StreamDescription,
}

/// One WebSocket client.
pub struct Connection {
    peer: SocketAddr,
    /// The peer and its upgrade request's `User-Agent`, for the sessions it starts.
    client: ClientInfo,
    out: UnboundedSender<String>,
    established: bool,
    /// What its `connection` presented (`custom.token`, `custom.relayToken`).
    credentials: Credentials,
    /// What the application's `connect` REST hook said, when a policy uses hooks.
    hook: Option<HookSession>,
    streams: HashMap<String, OwnStream>,
}

/// The `info` a FAILED status carries for a refused publish or play.
fn start_error_info(error: &StartError) -> String {
    match error {
        StartError::Auth(e) => e.wcs_info(),
        StartError::Registry(RegistryError::NameInUse(_)) => "Stream name is already in use".into(),
        StartError::Registry(RegistryError::StreamNotFound(_)) => "Stream not found".into(),
        StartError::Pull(failure) => failure.wcs_info().into(),
        StartError::Negotiation(NegotiationError::NothingToPlay(why)) => {
            format!("No common codecs: {why}")
        }
        StartError::Negotiation(NegotiationError::NothingToPublish) => {
            format!("No common codecs: {error}")
        }
        other => format!("Failed by error: {other}"),
    }
}

/// The `keys` of a relay's access list message (or of its `publishStream`'s `rtcdnAcl`).
pub(crate) fn relayed_keys(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()
        .or_else(|| value.get("keys")?.as_array())?
        .iter()
        .map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// A session its application refused: the WebSocket is closed.
#[derive(Debug)]
pub struct Refused;

/// What a `connection` message presents: `custom.token` (a client's bearer token) and
/// `custom.relayToken` (a relay of this CDN proving `cdn.secret`).
fn connection_credentials(state: &Signalling, payload: &Value) -> Credentials {
    let custom = |key| {
        payload
            .get("custom")
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let mut credentials = Credentials::bearer(custom("token").map(str::to_owned));
    credentials.acl_key = custom(state.auth.acl_property()).map(str::to_owned);
    if let Some(token) = custom("relayToken") {
        crate::signalling::check_relay_token(state, token, &mut credentials);
    }
    credentials
}

impl Connection {
    /// A session for a new socket; frames for the client go to `out`.
    pub fn new(client: ClientInfo, out: UnboundedSender<String>) -> Connection {
        Connection {
            peer: client.peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            client,
            out,
            established: false,
            credentials: Credentials::default(),
            hook: None,
            streams: HashMap::new(),
        }
    }

    fn send(&self, text: String) {
        let _ = self.out.send(text);
    }

    /// A text frame from the client. `Err` when the session must close (its application's
    /// `connect` hook refused it).
    pub async fn handle_text(&mut self, state: &Signalling, text: &str) -> Result<(), Refused> {
        let frame = match frames::parse_frame(text) {
            Ok(frame) => frame,
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "bad frame");
                self.send(fail_frame("unknown", &e.to_string()));
                return Ok(());
            }
        };
        let payload = &frame.payload;
        match frame.message.as_str() {
            "connection" => return self.handle_connection(state, payload).await,
            "publishStream" => self.handle_start(state, payload, true).await,
            "playStream" => self.handle_start(state, payload, false).await,
            "unPublishStream" => self.handle_stop(state, payload, true),
            "stopStream" => self.handle_stop(state, payload, false),
            "availableStream" => self.handle_available(state, payload),
            "sendStreamEvent" => self.handle_stream_event(state, payload),
            "sendData" => self.handle_send_data(payload),
            // rtcdn's own: an origin's relay passing on its stream's access list.
            "rtcdnAcl" => self.handle_relayed_acl(state, payload),
            // Keep-alive answers; any frame already counts as a sign of life.
            "pong" | "ping" => {}
            // Sent by the SDK on request only; nothing for a media node to do.
            "snapshot"
            | "pushLogs"
            | "submitBugReport"
            | "sessionDebug"
            | "getVersion"
            | "webRTCMetricsClientDescription"
            | "webRTCMetricsBatch" => {
                debug!(peer = %self.peer, message = frame.message, "ignored")
            }
            other => warn!(peer = %self.peer, message = other, "unknown message ignored"),
        }
        Ok(())
    }

    async fn handle_connection(
        &mut self,
        state: &Signalling,
        payload: &Value,
    ) -> Result<(), Refused> {
        if self.established {
            self.send(fail_frame(
                "connection",
                "the session is already established",
            ));
            return Ok(());
        }
        self.credentials = connection_credentials(state, payload);
        if let Some(e) = self
            .credentials
            .relay_refused
            .as_ref()
            .filter(|_| state.limits.may_log())
        {
            warn!(peer = %self.peer, error = %e, "relay token refused");
        }
        let session_id = format!("/{}/rtcdn", self.peer);
        if let Some(hooks) = state.auth.hooks().filter(|_| !self.credentials.relay) {
            let app_key = str_field(payload, "appKey").unwrap_or("defaultApp");
            match hooks.connect(app_key, &session_id, payload).await {
                Ok(session) => self.hook = Some(session),
                Err(e) => {
                    // WCS refuses a session by closing its WebSocket; the SDK reports FAILED.
                    if state.limits.may_log() {
                        info!(peer = %self.peer, error = %e, "connection refused");
                    }
                    return Err(Refused);
                }
            }
        }
        self.established = true;
        let mut user_data = match payload {
            Value::Object(object) => object.clone(),
            _ => serde_json::Map::new(),
        };
        user_data.insert("sessionId".into(), json!(session_id));
        user_data.insert(
            "authToken".into(),
            json!(format!("{:032x}", rand::random::<u128>())),
        );
        user_data.insert("status".into(), json!("ESTABLISHED"));
        // The SDK starts a metrics collector when this is present: never send it.
        user_data.remove("webRTCMetricsServerDescription");
        self.send(frame(
            "getVersion",
            vec![json!(concat!("rtcdn-", env!("CARGO_PKG_VERSION")))],
        ));
        self.send(frame("getUserData", vec![Value::Object(user_data)]));
        info!(peer = %self.peer, "WebSocket session established");
        Ok(())
    }

    /// The mediaSessionId and name of a stream request, or a FAILED/fail already sent.
    fn stream_ids<'a>(
        &self,
        payload: &'a Value,
        api: &str,
        published: bool,
    ) -> Option<(&'a str, &'a str)> {
        let Some(id) = str_field(payload, "mediaSessionId").filter(|id| !id.is_empty()) else {
            self.send(fail_frame(api, "MediaSessionId is null"));
            return None;
        };
        let name = str_field(payload, "name").unwrap_or("");
        if !self.established {
            self.send(failed_frame(id, name, published, "Session not ready"));
            return None;
        }
        Some((id, name))
    }

    async fn handle_start(&mut self, state: &Signalling, payload: &Value, published: bool) {
        let api = if published {
            "publishStream"
        } else {
            "playStream"
        };
        let Some((id, name)) = self.stream_ids(payload, api, published) else {
            return;
        };
        if self.streams.contains_key(id) {
            self.send(failed_frame(
                id,
                name,
                published,
                "MediaSessionId is already in use",
            ));
            return;
        }
        let Some(offer) = str_field(payload, "sdp") else {
            self.send(failed_frame(
                id,
                name,
                published,
                &format!("Failed by error: {api} without an sdp offer"),
            ));
            return;
        };
        if let Err(refused) = state.admit_session(self.peer.ip()) {
            return self.send(failed_frame(id, name, published, &refused.to_string()));
        }
        let action = if published {
            Action::Publish
        } else {
            Action::Play
        };
        // The simulcast layer to play, as the SDK's `createStream({custom: {layer}})` sends it
        // (`?layer=` on WHEP); the highest without.
        let layer = payload
            .get("custom")
            .and_then(|custom| custom.get("layer"))
            .and_then(Value::as_str);
        let authorized = media::authorize(
            state,
            action,
            name,
            &self.credentials,
            HookStanding::Connected(self.hook.as_ref()),
            payload,
        )
        .await
        .map_err(StartError::from);
        let mut pulled = Ok(());
        let authorized = match authorized {
            Ok(authorized) if published => media::claim_in_cluster(state, name, &authorized)
                .await
                .map(|()| authorized)
                .map_err(StartError::from),
            Ok(authorized) => {
                pulled = crate::signalling::pull::pull_in_cluster(state, name).await;
                Ok(authorized)
            }
            other => other,
        };
        let started = authorized.and_then(|authorized| {
            if published {
                media::start_publish(state, name, offer, authorized, self.client.clone())
            } else {
                media::start_play(
                    state,
                    name,
                    offer,
                    authorized,
                    self.credentials.acl_key.as_deref(),
                    layer,
                    self.client.clone(),
                )
            }
        });
        let started = match crate::signalling::pull::explain_missing(started, pulled) {
            Ok(started) => started,
            Err(e) => {
                if state.limits.may_log() {
                    info!(peer = %self.peer, stream = name, error = %e, "{api} refused");
                }
                self.send(failed_frame(id, name, published, &start_error_info(&e)));
                return;
            }
        };
        if published && self.credentials.relay {
            // The origin's access list comes with its relay's publish.
            if let Some(keys) = payload.get("rtcdnAcl").and_then(relayed_keys) {
                let _ = state.change_acl(name, AclChange::Set(keys));
            }
        }
        let description = StreamDescription::from_request(payload, id, name, published);
        state.watch(
            started.id,
            Watcher::Client(ClientWatcher {
                out: self.out.clone(),
                description: description.clone(),
                bandwidth: Default::default(),
            }),
        );
        self.send(frame(
            "setRemoteSDP",
            vec![json!(id), json!(started.answer), json!(true)],
        ));
        self.streams.insert(
            id.to_owned(),
            OwnStream {
                session: started.id,
                description,
            },
        );
    }

    fn handle_stop(&mut self, state: &Signalling, payload: &Value, published: bool) {
        let api = if published {
            "unPublishStream"
        } else {
            "stopStream"
        };
        let Some((id, name)) = self.stream_ids(payload, api, published) else {
            return;
        };
        let status = if published { "UNPUBLISHED" } else { "STOPPED" };
        match self.streams.remove(id) {
            Some(own) if own.description.published == published => {
                // Unwatch first: the client asked, so it gets this status and no FAILED.
                state.unwatch(own.session);
                media::end_session(state, own.session, EndReason::Deleted);
                self.send(own.description.status_frame(status, None));
            }
            Some(own) => {
                let kind = if own.description.published {
                    "published"
                } else {
                    "played"
                };
                self.send(failed_frame(
                    id,
                    name,
                    published,
                    &format!("Failed by error: {api} on a {kind} stream"),
                ));
                self.streams.insert(id.to_owned(), own);
            }
            None => self.send(failed_frame(id, name, published, "Stream not found")),
        }
    }

    fn handle_available(&self, state: &Signalling, payload: &Value) {
        let id = str_field(payload, "mediaSessionId").unwrap_or("");
        let name = str_field(payload, "name").unwrap_or("");
        let live = state.registry().stream(name).is_some();
        let mut reply = json!({ "id": id, "status": if live { "true" } else { "false" } });
        if !live {
            reply["info"] = json!("Stream not found");
        }
        self.send(frame("availableStream", vec![reply]));
    }

    fn handle_stream_event(&self, state: &Signalling, payload: &Value) {
        let Some(own) = str_field(payload, "mediaSessionId").and_then(|id| self.streams.get(id))
        else {
            self.send(fail_frame("sendStreamEvent", "Stream not found"));
            return;
        };
        if !own.description.published {
            self.send(fail_frame(
                "sendStreamEvent",
                "only a publisher can send stream events",
            ));
            return;
        }
        let kind = payload.get("type").cloned().unwrap_or(Value::Null);
        let event_payload = payload.get("payload").cloned();
        state.relay_stream_event(&own.description.name, |player_id| {
            let mut event = json!({ "mediaSessionId": player_id, "type": kind });
            if let Some(p) = &event_payload {
                event["payload"] = p.clone();
            }
            frame("notifyStreamEvent", vec![event])
        });
    }

    fn handle_relayed_acl(&self, state: &Signalling, payload: &Value) {
        let name = str_field(payload, "name").unwrap_or("");
        let publishes_it = self
            .streams
            .values()
            .any(|own| own.description.published && own.description.name == name);
        if !self.credentials.relay || !publishes_it {
            if state.limits.may_log() {
                warn!(peer = %self.peer, stream = name, "access list from a client that does not relay that stream ignored");
            }
            self.send(fail_frame(
                "rtcdnAcl",
                "only a relay of this CDN may set its stream's access list",
            ));
            return;
        }
        let Some(keys) = relayed_keys(payload) else {
            self.send(fail_frame("rtcdnAcl", "keys must be an array of strings"));
            return;
        };
        if let Err(e) = state.change_acl(name, AclChange::Set(keys)) {
            debug!(peer = %self.peer, error = %e, "relayed access list for a stream that is gone");
        }
    }

    fn handle_send_data(&self, payload: &Value) {
        let operation = payload.get("operationId").cloned().unwrap_or(Value::Null);
        self.send(frame(
            "DataStatusEvent",
            vec![json!({ "operationId": operation, "status": "ACCEPTED" })],
        ));
    }

    /// Whether the client's `connection` message was accepted.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// The socket closed: everything this session published or played ends (its players hear
    /// "Stopped by publisher stop"). A relay of this CDN that closes without unpublishing lost
    /// its source (its node died, the link broke): its players wait for a new copy.
    pub fn close(&mut self, state: &Signalling) {
        for (_, own) in self.streams.drain() {
            state.unwatch(own.session);
            let relayed = own.description.published
                && state
                    .registry()
                    .session(own.session)
                    .is_some_and(|s| s.client.relay);
            let reason = if relayed {
                EndReason::SourceLost
            } else {
                EndReason::Deleted
            };
            media::end_session(state, own.session, reason);
        }
        info!(peer = %self.peer, "WebSocket session closed");
    }
}
