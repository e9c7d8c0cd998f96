//! The client side of the Flashphoner WebSocket protocol: how an origin publishes to an edge
//! (CDN 1.0 step 2), speaking exactly what the Web SDK speaks.

use std::time::Duration;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::frames::frame;

/// Why a client session failed.
#[derive(Debug, thiserror::Error)]
pub enum WsClientError {
    /// Connecting or talking failed.
    #[error("WebSocket {url}: {reason}")]
    Transport { url: String, reason: String },
    /// The server did not answer in time.
    #[error("WebSocket {url}: no {waiting_for} within {timeout:?}")]
    Timeout {
        url: String,
        waiting_for: &'static str,
        timeout: Duration,
    },
    /// The server closed the session.
    #[error("WebSocket {url}: closed by the server")]
    Closed { url: String },
}

/// A byte stream a WebSocket runs over: plain TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// An established session (`getUserData` received).
pub struct WsClient {
    url: String,
    ws: WebSocketStream<Box<dyn Transport>>,
}

/// Host, port and TLS of a `ws://` or `wss://` URL.
fn split_url(url: &str) -> Option<(bool, String, u16)> {
    let (secure, rest) = match url.split_once("://")? {
        ("ws", rest) => (false, rest),
        ("wss", rest) => (true, rest),
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, if secure { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (secure, host.to_owned(), port))
}

/// A TLS client config on ring trusting the system's CA bundle (Debian's path) and the PEM
/// certificates in `extra_ca`.
pub fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    if let Ok(certs) = CertificateDer::pem_file_iter(system) {
        let certs: Vec<_> = certs.flatten().collect();
        roots.add_parsable_certificates(certs);
    }
    if let Some(path) = extra_ca {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A random RFC 4122-shaped id, as the SDK makes for mediaSessionId.
pub fn media_session_id() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl WsClient {
    /// Connects and establishes the session like the SDK does (`connection` → `getUserData`),
    /// over `ws://`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<WsClient, WsClientError> {
        WsClient::connect_with_tls(url, timeout, None, None).await
    }

    /// [`WsClient::connect`] for `ws://` or `wss://` (which needs `tls`), with `custom` as the
    /// `connection`'s `custom` object (what the SDK's `createSession({custom})` sends).
    pub async fn connect_with_tls(
        url: &str,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
        custom: Option<Value>,
    ) -> Result<WsClient, WsClientError> {
        let transport = |reason: String| WsClientError::Transport {
            url: url.to_owned(),
            reason,
        };
        let (secure, host, port) =
            split_url(url).ok_or_else(|| transport("not a ws:// or wss:// URL".into()))?;
        let connecting = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| transport(e.to_string()))?;
            let stream: Box<dyn Transport> = if secure {
                let tls =
                    tls.ok_or_else(|| transport("wss:// without a TLS configuration".into()))?;
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| transport(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| transport(format!("TLS: {e}")))?;
                Box::new(stream)
            } else {
                Box::new(tcp)
            };
            tokio_tungstenite::client_async(url, stream)
                .await
                .map_err(|e| transport(e.to_string()))
        };
        let (ws, _) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| WsClientError::Timeout {
                url: url.to_owned(),
                waiting_for: "WebSocket upgrade",
                timeout,
            })??;
        let mut client = WsClient {
            url: url.to_owned(),
            ws,
        };
        let mut connection = json!({
            "appKey": "defaultApp",
            "mediaProviders": ["WebRTC"],
            "clientVersion": "2.0",
            "clientOSVersion": "rtcdn",
            "clientBrowserVersion": concat!("rtcdn/", env!("CARGO_PKG_VERSION")),
        });
        if let Some(custom) = custom {
            connection["custom"] = custom;
        }
        client.send("connection", connection).await?;
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
            .map_err(|e| WsClientError::Transport {
                url: self.url.clone(),
                reason: e.to_string(),
            })
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
            let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            let Some(Value::String(message)) = object.remove("message") else {
                continue;
            };
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
    pub async fn next_within(
        &mut self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<(String, Vec<Value>), WsClientError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(WsClientError::Closed {
                url: self.url.clone(),
            }),
            Err(_) => Err(WsClientError::Timeout {
                url: self.url.clone(),
                waiting_for,
                timeout,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("ws://127.0.0.1:8180/"),
            Some((false, "127.0.0.1".into(), 8180))
        );
        assert_eq!(
            split_url("wss://edge.example.com/websocket"),
            Some((true, "edge.example.com".into(), 443))
        );
        assert_eq!(
            split_url("wss://[::1]:8443/"),
            Some((true, "::1".into(), 8443))
        );
        assert_eq!(split_url("http://x/"), None);
        assert_eq!(split_url("ws://:80/"), None);
    }
}
