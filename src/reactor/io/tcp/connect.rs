//! Active ICE-TCP (RFC 6544): the connections a core opens itself, for relay sessions that
//! reach their edge over TCP (`cdn.relay_transport`).
//!
//! An outgoing connection joins the same table as accepted ones (`TcpSide::conns`, one
//! [`SocketId::tcp`] id each), so it is read, deframed (RFC 4571), demultiplexed, queued and
//! counted by the same code; only its start differs. The connect is non-blocking: on io_uring
//! a CONNECT SQE whose completion says how it went (`uring.rs`); on epoll the socket sits in
//! the TCP epoll with `EPOLLOUT` interest, and the first `EPOLLOUT` or `EPOLLERR` tells
//! [`TcpSide::finish_connect`]. Frames the relay's ICE agent sends meanwhile wait in its
//! bounded write queue. A
//! failed one is closed and logged with the kernel's reason, and so is one its peer closes
//! later; either is handed to the core ([`TcpSide::take_lost`]), which ends the relay session at
//! once (its link reports the attempt as failed, and the relay planner retries) rather than at
//! its connect or consent timeout. A connect that never completes (a black hole) ends at the
//! session's connect timeout: the ended session closes its connection
//! ([`TcpSide::close_outgoing`]).
//!
//! An outgoing connection's index stays reserved until its relay session ends, even when the
//! connection closed long before: every relay to one edge has the same peer address, so a
//! reused index would carry one relay's packets into another's connection.
//!
//! The socket is bound to the media address (port chosen by the kernel) when that address is
//! a specific one, so a relay leaves from the address the operator configured for media.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::super::sendq::SendQueue;
use super::super::sockaddr;
use super::{canonical, epoll_ctl, Close, TcpSide};

/// How an outgoing connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outgoing {
    /// The handshake is under way.
    Connecting,
    /// Connected.
    Established,
}

impl TcpSide {
    /// Starts a non-blocking connect from `bind_ip` (unless unspecified) to `remote`; the
    /// connection is index `idx` of the table from now on, whether or not it ends up
    /// connecting. Fails when the table is full or the socket cannot be made.
    pub(in crate::reactor::io) fn connect(
        &mut self,
        bind_ip: IpAddr,
        remote: SocketAddr,
        sendq: &mut SendQueue,
    ) -> io::Result<u16> {
        let idx = self.free_index().ok_or_else(|| {
            io::Error::other(format!(
                "all {} ICE-TCP connections of this core are in use",
                self.conns.len()
            ))
        })?;
        let uring = self.uring.is_some();
        let stream = start_connect(bind_ip, remote, !uring)?;
        let fd = stream.as_raw_fd();
        if !uring {
            epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                (libc::EPOLLIN | libc::EPOLLOUT) as u32,
                idx as u64,
            )?;
        }
        let peer = canonical(remote);
        self.insert(idx, stream, peer, Some(Outgoing::Connecting), sendq);
        if let Some(tx) = sendq.tcp_mut().and_then(|tx| tx.conns[idx].as_mut()) {
            // epoll: registered with EPOLLOUT, the first write that empties the queue drops
            // it. io_uring: nothing is sent before the CONNECT completes.
            tx.waiting_out = !uring;
            tx.hold = uring;
        }
        if uring {
            if let Err(e) = self.connect_uring(idx as u16, remote, sendq) {
                self.conns[idx] = None;
                if let Some(tx) = sendq.tcp_mut() {
                    tx.conns[idx] = None;
                }
                return Err(e);
            }
        }
        self.reserved[idx] = true;
        self.stats.connects += 1;
        tracing::debug!(%peer, id = %super::SocketId::tcp(idx as u16), "relay ICE-TCP connect started");
        Ok(idx as u16)
    }

    /// Whether connection `idx` may be read and written after the event `flags`: an outgoing
    /// connection still connecting learns how its connect went (and is closed when it failed).
    /// (`flags` are the epoll event's.)
    pub(super) fn finish_connect(&mut self, idx: u16, flags: u32, sendq: &mut SendQueue) -> bool {
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
        else {
            return false;
        };
        if conn.outgoing != Some(Outgoing::Connecting) {
            return true;
        }
        // Any event ends the wait: writable, failed, or already readable (a flush may have
        // written the queue as the handshake completed, dropping the EPOLLOUT interest).
        if flags == 0 {
            return false;
        }
        // A send before the handshake ended may have taken the error already: a connection
        // without a peer address failed all the same.
        let outcome = match conn.stream.take_error() {
            Ok(None) => conn.stream.peer_addr().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                conn.outgoing = Some(Outgoing::Established);
                tracing::info!(peer = %conn.peer, id = %super::SocketId::tcp(idx), "relay ICE-TCP connection established");
                true
            }
            Err(error) => {
                tracing::warn!(peer = %conn.peer, %error, "relay ICE-TCP connect failed");
                let _ = self.close(idx, Close::ConnectFailed, sendq);
                false
            }
        }
    }

    /// Closes outgoing connection `idx`: the relay session that opened it ended. Accepted
    /// connections are not the core's to close this way.
    pub(in crate::reactor::io) fn close_outgoing(&mut self, idx: u16, sendq: &mut SendQueue) {
        let Some(reserved) = self.reserved.get_mut(usize::from(idx)) else {
            return;
        };
        if !std::mem::take(reserved) {
            return;
        }
        let Some(conn) = self.conns.get(usize::from(idx)).and_then(Option::as_ref) else {
            return; // it closed already (failed, or its peer closed it)
        };
        match conn.outgoing {
            None => return,
            Some(Outgoing::Connecting) => {
                tracing::warn!(peer = %conn.peer, "relay ICE-TCP connect given up: its relay session ended before it connected");
            }
            Some(Outgoing::Established) => {}
        }
        let _ = self.close(idx, Close::Ended, sendq);
    }
}

impl TcpSide {
    /// An outgoing connection that failed or was closed by its peer since the last call: its
    /// relay session has lost its edge.
    pub(in crate::reactor::io) fn take_lost(&mut self) -> Option<u16> {
        self.lost.pop()
    }

    /// An index neither open nor reserved, nor closing with io_uring operations in flight.
    pub(super) fn free_index(&self) -> Option<usize> {
        (0..self.conns.len()).find(|&i| {
            self.conns[i].is_none()
                && !self.reserved[i]
                && self.uring.as_ref().is_none_or(|u| u.slot_free(i))
        })
    }
}

/// A TCP socket for `remote`, bound to `bind_ip` unless unspecified; `connect_now`: non-blocking,
/// with its connect under way (epoll), otherwise blocking and not connected yet (io_uring's
/// CONNECT does it without blocking).
fn start_connect(bind_ip: IpAddr, remote: SocketAddr, connect_now: bool) -> io::Result<TcpStream> {
    let v6 = remote.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let nonblock = if connect_now { libc::SOCK_NONBLOCK } else { 0 };
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | nonblock | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let bind_ip = match (bind_ip, v6) {
        (IpAddr::V4(ip), true) => IpAddr::V6(ip.to_ipv6_mapped()),
        (ip, _) => ip,
    };
    if !bind_ip.is_unspecified() && bind_ip.is_ipv6() == v6 {
        call_with_addr(fd.as_raw_fd(), SocketAddr::new(bind_ip, 0), v6, libc::bind)?;
    }
    if connect_now {
        match call_with_addr(fd.as_raw_fd(), remote, v6, libc::connect) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
    }
    let stream = TcpStream::from(fd);
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `bind` or `connect` with `addr`.
fn call_with_addr(
    fd: libc::c_int,
    addr: SocketAddr,
    v6: bool,
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = sockaddr::encode(addr, v6, &mut storage)
        .ok_or_else(|| io::Error::other(format!("{addr} is not reachable from this socket")))?;
    // SAFETY: `fd` is an open socket; `storage` holds a sockaddr of `len` bytes, alive for the
    // call.
    let rc = unsafe { call(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::super::super::{BackendChoice, DatagramHandler, SocketId, UdpIo};
    use super::*;

    /// Keeps what arrives.
    #[derive(Default)]
    struct Recorder {
        got: Vec<(SocketId, SocketAddr, Vec<u8>)>,
    }

    impl DatagramHandler for Recorder {
        fn on_datagram(
            &mut self,
            socket: SocketId,
            src: SocketAddr,
            data: &mut [u8],
            _received_ns: Option<u64>,
            _tx: &mut SendQueue,
        ) {
            self.got.push((socket, src, data.to_vec()));
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {}
    }

    /// A STUN binding request header, tagged.
    fn stun(tag: u8) -> Vec<u8> {
        let mut m = vec![0u8; 20];
        m[1] = 1;
        m[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m[8] = tag;
        m
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn poll_until(
        io: &mut UdpIo,
        h: &mut Recorder,
        mut done: impl FnMut(&UdpIo, &Recorder) -> bool,
    ) {
        let start = Instant::now();
        while !done(io, h) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {:?}",
                io.tcp_stats()
            );
            io.poll(Some(Duration::from_millis(20)), h).unwrap();
        }
    }

    /// A relay's connection carries frames both ways, framed, on its own id; removing the
    /// socket closes it. Works on a core that does not listen.
    fn a_relay_connection_frames_both_ways(choice: BackendChoice) {
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), choice).unwrap();
        let edge = TcpListener::bind("127.0.0.1:0").unwrap();
        let edge_addr = edge.local_addr().unwrap();
        let socket = io.connect_tcp(edge_addr).unwrap();
        assert!(socket.is_tcp());
        assert_eq!(io.tcp_addr(), None, "it opens, it does not listen");
        // Sent at once, before the handshake completes: it waits in the queue.
        io.send_queue().push_on(socket, edge_addr, &stun(1));
        let mut h = Recorder::default();
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        let (mut conn, from) = edge.accept().unwrap();
        assert_eq!(
            from.ip(),
            io.local_addr().ip(),
            "it leaves from the media address"
        );
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let want = framed(&stun(1));
        let mut got = vec![0u8; want.len()];
        let start = Instant::now();
        let mut read = 0;
        while read < got.len() {
            io.poll(Some(Duration::from_millis(20)), &mut h).unwrap();
            conn.set_nonblocking(true).unwrap();
            match conn.read(&mut got[read..]) {
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(start.elapsed() < Duration::from_secs(10), "nothing came");
        }
        assert_eq!(got, want);
        conn.set_nonblocking(false).unwrap();
        // The edge answers, then sends media: both reach the handler on the relay's id.
        let mut answer = framed(&stun(2));
        answer.extend_from_slice(&framed(b"\x80media"));
        conn.write_all(&answer).unwrap();
        poll_until(&mut io, &mut h, |_, h| h.got.len() == 2);
        assert_eq!(h.got[0], (socket, edge_addr, stun(2)));
        assert_eq!(h.got[1], (socket, edge_addr, b"\x80media".to_vec()));
        let s = io.tcp_stats();
        assert_eq!((s.connects, s.connect_failures, s.open), (1, 0, 1), "{s:?}");
        assert_eq!(io.take_lost_connection(), None);
        // The relay ends: its connection closes.
        io.remove_socket(socket);
        let mut rest = [0u8; 16];
        assert_eq!(conn.read(&mut rest).unwrap(), 0, "closed");
        let s = io.tcp_stats();
        assert_eq!((s.open, s.closed_by_core), (0, 1), "{s:?}");
    }

    /// A refused connect is closed, logged and counted; the id is free again.
    fn a_refused_connect_is_counted(choice: BackendChoice) {
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), choice).unwrap();
        let gone = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let socket = io.connect_tcp(gone).unwrap();
        io.send_queue().push_on(socket, gone, &stun(1));
        let mut h = Recorder::default();
        poll_until(&mut io, &mut h, |io, _| {
            io.tcp_stats().connect_failures == 1
        });
        let s = io.tcp_stats();
        assert_eq!((s.connects, s.open), (1, 0), "{s:?}");
        assert!(h.got.is_empty());
        // The core hears of it, once, to end the relay session at once.
        assert_eq!(io.take_lost_connection(), Some(socket));
        assert_eq!(io.take_lost_connection(), None);
        // Removing it later (its session ends) is harmless.
        io.remove_socket(socket);
        assert_eq!(io.tcp_stats().closed_by_core, 0);
    }

    /// A core that listens opens relay connections in the same table, next to accepted ones.
    fn a_listening_core_connects_too(choice: BackendChoice) {
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), choice).unwrap();
        let listening = io
            .listen_tcp(
                "127.0.0.1:0".parse().unwrap(),
                super::super::TcpLimits::default(),
            )
            .unwrap();
        let edge = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = io.connect_tcp(edge.local_addr().unwrap()).unwrap();
        assert_eq!(io.tcp_addr(), Some(listening));
        let mut h = Recorder::default();
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        let (mut conn, _) = edge.accept().unwrap();
        conn.write_all(&framed(&stun(3))).unwrap();
        poll_until(&mut io, &mut h, |_, h| h.got.len() == 1);
        assert_eq!(h.got[0].0, socket);
        assert_eq!(io.tcp_stats().accepted, 0);
        // The edge goes away: the core hears of it; the id stays taken until it lets go.
        drop(conn);
        poll_until(&mut io, &mut h, |io, _| io.tcp_stats().closed_by_peer == 1);
        assert_eq!(io.take_lost_connection(), Some(socket));
        let again = io.connect_tcp(edge.local_addr().unwrap()).unwrap();
        assert_ne!(
            again, socket,
            "a lost relay's id is not reused before its session ends"
        );
        io.remove_socket(socket);
        assert_eq!(
            io.tcp_stats().open,
            1,
            "removing the lost one leaves the new one open"
        );
    }

    per_backend!(
        a_relay_connection_frames_both_ways,
        a_refused_connect_is_counted,
        a_listening_core_connects_too,
    );
}
