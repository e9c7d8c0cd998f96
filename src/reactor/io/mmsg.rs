//! The portable backend: level-triggered epoll on all sockets and the waker's eventfd,
//! `recvmmsg` in batches of 64 into buffers allocated at bind, `sendmmsg` (in `sendq.rs`).
//!
//! A socket's epoll token is its index (`SocketId.0`). The readable sockets of one `epoll_wait`
//! are served round-robin, one `recvmmsg` each per round, until they are drained or the poll's
//! budget of `POLL_BATCH` datagrams is spent; level triggering reports the rest next time.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::mem::Region;
use super::residence::{self, CONTROL_LEN};
use super::sendq::SendQueue;
use super::tcp::TcpSide;
use super::waker::Waker;
use super::{
    errno, remaining, sockaddr, DatagramHandler, RxStats, SocketId, MAX_DATAGRAM, POLL_BATCH,
};

/// Datagrams per `recvmmsg` call.
const RECV_BATCH: usize = 64;

/// Events per `epoll_wait`.
const EVENTS: usize = 64;

/// The waker's token; sockets use their index.
const TOKEN_WAKE: u64 = u64::MAX;
/// The ICE-TCP epoll fd's token (`tcp.rs`).
const TOKEN_TCP: u64 = u64::MAX - 1;

pub(super) struct MmsgRecv {
    epfd: OwnedFd,
    bufs: Region,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Control data (the receive timestamp) per header; u64s for cmsghdr alignment.
    controls: Box<[[u64; CONTROL_LEN / 8]]>,
    /// Kept alive for the pointers in `hdrs`.
    _iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into `bufs`, `addrs`, `controls` and
// `iovs`, all owned by this value; nothing is tied to the creating thread.
unsafe impl Send for MmsgRecv {}

impl MmsgRecv {
    pub(super) fn new(sock: RawFd, efd: RawFd) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epfd` was just created and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        for (fd, token) in [(sock, 0), (efd, TOKEN_WAKE)] {
            epoll_add(epfd.as_raw_fd(), fd, token)?;
        }

        let bufs = Region::new(RECV_BATCH * MAX_DATAGRAM)?;
        // SAFETY (three closures): all-zero is a valid value of these C structs.
        let mut addrs: Box<[libc::sockaddr_storage]> = (0..RECV_BATCH)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        let mut iovs: Box<[libc::iovec]> = (0..RECV_BATCH)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..RECV_BATCH)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        let mut controls: Box<[[u64; CONTROL_LEN / 8]]> =
            vec![[0; CONTROL_LEN / 8]; RECV_BATCH].into_boxed_slice();
        for i in 0..RECV_BATCH {
            // SAFETY: `i * MAX_DATAGRAM` is inside the `RECV_BATCH * MAX_DATAGRAM` region.
            iovs[i].iov_base = unsafe { bufs.ptr().add(i * MAX_DATAGRAM) }.cast();
            iovs[i].iov_len = MAX_DATAGRAM;
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_control = controls[i].as_mut_ptr().cast();
        }
        Ok(Self {
            epfd,
            bufs,
            addrs,
            controls,
            _iovs: iovs,
            hdrs,
        })
    }

    /// Starts polling socket `fd` as index `idx`.
    pub(super) fn add(&mut self, idx: u16, fd: RawFd) -> io::Result<()> {
        epoll_add(self.epfd.as_raw_fd(), fd, u64::from(idx))
    }

    /// Watches the ICE-TCP epoll fd.
    pub(super) fn watch_tcp(&mut self, fd: RawFd) -> io::Result<()> {
        epoll_add(self.epfd.as_raw_fd(), fd, TOKEN_TCP)
    }

    /// Stops polling socket `fd` (before it is closed).
    pub(super) fn remove(&mut self, fd: RawFd) {
        // SAFETY: `fd` is open; EPOLL_CTL_DEL ignores the event pointer (null is allowed).
        if unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        } < 0
        {
            tracing::warn!(error = %io::Error::last_os_error(), "epoll_ctl(DEL) failed");
        }
    }

    pub(super) fn poll(
        &mut self,
        deadline: Option<Instant>,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
        rx: &mut RxStats,
        waker: &Waker,
        tcp: Option<&mut TcpSide>,
    ) -> io::Result<usize> {
        sendq.flush()?;
        // Level triggered: a socket left readable by the last poll's budget is reported at once.
        let timeout_ms = match remaining(deadline) {
            None => -1,
            // Round up, so a 0.5 ms timeout does not spin.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        // SAFETY: all-zero is a valid epoll_event.
        let mut events: [libc::epoll_event; EVENTS] = unsafe { std::mem::zeroed() };
        // SAFETY: `events` has room for the EVENTS entries passed as maxevents.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                timeout_ms,
            )
        };
        let n = if n < 0 {
            if errno() != libc::EINTR {
                return Err(io::Error::last_os_error());
            }
            0
        } else {
            n as usize
        };
        let mut ready = [0u16; EVENTS];
        let mut nready = 0;
        let mut woken = false;
        let mut tcp_ready = false;
        for ev in &events[..n] {
            match ev.u64 {
                TOKEN_WAKE => woken = true,
                TOKEN_TCP => tcp_ready = true,
                token => {
                    ready[nready] = token as u16;
                    nready += 1;
                }
            }
        }
        if woken {
            // Reset before on_wake: a wake() during on_wake makes the next poll return.
            waker.reset();
        }
        let mut handled = self.receive(&mut ready[..nready], handler, sendq, rx);
        if let Some(tcp) = tcp {
            if tcp_ready || tcp.deadline().is_some_and(|at| at <= Instant::now()) {
                handled += tcp.service(handler, sendq);
            }
        }
        if woken {
            handler.on_wake(sendq);
        }
        handler.on_batch_end(sendq);
        sendq.flush()?;
        Ok(handled)
    }

    /// Reads up to `POLL_BATCH` datagrams from the `ready` sockets, round-robin, one
    /// `recvmmsg` of up to `RECV_BATCH` per socket and round, handing each to `handler`.
    fn receive(
        &mut self,
        ready: &mut [u16],
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
        rx: &mut RxStats,
    ) -> usize {
        let before = rx.datagrams;
        let mut budget = POLL_BATCH;
        let mut nready = ready.len();
        while budget > 0 && nready > 0 {
            let mut k = 0;
            while k < nready && budget > 0 {
                let idx = ready[k];
                let want = budget.min(RECV_BATCH);
                // Sockets are removed between polls only, so every token names an open socket.
                let got = match sendq.socket_fd(idx) {
                    Some(fd) => self.receive_batch(fd, idx, want, handler, sendq, rx),
                    None => 0,
                };
                budget -= got;
                if got == want {
                    k += 1;
                } else {
                    // Drained (or failed): drop it from this poll's round-robin.
                    nready -= 1;
                    ready[k] = ready[nready];
                }
            }
        }
        (rx.datagrams - before) as usize
    }

    /// One `recvmmsg` of up to `want` datagrams on socket `fd` (index `idx`). Returns the number
    /// the kernel returned (0 on EAGAIN or error).
    fn receive_batch(
        &mut self,
        fd: RawFd,
        idx: u16,
        want: usize,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
        rx: &mut RxStats,
    ) -> usize {
        for h in self.hdrs[..want].iter_mut() {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = CONTROL_LEN;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at its own sockaddr_storage, control area and iovec, and
        // each iovec at its own MAX_DATAGRAM slice of `bufs`; all outlive the call and nothing
        // else references them during it. `want <= RECV_BATCH` headers are passed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            match errno() {
                libc::EAGAIN | libc::EINTR => {}
                // ECONNREFUSED etc.: a pending socket error, reported once.
                _ => rx.errors += 1,
            }
            return 0;
        }
        let n = n as usize;
        for i in 0..n {
            let hdr = &self.hdrs[i];
            let len = (hdr.msg_len as usize).min(MAX_DATAGRAM);
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                rx.truncated += 1;
                continue;
            }
            let Some(src) = sockaddr::decode(sockaddr::storage_bytes(
                &self.addrs[i],
                hdr.msg_hdr.msg_namelen,
            )) else {
                rx.errors += 1;
                continue;
            };
            // SAFETY: slot `i` of `bufs` holds the `len` bytes the kernel just wrote; the
            // kernel is done with it, and it is not reused until the next recvmmsg.
            let data = unsafe {
                std::slice::from_raw_parts_mut(self.bufs.ptr().add(i * MAX_DATAGRAM), len)
            };
            let control_len = hdr.msg_hdr.msg_controllen.min(CONTROL_LEN);
            // SAFETY: the control area is CONTROL_LEN bytes owned by `controls[i]`; the kernel
            // wrote `control_len` of them.
            let control = unsafe {
                std::slice::from_raw_parts(self.controls[i].as_ptr().cast::<u8>(), control_len)
            };
            let stamp = residence::parse_stamp(control);
            handler.on_datagram(SocketId(idx), src, data, stamp, sendq);
            sendq.udp_datagram_handled(stamp, data);
            rx.datagrams += 1;
        }
        n
    }
}

fn epoll_add(epfd: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: both fds are open; `ev` is a valid epoll_event for the call.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
