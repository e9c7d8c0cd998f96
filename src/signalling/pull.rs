//! Pull on demand in a dynamic CDN (`[cluster]` with a `secret`, issue 14 step 3), the IO side.
//!
//! Transport: the pulling node asks the stream's owner over HTTP (`POST /rest-api/cdn/pull`,
//! `{"name", "node"}`, with a relay token of `cluster.secret` as its bearer), and the owner's
//! control plane relays that one stream to it with the static CDN's relay transport (the owner
//! connects to the puller's WebSocket and publishes there with a relay token; the puller sees
//! an ordinary relayed publish). The issue describes the puller playing from the owner as a
//! WebSocket client instead; that needs a client-side receiving session in the media core,
//! while this reuses the relay path that is proven (simulcast layers, NACK and PLI upstream,
//! UDP or TCP, ACLs passed on), and a player sees the same.
//!
//! Tiers: an edge in a group with transit nodes asks one of them instead of the owner (see
//! `cluster::route::choose_transit`); the transit node pulls from the owner as above and relays
//! its copy to each edge that asked. Only transit nodes relay a copy (`ControlPlane::
//! handle_pull_requested`), and they pull from owners only, so relays never loop.
//!
//! - [`pull_in_cluster`]: a player asks for a stream this node does not have; when another
//!   node publishes it, the owner (or the group's transit node) is asked and the player waits
//!   up to [`PULL_WAIT`]; a failure is told to the player in WCS's words ([`PullFailure`]).
//! - [`warmup`]: `POST /rest-api/v3/cdn/warmup`, the warm-up list: a stream pulled now and
//!   kept pulled without players until its publishing stops.
//! - [`serve`]: the owner's end of `/rest-api/cdn/pull` and `/rest-api/cdn/release`.
//! - [`run`]: releases pulls nobody watches (`cluster.idle_pull_secs`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::media::StartError;
use super::{text, Signalling};
use crate::auth::RelayAuth;
use crate::cdn::relay::RelayTarget;
use crate::cluster::lease::{NodeId, NodeLease};
use crate::cluster::pulls::{PullCommand, Pulls, PULL_WAIT};
use crate::config::cluster::ClusterRole;
use crate::control::registry::{validate_stream_name, RegistryError};
use crate::control::relay_planner::EdgeId;

/// How long a pull or release request to the owner may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a waiting player looks for the pulled stream.
const ARRIVAL_POLL: Duration = Duration::from_millis(10);
/// How often unwatched pulls are looked for, at most.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// The most of an owner's answer read.
const MAX_ANSWER: usize = 4096;

/// A cluster node's pulls: the streams it pulls, the HTTP client that asks owners, and the
/// relay targets of the nodes that pull from it.
pub struct PullHub {
    auth: RelayAuth,
    pulls: Mutex<Pulls>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The nodes that pulled from us, as the relay planner names them.
    edges: Mutex<HashMap<NodeId, EdgeId>>,
}

impl PullHub {
    /// Pulls proven with `secret`, released after `idle_after` without a player.
    pub fn new(secret: &str, idle_after: Duration) -> Result<PullHub, String> {
        let tls = crate::wcs_protocol::client::tls_config(None)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        Ok(PullHub {
            auth: RelayAuth::new(secret),
            pulls: Mutex::new(Pulls::new(idle_after)),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            edges: Mutex::new(HashMap::new()),
        })
    }

    fn pulls(&self) -> MutexGuard<'_, Pulls> {
        self.pulls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The relay planner's id of `node`, the same for as long as the node lives.
    fn edge(&self, node: &NodeId) -> EdgeId {
        let mut edges = self
            .edges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = EdgeId(edges.len() as u32 + 1);
        *edges.entry(node.clone()).or_insert(next)
    }

    /// The nodes that pulled from us, with the relay planner's ids for them, in id order.
    pub fn pullers(&self) -> Vec<(EdgeId, NodeId)> {
        let mut pullers: Vec<(EdgeId, NodeId)> = self
            .edges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(node, &edge)| (edge, node.clone()))
            .collect();
        pullers.sort();
        pullers
    }

    /// The streams this node pulls: name, owner, arrived, warm.
    pub fn pulled(&self) -> Vec<(String, NodeId, bool, bool)> {
        self.pulls()
            .list()
            .map(|p| (p.stream.to_owned(), p.owner.clone(), p.arrived, p.warm))
            .collect()
    }

    /// POSTs `{"name", "node"}` to `owner`'s `/rest-api/cdn/{action}`; the status it answered.
    async fn ask(
        &self,
        owner: &NodeLease,
        action: &str,
        stream: &str,
        us: &NodeId,
    ) -> Result<StatusCode, String> {
        let base = owner
            .whep
            .strip_suffix("/whep/")
            .ok_or_else(|| format!("node {}'s WHEP URL {:?} is not ours", owner.id, owner.whep))?;
        let url = format!("{base}/rest-api/cdn/{action}");
        let body = json!({ "name": stream, "node": us }).to_string();
        let request = hyper::Request::post(&url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.auth.mint(us.as_str())),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{url}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status();
            // Read to the end so the connection can be used again.
            let _ = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await;
            Ok(status)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("{url} did not answer within {REQUEST_TIMEOUT:?}")))
    }
}

/// What asking for a stream's pull came to.
enum Pulled {
    /// The stream is on this node (or the name is invalid): nothing to pull.
    Here,
    /// Nobody publishes it in the cluster.
    Nowhere,
    /// Pulled (or being pulled) from this node.
    From(NodeId),
    /// The owner could not be found, reached, or refused.
    Failed(String),
}

/// Asks the owner of `stream` to relay it here, unless it is here already or asked for.
async fn request_pull(state: &Signalling, hub: &PullHub, stream: &str) -> Pulled {
    let Some(cluster) = &state.cluster else {
        return Pulled::Nowhere;
    };
    if validate_stream_name(stream).is_err() || state.registry().stream(stream).is_some() {
        return Pulled::Here;
    }
    // A draining node takes no new player.
    if state.drain.is_draining() {
        return Pulled::Here;
    }
    ask_owner(state, cluster, hub, stream).await
}

/// Asks the owner of `stream` in Redis (or the group's transit node) to relay it here, unless
/// this node pulls it from there already.
async fn ask_owner(
    state: &Signalling,
    cluster: &crate::cluster::Cluster,
    hub: &PullHub,
    stream: &str,
) -> Pulled {
    // Without Redis the owner cannot be known (and asking would make every "Stream not
    // found" wait for Redis's timeout).
    if cluster.redis_down() {
        return Pulled::Failed("Redis is unreachable: new cross-node pulls are refused".into());
    }
    let owner = match cluster.stream_owner(stream).await {
        Ok(Some(claim)) if claim.node != *cluster.node_id() => claim.node,
        Ok(_) => return Pulled::Nowhere,
        Err(e) => return Pulled::Failed(format!("cannot find the stream's owner: {e}")),
    };
    // An edge of a group with transit nodes pulls through one of them (tiers: origin →
    // transit → edge), so the origin relays a stream once per group.
    let (source, lease) = match cluster.choose_transit(stream) {
        Some(transit) if transit.id != owner => (transit.id.clone(), Some(transit)),
        _ => (owner.clone(), None),
    };
    if hub.pulls().is_pulled_from(stream, &source) {
        return Pulled::From(source);
    }
    let lease = match lease {
        Some(lease) => lease,
        None => match lease_of(state, &owner).await {
            Some(lease) => lease,
            None => return Pulled::Failed(format!("its owner {owner} is not a live node")),
        },
    };
    let via = if source == owner {
        "owner"
    } else {
        "transit node"
    };
    match hub.ask(&lease, "pull", stream, cluster.node_id()).await {
        Ok(status) if status.is_success() => {
            hub.pulls()
                .handle_requested(Instant::now(), stream, source.clone());
            info!(stream, %owner, %source, "pulling the stream from its {via}");
            Pulled::From(source)
        }
        Ok(status) => Pulled::Failed(format!("its {via} {source} answered {status}")),
        Err(e) => Pulled::Failed(format!("cannot ask its {via} {source}: {e}")),
    }
}

/// Why a player's stream could not be pulled here: what the player is told when the stream
/// is not on this node after all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullFailure {
    /// Nobody publishes it in the cluster.
    #[error("CDN stream not found: nobody publishes it in the cluster")]
    NotInCdn,
    /// Its owner could not be found, asked, or did not relay it in time.
    #[error("Failed to connect to origin stream: {0}")]
    Origin(String),
}

impl PullFailure {
    /// The `info` a WCS edge gives a player for this, word for word: WCS pages compare it.
    pub fn wcs_info(&self) -> &'static str {
        match self {
            PullFailure::NotInCdn => "CDN stream not found",
            PullFailure::Origin(_) => "Failed to connect to origin stream",
        }
    }
}

/// A player asks for `stream`: when this node does not have it and another node of the
/// cluster publishes it, that node is asked to relay it here (once, however many players ask)
/// and the player waits up to [`PULL_WAIT`] for it to arrive. Returns at once when the node
/// has it, is not in a cluster that pulls, or nobody publishes it. The play goes on either
/// way; when it finds no stream, [`explain_missing`] tells the player why with the failure.
pub async fn pull_in_cluster(state: &Signalling, stream: &str) -> Result<(), PullFailure> {
    let Some(hub) = &state.pulls else {
        return Ok(());
    };
    let asked = Instant::now();
    let source = match request_pull(state, hub, stream).await {
        Pulled::From(source) => source,
        Pulled::Here => return Ok(()),
        Pulled::Nowhere => return Err(PullFailure::NotInCdn),
        Pulled::Failed(why) => {
            warn!(stream, "not pulling the stream: {why}");
            return Err(PullFailure::Origin(why));
        }
    };
    let deadline = asked + PULL_WAIT;
    while Instant::now() < deadline {
        if state.registry().stream(stream).is_some() {
            debug!(
                stream,
                waited_ms = asked.elapsed().as_millis() as u64,
                "pulled stream arrived"
            );
            return Ok(());
        }
        tokio::time::sleep(ARRIVAL_POLL).await;
    }
    info!(stream, %source, "the pulled stream did not arrive within {PULL_WAIT:?}");
    Err(PullFailure::Origin(format!(
        "node {source} did not relay it within {PULL_WAIT:?}"
    )))
}

/// A play that found no stream after [`pull_in_cluster`] failed is refused for the pull's
/// reason, not as a plain "Stream not found".
pub fn explain_missing<T>(
    started: Result<T, StartError>,
    pulled: Result<(), PullFailure>,
) -> Result<T, StartError> {
    match (started, pulled) {
        (Err(StartError::Registry(RegistryError::StreamNotFound(_))), Err(failure)) => {
            Err(StartError::Pull(failure))
        }
        (started, _) => started,
    }
}

/// `POST /rest-api/v3/cdn/warmup` (admin; WCS's warm-up, `{"name": STREAM}`): pulls the
/// stream now and keeps it pulled without players until its publishing stops. 200 with the
/// owner (`"state": "pulled"`, or `"published here"`), 404 when nobody publishes it, 502 when
/// its owner cannot be asked, 404 on a node that does not pull.
pub async fn warmup(state: &Signalling, body: &str) -> Response<Full<Bytes>> {
    let Some(hub) = &state.pulls else {
        return text(
            StatusCode::NOT_FOUND,
            "this node does not pull ([cluster] with a secret)",
        );
    };
    let request: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let Some(name) = request.get("name").and_then(Value::as_str) else {
        return text(StatusCode::BAD_REQUEST, "expected {\"name\"}");
    };
    match request_pull(state, hub, name).await {
        Pulled::Here => json_answer(json!({ "name": name, "state": "published here" })),
        Pulled::Nowhere => text(StatusCode::NOT_FOUND, "Stream not found"),
        Pulled::From(owner) => {
            hub.pulls().set_warm(name);
            info!(stream = name, owner = %owner, "warm-up: kept pulled until its publishing stops");
            json_answer(json!({ "name": name, "state": "pulled", "owner": owner }))
        }
        Pulled::Failed(why) => text(StatusCode::BAD_GATEWAY, why),
    }
}

fn json_answer(value: Value) -> Response<Full<Bytes>> {
    super::control_api::json_response(&value)
}

/// The lease of the live node `id`: from the view, else read from Redis (it may have joined
/// since the view was read).
async fn lease_of(state: &Signalling, id: &NodeId) -> Option<NodeLease> {
    let cluster = state.cluster.as_ref()?;
    if let Some(lease) = cluster.view().node(id) {
        return Some(lease.clone());
    }
    let nodes = cluster.live_nodes().await.ok()?;
    nodes.into_iter().find(|n| n.id == *id)
}

/// `POST /rest-api/cdn/pull` (`release` false) and `/rest-api/cdn/release`: the node `node`
/// of the cluster, proving `cluster.secret` with `bearer`, starts or stops pulling `name`
/// from us. 404 when we do not publish it (a copy relayed to us is not relayed on: pulls never
/// loop), 403 for a bad token, 400 for a bad body or a node that is not live.
pub async fn serve(
    state: &Signalling,
    bearer: Option<&str>,
    body: &str,
    release: bool,
) -> Response<Full<Bytes>> {
    let Some(hub) = &state.pulls else {
        return text(
            StatusCode::NOT_FOUND,
            "this node does not relay on demand ([cluster] with a secret)",
        );
    };
    if let Err(e) = bearer
        .ok_or_else(|| "no relay token".to_owned())
        .and_then(|t| hub.auth.verify(t).map_err(|e| e.to_string()))
    {
        return text(StatusCode::FORBIDDEN, format!("pull refused: {e}"));
    }
    let request: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    let (Some(name), Some(node)) = (
        request.get("name").and_then(Value::as_str),
        request.get("node").and_then(Value::as_str),
    ) else {
        return text(StatusCode::BAD_REQUEST, "expected {\"name\", \"node\"}");
    };
    let Some(lease) = lease_of(state, &NodeId::from(node)).await else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("node {node:?} is not live"),
        );
    };
    let edge = hub.edge(&lease.id);
    if release {
        state.control(|plane, now| plane.handle_pull_released(now, name, edge));
        info!(stream = name, node, "pull released");
        return text(StatusCode::OK, "");
    }
    let Some(target) = target_of(&lease, edge) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("node {node:?} has no WebSocket URL"),
        );
    };
    // A transit node asked for a stream it does not have pulls it from its owner first, and
    // relays its copy once it arrives; the asking edge waits for it as for any pull.
    let transit = state
        .cluster
        .as_ref()
        .is_some_and(|c| c.has_role(ClusterRole::Transit));
    if transit && validate_stream_name(name).is_ok() {
        match request_pull(state, hub, name).await {
            Pulled::Here | Pulled::From(_) => {}
            Pulled::Nowhere => return text(StatusCode::NOT_FOUND, "Stream not found"),
            Pulled::Failed(why) => {
                warn!(
                    stream = name,
                    node, "transit: cannot pull the stream: {why}"
                );
                return text(StatusCode::BAD_GATEWAY, format!("cannot pull it: {why}"));
            }
        }
    }
    if let Some(relays) = &state.relays {
        relays.add_target(target);
    }
    match state.control(|plane, now| plane.handle_pull_requested(now, name, edge, transit)) {
        Ok(()) => {
            info!(stream = name, node, "pulled: relaying the stream there");
            text(StatusCode::OK, "")
        }
        Err(e) => text(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// Where the relay to `lease`'s node connects: its ws:// URL, else its wss:// one.
fn target_of(lease: &NodeLease, edge: EdgeId) -> Option<RelayTarget> {
    let (url, secure) = match (&lease.ws, &lease.wss) {
        (Some(ws), _) => (ws.strip_prefix("ws://")?, false),
        (None, Some(wss)) => (wss.strip_prefix("wss://")?, true),
        (None, None) => return None,
    };
    let (host, port) = url.trim_end_matches('/').rsplit_once(':')?;
    Some(RelayTarget {
        node_id: edge.0,
        host: host.to_owned(),
        port: port.parse().ok()?,
        secure,
        // A dynamic CDN relays over WebRTC.
        rtmp_port: crate::config::cdn::CdnConfig::default().rtmp_port,
    })
}

/// Releases the pulls nobody watches until `signalling` is gone: the owner is asked to stop
/// its relay, which ends the copy here.
pub async fn run(signalling: Weak<Signalling>) {
    loop {
        tokio::time::sleep(IDLE_CHECK).await;
        let Some(state) = signalling.upgrade() else {
            return;
        };
        let (Some(cluster), Some(hub)) = (&state.cluster, &state.pulls) else {
            return;
        };
        let (commands, repulls): (Vec<PullCommand>, Vec<String>) = {
            let registry = state.registry();
            let mut pulls = hub.pulls();
            let now = Instant::now();
            // A copy this node relays on (a transit node's) is watched through its relays.
            let local = registry
                .streams()
                .map(|s| (s.name.as_str(), s.players.len() + s.relays.len()));
            pulls.handle_local(now, local);
            let orphaned = registry
                .streams()
                .filter(|s| s.orphaned_since.is_some())
                .map(|s| s.name.as_str());
            let repulls = pulls.due_repulls(now, orphaned);
            (
                std::iter::from_fn(|| pulls.poll_command()).collect(),
                repulls,
            )
        };
        // A copy whose source was lost: when its publisher published anew on another node,
        // that node relays it here and the new copy takes the waiting players over.
        for stream in repulls {
            if let Pulled::Failed(why) = ask_owner(&state, cluster, hub, &stream).await {
                debug!(
                    stream,
                    "the orphaned copy's new owner cannot be asked yet: {why}"
                );
            }
        }
        for PullCommand::Release { stream, owner } in commands {
            let Some(lease) = lease_of(&state, &owner).await else {
                continue;
            };
            match hub.ask(&lease, "release", &stream, cluster.node_id()).await {
                Ok(status) => {
                    info!(stream, owner = %owner, %status, "unwatched pull released")
                }
                Err(e) => {
                    warn!(stream, owner = %owner, error = %e, "cannot release the pull; the owner drops it when its relay fails")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lease::NodeAddresses;
    use crate::config::cluster::ClusterConfig;

    #[test]
    fn a_pullers_relay_target_is_its_websocket() {
        let addresses = NodeAddresses {
            host: "10.0.0.7".into(),
            http_port: Some(8081),
            https_port: Some(8444),
        };
        let config = ClusterConfig::new("redis://127.0.0.1");
        let mut lease = NodeLease::new(NodeId::new(None, 1), &config, &addresses, 0);
        let target = target_of(&lease, EdgeId(3)).unwrap();
        assert_eq!(
            (
                target.node_id,
                target.host.as_str(),
                target.port,
                target.secure
            ),
            (3, "10.0.0.7", 8081, false)
        );
        lease.ws = None;
        assert!(target_of(&lease, EdgeId(3)).unwrap().secure);
        lease.wss = None;
        assert!(target_of(&lease, EdgeId(3)).is_none());
    }
}
