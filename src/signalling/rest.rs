//! The WCS REST calls WCS users script against: `/rest-api/stream/find_all`,
//! `/rest-api/stream/find` and `/rest-api/stream/terminate` (GET or POST, JSON body), the
//! access lists and `/rest-api/cdn/show_nodes`. They are
//! admin endpoints: the router checks the admin token first.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{control_api, media};
use super::{text, Signalling};
use crate::control::registry::{AclChange, RegistryError};
use crate::control::{EndReason, SessionId};

/// `/rest-api/cdn/show_nodes` (WCS CDN 2.x): the live nodes of the cluster but this one, as
/// WCS lists them (`id`, `globalState`, `processingState`, `role`) with rtcdn's own fields
/// (`roles`, `group`, `state`, addresses, `load`; see `NodeLease::show_node`). 404 on a node
/// that is not in a cluster; 500, as WCS answers, when Redis does not answer.
pub async fn show_nodes(state: &Signalling) -> Response<Full<Bytes>> {
    let Some(cluster) = &state.cluster else {
        return text(
            StatusCode::NOT_FOUND,
            "this node is not in a cluster ([cluster] is not configured)",
        );
    };
    match cluster.live_nodes().await {
        Ok(nodes) => {
            let shown: Vec<Value> = nodes
                .iter()
                .filter(|lease| lease.id != *cluster.node_id())
                .map(|lease| lease.show_node())
                .collect();
            json_response(&Value::Array(shown))
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the cluster's nodes: {e}"),
        ),
    }
}

pub use super::control_api::show_routes;

/// `POST /rest-api/cdn/drain`: the node drains (see [`super::drain`]). Answers its state and
/// the sessions it still has; asking again changes nothing.
pub fn drain(state: &Signalling) -> Response<Full<Bytes>> {
    state.start_drain();
    json_response(&serde_json::json!({
        "state": "DRAINING",
        "sessions": state.session_count(),
    }))
}

/// The longest ACL key accepted, and the most keys one call may carry.
const MAX_ACL_KEY_LEN: usize = 256;
const MAX_KEYS_PER_CALL: usize = 1000;

/// `/rest-api/cdn/stream/access_list/{add,remove,delete,print}` (WCS CDN 2.2), on the origin:
/// `{"name": STREAM, "keys": [...]}` for add and remove, `{"name"}` for delete and print (which
/// answers the keys). Changes reach the edges through the relays; players whose key is no
/// longer listed are ended with "Restricted access".
pub fn access_list(state: &Signalling, action: &str, body: &str) -> Response<Full<Bytes>> {
    let (name, change) = match parse_access_list(action, body) {
        Ok(request) => request,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let Some(change) = change else {
        return match state.registry().stream(&name) {
            Some(stream) => json_response(&json!(stream.acl)),
            None => text(StatusCode::NOT_FOUND, "Stream not found"),
        };
    };
    match state.change_acl(&name, change) {
        Ok(_) => text(StatusCode::OK, ""),
        Err(RegistryError::StreamNotFound(_)) => text(StatusCode::NOT_FOUND, "Stream not found"),
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The stream and the change an access-list request asks for (`None`: print); the error says
/// what is wrong with the body.
pub(crate) fn parse_access_list(
    action: &str,
    body: &str,
) -> Result<(String, Option<AclChange>), String> {
    let request: Value = match serde_json::from_str(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return Err("the body must be a JSON object".into()),
        Err(e) => return Err(format!("invalid JSON: {e}")),
    };
    let name = request
        .get("name")
        .and_then(Value::as_str)
        .ok_or("access_list needs {\"name\": STREAM}")?
        .to_owned();
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
        "add" => Some(AclChange::Add(keys()?)),
        "remove" => Some(AclChange::Remove(keys()?)),
        "delete" => Some(AclChange::Clear),
        _ => None,
    };
    Ok((name, change))
}

/// `value` as an `application/json` answer.
pub(crate) fn json_response(value: &Value) -> Response<Full<Bytes>> {
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
    let streams: Vec<Listed> = {
        let registry = state.registry();
        registry
            .streams()
            .map(|s| Listed {
                publisher: s.publisher,
                name: s.name.clone(),
                flowing: s.media_flowing,
                players: s.players.len(),
                codecs: s.tracks.iter().map(|t| t.codec.name.clone()).collect(),
                view: control_api::publisher_view(&registry, &s.name),
            })
            .collect()
    };
    let mut list: Vec<Value> = Vec::new();
    for listed in streams {
        let Listed {
            publisher,
            name: stream_name,
            flowing,
            players,
            codecs,
            view,
        } = listed;
        // Every live stream here is a published one.
        if action == "find" && (name.is_some_and(|n| n != stream_name) || published == Some(false))
        {
            continue;
        }
        let media_session_id = state
            .media_session_id(publisher)
            .unwrap_or_else(|| publisher.to_string());
        let mut row = json!({
            "mediaSessionId": media_session_id,
            "name": stream_name,
            "published": true,
            "hasVideo": true,
            "hasAudio": true,
            "status": if flowing { "PUBLISHING" } else { "PENDING" },
            "info": null,
            "record": false,
            "mediaProvider": "WebRTC",
            "codecs": codecs,
            "playerCount": players,
        });
        // What the node does not know is left out, never shown as 0: the bitrate until the
        // first receiver report period ends, the size unless the publisher's keyframes announce
        // it (VP8, H.264). WCS's `quality` has no equivalent here.
        if let Some(bps) = view.bitrate_bps {
            // kbit/s, as WCS reports it: what the publisher sent over the last second.
            row["bitrate"] = json!(bps / 1000);
        }
        if let Some((width, height)) = view.video_size {
            row["width"] = json!(width);
            row["height"] = json!(height);
        }
        list.push(row);
    }
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    if action == "find" && list.is_empty() {
        return text(StatusCode::NOT_FOUND, "Stream not found");
    }
    json_response(&Value::Array(list))
}

/// A live stream as the listings show it.
struct Listed {
    publisher: crate::control::SessionId,
    name: String,
    flowing: bool,
    players: usize,
    codecs: Vec<String>,
    view: control_api::PublisherView,
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
