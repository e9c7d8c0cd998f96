//! The accept loop of the HTTP and HTTPS listeners: admission against the connection caps,
//! the timeouts that end idle and slow connections, and the refusal log's periodic summary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::limits::{BodyDeadline, ConnectionSlot, Refused};
use super::send_timeout::SendTimeout;
use super::{handle, Signalling};

/// A TLS handshake that stalls must not hold a connection for long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections being answered at once; past this a refused connection is just closed,
/// so that answering a flood costs at most this many sockets and tasks.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused client has to read its answer before the socket is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// How often the number of refusals left out of the log is reported.
const SUPPRESSED_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// File descriptors the node needs besides its HTTP connections (sockets, the log, relays).
const RESERVED_FDS: u64 = 256;

/// Accepts connections on `listener` (TLS when `tls` is set) until the task is dropped.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<Signalling>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    warn_if_fd_limit_is_below_the_cap(state.limits.connections.max_total());
    let report = tokio::spawn(report_suppressed(state.clone()));
    let _report = AbortOnDrop(report);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match state.limits.admit_connection(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                if state.limits.may_log() {
                    match refused {
                        Refused::NodeFull { .. } => {
                            warn!(%peer, reason = %refused, "connection refused")
                        }
                        _ => info!(%peer, reason = %refused, "connection refused"),
                    }
                }
                // A TLS client could not read a plain answer: it is just closed.
                if tls.is_none() {
                    answer_refusal(&state, stream, &refused);
                }
                continue;
            }
        };
        let stream = SendTimeout::new(stream, state.limits.send_timeout);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, state, peer, slot).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, state, peer, slot).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            if state.limits.may_log() {
                                info!(%peer, reason = "TLS handshake timeout", "connection closed");
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Writes the refusal's answer and closes, in a small task of its own (not hyper's): the
/// client's request may still be arriving, and closing a socket with unread bytes resets it,
/// which could destroy the answer before the client reads it.
fn answer_refusal(state: &Arc<Signalling>, mut stream: TcpStream, refused: &Refused) {
    let in_flight = &state.limits.refusals_in_flight;
    if in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSALS_IN_FLIGHT {
        in_flight.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let answer = refused.raw_response();
    let state = state.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            // Reads what the client sends until it closes too.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        state
            .limits
            .refusals_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    });
}

async fn serve_connection<S>(
    stream: S,
    state: Arc<Signalling>,
    peer: SocketAddr,
    slot: ConnectionSlot,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits_state = state.clone();
    let service = service_fn(move |mut req| {
        // A WebSocket takes the connection over from hyper: it keeps the slot.
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut()
            .insert(BodyDeadline::after(state.limits.body_read_timeout));
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, state, peer).await) }
    });
    // hyper 1 arms the header-read timer when it starts reading a request head: at the start of
    // the connection and again whenever a keep-alive connection goes idle after a response. So
    // it ends silent connections, slowloris heads and idle keep-alive connections alike.
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits_state.limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    match served {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            if limits_state.limits.may_log() {
                info!(%peer, reason = "header read timeout", "connection closed");
            }
        }
        Err(e) => debug!(%peer, error = %e, "HTTP connection ended with an error"),
    }
}

/// Logs, every [`SUPPRESSED_REPORT_INTERVAL`], how many refusals the log budget left out.
async fn report_suppressed(state: Arc<Signalling>) {
    let mut tick = tokio::time::interval(SUPPRESSED_REPORT_INTERVAL);
    loop {
        tick.tick().await;
        let suppressed = state.limits.log.take_suppressed();
        if suppressed > 0 {
            warn!(
                suppressed,
                "{suppressed} more refusals (connections, sessions, timeouts) were not logged"
            );
        }
    }
}

/// With a file-descriptor limit below the cap, `accept` fails (for every client) before the cap
/// answers 503.
fn warn_if_fd_limit_is_below_the_cap(cap: usize) {
    let Some(open_files) = crate::reactor::io::open_file_limit() else {
        return;
    };
    let needed = cap as u64 + RESERVED_FDS;
    if open_files < needed {
        warn!(
            open_files,
            max_connections = cap,
            "the open-file limit (ulimit -n) is below http.max_connections + {RESERVED_FDS}: accept will fail before the cap answers 503; raise the limit or lower http.max_connections"
        );
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
