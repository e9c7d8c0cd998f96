//! The client side of the Flashphoner WebSocket protocol: how an origin publishes to an edge
//! (CDN 1.0 step 2), speaking exactly what the Web SDK speaks.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::protocol::frame;

/// Why a client session failed.
#[derive(Debug, thiserror::Error)]
pub enum WsClientError {
    /// Connecting or talking failed.
    #[error("WebSocket {url}: {reason}")]
    Transport { url: String, reason: String },
    /// The server did not answer in time.
    #[error("WebSocket {url}: no {waiting_for} within {timeout:?}")]
    Timeout { url: String, waiting_for: &'static str, timeout: Duration },
    /// The server closed the session.
    #[error("WebSocket {url}: closed by the server")]
    Closed { url: String },
}

/// An established session (`getUserData` received).
pub struct WsClient {
    url: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A random RFC 4122-shaped id, as the SDK makes for mediaSessionId.
pub fn media_session_id() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl WsClient {
    /// Connects and establishes the session like the SDK does (`connection` → `getUserData`).
    pub async fn connect(url: &str, timeout: Duration) -> Result<WsClient, WsClientError> {
        let transport = |reason: String| WsClientError::Transport { url: url.to_owned(), reason };
        let connecting = tokio_tungstenite::connect_async(url);
        let (ws, _) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| WsClientError::Timeout { url: url.to_owned(), waiting_for: "WebSocket upgrade", timeout })?
            .map_err(|e| transport(e.to_string()))?;
        let mut client = WsClient { url: url.to_owned(), ws };
        client
            .send(
                "connection",
                json!({
                    "appKey": "defaultApp",
                    "mediaProviders": ["WebRTC"],
                    "clientVersion": "2.0",
                    "clientOSVersion": "rtcdn",
                    "clientBrowserVersion": concat!("rtcdn/", env!("CARGO_PKG_VERSION")),
                }),
            )
            .await?;
        loop {
            match client.next_within(timeout, "getUserData").await? {
                (message, _) if message == "getUserData" => return Ok(client),
                _ => continue,
            }
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &str, data: Value) -> Result<(), WsClientError> {
        let text = frame(message, vec![data]);
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| WsClientError::Transport { url: self.url.clone(), reason: e.to_string() })
    }

    /// The next message other than `ping` (which is answered), as (name, `data` array). `None`
    /// when the server closed the socket.
    pub async fn next(&mut self) -> Option<(String, Vec<Value>)> {
        while let Some(frame) = self.ws.next().await {
            let Ok(Message::Text(text)) = frame else {
                if frame.is_err() {
                    return None;
                }
                continue;
            };
            let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text.as_str()) else { continue };
            let Some(Value::String(message)) = object.remove("message") else { continue };
            let data = match object.remove("data") {
                Some(Value::Array(data)) => data,
                _ => Vec::new(),
            };
            if message == "ping" {
                let _ = self.send("pong", Value::Null).await;
                continue;
            }
            return Some((message, data));
        }
        None
    }

    /// [`WsClient::next`] with a deadline.
    pub async fn next_within(&mut self, timeout: Duration, waiting_for: &'static str) -> Result<(String, Vec<Value>), WsClientError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(WsClientError::Closed { url: self.url.clone() }),
            Err(_) => Err(WsClientError::Timeout { url: self.url.clone(), waiting_for, timeout }),
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The URL this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }
}
