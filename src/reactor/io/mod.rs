//! UDP I/O backends for a media core: io_uring and recvmmsg/sendmmsg on epoll; and its
//! ICE-TCP listener (`tcp.rs`, [`UdpIo::listen_tcp`]), whose connections the handler sees as
//! sockets of their own ([`SocketId::tcp`]).
//!
//! One [`UdpIo`] per media core owns its main UDP socket ([`SocketId::MAIN`]), up to
//! [`MAX_EXTRA_SOCKETS`] extra sockets added with [`UdpIo::add_socket`] (one per relay session, so
//! that each has its own 5-tuple), and, with the io_uring backend, one ring. Every datagram is
//! reported with the [`SocketId`] it arrived on, and sends name the socket they leave from.
//! The core's run loop looks like this:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use rtcdn::reactor::io::{BackendChoice, DatagramHandler, SendQueue, SocketId, UdpIo};
//!
//! struct Core;
//! impl DatagramHandler for Core {
//!     fn on_datagram(&mut self, socket: SocketId, src: SocketAddr, data: &mut [u8], _received_ns: Option<u64>, tx: &mut SendQueue) {
//!         tx.push_on(socket, src, data); // echo from the socket it arrived on
//!     }
//!     fn on_wake(&mut self, _tx: &mut SendQueue) {}
//! }
//!
//! let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), BackendChoice::Auto)?;
//! let (_relay, _relay_addr) = io.add_socket("127.0.0.1:0".parse().unwrap())?;
//! let mut core = Core;
//! loop {
//!     io.poll(Some(Duration::from_millis(10)), &mut core)?;
//!     // timers: io.send_queue().push(..)
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Memory: every buffer is allocated at [`UdpIo::bind`]; `poll` and the [`SendQueue`] never touch
//! the heap, whatever the number of sockets (all sockets share the receive buffers and the send
//! pool; the per-socket tables are sized for [`MAX_EXTRA_SOCKETS`] at bind). Buffers handed to
//! the kernel have one owner at a time: a receive buffer belongs to the kernel until its
//! completion is handed to the handler and goes back to the kernel when the handler returns; a
//! send slot belongs to the kernel from its SQE until its completion (tokio-uring's `BufResult`
//! rule, applied to pooled slots). Removing a socket frees no memory the kernel could still
//! write: its receive is cancelled and its last completions are drained by later polls.
//!
//! Unsafe code is confined to this module; every block carries a `// SAFETY:` line.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Runs each named test function (taking a [`BackendChoice`]) once per I/O backend, as
/// `uring::NAME` and `mmsg::NAME`; defined before the modules so their tests use it too.
#[cfg(test)]
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

mod interfaces;
mod limits;
mod mem;
mod mmsg;
mod residence;
mod sendq;
mod sockaddr;
mod tcp;
mod uring;
mod waker;

pub use interfaces::interface_addresses;
pub use limits::{open_file_limit, raise_open_file_limit};
pub(crate) use residence::{parse_stamp, realtime_ns};
pub use residence::{ResidenceHistogram, RESIDENCE_BUCKETS};
pub use sendq::SendQueue;
pub use tcp::{TcpLimits, TcpStats};
pub use waker::Waker;

/// Identifies one UDP socket of a [`UdpIo`]: [`SocketId::MAIN`] is the socket given to
/// [`UdpIo::bind`], others come from [`UdpIo::add_socket`]. An id is reused after
/// [`UdpIo::remove_socket`]. (Defined with the media core, which names the socket of every send.)
pub use crate::media::SocketId;

/// Extra sockets one [`UdpIo`] can hold at a time; [`UdpIo::add_socket`] fails beyond.
pub const MAX_EXTRA_SOCKETS: usize = 1024;

/// Entries of the per-socket tables: the main socket (index 0) and the extra ones.
const SOCKET_SLOTS: usize = MAX_EXTRA_SOCKETS + 1;

/// Size of one receive or send buffer slot. Larger datagrams are truncated, counted and dropped.
/// (The media core's, whose writers are promised that much room.)
pub use crate::media::MAX_DATAGRAM;

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
    /// One datagram received on `socket`. `data` may be modified in place (SRTP decrypt); it is
    /// only valid during the call. `received_ns` is when the kernel received it (its
    /// `SO_TIMESTAMPNS` stamp, `CLOCK_REALTIME` nanoseconds), if it stamped it: datagrams
    /// handled in one batch may have arrived milliseconds apart. Sends queued into `tx` go
    /// out in the next batch.
    fn on_datagram(
        &mut self,
        socket: SocketId,
        src: SocketAddr,
        data: &mut [u8],
        received_ns: Option<u64>,
        tx: &mut SendQueue,
    );
    /// The Waker fired (control messages or packets from other cores are waiting).
    fn on_wake(&mut self, tx: &mut SendQueue);
    /// The poll's datagrams and wake-up were handled; what the handler queued is flushed right
    /// after. A handler that holds input to send it in another order (the media core's burst
    /// order) writes it now, so it is held no longer than the poll.
    fn on_batch_end(&mut self, tx: &mut SendQueue) {
        let _ = tx;
    }
    /// ICE-TCP connection `socket`, whose peer was `src`, closed (after a frame arrived on
    /// it): the session it carried has lost that path. Its id may serve another peer next.
    fn on_tcp_closed(&mut self, socket: SocketId, src: SocketAddr) {
        let _ = (socket, src);
    }
}

/// Counters of one [`UdpIo`]. All are totals since bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams handed to the handler.
    pub rx_datagrams: u64,
    /// Datagrams the kernel accepted for sending.
    pub tx_datagrams: u64,
    /// Sends the kernel accepted (one datagram each, or several with GSO): `tx_datagrams` over
    /// this is the datagrams per send.
    pub tx_sends: u64,
    /// Sends that failed (bad address family, unknown or removed [`SocketId`], ECONNREFUSED
    /// after an ICMP error, EHOSTUNREACH..).
    pub tx_errors: u64,
    /// Sends dropped because the socket send buffer was full (EAGAIN/ENOBUFS) or no slot could
    /// be freed. Real-time media prefers loss to blocking.
    pub tx_dropped: u64,
    /// Times the send pool was full and the queue flushed itself synchronously.
    pub tx_overflow_flushes: u64,
    /// Sends that carried several datagrams (UDP GSO); their datagrams count in
    /// `tx_datagrams`.
    pub tx_gso_sends: u64,
    /// Sockets whose GSO send the kernel refused; they send one datagram at a time since (the
    /// refused datagrams are sent so).
    pub tx_gso_fallbacks: u64,
    /// io_uring: the buffer ring ran dry (ENOBUFS) and the multishot receive had to be re-armed.
    /// Datagrams stay in the socket buffer meanwhile.
    pub rx_no_buffers: u64,
    /// Datagrams longer than [`MAX_DATAGRAM`]; they are dropped.
    pub rx_truncated: u64,
    /// Other receive errors.
    pub rx_errors: u64,
}

/// One media core's UDP sockets with their I/O backend.
pub struct UdpIo {
    // Field order matters for drop: the send queue owns the ring, which is closed before the
    // receive buffers are freed (and `Drop` first cancels and drains everything in flight).
    sendq: SendQueue,
    state: State,
    /// The main socket, kept open here; the backends and the send queue use its fd.
    _socket: UdpSocket,
    /// Extra sockets; `extras[i]` is `SocketId(i + 1)`.
    extras: Vec<Option<Extra>>,
    /// io_uring: removed sockets whose fd may still be named by an SQE the kernel has not
    /// consumed yet (only if a submit failed); closed once the SQ is empty, so the fd number
    /// cannot be reused under such an SQE.
    closing: Vec<UdpSocket>,
    waker: Waker,
    local: SocketAddr,
    rx: RxStats,
    /// The ICE-TCP listener and its connections' read side, once [`UdpIo::listen_tcp`] ran.
    tcp: Option<tcp::TcpSide>,
}

struct Extra {
    socket: UdpSocket,
    local: SocketAddr,
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
        let (socket, local) = open_socket(addr)?;
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
        Ok(Self {
            sendq,
            state,
            _socket: socket,
            extras: Vec::new(),
            closing: Vec::new(),
            waker,
            local,
            rx: RxStats::default(),
            tcp: None,
        })
    }

    fn setup_uring(fd: RawFd, v6: bool, waker: &Waker) -> io::Result<(SendQueue, State)> {
        let (ring, recv) = uring::setup(fd, waker.raw_fd())?;
        Ok((SendQueue::new(fd, v6, Some(ring))?, State::Uring(recv)))
    }

    fn setup_mmsg(fd: RawFd, v6: bool, waker: &Waker) -> io::Result<(SendQueue, State)> {
        let recv = mmsg::MmsgRecv::new(fd, waker.raw_fd())?;
        Ok((SendQueue::new(fd, v6, None)?, State::Mmsg(recv)))
    }

    /// Whether io_uring defers its task work to the polling thread (kernel 6.1+); without it
    /// the receives' kernel work runs on the thread that bound the socket.
    pub fn defers_task_work(&self) -> bool {
        self.sendq
            .ring_ref()
            .is_some_and(|ring| ring.defers_task_work())
    }

    /// Turns UDP GSO on or off for this core's sends (on by default): see
    /// [`SendQueue::set_gso`]. Queued sends are flushed first.
    pub fn set_gso(&mut self, on: bool) {
        if let Err(error) = self.sendq.flush() {
            tracing::warn!(%error, "flush before set_gso failed");
        }
        self.sendq.set_gso(on);
    }

    /// Whether UDP GSO is on for this core's sends.
    pub fn gso(&self) -> bool {
        self.sendq.gso()
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

    /// Binds another UDP socket (e.g. to `(media bind ip, 0)`) with the main socket's options
    /// (non-blocking, large buffers; an IPv6 socket is dual-stack if the system allows it),
    /// polled by this `UdpIo`. Returns its id and local address. Datagrams to it reach
    /// [`DatagramHandler::on_datagram`] with that id from the next [`poll`](Self::poll) on;
    /// [`SendQueue::push_on`] sends from it. Fails if [`MAX_EXTRA_SOCKETS`] are open.
    pub fn add_socket(&mut self, addr: SocketAddr) -> io::Result<(SocketId, SocketAddr)> {
        let reusable = |k: usize, state: &State| match state {
            // A slot whose cancelled receive has not completed yet is not reused.
            State::Uring(recv) => recv.slot_free((k + 1) as u16),
            State::Mmsg(_) => true,
        };
        let slot = (0..self.extras.len())
            .find(|&k| self.extras[k].is_none() && reusable(k, &self.state))
            .or_else(|| (self.extras.len() < MAX_EXTRA_SOCKETS).then_some(self.extras.len()))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "this media core already has {MAX_EXTRA_SOCKETS} extra sockets"
                ))
            })?;
        let (socket, local) = open_socket(addr)?;
        let idx = (slot + 1) as u16;
        let fd = socket.as_raw_fd();
        match &mut self.state {
            State::Uring(recv) => recv.add(idx, fd),
            State::Mmsg(recv) => recv.add(idx, fd)?,
        }
        self.sendq.set_socket(idx, fd, local.is_ipv6());
        if slot == self.extras.len() {
            self.extras.push(None);
        }
        self.extras[slot] = Some(Extra { socket, local });
        tracing::debug!(main = %self.local, socket = idx, %local, "extra media socket added");
        Ok((SocketId(idx), local))
    }

    /// Closes an extra socket. Sends queued on it are flushed first; sends pushed on it later
    /// count as `tx_errors`. Datagrams it received but not yet handed to the handler are
    /// dropped. io_uring: its multishot receive is cancelled; the final completions are drained
    /// by later polls (the shared receive buffers stay mapped, so nothing the kernel may still
    /// write is freed). An ICE-TCP id closes the connection if the core opened it
    /// ([`connect_tcp`](Self::connect_tcp)). Unknown ids and [`SocketId::MAIN`] are ignored.
    pub fn remove_socket(&mut self, id: SocketId) {
        if id == SocketId::MAIN {
            tracing::warn!(local = %self.local, "remove_socket(MAIN) ignored: the main socket lives as long as the UdpIo");
            return;
        }
        if let Some(idx) = id.tcp_index() {
            if let Some(tcp) = self.tcp.as_mut() {
                tcp.close_outgoing(idx, &mut self.sendq);
            }
            return;
        }
        let Some(extra) = self
            .extras
            .get_mut(usize::from(id.0) - 1)
            .and_then(Option::take)
        else {
            return;
        };
        // Queued sends on this socket go out now, while its fd is open.
        if let Err(error) = self.sendq.flush() {
            tracing::warn!(%error, "flush before remove_socket failed");
        }
        self.sendq.clear_socket(id.0);
        let defer_close = match &mut self.state {
            State::Uring(recv) => recv.remove(id.0, &mut self.sendq),
            State::Mmsg(recv) => {
                recv.remove(extra.socket.as_raw_fd());
                false
            }
        };
        tracing::debug!(main = %self.local, socket = id.0, local = %extra.local, "extra media socket removed");
        if defer_close {
            self.closing.push(extra.socket);
        }
        while self.extras.last().is_some_and(Option::is_none) && self.state_allows_trim() {
            self.extras.pop();
        }
    }

    /// Whether the last extras entry may be dropped from the table (its id is then reused).
    fn state_allows_trim(&self) -> bool {
        match &self.state {
            State::Uring(recv) => recv.slot_free(self.extras.len() as u16),
            State::Mmsg(_) => true,
        }
    }

    /// Listens for ICE-TCP (RFC 6544, passive) on `addr`: accepted connections reach the
    /// handler as [`SocketId::tcp`] ids with the peer's address as source, one frame per call,
    /// and sends to those ids are framed into the connection (see `tcp.rs`). Returns the
    /// listening address. Once only.
    pub fn listen_tcp(&mut self, addr: SocketAddr, limits: TcpLimits) -> io::Result<SocketAddr> {
        if self.tcp.is_some() {
            return Err(io::Error::other(
                "this media core listens for ICE-TCP already",
            ));
        }
        let side = tcp::TcpSide::listen(addr, limits, &mut self.sendq)?;
        // io_uring drives the TCP side with its own SQEs (`tcp/uring.rs`).
        if let State::Mmsg(recv) = &mut self.state {
            recv.watch_tcp(side.poll_fd())?;
        }
        let local = side.local_addr().unwrap_or(addr);
        self.tcp = Some(side);
        Ok(local)
    }

    /// The ICE-TCP listening address, if the core listens.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr())
    }

    /// Opens an ICE-TCP connection to `remote` (RFC 6544, the active side: a relay over TCP),
    /// from the main socket's address: the handler sees it as the returned [`SocketId::tcp`]
    /// id with `remote` as source, and sends to that id are framed into it, as for accepted
    /// connections. The connect is non-blocking: what is sent before it completes waits in the
    /// connection's queue, and a connect that fails closes it (logged and counted in
    /// [`TcpStats`]). [`remove_socket`](Self::remove_socket) closes it. On a core that does not
    /// listen, the first connect sets up the TCP side with default limits.
    pub fn connect_tcp(&mut self, remote: SocketAddr) -> io::Result<SocketId> {
        let side = match self.tcp.take() {
            Some(side) => side,
            None => {
                let side = tcp::TcpSide::outgoing_only(TcpLimits::default(), &mut self.sendq)?;
                if let State::Mmsg(recv) = &mut self.state {
                    recv.watch_tcp(side.poll_fd())?;
                }
                side
            }
        };
        let tcp = self.tcp.insert(side);
        let idx = tcp.connect(self.local.ip(), remote, &mut self.sendq)?;
        Ok(SocketId::tcp(idx))
    }

    /// ICE-TCP counters (all zero if the core does not listen).
    pub fn tcp_stats(&self) -> TcpStats {
        self.tcp
            .as_ref()
            .map(|t| t.stats(&self.sendq))
            .unwrap_or_default()
    }

    /// A connection opened by [`connect_tcp`](Self::connect_tcp) that failed or that its peer
    /// closed since the last call (it is closed; its id stays taken until
    /// [`remove_socket`](Self::remove_socket)).
    pub fn take_lost_connection(&mut self) -> Option<SocketId> {
        let idx = self.tcp.as_mut()?.take_lost()?;
        Some(SocketId::tcp(idx))
    }

    /// The local address of `id`, if it is open.
    pub fn socket_addr(&self, id: SocketId) -> Option<SocketAddr> {
        if id == SocketId::MAIN {
            return Some(self.local);
        }
        self.extras
            .get(usize::from(id.0) - 1)?
            .as_ref()
            .map(|e| e.local)
    }

    /// Open extra sockets.
    pub fn extra_sockets(&self) -> usize {
        self.extras.iter().filter(|e| e.is_some()).count()
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
    /// received datagram (at most 256 per call), `on_wake` if woken and `on_batch_end`, then
    /// flushes sends queued by the handler. Sends are also flushed as soon as a datagram's handling leaves 64
    /// or more queued, so a large fan-out does not wait for the rest of the batch; with GSO
    /// (the default), after a datagram that ends a frame (RTP marker bit), so that each
    /// destination's packets of the frame leave in one send. Returns the number of datagrams
    /// handled.
    ///
    /// A signal interrupting the wait makes it return early (possibly with 0).
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        handler: &mut impl DatagramHandler,
    ) -> io::Result<usize> {
        // A timeout too large to represent waits indefinitely.
        let mut deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if let Some(at) = self.tcp.as_ref().and_then(|t| t.deadline()) {
            // ICE-TCP timeouts are checked in the poll: no need for the caller to know.
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        let handled = match &mut self.state {
            State::Uring(recv) => recv.poll(
                deadline,
                handler,
                &mut self.sendq,
                &mut self.rx,
                &self.waker,
                self.tcp.as_mut(),
            ),
            State::Mmsg(recv) => recv.poll(
                deadline,
                handler,
                &mut self.sendq,
                &mut self.rx,
                &self.waker,
                self.tcp.as_mut(),
            ),
        };
        if !self.closing.is_empty() && !self.sendq.has_unsubmitted() {
            self.closing.clear();
        }
        handled
    }

    /// Counters since bind.
    pub fn stats(&self) -> IoStats {
        let tx = self.sendq.tx_stats();
        IoStats {
            rx_datagrams: self.rx.datagrams,
            tx_datagrams: tx.datagrams,
            tx_sends: tx.sends,
            tx_errors: tx.errors,
            tx_dropped: tx.dropped,
            tx_overflow_flushes: tx.overflow_flushes,
            tx_gso_sends: tx.gso_sends,
            tx_gso_fallbacks: tx.gso_fallbacks,
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
            // ICE-TCP first: its connections' buffers and fds are borrowed by the operations
            // in flight. On failure they are leaked, like the receive buffers below.
            if let Some(tcp) = self.tcp.as_mut() {
                if !tcp.uring_drain(&mut self.sendq) {
                    tracing::warn!(local = %self.local, "ICE-TCP io_uring operations did not drain on drop; leaking their buffers");
                    std::mem::forget(self.tcp.take());
                    self.sendq.leak_tcp();
                }
            }
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

/// Binds a UDP socket with the options every media socket gets.
fn open_socket(addr: SocketAddr) -> io::Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    set_buffer_sizes(socket.as_raw_fd());
    residence::enable_timestamps(socket.as_raw_fd());
    let local = socket.local_addr()?;
    Ok((socket, local))
}

/// Time left until `deadline`; `None` means no deadline.
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

fn set_buffer_sizes(fd: RawFd) {
    for (opt, name) in [
        (libc::SO_RCVBUF, "SO_RCVBUF"),
        (libc::SO_SNDBUF, "SO_SNDBUF"),
    ] {
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
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut actual as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        // The kernel reports twice the usable size; less than asked means rmem_max/wmem_max cap it.
        if rc == 0 && actual < value {
            tracing::debug!(
                option = name,
                requested = value,
                actual,
                "socket buffer capped by sysctl"
            );
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
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
        let want = if choice == BackendChoice::Mmsg {
            Backend::Mmsg
        } else {
            Backend::IoUring
        };
        assert_eq!(io.backend(), want);
        io
    }

    /// A client socket with a large receive buffer.
    fn client() -> UdpSocket {
        let s = UdpSocket::bind(localhost()).unwrap();
        set_buffer_sizes(s.as_raw_fd());
        // A sink counts thousands of datagrams from a thread that a loaded machine may not
        // run for a while: past `net.core.rmem_max` where the tests may (as root), so the
        // kernel holds them all rather than drop some.
        let value: libc::c_int = 16 << 20;
        // SAFETY: `s` is an open socket; `value` is a valid c_int that outlives the call, and
        // the length passed matches its size. Refused without CAP_NET_ADMIN, which is fine.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        s
    }

    /// Polls until `done` or 10 s pass.
    fn poll_until(
        io: &mut UdpIo,
        h: &mut impl DatagramHandler,
        mut done: impl FnMut(&UdpIo) -> bool,
    ) {
        let start = Instant::now();
        while !done(io) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out: {:?}",
                io.stats()
            );
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
        fn on_datagram(
            &mut self,
            _socket: SocketId,
            src: SocketAddr,
            data: &mut [u8],
            _received_ns: Option<u64>,
            tx: &mut SendQueue,
        ) {
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
        fn on_datagram(
            &mut self,
            _socket: SocketId,
            _src: SocketAddr,
            data: &mut [u8],
            _received_ns: Option<u64>,
            tx: &mut SendQueue,
        ) {
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
        assert_eq!(
            (s.tx_datagrams, s.tx_errors, s.tx_dropped, s.rx_truncated),
            (N as u64, 0, 0, 0)
        );
        // Every datagram carried a kernel stamp and its residence ended at a flush; none can
        // have stayed longer than this test ran.
        let residence = io.send_queue().residence();
        assert_eq!(residence.total(), N as u64);
        let longest = (0..RESIDENCE_BUCKETS)
            .filter(|&i| residence.counts()[i] > 0)
            .map(|i| ResidenceHistogram::bucket_range(i).0)
            .max()
            .unwrap();
        assert!(longest < 10_000_000_000, "residence {longest} ns");
    }

    /// Keeps the kernel's receive stamps.
    #[derive(Default)]
    struct Stamps(Vec<Option<u64>>);

    impl DatagramHandler for Stamps {
        fn on_datagram(
            &mut self,
            _socket: SocketId,
            _src: SocketAddr,
            _data: &mut [u8],
            received_ns: Option<u64>,
            _tx: &mut SendQueue,
        ) {
            self.0.push(received_ns);
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {}
    }

    /// Datagrams that waited in the socket and are handled in one batch carry the times they
    /// arrived, not the time of the batch: what transport-wide feedback reports.
    fn datagrams_carry_their_arrival_times(choice: BackendChoice) {
        let mut io = bind(choice);
        let c = client();
        let before = residence::realtime_ns();
        for _ in 0..3 {
            c.send_to(b"stamped", io.local_addr()).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        let mut h = Stamps::default();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 3);
        let after = residence::realtime_ns();
        let stamps: Vec<u64> = h.0.iter().map(|s| s.expect("stamped")).collect();
        assert!(
            stamps.iter().all(|&s| (before..=after).contains(&s)),
            "{stamps:?}"
        );
        for pair in stamps.windows(2) {
            let apart = pair[1].saturating_sub(pair[0]);
            assert!(
                apart >= 15_000_000,
                "sent 20 ms apart, stamped {apart} ns apart"
            );
        }
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
        assert!(
            blocked >= Duration::from_millis(50),
            "poll(None) returned early: {blocked:?}"
        );
        assert!(
            woke_at.elapsed() < Duration::from_secs(2),
            "wake took {:?}",
            woke_at.elapsed()
        );
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
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_secs(2),
            "took {took:?}"
        );
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
        let mut h = FanOut {
            sink: sink.local_addr().unwrap(),
            copies: COPIES,
        };
        // The sender stays at most WINDOW datagrams ahead of what the sink has read, so the
        // sink's socket buffer cannot overflow however the two cores are scheduled: loss here
        // would be ours, not the kernel's.
        const WINDOW: usize = 256;
        let sunk = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = {
            let sunk = sunk.clone();
            thread::spawn(move || {
                sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 4096];
                let mut n = 0;
                while n < N * COPIES && sink.recv_from(&mut buf).is_ok() {
                    n += 1;
                    sunk.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                n
            })
        };
        let sender = thread::spawn(move || {
            let c = client();
            for i in 0..N {
                let deadline = Instant::now() + Duration::from_secs(10);
                while i > WINDOW
                    && sunk.load(std::sync::atomic::Ordering::Relaxed) < (i - WINDOW) * COPIES
                {
                    if Instant::now() > deadline {
                        return;
                    }
                    thread::yield_now();
                }
                c.send_to(&(i as u32).to_be_bytes().repeat(25), server)
                    .unwrap();
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
        let mut h = FanOut {
            sink: sink.local_addr().unwrap(),
            copies,
        };
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
        c.send_to(&[7u8; MAX_DATAGRAM + 100], io.local_addr())
            .unwrap();
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
        io.send_queue()
            .push(c.local_addr().unwrap(), b"from a timer");
        io.send_queue().push_with(c.local_addr().unwrap(), |_| 0);
        assert_eq!(io.send_queue().len(), 1);
        io.poll(Some(Duration::ZERO), &mut Echo::default()).unwrap();
        let mut buf = [0u8; 64];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"from a timer"[..], io.local_addr()));
        assert_eq!(io.stats().tx_errors, 1);
    }

    /// Sends queued between polls (a timer's) leave before the next poll waits, not when it
    /// returns (here after a second of silence).
    fn sends_between_polls_leave_before_the_wait(choice: BackendChoice) {
        let mut io = bind(choice);
        let c = client();
        let to = c.local_addr().unwrap();
        let arrival = thread::spawn(move || {
            let mut buf = [0u8; 64];
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.recv(&mut buf).map(|_| Instant::now())
        });
        let start = Instant::now();
        io.send_queue().push(to, b"from a timer");
        io.poll(Some(Duration::from_secs(1)), &mut Echo::default())
            .unwrap();
        let arrived = arrival.join().unwrap().expect("the send arrived");
        let waited = arrived.saturating_duration_since(start);
        assert!(
            waited < Duration::from_millis(500),
            "arrived after {waited:?}"
        );
    }

    /// What a handler queues at the end of the batch leaves with the poll.
    fn batch_end_sends_leave_with_the_poll(choice: BackendChoice) {
        /// Holds what arrives and echoes it all at the batch's end.
        #[derive(Default)]
        struct Held {
            held: Vec<(SocketAddr, Vec<u8>)>,
            batches: usize,
        }
        impl DatagramHandler for Held {
            fn on_datagram(
                &mut self,
                _socket: SocketId,
                src: SocketAddr,
                data: &mut [u8],
                _received_ns: Option<u64>,
                _tx: &mut SendQueue,
            ) {
                self.held.push((src, data.to_vec()));
            }
            fn on_wake(&mut self, _tx: &mut SendQueue) {}
            fn on_batch_end(&mut self, tx: &mut SendQueue) {
                self.batches += 1;
                for (src, data) in self.held.drain(..) {
                    tx.push(src, &data);
                }
            }
        }
        let mut io = bind(choice);
        let c = client();
        for i in 0..3u8 {
            c.send_to(&[i], io.local_addr()).unwrap();
        }
        let mut h = Held::default();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 3);
        assert!(h.held.is_empty());
        assert!(h.batches >= 1);
        assert!(io.send_queue().is_empty(), "flushed by the poll");
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 8];
        for i in 0..3u8 {
            assert_eq!(c.recv(&mut buf).unwrap(), 1);
            assert_eq!(buf[0], i);
        }
    }

    fn ipv6_echo(choice: BackendChoice) {
        let Ok(mut io) = UdpIo::bind("[::1]:0".parse().unwrap(), choice) else {
            return; // no IPv6 loopback here
        };
        let c = UdpSocket::bind("[::1]:0").unwrap();
        c.send_to(b"six", io.local_addr()).unwrap();
        poll_until(&mut io, &mut Echo::default(), |io| {
            io.stats().rx_datagrams == 1
        });
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
            fn on_datagram(
                &mut self,
                _socket: SocketId,
                src: SocketAddr,
                data: &mut [u8],
                _received_ns: Option<u64>,
                tx: &mut SendQueue,
            ) {
                self.0 = Some(src);
                tx.push(src, data);
            }
            fn on_wake(&mut self, _tx: &mut SendQueue) {}
        }
        let mut h = Check(None);
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 1);
        assert_eq!(
            h.0,
            Some(c.local_addr().unwrap()),
            "v4-mapped source reported as V4"
        );
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.recv(&mut buf).unwrap(), 4);
    }

    /// Records what arrived on which socket and echoes from the socket it arrived on.
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
            tx: &mut SendQueue,
        ) {
            self.got.push((socket, src, data.to_vec()));
            tx.push_on(socket, src, data);
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {}
    }

    /// Receives one datagram at `c` (2 s timeout): (payload, source).
    fn recv_one(c: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4096];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    }

    /// Nothing arrives at `c` within `wait`.
    fn assert_silent(c: &UdpSocket, wait: Duration) {
        c.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok((n, from)) = c.recv_from(&mut buf) {
            panic!("unexpected {n} bytes from {from}");
        }
    }

    fn extra_socket_receives_and_sends(choice: BackendChoice) {
        let mut io = bind(choice);
        let main = io.local_addr();
        let (a, a_addr) = io.add_socket(localhost()).unwrap();
        let (b, b_addr) = io.add_socket(localhost()).unwrap();
        assert_ne!(a, SocketId::MAIN);
        assert_ne!(a, b);
        assert!(
            a_addr.port() != main.port()
                && b_addr.port() != main.port()
                && a_addr.port() != b_addr.port()
        );
        assert_eq!(io.socket_addr(a), Some(a_addr));
        assert_eq!(io.socket_addr(SocketId::MAIN), Some(main));
        assert_eq!(io.extra_sockets(), 2);

        // The same client talks to all three sockets: demultiplexed by SocketId, echoed from
        // the right port.
        let c = client();
        let mut h = Recorder::default();
        for (round, dst) in [main, a_addr, b_addr, a_addr, main].into_iter().enumerate() {
            let payload = format!("round {round} to {dst}");
            c.send_to(payload.as_bytes(), dst).unwrap();
            poll_until(&mut io, &mut h, |io| {
                io.stats().rx_datagrams == round as u64 + 1
            });
            let (socket, src, data) = h.got.last().unwrap().clone();
            let want = [(SocketId::MAIN, main), (a, a_addr), (b, b_addr)]
                .into_iter()
                .find(|&(_, addr)| addr == dst)
                .unwrap();
            assert_eq!(socket, want.0, "datagram to {dst}");
            assert_eq!(src, c.local_addr().unwrap());
            assert_eq!(data, payload.as_bytes());
            assert_eq!(
                recv_one(&c),
                (payload.into_bytes(), dst),
                "echo leaves from the socket it arrived on"
            );
        }

        // Sends outside poll (timers), interleaved over sockets: each leaves from its own port,
        // in order per socket (mmsg groups the queue per socket).
        let sink = client();
        let sink_addr = sink.local_addr().unwrap();
        let plan = [
            (a, 0u8),
            (SocketId::MAIN, 1),
            (a, 2),
            (b, 3),
            (SocketId::MAIN, 4),
            (a, 5),
            (b, 6),
        ];
        for &(socket, tag) in &plan {
            io.send_queue().push_with_on(socket, sink_addr, |buf| {
                buf[0] = tag;
                1
            });
        }
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        let mut per_source: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
        for _ in 0..plan.len() {
            let (data, from) = recv_one(&sink);
            per_source.entry(from).or_default().push(data[0]);
        }
        assert_eq!(per_source[&a_addr], vec![0, 2, 5]);
        assert_eq!(per_source[&main], vec![1, 4]);
        assert_eq!(per_source[&b_addr], vec![3, 6]);
        let s = io.stats();
        assert_eq!((s.tx_errors, s.tx_dropped, s.rx_errors), (0, 0, 0), "{s:?}");
    }

    fn remove_socket_stops_delivery(choice: BackendChoice) {
        let mut io = bind(choice);
        let main = io.local_addr();
        let (a, a_addr) = io.add_socket(localhost()).unwrap();
        let c = client();
        let mut h = Recorder::default();
        c.send_to(b"before", a_addr).unwrap();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 1);
        assert_eq!(h.got[0].0, a);
        assert_eq!(recv_one(&c), (b"before".to_vec(), a_addr));

        // Datagrams waiting in the socket (and, with io_uring, possibly already in receive
        // buffers) when it is removed are never delivered.
        for _ in 0..50 {
            c.send_to(b"in flight", a_addr).unwrap();
        }
        thread::sleep(Duration::from_millis(20));
        // A send queued on it before removal still goes out (flushed by remove_socket).
        io.send_queue()
            .push_on(a, c.local_addr().unwrap(), b"last words");
        io.remove_socket(a);
        assert_eq!(recv_one(&c), (b"last words".to_vec(), a_addr));
        assert_eq!(io.socket_addr(a), None);
        assert_eq!(io.extra_sockets(), 0);
        io.remove_socket(a); // twice: ignored
        io.remove_socket(SocketId(999)); // never added: ignored
        io.remove_socket(SocketId(u16::MAX)); // out of range: ignored
        io.remove_socket(SocketId::MAIN); // the main socket cannot be removed

        // Traffic to the closed port goes nowhere (ICMP port unreachable); nothing panics.
        for _ in 0..20 {
            let _ = c.send_to(b"after", a_addr);
        }
        let rx_before = io.stats().rx_datagrams;
        for _ in 0..10 {
            io.poll(Some(Duration::from_millis(10)), &mut h).unwrap();
        }
        assert_eq!(
            io.stats().rx_datagrams,
            rx_before,
            "removed socket delivered: {:?}",
            io.stats()
        );
        assert!(h.got.iter().all(|g| g.2 != b"in flight" && g.2 != b"after"));

        // Sends on the removed id are errors, not panics.
        let errors = io.stats().tx_errors;
        io.send_queue()
            .push_on(a, c.local_addr().unwrap(), b"to nowhere");
        io.send_queue()
            .push_with_on(SocketId(4000), c.local_addr().unwrap(), |_| unreachable!());
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        assert_eq!(io.stats().tx_errors, errors + 2);
        assert_silent(&c, Duration::from_millis(100));

        // The main socket works throughout.
        let c2 = client();
        c2.send_to(b"main", main).unwrap();
        poll_until(&mut io, &mut h, |io| {
            io.stats().rx_datagrams == rx_before + 1
        });
        assert_eq!(h.got.last().unwrap().0, SocketId::MAIN);
        assert_eq!(recv_one(&c2), (b"main".to_vec(), main));

        // The id is reused and the new socket works (no stale completion is attributed to it).
        let (a2, a2_addr) = io.add_socket(localhost()).unwrap();
        c.send_to(b"new", a2_addr).unwrap();
        poll_until(&mut io, &mut h, |io| {
            io.stats().rx_datagrams == rx_before + 2
        });
        assert_eq!(h.got.last().unwrap().0, a2);
        assert_eq!(h.got.last().unwrap().2, b"new");
        assert_eq!(recv_one(&c), (b"new".to_vec(), a2_addr));
    }

    fn add_remove_churn_with_traffic(choice: BackendChoice) {
        let mut io = bind(choice);
        let main = io.local_addr();
        let c = client();
        let mut h = Recorder::default();
        let mut delivered = 0u64;
        for round in 0..200 {
            let (ids, addrs): (Vec<SocketId>, Vec<SocketAddr>) =
                (0..5).map(|_| io.add_socket(localhost()).unwrap()).unzip();
            for addr in &addrs {
                c.send_to(b"churn", *addr).unwrap();
            }
            c.send_to(b"main", main).unwrap();
            delivered += 6;
            poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == delivered);
            for _ in 0..6 {
                recv_one(&c);
            }
            // Leave traffic in flight on some of them when they go.
            for addr in &addrs[..2] {
                c.send_to(b"dropped", *addr).unwrap();
            }
            for id in ids {
                io.remove_socket(id);
            }
            if round % 10 == 0 {
                io.poll(Some(Duration::ZERO), &mut h).unwrap();
            }
        }
        for _ in 0..5 {
            io.poll(Some(Duration::from_millis(5)), &mut h).unwrap();
        }
        assert_eq!(io.stats().rx_datagrams, delivered);
        assert_eq!(io.extra_sockets(), 0);
        assert!(h.got.iter().all(|g| g.2 != b"dropped"));
    }

    fn socket_limit(choice: BackendChoice) {
        let mut io = bind(choice);
        let mut ids = Vec::new();
        for _ in 0..MAX_EXTRA_SOCKETS {
            ids.push(io.add_socket(localhost()).unwrap());
        }
        assert!(io.add_socket(localhost()).is_err(), "limit enforced");
        let mut seen: Vec<u16> = ids.iter().map(|(id, _)| id.0).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), MAX_EXTRA_SOCKETS);
        // The last one still receives.
        let (last, last_addr) = *ids.last().unwrap();
        let c = client();
        c.send_to(b"last", last_addr).unwrap();
        let mut h = Recorder::default();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 1);
        assert_eq!(h.got[0].0, last);
        // Room again right after a removal (io_uring: the cancel completes inline and remove
        // drains it), and the id is reused.
        io.remove_socket(ids[7].0);
        let (again, again_addr) = io.add_socket(localhost()).unwrap();
        assert_eq!(again, ids[7].0, "freed id reused");
        assert!(io.add_socket(localhost()).is_err());
        c.send_to(b"reused", again_addr).unwrap();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 2);
        assert_eq!(h.got[1].0, again);
    }

    fn extra_socket_ipv6(choice: BackendChoice) {
        let mut io = bind(choice);
        let Ok((six, six_addr)) = io.add_socket("[::1]:0".parse().unwrap()) else {
            return; // no IPv6 loopback here
        };
        let c = UdpSocket::bind("[::1]:0").unwrap();
        c.send_to(b"six", six_addr).unwrap();
        let mut h = Recorder::default();
        poll_until(&mut io, &mut h, |io| io.stats().rx_datagrams == 1);
        assert_eq!(h.got[0].0, six);
        assert_eq!(recv_one(&c), (b"six".to_vec(), six_addr));
        // A v6 destination from the v4 main socket is still a family error.
        io.send_queue()
            .push(c.local_addr().unwrap(), b"wrong family");
        io.poll(Some(Duration::ZERO), &mut h).unwrap();
        assert_eq!(io.stats().tx_errors, 1);
    }

    /// Sends every datagram it receives to each of `players`, as the media core fans a
    /// stream out.
    struct Players {
        players: Vec<SocketAddr>,
    }

    impl DatagramHandler for Players {
        fn on_datagram(
            &mut self,
            _socket: SocketId,
            _src: SocketAddr,
            data: &mut [u8],
            _received_ns: Option<u64>,
            tx: &mut SendQueue,
        ) {
            for &player in &self.players {
                tx.push(player, data);
            }
        }
        fn on_wake(&mut self, _tx: &mut SendQueue) {}
    }

    /// An RTP-shaped packet `k` of `len` bytes whose bytes all depend on `k`.
    fn rtp_packet(k: usize, len: usize, marker: bool) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + k * 13) as u8).collect();
        p[0] = 0x80;
        p[1] = 96 | if marker { 0x80 } else { 0 };
        p[2..4].copy_from_slice(&(k as u16).to_be_bytes());
        p
    }

    /// Reads `n` datagrams from `sink` (2 s timeout each).
    fn read_n(sink: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| recv_one(sink).0).collect()
    }

    /// A frame of 12 packets (equal size, the last shorter and marked) fanned out to three
    /// players: each player's copies leave in one GSO send and arrive as 12 intact datagrams in
    /// order; a keyframe of 70 needs two sends per player.
    fn gso_frame_fan_out(choice: BackendChoice) {
        let mut io = bind(choice);
        assert!(io.gso(), "GSO is on by default");
        let sinks: Vec<UdpSocket> = (0..3).map(|_| client()).collect();
        let mut h = Players {
            players: sinks.iter().map(|s| s.local_addr().unwrap()).collect(),
        };
        let server = io.local_addr();
        let c = client();
        for (frame, packets) in [12, 70].into_iter().enumerate() {
            let sent: Vec<Vec<u8>> = (0..packets)
                .map(|k| {
                    let last = k + 1 == packets;
                    rtp_packet(frame * 100 + k, if last { 700 } else { 1200 }, last)
                })
                .collect();
            let before = io.stats();
            for p in &sent {
                c.send_to(p, server).unwrap();
            }
            poll_until(&mut io, &mut h, |io| {
                io.stats().tx_datagrams == before.tx_datagrams + 3 * packets as u64
            });
            for sink in &sinks {
                assert_eq!(read_n(sink, packets), sent, "frame {frame}");
            }
            let s = io.stats();
            // Handled in one poll (as usual on loopback) each player gets 1 send for 12
            // packets, 2 for 70; split over polls, more. Never one per packet.
            let gso_sends = s.tx_gso_sends - before.tx_gso_sends;
            assert!(
                (3..3 * packets as u64 / 2).contains(&gso_sends),
                "{gso_sends} GSO sends for frame {frame}: {s:?}"
            );
            assert_eq!((s.tx_errors, s.tx_dropped, s.tx_gso_fallbacks), (0, 0, 0));
        }
    }

    /// Sends queued outside a poll: interleaved over players and of mixed sizes, each player
    /// receives its own in order; with GSO off every datagram is a send of its own.
    fn gso_mixed_sizes_and_off_switch(choice: BackendChoice) {
        let mut io = bind(choice);
        let sinks: Vec<UdpSocket> = (0..2).map(|_| client()).collect();
        let sizes = [1200, 1200, 1200, 160, 1200, 1300, 1300, 50, 1200];
        let mut h = Echo::default();
        for gso in [true, false] {
            io.set_gso(gso);
            let before = io.stats();
            for (k, &len) in sizes.iter().enumerate() {
                for (p, sink) in sinks.iter().enumerate() {
                    let data = rtp_packet(k * 2 + p, len, false);
                    io.send_queue().push(sink.local_addr().unwrap(), &data);
                }
            }
            io.poll(Some(Duration::ZERO), &mut h).unwrap();
            for (p, sink) in sinks.iter().enumerate() {
                let want: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, &len)| rtp_packet(k * 2 + p, len, false))
                    .collect();
                assert_eq!(read_n(sink, sizes.len()), want, "gso {gso}");
            }
            let s = io.stats();
            let gso_sends = s.tx_gso_sends - before.tx_gso_sends;
            // Per player: [1200 x3, 160], [1200], [1300 x2, 50], [1200].
            assert_eq!(gso_sends, if gso { 2 * 2 } else { 0 }, "{s:?}");
            assert_eq!(s.tx_datagrams - before.tx_datagrams, 2 * sizes.len() as u64);
            let sends = if gso { 2 * 4 } else { 2 * sizes.len() as u64 };
            assert_eq!(s.tx_sends - before.tx_sends, sends, "{s:?}");
        }
    }

    /// A socket whose kernel refuses GSO sends (here: UDP checksums turned off with
    /// SO_NO_CHECK, which makes the kernel answer EINVAL to UDP_SEGMENT): the refused
    /// datagrams still arrive, in order, and the socket sends one by one from then on.
    fn gso_refused_falls_back(choice: BackendChoice) {
        let mut io = bind(choice);
        let fd = io.sendq.socket_fd(0).unwrap();
        let one: libc::c_int = 1;
        // SAFETY: `fd` is the open main socket; `one` outlives the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let sink = client();
        let dst = sink.local_addr().unwrap();
        let mut h = Echo::default();
        for round in 0..2 {
            let sent: Vec<Vec<u8>> = (0..10)
                .map(|k| rtp_packet(round * 10 + k, 1000, false))
                .collect();
            for p in &sent {
                io.send_queue().push(dst, p);
            }
            io.poll(Some(Duration::ZERO), &mut h).unwrap();
            assert_eq!(read_n(&sink, sent.len()), sent, "round {round}");
        }
        let s = io.stats();
        assert_eq!(s.tx_gso_fallbacks, 1, "{s:?}");
        assert_eq!((s.tx_gso_sends, s.tx_datagrams, s.tx_errors), (0, 20, 0));
        assert!(!io.sendq.socket_gso(0));
    }

    per_backend!(
        echo,
        datagrams_carry_their_arrival_times,
        waker_wakes_blocked_poll,
        wake_before_poll_is_kept,
        timeout_returns,
        burst_fan_out,
        overflow_flushes,
        truncated_dropped,
        timer_sends_and_bad_family,
        sends_between_polls_leave_before_the_wait,
        batch_end_sends_leave_with_the_poll,
        ipv6_echo,
        dual_stack_echo,
        extra_socket_receives_and_sends,
        remove_socket_stops_delivery,
        add_remove_churn_with_traffic,
        socket_limit,
        extra_socket_ipv6,
        gso_frame_fan_out,
        gso_mixed_sizes_and_off_switch,
        gso_refused_falls_back,
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
            let (_, extra) = io.add_socket(localhost()).unwrap();
            let (gone, gone_addr) = io.add_socket(localhost()).unwrap();
            let c = client();
            for _ in 0..100 {
                c.send_to(&[1; 1200], io.local_addr()).unwrap();
                c.send_to(&[2; 1200], extra).unwrap();
                c.send_to(&[3; 1200], gone_addr).unwrap();
            }
            let sink = client();
            let mut h = FanOut {
                sink: sink.local_addr().unwrap(),
                copies: 3,
            };
            io.poll(Some(Duration::from_millis(10)), &mut h).unwrap();
            io.send_queue()
                .push(sink.local_addr().unwrap(), b"queued at drop");
            // Removed with its receive cancelled but possibly not yet completed.
            io.remove_socket(gone);
            if let State::Uring(recv) = &mut io.state {
                assert!(recv.shutdown(&mut io.sendq), "io_uring drained");
            }
            drop(io);
        }
    }

    /// The kernel side of a receive runs in the task that submitted it. The node binds every
    /// media socket on its main thread and moves it to a core thread: the binding thread must
    /// not be the one that completes the core's receives (it was, until the ring began
    /// disabled and deferred its task work to the poller). Seen from the binding thread, such
    /// task work interrupts a blocking `epoll_wait` with EINTR.
    #[test]
    fn receive_work_stays_on_the_polling_thread() {
        let io = bind(BackendChoice::IoUring);
        if !io.defers_task_work() {
            eprintln!("skipped: this kernel's io_uring cannot defer task work (needs 6.1)");
            return;
        }
        let target = io.local_addr();
        let done = Arc::new(AtomicBool::new(false));
        let poller_done = done.clone();
        let poller = thread::spawn(move || {
            let mut io = io;
            let mut h = Echo::default();
            while !poller_done.load(Ordering::SeqCst) {
                io.poll(Some(Duration::from_millis(5)), &mut h).unwrap();
            }
            io.stats().rx_datagrams
        });
        let sender = thread::spawn(move || {
            let c = client();
            for _ in 0..2_000 {
                c.send_to(&[0x80; 200], target).unwrap();
                thread::sleep(Duration::from_micros(200));
            }
        });
        // SAFETY: a fresh epoll instance with no fds; the event buffer outlives each call.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epfd >= 0);
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
        let mut interrupted = 0;
        while !sender.is_finished() {
            // SAFETY: as above.
            let rc = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), 1, 20) };
            if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                interrupted += 1;
            }
        }
        // SAFETY: closing the fd created above.
        unsafe { libc::close(epfd) };
        done.store(true, Ordering::SeqCst);
        let received = poller.join().unwrap();
        assert!(received > 1_000, "received {received}");
        assert_eq!(
            interrupted, 0,
            "the binding thread ran the poller's receive work"
        );
    }

    #[test]
    fn udpio_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<UdpIo>();
        assert_send::<Waker>();
        let _ = AtomicUsize::new(0);
    }
}
