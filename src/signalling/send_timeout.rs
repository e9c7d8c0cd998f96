//! A send timeout for a connection: a client that stops reading (a "slow read", or pipelined
//! requests whose answers it never takes) blocks the node's writes once the socket buffers are
//! full, and neither the header-read timeout (nothing is being read) nor the WebSocket's pings
//! (the ping itself cannot be sent) would ever end it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `io` whose writes fail with `TimedOut` once they have been blocked for `limit` in a row.
pub struct SendTimeout<S> {
    io: S,
    limit: Duration,
    /// Armed when a write or flush is first refused; dropped as soon as one goes through. Boxed
    /// only while a write is blocked: a client that reads costs no allocation.
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<S> SendTimeout<S> {
    /// Wraps `io`.
    pub fn new(io: S, limit: Duration) -> SendTimeout<S> {
        SendTimeout {
            io,
            limit,
            blocked: None,
        }
    }

    /// What a write that `io` answered with `poll` becomes.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.blocked = None;
            return poll;
        }
        let limit = self.limit;
        let deadline = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing of what was sent for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_out_one_that_reads_does_not() {
        let limit = Duration::from_millis(300);
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = SendTimeout::new(ours, limit);
        // The peer reads slowly but steadily, slower in all than the limit: every write still
        // goes through, as the limit counts from the last one that did.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += theirs.read(&mut buf).await.unwrap();
            }
            theirs
        });
        ours.write_all(&[7u8; 8192]).await.unwrap();
        let _theirs = reader.await.unwrap();
        // Now it stops reading: the buffer fills, and the write fails after the limit.
        let start = std::time::Instant::now();
        let err = ours.write_all(&[7u8; 8192]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= limit, "{:?}", start.elapsed());
    }
}
