//! UDP I/O backends for a media core: io_uring and recvmmsg/sendmmsg on epoll.
//!
//! One [`UdpIo`] per media core owns one UDP socket and, with the io_uring backend, one ring.
//! The core's run loop looks like this:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use rtcdn::reactor::io::{BackendChoice, DatagramHandler, SendQueue, UdpIo};
//!
//! struct Core;
//! impl DatagramHandler for Core {
//!     fn on_datagram(&mut self, src: SocketAddr, data: &mut [u8], tx: &mut SendQueue) {
//!         tx.push(src, data); // echo
//!     }
//!     fn on_wake(&mut self, _tx: &mut SendQueue) {}
//! }
//!
//! let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), BackendChoice::Auto)?;
//! let mut core = Core;
//! loop {
//!     io.poll(Some(Duration::from_millis(10)), &mut core)?;
//!     // timers: io.send_queue().push(..)
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Memory: every buffer is allocated at [`UdpIo::bind`]; `poll` and the [`SendQueue`] never touch
//! the heap. Buffers handed to the kernel have one owner at a time: a receive buffer belongs to
//! the kernel until its completion is handed to the handler and goes back to the kernel when the
//! handler returns; a send slot belongs to the kernel from its SQE until its completion
//! (tokio-uring's `BufResult` rule, applied to pooled slots).
//!
//! Unsafe code is confined to this module; every block carries a `// SAFETY:` line.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

mod mem;
mod mmsg;
mod sendq;
mod sockaddr;
mod uring;
mod waker;

pub use sendq::SendQueue;
pub use waker::Waker;

/// Size of one receive or send buffer slot. Larger datagrams are truncated, counted and dropped.
pub const MAX_DATAGRAM: usize = 2048;

/// Socket buffer size requested with `SO_RCVBUF`/`SO_SNDBUF`. The kernel caps it at twice
/// `net.core.rmem_max`/`wmem_max`; `SO_RCVBUFFORCE` is deliberately not used.
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// At most this many datagrams are handed to the handler per [`UdpIo::poll`].
const POLL_BATCH: usize = 256;

/// Which backend [`UdpIo::bind`] should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring if the kernel allows it (ring creation, opcodes, buffer rings, multishot
    /// RECVMSG), otherwise recvmmsg/sendmmsg.
    #[default]
    Auto,
    /// io_uring or an error.
    IoUring,
    /// epoll + recvmmsg/sendmmsg.
    Mmsg,
}

/// The backend a [`UdpIo`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Multishot RECVMSG with a provided-buffer ring; SENDMSG SQEs.
    IoUring,
    /// epoll + recvmmsg/sendmmsg.
    Mmsg,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IoUring => "io_uring",
            Self::Mmsg => "mmsg",
        })
    }
}

/// Receives the datagrams and wake-ups of one [`UdpIo::poll`].
pub trait DatagramHandler {
    /// One received datagram. `data` may be modified in place (SRTP decrypt); it is only valid
    /// during the call. Sends queued into `tx` go out in the next batch.
    fn on_datagram(&mut self, src: SocketAddr, data: &mut [u8], tx: &mut SendQueue);
    /// The Waker fired (control messages or packets from other cores are waiting).
    fn on_wake(&mut self, tx: &mut SendQueue);
}

/// Counters of one [`UdpIo`]. All are totals since bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams handed to the handler.
    pub rx_datagrams: u64,
    /// Datagrams the kernel accepted for sending.
    pub tx_datagrams: u64,
    /// Sends that failed (bad address family, ECONNREFUSED after an ICMP error, EHOSTUNREACH..).
    pub tx_errors: u64,
    /// Sends dropped because the socket send buffer was full (EAGAIN/ENOBUFS) or no slot could
    /// be freed. Real-time media prefers loss to blocking.
    pub tx_dropped: u64,
    /// Times the send pool was full and the queue flushed itself synchronously.
    pub tx_overflow_flushes: u64,
    /// io_uring: the buffer ring ran dry (ENOBUFS) and the multishot receive had to be re-armed.
    /// Datagrams stay in the socket buffer meanwhile.
    pub rx_no_buffers: u64,
    /// Datagrams longer than [`MAX_DATAGRAM`]; they are dropped.
    pub rx_truncated: u64,
    /// Other receive errors.
    pub rx_errors: u64,
}

/// One media core's UDP socket with its I/O backend.
pub struct UdpIo {
    // Field order matters for drop: the send queue owns the ring, which is closed before the
    // receive buffers are freed (and `Drop` first cancels and drains everything in flight).
    sendq: SendQueue,
    state: State,
    socket: UdpSocket,
    waker: Waker,
    local: SocketAddr,
    rx: RxStats,
}

enum State {
    Uring(uring::UringRecv),
    Mmsg(mmsg::MmsgRecv),
}

#[derive(Debug, Default, Clone, Copy)]
struct RxStats {
    datagrams: u64,
    no_buffers: u64,
    truncated: u64,
    errors: u64,
}

impl UdpIo {
    /// Binds a non-blocking UDP socket with large buffers and sets up the chosen backend.
    pub fn bind(addr: SocketAddr, choice: BackendChoice) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        set_buffer_sizes(socket.as_raw_fd());
        let local = socket.local_addr()?;
        let waker = Waker::new()?;
        let v6 = local.is_ipv6();
        let fd = socket.as_raw_fd();

        let (sendq, state) = match choice {
            BackendChoice::Mmsg => Self::setup_mmsg(fd, v6, &waker)?,
            BackendChoice::IoUring => Self::setup_uring(fd, v6, &waker)?,
            BackendChoice::Auto => match Self::setup_uring(fd, v6, &waker) {
                Ok(parts) => {
                    tracing::info!(%local, "media socket uses io_uring (multishot RECVMSG, SENDMSG)");
                    parts
                }
                Err(error) => {
                    tracing::warn!(%local, %error, "io_uring unavailable, media socket falls back to recvmmsg/sendmmsg");
                    Self::setup_mmsg(fd, v6, &waker)?
                }
            },
        };
        Ok(Self { sendq, state, socket, waker, local, rx: RxStats::default() })
    }

    fn setup_uring(fd: RawFd, v6: bool, waker: &Waker) -> io::Result<(SendQueue, State)> {
        let (ring, recv) = uring::setup(fd, waker.raw_fd())?;
        Ok((SendQueue::new(fd, v6, Some(ring))?, State::Uring(recv)))
    }

    fn setup_mmsg(fd: RawFd, v6: bool, waker: &Waker) -> io::Result<(SendQueue, State)> {
        let recv = mmsg::MmsgRecv::new(fd, waker.raw_fd())?;
        Ok((SendQueue::new(fd, v6, None)?, State::Mmsg(recv)))
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.state {
            State::Uring(_) => Backend::IoUring,
            State::Mmsg(_) => Backend::Mmsg,
        }
    }

    /// The bound address (with the actual port for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A handle that interrupts [`poll`](Self::poll) from any thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// The send queue, for sends from timers outside `poll`. They go out at the next `poll`.
    pub fn send_queue(&mut self) -> &mut SendQueue {
        &mut self.sendq
    }

    /// Flushes queued sends, waits until datagrams arrive, the waker fires, or `timeout` passes
    /// (`None` = wait indefinitely, `Some(0)` = don't block), then calls the handler for each
    /// received datagram (at most 256 per call) and `on_wake` if woken, then flushes sends
    /// queued by the handler. Returns the number of datagrams handled.
    ///
    /// A signal interrupting the wait makes it return early (possibly with 0).
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        handler: &mut impl DatagramHandler,
    ) -> io::Result<usize> {
        // A timeout too large to represent waits indefinitely.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        match &mut self.state {
            State::Uring(recv) => recv.poll(deadline, handler, &mut self.sendq, &mut self.rx, &self.waker),
            State::Mmsg(recv) => recv.poll(
                self.socket.as_raw_fd(),
                deadline,
                handler,
                &mut self.sendq,
                &mut self.rx,
                &self.waker,
            ),
        }
    }

    /// Counters since bind.
    pub fn stats(&self) -> IoStats {
        let tx = self.sendq.tx_stats();
        IoStats {
            rx_datagrams: self.rx.datagrams,
            tx_datagrams: tx.datagrams,
            tx_errors: tx.errors,
            tx_dropped: tx.dropped,
            tx_overflow_flushes: tx.overflow_flushes,
            rx_no_buffers: self.rx.no_buffers,
            rx_truncated: self.rx.truncated,
            rx_errors: self.rx.errors,
        }
    }
}

impl fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpIo")
            .field("backend", &self.backend())
            .field("local", &self.local)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for UdpIo {
    fn drop(&mut self) {
        if let State::Uring(recv) = &mut self.state {
            // The kernel may still own receive buffers (armed multishot) and send slots: cancel
            // and wait for the final completions before any of that memory is freed. If that
            // fails, leak the memory rather than let the kernel write into freed pages.
            if !recv.shutdown(&mut self.sendq) {
                tracing::warn!(local = %self.local, "io_uring did not drain on drop; leaking its buffers");
                recv.leak();
                self.sendq.leak();
            }
        }
    }
}

/// Time left until `deadline`; `None` means no deadline.
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

fn set_buffer_sizes(fd: RawFd) {
    for (opt, name) in [(libc::SO_RCVBUF, "SO_RCVBUF"), (libc::SO_SNDBUF, "SO_SNDBUF")] {
        let value = SOCKET_BUFFER;
        // SAFETY: `fd` is an open socket; `value` is a valid c_int that outlives the call, and
        // the length passed matches its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), option = name, "setsockopt failed");
            continue;
        }
        let mut actual: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `actual` and `len` are valid for writes and `len` holds the size of `actual`.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut actual as *mut libc::c_int).cast(), &mut len)
        };
        // The kernel reports twice the usable size; less than asked means rmem_max/wmem_max cap it.
        if rc == 0 && actual < value {
            tracing::debug!(option = name, requested = value, actual, "socket buffer capped by sysctl");
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    const BACKENDS: [BackendChoice; 2] = [BackendChoice::IoUring, BackendChoice::Mmsg];

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn bind(choice: BackendChoice) -> UdpIo {
        let io = UdpIo::bind(localhost(), choice).unwrap();
        let want = if choice == BackendChoice::Mmsg { Backend::Mmsg } else { Backend::IoUring };
        assert_eq!(io.backend(), want);
        io
    }

    /// A client socket with a large receive buffer.
    fn client() -> UdpSocket {
        let s = UdpSocket::bind(localhost()).unwrap();
        set_buffer_sizes(s.as_raw_fd());
        s
    }

    /// Polls until `done` or 10 s pass.
    fn poll_until(io: &mut UdpIo, h: &mut impl DatagramHandler, mut done: impl FnMut(&UdpIo) -> bool) {
        let start = Instant::now();
        while !done(io) {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out: {:?}", io.stats());
            io.poll(Some(Duration::from_millis(20)), h).unwrap();
        }
    }

    /// Counts datagrams arriving at `sock` on a thread until `expected` or 1 s of silence.
    fn count_in_thread(sock: UdpSocket, expected: usize) -> thread::JoinHandle<usize> {
        thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut buf = [0u8; 4096];
            let mut n = 0;
            while n < expected && sock.recv_from(&mut buf).is_ok() {
                n += 1;
            }
            n
        })
    }

    #[derive(Default)]
    struct Echo {
        wakes: usize,
    }

    impl DatagramHandler for Echo {
        fn on_datagram(&mut self, src: SocketAddr, data: &mut [u8], tx: &mut SendQueue) {
            tx.push(src, data);
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {
            self.wakes += 1;
        }
    }

    /// Sends `copies` of each datagram to `sink` via push_with.
    struct FanOut {
        sink: SocketAddr,
        copies: usize,
    }

    impl DatagramHandler for FanOut {
        fn on_datagram(&mut self, _src: SocketAddr, data: &mut [u8], tx: &mut SendQueue) {
            for i in 0..self.copies {
                tx.push_with(self.sink, |buf| {
                    buf[..data.len()].copy_from_slice(data);
                    buf[0] = i as u8;
                    data.len()
                });
            }
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {}
    }

    fn payload(i: usize) -> Vec<u8> {
        let len = 1 + (i * 97) % 1400;
        (0..len).map(|k| (i + k) as u8).collect()
    }

    fn echo(choice: BackendChoice) {
        let mut io = bind(choice);
        let server = io.local_addr();
        let c = client();
        const N: usize = 300;
        let mut sent = Vec::new();
        let mut h = Echo::default();
        for i in 0..N {
            let p = payload(i);
            c.send_to(&p, server).unwrap();
            sent.push(p);
            if i % 50 == 49 {
                io.poll(Some(Duration::ZERO), &mut h).unwrap();
            }
        }
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == N as u64);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..N {
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, server);
            got.push(buf[..n].to_vec());
        }
        got.sort();
        sent.sort();
        assert!(got == sent, "echoed datagrams differ");
        let s = io.stats();
        assert_eq!((s.tx_datagrams, s.tx_errors, s.tx_dropped, s.rx_truncated), (N as u64, 0, 0, 0));
    }

    fn waker_wakes_blocked_poll(choice: BackendChoice) {
        let io = bind(choice);
        let waker = io.waker();
        let polling = Arc::new(AtomicBool::new(false));
        let p = polling.clone();
        let t = thread::spawn(move || {
            let mut io = io;
            let mut h = Echo::default();
            p.store(true, Ordering::SeqCst);
            let start = Instant::now();
            while h.wakes == 0 {
                io.poll(None, &mut h).unwrap();
            }
            start.elapsed()
        });
        while !polling.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        thread::sleep(Duration::from_millis(100));
        let woke_at = Instant::now();
        waker.wake();
        let blocked = t.join().unwrap();
        assert!(blocked >= Duration::from_millis(50), "poll(None) returned early: {blocked:?}");
        assert!(woke_at.elapsed() < Duration::from_secs(2), "wake took {:?}", woke_at.elapsed());
    }

    fn wake_before_poll_is_kept(choice: BackendChoice) {
        let mut io = bind(choice);
        let mut h = Echo::default();
        io.waker().wake();
        io.waker().wake();
        assert_eq!(io.poll(Some(Duration::from_secs(5)), &mut h).unwrap(), 0);
        assert_eq!(h.wakes, 1, "wake-ups coalesce");
        let start = Instant::now();
        io.poll(Some(Duration::from_millis(30)), &mut h).unwrap();
        assert_eq!(h.wakes, 1, "no spurious wake after reset");
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    fn timeout_returns(choice: BackendChoice) {
        let mut io = bind(choice);
        let mut h = Echo::default();
        let start = Instant::now();
        assert_eq!(io.poll(Some(Duration::from_millis(50)), &mut h).unwrap(), 0);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(40) && took < Duration::from_secs(2), "took {took:?}");
        let start = Instant::now();
        assert_eq!(io.poll(Some(Duration::ZERO), &mut h).unwrap(), 0);
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    fn burst_fan_out(choice: BackendChoice) {
        const N: usize = 5_000;
        const COPIES: usize = 4;
        let mut io = bind(choice);
        let server = io.local_addr();
        let sink = client();
        let mut h = FanOut { sink: sink.local_addr().unwrap(), copies: COPIES };
        let counter = count_in_thread(sink, N * COPIES);
        let sender = thread::spawn(move || {
            let c = client();
            for i in 0..N {
                c.send_to(&(i as u32).to_be_bytes().repeat(25), server).unwrap();
            }
        });
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == N as u64);
        sender.join().unwrap();
        let received = counter.join().unwrap();
        let s = io.stats();
        assert_eq!(s.tx_datagrams + s.tx_dropped, (N * COPIES) as u64, "{s:?}");
        assert_eq!(s.tx_errors, 0);
        assert_eq!(received, N * COPIES, "sink got {received}, stats {s:?}");
    }

    fn overflow_flushes(choice: BackendChoice) {
        let mut io = bind(choice);
        let server = io.local_addr();
        let sink = client();
        let copies = io.send_queue().capacity() * 2 + 10;
        let mut h = FanOut { sink: sink.local_addr().unwrap(), copies };
        let counter = count_in_thread(sink, copies * 2);
        let c = client();
        c.send_to(b"x-one", server).unwrap();
        c.send_to(b"x-two", server).unwrap();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 2);
        let s = io.stats();
        assert!(s.tx_overflow_flushes >= 3, "{s:?}");
        assert_eq!(s.tx_datagrams, (copies * 2) as u64, "{s:?}");
        assert_eq!(counter.join().unwrap(), copies * 2);
        assert_eq!(io.send_queue().len(), 0);
    }

    fn truncated_dropped(choice: BackendChoice) {
        let mut io = bind(choice);
        let c = client();
        c.send_to(&[7u8; MAX_DATAGRAM + 100], io.local_addr()).unwrap();
        c.send_to(&[8u8; MAX_DATAGRAM], io.local_addr()).unwrap();
        let mut h = Echo::default();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 1);
        assert_eq!(io.stats().rx_truncated, 1);
        let mut buf = [0u8; 4096];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(c.recv(&mut buf).unwrap(), MAX_DATAGRAM);
    }

    fn timer_sends_and_bad_family(choice: BackendChoice) {
        let mut io = bind(choice);
        let c = client();
        let v6: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        io.send_queue().push(v6, b"unreachable family");
        io.send_queue().push(c.local_addr().unwrap(), b"from a timer");
        io.send_queue().push_with(c.local_addr().unwrap(), |_| 0);
        assert_eq!(io.send_queue().len(), 1);
        io.poll(Some(Duration::ZERO), &mut Echo::default()).unwrap();
        let mut buf = [0u8; 64];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"from a timer"[..], io.local_addr()));
        assert_eq!(io.stats().tx_errors, 1);
    }

    fn ipv6_echo(choice: BackendChoice) {
        let Ok(mut io) = UdpIo::bind("[::1]:0".parse().unwrap(), choice) else {
            return; // no IPv6 loopback here
        };
        let c = UdpSocket::bind("[::1]:0").unwrap();
        c.send_to(b"six", io.local_addr()).unwrap();
        poll_until(&mut io, &mut Echo::default(), |io| io.stats().rx_datagrams == 1);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.recv(&mut buf).unwrap(), 3);
    }

    fn dual_stack_echo(choice: BackendChoice) {
        let Ok(mut io) = UdpIo::bind("[::]:0".parse().unwrap(), choice) else {
            return; // no IPv6 here
        };
        let port = io.local_addr().port();
        let c = client();
        c.send_to(b"four", ("127.0.0.1", port)).unwrap();
        struct Check(Option<SocketAddr>);
        impl DatagramHandler for Check {
            fn on_datagram(&mut self, src: SocketAddr, data: &mut [u8], tx: &mut SendQueue) {
                self.0 = Some(src);
                tx.push(src, data);
            }
            fn on_wake(&mut self, _tx: &mut SendQueue) {}
        }
        let mut h = Check(None);
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 1);
        assert_eq!(h.0, Some(c.local_addr().unwrap()), "v4-mapped source reported as V4");
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.recv(&mut buf).unwrap(), 4);
    }

    macro_rules! per_backend {
        ($($name:ident),* $(,)?) => {
            mod uring {
                $( #[test] fn $name() { super::$name(super::BackendChoice::IoUring) } )*
            }
            mod mmsg {
                $( #[test] fn $name() { super::$name(super::BackendChoice::Mmsg) } )*
            }
        };
    }

    per_backend!(
        echo,
        waker_wakes_blocked_poll,
        wake_before_poll_is_kept,
        timeout_returns,
        burst_fan_out,
        overflow_flushes,
        truncated_dropped,
        timer_sends_and_bad_family,
        ipv6_echo,
        dual_stack_echo,
    );

    #[test]
    fn auto_picks_io_uring_here() {
        let io = UdpIo::bind(localhost(), BackendChoice::Auto).unwrap();
        assert_eq!(io.backend(), Backend::IoUring);
    }

    #[test]
    fn drop_with_traffic_in_flight() {
        for choice in BACKENDS {
            let mut io = bind(choice);
            let c = client();
            for _ in 0..100 {
                c.send_to(&[1; 1200], io.local_addr()).unwrap();
            }
            let sink = client();
            let mut h = FanOut { sink: sink.local_addr().unwrap(), copies: 3 };
            io.poll(Some(Duration::from_millis(10)), &mut h).unwrap();
            io.send_queue().push(sink.local_addr().unwrap(), b"queued at drop");
            if let State::Uring(recv) = &mut io.state {
                assert!(recv.shutdown(&mut io.sendq), "io_uring drained");
            }
            drop(io);
        }
    }

    #[test]
    fn udpio_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<UdpIo>();
        assert_send::<Waker>();
        let _ = AtomicUsize::new(0);
    }
}
