//! WCS REST hooks: the node asks the application's backend whether a client may connect,
//! publish or play, the way Flashphoner WCS does, so existing backends work unchanged.
//!
//! rtcdn POSTs WCS-shaped JSON to `{app URL}/connect`, `{app URL}/publishStream` and
//! `{app URL}/playStream`; the app URL is the one of the client's `appKey` (`[[auth.apps]]`), else
//! `auth.rest_hook_url`. `200` allows, `403` refuses. A hook that fails (timeout, another status,
//! no answer) refuses too, unless the `connect` answer's `restClientConfig` says
//! `"restOnError": "LOG"` for that method, as WCS allows.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tracing::warn;

use super::config::AuthConfig;

/// The largest hook answer read: a JSON object with a `restClientConfig`.
const MAX_ANSWER: usize = 64 * 1024;

/// A WCS REST method rtcdn calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookMethod {
    /// A client connects (the WebSocket `connection`, or before a WHIP/WHEP request).
    Connect,
    /// It publishes a stream.
    PublishStream,
    /// It plays a stream.
    PlayStream,
}

impl HookMethod {
    /// The method's name, the last segment of the hook URL.
    pub fn name(self) -> &'static str {
        match self {
            HookMethod::Connect => "connect",
            HookMethod::PublishStream => "publishStream",
            HookMethod::PlayStream => "playStream",
        }
    }
}

/// What a failed hook (not a refusal) means: `restOnError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The request is refused (the default: a backend that cannot answer allows nothing).
    #[default]
    Fail,
    /// The failure is logged and the request goes on.
    Log,
}

/// Why a hook did not allow a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The backend answered 403.
    #[error("refused by the application's REST hook {method}{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Refused {
        method: &'static str,
        reason: String,
    },
    /// The hook could not be asked or gave no usable answer, and `restOnError` is FAIL.
    #[error("the application's REST hook {method} failed: {why}")]
    Failed { method: &'static str, why: String },
    /// No hook URL serves the client's appKey.
    #[error("no REST hook is configured for appKey {0:?}")]
    UnknownApp(String),
}

/// A client's standing with its application after `connect`.
#[derive(Debug, Clone)]
pub struct HookSession {
    app_key: String,
    app_url: String,
    session_id: String,
    custom: Value,
    on_error: HashMap<String, OnError>,
}

impl HookSession {
    /// What a failed call of `method` means for this client.
    pub fn on_error(&self, method: HookMethod) -> OnError {
        self.on_error
            .get(method.name())
            .copied()
            .unwrap_or_default()
    }
}

/// Why hooks could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("REST hook client: {0}")]
pub struct HookSetupError(String);

/// Calls the hooks.
pub struct HookClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    default_url: Option<String>,
    apps: Vec<(String, String)>,
    node_id: String,
}

impl HookClient {
    /// A client for the hooks of `config`; `node_id` names this node in every call.
    pub fn new(config: &AuthConfig, node_id: String) -> Result<HookClient, HookSetupError> {
        let tls = crate::wcs_protocol::client::tls_config(None).map_err(HookSetupError)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HookClient {
            client,
            timeout: Duration::from_secs(config.rest_hook_timeout_secs),
            default_url: config.rest_hook_url.clone(),
            apps: config
                .apps
                .iter()
                .map(|a| (a.key.clone(), a.url.clone()))
                .collect(),
            node_id,
        })
    }

    fn app_url(&self, app_key: &str) -> Option<&str> {
        self.apps
            .iter()
            .find(|(key, _)| key == app_key)
            .map(|(_, url)| url.as_str())
            .or(self.default_url.as_deref())
    }

    /// Asks `{app URL}/connect` whether a client may connect. `connection` is what it sent (the
    /// WebSocket `connection` object; for WHIP/WHEP `{"custom": {"token": ...}}`).
    pub async fn connect(
        &self,
        app_key: &str,
        session_id: &str,
        connection: &Value,
    ) -> Result<HookSession, HookError> {
        let app_url = self
            .app_url(app_key)
            .ok_or_else(|| HookError::UnknownApp(app_key.chars().take(64).collect()))?
            .trim_end_matches('/')
            .to_owned();
        let mut body = match connection {
            Value::Object(object) => Value::Object(object.clone()),
            _ => json!({}),
        };
        body["nodeId"] = json!(self.node_id);
        body["appKey"] = json!(app_key);
        body["sessionId"] = json!(session_id);
        let custom = body.get("custom").cloned().unwrap_or_else(|| json!({}));
        let answer = self
            .post(&app_url, HookMethod::Connect, &body)
            .await
            .map_err(|failure| failure.into_error(HookMethod::Connect))?;
        Ok(HookSession {
            app_key: app_key.to_owned(),
            app_url,
            session_id: session_id.to_owned(),
            custom,
            on_error: rest_on_error(&answer),
        })
    }

    /// Asks `publishStream` or `playStream` whether the client of `session` may go on with the
    /// stream `fields` describe (name, mediaSessionId, hasAudio, ...).
    pub async fn stream(
        &self,
        session: &HookSession,
        method: HookMethod,
        fields: &Value,
    ) -> Result<(), HookError> {
        let mut body = match fields {
            Value::Object(object) => Value::Object(object.clone()),
            _ => json!({}),
        };
        // What the client may not choose.
        body.as_object_mut().map(|o| o.remove("sdp"));
        body["nodeId"] = json!(self.node_id);
        body["appKey"] = json!(session.app_key);
        body["sessionId"] = json!(session.session_id);
        body["custom"] = session.custom.clone();
        match self.post(&session.app_url, method, &body).await {
            Ok(_) => Ok(()),
            Err(failure @ Failure::Forbidden(_)) => Err(failure.into_error(method)),
            Err(failure) if session.on_error(method) == OnError::Log => {
                warn!(method = method.name(), error = %failure.into_error(method), "REST hook failed; restOnError LOG lets the request go on");
                Ok(())
            }
            Err(failure) => Err(failure.into_error(method)),
        }
    }

    async fn post(
        &self,
        app_url: &str,
        method: HookMethod,
        body: &Value,
    ) -> Result<Value, Failure> {
        let url = format!("{app_url}/{}", method.name());
        let request = hyper::Request::post(&url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Failure::Error(format!("{url}: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::Error(format!("{url}: {e}")))?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&answer).trim().to_owned();
            match status.as_u16() {
                200..=299 => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
                403 => Err(Failure::Forbidden(short_reason(&text))),
                other => Err(Failure::Error(format!("{url} answered {other}"))),
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Error(format!(
                "{url} did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// How one hook call went wrong.
#[derive(Debug)]
enum Failure {
    /// 403, with the backend's reason.
    Forbidden(String),
    /// Anything else.
    Error(String),
}

impl Failure {
    fn into_error(self, method: HookMethod) -> HookError {
        match self {
            Failure::Forbidden(reason) => HookError::Refused {
                method: method.name(),
                reason,
            },
            Failure::Error(why) => HookError::Failed {
                method: method.name(),
                why,
            },
        }
    }
}

/// A backend's refusal text fit to pass on: one line of plain text, or nothing.
fn short_reason(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.len() > 200 || line.starts_with('<') || line.starts_with('{') {
        String::new()
    } else {
        line.to_owned()
    }
}

/// `restOnError` per method from a `connect` answer's `restClientConfig`
/// (`{"restClientConfig": {"publishStream": {"restOnError": "LOG"}, ...}}`).
pub(crate) fn rest_on_error(answer: &Value) -> HashMap<String, OnError> {
    let mut map = HashMap::new();
    if let Some(Value::Object(methods)) = answer.get("restClientConfig") {
        for (method, settings) in methods {
            let on_error = match settings.get("restOnError").and_then(Value::as_str) {
                Some(v) if v.eq_ignore_ascii_case("LOG") => OnError::Log,
                _ => OnError::Fail,
            };
            map.insert(method.clone(), on_error);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_client_config_sets_on_error_per_method() {
        let answer = json!({"restClientConfig": {
            "publishStream": {"restOnError": "LOG", "restPolicy": "NOTIFY"},
            "playStream": {"restOnError": "FAIL"},
        }});
        let map = rest_on_error(&answer);
        assert_eq!(map.get("publishStream"), Some(&OnError::Log));
        assert_eq!(map.get("playStream"), Some(&OnError::Fail));
        assert!(rest_on_error(&json!(null)).is_empty());
        assert!(rest_on_error(&json!({"restClientConfig": "x"})).is_empty());
    }

    #[test]
    fn refusal_reasons_are_short_plain_text() {
        assert_eq!(short_reason("not your stream\nmore"), "not your stream");
        assert_eq!(short_reason("<html>"), "");
        assert_eq!(short_reason(&"x".repeat(300)), "");
    }
}
