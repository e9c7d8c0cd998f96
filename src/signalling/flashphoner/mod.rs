//! The Flashphoner WCS WebSocket protocol on the HTTP listener, so pages written for WCS with the
//! official Web SDK work unchanged. The upgrade is accepted on any path (`/`, `/websocket`, ...).
//!
//! The server side of `crate::wcs_protocol` (whose frames it speaks): the connection task (IO)
//! and what each client message does, through the same session paths as WHIP/WHEP.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info};

pub(crate) use connection::relayed_keys;
pub use connection::Connection;

use super::limits::ConnectionSlot;
use super::{text, Signalling};
use crate::control::registry::ClientInfo;
use crate::wcs_protocol::frames;

/// WCS pings every 5 s (`keep_alive.server_interval`).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A client silent for this long (several missed pongs) is gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// The largest frame accepted: an SDP offer with every codec is a few KiB.
const MAX_FRAME: usize = 256 * 1024;

/// Whether a request asks for a WebSocket.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has_token = |name, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has_token(UPGRADE, "websocket") && has_token(CONNECTION, "upgrade")
}

/// Answers the upgrade and runs the session on the upgraded connection.
pub fn upgrade(
    mut req: Request<Incoming>,
    state: Arc<Signalling>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let Some(key) = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade without Sec-WebSocket-Key",
        );
    };
    let user_agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let client = ClientInfo::new(peer, user_agent);
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The connection's place in the listener's caps, held until the WebSocket closes.
    let slot = req.extensions_mut().remove::<ConnectionSlot>();
    tokio::spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_FRAME))
                    .max_frame_size(Some(MAX_FRAME));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                run(ws, state, client).await;
            }
            Err(e) => debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&key) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

async fn run<S>(ws: WebSocketStream<S>, state: Arc<Signalling>, client: ClientInfo)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let peer = client.peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    info!(%peer, "WebSocket connected");
    let (mut sink, mut frames) = ws.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut connection = Connection::new(client, out_tx);
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut last_heard = Instant::now();
    let ping_frame = frames::frame("ping", Vec::new());
    // Flashphoner clients send `connection` at once: a socket that does not is closed.
    let connect_timeout = state.limits.websocket_connect_timeout;
    let connect_deadline = tokio::time::sleep(connect_timeout);
    tokio::pin!(connect_deadline);
    loop {
        tokio::select! {
            _ = &mut connect_deadline, if !connection.is_established() => {
                if state.limits.may_log() {
                    info!(%peer, reason = "no connection message", "WebSocket closed");
                }
                let reason = format!("no connection message within {} s", connect_timeout.as_secs());
                let _ = sink.send(Message::text(frames::fail_frame("connection", &reason))).await;
                let _ = sink.close().await;
                break;
            }
            incoming = frames.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    last_heard = Instant::now();
                    if connection.handle_text(&state, text.as_str()).await.is_err() {
                        let _ = sink.close().await;
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    last_heard = Instant::now();
                    let _ = sink.send(Message::text(frames::fail_frame("unknown", "binary frames are not part of the protocol"))).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => last_heard = Instant::now(),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    debug!(%peer, error = %e, "WebSocket error");
                    break;
                }
            },
            Some(out) = out_rx.recv() => {
                if sink.send(Message::text(out)).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    info!(%peer, "WebSocket client stopped answering pings: closing");
                    let _ = sink.close().await;
                    break;
                }
                if sink.send(Message::text(ping_frame.clone())).await.is_err() {
                    break;
                }
            }
        }
    }
    connection.close(&state);
}
