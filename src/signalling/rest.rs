//! The WCS REST calls WCS users script against: `/rest-api/stream/find_all`,
//! `/rest-api/stream/find` and `/rest-api/stream/terminate` (GET or POST, JSON body). They are
//! admin endpoints: the router checks the admin token first.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::media;
use super::{text, Signalling};
use crate::control::{EndReason, SessionId};
use crate::registry::{AclChange, RegistryError};

/// The longest ACL key accepted, and the most keys one call may carry.
const MAX_ACL_KEY_LEN: usize = 256;
const MAX_KEYS_PER_CALL: usize = 1000;

/// `/rest-api/cdn/stream/access_list/{add,remove,delete,print}` (WCS CDN 2.2), on the origin:
/// `{"name": STREAM, "keys": [...]}` for add and remove, `{"name"}` for delete and print (which
/// answers the keys). Changes reach the edges through the relays; players whose key is no
/// longer listed are ended with "Restricted access".
pub fn access_list(state: &Signalling, action: &str, body: &str) -> Response<Full<Bytes>> {
    let request: Value = match serde_json::from_str(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return text(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let Some(name) = request.get("name").and_then(Value::as_str) else {
        return text(
            StatusCode::BAD_REQUEST,
            "access_list needs {\"name\": STREAM}",
        );
    };
    let keys = || -> Result<Vec<String>, String> {
        let list = request
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("add and remove need {\"keys\": [...]}")?;
        if list.len() > MAX_KEYS_PER_CALL {
            return Err(format!("at most {MAX_KEYS_PER_CALL} keys per call"));
        }
        list.iter()
            .map(|k| match k.as_str() {
                Some(k) if !k.is_empty() && k.len() <= MAX_ACL_KEY_LEN => Ok(k.to_owned()),
                _ => Err(format!("keys are strings of 1 to {MAX_ACL_KEY_LEN} bytes")),
            })
            .collect()
    };
    let change = match action {
        "add" | "remove" => match keys() {
            Ok(keys) if action == "add" => AclChange::Add(keys),
            Ok(keys) => AclChange::Remove(keys),
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        },
        "delete" => AclChange::Clear,
        _ => {
            return match state.registry().stream(name) {
                Some(stream) => json_response(&json!(stream.acl)),
                None => text(StatusCode::NOT_FOUND, "Stream not found"),
            }
        }
    };
    match state.change_acl(name, change) {
        Ok(_) => text(StatusCode::OK, ""),
        Err(RegistryError::StreamNotFound(_)) => text(StatusCode::NOT_FOUND, "Stream not found"),
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `find_all` lists every live stream; `find` those matching the body's `name` / `published`.
pub fn stream(state: &Signalling, action: &str, body: &str) -> Response<Full<Bytes>> {
    let filter: Value = if body.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(body) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) => return text(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
        }
    };
    if action == "terminate" {
        return terminate(state, &filter);
    }
    let name = filter.get("name").and_then(Value::as_str);
    let published = filter.get("published").and_then(Value::as_bool);
    let streams: Vec<(crate::control::SessionId, String, bool, usize, Vec<String>)> = state
        .registry()
        .streams()
        .map(|s| {
            let codecs = s.tracks.iter().map(|t| t.codec.name.clone()).collect();
            (
                s.publisher,
                s.name.clone(),
                s.media_flowing,
                s.players.len(),
                codecs,
            )
        })
        .collect();
    let mut list: Vec<Value> = Vec::new();
    for (publisher, stream_name, flowing, players, codecs) in streams {
        // Every live stream here is a published one.
        if action == "find" && (name.is_some_and(|n| n != stream_name) || published == Some(false))
        {
            continue;
        }
        let media_session_id = state
            .media_session_id(publisher)
            .unwrap_or_else(|| publisher.to_string());
        list.push(json!({
            "mediaSessionId": media_session_id,
            "name": stream_name,
            "published": true,
            "hasVideo": true,
            "hasAudio": true,
            "status": if flowing { "PUBLISHING" } else { "PENDING" },
            "info": null,
            "record": false,
            "width": 0,
            "height": 0,
            "bitrate": 0,
            "quality": 0,
            "mediaProvider": "WebRTC",
            "codecs": codecs,
            "playerCount": players,
        }));
    }
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    if action == "find" && list.is_empty() {
        return text(StatusCode::NOT_FOUND, "Stream not found");
    }
    json_response(&Value::Array(list))
}

/// `terminate` `{"mediaSessionId": ID}`: ends the session with that id, a WebSocket client's
/// own id or the public id listings show for WHIP/WHEP sessions. Its client hears FAILED.
fn terminate(state: &Signalling, filter: &Value) -> Response<Full<Bytes>> {
    let Some(wanted) = filter.get("mediaSessionId").and_then(Value::as_str) else {
        return text(
            StatusCode::BAD_REQUEST,
            "terminate needs {\"mediaSessionId\": ID}",
        );
    };
    let by_public_id = u64::from_str_radix(wanted, 16)
        .ok()
        .map(SessionId)
        .filter(|id| state.registry().session(*id).is_some());
    let session = by_public_id.or_else(|| state.session_by_media_session_id(wanted));
    match session {
        Some(id) if media::end_session(state, id, EndReason::Terminated) => {
            text(StatusCode::OK, "terminated")
        }
        _ => text(StatusCode::NOT_FOUND, "Stream not found"),
    }
}
