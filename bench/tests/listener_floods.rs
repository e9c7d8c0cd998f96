//! Floods at the signalling listener of an in-process node: connections that send nothing or
//! dribble their request are closed by the timeouts; the per-address cap answers 429 while
//! other addresses are served, the global cap 503; session creation over the per-address rate
//! gets 429 with Retry-After (FAILED over the WebSocket); and after a flood WHIP works again.
//! CORS: an unlisted origin gets no Access-Control-Allow-Origin, admin endpoints never do.
//!
//! Timeouts are set to a second or two through the config so each test takes a few seconds.
//! Clients bind to other loopback addresses (127.0.0.2, ...) to be distinct peers; everything
//! is sent to 127.0.0.0/8 only.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rtcdn::config::{Config, HttpConfig};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A node on loopback with one media core and the `[http]` settings `configure` makes.
fn node(configure: impl FnOnce(&mut HttpConfig)) -> Node {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.port_base = 0;
    config.media.threads = 1;
    configure(&mut config.http);
    config.validate().expect("a valid test config");
    Node::start(&config).expect("node starts")
}

fn exempt(list: &[&str]) -> Vec<rtcdn::config::IpNet> {
    let toml = format!("[http]\nper_ip_exempt = {list:?}\n");
    Config::from_toml(&toml, std::path::Path::new("test.toml"))
        .expect("valid blocks")
        .http
        .per_ip_exempt
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let from: IpAddr = from.parse().unwrap();
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect to the node")
}

/// Reads until the node closes the connection (or resets it); `None` if it is still open
/// after `within`. Returns what was read and when the close came.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<(String, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| (String::from_utf8_lossy(&got).into_owned(), start.elapsed()))
}

/// A parsed HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

fn parse_answer(raw: &str) -> Answer {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP answer in {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// One request from `from` on a new connection (closed after the answer).
async fn exchange(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = connect_from(from, to).await;
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {to}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let (raw, _) = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("the node answers and closes within 10 s");
    parse_answer(&raw)
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_and_slowloris_connections_are_closed() {
    let node = node(|http| {
        http.header_read_timeout_secs = 1;
        http.body_read_timeout_secs = 1;
    });
    let addr = node.http_addr();

    // 200 connections that send nothing.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(connect_from("127.0.0.1", addr).await);
    }
    // A keep-alive connection that asks once, then stays idle.
    let mut idle = connect_from("127.0.0.1", addr).await;
    idle.write_all(format!("GET /lb HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = idle.read(&mut first).await.expect("an answer");
    assert!(first[..n].starts_with(b"HTTP/1.1 404"), "{:?}", &first[..n]);

    // A slowloris head: one byte every 300 ms, never complete before the timeout.
    let mut slow_head = connect_from("127.0.0.1", addr).await;
    let head_dribble = tokio::spawn(async move {
        let request = format!(
            "GET / HTTP/1.1\r\nhost: {addr}\r\nx-padding: {}\r\n\r\n",
            "a".repeat(100)
        );
        for byte in request.as_bytes() {
            if slow_head.write_all(&[*byte]).await.is_err() {
                return (slow_head, true);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (slow_head, false)
    });

    // A slowloris body: a complete head, then one byte of the offer every 300 ms.
    let mut slow_body = connect_from("127.0.0.1", addr).await;
    slow_body
        .write_all(
            format!("POST /whip/slow HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/sdp\r\ncontent-length: 1000\r\n\r\nv").as_bytes(),
        )
        .await
        .unwrap();
    let body_dribble = tokio::spawn(async move {
        let mut answer = Vec::new();
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        while start.elapsed() < Duration::from_secs(10) {
            let _ = slow_body.write_all(b"=").await;
            match tokio::time::timeout(Duration::from_millis(300), slow_body.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return (
                        String::from_utf8_lossy(&answer).into_owned(),
                        start.elapsed(),
                    )
                }
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        panic!("a dribbled body kept its connection for 10 s: {answer:?}");
    });

    // Everything is closed shortly after the 1 s timeouts, nothing long before.
    let start = Instant::now();
    let mut closed = 0;
    for stream in &mut silent {
        if closed_within(stream, Duration::from_secs(4))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 200,
        "silent connections closed after the header timeout"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        start.elapsed()
    );
    let (_, after) = closed_within(&mut idle, Duration::from_secs(4))
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(after < Duration::from_secs(3), "{after:?}");
    let (_, cut) = head_dribble.await.unwrap();
    assert!(cut, "the slowloris head was accepted in full");
    let (answer, after) = body_dribble.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "slow body: {answer:?}");
    assert!(
        after < Duration::from_secs(4),
        "slow body ended after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let node = node(|http| http.send_timeout_secs = 1);
    let addr = node.http_addr();
    // 2,000 pipelined requests for the ~15 KB page: ~30 MB of answers, far more than the
    // socket buffers hold while the client reads nothing.
    let mut stream = connect_from("127.0.0.1", addr).await;
    let request = format!("GET / HTTP/1.1\r\nhost: {addr}\r\n\r\n").repeat(2000);
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The node gave up on it: what it had sent is there, then the end (not every answer).
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answers = got.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    assert!(read.is_ok(), "still open after {answers} answers");
    assert!(answers < 2000, "every answer was sent: {answers}");
}

// ---------------------------------------------------------------------------------------------
// Connection caps
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_refuses_with_429_while_others_are_served() {
    let node = node(|http| {
        http.max_connections_per_ip = 5;
        http.per_ip_exempt = exempt(&["127.0.0.1"]);
    });
    let addr = node.http_addr();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from("127.0.0.2", addr).await);
    }
    let refused = exchange("127.0.0.2", addr, "GET", "/", &[], "").await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(
        refused
            .body
            .contains("too many connections from your address"),
        "{refused:?}"
    );
    // Other addresses, and the exempt one, are still served.
    assert_eq!(
        exchange("127.0.0.3", addr, "GET", "/", &[], "")
            .await
            .status,
        200
    );
    for _ in 0..10 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    assert_eq!(
        exchange("127.0.0.1", addr, "GET", "/", &[], "")
            .await
            .status,
        200
    );
    // The slots come back when the connections close.
    drop(held);
    let start = Instant::now();
    loop {
        let answer = exchange("127.0.0.2", addr, "GET", "/", &[], "").await;
        if answer.status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "still {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_cap_answers_503_and_whip_works_after_the_flood() {
    let node = node(|http| {
        http.max_connections = 20;
    });
    let addr = node.http_addr();
    // Loopback is exempt from the per-address cap, not from the global one.
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(connect_from("127.0.0.1", addr).await);
    }
    for from in ["127.0.0.1", "127.0.0.5"] {
        let refused = exchange(from, addr, "GET", "/", &[], "").await;
        assert_eq!(refused.status, 503, "{refused:?}");
        assert!(refused.body.contains("connection limit"), "{refused:?}");
        assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    }
    drop(flood);
    // A real publisher: WHIP, ICE, DTLS.
    let certificate = DtlsCertificate::generate().unwrap();
    let base = format!("http://{addr}");
    let start = Instant::now();
    let publisher = loop {
        match ClientSession::connect(
            &base,
            Mode::Publish,
            "after-flood",
            &certificate,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(publisher) => break publisher,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("WHIP after the flood: {e}"),
        }
    };
    publisher.close().await.expect("DELETE the session");
}

// ---------------------------------------------------------------------------------------------
// Session rate
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_the_rate_get_429_with_retry_after() {
    let node = node(|http| {
        http.sessions_per_ip_per_sec = 0.5;
        http.session_burst_per_ip = 2;
        http.per_ip_exempt = exempt(&["127.0.0.1"]);
    });
    let addr = node.http_addr();
    let sdp = [("content-type", "application/sdp")];
    // The burst: offers refused for what they are (not SDP, no such stream), not for the rate.
    for (path, status) in [("/whip/a", 400), ("/whep/b", 404)] {
        let answer = exchange("127.0.0.2", addr, "POST", path, &sdp, "not sdp").await;
        assert_eq!(answer.status, status, "{answer:?}");
    }
    let refused = exchange("127.0.0.2", addr, "POST", "/whip/c", &sdp, "not sdp").await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("retry-after").as_deref(), Some("2"));
    assert!(refused.body.contains("too many sessions"), "{refused:?}");
    // Requests that start no session are not charged; other addresses have their own rate.
    assert_eq!(
        exchange("127.0.0.2", addr, "GET", "/", &[], "")
            .await
            .status,
        200
    );
    let other = exchange("127.0.0.3", addr, "POST", "/whip/d", &sdp, "not sdp").await;
    assert_eq!(other.status, 400, "{other:?}");
    for _ in 0..5 {
        let exempt = exchange("127.0.0.1", addr, "POST", "/whip/e", &sdp, "not sdp").await;
        assert_eq!(exempt.status, 400, "{exempt:?}");
    }

    // The WebSocket's publishStream is charged to the same bucket: FAILED with the reason.
    let stream = connect_from("127.0.0.2", addr).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .expect("WebSocket upgrade");
    let send = |message: &str, data: Value| {
        Message::text(json!({ "message": message, "data": [data] }).to_string())
    };
    ws.send(send("connection", json!({ "appKey": "defaultApp" })))
        .await
        .unwrap();
    ws.send(send(
        "publishStream",
        json!({ "mediaSessionId": "m1", "name": "ws", "published": true, "sdp": "v=0\r\n" }),
    ))
    .await
    .unwrap();
    let failed = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("no socket error");
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        if value["data"][0]["status"] == "FAILED" {
            break value["data"][0].clone();
        }
    };
    assert!(
        failed["info"]
            .as_str()
            .unwrap_or("")
            .contains("too many sessions"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_without_connection_message_is_closed() {
    let node = node(|http| http.websocket_connect_timeout_secs = 1);
    let addr = node.http_addr();
    let stream = connect_from("127.0.0.1", addr).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .expect("WebSocket upgrade");
    let start = Instant::now();
    let mut fail = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(4), ws.next()).await {
            Err(_) => panic!("the silent WebSocket is still open after 4 s"),
            Ok(Some(Ok(Message::Text(text)))) => fail = Some(text.as_str().to_owned()),
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => break,
        }
    }
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    let fail = fail.expect("a fail frame before the close");
    assert!(fail.contains("no connection message"), "{fail}");
}

// ---------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_echoes_listed_origins_and_never_covers_admin_endpoints() {
    let node = node(|http| http.cors_origins = vec!["https://good.example".into()]);
    let addr = node.http_addr();
    let good = [("origin", "https://good.example")];
    let evil = [("origin", "https://evil.example")];
    let answer = exchange("127.0.0.1", addr, "OPTIONS", "/whep/s", &good, "").await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some("https://good.example")
    );
    assert_eq!(answer.header("vary").as_deref(), Some("Origin"));
    let answer = exchange("127.0.0.1", addr, "OPTIONS", "/whep/s", &evil, "").await;
    assert_eq!(
        answer.header("access-control-allow-origin"),
        None,
        "{answer:?}"
    );
    let answer = exchange("127.0.0.1", addr, "GET", "/", &evil, "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        None,
        "{answer:?}"
    );
    for path in ["/api/stats", "/rest-api/stream/find_all"] {
        let answer = exchange("127.0.0.1", addr, "GET", path, &good, "").await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(answer.header("access-control-allow-origin"), None, "{path}");
        let preflight = exchange("127.0.0.1", addr, "OPTIONS", path, &good, "").await;
        assert_eq!(preflight.status, 403, "{path}: {preflight:?}");
        assert_eq!(
            preflight.header("access-control-allow-origin"),
            None,
            "{path}"
        );
    }

    // The default ("*") keeps answering any page, except on admin endpoints.
    let open = self::node(|_| {});
    let addr = open.http_addr();
    let answer = exchange("127.0.0.1", addr, "OPTIONS", "/whip/s", &evil, "").await;
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    let answer = exchange("127.0.0.1", addr, "GET", "/api/stats", &evil, "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        None,
        "{answer:?}"
    );
}
