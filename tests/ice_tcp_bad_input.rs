//! ICE-TCP on a running node: bad input on the TCP path (garbage, a 65535-byte length prefix, a
//! connection that never sends STUN, more idle connections than the core keeps) is closed and
//! counted in `/api/stats`, while a session that connected over UDP keeps answering; and a
//! session's ICE checks over a TCP connection (RFC 4571 framing) connect it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceEvent};
use rtcdn::config::Config;
use rtcdn::node::Node;

/// What the test's configuration lets one core keep open.
const MAX_CONNECTIONS: usize = 8;

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn stats(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = http(addr, "GET", "/api/stats", "");
    assert_eq!(status, 200);
    // Chunked or not, the JSON object is the outermost braces.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    serde_json::from_str(json).unwrap()
}

fn tcp_counter(addr: SocketAddr, name: &str) -> u64 {
    stats(addr)["cores"][0]["tcp"][name].as_u64().unwrap()
}

/// A browser-like publisher's offer: one VP8 video m-line, sendonly.
fn offer(creds: &IceCredentials) -> String {
    let fingerprint = (0..32)
        .map(|i| format!("{:02X}", i * 7))
        .collect::<Vec<_>>()
        .join(":");
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS s",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        &format!("a=ice-ufrag:{}", creds.ufrag),
        &format!("a=ice-pwd:{}", creds.pwd),
        &format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendonly",
        "a=msid:s v",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=ssrc:1234 cname:x",
        "",
    ]
    .join("\r\n")
}

/// The server's credentials and its UDP and TCP host candidates, from its answer.
struct Answer {
    creds: IceCredentials,
    udp: SocketAddr,
    tcp: SocketAddr,
}

fn publish(http_addr: SocketAddr, stream: &str, creds: &IceCredentials) -> Answer {
    let (status, body) = http(http_addr, "POST", &format!("/whip/{stream}"), &offer(creds));
    assert_eq!(status, 201, "{body}");
    let attr = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("a={name}:")))
            .unwrap_or_else(|| panic!("no a={name} in {body}"))
            .trim()
            .to_owned()
    };
    let candidate = |proto: &str| -> SocketAddr {
        let line = body
            .lines()
            .find(|l| l.starts_with("a=candidate:") && l.split(' ').nth(2) == Some(proto))
            .unwrap_or_else(|| panic!("no {proto} candidate in {body}"));
        let f: Vec<&str> = line.split(' ').collect();
        if proto == "tcp" {
            assert!(line.ends_with("typ host tcptype passive"), "{line}");
        }
        format!("{}:{}", f[4], f[5]).parse().unwrap()
    };
    let udp_priority = |l: &str| l.split(' ').nth(3).unwrap().parse::<u32>().unwrap();
    let (u, t) = (
        body.lines().find(|l| l.contains(" udp ")).unwrap(),
        body.lines().find(|l| l.contains(" tcp ")).unwrap(),
    );
    assert!(udp_priority(u) > udp_priority(t), "TCP ranks below UDP");
    Answer {
        creds: IceCredentials {
            ufrag: attr("ice-ufrag"),
            pwd: attr("ice-pwd"),
        },
        udp: candidate("udp"),
        tcp: candidate("tcp"),
    }
}

/// Runs `agent`'s checks over `send`/`recv` until it connects (or 10 s pass).
fn connect(
    agent: &mut IceControllingAgent,
    mut send: impl FnMut(&[u8]),
    mut recv: impl FnMut() -> Option<Vec<u8>>,
    from: SocketAddr,
) {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ICE did not connect"
        );
        let now = Instant::now();
        while let Some(t) = agent.poll_transmit() {
            send(&t.contents);
        }
        match agent.poll_event() {
            Some(IceEvent::Connected { .. }) => return,
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
        match recv() {
            Some(data) => {
                let _ = agent.handle_packet(now, from, &data);
            }
            None => agent.handle_timeout(Instant::now()),
        }
    }
}

fn connect_udp(local: &IceCredentials, answer: &Answer) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut agent = IceControllingAgent::new(
        local.clone(),
        answer.creds.clone(),
        vec![answer.udp],
        1,
        Instant::now(),
    );
    let mut buf = [0u8; 2048];
    connect(
        &mut agent,
        |data| {
            sock.send_to(data, answer.udp).unwrap();
        },
        || {
            // STUN only: the server's DTLS ClientHello follows the connection.
            let (n, _) = sock.recv_from(&mut buf).ok()?;
            (buf[0] < 4).then(|| buf[..n].to_vec())
        },
        answer.udp,
    );
}

/// Whether the server closes `c` within `within`.
fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    c.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn bad_tcp_input_is_closed_and_counted_while_sessions_connect() {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.rtmp.enabled = false;
    config.media.port_base = 0;
    config.media.threads = 1;
    config.media.tcp = true;
    config.media.tcp_max_connections = MAX_CONNECTIONS;
    config.session.connect_timeout_secs = 60;
    let node = Node::start(&config).unwrap();
    let web = node.http_addr();

    // A publisher connects over UDP.
    let udp_creds = IceCredentials::random(&mut rand::thread_rng());
    let udp_answer = publish(web, "over-udp", &udp_creds);
    connect_udp(&udp_creds, &udp_answer);
    let tcp_addr = udp_answer.tcp;

    // Garbage, then a 65535-byte length prefix: closed at once.
    let mut garbage = TcpStream::connect(tcp_addr).unwrap();
    garbage
        .write_all(&framed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        .unwrap();
    assert!(closed_within(&mut garbage, Duration::from_secs(2)));
    let mut oversized = TcpStream::connect(tcp_addr).unwrap();
    oversized.write_all(&[0xff, 0xff, 0, 1, 2, 3]).unwrap();
    assert!(closed_within(&mut oversized, Duration::from_secs(2)));

    // More idle connections than the core keeps: the surplus is closed at once, the others
    // when they have sent no STUN for 5 s.
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 4)
        .map(|_| TcpStream::connect(tcp_addr).unwrap())
        .collect();
    let mut closed_early = 0;
    for c in &mut idle {
        closed_early += usize::from(closed_within(c, Duration::from_millis(200)));
    }
    assert_eq!(closed_early, 4, "the connections beyond the limit");
    for c in &mut idle {
        assert!(closed_within(c, Duration::from_secs(10)));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "silent connections closed after {waited:?}"
    );

    // The UDP session still answers checks (a fresh agent with its credentials connects).
    connect_udp(&udp_creds, &udp_answer);

    // A second publisher connects over TCP: its checks, framed, bind the connection to it.
    let tcp_creds = IceCredentials::random(&mut rand::thread_rng());
    let answer = publish(web, "over-tcp", &tcp_creds);
    let mut conn = TcpStream::connect(answer.tcp).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut agent = IceControllingAgent::new(
        tcp_creds.clone(),
        answer.creds.clone(),
        vec![answer.tcp],
        2,
        Instant::now(),
    );
    let mut reader = conn.try_clone().unwrap();
    let mut pending: Vec<u8> = Vec::new();
    connect(
        &mut agent,
        |data| conn.write_all(&framed(data)).unwrap(),
        || loop {
            if pending.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
                if pending.len() >= 2 + len {
                    let frame: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
                    if frame.first().is_some_and(|&b| b < 4) {
                        return Some(frame);
                    }
                    continue; // DTLS after the connection
                }
            }
            let mut buf = [0u8; 4096];
            match reader.read(&mut buf) {
                Ok(0) => panic!("the server closed a connection that sent valid checks"),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        },
        answer.tcp,
    );
    // Bound: it outlives the STUN timeout.
    std::thread::sleep(Duration::from_secs(6));
    assert!(!closed_within(&mut conn, Duration::from_millis(100)));

    let s = stats(web);
    let tcp = &s["cores"][0]["tcp"];
    eprintln!("tcp counters: {tcp}");
    assert_eq!(tcp["garbage"], 1, "{tcp}");
    assert_eq!(tcp["oversized"], 1, "{tcp}");
    assert_eq!(tcp["rejected_full"], 4, "{tcp}");
    assert_eq!(tcp["stun_timeouts"], MAX_CONNECTIONS as u64, "{tcp}");
    assert_eq!(tcp["open"], 1, "{tcp}");
    assert!(tcp["rx_frames"].as_u64().unwrap() >= 1);
    assert!(tcp["tx_frames"].as_u64().unwrap() >= 1);
    assert_eq!(
        tcp_counter(web, "accepted"),
        2 + MAX_CONNECTIONS as u64 + 1,
        "garbage, oversized, the idle ones the core kept, the session's"
    );
    assert_eq!(s["cores"][0]["tcp_candidates"][0], answer.tcp.to_string());
    let (status, metrics) = http(web, "GET", "/metrics", "");
    assert_eq!(status, 200);
    for (reason, n) in [("garbage", 1), ("oversized_frame", 1), ("table_full", 4)] {
        let line =
            format!("rtcdn_tcp_connections_closed_total{{core=\"0\",reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "no {line} in /metrics:\n{metrics}");
    }
    node.stop();
}
