//! The control API an operator (and the console at `/console`) reads: what the node serves and
//! who is connected, in JSON. Admin endpoints: the router checks the admin token first.
//!
//! - `GET /api/streams`: every live stream with its codecs, bitrate, picture size (only when the
//!   node knows it: VP8 keyframes and H.264 SPSs announce it), loss, players and relays;
//! - `GET /api/sessions`: every live session, oldest first;
//! - `DELETE /api/sessions/{id}`: ends a session (its client hears why: a WebSocket client a
//!   FAILED status, a WHIP/WHEP client from its resource URL, see `whip::resource_state`);
//! - `DELETE /api/streams/{name}`: ends a stream: its publisher, and with it its players and
//!   relays;
//! - `GET /api/cdn`: this node's place in the CDN: an origin's edges with their health and load
//!   (from the stats the balancer polls) and each stream's relay to each edge, with the
//!   transport ("udp", "tcp") its relay session connected over.
//!
//! Unknown values are left out or null, never shown as 0.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{media, text, Signalling};
use crate::config::cdn::CdnRole;
use crate::control::registry::{Registry, SessionEntry, SessionKind};
use crate::control::relay_planner::{EdgeId, RelayState};
use crate::control::{EndReason, RelayPath, SessionId};

pub(crate) fn json_response(value: &Value) -> Response<Full<Bytes>> {
    let mut response = super::rest::json_response(value);
    // Live data: a console polling it must never be shown a cached answer.
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

/// A loss fraction in 256ths as a percentage with one decimal.
fn loss_percent(fraction: u8) -> f64 {
    (f64::from(fraction) * 1000.0 / 256.0).round() / 10.0
}

/// One session's row, as `/api/sessions` and a stream's players show it.
fn session_row(s: &SessionEntry, now: Instant) -> Value {
    json!({
        "id": s.id.to_string(),
        "kind": s.kind.name(),
        "stream": s.stream_name,
        "core": s.core.0,
        "state": if s.connected { "connected" } else { "connecting" },
        "connected": s.connected,
        "bitrate_bps": s.bitrate_bps,
        "loss_percent": s.loss_fraction.map(loss_percent),
        "layer": s.layer.map(|l| json!({
            "current": l.current,
            "target": l.target,
            "pinned": l.pinned,
        })),
        "age_secs": (now.saturating_duration_since(s.created).as_secs_f64() * 10.0).round() / 10.0,
        "peer": s.client.peer.map(|p| p.to_string()),
        "user_agent": s.client.user_agent,
        "relay": s.client.relay,
    })
}

/// `GET /api/sessions`: every live session, oldest first: its public id (what
/// `DELETE /api/sessions/{id}` and `/rest-api/stream/terminate` take), a WebSocket client's own
/// `media_session_id`, its kind, stream, core, state (`connecting`, `connected`), bitrate (a
/// player's estimated bandwidth, a publisher's received bitrate), loss over the last receiver
/// report (what the node missed of a publisher, the worst a player reported), a simulcast
/// player's layer (`{current, target, pinned}`, layers numbered from 0, the lowest), its age and
/// where its signalling came from (peer address, User-Agent).
pub fn sessions(state: &Signalling) -> Response<Full<Bytes>> {
    let now = Instant::now();
    let mut listed: Vec<(Instant, Value)> = {
        let registry = state.registry();
        registry
            .sessions()
            .map(|s| (s.created, session_row(s, now)))
            .collect()
    };
    listed.sort_by_key(|(created, _)| *created);
    let rows: Vec<Value> = listed
        .into_iter()
        .map(|(_, mut row)| {
            let id = row["id"]
                .as_str()
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            let media_session_id = id.and_then(|id| state.media_session_id(SessionId(id)));
            row["media_session_id"] = json!(media_session_id);
            row
        })
        .collect();
    json_response(&Value::Array(rows))
}

/// `DELETE /api/sessions/{id}`: ends the session with that public id for
/// [`EndReason::Terminated`]. 404 when no live session has it.
pub fn kick(state: &Signalling, id: &str) -> Response<Full<Bytes>> {
    let session = u64::from_str_radix(id, 16).ok().map(SessionId);
    match session {
        Some(session) if media::end_session(state, session, EndReason::Terminated) => {
            json_response(&json!({
                "id": session.to_string(),
                "ended": true,
                "reason": EndReason::Terminated.to_string(),
            }))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "no such session (it ended or never existed)",
        ),
    }
}

/// `DELETE /api/streams/{name}`: ends the stream's publisher for [`EndReason::Terminated`]; its
/// players and relays end with it (their clients hear that the publisher left). 404 when no
/// stream has that name.
pub fn terminate_stream(state: &Signalling, name: &str) -> Response<Full<Bytes>> {
    let publisher = state.registry().stream(name).map(|s| s.publisher);
    match publisher {
        Some(id) if media::end_session(state, id, EndReason::Terminated) => json_response(&json!({
            "stream": name,
            "ended": true,
            "publisher": id.to_string(),
            "reason": EndReason::Terminated.to_string(),
        })),
        _ => text(StatusCode::NOT_FOUND, "Stream not found"),
    }
}

/// What `/api/streams` and WCS's `find_all` know of a live stream's publisher.
pub(crate) struct PublisherView {
    pub bitrate_bps: Option<u64>,
    pub video_size: Option<(u16, u16)>,
    pub loss_fraction: Option<u8>,
}

/// The publisher's side of the stream `name`.
pub(crate) fn publisher_view(registry: &Registry, name: &str) -> PublisherView {
    let publisher = registry
        .stream(name)
        .and_then(|s| registry.session(s.publisher));
    PublisherView {
        bitrate_bps: registry.publisher_bitrate(name),
        video_size: publisher.and_then(|p| p.video_size),
        loss_fraction: publisher.and_then(|p| p.loss_fraction),
    }
}

/// `GET /api/streams`: every live stream, by name: its publisher's id, core, state (`live` once
/// media flows, else `starting`), tracks, bitrate, picture size (`width`/`height`, left out
/// when unknown), loss, its players (each a session row) and, on an origin, its relay to each
/// edge.
pub fn streams(state: &Signalling) -> Response<Full<Bytes>> {
    let now = Instant::now();
    let edges = edge_ids(state);
    let plane = state.lock_control();
    let registry = plane.registry();
    let mut list: Vec<Value> = registry
        .streams()
        .map(|s| {
            let view = publisher_view(registry, &s.name);
            let mut row = Map::new();
            row.insert("name".into(), json!(s.name));
            row.insert("id".into(), json!(s.publisher.to_string()));
            row.insert("core".into(), json!(s.core.0));
            let source = match (s.orphaned_since, registry.is_copy(s)) {
                (Some(_), _) => "orphaned",
                (None, true) => "relay",
                (None, false) => "publisher",
            };
            row.insert("source".into(), json!(source));
            row.insert(
                "state".into(),
                json!(if s.media_flowing { "live" } else { "starting" }),
            );
            let tracks: Vec<Value> = s
                .tracks
                .iter()
                .map(|t| {
                    json!({
                        "kind": t.kind.to_string(),
                        "codec": t.codec.name,
                        "clock_rate": t.codec.clock_rate,
                        "channels": t.codec.channels,
                        "simulcast_layers": (!t.rids.is_empty()).then_some(t.rids.len()),
                    })
                })
                .collect();
            row.insert("tracks".into(), Value::Array(tracks));
            row.insert("bitrate_bps".into(), json!(view.bitrate_bps));
            if let Some((width, height)) = view.video_size {
                row.insert("width".into(), json!(width));
                row.insert("height".into(), json!(height));
            }
            row.insert(
                "loss_percent".into(),
                json!(view.loss_fraction.map(loss_percent)),
            );
            // An RTMP encoder's keyframe interval: how long a new player may wait for its first
            // picture when the cache has none (RTMP cannot be asked for a keyframe).
            row.insert(
                "keyframe_interval_ms".into(),
                json!(registry
                    .session(s.publisher)
                    .and_then(|p| p.keyframe_interval_ms)),
            );
            let players: Vec<Value> = s
                .players
                .iter()
                .filter_map(|(id, _)| registry.session(*id))
                .map(|p| session_row(p, now))
                .collect();
            row.insert("player_count".into(), json!(players.len()));
            row.insert("players".into(), Value::Array(players));
            let relays: Vec<Value> = edges
                .iter()
                .filter_map(|&edge| {
                    let relay = plane.relay_state(&s.name, edge)?;
                    let transport = plane.relay_path(&s.name, edge).map(RelayPath::as_str);
                    Some(json!({
                        "edge": edge.0,
                        "state": relay_state_name(relay),
                        "transport": transport,
                    }))
                })
                .collect();
            row.insert("relays".into(), Value::Array(relays));
            Value::Object(row)
        })
        .collect();
    drop(plane);
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json_response(&Value::Array(list))
}

pub(crate) fn relay_state_name(state: RelayState) -> &'static str {
    match state {
        RelayState::Idle => "idle",
        RelayState::Connecting { .. } => "connecting",
        RelayState::Up { .. } => "up",
        RelayState::Backoff { .. } => "backoff",
    }
}

/// The edges an origin relays to (none on an edge or a lone node), and the cluster nodes that
/// pulled from this one.
pub(crate) fn edge_ids(state: &Signalling) -> Vec<EdgeId> {
    edge_names(state).into_iter().map(|(id, _)| id).collect()
}

/// Who each relay id of [`edge_ids`] names: a static edge's host, or the id of a cluster node
/// that pulled from this one.
pub(crate) fn edge_names(state: &Signalling) -> Vec<(EdgeId, String)> {
    let mut names: Vec<(EdgeId, String)> = match &state.balancer {
        Some(balancer) => balancer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .nodes()
            .iter()
            .map(|n| (EdgeId(n.id), n.host.clone()))
            .collect(),
        None => Vec::new(),
    };
    if let Some(hub) = &state.pulls {
        names.extend(
            hub.pullers()
                .into_iter()
                .map(|(edge, node)| (edge, node.to_string())),
        );
    }
    names
}

/// `/rest-api/cdn/show_routes` (WCS CDN 2.x): the node's live routes as WCS lists them, route
/// id → stream name. A route id is `N-FROM-TO`: the relays this node sends that are up (to a
/// static edge's host or a pulling node's id), then the relays it receives (from the owner's
/// node id for a pull, the sender's address otherwise). This node is its cluster id, or
/// `local` outside a cluster.
pub fn show_routes(state: &Signalling) -> Response<Full<Bytes>> {
    let this = state
        .cluster
        .as_ref()
        .map_or_else(|| "local".to_owned(), |c| c.node_id().to_string());
    let names = edge_names(state);
    let pulled = state
        .pulls
        .as_ref()
        .map(|hub| hub.pulled())
        .unwrap_or_default();
    let mut routes: Vec<(String, String, String)> = Vec::new();
    {
        let plane = state.lock_control();
        let registry = plane.registry();
        let mut streams: Vec<&str> = registry.streams().map(|s| s.name.as_str()).collect();
        streams.sort_unstable();
        for stream in &streams {
            for (edge, name) in &names {
                if let Some(RelayState::Up { .. }) = plane.relay_state(stream, *edge) {
                    routes.push((this.clone(), name.clone(), (*stream).to_owned()));
                }
            }
        }
        let mut incoming: Vec<(String, String)> = registry
            .sessions()
            .filter(|s| s.kind == SessionKind::Publisher && s.client.relay && s.connected)
            .map(|s| {
                let from = pulled
                    .iter()
                    .find(|(name, ..)| *name == s.stream_name)
                    .map(|(_, owner, ..)| owner.to_string())
                    .or_else(|| s.client.peer.map(|p| p.ip().to_string()))
                    .unwrap_or_else(|| "unknown".to_owned());
                (from, s.stream_name.clone())
            })
            .collect();
        incoming.sort();
        routes.extend(
            incoming
                .into_iter()
                .map(|(from, stream)| (from, this.clone(), stream)),
        );
    }
    let table: Map<String, Value> = routes
        .into_iter()
        .enumerate()
        .map(|(i, (from, to, stream))| (format!("{}-{from}-{to}", i + 1), Value::String(stream)))
        .collect();
    json_response(&Value::Object(table))
}

/// `GET /api/cdn`: this node's role, its own load, on an origin each configured edge with its
/// health (`answering`, `silent`: its last stats poll failed, `unknown`: not polled yet), its
/// load as its last stats showed it, and the streams relayed to it with their relay state; on an
/// edge, the relays that bring it streams (`relays_in`: the origin's relay sessions, with their
/// state and bitrate); on a dynamic-CDN node, the pulls both ways (`pulls_out`, `pulls_in`) and
/// the cluster (`cluster`: this node's id, Redis's state, the live nodes with roles, group,
/// state and load).
pub fn cdn(state: &Signalling) -> Response<Full<Bytes>> {
    // The balancer's lock is never taken under the control plane's.
    let edge_list = edge_ids(state);
    let now = Instant::now();
    let (streams, players, sessions, relay_rows, relays_in) = {
        let plane = state.lock_control();
        let registry = plane.registry();
        let mut relays_in: Vec<(Instant, Value)> = registry
            .sessions()
            .filter(|s| s.kind == SessionKind::Publisher && s.client.relay)
            .map(|s| {
                let row = json!({
                    "stream": s.stream_name,
                    "id": s.id.to_string(),
                    "from": s.client.peer.map(|p| p.to_string()),
                    "state": if s.connected { "connected" } else { "connecting" },
                    "bitrate_bps": s.bitrate_bps,
                    "age_secs": (now.saturating_duration_since(s.created).as_secs_f64() * 10.0).round() / 10.0,
                });
                (s.created, row)
            })
            .collect();
        relays_in.sort_by_key(|(created, _)| *created);
        let relays_in: Vec<Value> = relays_in.into_iter().map(|(_, row)| row).collect();
        let players: usize = registry.streams().map(|s| s.players.len()).sum();
        let sessions: usize = registry.core_load().iter().sum();
        let mut relay_rows: Vec<(EdgeId, String, RelayState, Option<RelayPath>)> = Vec::new();
        for stream in registry.streams() {
            for &edge in &edge_list {
                if let Some(relay) = plane.relay_state(&stream.name, edge) {
                    let path = plane.relay_path(&stream.name, edge);
                    relay_rows.push((edge, stream.name.clone(), relay, path));
                }
            }
        }
        (
            registry.streams().count(),
            players,
            sessions,
            relay_rows,
            relays_in,
        )
    };
    let edges: Vec<Value> = match &state.balancer {
        Some(balancer) => {
            let balancer = balancer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            balancer
                .nodes()
                .iter()
                .map(|node| {
                    let stat = balancer.stat(node.id);
                    let health = match (stat, balancer.is_answering(node.id)) {
                        (Some(_), _) => "answering",
                        (None, false) => "silent",
                        (None, true) => "unknown",
                    };
                    let relayed: Vec<Value> = relay_rows
                        .iter()
                        .filter(|(edge, _, _, _)| edge.0 == node.id)
                        .map(|(_, name, relay, path)| {
                            json!({
                                "stream": name,
                                "state": relay_state_name(*relay),
                                "transport": path.map(RelayPath::as_str),
                            })
                        })
                        .collect();
                    json!({
                        "id": node.id,
                        "host": node.host,
                        "ws": node.ws,
                        "wss": node.wss,
                        "health": health,
                        "calls": stat.map(|s| s.calls),
                        "system_cpu_load": stat.map(|s| s.system_cpu_load),
                        "relays": relayed,
                    })
                })
                .collect()
        }
        None => Vec::new(),
    };
    let role = match state.cdn_role {
        _ if state.cluster.is_some() => "cluster",
        CdnRole::Origin if edges.is_empty() => "standalone",
        CdnRole::Origin => "origin",
        CdnRole::Edge => "edge",
    };
    let mut answer = json!({
        "role": role,
        "node": {
            "streams": streams,
            "players": players,
            "sessions": sessions,
        },
        "edges": edges,
        "relays_in": relays_in,
    });
    if let Some(hub) = &state.pulls {
        // The dynamic CDN: the relays to the nodes that pulled from this one, and the streams
        // this one pulls.
        let pullers = hub.pullers();
        let pulls_out: Vec<Value> = relay_rows
            .iter()
            .filter_map(|(edge, stream, relay, path)| {
                let (_, node) = pullers.iter().find(|(id, _)| id == edge)?;
                Some(json!({
                    "node": node,
                    "stream": stream,
                    "state": relay_state_name(*relay),
                    "transport": path.map(RelayPath::as_str),
                }))
            })
            .collect();
        let pulls_in: Vec<Value> = hub
            .pulled()
            .into_iter()
            .map(|(stream, owner, arrived, warm)| {
                // The pulls' own view is refreshed every 250 ms; the registry knows now.
                let arrived = arrived || state.registry().stream(&stream).is_some();
                json!({ "stream": stream, "from": owner, "arrived": arrived, "warm": warm })
            })
            .collect();
        answer["pulls_out"] = Value::Array(pulls_out);
        answer["pulls_in"] = Value::Array(pulls_in);
    }
    if let Some(cluster) = &state.cluster {
        // The cluster's live nodes as this node's view last read them (every lease write).
        let view = cluster.view();
        let nodes: Vec<Value> = view
            .nodes()
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "roles": n.roles,
                    "group": n.group,
                    "state": n.state,
                    "host": n.host,
                    "sessions": n.load.sessions,
                    "streams": n.load.streams,
                    "self": n.id == *cluster.node_id(),
                })
            })
            .collect();
        answer["cluster"] = json!({
            "node": cluster.node_id(),
            "redis": if cluster.redis_down() { "unreachable" } else { "up" },
            "nodes": nodes,
        });
    }
    json_response(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_percentage_with_one_decimal() {
        assert_eq!(loss_percent(0), 0.0);
        assert_eq!(loss_percent(128), 50.0);
        assert_eq!(loss_percent(255), 99.6);
        assert_eq!(loss_percent(3), 1.2);
    }
}
