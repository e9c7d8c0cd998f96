//! ICE-TCP connections of a `UdpIo` opened and closed many times, every way they close (the
//! peer after a frame, the peer halfway through a frame, the core at the STUN timeout with a
//! read in flight), leak no file descriptor and no table slot, on both backends; dropping the
//! `UdpIo` with connections open gives every fd back. A binary of its own, so that no
//! concurrent test opens or closes fds while `/proc/self/fd` is counted; the tests here run
//! one at a time.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rtcdn::reactor::io::{
    Backend, BackendChoice, DatagramHandler, SendQueue, SocketId, TcpLimits, UdpIo,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Connections per round: the whole table.
const TABLE: usize = 48;
const ROUNDS: usize = 6;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Answers every frame on its connection, so that a connection which spoke is bound.
#[derive(Default)]
struct Echo {
    closed: usize,
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
        tx.push_on(socket, src, data);
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

fn poll_until(io: &mut UdpIo, h: &mut Echo, what: &str, done: impl Fn(&UdpIo) -> bool) {
    let start = Instant::now();
    while !done(io) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}: {:?}",
            io.tcp_stats()
        );
        io.poll(Some(Duration::from_millis(10)), h).unwrap();
    }
}

fn churn(choice: BackendChoice, want: Backend) {
    let fds_before = open_fds();
    let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), choice).unwrap();
    assert_eq!(io.backend(), want);
    let limits = TcpLimits {
        max_connections: TABLE,
        max_per_ip: 0,
        stun_timeout: Duration::from_millis(200),
        ..TcpLimits::default()
    };
    let addr = io
        .listen_tcp("127.0.0.1:0".parse().unwrap(), limits)
        .unwrap();
    let mut h = Echo::default();
    // One poll: the io_uring enables its ring and arms the ACCEPT.
    io.poll(Some(Duration::ZERO), &mut h).unwrap();
    let fds_listening = open_fds();

    for round in 0..ROUNDS {
        let base = io.tcp_stats();
        // The whole table each round: a slot still held by an old connection would turn one
        // of these away (rejected_full).
        let mut clients: Vec<TcpStream> = (0..TABLE)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        for (k, c) in clients.iter_mut().enumerate() {
            match k % 3 {
                0 => c.write_all(&framed_stun(k as u8)).unwrap(),
                1 => {
                    let mut bytes = framed_stun(k as u8);
                    bytes.extend_from_slice(&[4, 0, 0x80, 1, 2]); // half a 1024-byte frame
                    c.write_all(&bytes).unwrap();
                }
                _ => {} // silent: the core closes it at the STUN timeout
            }
        }
        let speaking = (0..TABLE).filter(|k| k % 3 != 2).count() as u64;
        poll_until(&mut io, &mut h, "accepts and frames", |io| {
            let s = io.tcp_stats();
            s.accepted - base.accepted == TABLE as u64 && s.rx_frames - base.rx_frames == speaking
        });
        let s = io.tcp_stats();
        assert_eq!(
            (s.rejected_full, s.open),
            (0, TABLE as u64),
            "round {round}"
        );
        // The speakers close (some mid-frame); the silent ones wait for the core.
        let silent: Vec<TcpStream> = clients
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % 3 == 2)
            .map(|(_, c)| c)
            .collect();
        poll_until(&mut io, &mut h, "every connection closed", |io| {
            io.tcp_stats().open == 0
        });
        drop(silent);
        let s = io.tcp_stats();
        assert_eq!(
            s.closed_by_peer - base.closed_by_peer,
            speaking,
            "round {round}"
        );
        assert_eq!(
            s.stun_timeouts - base.stun_timeouts,
            TABLE as u64 - speaking,
            "round {round}"
        );
    }
    assert_eq!(h.closed as u64, ROUNDS as u64 * (2 * TABLE as u64 / 3));
    // Closed connections' fds go once their last operation completed: soon.
    poll_until(&mut io, &mut h, "the fds back", |_| {
        open_fds() == fds_listening
    });

    // Dropped with connections open (reads in flight): every fd comes back.
    let open: Vec<TcpStream> = (0..TABLE / 2)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let base = io.tcp_stats().accepted;
    poll_until(&mut io, &mut h, "accepts", |io| {
        io.tcp_stats().accepted - base == open.len() as u64
    });
    drop(io);
    drop(open);
    assert_eq!(open_fds(), fds_before);
}

#[test]
fn uring_connections_open_and_close_without_leaks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    churn(BackendChoice::IoUring, Backend::IoUring);
}

#[test]
fn mmsg_connections_open_and_close_without_leaks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    churn(BackendChoice::Mmsg, Backend::Mmsg);
}
