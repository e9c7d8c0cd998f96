//! The send queue: a pool of `MAX_DATAGRAM` slots, flushed by sendmmsg or SENDMSG SQEs.
//!
//! Every send names one of the core's sockets ([`SocketId`]); the queue keeps a table of their
//! fds and families. A slot is free (on the free list), queued, or (io_uring only) owned by the
//! kernel from its SQE until its completion. The Mmsg backend copies queued slots out with `sendmmsg` at flush
//! time and frees them at once (one `sendmmsg` batch per socket, in push order within each
//! socket); the io_uring backend pushes one SENDMSG SQE per slot at `push`
//! time (no syscall, the socket's fd in the SQE), submits them all at flush time, and frees each
//! slot on its completion.
//!
//! When the pool is empty, `push_with` flushes synchronously: sendmmsg, or submit + reap the
//! send completions (receive completions met on the way are stashed for the next `poll`).
//!
//! Sends use `MSG_DONTWAIT`: if the socket send buffer is full, the datagram is dropped and
//! counted in `tx_dropped` rather than blocking the core (real-time media prefers loss). With
//! io_uring this also makes every SENDMSG complete inline at submit, so slots come back quickly.

use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::mem::Region;
use super::residence::{Residence, ResidenceHistogram};
use super::tcp::TcpTx;
use super::uring::Ring;
use super::{sockaddr, SocketId, MAX_DATAGRAM, SOCKET_SLOTS};
use crate::media::TxSink;

/// Slots in the send pool (1 MiB of buffers). A fan-out larger than this within one `poll`
/// flushes synchronously, which is also the natural batching point.
pub(super) const SEND_SLOTS: usize = 512;

/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// Per-slot kernel-facing metadata. Its address never changes (boxed slice), so the pointers in
/// `hdr` stay valid.
#[repr(C)]
pub(super) struct Slot {
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    pub(super) hdr: libc::msghdr,
}

/// The fd and family of an open socket (`fd < 0`: no socket with that id).
#[derive(Debug, Clone, Copy)]
struct SockRef {
    fd: RawFd,
    v6: bool,
}

const NO_SOCKET: SockRef = SockRef { fd: -1, v6: false };

/// Mmsg: one queued send. `seq` is its position at push time, so sorting by `(sock, seq)`
/// groups the queue per socket and keeps the order within each socket.
#[derive(Debug, Clone, Copy)]
struct Pending {
    sock: u16,
    seq: u16,
    slot: u16,
}

/// Send counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TxStats {
    pub(super) datagrams: u64,
    pub(super) errors: u64,
    pub(super) dropped: u64,
    pub(super) overflow_flushes: u64,
}

impl TxStats {
    /// Accounts for one send result (`res` is bytes sent or a negative errno).
    pub(super) fn record(&mut self, res: i32) {
        if res >= 0 {
            self.datagrams += 1;
        } else if matches!(-res, libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM) {
            self.dropped += 1;
        } else {
            // ECONNREFUSED (an ICMP port unreachable reported on the socket), EHOSTUNREACH, ...
            self.errors += 1;
        }
    }
}

/// Datagrams waiting to be sent by one media core. See the module docs for the slot life cycle.
pub struct SendQueue {
    /// io_uring: the core's ring (shared with the receive side, which reaches it through here).
    /// First field, so it is closed before the buffers below are unmapped.
    ring: Option<Ring>,
    /// Indexed by `SocketId.0`.
    socks: Box<[SockRef]>,
    bufs: Region,
    slots: Box<[Slot]>,
    free: Vec<u16>,
    /// Mmsg: queued sends, in order.
    pending: Vec<Pending>,
    /// Mmsg: `pending` holds sends on more than one socket.
    pending_mixed: bool,
    /// Mmsg: scratch headers for one `sendmmsg`.
    mmsg: Box<[libc::mmsghdr]>,
    tx: TxStats,
    /// Receive stamps of the datagrams handled since the last flush (see `residence.rs`).
    residence: Box<Residence>,
    /// The write side of the ICE-TCP connections, if the core listens for them: sends to a
    /// TCP [`SocketId`] are framed into its queues and written at flush.
    tcp: Option<TcpTx>,
}

// SAFETY: the raw pointers inside `slots` and `mmsg` point into `bufs` and `slots`, which this
// value owns; nothing in it is tied to the creating thread.
unsafe impl Send for SendQueue {}

impl SendQueue {
    /// A queue for the main socket `fd` (`v6`: its family is IPv6).
    pub(super) fn new(fd: RawFd, v6: bool, ring: Option<Ring>) -> io::Result<Self> {
        let bufs = Region::new(SEND_SLOTS * MAX_DATAGRAM)?;
        let mut slots: Box<[Slot]> = (0..SEND_SLOTS)
            // SAFETY: all-zero is a valid value for these C structs (null pointers, zero lengths).
            .map(|_| unsafe { std::mem::zeroed::<Slot>() })
            .collect();
        for (i, slot) in slots.iter_mut().enumerate() {
            // SAFETY: `i * MAX_DATAGRAM` is within the `SEND_SLOTS * MAX_DATAGRAM` region.
            slot.iov.iov_base = unsafe { bufs.ptr().add(i * MAX_DATAGRAM) }.cast();
            slot.hdr.msg_name = (&mut slot.addr as *mut libc::sockaddr_storage).cast();
            slot.hdr.msg_iov = &mut slot.iov;
            slot.hdr.msg_iovlen = 1;
        }
        let mmsg = (0..SEND_BATCH)
            // SAFETY: all-zero is a valid mmsghdr.
            .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
            .collect();
        let mut socks: Box<[SockRef]> = vec![NO_SOCKET; SOCKET_SLOTS].into_boxed_slice();
        socks[0] = SockRef { fd, v6 };
        Ok(Self {
            socks,
            bufs,
            slots,
            // Popped from the back: slot 0 first, so a light load touches few pages.
            free: (0..SEND_SLOTS as u16).rev().collect(),
            pending: Vec::with_capacity(SEND_SLOTS),
            pending_mixed: false,
            mmsg,
            ring,
            tx: TxStats::default(),
            residence: Residence::new(),
            tcp: None,
        })
    }

    /// Queues one datagram from the main socket, written by `fill` into a pooled
    /// [`MAX_DATAGRAM`] buffer; `fill` returns the length (0 = nothing to send). No heap
    /// allocation. If the pool is full, the queue flushes itself synchronously (sendmmsg, or
    /// submit) before taking a slot. A destination the socket's family cannot reach counts as a
    /// send error.
    pub fn push_with(&mut self, dst: SocketAddr, fill: impl FnOnce(&mut [u8]) -> usize) {
        self.push_with_on(SocketId::MAIN, dst, fill);
    }

    /// Like [`push_with`](Self::push_with), from `socket`. An id that is not open (never
    /// added, or removed) counts as a send error and `fill` is not called.
    pub fn push_with_on(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) {
        if let Some(idx) = socket.tcp_index() {
            match &mut self.tcp {
                Some(tcp) => tcp.push_with(idx, dst, fill, self.ring.as_mut()),
                None => self.tx.errors += 1,
            }
            return;
        }
        let Some(sock) = self
            .socks
            .get(usize::from(socket.0))
            .copied()
            .filter(|s| s.fd >= 0)
        else {
            self.tx.errors += 1;
            return;
        };
        let Some(slot) = self.acquire() else {
            self.tx.dropped += 1;
            return;
        };
        let i = usize::from(slot);
        let Some(namelen) = sockaddr::encode(dst, sock.v6, &mut self.slots[i].addr) else {
            self.free.push(slot);
            self.tx.errors += 1;
            return;
        };
        // SAFETY: the slot came off the free list, so neither the kernel nor another queued send
        // uses its buffer; the range lies inside `bufs`.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(self.bufs.ptr().add(i * MAX_DATAGRAM), MAX_DATAGRAM)
        };
        let len = fill(buf).min(MAX_DATAGRAM);
        if len == 0 {
            self.free.push(slot);
            return;
        }
        let meta = &mut self.slots[i];
        meta.iov.iov_len = len;
        meta.hdr.msg_namelen = namelen;
        match &mut self.ring {
            None => {
                let seq = self.pending.len() as u16;
                if self.pending.first().is_some_and(|p| p.sock != socket.0) {
                    self.pending_mixed = true;
                }
                self.pending.push(Pending {
                    sock: socket.0,
                    seq,
                    slot,
                });
            }
            Some(ring) => {
                if !ring.push_send(slot, &meta.hdr, sock.fd) {
                    self.free.push(slot);
                    self.tx.dropped += 1;
                }
            }
        }
    }

    /// Queues a copy of `data` (truncated to [`MAX_DATAGRAM`]) from the main socket.
    pub fn push(&mut self, dst: SocketAddr, data: &[u8]) {
        self.push_on(SocketId::MAIN, dst, data);
    }

    /// Queues a copy of `data` (truncated to [`MAX_DATAGRAM`]) from `socket`; see
    /// [`push_with_on`](Self::push_with_on).
    pub fn push_on(&mut self, socket: SocketId, dst: SocketAddr, data: &[u8]) {
        self.push_with_on(socket, dst, |buf| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            n
        });
    }

    /// Registers socket `idx` for sends.
    pub(super) fn set_socket(&mut self, idx: u16, fd: RawFd, v6: bool) {
        self.socks[usize::from(idx)] = SockRef { fd, v6 };
    }

    /// Forgets socket `idx`; later sends on it are errors. Flush first.
    pub(super) fn clear_socket(&mut self, idx: u16) {
        self.socks[usize::from(idx)] = NO_SOCKET;
    }

    /// The fd of socket `idx`, if open.
    pub(super) fn socket_fd(&self, idx: u16) -> Option<RawFd> {
        self.socks
            .get(usize::from(idx))
            .map(|s| s.fd)
            .filter(|&fd| fd >= 0)
    }

    /// io_uring: whether the SQ holds entries the kernel has not consumed.
    pub(super) fn has_unsubmitted(&mut self) -> bool {
        self.ring.as_mut().is_some_and(|r| r.has_unsubmitted())
    }

    /// Datagrams queued and not yet handed to the kernel.
    pub fn len(&self) -> usize {
        match &self.ring {
            None => self.pending.len(),
            Some(ring) => ring.unsubmitted_sends(),
        }
    }

    /// Whether nothing is waiting to be handed to the kernel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in the pool.
    pub fn capacity(&self) -> usize {
        SEND_SLOTS
    }

    /// Hands everything queued to the kernel (sendmmsg, or one submit). With io_uring, the
    /// send completions posted by the submit (MSG_DONTWAIT sends complete inline) are reaped
    /// right away, so slots and counters are current; other completions wait in the stash.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if let Some(tcp) = &mut self.tcp {
            tcp.flush(self.ring.as_mut());
        }
        match &mut self.ring {
            None => self.flush_mmsg(),
            Some(ring) => {
                if ring.unsubmitted_sends() > 0 || ring.has_unsubmitted() {
                    ring.submit()?;
                    self.reap(|_| false);
                }
            }
        }
        self.residence.flushed();
        Ok(())
    }

    /// The handler is done with a received datagram (stamped by the kernel at `stamp`): its
    /// residence is recorded at the next flush, which comes now if a batch's worth of sends is
    /// queued. Without that, a poll of 256 datagrams fanned out to many players would hold every
    /// copy until the last datagram's fan-out was written, adding milliseconds of latency to
    /// save a submit per 64 sends.
    pub(super) fn datagram_handled(&mut self, stamp: Option<u64>) {
        if let Some(stamp) = stamp {
            self.residence.note(stamp);
        }
        if self.len() >= SEND_BATCH {
            // An error here (EINTR, EBUSY) leaves the sends queued; the poll's own flush
            // retries and reports it.
            let _ = self.flush();
        }
    }

    /// Residence times of the datagrams received so far: kernel receive stamp to the flush of
    /// the sends they caused (see [`ResidenceHistogram`]).
    pub fn residence(&self) -> &ResidenceHistogram {
        self.residence.histogram()
    }

    pub(super) fn ring_ref(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    pub(super) fn ring_mut(&mut self) -> Option<&mut Ring> {
        self.ring.as_mut()
    }

    /// Consumes completions: sends free their slot here, everything else goes to `other`
    /// (which returns false to have it stashed for later).
    pub(super) fn reap(&mut self, other: impl FnMut(super::uring::Cqe) -> bool) {
        let Self { ring, free, tx, .. } = self;
        if let Some(ring) = ring {
            ring.reap(
                |slot, res| {
                    tx.record(res);
                    free.push(slot);
                },
                other,
            );
        }
    }

    pub(super) fn set_tcp(&mut self, tcp: TcpTx) {
        self.tcp = Some(tcp);
    }

    pub(super) fn tcp_mut(&mut self) -> Option<&mut TcpTx> {
        self.tcp.as_mut()
    }

    /// The TCP write side with the ring its SENDs go through (io_uring).
    pub(super) fn tcp_and_ring(&mut self) -> (Option<&mut TcpTx>, Option<&mut Ring>) {
        (self.tcp.as_mut(), self.ring.as_mut())
    }

    /// Keeps the TCP write queues allocated forever (the kernel may still read some).
    pub(super) fn leak_tcp(&mut self) {
        std::mem::forget(self.tcp.take());
    }

    /// ICE-TCP frames queued, dropped and misdirected.
    pub(super) fn tcp_counts(&self) -> (u64, u64, u64) {
        self.tcp
            .as_ref()
            .map_or((0, 0, 0), |t| (t.frames, t.dropped, t.misdirected))
    }

    pub(super) fn tx_stats(&self) -> TxStats {
        self.tx
    }

    /// Keeps the slot buffers mapped forever (the kernel may still own some).
    pub(super) fn leak(&mut self) {
        self.bufs.leak();
        std::mem::forget(std::mem::take(&mut self.slots));
    }

    fn acquire(&mut self) -> Option<u16> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        self.tx.overflow_flushes += 1;
        if self.ring.is_none() {
            self.flush_mmsg();
            self.residence.flushed();
            return self.free.pop();
        }
        // io_uring: submit the queued SQEs and wait for send completions. They arrive promptly:
        // MSG_DONTWAIT sends complete inline at submit. Bounded, in case the kernel misbehaves.
        for _ in 0..64 {
            let Some(ring) = &mut self.ring else { break };
            let want = usize::from(ring.sends_in_flight() > 0);
            if ring.submit_and_wait(want).is_err() {
                break;
            }
            self.residence.flushed();
            self.reap(|_| false);
            if let Some(slot) = self.free.pop() {
                return Some(slot);
            }
            let Some(ring) = &self.ring else { break };
            if ring.sends_in_flight() == 0 || ring.stash_full() {
                break;
            }
        }
        None
    }

    fn flush_mmsg(&mut self) {
        if self.pending_mixed {
            // In place, no allocation; `seq` keeps the push order within each socket.
            self.pending.sort_unstable_by_key(|p| (p.sock, p.seq));
            self.pending_mixed = false;
        }
        let mut start = 0;
        while start < self.pending.len() {
            let sock = self.pending[start].sock;
            let len = self.pending[start..]
                .iter()
                .position(|p| p.sock != sock)
                .unwrap_or(self.pending.len() - start);
            self.send_group(sock, start, start + len);
            start += len;
        }
        for p in &self.pending {
            self.free.push(p.slot);
        }
        self.pending.clear();
    }

    /// Sends `pending[start..end]`, all on socket `sock`, with sendmmsg.
    fn send_group(&mut self, sock: u16, start: usize, end: usize) {
        let Some(fd) = self.socket_fd(sock) else {
            // Unreachable: sockets are removed only after a flush. Counted, not sent.
            self.tx.errors += (end - start) as u64;
            return;
        };
        let mut i = start;
        while i < end {
            let n = (end - i).min(SEND_BATCH);
            for (m, p) in self.mmsg.iter_mut().zip(&self.pending[i..i + n]) {
                m.msg_hdr = self.slots[usize::from(p.slot)].hdr;
                m.msg_len = 0;
            }
            // SAFETY: `mmsg[..n]` hold headers whose name/iov pointers point into `slots` and
            // `bufs`, all alive and not mutated during the call.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.mmsg.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent > 0 {
                self.tx.datagrams += sent as u64;
                i += sent as usize;
                continue;
            }
            match super::errno() {
                libc::EINTR => {}
                libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM | 0 => {
                    // Socket send buffer full: drop the rest for this socket (see module docs).
                    self.tx.dropped += (end - i) as u64;
                    break;
                }
                _ => {
                    // The first datagram failed (ECONNREFUSED, EHOSTUNREACH, ..): skip it.
                    self.tx.errors += 1;
                    i += 1;
                }
            }
        }
    }
}

impl TxSink for SendQueue {
    fn push_with_on(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) {
        SendQueue::push_with_on(self, socket, dst, fill);
    }

    fn push_on(&mut self, socket: SocketId, dst: SocketAddr, data: &[u8]) {
        SendQueue::push_on(self, socket, dst, data);
    }
}

impl fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendQueue")
            .field("queued", &self.len())
            .field("free", &self.free.len())
            .field("io_uring", &self.ring.is_some())
            .finish_non_exhaustive()
    }
}

const _: () = assert!(SEND_SLOTS <= u16::MAX as usize && size_of::<Slot>() > 0);
const _: () = assert!(SOCKET_SLOTS <= u16::MAX as usize);
