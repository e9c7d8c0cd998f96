//! Proves that `UdpIo::poll` and the `SendQueue` allocate nothing in steady state, for both
//! backends: receive on the main and an extra socket, in-place handling, echo from the socket a
//! datagram arrived on, fan-out over both sockets past the pool size (overflow flush), waker
//! wake-ups and zero timeouts; and the same for ICE-TCP frames: deframed in place, echoed and
//! fanned out into the connection's frame queue and to UDP.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rtcdn::reactor::io::{
    Backend, BackendChoice, DatagramHandler, SendQueue, SocketId, TcpLimits, UdpIo,
};

/// Counts allocations made by the current thread while `COUNTING` is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    // `try_with`: thread-locals may be gone while a thread shuts down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Decrypt-like in-place edit, echo back, and fan out to a sink nobody reads.
struct Forward {
    sink: SocketAddr,
    extra: SocketId,
    copies: usize,
    /// Every 32nd datagram fans out to this many copies instead.
    big_copies: usize,
    handled: usize,
    wakes: u64,
}

impl DatagramHandler for Forward {
    fn on_datagram(
        &mut self,
        socket: SocketId,
        src: SocketAddr,
        data: &mut [u8],
        _received_ns: Option<u64>,
        tx: &mut SendQueue,
    ) {
        for b in data.iter_mut() {
            *b ^= 0x5a;
        }
        tx.push_on(socket, src, data);
        let copies = if self.handled.is_multiple_of(32) {
            self.big_copies
        } else {
            self.copies
        };
        self.handled += 1;
        for i in 0..copies {
            // Interleaved over both sockets: mmsg groups the queue per socket.
            let from = if i % 2 == 0 {
                SocketId::MAIN
            } else {
                self.extra
            };
            tx.push_with_on(from, self.sink, |buf| {
                buf[..data.len()].copy_from_slice(data);
                buf[0] = (i % 256) as u8;
                data.len()
            });
        }
    }
    fn on_wake(&mut self, tx: &mut SendQueue) {
        self.wakes += 1;
        tx.push(self.sink, b"timer or control message");
        tx.push_on(self.extra, self.sink, b"relay keepalive");
    }
}

/// Runs `rounds` rounds of 64 datagrams (alternately to the main and the extra socket) and
/// returns (allocations inside poll, datagrams).
fn rounds(io: &mut UdpIo, client: &UdpSocket, h: &mut Forward, rounds: usize) -> (u64, u64) {
    const PER_ROUND: u64 = 64;
    let server = io.local_addr();
    let extra = io.socket_addr(h.extra).unwrap();
    let payload = [0xabu8; 1200];
    let mut buf = [0u8; 2048];
    let before = io.stats().rx_datagrams;
    ALLOCS.with(|a| a.set(0));
    for r in 0..rounds {
        for k in 0..PER_ROUND {
            client
                .send_to(&payload, if k % 2 == 0 { server } else { extra })
                .unwrap();
        }
        if r % 4 == 0 {
            io.waker().wake();
        }
        let target = before + (r as u64 + 1) * PER_ROUND;
        let start = Instant::now();
        while io.stats().rx_datagrams < target {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "stalled: {:?}",
                io.stats()
            );
            COUNTING.with(|c| c.set(true));
            let res = io.poll(Some(Duration::from_millis(50)), h);
            COUNTING.with(|c| c.set(false));
            res.unwrap();
        }
        COUNTING.with(|c| c.set(true));
        io.poll(Some(Duration::ZERO), h).unwrap();
        io.send_queue().push(server, b"");
        io.send_queue().push_on(
            SocketId(999),
            server,
            b"unknown socket: an error, no allocation",
        );
        COUNTING.with(|c| c.set(false));
        let mut from_extra = 0;
        for _ in 0..PER_ROUND {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(n, payload.len());
            assert_eq!(buf[0], 0xab ^ 0x5a);
            assert!(from == server || from == extra);
            from_extra += u64::from(from == extra);
        }
        assert_eq!(
            from_extra,
            PER_ROUND / 2,
            "echoes leave from the socket they arrived on"
        );
    }
    (ALLOCS.with(|a| a.get()), io.stats().rx_datagrams - before)
}

fn check(choice: BackendChoice, want: Backend) {
    let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), choice).unwrap();
    assert_eq!(io.backend(), want);
    let (extra, _) = io.add_socket("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Nobody reads the sink; its receive buffer fills and the kernel drops (not our concern).
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The queue flushes itself after a datagram that left 64 sends queued (with GSO: that ended
    // a frame, or filled most of the pool); a single datagram fanned out past the pool makes it
    // flush synchronously (the overflow path).
    let pool = io.send_queue().capacity();
    let mut h = Forward {
        sink: sink.local_addr().unwrap(),
        extra,
        copies: 8,
        big_copies: pool + 88,
        handled: 0,
        wakes: 0,
    };

    let (_, warm) = rounds(&mut io, &client, &mut h, 20);
    let (allocs, n) = rounds(&mut io, &client, &mut h, 100);
    let stats = io.stats();
    println!(
        "{want:?}: {n} datagrams, {allocs} allocations, {} wakes, {stats:?}",
        h.wakes
    );
    assert_eq!(warm, 20 * 64);
    assert_eq!(n, 100 * 64);
    assert!(
        stats.tx_overflow_flushes > 0,
        "overflow path not exercised: {stats:?}"
    );
    assert!(h.wakes > 0);
    assert_eq!(
        allocs, 0,
        "{want:?} allocated {allocs} times for {n} datagrams"
    );
}

#[test]
fn no_heap_allocation_per_datagram() {
    // The counter itself works.
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCS.with(|a| a.get()), 1);

    check(BackendChoice::IoUring, Backend::IoUring);
    check(BackendChoice::Mmsg, Backend::Mmsg);
}

/// Echoes each ICE-TCP frame on its connection with two more copies there, and one to a UDP sink.
struct TcpForward {
    sink: SocketAddr,
    frames: u64,
}

impl DatagramHandler for TcpForward {
    fn on_datagram(
        &mut self,
        socket: SocketId,
        src: SocketAddr,
        data: &mut [u8],
        _received_ns: Option<u64>,
        tx: &mut SendQueue,
    ) {
        assert!(socket.is_tcp());
        self.frames += 1;
        for b in data.iter_mut().skip(20) {
            *b ^= 0x5a;
        }
        for _ in 0..3 {
            tx.push_on(socket, src, data);
        }
        tx.push_with(self.sink, |buf| {
            buf[..data.len()].copy_from_slice(data);
            data.len()
        });
    }
    fn on_wake(&mut self, _tx: &mut SendQueue) {}
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn check_tcp(choice: BackendChoice) {
    let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), choice).unwrap();
    let addr = io
        .listen_tcp("127.0.0.1:0".parse().unwrap(), TcpLimits::default())
        .unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut h = TcpForward {
        sink: sink.local_addr().unwrap(),
        frames: 0,
    };
    let client = TcpStream::connect(addr).unwrap();
    // A reader thread keeps the connection drained (a slow reader is tcp.rs's own test).
    let mut reader = client.try_clone().unwrap();
    let drained = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut total = 0usize;
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    // The first frame looks like STUN (the connection's first must), the rest like SRTP.
    let mut stun = [0u8; 1200];
    stun[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    let first = framed(&stun);
    let media = framed(&[0x80; 1200]);
    let round = |io: &mut UdpIo, h: &mut TcpForward, frames: u64, count: bool| {
        let mut writer = &client;
        let target = h.frames + frames;
        let mut sent = 0;
        let start = Instant::now();
        while h.frames < target {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "stalled at {} frames",
                h.frames
            );
            if sent < frames {
                writer.write_all(&media).unwrap();
                sent += 1;
            }
            COUNTING.with(|c| c.set(count));
            let res = io.poll(Some(Duration::from_millis(1)), h);
            COUNTING.with(|c| c.set(false));
            res.unwrap();
        }
    };
    (&client).write_all(&first).unwrap();
    // Warm-up: the accept allocates the connection's buffers.
    round(&mut io, &mut h, 200, false);
    ALLOCS.with(|a| a.set(0));
    round(&mut io, &mut h, 2000, true);
    let allocs = ALLOCS.with(|a| a.get());
    let tcp = io.tcp_stats();
    println!(
        "{choice:?} ICE-TCP: {} frames, {allocs} allocations, {tcp:?}",
        h.frames
    );
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let start = Instant::now();
    while io.tcp_stats().open > 0 && start.elapsed() < Duration::from_secs(5) {
        io.poll(Some(Duration::from_millis(10)), &mut h).unwrap();
    }
    assert!(drained.join().unwrap() > 0);
    assert_eq!(tcp.accepted, 1);
    assert!(tcp.tx_frames >= 3 * 2000, "{tcp:?}");
    assert_eq!(
        allocs, 0,
        "{choice:?} allocated {allocs} times on the ICE-TCP path"
    );
}

#[test]
fn no_heap_allocation_per_tcp_frame() {
    check_tcp(BackendChoice::IoUring);
    check_tcp(BackendChoice::Mmsg);
}
