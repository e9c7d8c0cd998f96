//! The send queue: a pool of `MAX_DATAGRAM` slots, flushed by sendmmsg or SENDMSG SQEs.
//!
//! Every send names one of the core's sockets ([`SocketId`]); the queue keeps a table of their
//! fds and families. A slot is free (on the free list), queued, or (io_uring only) owned by the
//! kernel from its SQE until its completion. Both backends queue sends in `pending` and hand
//! them to the kernel at flush: the Mmsg backend with `sendmmsg` (one batch per socket, in push
//! order within each socket), freeing the slots at once; the io_uring backend with one SENDMSG
//! SQE per send (the socket's fd in the SQE), all submitted together, freeing each send's slots
//! on its completion.
//!
//! UDP GSO (`UDP_SEGMENT`, on by default, [`SendQueue::set_gso`]): a burst's sends to one
//! destination (same socket, same peer) that are of equal size (the last may be shorter) leave
//! as one send carrying a `UDP_SEGMENT` control message; the kernel cuts it into datagrams
//! again, which costs it about half of what separate sends do. The queue is sorted by (socket,
//! destination, push order) at flush, so a player's packets of one frame, queued between the
//! other players' copies, meet (see [`gso_segments`] for the rules). Their slots are not
//! adjacent, so a GSO send names each slot in an iovec of its own (every one but the last
//! exactly the segment size, as the kernel cuts at that boundary). Sends are held until the
//! received packet that ends a frame (the RTP marker bit) has been handled, or the end of the
//! poll, never longer. With GSO the media core also holds a frame's plain packets and writes them
//! player by player (burst order, `MediaCore::set_burst_order`), asking for a submit
//! ([`TxSink::submit`]) every few players: each player's datagrams then lie back to back and
//! leave while they are in the cache, and the sort finds them already grouped.
//!
//! A socket whose GSO send the kernel refuses (EIO, EINVAL: no checksum offload, a route it
//! cannot segment for) is marked non-GSO and the packets are sent one by one (counted in
//! `gso_fallbacks`). A socket whose kernel lacks `UDP_SEGMENT` (before 4.18) is
//! never sent GSO: older kernels would ignore the control message and send one big datagram.
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

/// Slots in the send pool (8 MiB of buffers, touched only as far as the load reaches). Room
/// for one frame of ~8 packets to 500 players, so that GSO sees the whole frame; a fan-out
/// larger than this within one `poll` flushes synchronously.
pub(super) const SEND_SLOTS: usize = 4096;

/// Datagrams per `sendmmsg` call, and sends queued before a flush without GSO.
const SEND_BATCH: usize = 64;

/// Segments per GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 before 6.4, 128 after).
pub(super) const GSO_MAX_SEGMENTS: usize = 64;

/// Bytes per GSO send: below the 65,507 a UDP/IPv4 datagram may carry, with room to spare.
pub(super) const GSO_MAX_BYTES: usize = 65_000;

/// With GSO, sends queued before a flush even if no frame has ended: the pool should not run
/// dry in the middle of a fan-out (that flush would count as an overflow).
const GSO_HOLD: usize = SEND_SLOTS - SEND_SLOTS / 4;

/// The end of a chain of slots.
const NO_SLOT: u16 = u16::MAX;

/// `SOL_UDP`'s `UDP_SEGMENT` option (linux/udp.h), which libc does not define.
const UDP_SEGMENT: libc::c_int = 103;

/// u64 words of one slot's control area: `CMSG_SPACE(sizeof(u16))` (24 bytes on 64-bit).
const CONTROL_WORDS: usize = 4;

/// Per-slot kernel-facing metadata. Its address never changes (boxed slice), so the pointers in
/// `hdr` stay valid.
#[repr(C)]
pub(super) struct Slot {
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    pub(super) hdr: libc::msghdr,
    /// A `UDP_SEGMENT` control message, used when this slot leads a GSO send. Kept here, not in
    /// a scratch area, because io_uring reads it when the send runs, not when it is submitted.
    control: [u64; CONTROL_WORDS],
    /// The socket index the datagram leaves from.
    sock: u16,
    /// io_uring: the next slot of the send this one leads or belongs to (`NO_SLOT`: the last).
    next: u16,
    /// io_uring: datagrams in the send this slot leads (1 without GSO).
    segments: u16,
}

/// The fd and family of an open socket (`fd < 0`: no socket with that id).
#[derive(Debug, Clone, Copy)]
struct SockRef {
    fd: RawFd,
    v6: bool,
    /// The kernel takes `UDP_SEGMENT` sends on it (probed when added, cleared on refusal).
    gso: bool,
}

const NO_SOCKET: SockRef = SockRef {
    fd: -1,
    v6: false,
    gso: false,
};

/// One queued send. Sorting by `(key, seq)` groups the queue per socket (and, with GSO, per
/// destination) and keeps the push order within each group. `seq` is the position at push.
#[derive(Debug, Clone, Copy)]
struct Pending {
    key: u128,
    seq: u16,
    slot: u16,
}

/// Send counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TxStats {
    pub(super) datagrams: u64,
    /// Sends the kernel accepted, each of one datagram or (GSO) several.
    pub(super) sends: u64,
    pub(super) errors: u64,
    pub(super) dropped: u64,
    pub(super) overflow_flushes: u64,
    /// Sends that carried more than one datagram (UDP_SEGMENT).
    pub(super) gso_sends: u64,
    /// Sockets whose GSO send the kernel refused; they send one datagram at a time since.
    pub(super) gso_fallbacks: u64,
}

impl TxStats {
    /// Accounts for one send of `datagrams` datagrams (`res` is bytes sent or a negative errno).
    pub(super) fn record(&mut self, res: i32, datagrams: u64) {
        if res >= 0 {
            self.datagrams += datagrams;
            self.sends += 1;
            if datagrams > 1 {
                self.gso_sends += 1;
            }
        } else if matches!(-res, libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM) {
            self.dropped += datagrams;
        } else {
            // ECONNREFUSED (an ICMP port unreachable reported on the socket), EHOSTUNREACH, ...
            self.errors += datagrams;
        }
    }
}

/// Whether a failed GSO send means the kernel cannot segment for this socket (rather than a
/// problem of the destination): then its datagrams go out one by one.
fn gso_refused(errno: i32) -> bool {
    matches!(errno, libc::EIO | libc::EINVAL)
}

/// How many of the datagrams of `lens`, queued in this order to one destination, leave in the
/// first send: as many as GSO allows, all of the first one's size except the last, which may
/// be shorter; at most [`GSO_MAX_SEGMENTS`] and [`GSO_MAX_BYTES`] in all. Always at least one
/// (if `lens` is not empty).
pub(super) fn gso_segments(mut lens: impl Iterator<Item = usize>) -> usize {
    let Some(size) = lens.next() else {
        return 0;
    };
    let (mut n, mut total) = (1, size);
    for len in lens {
        if n == GSO_MAX_SEGMENTS || len > size || total + len > GSO_MAX_BYTES {
            break;
        }
        n += 1;
        total += len;
        if len < size {
            break;
        }
    }
    n
}

/// Whether `datagram` (as received) is an RTP packet with the marker bit set: the last packet
/// of a video frame, after which a burst's sends are flushed. RTCP (RFC 5761: PT 64..=95 with
/// the marker bit) is not.
pub(super) fn ends_frame(datagram: &[u8]) -> bool {
    datagram.len() >= 12
        && datagram[0] >> 6 == 2
        && datagram[1] & 0x80 != 0
        && !(64..96).contains(&(datagram[1] & 0x7f))
}

/// The sort key of a send: the socket, then (with GSO) the destination. IPv6 addresses are
/// folded, so two peers may share a key; sends are grouped only if their addresses are equal.
fn sort_key(sock: u16, dst: Option<SocketAddr>) -> u128 {
    let sock = u128::from(sock) << 112;
    match dst {
        None => sock,
        Some(SocketAddr::V4(a)) => {
            sock | u128::from(u32::from(*a.ip())) << 16 | u128::from(a.port())
        }
        Some(SocketAddr::V6(a)) => {
            let ip = u128::from(*a.ip());
            let folded = (ip ^ (ip >> 96)) & ((1 << 96) - 1);
            sock | folded << 16 | u128::from(a.port())
        }
    }
}

/// Whether the kernel takes `UDP_SEGMENT` on socket `fd` (Linux 4.18+).
fn probe_gso(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
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
    /// Queued sends, in push order until a flush sorts them.
    pending: Vec<Pending>,
    /// `pending` holds more than one key: it must be sorted before sending.
    pending_mixed: bool,
    /// Mmsg: scratch headers for one `sendmmsg`, and the datagrams each carries.
    mmsg: Box<[libc::mmsghdr]>,
    mmsg_segments: Box<[u16]>,
    /// The iovecs of the GSO sends of one flush (each names its segments' slots in order).
    /// io_uring copies them at submit, so they are reused by the next flush.
    gso_iovs: Box<[libc::iovec]>,
    gso_iovs_used: usize,
    /// GSO sends allowed (`media.gso`).
    gso: bool,
    /// io_uring: leading slots of GSO sends the kernel refused, to be sent one by one.
    retry: Vec<u16>,
    tx: TxStats,
    /// Receive stamps of the datagrams handled since the last flush (see `residence.rs`).
    residence: Box<Residence>,
    /// The write side of the ICE-TCP connections, if the core listens for them: sends to a
    /// TCP [`SocketId`] are framed into its queues and written at flush.
    tcp: Option<TcpTx>,
}

// SAFETY: the raw pointers inside `slots`, `mmsg` and `gso_iovs` point into `bufs`, `slots` and
// `gso_iovs`, which this value owns; nothing in it is tied to the creating thread.
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
            slot.next = NO_SLOT;
            slot.segments = 1;
            // The control message's header never changes; only its u16 (the segment size) does.
            let cmsg = libc::cmsghdr {
                // SAFETY: CMSG_LEN is pure arithmetic.
                cmsg_len: unsafe { libc::CMSG_LEN(size_of::<u16>() as u32) } as _,
                cmsg_level: libc::SOL_UDP,
                cmsg_type: UDP_SEGMENT,
            };
            // SAFETY: the control area is u64-aligned and larger than a cmsghdr.
            unsafe {
                slot.control
                    .as_mut_ptr()
                    .cast::<libc::cmsghdr>()
                    .write(cmsg)
            };
        }
        let mmsg = (0..SEND_BATCH)
            // SAFETY: all-zero is a valid mmsghdr.
            .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
            .collect();
        let gso_iovs = (0..SEND_SLOTS)
            .map(|_| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            })
            .collect();
        let mut socks: Box<[SockRef]> = vec![NO_SOCKET; SOCKET_SLOTS].into_boxed_slice();
        socks[0] = SockRef {
            fd,
            v6,
            gso: probe_gso(fd),
        };
        Ok(Self {
            socks,
            bufs,
            slots,
            // Popped from the back: slot 0 first, so a light load touches few pages.
            free: (0..SEND_SLOTS as u16).rev().collect(),
            pending: Vec::with_capacity(SEND_SLOTS),
            pending_mixed: false,
            mmsg,
            mmsg_segments: vec![0; SEND_BATCH].into_boxed_slice(),
            gso_iovs,
            gso_iovs_used: 0,
            gso: true,
            retry: Vec::with_capacity(SEND_SLOTS),
            ring,
            tx: TxStats::default(),
            residence: Residence::new(),
            tcp: None,
        })
    }

    /// Turns UDP GSO on or off (on by default). Flush first.
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    /// Whether GSO sends are allowed.
    pub fn gso(&self) -> bool {
        self.gso
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
        meta.sock = socket.0;
        let key = sort_key(socket.0, (self.gso && sock.gso).then_some(dst));
        self.queue(key, slot);
    }

    fn queue(&mut self, key: u128, slot: u16) {
        if self.pending.first().is_some_and(|p| p.key != key) {
            self.pending_mixed = true;
        }
        self.pending.push(Pending {
            key,
            seq: self.pending.len() as u16,
            slot,
        });
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
        self.socks[usize::from(idx)] = SockRef {
            fd,
            v6,
            gso: probe_gso(fd),
        };
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
        self.pending.len() + self.ring.as_ref().map_or(0, |r| r.unsubmitted_sends())
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
        let result = self.hand_over();
        self.residence.flushed();
        result
    }

    /// What [`flush`](Self::flush) does but end the residence of the datagrams handled since
    /// the last flush: a burst's fan-out submits every few players (see [`TxSink::submit`]),
    /// and its packets' residence ends with their last player's sends, at the flush after the
    /// burst ends.
    fn hand_over(&mut self) -> io::Result<()> {
        if let Some(tcp) = &mut self.tcp {
            tcp.flush(self.ring.as_mut());
        }
        self.send_pending()
    }

    /// Sends `pending`; io_uring: submits, reaps, and sends one by one what a refused GSO send
    /// held.
    fn send_pending(&mut self) -> io::Result<()> {
        if self.ring.is_none() {
            self.flush_mmsg();
            return Ok(());
        }
        self.push_sqes();
        if let Some(ring) = &mut self.ring {
            if ring.unsubmitted_sends() > 0 || ring.has_unsubmitted() {
                ring.submit()?;
                self.reap(|_| false);
            }
        }
        if !self.retry.is_empty() {
            self.requeue_refused();
            self.push_sqes();
            if let Some(ring) = &mut self.ring {
                ring.submit()?;
            }
            self.reap(|_| false);
        }
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

    /// Like [`datagram_handled`](Self::datagram_handled) for a datagram received on UDP, whose
    /// bytes say whether it ended a frame. With GSO the sends are held until then (or until
    /// the pool is three quarters full, or the poll ends), so each player's packets of the
    /// frame leave together; the frame's first packets wait for its last one's fan-out.
    pub(super) fn udp_datagram_handled(&mut self, stamp: Option<u64>, datagram: &[u8]) {
        if !self.gso {
            self.datagram_handled(stamp);
            return;
        }
        if let Some(stamp) = stamp {
            self.residence.note(stamp);
        }
        if (ends_frame(datagram) && !self.is_empty()) || self.len() >= GSO_HOLD {
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

    /// Consumes completions: sends free their slots here (a refused GSO send's wait in
    /// `retry`), everything else goes to `other` (which returns false to have it stashed for
    /// later).
    pub(super) fn reap(&mut self, other: impl FnMut(super::uring::Cqe) -> bool) {
        let Self {
            ring,
            free,
            tx,
            slots,
            socks,
            retry,
            ..
        } = self;
        if let Some(ring) = ring {
            ring.reap(
                |lead, res| {
                    let Some(first) = slots.get(usize::from(lead)) else {
                        return;
                    };
                    let segments = first.segments;
                    if segments > 1 && gso_refused(-res) {
                        let sock = &mut socks[usize::from(first.sock)];
                        if sock.gso {
                            sock.gso = false;
                            tx.gso_fallbacks += 1;
                        }
                        retry.push(lead);
                        return;
                    }
                    tx.record(res, u64::from(segments));
                    let mut slot = lead;
                    while slot != NO_SLOT {
                        free.push(slot);
                        slot = std::mem::replace(&mut slots[usize::from(slot)].next, NO_SLOT);
                    }
                },
                other,
            );
        }
    }

    /// io_uring: queues the datagrams of refused GSO sends again, one send each (their socket
    /// is no longer GSO), in their order.
    fn requeue_refused(&mut self) {
        let mut k = 0;
        while k < self.retry.len() {
            let mut slot = self.retry[k];
            while slot != NO_SLOT {
                let meta = &mut self.slots[usize::from(slot)];
                let next = std::mem::replace(&mut meta.next, NO_SLOT);
                let key = sort_key(meta.sock, None);
                self.queue(key, slot);
                slot = next;
            }
            k += 1;
        }
        self.retry.clear();
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
        std::mem::forget(std::mem::take(&mut self.gso_iovs));
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
        // io_uring: push and submit the queued sends and wait for their completions. They
        // arrive promptly: MSG_DONTWAIT sends complete inline at submit. Bounded, in case the
        // kernel misbehaves.
        self.push_sqes();
        for _ in 0..64 {
            let Some(ring) = &mut self.ring else { break };
            let want = usize::from(ring.sends_in_flight() > 0);
            if ring.submit_and_wait(want).is_err() {
                break;
            }
            self.residence.flushed();
            self.reap(|_| false);
            if !self.retry.is_empty() {
                self.requeue_refused();
                self.push_sqes();
            }
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

    /// Sorts `pending` by key (socket, then destination with GSO), keeping the push order
    /// within each key.
    fn sort_pending(&mut self) {
        if self.pending_mixed {
            // In place, no allocation; `seq` keeps the push order within each key.
            self.pending.sort_unstable_by_key(|p| (p.key, p.seq));
            self.pending_mixed = false;
        }
    }

    /// How many sends from `pending[start..end]` (sorted) leave as one: 1, or with GSO the
    /// following datagrams to the same destination that [`gso_segments`] admits.
    fn group_len(&self, start: usize, end: usize) -> usize {
        let lead = &self.slots[usize::from(self.pending[start].slot)];
        if !self.gso || !self.socks[usize::from(lead.sock)].gso {
            return 1;
        }
        let key = self.pending[start].key;
        let name = sockaddr::storage_bytes(&lead.addr, lead.hdr.msg_namelen);
        let slots = &self.slots;
        gso_segments(
            self.pending[start..end]
                .iter()
                .map(|p| &slots[usize::from(p.slot)])
                .enumerate()
                .take_while(|&(k, s)| {
                    k == 0
                        || (self.pending[start + k].key == key
                            && s.sock == lead.sock
                            && sockaddr::storage_bytes(&s.addr, s.hdr.msg_namelen) == name)
                })
                .map(|(_, s)| s.iov.iov_len),
        )
    }

    /// Prepares the header of `pending[start..start + n]`'s send in its first slot: a plain
    /// one, or (n > 1) one whose iovecs name the `n` slots, with the `UDP_SEGMENT` message.
    /// io_uring: chains the slots, so the completion frees them all. Returns the first slot.
    fn prepare(&mut self, start: usize, n: usize) -> u16 {
        let lead = self.pending[start].slot;
        let li = usize::from(lead);
        if n == 1 {
            let meta = &mut self.slots[li];
            meta.hdr.msg_iov = &mut meta.iov;
            meta.hdr.msg_iovlen = 1;
            meta.hdr.msg_control = std::ptr::null_mut();
            meta.hdr.msg_controllen = 0;
            meta.segments = 1;
            meta.next = NO_SLOT;
            return lead;
        }
        let base = self.gso_iovs_used;
        self.gso_iovs_used += n;
        for k in 0..n {
            let slot = self.pending[start + k].slot;
            self.gso_iovs[base + k] = self.slots[usize::from(slot)].iov;
            self.slots[usize::from(slot)].next = match k + 1 < n {
                true => self.pending[start + k + 1].slot,
                false => NO_SLOT,
            };
        }
        let size = self.slots[li].iov.iov_len as u16;
        // SAFETY: `base + n <= SEND_SLOTS`: a flush prepares each queued slot once and resets
        // the count (see `flush_mmsg` and `push_sqes`).
        let iovs = unsafe { self.gso_iovs.as_mut_ptr().add(base) };
        let meta = &mut self.slots[li];
        meta.segments = n as u16;
        // SAFETY: the data of the control message follows its (u64-aligned) cmsghdr inside
        // `control`; CMSG_DATA only computes that address.
        unsafe {
            let cmsg = meta.control.as_mut_ptr().cast::<libc::cmsghdr>();
            libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(size);
        }
        meta.hdr.msg_iov = iovs;
        meta.hdr.msg_iovlen = n;
        meta.hdr.msg_control = meta.control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is pure arithmetic.
        meta.hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
        lead
    }

    /// io_uring: turns `pending` into SENDMSG SQEs (grouped for GSO), in order per socket.
    fn push_sqes(&mut self) {
        if self.pending.is_empty() || self.ring.is_none() {
            return;
        }
        if self.gso {
            self.sort_pending();
        }
        // The iovecs of earlier GSO sends were copied by the kernel when it consumed their SQEs
        // (IORING_FEAT_SUBMIT_STABLE); any still in the SQ are submitted first.
        if self.has_unsubmitted() {
            if let Some(ring) = &mut self.ring {
                let _ = ring.submit();
            }
        }
        if !self.has_unsubmitted() {
            self.gso_iovs_used = 0;
        }
        let end = self.pending.len();
        let mut i = 0;
        while i < end {
            let n = if self.gso_iovs_used + end - i > SEND_SLOTS {
                1 // unreachable: a flush's sends fit in the iovec table
            } else {
                self.group_len(i, end)
            };
            let lead = self.prepare(i, n);
            let fd = self
                .socks
                .get(usize::from(self.slots[usize::from(lead)].sock))
                .map_or(-1, |s| s.fd);
            let pushed = fd >= 0
                && self.ring.as_mut().is_some_and(|ring| {
                    ring.push_send(lead, &self.slots[usize::from(lead)].hdr, fd)
                });
            if !pushed {
                // A socket removed with sends queued (never: removal flushes first), or an SQ
                // that stayed full after a submit.
                for p in &self.pending[i..i + n] {
                    self.slots[usize::from(p.slot)].next = NO_SLOT;
                    self.free.push(p.slot);
                }
                match fd >= 0 {
                    true => self.tx.dropped += n as u64,
                    false => self.tx.errors += n as u64,
                }
            }
            i += n;
        }
        self.pending.clear();
        self.pending_mixed = false;
    }

    fn flush_mmsg(&mut self) {
        self.sort_pending();
        let mut start = 0;
        while start < self.pending.len() {
            let sock = self.slots[usize::from(self.pending[start].slot)].sock;
            let len = self.pending[start..]
                .iter()
                .position(|p| self.slots[usize::from(p.slot)].sock != sock)
                .unwrap_or(self.pending.len() - start);
            self.send_group(sock, start, start + len);
            start += len;
        }
        for p in &self.pending {
            self.free.push(p.slot);
        }
        self.pending.clear();
    }

    /// Sends `pending[start..end]`, all on socket `sock`, with sendmmsg: one entry per send
    /// (a GSO send carries several datagrams).
    fn send_group(&mut self, sock: u16, start: usize, end: usize) {
        let Some(fd) = self.socket_fd(sock) else {
            // Unreachable: sockets are removed only after a flush. Counted, not sent.
            self.tx.errors += (end - start) as u64;
            return;
        };
        let mut i = start;
        while i < end {
            // One batch: up to SEND_BATCH sends from pending[i..end].
            self.gso_iovs_used = 0;
            let mut entries = 0;
            let mut j = i;
            while entries < SEND_BATCH && j < end {
                let n = self.group_len(j, end);
                let lead = self.prepare(j, n);
                let m = &mut self.mmsg[entries];
                m.msg_hdr = self.slots[usize::from(lead)].hdr;
                m.msg_len = 0;
                self.mmsg_segments[entries] = n as u16;
                entries += 1;
                j += n;
            }
            // SAFETY: `mmsg[..entries]` hold headers whose name, iov and control pointers
            // point into `slots`, `gso_iovs` and `bufs`, all alive and not mutated during the
            // call.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.mmsg.as_mut_ptr(),
                    entries as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent > 0 {
                for &n in &self.mmsg_segments[..sent as usize] {
                    self.tx.record(0, u64::from(n));
                    i += usize::from(n);
                }
                continue;
            }
            let first = usize::from(self.mmsg_segments[0]);
            match super::errno() {
                libc::EINTR => {}
                libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM | 0 => {
                    // Socket send buffer full: drop the rest for this socket (see module docs).
                    self.tx.dropped += (end - i) as u64;
                    break;
                }
                e if first > 1 && gso_refused(e) => {
                    // The kernel cannot segment here: this socket sends one by one from now
                    // on, starting with this batch.
                    self.socks[usize::from(sock)].gso = false;
                    self.tx.gso_fallbacks += 1;
                }
                _ => {
                    // The first send failed (ECONNREFUSED, EHOSTUNREACH, ..): skip it.
                    self.tx.errors += first as u64;
                    i += first;
                }
            }
        }
    }

    /// Test hook: whether socket `idx` still sends GSO.
    #[cfg(test)]
    pub(super) fn socket_gso(&self, idx: u16) -> bool {
        self.socks[usize::from(idx)].gso
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

    fn submit(&mut self) {
        // An error here (EINTR, EBUSY) leaves the sends queued; the poll's own flush retries
        // and reports it.
        let _ = self.hand_over();
    }

    fn hold_residence(&mut self, held: bool) {
        self.residence.hold(held);
    }
}

impl fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendQueue")
            .field("queued", &self.len())
            .field("free", &self.free.len())
            .field("io_uring", &self.ring.is_some())
            .field("gso", &self.gso)
            .finish_non_exhaustive()
    }
}

const _: () = assert!(SEND_SLOTS < NO_SLOT as usize && size_of::<Slot>() > 0);
const _: () = assert!(SOCKET_SLOTS <= u16::MAX as usize);
const _: () = assert!(GSO_MAX_SEGMENTS * MAX_DATAGRAM > GSO_MAX_BYTES);

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn equal_sizes_coalesce_and_the_last_may_be_shorter() {
        assert_eq!(gso_segments([].into_iter()), 0);
        assert_eq!(gso_segments([1216].into_iter()), 1);
        assert_eq!(gso_segments([1216; 8].into_iter()), 8);
        // The shorter one ends the send: nothing after it joins.
        assert_eq!(gso_segments([1216, 1216, 700, 1216].into_iter()), 3);
        assert_eq!(gso_segments([1216, 700, 700].into_iter()), 2);
        // A larger one cannot follow (the kernel cuts at the first one's size).
        assert_eq!(gso_segments([1000, 1216, 1216].into_iter()), 1);
        assert_eq!(gso_segments([1216, 1216, 1300].into_iter()), 2);
    }

    #[test]
    fn segments_and_bytes_are_bounded() {
        // 100 small ones: at most 64 a send.
        assert_eq!(gso_segments([200; 100].into_iter()), GSO_MAX_SEGMENTS);
        // 1,216-byte ones: 53 make 64,448 bytes, a 54th would pass 65,000.
        assert_eq!(gso_segments([1216; 70].into_iter()), 65_000 / 1216);
        assert_eq!(gso_segments([2000; 40].into_iter()), 32);
        // The byte bound counts a shorter last one as it is.
        let mut lens = vec![1216; 53];
        lens.push(500);
        assert_eq!(gso_segments(lens.into_iter()), 54);
    }

    #[test]
    fn frame_ends_at_the_rtp_marker_bit() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(!ends_frame(&rtp));
        rtp[1] = 0x80 | 96;
        assert!(ends_frame(&rtp));
        assert!(!ends_frame(&rtp[..11]), "too short for RTP");
        // RTCP sender report (PT 200) and a STUN request are not frame ends.
        assert!(!ends_frame(&[0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!ends_frame(&[
            0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0
        ]));
    }

    fn queue() -> (UdpSocket, SendQueue) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let q = SendQueue::new(socket.as_raw_fd(), false, None).unwrap();
        (socket, q)
    }

    /// The sends a flush would make: per send, its destination and each datagram's tag (its
    /// first byte), in order. Frees the slots.
    fn plan(q: &mut SendQueue) -> Vec<(SocketAddr, Vec<u8>)> {
        q.sort_pending();
        let end = q.pending.len();
        let mut sends = Vec::new();
        let mut i = 0;
        while i < end {
            let n = q.group_len(i, end);
            let slots: Vec<u16> = q.pending[i..i + n].iter().map(|p| p.slot).collect();
            let lead = &q.slots[usize::from(slots[0])];
            let dst = sockaddr::decode(sockaddr::storage_bytes(&lead.addr, lead.hdr.msg_namelen))
                .unwrap();
            let tags = slots
                .iter()
                // SAFETY: queued slots hold written buffers inside `bufs`.
                .map(|&s| unsafe { *q.bufs.ptr().add(usize::from(s) * MAX_DATAGRAM) })
                .collect();
            sends.push((dst, tags));
            i += n;
        }
        for p in std::mem::take(&mut q.pending) {
            q.free.push(p.slot);
        }
        sends
    }

    fn push(q: &mut SendQueue, dst: &str, tag: u8, len: usize) {
        q.push_with(dst.parse().unwrap(), |buf| {
            buf[0] = tag;
            len
        });
    }

    #[test]
    fn a_players_packets_meet_across_the_fan_out_in_order() {
        let (_s, mut q) = queue();
        assert!(q.socks[0].gso, "this kernel has UDP_SEGMENT");
        // Three packets fanned out to three players, as the core queues them; the last packet
        // of the frame is shorter.
        let players = ["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.2:5001"];
        for (k, len) in [(0u8, 1216), (1, 1216), (2, 900)] {
            for (p, dst) in players.iter().enumerate() {
                push(&mut q, dst, k * 10 + p as u8, len);
            }
        }
        let mut sends = plan(&mut q);
        sends.sort_by_key(|(dst, _)| *dst);
        assert_eq!(
            sends,
            vec![
                ("127.0.0.1:5001".parse().unwrap(), vec![0, 10, 20]),
                ("127.0.0.1:5002".parse().unwrap(), vec![1, 11, 21]),
                ("127.0.0.2:5001".parse().unwrap(), vec![2, 12, 22]),
            ],
            "same port on another address, or another port, is another peer"
        );
    }

    #[test]
    fn unequal_sizes_split_and_order_holds() {
        let (_s, mut q) = queue();
        let dst = "127.0.0.1:6000";
        for (tag, len) in [
            (1, 1216),
            (2, 1216),
            (3, 160),
            (4, 1216),
            (5, 1300),
            (6, 1300),
        ] {
            push(&mut q, dst, tag, len);
        }
        let sends: Vec<Vec<u8>> = plan(&mut q).into_iter().map(|(_, t)| t).collect();
        assert_eq!(sends, vec![vec![1, 2, 3], vec![4], vec![5, 6]]);
    }

    #[test]
    fn a_keyframe_needs_several_sends() {
        let (_s, mut q) = queue();
        for tag in 0..70u8 {
            push(&mut q, "127.0.0.1:6000", tag, 1216);
        }
        let sizes: Vec<usize> = plan(&mut q).iter().map(|(_, t)| t.len()).collect();
        assert_eq!(sizes, vec![53, 17]);
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_send() {
        let (_s, mut q) = queue();
        q.set_gso(false);
        for tag in 0..4 {
            push(&mut q, "127.0.0.1:6000", tag, 1216);
        }
        let sends: Vec<Vec<u8>> = plan(&mut q).into_iter().map(|(_, t)| t).collect();
        assert_eq!(sends, vec![vec![0], vec![1], vec![2], vec![3]]);
        // A socket marked non-GSO (after a refusal) likewise.
        q.set_gso(true);
        q.socks[0].gso = false;
        for tag in 0..2 {
            push(&mut q, "127.0.0.1:6000", tag, 1216);
        }
        assert_eq!(plan(&mut q).len(), 2);
    }
}
