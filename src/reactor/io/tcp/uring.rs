//! The io_uring driver of ICE-TCP: the listener, the connections' reads and writes and the
//! relays' connects as SQEs on the media core's ring, their completions handed over by the
//! backend's poll ([`TcpSide::on_uring_cqe`]).
//!
//! - Accept: one multishot ACCEPT on the listener (re-armed when a completion ends it; a
//!   kernel that refuses multishot with EINVAL gets single ACCEPTs, re-armed after each). An
//!   accepted fd goes through the same per-IP limit, table and counters as on epoll.
//! - Read: one RECV per connection into its deframer's spare room ([`Deframer::spare`]), re-armed
//!   after the frames it completed went to the handler. Nothing is allocated per read.
//! - Write: at most one SEND per connection, of what its queue holds, in flight; the queue is
//!   pinned meanwhile ([`FrameQueue::set_pinned`]), and a partial write sends the rest next.
//! - Connect (relays over TCP): a CONNECT on a blocking socket; frames wait in the queue until
//!   it completed.
//!
//! Ownership: an operation in flight borrows its connection's buffer and fd. Each operation's
//! user_data carries its kind, the connection's index and its generation (a counter bumped per
//! connection). Closing a connection shuts its socket down (the peer learns at once), cancels
//! its operations (ASYNC_CANCEL) and keeps its buffers and fd in [`UringTcp::closing`] until
//! the last of them completed; only then is the index free. A completion whose generation is
//! not its index's (live or closing) is counted and ignored, never applied to another
//! connection.
//!
//! [`Deframer::spare`]: crate::reactor::tcp_framing::Deframer::spare
//! [`FrameQueue::set_pinned`]: crate::reactor::tcp_framing::FrameQueue::set_pinned

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Instant;

use io_uring::types::Fd;
use io_uring::{cqueue, opcode};

use super::super::sendq::SendQueue;
use super::super::sockaddr;
use super::super::uring::{Cqe, Ring, UD_CANCEL};
use super::super::{DatagramHandler, SocketId};
use super::{canonical, connect, deliver, Close, ConnRx, ConnTx, TcpSide, TcpTx, SWEEP_INTERVAL};

/// Set in the user_data of every ICE-TCP operation. (The UDP receives and sends use bits 33
/// and 32, which these never set.)
const UD_TCP_OP: u64 = 1 << 62;
const OP_SHIFT: u32 = 56;
const GEN_SHIFT: u32 = 40;

/// Kinds of ICE-TCP operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept = 0,
    Recv = 1,
    Send = 2,
    Connect = 3,
}

fn user_data(op: Op, gen: u16, idx: u16) -> u64 {
    UD_TCP_OP | (op as u64) << OP_SHIFT | u64::from(gen) << GEN_SHIFT | u64::from(idx)
}

fn decode(ud: u64) -> Option<(Op, u16, u16)> {
    let op = match (ud >> OP_SHIFT) & 0xf {
        0 => Op::Accept,
        1 => Op::Recv,
        2 => Op::Send,
        3 => Op::Connect,
        _ => return None,
    };
    Some((op, (ud >> GEN_SHIFT) as u16, ud as u16))
}

/// Whether a completion's `user_data` is an ICE-TCP operation's.
pub(in crate::reactor::io) fn is_uring_op(ud: u64) -> bool {
    ud & UD_TCP_OP != 0
}

/// A connection's generation and its read-side operations in flight.
#[derive(Debug, Default, Clone, Copy)]
pub(in crate::reactor::io) struct Ops {
    recv: bool,
    connect: bool,
    /// In `UringTcp::todo`.
    queued: bool,
}

/// A closed connection whose operations have not all completed yet.
struct Closing {
    rx: ConnRx,
    tx: Option<ConnTx>,
    gen: u16,
}

impl Closing {
    fn done(&self) -> bool {
        !self.rx.ops.recv && !self.rx.ops.connect && !self.tx.as_ref().is_some_and(|t| t.sending)
    }
}

/// The driver's state, in [`TcpSide`].
pub(in crate::reactor::io) struct UringTcp {
    /// The listener has an ACCEPT in flight.
    accept_armed: bool,
    /// Multishot ACCEPT works (until a kernel says EINVAL).
    multishot: bool,
    /// When to arm the ACCEPT again after a failure (EMFILE and the like) rather than spin.
    accept_after: Option<Instant>,
    listens: bool,
    /// Indexed like the table.
    closing: Box<[Option<Closing>]>,
    /// Connections whose RECV could not be pushed (SQ full): armed at the next poll.
    todo: Vec<u16>,
    /// The CONNECT addresses, read by the kernel when it takes the SQE.
    connect_addrs: Box<[libc::sockaddr_storage]>,
    /// Completions that matched no connection of their index's generation.
    late: u64,
}

impl UringTcp {
    pub(super) fn new(max: usize, listens: bool) -> UringTcp {
        UringTcp {
            accept_armed: false,
            multishot: true,
            accept_after: None,
            listens,
            closing: (0..max).map(|_| None).collect(),
            todo: Vec::with_capacity(max),
            // SAFETY: all-zero is a valid sockaddr_storage.
            connect_addrs: vec![unsafe { std::mem::zeroed() }; max].into_boxed_slice(),
            late: 0,
        }
    }

    /// Whether index `i` has nothing of a closed connection in flight.
    pub(super) fn slot_free(&self, i: usize) -> bool {
        self.closing.get(i).is_some_and(Option::is_none)
    }
}

impl TcpTx {
    /// Pushes a SEND of connection `idx`'s queue unless one is in flight (or it has nothing to
    /// send, failed, or still connects).
    pub(super) fn send_uring(&mut self, idx: u16, ring: &mut Ring) {
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
        else {
            return;
        };
        if conn.sending || conn.hold || conn.broken || conn.queue.is_empty() {
            return;
        }
        let pending = conn.queue.pending();
        let len = pending.len().min(u32::MAX as usize) as u32;
        let sqe = opcode::Send::new(Fd(conn.fd), pending.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, conn.gen, idx));
        // The queue is pinned from here until the completion: `pending` stays where it is.
        if ring.push(&sqe).is_ok() {
            conn.sending = true;
            conn.queue.set_pinned(true);
        }
        // Otherwise the bytes stay queued: the next push to the connection or its next
        // completion tries again.
    }

    /// A SEND of connection `idx` (generation `gen`) completed with `res`; false if the
    /// connection is not (or no longer) the one it was for.
    fn sent(&mut self, idx: u16, gen: u16, res: i32, ring: Option<&mut Ring>) -> bool {
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
            .filter(|c| c.gen == gen && c.sending)
        else {
            return false;
        };
        conn.sending = false;
        conn.queue.set_pinned(false);
        if res > 0 {
            conn.queue.consume(res as usize);
        } else if res < 0 && !matches!(-res, libc::EAGAIN | libc::EINTR) {
            // The read side closes it at its next sweep, as on epoll.
            conn.broken = true;
        }
        if let Some(ring) = ring {
            self.send_uring(idx, ring);
        }
        true
    }
}

impl TcpSide {
    /// Arms what needs an SQE: the listener's ACCEPT and the RECVs that could not be pushed.
    /// Called at the start of every poll.
    pub(in crate::reactor::io) fn uring_arm(&mut self, sendq: &mut SendQueue) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        let Some(ring) = sendq.ring_mut() else {
            return;
        };
        if u.listens && !u.accept_armed && u.accept_after.is_none_or(|at| at <= Instant::now()) {
            if let Some(listener) = &self.listener {
                let fd = Fd(listener.as_raw_fd());
                let sqe = if u.multishot {
                    opcode::AcceptMulti::new(fd)
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                };
                if ring
                    .push(&sqe.user_data(user_data(Op::Accept, 0, 0)))
                    .is_ok()
                {
                    u.accept_armed = true;
                    u.accept_after = None;
                }
            }
        }
        while let Some(idx) = u.todo.pop() {
            if let Some(conn) = self
                .conns
                .get_mut(usize::from(idx))
                .and_then(Option::as_mut)
            {
                conn.ops.queued = false;
                if !arm_recv(conn, idx, ring) {
                    conn.ops.queued = true;
                    u.todo.push(idx);
                    break;
                }
            }
        }
    }

    /// After a poll's completions: the timeouts, when due, and the SQEs they left to push
    /// (the poll's flush submits them, so a RECV that found the SQ full does not wait for
    /// some other event).
    pub(in crate::reactor::io) fn uring_service(
        &mut self,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
    ) {
        let now = Instant::now();
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep(now, handler, sendq);
            if let Some(at) = self.uring.as_ref().and_then(|u| u.accept_after) {
                // An ACCEPT waiting to be re-armed needs a poll that wakes for it.
                self.next_sweep = Some(self.next_sweep.map_or(at, |s| s.min(at)));
            }
        }
        self.uring_arm(sendq);
    }

    /// Handles one ICE-TCP completion; returns the frames it handed to `handler`.
    pub(in crate::reactor::io) fn on_uring_cqe(
        &mut self,
        cqe: Cqe,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
    ) -> usize {
        let Some((op, gen, idx)) = decode(cqe.user_data) else {
            return 0;
        };
        match op {
            Op::Accept => {
                self.on_accept(cqe, sendq);
                0
            }
            Op::Recv => self.on_recv(idx, gen, cqe.result, handler, sendq),
            Op::Send => {
                let (tx, ring) = sendq.tcp_and_ring();
                if !tx.is_some_and(|tx| tx.sent(idx, gen, cqe.result, ring)) {
                    self.closing_done(op, gen, idx);
                }
                0
            }
            Op::Connect => {
                self.on_connect(idx, gen, cqe.result, sendq);
                0
            }
        }
    }

    fn on_accept(&mut self, cqe: Cqe, sendq: &mut SendQueue) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        if !cqueue::more(cqe.flags) {
            u.accept_armed = false;
        }
        if cqe.result >= 0 {
            // SAFETY: the kernel just created this fd for us; nothing else owns it.
            let stream = unsafe { TcpStream::from_raw_fd(cqe.result) };
            self.adopt(stream, sendq);
            return;
        }
        match -cqe.result {
            libc::EINVAL if u.multishot => {
                tracing::debug!("multishot ACCEPT refused; ICE-TCP accepts one at a time");
                u.multishot = false;
            }
            libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
            errno => {
                // EMFILE and the like: the pending connection waits in the backlog.
                tracing::debug!(error = %io::Error::from_raw_os_error(errno), "ICE-TCP accept failed");
                let at = Instant::now() + SWEEP_INTERVAL;
                u.accept_after = Some(at);
                self.next_sweep = Some(self.next_sweep.map_or(at, |s| s.min(at)));
            }
        }
    }

    /// Takes an accepted connection into the table, or closes it (per-IP limit, full table).
    fn adopt(&mut self, stream: TcpStream, sendq: &mut SendQueue) {
        let Ok(peer) = stream.peer_addr() else {
            return; // reset before we got to it
        };
        let peer = canonical(peer);
        if self.at_ip_limit(peer.ip()) {
            self.stats.rejected_per_ip += 1;
            return;
        }
        let Some(idx) = self.free_index() else {
            self.stats.rejected_full += 1;
            return;
        };
        let _ = stream.set_nodelay(true);
        self.insert(idx, stream, peer, None, sendq);
        self.accepted(idx, peer);
        self.rearm_recv(idx as u16, sendq);
    }

    /// Pushes connection `idx`'s RECV, or queues it for the next poll.
    fn rearm_recv(&mut self, idx: u16, sendq: &mut SendQueue) {
        let (Some(conn), Some(u)) = (
            self.conns
                .get_mut(usize::from(idx))
                .and_then(Option::as_mut),
            self.uring.as_mut(),
        ) else {
            return;
        };
        let pushed = sendq
            .ring_mut()
            .is_some_and(|ring| arm_recv(conn, idx, ring));
        if !pushed && !conn.ops.queued {
            conn.ops.queued = true;
            u.todo.push(idx);
        }
    }

    fn on_recv(
        &mut self,
        idx: u16,
        gen: u16,
        res: i32,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
    ) -> usize {
        let live = self
            .conns
            .get(usize::from(idx))
            .and_then(Option::as_ref)
            .is_some_and(|c| c.gen == gen && c.ops.recv);
        if !live {
            self.closing_done(Op::Recv, gen, idx);
            return 0;
        }
        let Some(conn) = self.conns[usize::from(idx)].as_mut() else {
            return 0;
        };
        conn.ops.recv = false;
        let (handled, close) = match res {
            0 => (0, Some(Close::Peer)),
            n if n > 0 => deliver(conn, n as usize, SocketId::tcp(idx), handler, sendq),
            e if matches!(
                -e,
                libc::EINTR | libc::EAGAIN | libc::ENOBUFS | libc::ECANCELED
            ) =>
            {
                (0, None)
            }
            _ => (0, Some(Close::Peer)),
        };
        self.stats.rx_frames += handled as u64;
        match close {
            Some(reason) => self.close_and_tell(idx, reason, handler, sendq),
            None => self.rearm_recv(idx, sendq),
        }
        handled
    }

    fn on_connect(&mut self, idx: u16, gen: u16, res: i32, sendq: &mut SendQueue) {
        let Some(conn) = self
            .conns
            .get_mut(usize::from(idx))
            .and_then(Option::as_mut)
            .filter(|c| c.gen == gen && c.ops.connect)
        else {
            self.closing_done(Op::Connect, gen, idx);
            return;
        };
        conn.ops.connect = false;
        if res < 0 {
            let error = io::Error::from_raw_os_error(-res);
            tracing::warn!(peer = %conn.peer, %error, "relay ICE-TCP connect failed");
            let _ = self.close(idx, Close::ConnectFailed, sendq);
            return;
        }
        conn.outgoing = Some(connect::Outgoing::Established);
        tracing::info!(peer = %conn.peer, id = %SocketId::tcp(idx), "relay ICE-TCP connection established");
        let (tx, ring) = sendq.tcp_and_ring();
        if let (Some(tx), Some(ring)) = (tx, ring) {
            if let Some(c) = tx.conns[usize::from(idx)].as_mut() {
                c.hold = false;
            }
            tx.send_uring(idx, ring);
        }
        self.rearm_recv(idx, sendq);
    }

    /// Pushes the CONNECT of outgoing connection `idx`, just put into the table, to `remote`.
    pub(super) fn connect_uring(
        &mut self,
        idx: u16,
        remote: SocketAddr,
        sendq: &mut SendQueue,
    ) -> io::Result<()> {
        let (Some(u), Some(conn)) = (self.uring.as_mut(), self.conns[usize::from(idx)].as_mut())
        else {
            return Err(io::Error::other("no io_uring ICE-TCP driver"));
        };
        let storage = &mut u.connect_addrs[usize::from(idx)];
        let len = sockaddr::encode(remote, remote.is_ipv6(), storage)
            .ok_or_else(|| io::Error::other(format!("{remote} cannot be connected to")))?;
        let sqe = opcode::Connect::new(
            Fd(conn.stream.as_raw_fd()),
            (storage as *const libc::sockaddr_storage).cast(),
            len,
        )
        .build()
        .user_data(user_data(Op::Connect, conn.gen, idx));
        sendq
            .ring_mut()
            .ok_or_else(|| io::Error::other("no io_uring"))?
            .push(&sqe)?;
        conn.ops.connect = true;
        Ok(())
    }

    /// io_uring's part of closing connection `idx`: the peer learns now, its operations in
    /// flight are cancelled, and its buffers and fd stay until they completed.
    pub(super) fn retire(
        &mut self,
        idx: u16,
        rx: ConnRx,
        tx: Option<ConnTx>,
        sendq: &mut SendQueue,
    ) {
        let gen = rx.gen;
        // SAFETY: the fd is open (owned by `rx.stream`); shutdown has no memory preconditions.
        // An in-flight RECV then completes with 0, a SEND with an error.
        unsafe { libc::shutdown(rx.stream.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(u) = self.uring.as_mut() {
            u.todo.retain(|&i| i != idx);
        }
        let closing = Closing { rx, tx, gen };
        if closing.done() {
            return; // dropped: fd closed, buffers freed
        }
        if let Some(ring) = sendq.ring_mut() {
            let sending = closing.tx.as_ref().is_some_and(|t| t.sending);
            for (op, on) in [
                (Op::Recv, closing.rx.ops.recv),
                (Op::Send, sending),
                (Op::Connect, closing.rx.ops.connect),
            ] {
                if on {
                    let sqe = opcode::AsyncCancel::new(user_data(op, gen, idx))
                        .build()
                        .user_data(UD_CANCEL);
                    // If the SQ is full, the shutdown above still ends them.
                    let _ = ring.push(&sqe);
                }
            }
        }
        if let Some(u) = self.uring.as_mut() {
            u.closing[usize::from(idx)] = Some(closing);
        }
    }

    /// Accounts for a completion that belongs to no open connection: one of a closing
    /// connection's (freed with its last), or a late one (counted, ignored).
    fn closing_done(&mut self, op: Op, gen: u16, idx: u16) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        let Some(slot) = u.closing.get_mut(usize::from(idx)) else {
            u.late += 1;
            return;
        };
        let Some(closing) = slot.as_mut().filter(|c| c.gen == gen) else {
            u.late += 1;
            return;
        };
        match op {
            Op::Recv => closing.rx.ops.recv = false,
            Op::Connect => closing.rx.ops.connect = false,
            Op::Send => {
                if let Some(tx) = closing.tx.as_mut() {
                    tx.sending = false;
                }
            }
            Op::Accept => {}
        }
        if closing.done() {
            *slot = None;
        }
    }

    /// Completions that matched no connection.
    #[cfg(test)]
    pub(super) fn late_completions(&self) -> u64 {
        self.uring.as_ref().map_or(0, |u| u.late)
    }

    /// Closes every connection, cancels the ACCEPT and waits (about a second at most) until no
    /// operation is in flight, so that their buffers may be freed. False if that did not
    /// happen: the caller must then leak them.
    pub(in crate::reactor::io) fn uring_drain(&mut self, sendq: &mut SendQueue) -> bool {
        if self.uring.is_none() || !sendq.ring_ref().is_some_and(Ring::is_enabled) {
            // Never submitted: the kernel holds nothing of ours.
            return true;
        }
        for idx in 0..self.conns.len() {
            if let Some(rx) = self.conns[idx].take() {
                let tx = sendq.tcp_mut().and_then(|tx| tx.conns[idx].take());
                self.retire(idx as u16, rx, tx, sendq);
            }
        }
        if let (Some(u), Some(ring)) = (self.uring.as_mut(), sendq.ring_mut()) {
            if u.accept_armed {
                let sqe = opcode::AsyncCancel::new(user_data(Op::Accept, 0, 0))
                    .build()
                    .user_data(UD_CANCEL);
                if ring.push(&sqe).is_err() {
                    return false;
                }
            }
        }
        for round in 0..=50 {
            let Some(u) = self.uring.as_mut() else {
                return true;
            };
            if !u.accept_armed && u.closing.iter().all(Option::is_none) {
                return true;
            }
            if round == 50 {
                break;
            }
            let Some(ring) = sendq.ring_mut() else {
                return true;
            };
            if ring
                .wait(Some(std::time::Duration::from_millis(20)))
                .is_err()
            {
                return false;
            }
            // A completion the UDP side's stash holds keeps later ones behind it: take ours
            // from both.
            sendq.reap(|cqe| self.drained(cqe));
            if let Some(ring) = sendq.ring_mut() {
                ring.take_stashed(|cqe| self.drained(cqe));
            }
        }
        false
    }

    /// Shutdown bookkeeping of one completion; false if it is not ICE-TCP's (the UDP side's,
    /// for its own shutdown).
    fn drained(&mut self, cqe: Cqe) -> bool {
        let Some((op, gen, idx)) = decode(cqe.user_data).filter(|_| is_uring_op(cqe.user_data))
        else {
            return false;
        };
        if op == Op::Accept {
            if cqe.result >= 0 {
                // SAFETY: a connection accepted meanwhile: ours to close.
                unsafe { libc::close(cqe.result) };
            }
            if let Some(u) = self.uring.as_mut() {
                u.accept_armed &= cqueue::more(cqe.flags);
            }
        } else {
            self.closing_done(op, gen, idx);
        }
        true
    }
}

/// Pushes a RECV into `conn`'s deframer; false if the SQ had no room.
fn arm_recv(conn: &mut ConnRx, idx: u16, ring: &mut Ring) -> bool {
    if conn.ops.recv || conn.ops.connect {
        return true;
    }
    let gen = conn.gen;
    // Never empty between frames (see `Deframer::spare`); the buffer is the connection's and
    // lives until this RECV completed (`retire`).
    let spare = conn.deframer.spare();
    let len = spare.len().min(u32::MAX as usize) as u32;
    let sqe = opcode::Recv::new(Fd(conn.stream.as_raw_fd()), spare.as_mut_ptr(), len)
        .build()
        .user_data(user_data(Op::Recv, gen, idx));
    if ring.push(&sqe).is_err() {
        return false;
    }
    conn.ops.recv = true;
    true
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::Shutdown;
    use std::time::Duration;

    use super::super::super::{BackendChoice, UdpIo};
    use super::super::TcpLimits;
    use super::*;

    #[derive(Default)]
    struct Recorder {
        got: Vec<Vec<u8>>,
        closed: usize,
    }

    impl DatagramHandler for Recorder {
        fn on_datagram(
            &mut self,
            _socket: SocketId,
            _src: SocketAddr,
            data: &mut [u8],
            _received_ns: Option<u64>,
            _tx: &mut SendQueue,
        ) {
            self.got.push(data.to_vec());
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {}
        fn on_tcp_closed(&mut self, _socket: SocketId, _src: SocketAddr) {
            self.closed += 1;
        }
    }

    fn framed_stun(tag: u8) -> Vec<u8> {
        let mut m = vec![0, 20, 0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[tag; 12]);
        m
    }

    fn poll_until(io: &mut UdpIo, h: &mut Recorder, done: impl Fn(&UdpIo) -> bool) {
        let start = Instant::now();
        while !done(io) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{:?}",
                io.tcp_stats()
            );
            io.poll(Some(Duration::from_millis(20)), h).unwrap();
        }
    }

    /// The one open connection's index and generation.
    fn only_conn(io: &UdpIo) -> (u16, u16) {
        let tcp = io.tcp.as_ref().unwrap();
        let idx = tcp.conns.iter().position(Option::is_some).unwrap();
        (idx as u16, tcp.conns[idx].as_ref().unwrap().gen)
    }

    #[test]
    fn user_data_round_trips_and_never_looks_like_udp() {
        for op in [Op::Accept, Op::Recv, Op::Send, Op::Connect] {
            let ud = user_data(op, 0xffff, 0xffff);
            assert!(is_uring_op(ud));
            assert_eq!(decode(ud), Some((op, 0xffff, 0xffff)));
            assert_eq!(ud & (1 << 32 | 1 << 33), 0, "UDP send and receive bits");
        }
        assert!(!is_uring_op(UD_CANCEL));
    }

    /// Completions of a closed connection's generation that arrive when its index serves
    /// another connection are counted and ignored: no bytes, no frames, no state change.
    #[test]
    fn a_late_completion_after_close_is_ignored() {
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), BackendChoice::IoUring).unwrap();
        let addr = io
            .listen_tcp("127.0.0.1:0".parse().unwrap(), TcpLimits::default())
            .unwrap();
        let mut h = Recorder::default();
        let a = TcpStream::connect(addr).unwrap();
        (&a).write_all(&framed_stun(1)).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 1);
        let (idx, old) = only_conn(&io);
        a.shutdown(Shutdown::Both).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().open == 0);
        let mut b = TcpStream::connect(addr).unwrap();
        b.write_all(&framed_stun(2)).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 2);
        let (b_idx, gen) = only_conn(&io);
        assert_eq!(b_idx, idx, "the index serves b now");
        assert_ne!(gen, old);
        let tcp = io.tcp.as_mut().unwrap();
        for (op, result) in [
            (Op::Recv, 100),
            (Op::Send, 50),
            (Op::Connect, 0),
            (Op::Recv, 0),
        ] {
            let cqe = Cqe {
                user_data: user_data(op, old, idx),
                result,
                flags: 0,
            };
            assert_eq!(tcp.on_uring_cqe(cqe, &mut h, &mut io.sendq), 0);
        }
        assert_eq!(tcp.late_completions(), 4);
        let conn = tcp.conns[usize::from(idx)].as_ref().unwrap();
        assert!(conn.ops.recv, "b's own RECV is still in flight");
        assert_eq!(conn.deframer.buffered(), 0, "no phantom bytes");
        // b carries on as if nothing happened.
        b.write_all(&framed_stun(3)).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 3);
        assert_eq!(h.got.last().unwrap()[..], framed_stun(3)[2..]);
        let s = io.tcp_stats();
        assert_eq!((s.open, s.closed_by_peer), (1, 1), "{s:?}");
        assert_eq!(h.closed, 1, "a's close only");
    }

    /// Multishot ACCEPT is what this kernel does; one that refuses it (EINVAL, a completion
    /// without F_MORE) gets single ACCEPTs re-armed after each, and connections still come in.
    #[test]
    fn accepts_fall_back_to_single_shot_on_einval() {
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), BackendChoice::IoUring).unwrap();
        let addr = io
            .listen_tcp("127.0.0.1:0".parse().unwrap(), TcpLimits::default())
            .unwrap();
        let mut h = Recorder::default();
        let first = TcpStream::connect(addr).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().accepted == 1);
        let u = io.tcp.as_ref().unwrap().uring.as_ref().unwrap();
        assert!(u.multishot && u.accept_armed, "multishot, and still armed");
        // As an older kernel would answer a multishot ACCEPT. (The real one stays in flight;
        // its connections are accepted all the same.)
        let refused = Cqe {
            user_data: user_data(Op::Accept, 0, 0),
            result: -libc::EINVAL,
            flags: 0,
        };
        let tcp = io.tcp.as_mut().unwrap();
        tcp.on_uring_cqe(refused, &mut h, &mut io.sendq);
        let u = tcp.uring.as_ref().unwrap();
        assert!(!u.multishot && !u.accept_armed);
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        assert!(
            io.tcp
                .as_ref()
                .unwrap()
                .uring
                .as_ref()
                .unwrap()
                .accept_armed
        );
        let others: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().accepted == 6);
        assert_eq!(io.tcp_stats().open, 6);
        drop((first, others));
    }

    /// A connection closed by the core while its RECV is in flight keeps its index (and
    /// buffer, and fd) until the cancelled RECV completed; then the index serves again.
    #[test]
    fn a_closed_connection_holds_its_index_until_its_recv_completed() {
        let limits = TcpLimits {
            max_connections: 1,
            stun_timeout: Duration::from_millis(200),
            ..TcpLimits::default()
        };
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), BackendChoice::IoUring).unwrap();
        let addr = io
            .listen_tcp("127.0.0.1:0".parse().unwrap(), limits)
            .unwrap();
        let mut h = Recorder::default();
        let _silent = TcpStream::connect(addr).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().accepted == 1);
        let (idx, _) = only_conn(&io);
        assert!(
            io.tcp.as_ref().unwrap().conns[usize::from(idx)]
                .as_ref()
                .unwrap()
                .ops
                .recv
        );
        // The STUN timeout closes it from the core's side, RECV in flight.
        poll_until(&mut io, &mut h, |io| io.tcp_stats().stun_timeouts == 1);
        let tcp = io.tcp.as_ref().unwrap();
        let held = !tcp.uring.as_ref().unwrap().slot_free(usize::from(idx));
        assert_eq!(tcp.free_index().is_none(), held);
        poll_until(&mut io, &mut h, |io| {
            io.tcp.as_ref().unwrap().free_index() == Some(usize::from(idx))
        });
        let mut next = TcpStream::connect(addr).unwrap();
        next.write_all(&framed_stun(4)).unwrap();
        poll_until(&mut io, &mut h, |io| io.tcp_stats().rx_frames == 1);
        assert_eq!(io.tcp_stats().rejected_full, 0);
        assert_eq!(io.tcp.as_ref().unwrap().late_completions(), 0);
    }
}
