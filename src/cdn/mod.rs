//! The static CDN (Flashphoner "CDN 1.0"): an origin relays every published stream to its
//! configured edges over WebRTC, and players are sent to an edge. Mostly an IO edge: when to
//! relay, retry and stop is decided by the node's sans-IO control plane
//! (`crate::control::plane`), and [`relay`] carries its orders out and reports back to it; this
//! room never imports `crate::signalling`.
//!
//! Its settings are the `[cdn]` section, [`crate::config::cdn`] (read from WCS files by
//! [`crate::config::wcs`]); [`balancer`] picks a player's edge (sans-IO) and parses and
//! renders the nodes' `/?action=stat`, [`cpu`] samples the CPU figures a node reports.

pub mod balancer;
pub mod cpu;

pub mod relay;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// How long an edge may take to answer `/?action=stat`.
const STAT_TIMEOUT: Duration = Duration::from_secs(1);

/// Polls every edge's `/?action=stat` and feeds `balancer`; an edge that does not answer is
/// skipped by the balancer until it answers again. Runs for the node's lifetime.
pub async fn poll_edge_stats(
    balancer: Arc<Mutex<balancer::Balancer>>,
    nodes: Vec<crate::config::cdn::CdnNode>,
    every_secs: u64,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(every_secs.max(1)));
    loop {
        tick.tick().await;
        for node in &nodes {
            // Only plain-HTTP nodes can be polled; a wss-only node stays "answering".
            let Some(port) = node.ws else { continue };
            let stat = fetch_stat(&node.host, port)
                .await
                .and_then(|body| balancer::parse_stat(&body).ok());
            balancer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .set_stat(node.id, stat);
        }
    }
}

async fn fetch_stat(host: &str, port: u16) -> Option<String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/?action=stat")
            .header("host", format!("{host}:{port}"))
            .body(Empty::<bytes::Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(STAT_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
