//! The `webrtc_util::conn::Conn` the dtls crate reads from and writes to: incoming records come
//! from the reactor through a bounded channel, outgoing ones leave through `on_event`.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use webrtc_util::conn::Conn;

use super::DtlsEvent;

/// Incoming records queued per transport before `handle_record` drops (UDP semantics). A
/// handshake flight is a handful of datagrams; this only bounds a flooding peer.
pub(crate) const INBOUND_QUEUE: usize = 64;

/// Where events go, with the rules about when they may still be delivered.
pub(crate) struct Sink {
    on_event: Arc<dyn Fn(DtlsEvent) + Send + Sync>,
    /// `Drop` ran without `close()`: nothing is delivered any more.
    stopped: AtomicBool,
    /// A terminal event was delivered or `close()` was called: only `Transmit` is delivered.
    finished: AtomicBool,
    /// The handshake completed (`Connected` was produced).
    connected: AtomicBool,
}

impl Sink {
    pub(crate) fn new(on_event: Arc<dyn Fn(DtlsEvent) + Send + Sync>) -> Self {
        Sink {
            on_event,
            stopped: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            connected: AtomicBool::new(false),
        }
    }

    pub(crate) fn transmit(&self, datagram: Vec<u8>) {
        if !self.stopped.load(Ordering::Acquire) {
            (self.on_event)(DtlsEvent::Transmit(datagram));
        }
    }

    /// `Connected`: delivered unless finished/stopped.
    pub(crate) fn connected(&self, event: DtlsEvent) {
        self.connected.store(true, Ordering::Release);
        if !self.stopped.load(Ordering::Acquire) && !self.finished.load(Ordering::Acquire) {
            (self.on_event)(event);
        }
    }

    /// `Failed`/`Closed`: delivered at most once, and not after `close()`/`Drop`.
    pub(crate) fn terminal(&self, event: DtlsEvent) {
        if !self.stopped.load(Ordering::Acquire) && !self.finished.swap(true, Ordering::AcqRel) {
            (self.on_event)(event);
        }
    }

    /// The handshake completed.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// `close()` was called: no `Connected`/`Failed`/`Closed` from now on.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// `Drop`: nothing from now on (best effort: a call already running completes).
    pub(crate) fn stop(&self) {
        self.finished.store(true, Ordering::Release);
        self.stopped.store(true, Ordering::Release);
    }
}

pub(crate) struct ChanConn {
    rx: Mutex<mpsc::Receiver<Vec<u8>>>,
    sink: Arc<Sink>,
}

impl ChanConn {
    pub(crate) fn new(rx: mpsc::Receiver<Vec<u8>>, sink: Arc<Sink>) -> Self {
        ChanConn {
            rx: Mutex::new(rx),
            sink,
        }
    }

    async fn recv_impl(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        // Only the dtls crate's reader task calls this, so the lock is uncontended.
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(record) => {
                let n = record.len().min(buf.len());
                buf[..n].copy_from_slice(&record[..n]);
                Ok(n)
            }
            // The DtlsTransport is gone. Never return an error here: the dtls reader task loops
            // on any error other than a fatal alert, so an error would make it spin. It exits
            // when its DTLSConn is dropped, which follows the transport's drop.
            None => std::future::pending().await,
        }
    }
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `Conn` is an `#[async_trait]` trait; the methods are written out in the form the macro
/// expands to so no `async-trait` dependency is needed.
impl Conn for ChanConn {
    fn connect<'life0, 'async_trait>(
        &'life0 self,
        _addr: SocketAddr,
    ) -> BoxFut<'async_trait, webrtc_util::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Err(webrtc_util::Error::Other("not applicable".into())) })
    }

    fn recv<'life0, 'life1, 'async_trait>(
        &'life0 self,
        buf: &'life1 mut [u8],
    ) -> BoxFut<'async_trait, webrtc_util::Result<usize>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.recv_impl(buf))
    }

    fn recv_from<'life0, 'life1, 'async_trait>(
        &'life0 self,
        buf: &'life1 mut [u8],
    ) -> BoxFut<'async_trait, webrtc_util::Result<(usize, SocketAddr)>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { Ok((self.recv_impl(buf).await?, unspecified())) })
    }

    fn send<'life0, 'life1, 'async_trait>(
        &'life0 self,
        buf: &'life1 [u8],
    ) -> BoxFut<'async_trait, webrtc_util::Result<usize>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.sink.transmit(buf.to_vec());
            Ok(buf.len())
        })
    }

    fn send_to<'life0, 'life1, 'async_trait>(
        &'life0 self,
        buf: &'life1 [u8],
        _target: SocketAddr,
    ) -> BoxFut<'async_trait, webrtc_util::Result<usize>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.send(buf)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(unspecified())
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    fn close<'life0, 'async_trait>(&'life0 self) -> BoxFut<'async_trait, webrtc_util::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Ok(()) })
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}
