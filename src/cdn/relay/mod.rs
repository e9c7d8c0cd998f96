//! Origin → edge relaying (CDN 1.0 step 2), the transport: once a stream's media flows, the
//! origin connects to each edge over the Flashphoner WebSocket protocol as a client, publishes
//! the stream there with an offer of its own, and a relay session on the publisher's core sends
//! the stream's packets. The edge sees an ordinary publisher.
//!
//! When to relay, retry and stop is decided by the control plane's [`RelayPlanner`]; [`run`]
//! feeds it what the node tells [`Relays`] and what each link (one attempt, `link.rs`) reports,
//! and carries out its actions. What a link needs from the node (the stream's tracks, a relay
//! session on a core and that session's status) it asks through [`RelayHost`], which the node's
//! signalling implements: this module never reaches into it. `offer.rs` writes the relay's
//! offer and reads what of it the edge's answer kept.

mod link;
mod offer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use crate::auth::RelayAuth;
use crate::config::cdn::{CdnConfig, CdnNode};
use crate::control::registry::StreamTrack;
use crate::control::relay_planner::{
    AttemptId, EdgeId, RelayAction, RelayEnd, RelayPlanner, RelayState, RetryPolicy,
};
use crate::control::status::SessionStatus;
use crate::control::{PlayedTrack, RelayedLayers, SessionId, StreamId};
use crate::dtls::DtlsRole;

/// An edge to relay to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    /// The node's id in the CDN config.
    pub node_id: u32,
    /// Its host (name or address).
    pub host: String,
    /// Its WebSocket port.
    pub port: u16,
    /// Whether that port speaks wss:// (TLS).
    pub secure: bool,
}

/// The relay targets of a node list: plain ws:// where a node has it, else wss://.
pub fn targets(nodes: &[CdnNode]) -> Vec<RelayTarget> {
    nodes
        .iter()
        .filter_map(|node| {
            let (port, secure) = match (node.ws, node.wss) {
                (Some(ws), _) => (ws, false),
                (None, Some(wss)) => (wss, true),
                (None, None) => return None,
            };
            Some(RelayTarget {
                node_id: node.id,
                host: node.host.clone(),
                port,
                secure,
            })
        })
        .collect()
}

impl RelayTarget {
    fn url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}:{}/", self.host, self.port)
    }
}

/// A live stream as a relay offers it.
#[derive(Debug, Clone)]
pub struct RelayedStream {
    /// Which publication of the name it is.
    pub id: StreamId,
    /// What the publisher sends.
    pub tracks: Vec<StreamTrack>,
    /// Its access list, which the edge enforces too.
    pub acl: Vec<String>,
}

/// A relay session for the node to run, as the edge's answer made it.
#[derive(Debug, Clone)]
pub struct RelaySession {
    /// The stream's name...
    pub stream: String,
    /// ...and the publication relayed: a session for another one is not opened.
    pub stream_id: StreamId,
    /// What it sends the edge.
    pub tracks: Vec<PlayedTrack>,
    /// Every simulcast layer of the video, when the edge took them; else the video is its
    /// highest layer, as one stream.
    pub layers: Option<RelayedLayers>,
    /// The edge's candidates (IPv4 host candidates of its answer).
    pub remote_candidates: Vec<SocketAddr>,
    /// Our ICE credentials, in our offer.
    pub local_ice: ice::IceCredentials,
    /// The edge's, from its answer.
    pub remote_ice: ice::IceCredentials,
    /// The edge's DTLS fingerprint.
    pub remote_fingerprint: [u8; 32],
    /// Ours, by the edge's `a=setup`.
    pub dtls_role: DtlsRole,
}

/// What a relay needs from the node it runs on.
pub trait RelayHost: Send + Sync + 'static {
    /// The live stream `name`, if there is one.
    fn relayed_stream(&self, name: &str) -> Option<RelayedStream>;
    /// Registers `session` and starts it on its stream's publisher core; every status change
    /// of it goes to `status`. `None` when its publication is gone.
    fn open_relay_session(
        &self,
        session: RelaySession,
        status: UnboundedSender<SessionStatus>,
    ) -> Option<SessionId>;
    /// Ends a relay session the link gives up on, without reporting it back.
    fn close_relay_session(&self, id: SessionId);
}

/// What the node tells its relays.
#[derive(Debug)]
enum NodeInput {
    Published { name: String, id: StreamId },
    Unpublished { name: String, id: StreamId },
    AclChanged { name: String, keys: Vec<String> },
}

/// How the node tells its relays what happened to its streams.
#[derive(Debug, Clone)]
pub struct Relays {
    inputs: UnboundedSender<NodeInput>,
}

/// [`run`]'s end of [`Relays`].
#[derive(Debug)]
pub struct RelayInputs(UnboundedReceiver<NodeInput>);

/// A [`Relays`] handle and the inputs for [`run`].
pub fn channel() -> (Relays, RelayInputs) {
    let (inputs, receiver) = mpsc::unbounded_channel();
    (Relays { inputs }, RelayInputs(receiver))
}

impl Relays {
    /// The stream `name` (`id`) is published and its media flows.
    pub fn stream_published(&self, name: &str, id: StreamId) {
        self.send(NodeInput::Published {
            name: name.to_owned(),
            id,
        });
    }

    /// The stream `name` (`id`) is gone.
    pub fn stream_unpublished(&self, name: &str, id: StreamId) {
        self.send(NodeInput::Unpublished {
            name: name.to_owned(),
            id,
        });
    }

    /// The access list of `name` is now `keys`.
    pub fn acl_changed(&self, name: &str, keys: &[String]) {
        self.send(NodeInput::AclChanged {
            name: name.to_owned(),
            keys: keys.to_vec(),
        });
    }

    fn send(&self, input: NodeInput) {
        // Closed only when the node stops.
        let _ = self.inputs.send(input);
    }
}

/// How an origin relays.
pub struct RelaySetup {
    /// The edges.
    pub targets: Vec<RelayTarget>,
    /// TLS for wss:// edges.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `cdn.secret`, to prove our relays to the edges.
    pub auth: Option<RelayAuth>,
    /// Our DTLS certificate's fingerprint, for the offers.
    pub fingerprint: [u8; 32],
    /// When a failed relay is tried again.
    pub policy: RetryPolicy,
}

impl RelaySetup {
    /// The relays of a node with `[cdn]` config `cdn`; `None` when it relays to no edge.
    pub fn from_cdn(cdn: &CdnConfig, fingerprint: [u8; 32]) -> Option<RelaySetup> {
        if !cdn.relays() {
            return None;
        }
        let targets = targets(&cdn.nodes);
        if targets.is_empty() {
            return None;
        }
        let tls = if targets.iter().any(|t| t.secure) {
            match crate::wcs_protocol::client::tls_config(cdn.tls_ca_file.as_deref()) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    warn!(error = %e, "no TLS for wss:// relays: those edges will not be relayed to");
                    None
                }
            }
        } else {
            None
        };
        Some(RelaySetup {
            targets,
            tls,
            auth: cdn.secret.as_ref().map(|s| RelayAuth::new(s.expose())),
            fingerprint,
            policy: RetryPolicy::default(),
        })
    }
}

/// Runs the node's relays until the node drops its [`Relays`]: the planner decides, links to
/// the edges carry its actions out. `seed` seeds the retry jitter.
pub async fn run(inputs: RelayInputs, setup: RelaySetup, host: Arc<dyn RelayHost>, seed: u64) {
    let RelayInputs(mut inputs) = inputs;
    let edges = setup.targets.iter().map(|t| EdgeId(t.node_id)).collect();
    let mut planner = RelayPlanner::new(edges, setup.policy, StdRng::seed_from_u64(seed));
    let targets: HashMap<EdgeId, RelayTarget> = setup
        .targets
        .iter()
        .map(|t| (EdgeId(t.node_id), t.clone()))
        .collect();
    let link_setup = Arc::new(link::LinkSetup {
        host,
        tls: setup.tls,
        auth: setup.auth,
        fingerprint: setup.fingerprint,
    });
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let mut links: HashMap<AttemptId, link::Link> = HashMap::new();
    loop {
        while let Some(action) = planner.poll_action() {
            match action {
                RelayAction::Start {
                    attempt,
                    stream,
                    stream_id,
                    edge,
                } => {
                    let Some(target) = targets.get(&edge) else {
                        continue;
                    };
                    let relayed = link_setup
                        .host
                        .relayed_stream(&stream)
                        .filter(|s| s.id == stream_id);
                    let Some(relayed) = relayed else {
                        planner.handle_relay_ended(Instant::now(), attempt, &RelayEnd::StreamGone);
                        continue;
                    };
                    let job = link::Job {
                        attempt,
                        stream,
                        relayed,
                        target: target.clone(),
                    };
                    links.insert(
                        attempt,
                        link::spawn(job, link_setup.clone(), reports_tx.clone()),
                    );
                }
                RelayAction::Stop { attempt } => {
                    if let Some(link) = links.get(&attempt) {
                        link.stop();
                    }
                }
                RelayAction::PassAcl { attempt, keys } => {
                    if let Some(link) = links.get(&attempt) {
                        link.pass_acl(keys);
                    }
                }
            }
        }
        let wake = planner.poll_timeout();
        let deadline = wake.map_or_else(far_future, tokio::time::Instant::from_std);
        tokio::select! {
            input = inputs.recv() => {
                let now = Instant::now();
                match input {
                    Some(NodeInput::Published { name, id }) => {
                        planner.handle_stream_published(now, &name, id)
                    }
                    Some(NodeInput::Unpublished { name, id }) => {
                        planner.handle_stream_unpublished(now, &name, id)
                    }
                    Some(NodeInput::AclChanged { name, keys }) => {
                        planner.handle_acl_changed(&name, &keys)
                    }
                    // The node is gone; its runtime ends the links.
                    None => return,
                }
            }
            Some(report) = reports.recv() => {
                let now = Instant::now();
                match report.event {
                    link::LinkEvent::Up => planner.handle_relay_up(now, report.attempt),
                    link::LinkEvent::Ended(end) => {
                        let Some(link) = links.remove(&report.attempt) else {
                            continue;
                        };
                        planner.handle_relay_ended(now, report.attempt, &end);
                        let state = planner.state(&link.stream, EdgeId(link.target.node_id));
                        log_end(&link, &end, state, now);
                    }
                }
            }
            () = tokio::time::sleep_until(deadline), if wake.is_some() => {
                planner.handle_timeout(Instant::now());
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

fn log_end(link: &link::Link, end: &RelayEnd, state: Option<RelayState>, now: Instant) {
    let (stream, edge) = (link.stream.as_str(), link.target.node_id);
    match (end, state) {
        (RelayEnd::Failed(why), Some(RelayState::Backoff { until })) => {
            let retry_in = until.saturating_duration_since(now);
            warn!(
                stream,
                edge,
                url = link.target.url(),
                ?retry_in,
                "relay failed: {why}"
            );
        }
        (RelayEnd::Failed(why), _) => {
            warn!(stream, edge, url = link.target.url(), "relay failed: {why}")
        }
        (RelayEnd::StreamGone, _) => info!(stream, edge, "relay ended with the stream"),
        (RelayEnd::Stopped, _) => info!(stream, edge, "relay stopped"),
    }
}
