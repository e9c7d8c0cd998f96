//! A minimal HTTP/1.1 client for WHIP/WHEP: one connection per request, as a load generator
//! opening thousands of sessions wants no pooling surprises.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What the bench's requests call themselves (the node lists it with their sessions).
pub const USER_AGENT: &str = concat!("rtcdn-bench/", env!("CARGO_PKG_VERSION"));

/// A failed HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host:port/path`.
    #[error("unsupported URL {0:?} (want http://host:port/path)")]
    Url(String),
    /// Connecting or talking failed.
    #[error("HTTP transport: {0}")]
    Transport(String),
    /// The server refused the request.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
}

/// An HTTP response.
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// `Location` header, if any.
    pub location: Option<String>,
    /// Body as text.
    pub body: String,
    /// The URL that answered (after redirects, for [`post_offer`]).
    pub url: String,
}

fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.to_owned()));
    }
    Ok((authority.to_owned(), path.to_owned()))
}

/// Sends one request and reads the whole response.
pub async fn request(
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: String,
) -> Result<HttpResponse, HttpError> {
    let (authority, path) = split_url(url)?;
    let stream = TcpStream::connect(&authority)
        .await
        .map_err(|e| HttpError::Transport(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Transport(e.to_string()))?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("user-agent", USER_AGENT);
    if let Some(content_type) = content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HttpError::Transport(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpError::Transport(e.to_string()))?;
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| HttpError::Transport(e.to_string()))?
        .to_bytes();
    Ok(HttpResponse {
        status,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
        url: url.to_owned(),
    })
}

/// POSTs an SDP offer, following up to three `307`/`308` redirects (an origin sends WHEP
/// players to an edge); a non-201 answer is an error carrying the server's reason.
pub async fn post_offer(url: &str, offer: String) -> Result<HttpResponse, HttpError> {
    let mut url = url.to_owned();
    let mut response = request(Method::POST, &url, Some("application/sdp"), offer.clone()).await?;
    for _ in 0..3 {
        let redirect = matches!(
            response.status,
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
        );
        let Some(location) = response.location.as_deref().filter(|_| redirect) else {
            break;
        };
        url = resolve(&url, location);
        response = request(Method::POST, &url, Some("application/sdp"), offer.clone()).await?;
    }
    if response.status != StatusCode::CREATED {
        return Err(HttpError::Status {
            status: response.status.as_u16(),
            body: response.body,
        });
    }
    Ok(response)
}

/// Resolves a `Location` (absolute path or URL) against the URL it came from.
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") {
        return location.to_owned();
    }
    match split_url(base) {
        Ok((authority, _)) => format!("http://{authority}{location}"),
        Err(_) => location.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_resolve() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/whip/a").unwrap(),
            ("127.0.0.1:8080".into(), "/whip/a".into())
        );
        assert_eq!(split_url("http://h:1").unwrap().1, "/");
        assert!(split_url("https://h/").is_err());
        assert!(split_url("http:///x").is_err());
        assert_eq!(
            resolve("http://h:1/whip/a", "/whip/a/42"),
            "http://h:1/whip/a/42"
        );
    }
}
