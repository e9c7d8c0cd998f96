//! A thousand idle ICE-TCP connections to one core, none of which ever sends STUN: one IP
//! address gets no more than `media.tcp_max_connections_per_ip` of them, the table's surplus
//! is closed at accept, the rest when their STUN timeout passes, each counted by reason in
//! `/api/stats` and `/metrics`; the node's memory stays bounded; a publisher and a player
//! connected over ICE-TCP keep their media meanwhile, and a new player connects. When the
//! player's connection closes, its session ends at once, not at its consent deadline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::net::{TcpSocket, TcpStream};

use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode, OfferOptions};
use rtcdn_bench::link::Transport;
use rtcdn_bench::media::read_packet;

mod common;
use common::{loopback_config, stats_json, Streaming};

/// Idle connections opened.
const IDLE: usize = 1000;
/// Of those, from one address, more than it may hold.
const GREEDY: usize = 100;
/// The core's table and one address's share (the defaults).
const TABLE: usize = 256;
const PER_IP: usize = 64;
/// Connections each of the other addresses opens (below `PER_IP`).
const PER_OTHER_IP: usize = 30;

async fn connect_from(ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(ip), 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .expect("connect within 10 s (the listen backlog)")
        .unwrap()
}

async fn tcp_stats(base: &str) -> serde_json::Value {
    stats_json(base).await["cores"][0]["tcp"].clone()
}

/// Polls `/api/stats` until `done` holds for the core's ICE-TCP counters.
async fn wait_tcp(base: &str, within: Duration, done: impl Fn(&serde_json::Value) -> bool) {
    let start = Instant::now();
    loop {
        let tcp = tcp_stats(base).await;
        if done(&tcp) {
            return;
        }
        assert!(start.elapsed() < within, "ICE-TCP counters: {tcp}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The process's resident memory (the node runs in it).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

async fn play_over(
    base: &str,
    transport: Transport,
    certificate: &DtlsCertificate,
) -> ClientSession {
    let options = OfferOptions {
        transport,
        ..OfferOptions::default()
    };
    let timeout = Duration::from_secs(10);
    ClientSession::connect_with(base, Mode::Play, "idle", certificate, timeout, options)
        .await
        .expect("play")
}

async fn assert_gets_media(player: &mut ClientSession, what: &str) {
    let start = Instant::now();
    let mut got = 0;
    while got < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {got} packets"
        );
        if let Some(packet) = player.recv_rtp(Duration::from_millis(100)).await {
            read_packet(&packet).expect("intact");
            got += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_counted_while_sessions_play() {
    // The test's side of the connections and the node's live in this process.
    let needed = (2 * IDLE + 512) as u64;
    let limit = rtcdn::reactor::io::raise_open_file_limit(needed);
    assert!(limit.is_none_or(|l| l >= needed), "ulimit -n: {limit:?}");
    let mut config = loopback_config(1);
    config.rtmp.enabled = false;
    assert_eq!(config.media.tcp_max_connections, TABLE);
    assert_eq!(config.media.tcp_max_connections_per_ip, PER_IP);
    let node = Node::start(&config).expect("node starts");
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    // A publisher and a player, both over ICE-TCP (from 127.0.0.1).
    let publisher = ClientSession::connect_with(
        &base,
        Mode::Publish,
        "idle",
        &certificate,
        Duration::from_secs(10),
        OfferOptions {
            transport: Transport::Tcp,
            ..OfferOptions::default()
        },
    )
    .await
    .expect("publish over ICE-TCP");
    let streaming = Streaming::start(publisher, 0);
    let mut tcp_player = play_over(&base, Transport::Tcp, &certificate).await;
    assert_gets_media(&mut tcp_player, "the ICE-TCP player").await;
    let tcp_addr: SocketAddr = stats_json(&base).await["cores"][0]["tcp_candidates"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let before = tcp_stats(&base).await;
    assert_eq!(before["open"], 2, "{before}");
    let rss_before = rss_bytes();

    // The flood: one greedy address, then many modest ones.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..GREEDY {
        idle.push(connect_from(Ipv4Addr::new(127, 0, 0, 2), tcp_addr).await);
    }
    for i in 0..IDLE - GREEDY {
        let ip = Ipv4Addr::new(127, 0, 1, (i / PER_OTHER_IP) as u8 + 1);
        idle.push(connect_from(ip, tcp_addr).await);
    }
    let kept = TABLE - 2 - PER_IP;
    let refused = IDLE - GREEDY - kept;
    wait_tcp(&base, Duration::from_secs(10), |t| {
        t["accepted"].as_u64().unwrap()
            + t["rejected_full"].as_u64().unwrap()
            + t["rejected_per_ip"].as_u64().unwrap()
            >= (IDLE + 2) as u64
    })
    .await;
    let flooded = tcp_stats(&base).await;
    assert_eq!(flooded["open"], TABLE as u64, "{flooded}");
    assert_eq!(
        flooded["rejected_per_ip"],
        (GREEDY - PER_IP) as u64,
        "{flooded}"
    );
    assert_eq!(flooded["rejected_full"], refused as u64, "{flooded}");
    let grown = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "ICE-TCP flood: {flooded}; resident memory grew {} KiB",
        grown / 1024
    );
    // Each connection kept has its write queue and read buffer (~320 KiB at most); the rest
    // cost nothing: well under what a thousand would.
    assert!(grown < 128 << 20, "resident memory grew {grown} bytes");

    // Meanwhile: the ICE-TCP player keeps its media, and a new player (UDP: the table is
    // full) connects and plays.
    assert_gets_media(&mut tcp_player, "the ICE-TCP player during the flood").await;
    let mut udp_player = play_over(&base, Transport::Udp, &certificate).await;
    assert_gets_media(&mut udp_player, "a UDP player during the flood").await;

    // The idle ones close at their STUN timeout (5 s); the sessions' connections stay.
    wait_tcp(&base, Duration::from_secs(15), |t| {
        t["stun_timeouts"].as_u64() == Some((PER_IP + kept) as u64)
    })
    .await;
    assert_eq!(tcp_stats(&base).await["open"], 2);
    assert_gets_media(&mut tcp_player, "the ICE-TCP player after the flood").await;
    let mut second_tcp_player = play_over(&base, Transport::Tcp, &certificate).await;
    assert_gets_media(&mut second_tcp_player, "a new ICE-TCP player").await;
    drop(idle);

    let (status, metrics) = {
        let r = rtcdn_bench::http::request(
            Method::GET,
            &format!("{base}/metrics"),
            None,
            String::new(),
        )
        .await
        .unwrap();
        (r.status, r.body)
    };
    assert!(status.is_success());
    for (reason, n) in [
        ("per_ip_limit", GREEDY - PER_IP),
        ("table_full", refused),
        ("stun_timeout", PER_IP + kept),
    ] {
        let line =
            format!("rtcdn_tcp_connections_closed_total{{core=\"0\",reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "no {line} in /metrics");
    }

    // The first player's connection closes: its session ends now, not 30 s later.
    let sessions = || async {
        stats_json(&base).await["cores"][0]["sessions"]
            .as_u64()
            .unwrap()
    };
    let with_it = sessions().await;
    drop(tcp_player);
    let start = Instant::now();
    while sessions().await != with_it - 1 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the session outlived its ICE-TCP connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(streaming.stop().await);
    node.stop();
}
