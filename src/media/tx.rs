//! Where a media core's datagrams go: the [`TxSink`] it writes them into (the reactor's pooled
//! send queue on a real node), and [`MemorySink`], which keeps them in memory for tests and
//! simulations.

use std::fmt;
use std::net::SocketAddr;

/// The largest datagram a core sends or receives; a [`TxSink`] gives its writers this much room.
pub const MAX_DATAGRAM: usize = 2048;

/// One of a core's sockets: [`SocketId::MAIN`] is the core's own UDP socket, others are opened
/// for relay sessions (two relays to the same edge must not share a 5-tuple), and ids from
/// [`SocketId::tcp`] on are ICE-TCP connections (one peer each): accepted by the core, or opened
/// by it for a relay over TCP. On a real node they are the sockets of the core's
/// [`UdpIo`](crate::reactor::io::UdpIo); an id is reused once its socket is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub u16);

impl SocketId {
    /// The core's own socket.
    pub const MAIN: SocketId = SocketId(0);

    /// The first ICE-TCP connection's id; the ids below are UDP sockets.
    const FIRST_TCP: u16 = 0x8000;

    /// How many ICE-TCP connection ids there are.
    pub const TCP_SLOTS: u16 = u16::MAX - Self::FIRST_TCP + 1;

    /// ICE-TCP connection `index` (below [`TCP_SLOTS`](Self::TCP_SLOTS)).
    pub const fn tcp(index: u16) -> SocketId {
        SocketId(Self::FIRST_TCP | index)
    }

    /// The connection index of an ICE-TCP id; `None` for a UDP socket.
    pub const fn tcp_index(self) -> Option<u16> {
        if self.0 >= Self::FIRST_TCP {
            Some(self.0 - Self::FIRST_TCP)
        } else {
            None
        }
    }

    /// Whether this is an ICE-TCP connection.
    pub const fn is_tcp(self) -> bool {
        self.0 >= Self::FIRST_TCP
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tcp_index() {
            Some(i) => write!(f, "tcp#{i}"),
            None => write!(f, "socket#{}", self.0),
        }
    }
}

/// Takes the datagrams a core sends. Media is written straight into the sink's buffer (rewritten
/// and encrypted in place), so a forwarded packet is copied once, into the datagram that leaves.
pub trait TxSink {
    /// Queues one datagram from `socket` to `dst`, written by `fill` into a buffer of at least
    /// [`MAX_DATAGRAM`] bytes; `fill` returns its length (0: nothing is sent).
    fn push_with_on(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> usize,
    );

    /// Hands what was queued so far to the kernel now, where the sink holds datagrams to send
    /// them together (a send queue, which groups each destination's datagrams for UDP GSO); a
    /// no-op otherwise. A burst's fan-out calls it every few players, each of whose datagrams
    /// were pushed back to back, so that the kernel copies them while they are in the cache.
    fn submit(&mut self) {}

    /// The writer holds received packets whose sends are not queued yet (`true`: an unfinished
    /// frame kept across the end of a batch, see `MediaCore::end_batch`), or no longer
    /// (`false`). A sink that measures how long datagrams stay in the node keeps the residence
    /// of what it was handed running meanwhile; a no-op otherwise.
    fn hold_residence(&mut self, _held: bool) {}

    /// Queues a copy of `data` (cut to [`MAX_DATAGRAM`]).
    fn push_on(&mut self, socket: SocketId, dst: SocketAddr, data: &[u8]) {
        self.push_with_on(socket, dst, |buf| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            n
        });
    }
}

/// One datagram a [`MemorySink`] took.
#[derive(Clone, PartialEq, Eq)]
pub struct SentDatagram {
    /// The socket it leaves from.
    pub socket: SocketId,
    /// Where it goes.
    pub destination: SocketAddr,
    /// Its bytes.
    pub contents: Vec<u8>,
}

impl fmt::Debug for SentDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}: {} bytes",
            self.socket,
            self.destination,
            self.contents.len()
        )
    }
}

/// A [`TxSink`] that keeps every datagram, in order, until it is drained: for driving a core
/// without sockets (integration tests, a simulator). Allocates per datagram.
#[derive(Debug, Default)]
pub struct MemorySink {
    sent: Vec<SentDatagram>,
    /// How many datagrams had been queued at each [`TxSink::submit`] since the last drain.
    submits: Vec<usize>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// Takes the datagrams queued so far, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, SentDatagram> {
        self.submits.clear();
        self.sent.drain(..)
    }

    /// Where the writer asked for a submit ([`TxSink::submit`]) since the last drain: how many
    /// datagrams were queued at each.
    pub fn submits(&self) -> &[usize] {
        &self.submits
    }

    /// The datagrams queued so far, oldest first.
    pub fn sent(&self) -> &[SentDatagram] {
        &self.sent
    }

    /// How many are queued.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

impl TxSink for MemorySink {
    fn push_with_on(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) {
        let mut contents = vec![0; MAX_DATAGRAM];
        let len = fill(&mut contents).min(MAX_DATAGRAM);
        if len > 0 {
            contents.truncate(len);
            self.sent.push(SentDatagram {
                socket,
                destination: dst,
                contents,
            });
        }
    }

    fn submit(&mut self) {
        self.submits.push(self.sent.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_sink_keeps_what_was_written_and_skips_empty_writes() {
        let mut sink = MemorySink::new();
        let dst: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        sink.push_on(SocketId::MAIN, dst, b"hello");
        sink.push_with_on(SocketId(3), dst, |_| 0);
        sink.push_with_on(SocketId(3), dst, |buf| {
            assert_eq!(buf.len(), MAX_DATAGRAM);
            buf[..2].copy_from_slice(b"hi");
            2
        });
        let sent: Vec<SentDatagram> = sink.drain().collect();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].contents, b"hello");
        assert_eq!(sent[1].socket, SocketId(3));
        assert_eq!(sent[1].contents, b"hi");
        assert!(sink.is_empty());
    }
}
