//! Origin → edge relaying (CDN 1.0 step 2), the transport: once a stream's media flows, the
//! origin connects to each edge over the Flashphoner WebSocket protocol as a client, publishes
//! the stream there with an offer of its own, and a relay session on the publisher's core sends
//! the stream's packets. The edge sees an ordinary publisher.
//!
//! It decides nothing: the node's control plane (`crate::control::plane`, whose relay planner
//! says when to relay, retry and stop) sends its [`RelayOrder`]s through [`Relays`], [`run`]
//! carries them out with one link per attempt (`link.rs`), and reports how each attempt goes
//! back to the plane through [`RelayHost`], which the node's signalling implements: this module
//! never reaches into it. A link learns how its relay session does from the typed
//! `SessionStatus`, never from a browser's frame. `offer.rs` writes the relay's offer and reads
//! what of it the edge's answer kept; `transport.rs` decides whether the relay session goes
//! over UDP or TCP (`cdn.relay_transport`). With `cdn.stream_distribution = "rtmp"` a stream
//! RTMP can carry goes by `rtmp_link.rs` instead: an RTMP publish to the edge fed by a tap on
//! the stream.

mod link;
mod offer;
mod rtmp_link;
mod transport;

pub use rtmp_link::{carries as rtmp_carries, stream_key as rtmp_stream_key};

pub use transport::UDP_CONNECT_WINDOW;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use crate::auth::RelayAuth;
use crate::config::cdn::{CdnConfig, CdnNode, RelayTransport, StreamDistribution};
use crate::control::plane::RelayOrder;
pub use crate::control::plane::RelayedStream;
use crate::control::relay_planner::{
    AttemptId, EdgeId, RelayEnd, RelayFailure, RelayState, RetryPolicy,
};
use crate::control::status::SessionStatus;
use crate::control::{CoreId, PlayedTrack, RelayPath, RelayedLayers, SessionId, StreamId};
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
    /// Its RTMP port, for `cdn.stream_distribution = "rtmp"`.
    pub rtmp_port: u16,
}

/// The relay targets of a node list: plain ws:// where a node has it, else wss://; RTMP on the
/// node's port, else `rtmp_port`.
pub fn targets(nodes: &[CdnNode], rtmp_port: u16) -> Vec<RelayTarget> {
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
                rtmp_port: node.rtmp.unwrap_or(rtmp_port),
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
    /// The edge's candidates (IPv4 host candidates of its answer) on `path`: every UDP one,
    /// or the passive TCP one the session connects to.
    pub remote_candidates: Vec<SocketAddr>,
    /// UDP or TCP.
    pub path: RelayPath,
    /// Our ICE credentials, in our offer.
    pub local_ice: ice::IceCredentials,
    /// The edge's, from its answer.
    pub remote_ice: ice::IceCredentials,
    /// The edge's DTLS fingerprint.
    pub remote_fingerprint: [u8; 32],
    /// Ours, by the edge's `a=setup`.
    pub dtls_role: DtlsRole,
}

/// A tap on a stream at its publisher's core, for an RTMP push.
pub struct RelayTap {
    /// Its session: a relay of the stream.
    pub id: SessionId,
    /// The publisher's core.
    pub core: CoreId,
    /// The stream's packets.
    pub receiver: crate::media::EgressReceiver,
}

/// What a relay needs from the node it runs on, and how it reports back to the node's control
/// plane.
pub trait RelayHost: Send + Sync + 'static {
    /// Registers `session` and starts it on its stream's publisher core; every status change
    /// of it goes to `status`. `None` when its publication is gone.
    fn open_relay_session(
        &self,
        session: RelaySession,
        status: UnboundedSender<SessionStatus>,
    ) -> Option<SessionId>;
    /// Registers a tap on the publication `stream_id` of `stream` at its publisher's core: the
    /// video of simulcast `layer`, and the audio when `audio`; its end goes to `status`.
    /// `None` when the publication is gone.
    fn open_relay_tap(
        &self,
        stream: &str,
        stream_id: StreamId,
        layer: u8,
        audio: bool,
        status: UnboundedSender<SessionStatus>,
    ) -> Option<RelayTap>;
    /// Asks the publisher of `tap`'s stream for a keyframe.
    fn request_keyframe(&self, tap: &RelayTap);
    /// Ends a relay session (or tap) the link gives up on, without reporting it back.
    fn close_relay_session(&self, id: SessionId);
    /// `attempt`'s relay session to its edge connected, over `path`.
    fn relay_up(&self, attempt: AttemptId, path: RelayPath);
    /// `attempt` ended. Returns where its relay stands now (for the log), `None` when the
    /// plane had moved on from it.
    fn relay_ended(&self, attempt: AttemptId, end: &RelayEnd) -> Option<RelayState>;
}

/// What [`run`] is handed: the control plane's orders, and the targets a dynamic CDN learns
/// as nodes pull streams (sent before the orders that name them, on the same channel, so they
/// arrive first).
#[derive(Debug)]
enum Message {
    Order(RelayOrder),
    Target(RelayTarget),
}

/// How the control plane hands its relay orders to [`run`].
#[derive(Debug, Clone)]
pub struct Relays {
    orders: UnboundedSender<Message>,
}

/// [`run`]'s end of [`Relays`].
#[derive(Debug)]
pub struct RelayOrders(UnboundedReceiver<Message>);

/// A [`Relays`] handle and the orders for [`run`].
pub fn channel() -> (Relays, RelayOrders) {
    let (orders, receiver) = mpsc::unbounded_channel();
    (Relays { orders }, RelayOrders(receiver))
}

impl Relays {
    /// Hands `order` to the relay transport.
    pub fn carry_out(&self, order: RelayOrder) {
        // Closed only when the node stops.
        let _ = self.orders.send(Message::Order(order));
    }

    /// Relays to `EdgeId(target.node_id)` go to `target` from now on (a cluster node that
    /// pulls a stream; a node's address may change between its lives).
    pub fn add_target(&self, target: RelayTarget) {
        let _ = self.orders.send(Message::Target(target));
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
    /// `cdn.relay_transport`.
    pub transport: RelayTransport,
    /// Our media address (IPv4, as the relay sockets are), named in the offers' active TCP
    /// candidate.
    pub media_ip: Option<IpAddr>,
    /// `cdn.stream_distribution`.
    pub distribution: StreamDistribution,
}

impl RelaySetup {
    /// The relays of a node with `[cdn]` config `cdn`, whose media candidates have the addresses
    /// `media_ips`; `None` when it relays to no edge.
    pub fn from_cdn(
        cdn: &CdnConfig,
        fingerprint: [u8; 32],
        media_ips: &[IpAddr],
    ) -> Option<RelaySetup> {
        if !cdn.relays() {
            return None;
        }
        let targets = targets(&cdn.nodes, cdn.rtmp_port);
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
            transport: cdn.relay_transport,
            media_ip: media_ips.iter().copied().find(IpAddr::is_ipv4),
            distribution: cdn.stream_distribution,
        })
    }
}

impl RelaySetup {
    /// The relays of a dynamic CDN's node (`[cluster]` with a `secret`): no static edges; the
    /// nodes that pull its streams become targets as they ask.
    pub fn for_cluster(
        secret: &str,
        cdn: &CdnConfig,
        fingerprint: [u8; 32],
        media_ips: &[IpAddr],
    ) -> RelaySetup {
        let tls = match crate::wcs_protocol::client::tls_config(cdn.tls_ca_file.as_deref()) {
            Ok(tls) => Some(tls),
            Err(e) => {
                warn!(error = %e, "no TLS for wss:// relays: nodes reached only by wss:// cannot pull from this one");
                None
            }
        };
        RelaySetup {
            targets: Vec::new(),
            tls,
            auth: Some(RelayAuth::new(secret)),
            fingerprint,
            policy: RetryPolicy::default(),
            transport: cdn.relay_transport,
            media_ip: media_ips.iter().copied().find(IpAddr::is_ipv4),
            // Nodes that pull streams take them over WebRTC.
            distribution: StreamDistribution::WebRtc,
        }
    }

    /// The edges, as the control plane knows them.
    pub fn edges(&self) -> Vec<EdgeId> {
        self.targets.iter().map(|t| EdgeId(t.node_id)).collect()
    }
}

/// Carries out the control plane's relay orders until the node drops its [`Relays`]: a link to
/// the edge per attempt, whose news goes back to the plane through `host`.
pub async fn run(orders: RelayOrders, setup: RelaySetup, host: Arc<dyn RelayHost>) {
    let RelayOrders(mut orders) = orders;
    let mut targets: HashMap<EdgeId, RelayTarget> = setup
        .targets
        .iter()
        .map(|t| (EdgeId(t.node_id), t.clone()))
        .collect();
    let link_setup = Arc::new(link::LinkSetup {
        host: host.clone(),
        tls: setup.tls,
        auth: setup.auth,
        fingerprint: setup.fingerprint,
        transport: setup.transport,
        media_ip: setup.media_ip,
    });
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let mut links: HashMap<AttemptId, link::Link> = HashMap::new();
    // Streams said once to go over WebRTC although the distribution is RTMP.
    let mut not_rtmp: HashSet<StreamId> = HashSet::new();
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                Some(Message::Target(target)) => {
                    targets.insert(EdgeId(target.node_id), target);
                }
                Some(Message::Order(RelayOrder::Start { attempt, edge, stream, relayed })) => {
                    let Some(target) = targets.get(&edge) else {
                        let why = format!("edge {} is not in the node list", edge.0);
                        host.relay_ended(attempt, &RelayEnd::Failed(RelayFailure::Link(why)));
                        continue;
                    };
                    let carried = match setup.distribution {
                        StreamDistribution::WebRtc => None,
                        // Said once already (by `carries`, or by an RTMP push that found out).
                        StreamDistribution::Rtmp if not_rtmp.contains(&relayed.id) => None,
                        StreamDistribution::Rtmp => match rtmp_link::carries(&stream, &relayed.tracks) {
                            Ok(carried) => Some(carried),
                            Err(why) => {
                                if not_rtmp.insert(relayed.id) {
                                    warn!(stream, "relayed over WebRTC, not RTMP: {why}");
                                }
                                None
                            }
                        },
                    };
                    let job = link::Job {
                        attempt,
                        stream,
                        relayed,
                        target: target.clone(),
                    };
                    let link = match carried {
                        Some(carried) => rtmp_link::spawn(job, carried, link_setup.clone(), reports_tx.clone()),
                        None => link::spawn(job, link_setup.clone(), reports_tx.clone()),
                    };
                    links.insert(attempt, link);
                }
                Some(Message::Order(RelayOrder::Stop { attempt })) => {
                    if let Some(link) = links.get(&attempt) {
                        link.stop();
                    }
                }
                Some(Message::Order(RelayOrder::PassAcl { attempt, keys })) => {
                    if let Some(link) = links.get(&attempt) {
                        link.pass_acl(keys);
                    }
                }
                // The node is gone; its runtime ends the links.
                None => return,
            },
            Some(report) = reports.recv() => match report.event {
                link::LinkEvent::Up(path) => host.relay_up(report.attempt, path),
                link::LinkEvent::NotCarried(why) => {
                    let Some(link) = links.get(&report.attempt) else {
                        continue;
                    };
                    if not_rtmp.insert(link.stream_id) {
                        warn!(stream = link.stream, "relayed over WebRTC, not RTMP: {why}");
                    }
                }
                link::LinkEvent::Ended(end) => {
                    let Some(link) = links.remove(&report.attempt) else {
                        continue;
                    };
                    let state = host.relay_ended(report.attempt, &end);
                    log_end(&link, &end, state, Instant::now());
                }
            },
        }
    }
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
        (RelayEnd::Failed(why), Some(_)) => {
            warn!(stream, edge, url = link.target.url(), "relay failed: {why}")
        }
        // The plane had moved on: the stream was unpublished, or published anew.
        (RelayEnd::Failed(why), None) => info!(stream, edge, "relay ended with the stream: {why}"),
        (RelayEnd::StreamGone, _) => info!(stream, edge, "relay ended with the stream"),
        (RelayEnd::Stopped, _) => info!(stream, edge, "relay stopped"),
    }
}
