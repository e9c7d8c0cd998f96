//! The io_uring backend: one multishot RECVMSG per socket, all drawing from one provided-buffer
//! ring, a oneshot POLL_ADD on the waker's eventfd, SENDMSG SQEs from the send queue (each
//! carrying its socket's fd), waits with an EXT_ARG timespec.
//!
//! ICE-TCP (`tcp/uring.rs`) goes through the same ring: ACCEPT, RECV, SEND and CONNECT SQEs
//! whose user_data carries `tcp::uring`'s tag; their completions are handed to the TCP side.
//!
//! Buffer ownership: the 1,024 receive buffers belong to the kernel while they sit in the
//! buffer ring. A completion with `IORING_CQE_F_BUFFER` hands buffer `bid` to us; it goes back
//! into the ring right after the handler returns. If the ring runs dry, a multishot RECVMSG
//! ends with ENOBUFS (counted) and is re-armed after the batch recycled its buffers; the socket
//! buffer holds the datagrams meanwhile. Any completion without `IORING_CQE_F_MORE` re-arms
//! its socket.
//!
//! Sockets: a receive's user_data is `UD_RECV | socket index`. Each index has a state
//! (`RecvState`); indexes whose receive needs an SQE (arm or cancel) wait in a small list
//! drained at the start and end of every poll. Removing a socket cancels its receive by
//! user_data; its completions (datagrams, then the final ECANCELED) are recycled without
//! reaching the handler, and the index is reused only after that final completion, so a
//! completion can never be attributed to the wrong socket. The closed socket's file stays alive
//! inside the kernel until the cancel completes; no memory is freed on removal.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::ptr::addr_of_mut;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

use super::mem::Region;
use super::residence::{self, CONTROL_LEN};
use super::sendq::SendQueue;
use super::sockaddr::{self, NAME_LEN};
use super::tcp::{self, TcpSide};
use super::waker::Waker;
use super::{
    remaining, DatagramHandler, RxStats, SocketId, MAX_DATAGRAM, POLL_BATCH, SOCKET_SLOTS,
};

/// Submission queue entries: a flush of more sends than this submits when the SQ is full.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: more than receive buffers + send slots + one final receive
/// completion and one cancel per socket + the waker poll, with room for ICE-TCP's operations
/// (a RECV, a SEND and their cancels per connection; the kernel keeps what overflows).
const CQ_ENTRIES: u32 = 8192;
/// Receive buffers in the provided-buffer ring (a power of two).
const RECV_BUFS: usize = 1024;
/// Buffer group id of the receive ring.
const BGID: u16 = 0;
/// One receive buffer: `io_uring_recvmsg_out` (16 bytes) + name field + control data (the
/// receive timestamp) + payload. The payload starts at byte 128, cache-line aligned.
const RECV_BUF_SIZE: usize = 16 + NAME_LEN + CONTROL_LEN + MAX_DATAGRAM;
/// Completions parked while the send queue reaped for free slots: bounded by the receive
/// buffers and control ops in flight, so it never fills in practice.
const STASH_CAP: usize = CQ_ENTRIES as usize;

const UD_WAKE: u64 = 2;
/// Every ASYNC_CANCEL (its own completion says nothing the cancelled one does not).
pub(super) const UD_CANCEL: u64 = 3;
/// `| slot`.
const UD_SEND: u64 = 1 << 32;
/// `| socket index`.
const UD_RECV: u64 = 1 << 33;

const _: () =
    assert!(RECV_BUFS + super::sendq::SEND_SLOTS + 2 * SOCKET_SLOTS + 2 <= CQ_ENTRIES as usize);

/// A copied completion.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cqe {
    pub(super) user_data: u64,
    pub(super) result: i32,
    pub(super) flags: u32,
}

/// One `io_uring_buf` in the provided-buffer ring; the `resv` field of entry 0 is the tail.
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The ring, owned by the send queue so that `push_with` can submit when the pool is full.
pub(super) struct Ring {
    ring: IoUring,
    /// False while a ring created with `R_DISABLED` waits for its first submit: the thread
    /// that enables it becomes its only submitter and runs all of its task work.
    enabled: bool,
    /// Created with DEFER_TASKRUN (kernel 6.1+).
    defers_task_work: bool,
    stash: VecDeque<Cqe>,
    sends_in_flight: usize,
    unsubmitted_sends: usize,
}

impl Ring {
    /// Pushes a SENDMSG SQE for `slot` on socket `fd`; false if the SQ stayed full after a
    /// submit.
    pub(super) fn push_send(&mut self, slot: u16, hdr: &libc::msghdr, fd: RawFd) -> bool {
        let sqe = opcode::SendMsg::new(Fd(fd), hdr)
            .flags(libc::MSG_DONTWAIT as u32)
            .build()
            .user_data(UD_SEND | u64::from(slot));
        if self.push(&sqe).is_err() {
            return false;
        }
        self.sends_in_flight += 1;
        self.unsubmitted_sends += 1;
        true
    }

    pub(super) fn sends_in_flight(&self) -> usize {
        self.sends_in_flight
    }

    pub(super) fn unsubmitted_sends(&self) -> usize {
        self.unsubmitted_sends
    }

    pub(super) fn has_unsubmitted(&mut self) -> bool {
        !self.ring.submission().is_empty()
    }

    pub(super) fn stash_full(&self) -> bool {
        self.stash.len() >= STASH_CAP
    }

    /// Pushes an SQE whose pointers stay valid until its completion.
    pub(super) fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: every SQE built in this module points at memory owned by the `UdpIo`
            // (msghdrs in boxed slices, buffers in mmap regions) that outlives the operation:
            // `UdpIo::drop` cancels and drains before freeing.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
        Err(io::Error::other("io_uring submission queue full"))
    }

    /// Submits without waiting.
    pub(super) fn submit(&mut self) -> io::Result<()> {
        self.submit_and_wait(0)
    }

    /// Submits and waits for `want` completions. EINTR, EBUSY (CQ overflow) and EAGAIN are
    /// not errors: the caller reaps and decides.
    pub(super) fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        self.enable()?;
        let res = self.ring.submit_and_wait(want);
        self.after_enter(res).map(drop)
    }

    /// Whether anything was ever submitted (before that, the kernel holds nothing of ours).
    pub(super) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the ring defers its task work to the polling thread (kernel 6.1+).
    pub(super) fn defers_task_work(&self) -> bool {
        self.defers_task_work
    }

    /// Runs task work the kernel deferred (DEFER_TASKRUN), so that the completions it produces
    /// (a cancelled receive's last one, for instance) are in the CQ now.
    fn run_deferred_work(&mut self) -> io::Result<()> {
        if self.enabled && self.ring.submission().taskrun() {
            // The TASKRUN flag makes this enter carry GETEVENTS.
            self.submit()?;
        }
        Ok(())
    }

    /// Enables a ring created disabled, on the calling thread (the one that polls).
    fn enable(&mut self) -> io::Result<()> {
        if !self.enabled {
            self.ring.submitter().register_enable_rings()?;
            self.enabled = true;
        }
        Ok(())
    }

    /// Submits and waits for one completion or until `timeout` passes (`None`: forever).
    /// Returns false if a signal interrupted the wait.
    pub(super) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.enable()?;
        let res = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        self.after_enter(res)
    }

    fn after_enter(&mut self, res: io::Result<usize>) -> io::Result<bool> {
        if self.ring.submission().is_empty() {
            self.unsubmitted_sends = 0;
        }
        match res {
            Ok(_) => Ok(true),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => Ok(false),
                Some(libc::ETIME | libc::EBUSY | libc::EAGAIN) => Ok(true),
                _ => Err(e),
            },
        }
    }

    /// Hands the stashed completions to `take`, in order; those it refuses stay stashed.
    pub(super) fn take_stashed(&mut self, mut take: impl FnMut(Cqe) -> bool) {
        self.stash.retain(|&cqe| !take(cqe));
    }

    /// Consumes the CQ. Send completions go to `on_send(slot, res)`; other completions go to
    /// `other`, and those it refuses are stashed (in order) for a later poll.
    pub(super) fn reap(
        &mut self,
        mut on_send: impl FnMut(u16, i32),
        mut other: impl FnMut(Cqe) -> bool,
    ) {
        let Self {
            ring,
            stash,
            sends_in_flight,
            ..
        } = self;
        let mut cq = ring.completion();
        while stash.len() < STASH_CAP {
            let Some(entry) = cq.next() else { break };
            let cqe = Cqe {
                user_data: entry.user_data(),
                result: entry.result(),
                flags: entry.flags(),
            };
            if cqe.user_data & UD_SEND != 0 {
                *sends_in_flight = sends_in_flight.saturating_sub(1);
                on_send(cqe.user_data as u16, cqe.result);
            } else if !stash.is_empty() || !other(cqe) {
                stash.push_back(cqe);
            }
        }
    }
}

/// Where the multishot receive of one socket index stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// No socket, nothing in flight: the index may be (re)used.
    Free,
    /// Open socket without a receive in flight; queued for arming.
    NeedsArm,
    /// Open socket, multishot receive in flight.
    Armed,
    /// Removed socket whose receive is still in flight; queued for its cancel SQE.
    Cancel,
    /// Removed socket, cancel pushed; waiting for the receive's final completion.
    Cancelled,
}

#[derive(Debug, Clone, Copy)]
struct RecvSock {
    fd: RawFd,
    state: RecvState,
    /// In `UringRecv::todo`.
    queued: bool,
}

/// The receive side: buffer ring, receive buffers, the multishot msghdr, and state.
pub(super) struct UringRecv {
    ring_mem: Region,
    bufs: Region,
    /// Template for the multishot RECVMSGs of all sockets (only name/control lengths matter;
    /// the kernel copies them at prep).
    msghdr: Box<libc::msghdr>,
    tail: u16,
    /// Indexed by `SocketId.0`.
    socks: Box<[RecvSock]>,
    /// Indexes that need an SQE (states `NeedsArm` and `Cancel`); each at most once.
    todo: Vec<u16>,
    wake_armed: bool,
    batch: Vec<Cqe>,
    efd: RawFd,
}

// SAFETY: the raw pointers in `msghdr` are null; the regions are owned memory. Nothing is tied
// to the creating thread.
unsafe impl Send for UringRecv {}

/// Creates the ring, checks the features and opcodes needed, registers the buffer ring and arms
/// the receive and the waker poll. Fails (for `Auto` to fall back) if any step does.
pub(super) fn setup(sock: RawFd, efd: RawFd) -> io::Result<(Ring, UringRecv)> {
    // Task work (the kernel side of every receive) runs in the task that submitted the
    // request. The socket is bound on the node's main thread, so a receive armed here would
    // be completed by the main thread: interrupted thousands of times a second, doing the
    // media core's receive work on another core, and waking the core across CPUs. Preferred
    // (kernel 6.1+): the ring starts disabled and is enabled by its first submit, on the
    // polling thread; single issuer; task work deferred until that thread asks for events,
    // so it runs in batches on the core that handles the packets.
    let deferred = IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_r_disabled()
        .build(SQ_ENTRIES);
    let (ring, enabled) = match deferred {
        Ok(ring) => (ring, false),
        Err(_) => {
            let ring = IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .build(SQ_ENTRIES)
                .or_else(|_| {
                    IoUring::builder()
                        .setup_cqsize(CQ_ENTRIES)
                        .build(SQ_ENTRIES)
                })?;
            (ring, true)
        }
    };
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring lacks EXT_ARG (kernel < 5.11)",
        ));
    }
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        // ICE-TCP (`tcp/uring.rs`).
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Connect::CODE, "CONNECT"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring lacks {name}"),
            ));
        }
    }

    let ring_mem = Region::new(RECV_BUFS * std::mem::size_of::<BufEntry>())?;
    let bufs = Region::new(RECV_BUFS * RECV_BUF_SIZE)?;
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
    // Only the length matters: with multishot RECVMSG the kernel writes the control data into
    // each provided buffer, after the name.
    msghdr.msg_controllen = CONTROL_LEN;

    let mut recv = UringRecv {
        ring_mem,
        bufs,
        msghdr,
        tail: 0,
        socks: vec![
            RecvSock {
                fd: -1,
                state: RecvState::Free,
                queued: false
            };
            SOCKET_SLOTS
        ]
        .into_boxed_slice(),
        todo: Vec::with_capacity(SOCKET_SLOTS),
        wake_armed: false,
        batch: Vec::with_capacity(POLL_BATCH),
        efd,
    };
    recv.add(0, sock);
    for bid in 0..RECV_BUFS as u16 {
        recv.recycle(bid);
    }
    // SAFETY: `ring_mem` is page aligned, holds RECV_BUFS entries, and lives as long as the
    // ring (it is only unmapped after the ring is closed, or leaked).
    unsafe {
        ring.submitter().register_buf_ring_with_flags(
            recv.ring_mem.ptr() as u64,
            RECV_BUFS as u16,
            BGID,
            0,
        )?;
    }

    let mut ring = Ring {
        ring,
        enabled,
        defers_task_work: !enabled,
        stash: VecDeque::with_capacity(STASH_CAP),
        sends_in_flight: 0,
        unsubmitted_sends: 0,
    };
    if !enabled {
        // DEFER_TASKRUN came with 6.1, multishot RECVMSG with 6.0: nothing to probe. The
        // receive is armed by the first poll.
        return Ok((ring, recv));
    }
    recv.arm(&mut ring)?;
    ring.submit()?;
    // Kernels before 6.0 reject multishot RECVMSG at submit with EINVAL.
    let mut unsupported = None;
    ring.reap(
        |_, _| {},
        |cqe| {
            if cqe.user_data == UD_RECV /* | 0, the main socket */ && cqe.result < 0 && !cqueue::more(cqe.flags) {
                unsupported = Some(io::Error::from_raw_os_error(-cqe.result));
            }
            false
        },
    );
    if let Some(e) = unsupported {
        return Err(io::Error::new(
            e.kind(),
            format!("multishot RECVMSG rejected: {e}"),
        ));
    }
    Ok((ring, recv))
}

impl UringRecv {
    pub(super) fn poll(
        &mut self,
        deadline: Option<Instant>,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
        rx: &mut RxStats,
        waker: &Waker,
        mut tcp: Option<&mut TcpSide>,
    ) -> io::Result<usize> {
        // Sends queued since the last poll (a timer's) leave now, not after the wait: the queue
        // holds them in `pending` until a flush, which the wait's submit does not do.
        sendq.flush()?;
        if let Some(tcp) = tcp.as_deref_mut() {
            tcp.uring_arm(sendq);
        }
        let Some(ring) = sendq.ring_mut() else {
            return Ok(0);
        };
        self.arm(ring)?;
        self.batch.clear();
        loop {
            self.gather(sendq);
            let Some(ring) = sendq.ring_mut() else {
                return Ok(0);
            };
            if !self.batch.is_empty() {
                if ring.has_unsubmitted() {
                    ring.submit()?;
                }
                break;
            }
            let left = remaining(deadline);
            if left == Some(Duration::ZERO) {
                ring.submit()?;
                self.gather(sendq);
                break;
            }
            if !ring.wait(left)? {
                // Interrupted by a signal: return what arrived, if anything.
                self.gather(sendq);
                break;
            }
        }

        let mut handled = 0;
        let mut woken = false;
        for k in 0..self.batch.len() {
            let cqe = self.batch[k];
            match cqe.user_data {
                UD_WAKE => {
                    self.wake_armed = false;
                    woken = true;
                }
                ud if tcp::is_uring_op(ud) => {
                    if let Some(tcp) = tcp.as_deref_mut() {
                        handled += tcp.on_uring_cqe(cqe, handler, sendq);
                    }
                }
                ud if ud & UD_RECV != 0 => {
                    handled += usize::from(self.on_recv(cqe, handler, sendq, rx))
                }
                _ => {}
            }
        }
        self.batch.clear();
        if let Some(tcp) = tcp {
            tcp.uring_service(handler, sendq);
        }
        if woken {
            // Reset before re-arming: a wake() from now on makes the new poll fire.
            waker.reset();
        }
        if let Some(ring) = sendq.ring_mut() {
            self.arm(ring)?;
        }
        if woken {
            handler.on_wake(sendq);
        }
        handler.on_batch_end(sendq);
        sendq.flush()?;
        Ok(handled)
    }

    /// Moves stashed and new completions into the batch (sends are completed on the way).
    fn gather(&mut self, sendq: &mut SendQueue) {
        if let Some(ring) = sendq.ring_mut() {
            while self.batch.len() < POLL_BATCH {
                let Some(cqe) = ring.stash.pop_front() else {
                    break;
                };
                self.batch.push(cqe);
            }
        }
        let batch = &mut self.batch;
        sendq.reap(|cqe| {
            if batch.len() < POLL_BATCH {
                batch.push(cqe);
                true
            } else {
                false
            }
        });
    }

    /// Handles one RECVMSG completion; true if a datagram went to the handler.
    fn on_recv(
        &mut self,
        cqe: Cqe,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
        rx: &mut RxStats,
    ) -> bool {
        let idx = cqe.user_data as u16;
        let live = self.note_recv(cqe);
        let bid = cqueue::buffer_select(cqe.flags).filter(|&b| usize::from(b) < RECV_BUFS);
        if !live {
            // A removed socket's late datagram or final completion: recycle, don't deliver.
            if let Some(bid) = bid {
                self.recycle(bid);
            }
            return false;
        }
        if cqe.result < 0 {
            match -cqe.result {
                libc::ENOBUFS => rx.no_buffers += 1,
                libc::ECANCELED => {}
                _ => rx.errors += 1,
            }
            if let Some(bid) = bid {
                self.recycle(bid);
            }
            return false;
        }
        let Some(bid) = bid else {
            rx.errors += 1;
            return false;
        };
        let len = (cqe.result as usize).min(RECV_BUF_SIZE);
        // SAFETY: the completion hands buffer `bid` to us until `recycle(bid)`; it lies inside
        // `bufs`, and the kernel wrote `len` bytes of it.
        let base = unsafe { self.bufs.ptr().add(usize::from(bid) * RECV_BUF_SIZE) };
        let parsed = {
            // SAFETY: as above; this shared view ends before the mutable one below is created.
            let buf = unsafe { std::slice::from_raw_parts(base, len) };
            io_uring::types::RecvMsgOut::parse(buf, &self.msghdr)
                .ok()
                .map(|out| {
                    let offset = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
                    let truncated = out.is_payload_truncated() || out.is_name_data_truncated();
                    (
                        sockaddr::decode(out.name_data()),
                        offset,
                        out.payload_data().len(),
                        truncated,
                        residence::parse_stamp(out.control_data()),
                    )
                })
        };
        let delivered = match parsed {
            Some((_, _, _, true, _)) => {
                rx.truncated += 1;
                false
            }
            Some((Some(src), offset, plen, false, stamp)) => {
                // SAFETY: `offset + plen <= len` (parse derived both from `buf`); the buffer is
                // ours until recycled after the handler returns, and no other view is alive.
                let data = unsafe { std::slice::from_raw_parts_mut(base.add(offset), plen) };
                handler.on_datagram(SocketId(idx), src, data, stamp, sendq);
                sendq.udp_datagram_handled(stamp, data);
                rx.datagrams += 1;
                true
            }
            _ => {
                rx.errors += 1;
                false
            }
        };
        self.recycle(bid);
        delivered
    }

    /// Gives buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        let entries = self.ring_mem.ptr().cast::<BufEntry>();
        let idx = usize::from(self.tail) & (RECV_BUFS - 1);
        let addr = self.bufs.ptr() as u64 + (usize::from(bid) * RECV_BUF_SIZE) as u64;
        // SAFETY: `idx < RECV_BUFS`, inside `ring_mem`. The kernel reads entries only below the
        // published tail, and this slot is at the tail, so nobody reads it concurrently. The
        // `resv` field (the tail, in entry 0) is not written here.
        unsafe {
            let e = entries.add(idx);
            addr_of_mut!((*e).addr).write(addr);
            addr_of_mut!((*e).len).write(RECV_BUF_SIZE as u32);
            addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the u16 `resv` field of entry 0, 2-byte aligned inside
        // `ring_mem`; the kernel reads it atomically, so it is only written atomically here.
        let tail = unsafe { AtomicU16::from_ptr(addr_of_mut!((*entries).resv)) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Accounts for a receive completion of socket `user_data as u16`: a final one (no
    /// `F_MORE`) re-queues an open socket for arming and frees a removed one's index. Returns
    /// whether the socket is open (its datagrams are to be delivered).
    fn note_recv(&mut self, cqe: Cqe) -> bool {
        let idx = cqe.user_data as u16;
        let Some(sock) = self.socks.get_mut(usize::from(idx)) else {
            return false;
        };
        let live = sock.state == RecvState::Armed;
        if !cqueue::more(cqe.flags) {
            match sock.state {
                RecvState::Armed => {
                    sock.state = RecvState::NeedsArm;
                    self.enqueue(idx);
                }
                RecvState::Cancel | RecvState::Cancelled => {
                    let sock = &mut self.socks[usize::from(idx)];
                    sock.state = RecvState::Free;
                    sock.fd = -1;
                }
                RecvState::Free | RecvState::NeedsArm => {}
            }
        }
        live
    }

    fn enqueue(&mut self, idx: u16) {
        let sock = &mut self.socks[usize::from(idx)];
        if !sock.queued {
            sock.queued = true;
            self.todo.push(idx);
        }
    }

    /// Whether index `idx` may take a new socket (nothing of an old one is in flight).
    pub(super) fn slot_free(&self, idx: u16) -> bool {
        self.socks
            .get(usize::from(idx))
            .is_some_and(|s| s.state == RecvState::Free)
    }

    /// Starts receiving on socket `fd` as index `idx` (which must be free); the receive is
    /// armed by the next poll.
    pub(super) fn add(&mut self, idx: u16, fd: RawFd) {
        let sock = &mut self.socks[usize::from(idx)];
        debug_assert_eq!(sock.state, RecvState::Free);
        sock.fd = fd;
        sock.state = RecvState::NeedsArm;
        self.enqueue(idx);
    }

    /// Stops receiving on index `idx`: cancels its receive (pushed and submitted now if
    /// possible, otherwise by the next poll). The queue was flushed just before. Returns true
    /// if the SQ still holds unconsumed entries (a send SQE may name the socket's fd, so the
    /// caller must not close it yet).
    pub(super) fn remove(&mut self, idx: u16, sendq: &mut SendQueue) -> bool {
        let sock = &mut self.socks[usize::from(idx)];
        match sock.state {
            RecvState::NeedsArm => {
                sock.state = RecvState::Free;
                sock.fd = -1;
            }
            RecvState::Armed => {
                sock.state = RecvState::Cancel;
                self.enqueue(idx);
            }
            RecvState::Free | RecvState::Cancel | RecvState::Cancelled => {}
        }
        let Some(ring) = sendq.ring_mut() else {
            return false;
        };
        // Errors leave the cancel queued for the next poll.
        if self.arm(ring).is_ok() {
            let _ = ring.submit();
            let _ = ring.run_deferred_work();
        }
        // The flush submitted every send; only a failed submit leaves some in the SQ. Retry a
        // few times, stashing completions so the CQ has room.
        for _ in 0..4 {
            if !sendq.has_unsubmitted() {
                break;
            }
            if let Some(ring) = sendq.ring_mut() {
                let _ = ring.submit();
            }
            sendq.reap(|_| false);
        }
        // The cancel usually completes inline: take this socket's completions out of the CQ
        // and the stash now (recycling their buffers), so its index is free again at once.
        // Otherwise the next polls do the same.
        if self.socks[usize::from(idx)].state == RecvState::Cancelled {
            sendq.reap(|_| false);
            if let Some(ring) = sendq.ring_mut() {
                let target = UD_RECV | u64::from(idx);
                let mut done = false;
                ring.stash.retain(|cqe| {
                    if cqe.user_data != target {
                        return true;
                    }
                    if let Some(bid) =
                        cqueue::buffer_select(cqe.flags).filter(|&b| usize::from(b) < RECV_BUFS)
                    {
                        self.recycle(bid);
                    }
                    done |= !cqueue::more(cqe.flags);
                    false
                });
                if done {
                    let sock = &mut self.socks[usize::from(idx)];
                    sock.state = RecvState::Free;
                    sock.fd = -1;
                }
            }
        }
        sendq.has_unsubmitted()
    }

    /// Pushes the SQEs queued in `todo` (multishot RECVMSGs and cancels) and the waker poll if
    /// it is not in flight. On error, what is left stays queued for the next call.
    fn arm(&mut self, ring: &mut Ring) -> io::Result<()> {
        while let Some(&idx) = self.todo.last() {
            let sock = &mut self.socks[usize::from(idx)];
            match sock.state {
                RecvState::NeedsArm => {
                    let sqe = opcode::RecvMsgMulti::new(Fd(sock.fd), &*self.msghdr, BGID)
                        .build()
                        .user_data(UD_RECV | u64::from(idx));
                    ring.push(&sqe)?;
                    sock.state = RecvState::Armed;
                }
                RecvState::Cancel => {
                    let sqe = opcode::AsyncCancel::new(UD_RECV | u64::from(idx))
                        .build()
                        .user_data(UD_CANCEL);
                    ring.push(&sqe)?;
                    sock.state = RecvState::Cancelled;
                }
                RecvState::Free | RecvState::Armed | RecvState::Cancelled => {}
            }
            sock.queued = false;
            self.todo.pop();
        }
        if !self.wake_armed {
            let sqe = opcode::PollAdd::new(Fd(self.efd), libc::POLLIN as u32)
                .build()
                .user_data(UD_WAKE);
            ring.push(&sqe)?;
            self.wake_armed = true;
        }
        Ok(())
    }

    /// Cancels every receive and the waker poll and waits until nothing is in flight. Returns
    /// false if that did not happen within about a second.
    pub(super) fn shutdown(&mut self, sendq: &mut SendQueue) -> bool {
        let Some(ring) = sendq.ring_mut() else {
            return true;
        };
        if !ring.enabled {
            // Never submitted: the kernel holds no buffer and no operation of ours.
            return true;
        }
        while let Some(cqe) = ring.stash.pop_front() {
            self.note_final(cqe);
        }
        for idx in 0..self.socks.len() {
            let sock = &mut self.socks[idx];
            match sock.state {
                RecvState::Armed | RecvState::Cancel => {
                    let sqe = opcode::AsyncCancel::new(UD_RECV | idx as u64)
                        .build()
                        .user_data(UD_CANCEL);
                    if ring.push(&sqe).is_err() {
                        return false;
                    }
                    sock.state = RecvState::Cancelled;
                }
                RecvState::NeedsArm => sock.state = RecvState::Free,
                RecvState::Free | RecvState::Cancelled => {}
            }
        }
        if self.wake_armed {
            let sqe = opcode::AsyncCancel::new(UD_WAKE)
                .build()
                .user_data(UD_CANCEL);
            if ring.push(&sqe).is_err() {
                return false;
            }
        }
        for _ in 0..50 {
            let Some(ring) = sendq.ring_mut() else {
                return true;
            };
            if ring.wait(Some(Duration::from_millis(20))).is_err() {
                return false;
            }
            sendq.reap(|cqe| {
                self.note_final(cqe);
                true
            });
            let Some(ring) = sendq.ring_mut() else {
                return true;
            };
            let receiving = self.socks.iter().any(|s| s.state != RecvState::Free);
            if !receiving
                && !self.wake_armed
                && ring.sends_in_flight == 0
                && !ring.has_unsubmitted()
            {
                self.todo.clear();
                for s in self.socks.iter_mut() {
                    s.queued = false;
                }
                return true;
            }
        }
        false
    }

    /// Shutdown bookkeeping: final completions of receives and of the waker poll.
    fn note_final(&mut self, cqe: Cqe) {
        if cqe.user_data == UD_WAKE {
            self.wake_armed = false;
        } else if cqe.user_data & UD_RECV != 0 && !cqueue::more(cqe.flags) {
            if let Some(sock) = self.socks.get_mut(usize::from(cqe.user_data as u16)) {
                sock.state = RecvState::Free;
                sock.fd = -1;
            }
        }
    }

    /// Keeps the receive buffers and the buffer ring mapped forever.
    pub(super) fn leak(&mut self) {
        self.ring_mem.leak();
        self.bufs.leak();
    }
}
