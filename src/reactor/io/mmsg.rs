//! The portable backend: level-triggered epoll on the socket and the waker's eventfd,
//! `recvmmsg` in batches of 64 into buffers allocated at bind, `sendmmsg` (in `sendq.rs`).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::mem::Region;
use super::sendq::SendQueue;
use super::waker::Waker;
use super::{errno, remaining, sockaddr, DatagramHandler, RxStats, MAX_DATAGRAM, POLL_BATCH};

/// Datagrams per `recvmmsg` call.
const RECV_BATCH: usize = 64;

const TOKEN_SOCK: u64 = 0;
const TOKEN_WAKE: u64 = 1;

pub(super) struct MmsgRecv {
    epfd: OwnedFd,
    bufs: Region,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Kept alive for the pointers in `hdrs`.
    _iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// The last `poll` stopped at `POLL_BATCH` with the socket possibly still readable.
    more: bool,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into `bufs`, `addrs` and `iovs`, all
// owned by this value; nothing is tied to the creating thread.
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
        for (fd, token) in [(sock, TOKEN_SOCK), (efd, TOKEN_WAKE)] {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
            // SAFETY: both fds are open; `ev` is a valid epoll_event for the call.
            if unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }

        let bufs = Region::new(RECV_BATCH * MAX_DATAGRAM)?;
        // SAFETY (three closures): all-zero is a valid value of these C structs.
        let mut addrs: Box<[libc::sockaddr_storage]> =
            (0..RECV_BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..RECV_BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..RECV_BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for i in 0..RECV_BATCH {
            // SAFETY: `i * MAX_DATAGRAM` is inside the `RECV_BATCH * MAX_DATAGRAM` region.
            iovs[i].iov_base = unsafe { bufs.ptr().add(i * MAX_DATAGRAM) }.cast();
            iovs[i].iov_len = MAX_DATAGRAM;
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        Ok(Self { epfd, bufs, addrs, _iovs: iovs, hdrs, more: false })
    }

    pub(super) fn poll(
        &mut self,
        sock: RawFd,
        deadline: Option<Instant>,
        handler: &mut impl DatagramHandler,
        sendq: &mut SendQueue,
        rx: &mut RxStats,
        waker: &Waker,
    ) -> io::Result<usize> {
        sendq.flush()?;
        let timeout_ms = if self.more {
            0
        } else {
            match remaining(deadline) {
                None => -1,
                // Round up, so a 0.5 ms timeout does not spin.
                Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
            }
        };
        // SAFETY: all-zero is a valid epoll_event.
        let mut events: [libc::epoll_event; 2] = unsafe { std::mem::zeroed() };
        // SAFETY: `events` has room for the 2 entries passed as maxevents.
        let n = unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), events.as_mut_ptr(), 2, timeout_ms) };
        let n = if n < 0 {
            if errno() != libc::EINTR {
                return Err(io::Error::last_os_error());
            }
            0
        } else {
            n as usize
        };
        let mut readable = self.more;
        let mut woken = false;
        for ev in &events[..n] {
            match ev.u64 {
                TOKEN_WAKE => woken = true,
                _ => readable = true,
            }
        }
        if woken {
            // Reset before on_wake: a wake() during on_wake makes the next poll return.
            waker.reset();
        }
        let handled = if readable { self.receive(sock, handler, sendq, rx) } else { 0 };
        if woken {
            handler.on_wake(sendq);
        }
        sendq.flush()?;
        Ok(handled)
    }

    /// Reads up to `POLL_BATCH` datagrams, `RECV_BATCH` per syscall, handing each to `handler`.
    fn receive(&mut self, sock: RawFd, handler: &mut impl DatagramHandler, sendq: &mut SendQueue, rx: &mut RxStats) -> usize {
        let mut handled = 0;
        self.more = false;
        for _ in 0..POLL_BATCH / RECV_BATCH {
            for h in self.hdrs.iter_mut() {
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points at its own sockaddr_storage and iovec, and each iovec
            // at its own MAX_DATAGRAM slice of `bufs`; all outlive the call and nothing else
            // references them during it.
            let n = unsafe {
                libc::recvmmsg(sock, self.hdrs.as_mut_ptr(), RECV_BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
            };
            if n < 0 {
                match errno() {
                    libc::EAGAIN | libc::EINTR => {}
                    // ECONNREFUSED etc.: a pending socket error, reported once.
                    _ => rx.errors += 1,
                }
                break;
            }
            let n = n as usize;
            for i in 0..n {
                let hdr = &self.hdrs[i];
                let len = (hdr.msg_len as usize).min(MAX_DATAGRAM);
                if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    rx.truncated += 1;
                    continue;
                }
                let Some(src) = sockaddr::decode(sockaddr::storage_bytes(&self.addrs[i], hdr.msg_hdr.msg_namelen)) else {
                    rx.errors += 1;
                    continue;
                };
                // SAFETY: slot `i` of `bufs` holds the `len` bytes the kernel just wrote; the
                // kernel is done with it, and it is not reused until the next recvmmsg.
                let data = unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr().add(i * MAX_DATAGRAM), len) };
                handler.on_datagram(src, data, sendq);
                rx.datagrams += 1;
                handled += 1;
            }
            self.more = n == RECV_BATCH;
            if !self.more {
                break;
            }
        }
        handled
    }
}
