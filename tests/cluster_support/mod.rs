//! What the cluster tests share: a real `redis-server` on a loopback port (Debian's package,
//! which `scripts/test.sh` installs), rtcdn nodes as processes in its cluster, and a small
//! blocking HTTP client. Everything is sent to 127.0.0.1 only.

// Each test crate uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin token of the test nodes (`/rest-api/cdn/show_nodes` needs it).
pub const ADMIN_TOKEN: &str = "cluster-test-admin-token-0123456789";

/// A `redis-server` on 127.0.0.1 with no persistence, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let port = free_port();
        let mut server = RedisServer { port, child: None };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection, to look at what the nodes wrote.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("redis answers")
    }

    /// `GET key`.
    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.connection())
            .unwrap()
    }

    /// The events published on `rtcdn:events` from now on (each a JSON object), collected
    /// until Redis goes away.
    pub fn events(&self) -> Arc<Mutex<Vec<serde_json::Value>>> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut connection = self.connection();
        let kept = events.clone();
        let (ready, subscribed_now) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // One PubSub for the whole life: dropping it unsubscribes.
            let mut subscribed = connection.as_pubsub();
            subscribed.subscribe("rtcdn:events").expect("subscribed");
            let _ = subscribed.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = ready.send(());
            while let Ok(message) = subscribed.get_message() {
                if let Ok(payload) = message.get_payload::<String>() {
                    if let Ok(event) = serde_json::from_str(&payload) {
                        kept.lock().unwrap().push(event);
                    }
                }
            }
        });
        subscribed_now
            .recv_timeout(Duration::from_secs(5))
            .expect("subscribed to rtcdn:events");
        events
    }

    /// Kills it (all its data goes: it keeps none on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian: apt-get install redis-server; scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = redis::Client::open(self.url())
                .unwrap()
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server does not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An rtcdn process in a cluster, killed (SIGKILL) on drop.
pub struct ClusterNode {
    child: Child,
    /// Its HTTP listener.
    pub http: SocketAddr,
    /// Its cluster id.
    pub id: String,
    /// What it logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
    _config: TempFile,
}

impl ClusterNode {
    /// Starts `rtcdn` in the cluster of `redis_url` with the node id prefix `prefix`, and
    /// waits for its HTTP address and cluster id in its (JSON) log.
    pub fn start(redis_url: &str, prefix: &str) -> ClusterNode {
        let config = TempFile::new(
            "toml",
            &format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n[media]\nport_base = 0\nthreads = 1\n\
                 [rtmp]\nenabled = false\n[session]\nconnect_timeout_secs = 120\n\
                 [auth]\nadmin_token = \"{ADMIN_TOKEN}\"\n\
                 [cluster]\nredis_url = \"{redis_url}\"\nnode_id = \"{prefix}\"\n"
            ),
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtcdn"))
            .arg("--config")
            .arg(&config.path)
            .args(["--log-format", "json", "--log", "info"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rtcdn starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut http, mut id) = (None, None);
        while http.is_none() || id.is_none() {
            let line = match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    panic!(
                        "node {prefix} did not start ({e}): {:#?}",
                        log.lock().unwrap()
                    );
                }
            };
            let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = if record["fields"].is_object() {
                &record["fields"]
            } else {
                &record
            };
            let message = fields["message"].as_str().unwrap_or_default();
            if message == "rtcdn node started" {
                http = fields["http"].as_str().and_then(|a| a.parse().ok());
            }
            if message == "joining the cluster" {
                id = fields["node"].as_str().map(str::to_owned);
            }
        }
        ClusterNode {
            child,
            http: http.unwrap(),
            id: id.unwrap(),
            log,
            _config: config,
        }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: in a cluster, the node drains first.
    pub fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a child's pid and a signal number has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Whether the process has exited, waiting for it up to `within`.
    pub fn exited_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /rest-api/cdn/show_nodes` with the admin token: the ids it lists.
    pub fn show_node_ids(&self) -> Vec<String> {
        let (status, _, body) = http(
            self.http,
            "GET",
            "/rest-api/cdn/show_nodes",
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            "",
        );
        assert_eq!(status, 200, "{body}");
        let nodes: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        nodes
            .as_array()
            .expect("a list")
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `POST /whip/{stream}` with a VP8 offer that never connects (the node keeps the
    /// publisher for `session.connect_timeout_secs`): status, `Location`, body.
    pub fn whip_publish(&self, stream: &str) -> (u16, Option<String>, String) {
        let (status, headers, body) = http(
            self.http,
            "POST",
            &format!("/whip/{stream}"),
            &[("content-type", "application/sdp")],
            &publish_offer(),
        );
        let location = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.clone());
        (status, location, body)
    }

    /// `DELETE` a WHIP resource: its publisher leaves.
    pub fn whip_delete(&self, location: &str) -> u16 {
        let path = match location.find("/whip/") {
            Some(at) => &location[at..],
            None => location,
        };
        http(self.http, "DELETE", path, &[], "").0
    }

    /// The log so far, for a failure message.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A file removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(ext: &str, content: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "rtcdn-cluster-test-{}-{:08x}.{ext}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, content).unwrap();
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A WHIP publisher's offer: VP8 video, send-only, bundled and muxed.
pub fn publish_offer() -> String {
    let fingerprint: Vec<String> = (0..32).map(|i| format!("{:02X}", i * 7 % 256)).collect();
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS cam",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Xk3p",
        "a=ice-pwd:Zq1s5Yc8Vv2Nn4Mm6Ll0Kk7J",
        "a=ice-options:trickle",
        &format!("a=fingerprint:sha-256 {}", fingerprint.join(":")),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendonly",
        "a=msid:cam video0",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=ssrc:1111 cname:cluster-test",
        "",
    ]
    .join("\r\n")
}

/// One HTTP/1.1 request on its own connection: status, headers, body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("a response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` every 50 ms until it holds or `limit` passes; the time it took.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
