//! One media core thread: the IO loop around a sans-IO [`MediaCore`].
//!
//! The loop polls the core's sockets and hands every datagram, command, DTLS event and item
//! from another core to the media core, with the time read once per batch (a datagram gets
//! the time the kernel received it: see `arrival`); then it flushes,
//! passes the media core's events to signalling and its items to the other cores' rings, opens
//! and closes relay sockets, and sleeps until the media core's next deadline. Nothing here
//! decides anything about media: that is `crate::media`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::control::{
    CoreCommand, CoreEvent, CoreId, RelayPath, SessionId, SessionRole, SessionSpec,
};
use crate::dtls::{DtlsCertificate, DtlsEvent};
use crate::media::{MediaCore, MediaCoreConfig, SocketRequest};
use crate::reactor::arrival::ArrivalClock;
use crate::reactor::dtls::HandshakeTasks;
use crate::reactor::io::{DatagramHandler, SendQueue, SocketId, UdpIo};
use crate::reactor::mesh::{MeshEndpoint, MeshInbox, MeshOutbox};
use crate::session::SessionTimeouts;

use crate::reactor::stats::StatsSchedule;
pub use crate::reactor::stats::{CoreStats, ResidenceCounts};

/// Items taken from each other core's hand-off ring per wake-up; the rest wait for the next
/// poll, after this core's own datagrams and timers.
const HANDOFF_BATCH: usize = 64;

/// Everything a core thread needs; built by the node before the thread starts.
pub struct CoreSetup {
    /// This core.
    pub id: CoreId,
    /// Its socket.
    pub io: UdpIo,
    /// Commands from signalling.
    pub commands: Receiver<CoreCommand>,
    /// Events to signalling.
    pub events: tokio::sync::mpsc::UnboundedSender<CoreEvent>,
    /// The runtime DTLS handshakes run on.
    pub runtime: tokio::runtime::Handle,
    /// Our DTLS certificate.
    pub certificate: DtlsCertificate,
    /// This core's ends of the cross-core rings.
    pub mesh: MeshEndpoint,
    /// Published counters.
    pub stats: Arc<CoreStats>,
    /// Connect and ICE consent timeouts of new sessions.
    pub timeouts: SessionTimeouts,
}

/// The media core as a real node runs it: handshakes as tasks, other cores behind rings.
type Media = MediaCore<HandshakeTasks, MeshOutbox>;

/// What [`UdpIo::poll`] calls back into.
struct Driver {
    media: Media,
    commands: Receiver<CoreCommand>,
    dtls_events: Receiver<(SessionId, DtlsEvent)>,
    inbox: MeshInbox,
    /// The time of the current batch, and of each datagram in it.
    clock: ArrivalClock,
}

impl DatagramHandler for Driver {
    fn on_datagram(
        &mut self,
        socket: SocketId,
        src: SocketAddr,
        data: &mut [u8],
        received_ns: Option<u64>,
        tx: &mut SendQueue,
    ) {
        let now = self.clock.arrival(received_ns);
        self.media.handle_datagram(now, socket, src, data, tx);
    }

    fn on_wake(&mut self, tx: &mut SendQueue) {
        let now = self.clock.batch_time();
        while let Ok(command) = self.commands.try_recv() {
            self.media.handle_command(now, command, tx);
        }
        while let Ok((id, event)) = self.dtls_events.try_recv() {
            self.media.handle_dtls_event(now, id, event, tx);
        }
        let media = &mut self.media;
        let left = self.inbox.drain(HANDOFF_BATCH, |item| {
            media.handle_forwarded(now, item.stream, item.kind, item.payload(), tx);
        });
        // Ingests (RTMP publishers) wake the core after queueing packets.
        let ingest_left = self.media.handle_ingests(now, tx);
        if left || ingest_left {
            self.media.forward_sink_mut().wake_self();
        }
    }

    fn on_tcp_closed(&mut self, socket: SocketId, src: SocketAddr) {
        let now = self.clock.batch_time();
        self.media.handle_tcp_closed(now, socket, src);
    }

    fn on_batch_end(&mut self, tx: &mut SendQueue) {
        self.media.end_batch(self.clock.batch_time(), tx);
    }
}

/// Runs a core until it is told to shut down.
pub fn run(setup: CoreSetup) {
    let CoreSetup {
        id,
        mut io,
        commands,
        events,
        runtime,
        certificate,
        mesh,
        stats,
        timeouts,
    } = setup;
    let (handshakes, dtls_events) = HandshakeTasks::new(runtime, certificate, io.waker());
    let config = MediaCoreConfig {
        id,
        timeouts,
        seed: (id.0 as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ std::process::id() as u64,
    };
    let mut now = Instant::now();
    let mut driver = Driver {
        media: MediaCore::new(config, handshakes, mesh.outbox, now),
        commands,
        dtls_events,
        inbox: mesh.inbox,
        clock: ArrivalClock::default(),
    };
    // With GSO the send queue holds a frame's sends until its end anyway: the media core holds
    // the frame's plain packets instead and writes them player by player at the end.
    driver.media.set_burst_order(io.gso(), io.send_queue());
    info!(
        core = id.0,
        addr = %io.local_addr(),
        tcp = ?io.tcp_addr(),
        backend = ?io.backend(),
        gso = io.gso(),
        deferred_task_work = io.defers_task_work(),
        "media core started"
    );
    let publish = |media: &Media, io: &mut UdpIo| {
        let handoff_dropped = media.forward_sink().dropped;
        let tcp = io.tcp_stats();
        let udp = io.stats();
        stats.publish(
            &media.counters(),
            handoff_dropped,
            io.send_queue().residence(),
            &udp,
            &tcp,
        );
    };
    // At once: the first publication says whether allocations are counted.
    publish(&driver.media, &mut io);
    let mut schedule = StatsSchedule::published_at(now);
    let mut sessions_published = None;
    while !driver.media.is_shut_down() {
        let wake_at = [driver.media.poll_timeout(), schedule.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let timeout = wake_at.map(|at| at.saturating_duration_since(now));
        let handled = match io.poll(timeout, &mut driver) {
            Ok(handled) => handled,
            Err(e) => {
                warn!(core = id.0, error = %e, "media socket error");
                std::thread::sleep(Duration::from_millis(10));
                0
            }
        };
        let mut active = driver.clock.end_batch() || handled > 0;
        now = Instant::now();
        // The poll ended its batch unless it failed half-way; only a frame still arriving is
        // held across polls (until the media core's timeout).
        driver.media.end_batch(now, io.send_queue());
        while let Some(socket) = io.take_lost_connection() {
            driver
                .media
                .handle_socket_lost(now, socket, io.send_queue());
        }
        driver.serve_socket_requests(now, &mut io);
        if driver.media.poll_timeout().is_some_and(|at| at <= now) {
            driver.media.handle_timeout(now, io.send_queue());
            active = true;
        }
        driver.media.forward_sink_mut().flush_wakes();
        while let Some(event) = driver.media.poll_event() {
            let _ = events.send(event);
        }
        let sessions = driver.media.session_count();
        if sessions_published != Some(sessions) {
            // At once: signalling places new sessions on the least loaded core.
            stats.sessions.store(sessions, Ordering::Relaxed);
            sessions_published = Some(sessions);
        }
        if schedule.due(now, active) {
            publish(&driver.media, &mut io);
        }
    }
    driver.media.close();
    info!(core = id.0, "media core stopped");
}

impl Driver {
    /// Opens sockets for new relays and closes those of ended ones; runs between polls, where
    /// the loop has the `UdpIo` itself.
    fn serve_socket_requests(&mut self, now: Instant, io: &mut UdpIo) {
        while let Some(request) = self.media.poll_socket_request() {
            match request {
                SocketRequest::Close(socket) => io.remove_socket(socket),
                SocketRequest::Open(spec) => match open_relay_socket(&spec, io) {
                    Ok(socket) => {
                        debug!(session = %spec.id, %socket, "relay socket opened");
                        self.media
                            .handle_socket_opened(now, *spec, socket, io.send_queue());
                    }
                    Err(e) => {
                        warn!(session = %spec.id, error = %e, "cannot open a relay socket or connection");
                        self.media.handle_socket_failed(spec.id, &e.to_string());
                    }
                },
            }
        }
    }
}

/// A relay's own socket: a UDP socket on the media address, or a TCP connection to the edge's
/// passive candidate (the first of its remote candidates: the link gives it only that one).
fn open_relay_socket(spec: &SessionSpec, io: &mut UdpIo) -> std::io::Result<SocketId> {
    match &spec.role {
        SessionRole::Relay {
            path: RelayPath::Tcp,
            remote_candidates,
            ..
        } => {
            let remote = remote_candidates
                .first()
                .ok_or_else(|| std::io::Error::other("no TCP candidate to connect to"))?;
            io.connect_tcp(*remote)
        }
        _ => {
            let bind = SocketAddr::new(io.local_addr().ip(), 0);
            io.add_socket(bind).map(|(socket, _)| socket)
        }
    }
}
