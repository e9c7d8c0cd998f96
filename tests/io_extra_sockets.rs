//! Extra sockets of a `UdpIo` (one per relay session): adding and removing them many times, with
//! traffic in flight, leaks no file descriptor and leaves the main socket working, on both
//! backends. A binary of its own, so that no concurrent test opens or closes fds while
//! `/proc/self/fd` is counted; the tests here run one at a time.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rtcdn::reactor::io::{Backend, BackendChoice, DatagramHandler, SendQueue, SocketId, UdpIo};

static SERIAL: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[derive(Default)]
struct Echo {
    per_socket: Vec<(SocketId, Vec<u8>)>,
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
        self.per_socket.push((socket, data.to_vec()));
        tx.push_on(socket, src, data);
    }
    fn on_wake(&mut self, _tx: &mut SendQueue) {}
}

fn poll_until(io: &mut UdpIo, h: &mut Echo, want: u64) {
    let start = Instant::now();
    while io.stats().rx_datagrams < want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {:?}",
            io.stats()
        );
        io.poll(Some(Duration::from_millis(20)), h).unwrap();
    }
}

fn churn(choice: BackendChoice, want: Backend) {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let client = UdpSocket::bind(localhost).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];

    let fds_before = open_fds();
    let mut io = UdpIo::bind(localhost, choice).unwrap();
    assert_eq!(io.backend(), want);
    let main = io.local_addr();
    let fds_bound = open_fds();
    let mut h = Echo::default();
    let mut received = 0;

    for round in 0..100 {
        // A batch of relay sockets, each with traffic both ways.
        let socks: Vec<(SocketId, SocketAddr)> =
            (0..20).map(|_| io.add_socket(localhost).unwrap()).collect();
        assert_eq!(open_fds(), fds_bound + 20, "round {round}");
        for (k, &(_, addr)) in socks.iter().enumerate() {
            client.send_to(&[k as u8; 100], addr).unwrap();
        }
        client.send_to(b"main", main).unwrap();
        received += 21;
        poll_until(&mut io, &mut h, received);
        for _ in 0..21 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            let k = socks.iter().position(|&(_, a)| a == from);
            match k {
                Some(k) => assert_eq!(&buf[..n], &[k as u8; 100][..], "echo from its own port"),
                None => assert_eq!((&buf[..n], from), (&b"main"[..], main)),
            }
        }
        // Datagrams in flight on half of them when they are removed (no poll in between, so
        // none of them may be delivered); the other half is removed between polls.
        for &(_, addr) in &socks[..10] {
            client.send_to(b"late", addr).unwrap();
        }
        for &(id, _) in &socks[..10] {
            io.remove_socket(id);
        }
        for (k, &(id, _)) in socks[10..].iter().enumerate() {
            io.remove_socket(id);
            if k % 3 == 0 {
                io.poll(Some(Duration::ZERO), &mut h).unwrap();
            }
        }
        assert_eq!(io.extra_sockets(), 0);
    }
    for _ in 0..5 {
        io.poll(Some(Duration::from_millis(5)), &mut h).unwrap();
    }
    assert_eq!(
        io.stats().rx_datagrams,
        received,
        "nothing from removed sockets: {:?}",
        io.stats()
    );
    assert!(h.per_socket.iter().all(|(_, d)| d != b"late"));
    assert_eq!(open_fds(), fds_bound, "extra sockets leaked fds");
    let s = io.stats();
    assert_eq!((s.tx_errors, s.rx_errors), (0, 0), "{s:?}");

    // Main still fine at the end.
    client.send_to(b"still here", main).unwrap();
    poll_until(&mut io, &mut h, received + 1);
    assert_eq!(h.per_socket.last().unwrap().0, SocketId::MAIN);
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"still here"[..], main));

    // Dropping the UdpIo with extra sockets open closes them all.
    for _ in 0..10 {
        io.add_socket(localhost).unwrap();
    }
    drop(io);
    assert_eq!(open_fds(), fds_before, "UdpIo drop leaked fds");
}

#[test]
fn uring_add_remove_many_no_fd_leak() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    churn(BackendChoice::IoUring, Backend::IoUring);
}

#[test]
fn mmsg_add_remove_many_no_fd_leak() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    churn(BackendChoice::Mmsg, Backend::Mmsg);
}
