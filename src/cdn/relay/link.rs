//! One relay attempt: a WebSocket client session with one edge that publishes one stream there,
//! and the relay session on our side that sends it. The link reports when its relay session is
//! up and how the attempt ended; it takes the driver's Stop and access-list changes. It learns
//! how its relay session does from the typed [`SessionStatus`], never from a client's frame.
//!
//! The relay session goes over UDP or TCP as [`TransportChoice`] says; when "auto" moves to TCP,
//! the link ends the UDP session and opens one over TCP with the same ICE credentials and DTLS
//! setup, so the edge's publish (and its answer) stay the same: its ICE-lite agent takes the
//! check from the new path as from any client's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use super::offer::{keep_answered_layers, keep_answered_rtx, relay_offer};
use super::transport::{TransportChoice, UDP_CONNECT_WINDOW};
use super::{RelayHost, RelaySession, RelayTarget, RelayedStream};
use crate::auth::RelayAuth;
use crate::config::cdn::RelayTransport;
use crate::control::relay_planner::{AttemptId, RelayEnd, RelayFailure};
use crate::control::status::SessionStatus;
use crate::control::{EndReason, RelayPath, SessionId};
use crate::dtls::DtlsRole;
use crate::sdp::{self, MediaKind, Setup};
use crate::wcs_protocol::client::{media_session_id, WsClient};
use crate::wcs_protocol::frames::stream_status;

/// How long the edge may take for each signalling step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What every link of a node shares.
pub(super) struct LinkSetup {
    /// The node.
    pub host: Arc<dyn RelayHost>,
    /// TLS for wss:// edges.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Mints the token that proves us to the edge.
    pub auth: Option<RelayAuth>,
    /// Our DTLS fingerprint.
    pub fingerprint: [u8; 32],
    /// `cdn.relay_transport`.
    pub transport: RelayTransport,
    /// Our media address, for the active TCP candidate of the offer.
    pub media_ip: Option<std::net::IpAddr>,
}

/// One attempt to carry out.
pub(super) struct Job {
    pub attempt: AttemptId,
    pub stream: String,
    pub relayed: RelayedStream,
    pub target: RelayTarget,
}

/// A link's news for the driver.
pub(super) struct LinkReport {
    pub attempt: AttemptId,
    pub event: LinkEvent,
}

pub(super) enum LinkEvent {
    /// Our relay session to the edge connected, over this transport.
    Up(RelayPath),
    /// The attempt is over.
    Ended(RelayEnd),
    /// The RTMP push found why its stream cannot go over RTMP (before it ends): relay it over
    /// WebRTC from now on.
    NotCarried(&'static str),
}

/// The driver's orders.
pub(super) enum LinkCommand {
    PassAcl(Vec<String>),
    Stop,
}

/// The driver's handle on a running link.
pub(super) struct Link {
    pub stream: String,
    pub stream_id: crate::control::StreamId,
    pub target: RelayTarget,
    commands: UnboundedSender<LinkCommand>,
}

impl Link {
    /// The handle on `job`'s link, and the link's end of it.
    pub fn new(job: &Job) -> (Link, UnboundedReceiver<LinkCommand>) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let link = Link {
            stream: job.stream.clone(),
            stream_id: job.relayed.id,
            target: job.target.clone(),
            commands: commands_tx,
        };
        (link, commands)
    }

    /// Unpublish on the edge and end.
    pub fn stop(&self) {
        let _ = self.commands.send(LinkCommand::Stop);
    }

    /// Tell the edge the stream's access list is now `keys`.
    pub fn pass_acl(&self, keys: Vec<String>) {
        let _ = self.commands.send(LinkCommand::PassAcl(keys));
    }
}

/// Starts `job` in a task of its own.
pub(super) fn spawn(job: Job, setup: Arc<LinkSetup>, reports: UnboundedSender<LinkReport>) -> Link {
    let (link, commands) = Link::new(&job);
    tokio::spawn(async move {
        let end = relay(&job, &setup, commands, &reports).await;
        let _ = reports.send(LinkReport {
            attempt: job.attempt,
            event: LinkEvent::Ended(end),
        });
    });
    link
}

/// The edge's answer to our publish.
struct Answered {
    ws: WsClient,
    /// Our id for the stream on the edge.
    media_session_id: String,
    /// The relay session to open, on `choice`'s transport.
    session: RelaySession,
    choice: TransportChoice,
}

async fn relay(
    job: &Job,
    setup: &LinkSetup,
    mut commands: UnboundedReceiver<LinkCommand>,
    reports: &UnboundedSender<LinkReport>,
) -> RelayEnd {
    // The handshake, unless the driver stops the attempt first (dropping it closes the socket,
    // which ends whatever the edge started for it). Access-list changes wait for the answer:
    // the edge takes them from the stream's publisher only.
    let mut pending_acl = None;
    let handshake = publish(job, setup);
    tokio::pin!(handshake);
    let answered = loop {
        tokio::select! {
            result = &mut handshake => break result,
            command = commands.recv() => match command {
                Some(LinkCommand::PassAcl(keys)) => pending_acl = Some(keys),
                Some(LinkCommand::Stop) | None => return RelayEnd::Stopped,
            },
        }
    };
    let Answered {
        mut ws,
        media_session_id: id,
        mut session,
        mut choice,
    } = match answered {
        Ok(answered) => answered,
        Err(failure) => return RelayEnd::Failed(failure),
    };
    let (status_tx, mut statuses) = mpsc::unbounded_channel();
    // 0: one video stream (no simulcast, or an edge that takes none).
    let layers = session.layers.as_ref().map_or(0, |l| l.layers.len());
    let (stream, edge) = (job.stream.as_str(), job.target.node_id);
    let Some(mut relay_session) = open(setup, &mut session, &choice, &status_tx) else {
        unpublish(ws, &id, &job.stream).await;
        return RelayEnd::StreamGone;
    };
    // Kept for the TCP session "auto" may open; dropped when it cannot, so that a session
    // whose status sender is gone reads as ended.
    let mut spare_status = choice.poll_timeout().map(|_| status_tx);
    info!(stream, edge, session = %relay_session, layers, transport = %choice.path(), "relay session started");
    let mut failure = None;
    if let Some(keys) = pending_acl {
        failure = pass_acl(&mut ws, stream, keys).await.err();
    }
    let failure = match failure {
        Some(failure) => failure,
        None => loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some((name, data)) if name == "notifyStreamStatusEvent" => {
                        match stream_status(&data, &id) {
                            Some(("PUBLISHING", _)) => {
                                info!(stream, edge, "relaying: the edge is publishing")
                            }
                            Some((status @ ("FAILED" | "UNPUBLISHED"), info)) => {
                                break RelayFailure::EdgeEnded {
                                    status: status.to_owned(),
                                    info: info.to_owned(),
                                };
                            }
                            _ => {}
                        }
                    }
                    Some(_) => {}
                    None => break RelayFailure::Link("the edge closed the WebSocket".into()),
                },
                command = commands.recv() => match command {
                    Some(LinkCommand::PassAcl(keys)) => {
                        if let Err(failure) = pass_acl(&mut ws, stream, keys).await {
                            break failure;
                        }
                    }
                    Some(LinkCommand::Stop) | None => {
                        setup.host.close_relay_session(relay_session);
                        unpublish(ws, &id, stream).await;
                        return RelayEnd::Stopped;
                    }
                },
                () = sleep_until(choice.poll_timeout()) => {
                    if !choice.handle_timeout(Instant::now()) {
                        continue;
                    }
                    // Kept while "auto" may move, so always there.
                    let Some(status_tx) = spare_status.take() else {
                        continue;
                    };
                    warn!(
                        stream,
                        edge,
                        waited = ?UDP_CONNECT_WINDOW,
                        "relay: UDP to the edge did not connect, trying TCP"
                    );
                    setup.host.close_relay_session(relay_session);
                    let Some(id_tcp) = open(setup, &mut session, &choice, &status_tx) else {
                        unpublish(ws, &id, stream).await;
                        return RelayEnd::StreamGone;
                    };
                    relay_session = id_tcp;
                    info!(stream, edge, session = %relay_session, transport = %choice.path(), "relay session started");
                },
                status = statuses.recv() => match status {
                    Some(SessionStatus::Connected) => {
                        choice.connected();
                        spare_status = None;
                        let path = choice.path();
                        info!(stream, edge, session = %relay_session, transport = %path, "relay session connected");
                        let up = LinkReport { attempt: job.attempt, event: LinkEvent::Up(path) };
                        let _ = reports.send(up);
                    }
                    Some(SessionStatus::MediaFlowing) => {}
                    // Our relay session ended on its core: the publisher left, or ICE or DTLS
                    // with the edge failed.
                    ended => {
                        let reason = match ended {
                            Some(SessionStatus::Ended(reason)) => reason,
                            _ => EndReason::Deleted,
                        };
                        unpublish(ws, &id, stream).await;
                        // A relay session that ended with its stream is one the control plane
                        // has already stopped: it ignores this report.
                        return RelayEnd::Failed(RelayFailure::Session(reason));
                    }
                },
            }
        },
    };
    // The edge side failed: end our relay session without telling ourselves.
    setup.host.close_relay_session(relay_session);
    ws.close().await;
    RelayEnd::Failed(failure)
}

/// Connects to the edge, publishes the stream there and reads its answer.
async fn publish(job: &Job, setup: &LinkSetup) -> Result<Answered, RelayFailure> {
    let link = |e: crate::wcs_protocol::client::WsClientError| RelayFailure::Link(e.to_string());
    // The edge takes our publish only if we prove the CDN's secret, with a token minted for
    // this connection.
    let custom = setup
        .auth
        .as_ref()
        .map(|auth| json!({ "relayToken": auth.mint("origin") }));
    let mut ws =
        WsClient::connect_with_tls(&job.target.url(), STEP_TIMEOUT, setup.tls.clone(), custom)
            .await
            .map_err(link)?;
    let stream = job.stream.as_str();
    let local_ice = ice::IceCredentials::random(&mut rand::thread_rng());
    let active_tcp = (setup.transport != RelayTransport::Udp)
        .then_some(setup.media_ip)
        .flatten();
    let (offer, mut tracks, offered_layers) = relay_offer(
        stream,
        &job.relayed.tracks,
        &local_ice,
        setup.fingerprint,
        active_tcp,
        || rand::random::<u32>() | 1,
    );
    let id = media_session_id();
    let has = |kind| tracks.iter().any(|t| t.kind == kind);
    let request = json!({
        "mediaSessionId": id,
        "name": stream,
        "published": true,
        "hasVideo": has(MediaKind::Video),
        "hasAudio": has(MediaKind::Audio),
        "status": "PENDING",
        "record": false,
        "mediaProvider": "WebRTC",
        "sdp": offer,
        // The stream's access list (WCS CDN 2.2), which the edge enforces too.
        "rtcdnAcl": job.relayed.acl,
    });
    ws.send("publishStream", request).await.map_err(link)?;
    let answer = loop {
        let (message, data) = ws
            .next_within(STEP_TIMEOUT, "setRemoteSDP")
            .await
            .map_err(link)?;
        if message == "setRemoteSDP" && data.first().and_then(Value::as_str) == Some(&id) {
            match data.get(1).and_then(Value::as_str) {
                Some(sdp) => break sdp.to_owned(),
                None => return Err(RelayFailure::Answer("setRemoteSDP without an SDP".into())),
            }
        }
        if message == "notifyStreamStatusEvent" {
            if let Some(("FAILED", info)) = stream_status(&data, &id) {
                return Err(RelayFailure::Refused(info.to_owned()));
            }
        }
    };
    let answer = sdp::parse(&answer).map_err(|e| RelayFailure::Answer(e.to_string()))?;
    let fingerprint = answer
        .fingerprint
        .ok_or_else(|| RelayFailure::Answer("no fingerprint".into()))?;
    keep_answered_rtx(&mut tracks, &answer);
    let layers = keep_answered_layers(&mut tracks, offered_layers, &answer);
    let choice = TransportChoice::new(
        setup.transport,
        &answer.candidates,
        &answer.tcp_candidates,
        Instant::now(),
    )?;
    // The answerer's setup decides: active means the edge is the DTLS client.
    let dtls_role = if answer.setup == Setup::Passive {
        DtlsRole::Client
    } else {
        DtlsRole::Server
    };
    let session = RelaySession {
        stream: stream.to_owned(),
        stream_id: job.relayed.id,
        tracks,
        layers,
        remote_candidates: choice.candidates(),
        path: choice.path(),
        local_ice,
        remote_ice: ice::IceCredentials {
            ufrag: answer.ice_ufrag.clone(),
            pwd: answer.ice_pwd.clone(),
        },
        remote_fingerprint: fingerprint.0,
        dtls_role,
    };
    Ok(Answered {
        ws,
        media_session_id: id,
        session,
        choice,
    })
}

/// Opens `session` on `choice`'s transport; `None` when its publication is gone.
fn open(
    setup: &LinkSetup,
    session: &mut RelaySession,
    choice: &TransportChoice,
    status: &UnboundedSender<SessionStatus>,
) -> Option<SessionId> {
    session.path = choice.path();
    session.remote_candidates = choice.candidates();
    setup
        .host
        .open_relay_session(session.clone(), status.clone())
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn pass_acl(ws: &mut WsClient, stream: &str, keys: Vec<String>) -> Result<(), RelayFailure> {
    ws.send("rtcdnAcl", json!({ "name": stream, "keys": keys }))
        .await
        .map_err(|e| RelayFailure::Link(format!("passing the access list on: {e}")))
}

/// Unpublishes the stream on the edge and closes the socket.
async fn unpublish(mut ws: WsClient, id: &str, stream: &str) {
    let request = json!({ "mediaSessionId": id, "name": stream, "published": true });
    let _ = ws.send("unPublishStream", request).await;
    ws.close().await;
}
