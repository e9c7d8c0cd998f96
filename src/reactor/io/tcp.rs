//! Passive ICE-TCP (RFC 6544) for a media core: one listening socket and its accepted
//! connections, each seen by the handler as a socket of its own.
//!
//! Connection `i` is [`SocketId::tcp(i)`](SocketId::tcp) with the peer's address as source, so
//! the media core's demultiplexer and session lookup (ufrag first, then `(socket, address)`)
//! treat it as one more 5-tuple. Every frame (RFC 4571, `tcp_framing`) is one datagram.
//!
//! Two drivers, chosen by the backend. On io_uring (`uring.rs`) the listener has a multishot
//! ACCEPT, each connection one RECV into its own deframer's buffer and at most one SEND of its
//! queue in flight, and relays connect with CONNECT; completions come with the UDP ones. On the
//! mmsg backend the listener and the connections sit in an epoll instance of their own, whose
//! fd is an entry in the backend's epoll: when it is readable, [`TcpSide::service`] accepts and
//! reads with non-blocking syscalls, at most [`SERVICE_BUDGET`] frames per poll (level
//! triggering brings back the rest). Writes: a send to a connection is framed into its bounded
//! [`FrameQueue`] (in [`TcpTx`], inside the send queue) and written at every flush (a SEND, or
//! a non-blocking `send` with `EPOLLOUT` interest while the kernel buffer is full). A full
//! queue drops the frame and counts it, as a congested UDP player loses.
//!
//! Memory: each connection's two buffers are allocated when it is accepted (at most
//! `max_connections` of them, fixed at [`TcpSide::listen`]); reading, deframing, sending and
//! framing never allocate.
//!
//! A connection is closed when its peer closes it or it fails; when its first frame is not
//! STUN (garbage); when a length prefix exceeds [`MAX_DATAGRAM`]; when the core has sent
//! nothing to it within [`TcpLimits::stun_timeout`] of its accept (the ICE-lite agent answers
//! only checks with the right credentials, so an answer is what binds a connection to a
//! session); when nothing arrived on it for [`TcpLimits::idle_timeout`] (consent checks come
//! every few seconds); and at once when the table is full, or when the peer's IP address holds
//! [`TcpLimits::max_per_ip`] connections already. Each reason has its counter.
//!
//! The core also opens connections itself, for relays over TCP (`connect.rs`); they share the
//! table and everything after the connect.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::sendq::SendQueue;
use super::uring::Ring;
use super::{DatagramHandler, SocketId, MAX_DATAGRAM};
use crate::reactor::tcp_framing::{Deframer, FrameQueue};

mod connect;
mod uring;

pub(super) use uring::is_uring_op;

/// Frames handed to the handler per [`TcpSide::service`].
const SERVICE_BUDGET: usize = 256;
/// Connections accepted (or refused) per [`TcpSide::service`]: a flood of connection attempts
/// waits in the listen backlog, it does not hold the core.
const ACCEPT_BUDGET: usize = 64;
/// Events per `epoll_wait` of the TCP epoll.
const EVENTS: usize = 64;
/// The listener's epoll token; connections use their index.
const TOKEN_LISTENER: u64 = u64::MAX;
/// How often the timeouts are checked while connections are open.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Limits of one core's ICE-TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at a time; more are closed at accept (and counted).
    pub max_connections: usize,
    /// Of those, the most one IP address may hold (0: no limit): more from it are closed at
    /// accept, so one host cannot take the whole table from everyone else.
    pub max_per_ip: usize,
    /// Bytes of each connection's write queue: what a slow reader may have waiting.
    pub queue_bytes: usize,
    /// A connection the core has sent nothing to by then (no valid ICE check) is closed.
    pub stun_timeout: Duration,
    /// A connection on which nothing arrived for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 256,
            max_per_ip: 32,
            // A new connection's kernel buffer is small (16 KiB until TCP autotuning grows it),
            // and a player's start is a burst: the cached keyframe and what follows it. 128 KiB
            // dropped a dozen frames of a 640x360 start in the netns tests.
            queue_bytes: 256 * 1024,
            stun_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// ICE-TCP counters of one core (totals since listen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections accepted into the table.
    pub accepted: u64,
    /// Connections closed at accept because the table was full.
    pub rejected_full: u64,
    /// Connections closed at accept because their IP address had `max_per_ip` open.
    pub rejected_per_ip: u64,
    /// Connections open now.
    pub open: u64,
    /// Closed: the peer closed or reset it, or a read or write failed.
    pub closed_by_peer: u64,
    /// Closed: no valid ICE check within the STUN timeout.
    pub stun_timeouts: u64,
    /// Closed: nothing received for the idle timeout.
    pub idle_timeouts: u64,
    /// Closed: a length prefix above [`MAX_DATAGRAM`].
    pub oversized: u64,
    /// Closed: the first frame was not STUN.
    pub garbage: u64,
    /// Frames handed to the handler.
    pub rx_frames: u64,
    /// Frames queued for sending.
    pub tx_frames: u64,
    /// Frames dropped because the connection's write queue was full (or it was gone).
    pub tx_dropped: u64,
    /// Frames not sent because the connection's peer is not their destination: a session's
    /// connection closed and its index now serves someone else.
    pub tx_misdirected: u64,
    /// Connections the core opened for relays over TCP.
    pub connects: u64,
    /// Of those, connects that failed (refused, unreachable, reset).
    pub connect_failures: u64,
    /// Closed: the relay session that opened it ended.
    pub closed_by_core: u64,
}

/// The write side of the connections, kept in the send queue (which every send goes through).
/// With io_uring its writes are SENDs on the send queue's ring (`uring.rs`).
pub(super) struct TcpTx {
    conns: Box<[Option<ConnTx>]>,
    /// Indexes with bytes queued since the last flush; each listed once (`ConnTx::dirty`).
    dirty: Vec<u16>,
    epfd: RawFd,
    queue_bytes: usize,
    pub(super) frames: u64,
    pub(super) dropped: u64,
    /// Sends to a connection whose peer is not the destination (an old session's).
    pub(super) misdirected: u64,
}

struct ConnTx {
    fd: RawFd,
    /// The peer, as the handler sees it: sends name it as their destination.
    peer: SocketAddr,
    queue: FrameQueue,
    dirty: bool,
    /// `EPOLLOUT` interest is registered.
    waiting_out: bool,
    /// The core sent something: the connection carries a session.
    bound: bool,
    /// A write failed: the read side closes the connection at its next sweep.
    broken: bool,
    /// The connection's generation (io_uring: tags its operations, see `uring.rs`).
    gen: u16,
    /// io_uring: a SEND of `queue.pending()` is in flight (the queue is pinned).
    sending: bool,
    /// io_uring: an outgoing connection still connecting; nothing is sent before it ends.
    hold: bool,
}

impl ConnTx {
    fn new(fd: RawFd, peer: SocketAddr, queue_bytes: usize, gen: u16) -> ConnTx {
        ConnTx {
            fd,
            peer,
            queue: FrameQueue::new(queue_bytes, MAX_DATAGRAM),
            dirty: false,
            waiting_out: false,
            bound: false,
            broken: false,
            gen,
            sending: false,
            hold: false,
        }
    }
}

impl TcpTx {
    /// Queues one frame for connection `idx`, whose peer must be `dst`; see
    /// `SendQueue::push_with_on`.
    pub(super) fn push_with(
        &mut self,
        idx: u16,
        dst: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> usize,
        ring: Option<&mut Ring>,
    ) {
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
        else {
            self.dropped += 1;
            return;
        };
        if conn.peer != dst {
            // A session whose connection closed, while its index serves another peer now:
            // its packets must not reach that peer (nor bind the connection).
            self.misdirected += 1;
            return;
        }
        if !conn.queue.has_room() {
            // A burst (a keyframe, a replay) filled the queue before the flush: what the
            // kernel takes now makes room; only then is the frame dropped. (With io_uring the
            // SEND completes later: the frame is dropped now unless the queue has room.)
            self.write(idx, ring);
        }
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
        else {
            return;
        };
        let before = conn.queue.pending().len();
        if !conn.queue.push_with(fill) {
            self.dropped += 1;
            return;
        }
        if conn.queue.pending().len() == before {
            return; // `fill` wrote nothing
        }
        conn.bound = true;
        self.frames += 1;
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Writes what the connections touched since the last flush have queued.
    pub(super) fn flush(&mut self, mut ring: Option<&mut Ring>) {
        while let Some(idx) = self.dirty.pop() {
            if let Some(conn) = self
                .conns
                .get_mut(usize::from(idx))
                .and_then(Option::as_mut)
            {
                conn.dirty = false;
            }
            self.write(idx, ring.as_deref_mut());
        }
    }

    /// Writes connection `idx`'s queue: a SEND on `ring`, or as far as its kernel buffer takes
    /// it now (epoll).
    fn write(&mut self, idx: u16, ring: Option<&mut Ring>) {
        if let Some(ring) = ring {
            self.send_uring(idx, ring);
            return;
        }
        let epfd = self.epfd;
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
        else {
            return;
        };
        write_now(conn);
        let want_out = !conn.queue.is_empty() && !conn.broken;
        if want_out != conn.waiting_out {
            let events = libc::EPOLLIN as u32 | if want_out { libc::EPOLLOUT as u32 } else { 0 };
            if epoll_ctl(epfd, libc::EPOLL_CTL_MOD, conn.fd, events, u64::from(idx)).is_ok() {
                conn.waiting_out = want_out;
            }
        }
    }

    fn state(&self, idx: usize) -> (bool, bool) {
        self.conns[idx]
            .as_ref()
            .map_or((false, false), |c| (c.bound, c.broken))
    }
}

/// Writes `conn`'s queue with non-blocking `send`s as far as its kernel buffer takes it (not
/// while an io_uring SEND is in flight or a connect under way).
fn write_now(conn: &mut ConnTx) {
    if conn.sending || conn.hold {
        return;
    }
    while !conn.queue.is_empty() && !conn.broken {
        let pending = conn.queue.pending();
        // SAFETY: `fd` is an open socket (closed only after its entry is cleared); the
        // pointer and length describe `pending`, alive for the call.
        let n = unsafe {
            libc::send(
                conn.fd,
                pending.as_ptr().cast(),
                pending.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            conn.queue.consume(n as usize);
            continue;
        }
        match super::errno() {
            libc::EINTR => {}
            libc::EAGAIN => break,
            _ => conn.broken = true,
        }
    }
}

/// The read side: the listener, the epoll instance, and each connection's deframer.
pub(super) struct TcpSide {
    epfd: OwnedFd,
    /// `None` on a core that does not listen but opens connections for relays.
    listener: Option<TcpListener>,
    local: SocketAddr,
    conns: Box<[Option<ConnRx>]>,
    /// Indexes of outgoing connections, held until their relay session ends even when the
    /// connection closed before (see `connect.rs`).
    reserved: Box<[bool]>,
    /// Outgoing connections that failed or that their peer closed, for the core to end their
    /// relay sessions (`connect.rs`); room for every index, so pushing never allocates.
    lost: Vec<u16>,
    limits: TcpLimits,
    next_sweep: Option<Instant>,
    stats: TcpStats,
    /// The next connection's generation.
    next_gen: u16,
    /// The io_uring driver's state; `None` on the epoll backend.
    uring: Option<uring::UringTcp>,
}

struct ConnRx {
    stream: TcpStream,
    peer: SocketAddr,
    deframer: Deframer,
    accepted_at: Instant,
    last_rx: Instant,
    /// A frame arrived (the first must be STUN).
    spoke: bool,
    /// The core opened it (a relay over TCP), and how that stands.
    outgoing: Option<connect::Outgoing>,
    /// The connection's generation (io_uring: tags its operations, see `uring.rs`).
    gen: u16,
    /// Its io_uring operations in flight.
    ops: uring::Ops,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy)]
enum Close {
    Peer,
    StunTimeout,
    Idle,
    Oversized,
    Garbage,
    /// An outgoing connect failed.
    ConnectFailed,
    /// The relay session that opened it ended.
    Ended,
}

impl TcpSide {
    /// Listens on `addr`; the write side goes into `sendq`.
    pub(super) fn listen(
        addr: SocketAddr,
        limits: TcpLimits,
        sendq: &mut SendQueue,
    ) -> io::Result<TcpSide> {
        assert!(
            MAX_DATAGRAM <= usize::from(u16::MAX),
            "fits a length prefix"
        );
        let listener = TcpListener::bind(addr)?;
        // io_uring accepts without blocking anyway, and a non-blocking listener would make a
        // kernel that punts the ACCEPT to a worker complete it with EAGAIN.
        listener.set_nonblocking(sendq.ring_ref().is_none())?;
        TcpSide::new(Some(listener), limits, sendq)
    }

    /// A side without a listener, for the connections a core opens for relays.
    pub(super) fn outgoing_only(limits: TcpLimits, sendq: &mut SendQueue) -> io::Result<TcpSide> {
        TcpSide::new(None, limits, sendq)
    }

    fn new(
        listener: Option<TcpListener>,
        limits: TcpLimits,
        sendq: &mut SendQueue,
    ) -> io::Result<TcpSide> {
        let max = limits
            .max_connections
            .clamp(1, usize::from(SocketId::TCP_SLOTS));
        let local = match &listener {
            Some(listener) => listener.local_addr()?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epfd` was just created and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        if let Some(listener) = &listener {
            epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                listener.as_raw_fd(),
                libc::EPOLLIN as u32,
                TOKEN_LISTENER,
            )?;
        }
        let uring = sendq
            .ring_ref()
            .map(|_| uring::UringTcp::new(max, listener.is_some()));
        sendq.set_tcp(TcpTx {
            conns: (0..max).map(|_| None).collect(),
            dirty: Vec::with_capacity(max),
            epfd: epfd.as_raw_fd(),
            queue_bytes: limits.queue_bytes,
            frames: 0,
            dropped: 0,
            misdirected: 0,
        });
        Ok(TcpSide {
            epfd,
            listener,
            local,
            conns: (0..max).map(|_| None).collect(),
            reserved: vec![false; max].into_boxed_slice(),
            lost: Vec::with_capacity(max),
            limits: TcpLimits {
                max_connections: max,
                ..limits
            },
            next_sweep: None,
            stats: TcpStats::default(),
            next_gen: 0,
            uring,
        })
    }

    /// The fd the mmsg backend watches: readable when the listener or a connection is.
    pub(super) fn poll_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    /// The listening address; `None` when the side only opens connections.
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().map(|_| self.local)
    }

    /// When [`service`](Self::service) must run even if nothing is readable (timeouts).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.next_sweep
    }

    pub(super) fn stats(&self, sendq: &SendQueue) -> TcpStats {
        let (frames, dropped, misdirected) = sendq.tcp_counts();
        TcpStats {
            open: self.conns.iter().filter(|c| c.is_some()).count() as u64,
            tx_frames: frames,
            tx_dropped: dropped,
            tx_misdirected: misdirected,
            ..self.stats
        }
    }

    /// Accepts, reads and hands frames to `handler`; writes to connections that can take
    /// more; closes those that timed out. Returns the frames handled.
    pub(super) fn service(
        &mut self,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
    ) -> usize {
        // SAFETY: all-zero is a valid epoll_event.
        let mut events: [libc::epoll_event; EVENTS] = unsafe { std::mem::zeroed() };
        // SAFETY: `events` has room for the EVENTS entries passed as maxevents.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        let mut handled = 0;
        for ev in &events[..n.max(0) as usize] {
            let (token, flags) = (ev.u64, ev.events);
            if token == TOKEN_LISTENER {
                self.accept(sendq);
                continue;
            }
            let idx = token as u16;
            if !self.finish_connect(idx, flags, sendq) {
                continue;
            }
            if flags & libc::EPOLLOUT as u32 != 0 {
                if let Some(tx) = sendq.tcp_mut() {
                    tx.write(idx, None);
                }
            }
            if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
                && handled < SERVICE_BUDGET
            {
                handled += self.read(idx, SERVICE_BUDGET - handled, handler, sendq);
            }
        }
        let now = Instant::now();
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep(now, handler, sendq);
        }
        handled
    }

    fn accept(&mut self, sendq: &mut SendQueue) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the pending connection waits for the next round.
                    tracing::debug!(error = %e, "ICE-TCP accept failed");
                    return;
                }
            };
            let peer = canonical(peer);
            if self.at_ip_limit(peer.ip()) {
                self.stats.rejected_per_ip += 1;
                continue; // dropped: closed
            }
            let Some(idx) = self.free_index() else {
                self.stats.rejected_full += 1;
                continue;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            if epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                libc::EPOLLIN as u32,
                idx as u64,
            )
            .is_err()
            {
                continue;
            }
            self.insert(idx, stream, peer, None, sendq);
            self.accepted(idx, peer);
        }
    }

    /// Counts and logs connection `idx` from `peer`, accepted.
    fn accepted(&mut self, idx: usize, peer: SocketAddr) {
        self.stats.accepted += 1;
        tracing::debug!(local = %self.local, %peer, id = %SocketId::tcp(idx as u16), "ICE-TCP connection accepted");
    }

    /// Puts a connection into the table at `idx` (free), both sides; returns its generation.
    fn insert(
        &mut self,
        idx: usize,
        stream: TcpStream,
        peer: SocketAddr,
        outgoing: Option<connect::Outgoing>,
        sendq: &mut SendQueue,
    ) -> u16 {
        let gen = self.next_gen;
        self.next_gen = gen.wrapping_add(1);
        let fd = stream.as_raw_fd();
        let now = Instant::now();
        self.conns[idx] = Some(ConnRx {
            stream,
            peer,
            deframer: Deframer::new(MAX_DATAGRAM),
            accepted_at: now,
            last_rx: now,
            spoke: false,
            outgoing,
            gen,
            ops: uring::Ops::default(),
        });
        if let Some(tx) = sendq.tcp_mut() {
            tx.conns[idx] = Some(ConnTx::new(fd, peer, tx.queue_bytes, gen));
        }
        self.arm_sweep(now);
        gen
    }

    /// Whether `ip` holds [`TcpLimits::max_per_ip`] connections already. A scan of the table
    /// (at most `max_connections` entries) per accept, never per packet.
    fn at_ip_limit(&self, ip: IpAddr) -> bool {
        let max = self.limits.max_per_ip;
        max != 0
            && self
                .conns
                .iter()
                .flatten()
                // The connections the core opened (relays) are not the peer's to count.
                .filter(|c| c.outgoing.is_none() && c.peer.ip() == ip)
                .count()
                >= max
    }

    fn arm_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    /// Reads connection `idx` until it would block or `budget` frames were handled.
    fn read(
        &mut self,
        idx: u16,
        budget: usize,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
    ) -> usize {
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
        else {
            return 0;
        };
        let socket = SocketId::tcp(idx);
        let mut handled = 0;
        let mut close = None;
        while handled < budget {
            let got = match conn.stream.read(conn.deframer.spare()) {
                Ok(0) => {
                    close = Some(Close::Peer);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    close = Some(Close::Peer);
                    break;
                }
            };
            let (n, reason) = deliver(conn, got, socket, handler, sendq);
            handled += n;
            if reason.is_some() {
                close = reason;
                break;
            }
        }
        self.stats.rx_frames += handled as u64;
        if let Some(reason) = close {
            self.close_and_tell(idx, reason, handler, sendq);
        }
        handled
    }

    /// Closes connections that timed out or whose writes failed.
    fn sweep(&mut self, now: Instant, handler: &mut impl DatagramHandler, sendq: &mut SendQueue) {
        let mut any = false;
        for idx in 0..self.conns.len() {
            let Some(conn) = &self.conns[idx] else {
                continue;
            };
            let (bound, broken) = sendq.tcp_mut().map_or((false, true), |tx| tx.state(idx));
            let reason = if broken {
                Some(Close::Peer)
            } else if !bound && now >= conn.accepted_at + self.limits.stun_timeout {
                Some(Close::StunTimeout)
            } else if now >= conn.last_rx + self.limits.idle_timeout {
                Some(Close::Idle)
            } else {
                None
            };
            match reason {
                Some(reason) => self.close_and_tell(idx as u16, reason, handler, sendq),
                None => any = true,
            }
        }
        self.next_sweep = any.then(|| now + SWEEP_INTERVAL);
    }

    /// Closes connection `idx` and tells `handler` when it carried a client's frames (an
    /// accepted connection whose session may have lost its only path).
    fn close_and_tell(
        &mut self,
        idx: u16,
        reason: Close,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
    ) {
        if let Some(peer) = self.close(idx, reason, sendq) {
            handler.on_tcp_closed(SocketId::tcp(idx), peer);
        }
    }

    /// Closes connection `idx`; returns its peer when it was accepted and a frame arrived on
    /// it. A relay's own connection is reported through `lost` (connect.rs) instead.
    fn close(&mut self, idx: u16, reason: Close, sendq: &mut SendQueue) -> Option<SocketAddr> {
        let conn = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::take)?;
        let mut conn_tx = None;
        if let Some(tx) = sendq.tcp_mut() {
            conn_tx = tx.conns[usize::from(idx)].take();
            if let Some(c) = conn_tx.as_mut() {
                // What is queued goes out first, if the kernel takes it (a STUN answer, an
                // alert), unless a SEND is reading it.
                write_now(c);
            }
            // A later connection on this index must not find itself listed twice.
            tx.dirty.retain(|&i| i != idx);
        }
        let counter = match reason {
            Close::Peer => &mut self.stats.closed_by_peer,
            Close::StunTimeout => &mut self.stats.stun_timeouts,
            Close::Idle => &mut self.stats.idle_timeouts,
            Close::Oversized => &mut self.stats.oversized,
            Close::Garbage => &mut self.stats.garbage,
            Close::ConnectFailed => &mut self.stats.connect_failures,
            Close::Ended => &mut self.stats.closed_by_core,
        };
        *counter += 1;
        if conn.outgoing.is_some() && !matches!(reason, Close::Ended) {
            self.lost.push(idx);
        }
        tracing::debug!(local = %self.local, peer = %conn.peer, id = %SocketId::tcp(idx), ?reason, "ICE-TCP connection closed");
        let closed = (conn.spoke && conn.outgoing.is_none()).then_some(conn.peer);
        if self.uring.is_some() {
            // Its buffers and fd live until its operations in flight have completed.
            self.retire(idx, conn, conn_tx, sendq);
        }
        // Otherwise dropped here: closing the fd removes it from the epoll set.
        closed
    }
}

/// Hands the frames completed by `got` new bytes of `conn`'s stream to `handler`; returns how
/// many, and why the connection must close if it must.
fn deliver(
    conn: &mut ConnRx,
    got: usize,
    socket: SocketId,
    handler: &mut impl DatagramHandler,
    sendq: &mut SendQueue,
) -> (usize, Option<Close>) {
    conn.deframer.filled(got);
    conn.last_rx = Instant::now();
    let mut handled = 0;
    loop {
        match conn.deframer.next_frame() {
            Ok(Some(frame)) => {
                if !conn.spoke && !looks_like_stun(frame) {
                    return (handled, Some(Close::Garbage));
                }
                conn.spoke = true;
                if frame.is_empty() {
                    continue;
                }
                handler.on_datagram(socket, conn.peer, frame, None, sendq);
                sendq.datagram_handled(None);
                handled += 1;
            }
            Ok(None) => return (handled, None),
            Err(_) => return (handled, Some(Close::Oversized)),
        }
    }
}

/// A STUN message header: first two bits zero, the magic cookie (RFC 5389 §6).
fn looks_like_stun(frame: &[u8]) -> bool {
    frame.len() >= 20 && frame[0] < 4 && frame[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

/// IPv4 peers of a dual-stack listener as plain IPv4 addresses, as UDP reports them.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: both fds are open; `ev` is a valid epoll_event for the call.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::Shutdown;

    use super::super::{BackendChoice, UdpIo};
    use super::*;

    /// Echoes every frame on the connection it came from, so a valid-looking check binds it.
    #[derive(Default)]
    struct Echo {
        got: Vec<(SocketId, SocketAddr, Vec<u8>)>,
        closed: Vec<(SocketId, SocketAddr)>,
    }

    impl DatagramHandler for Echo {
        fn on_datagram(
            &mut self,
            socket: SocketId,
            src: SocketAddr,
            data: &mut [u8],
            _received_ns: Option<u64>,
            tx: &mut SendQueue,
        ) {
            self.got.push((socket, src, data.to_vec()));
            tx.push_on(socket, src, data);
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {}
        fn on_tcp_closed(&mut self, socket: SocketId, src: SocketAddr) {
            self.closed.push((socket, src));
        }
    }

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

    fn setup(choice: BackendChoice, limits: TcpLimits) -> (UdpIo, SocketAddr) {
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), choice).unwrap();
        let addr = io
            .listen_tcp("127.0.0.1:0".parse().unwrap(), limits)
            .unwrap();
        // Each backend its own driver: io_uring's SQEs, or the epoll.
        let uring = io.tcp.as_ref().is_some_and(|t| t.uring.is_some());
        assert_eq!(uring, choice == BackendChoice::IoUring);
        (io, addr)
    }

    fn poll_until(io: &mut UdpIo, h: &mut Echo, mut done: impl FnMut(&UdpIo) -> bool) {
        let start = Instant::now();
        while !done(io) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {:?}",
                io.tcp_stats()
            );
            io.poll(Some(Duration::from_millis(20)), h).unwrap();
        }
    }

    /// Whether the server closed `c` (EOF or reset within a second).
    fn closed(c: &mut TcpStream) -> bool {
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    fn frames_echo_on_their_connection(choice: BackendChoice) {
        let (mut io, addr) = setup(choice, TcpLimits::default());
        let mut h = Echo::default();
        let mut c = TcpStream::connect(addr).unwrap();
        // Two frames in one write, a third split over two writes.
        let mut bytes = framed(&stun(1));
        bytes.extend_from_slice(&framed(b"\x80second"));
        c.write_all(&bytes).unwrap();
        let third = framed(&[0x17; 1500]);
        c.write_all(&third[..700]).unwrap();
        poll_until(&mut io, &mut h, |io| h_len(io) >= 2);
        c.write_all(&third[700..]).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 3);
        let socket = h.got[0].0;
        assert!(socket.is_tcp());
        assert_eq!(h.got[0].1, c.local_addr().unwrap());
        assert!(h.got.iter().all(|g| g.0 == socket && g.1 == h.got[0].1));
        assert_eq!(h.got[2].2, vec![0x17; 1500]);
        let mut want = bytes.clone();
        want.extend_from_slice(&third);
        let mut back = vec![0u8; want.len()];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, want);
        let s = io.tcp_stats();
        assert_eq!(
            (s.accepted, s.open, s.tx_frames, s.tx_dropped),
            (1, 1, 3, 0)
        );
        // The peer closes: so does the core.
        c.shutdown(Shutdown::Both).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().closed_by_peer == 1);
        assert_eq!(io.tcp_stats().open, 0);
        // The core hears of it: its session lost that path.
        assert_eq!(h.closed, vec![(socket, h.got[0].1)]);
    }

    fn h_len(io: &UdpIo) -> usize {
        io.tcp_stats().rx_frames as usize
    }

    fn bad_input_closes_with_a_count(choice: BackendChoice) {
        let limits = TcpLimits {
            max_connections: 2,
            stun_timeout: Duration::from_millis(300),
            ..TcpLimits::default()
        };
        let (mut io, addr) = setup(choice, limits);
        let mut h = Echo::default();
        let mut silent = TcpStream::connect(addr).unwrap();
        let mut good = TcpStream::connect(addr).unwrap();
        good.write_all(&framed(&stun(2))).unwrap();
        poll_until(&mut io, &mut h, |io| {
            let s = io.tcp_stats();
            s.accepted == 2 && s.rx_frames == 1
        });
        // The table is full: a third is closed at once.
        let mut third = TcpStream::connect(addr).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rejected_full == 1);
        assert!(closed(&mut third));
        // The silent one times out; the one the core answered stays.
        poll_until(&mut io, &mut h, |io| io.tcp_stats().stun_timeouts == 1);
        assert!(closed(&mut silent));
        assert_eq!(io.tcp_stats().open, 1);
        // Garbage, then a 65535-byte length prefix: each closed at once.
        let mut garbage = TcpStream::connect(addr).unwrap();
        garbage
            .write_all(&framed(b"GET / HTTP/1.1 and more"))
            .unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().garbage == 1);
        assert!(closed(&mut garbage));
        let mut oversized = TcpStream::connect(addr).unwrap();
        oversized.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().oversized == 1);
        assert!(closed(&mut oversized));
        good.write_all(&framed(&stun(3))).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 2);
        assert_eq!(
            h.got.len(),
            2,
            "nothing of the bad connections reached the handler"
        );
        assert!(h.closed.is_empty(), "none of them carried a session");
        let s = io.tcp_stats();
        assert_eq!((s.open, s.accepted, s.closed_by_peer), (1, 4, 0), "{s:?}");
    }

    fn slow_reader_drops_and_counts(choice: BackendChoice) {
        let limits = TcpLimits {
            queue_bytes: 16 * 1024,
            ..TcpLimits::default()
        };
        let (mut io, addr) = setup(choice, limits);
        let mut h = Echo::default();
        let mut c = TcpStream::connect(addr).unwrap();
        (&c).write_all(&framed(&stun(1))).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 1);
        let (socket, peer, _) = h.got[0].clone();
        // The client does not read yet: far more than its kernel buffers and queue hold.
        let start = Instant::now();
        for seq in 0..20_000u32 {
            io.send_queue().push_with_on(socket, peer, |b| {
                b[..1200].fill(0x80);
                b[..4].copy_from_slice(&seq.to_be_bytes());
                1200
            });
            io.poll(Some(Duration::ZERO), &mut h).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the core never blocks"
        );
        let s = io.tcp_stats();
        assert!(s.tx_dropped > 0, "{s:?}");
        assert_eq!(s.open, 1);
        // Now it reads: every frame queued arrives whole and in order (a SEND in flight while
        // the queue took more must not have seen its bytes move), the dropped ones never.
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut stream = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(500) {
            io.poll(Some(Duration::ZERO), &mut h).unwrap();
            match c.read(&mut buf) {
                Ok(n) if n > 0 => {
                    stream.extend_from_slice(&buf[..n]);
                    quiet = Instant::now();
                }
                _ => {}
            }
            assert!(start.elapsed() < Duration::from_secs(40), "never drained");
        }
        let mut frames = 0;
        let mut last = None;
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let frame = &rest[2..2 + len];
            if frames == 0 {
                assert_eq!(frame, &stun(1)[..], "the echo comes first");
            } else {
                assert_eq!(len, 1200);
                let seq = u32::from_be_bytes(frame[..4].try_into().unwrap());
                assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
                assert!(frame[4..].iter().all(|&b| b == 0x80));
                last = Some(seq);
            }
            frames += 1;
            rest = &rest[2 + len..];
        }
        assert_eq!(frames, io.tcp_stats().tx_frames, "{:?}", io.tcp_stats());
    }

    /// A peer that closes halfway through a frame: the frames before it were delivered, the
    /// half is not, the connection closes with its count and the core hears of it once.
    fn a_peer_closing_mid_frame(choice: BackendChoice) {
        let (mut io, addr) = setup(choice, TcpLimits::default());
        let mut h = Echo::default();
        let mut c = TcpStream::connect(addr).unwrap();
        let mut bytes = framed(&stun(1));
        bytes.extend_from_slice(&framed(&[0x17; 1000])[..300]);
        c.write_all(&bytes).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 1);
        let (socket, peer, _) = h.got[0].clone();
        drop(c);
        poll_until(&mut io, &mut h, |io| io.tcp_stats().closed_by_peer == 1);
        assert_eq!(h.got.len(), 1, "half a frame is not a frame");
        assert_eq!(h.closed, vec![(socket, peer)]);
        let s = io.tcp_stats();
        assert_eq!((s.open, s.rx_frames, s.oversized, s.garbage), (0, 1, 0, 0));
    }

    /// Connects to `to` from `local` (another loopback address), blocking.
    fn connect_from(local: std::net::IpAddr, to: SocketAddr) -> TcpStream {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(local, 0)).unwrap();
            let stream = socket.connect(to).await.unwrap().into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            stream
        })
    }

    fn one_ip_cannot_take_the_table(choice: BackendChoice) {
        let limits = TcpLimits {
            max_connections: 4,
            max_per_ip: 2,
            ..TcpLimits::default()
        };
        let (mut io, addr) = setup(choice, limits);
        let mut h = Echo::default();
        let mut greedy: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        poll_until(&mut io, &mut h, |io| {
            let s = io.tcp_stats();
            s.accepted + s.rejected_per_ip == 3
        });
        let s = io.tcp_stats();
        assert_eq!(
            (s.accepted, s.rejected_per_ip, s.rejected_full),
            (2, 1, 0),
            "{s:?}"
        );
        assert_eq!(greedy.iter_mut().map(closed).filter(|&c| c).count(), 1);
        // Another address still gets in, up to its own share and the table's size.
        let other = "127.0.0.2".parse().unwrap();
        let _others: Vec<TcpStream> = (0..2).map(|_| connect_from(other, addr)).collect();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().accepted == 4);
        assert_eq!(io.tcp_stats().open, 4);
        // Off (0): one address may fill the table.
        let (mut io, addr) = setup(
            choice,
            TcpLimits {
                max_connections: 4,
                max_per_ip: 0,
                ..TcpLimits::default()
            },
        );
        let _all: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().accepted == 4);
        assert_eq!(io.tcp_stats().rejected_per_ip, 0);
    }

    /// A connection id reused by another peer never carries the old peer's packets.
    fn reused_id_sends_only_to_its_own_peer(choice: BackendChoice) {
        let (mut io, addr) = setup(choice, TcpLimits::default());
        let mut h = Echo::default();
        let a = TcpStream::connect(addr).unwrap();
        (&a).write_all(&framed(&stun(1))).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 1);
        let (id, a_addr, _) = h.got[0].clone();
        a.shutdown(Shutdown::Both).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().open == 0);
        let mut b = TcpStream::connect(addr).unwrap();
        b.write_all(&framed(&stun(2))).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 2);
        let (b_id, b_addr, _) = h.got[1].clone();
        assert_eq!(b_id, id, "the index is reused");
        // The old session still sends to its peer's address on that id.
        io.send_queue().push_on(id, a_addr, b"for the old peer");
        io.send_queue().push_on(id, b_addr, b"for b");
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut echo = vec![0u8; 22];
        b.read_exact(&mut echo).unwrap(); // its own check, echoed
        let mut next = [0u8; 7];
        b.read_exact(&mut next).unwrap();
        assert_eq!(&next, b"\x00\x05for b");
        assert_eq!(io.tcp_stats().tx_misdirected, 1);
    }

    per_backend!(
        frames_echo_on_their_connection,
        bad_input_closes_with_a_count,
        slow_reader_drops_and_counts,
        reused_id_sends_only_to_its_own_peer,
        one_ip_cannot_take_the_table,
        a_peer_closing_mid_frame,
    );
}
