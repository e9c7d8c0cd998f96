//! RTMP playback (issue 15 step 4), end to end with the real binary: ffmpeg publishes H.264
//! and AAC over RTMP (the node makes the AAC Opus), and ffmpeg plays
//! `rtmp://127.0.0.1:PORT/live/NAME` back, decodes at least 60 frames and audible AAC (the
//! stream's Opus transcoded back), counted as a player of the stream meanwhile (with the
//! stream's shared audio transcoder); a name nobody publishes is refused with its reason; the
//! publisher's stop ends the player. Skipped without ffmpeg.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn has_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The node, killed when dropped; its log lines kept.
struct Node {
    child: Child,
    http: u16,
    rtmp: u16,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn start() -> Node {
        let (http, rtmp) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtcdn"))
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--rtmp", &format!("127.0.0.1:{rtmp}")])
            .args(["--udp-port-base", "0", "--media-threads", "1"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rtcdn starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let node = Node {
            child,
            http,
            rtmp,
            logs,
        };
        node.wait_for("rtcdn node started", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the node did not start: {}", node.log_text()));
        node
    }

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    fn wait_for(&self, text: &str, limit: Duration) -> Option<()> {
        self.wait_for_n(text, 1, limit)
    }

    /// Waits until `n` log lines hold `text`.
    fn wait_for_n(&self, text: &str, n: usize, limit: Duration) -> Option<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            // The guard must be gone before the sleep: held through it, the lock is taken
            // again at once and the thread reading the node's log starves.
            let seen = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(text))
                .count();
            if seen >= n {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.rtmp)
    }

    /// `GET /api/stats`: the streams' player counts, by name.
    fn players(&self, name: &str) -> Option<u64> {
        let mut http = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        write!(
            http,
            "GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        http.read_to_string(&mut answer).ok()?;
        let body = answer.split_once("\r\n\r\n")?.1;
        let stats: serde_json::Value = serde_json::from_str(body).ok()?;
        stats["streams"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?["players"]
            .as_u64()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ffmpeg publishes `seconds` of 30 fps H.264 test video and a 440 Hz AAC tone to `url`.
fn publish(url: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264"])
        .args(["-pix_fmt", "yuv420p", "-profile:v", "baseline"])
        .args(["-tune", "zerolatency", "-g", "30", "-bf", "0"])
        .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2"])
        .args(["-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg starts")
}

/// ffmpeg plays `url` with `extra` arguments; returns its exit success, the frames it decoded
/// (its last `frame=` count) and its output.
fn play(url: &str, extra: &[&str], limit: Duration) -> (bool, u64, String) {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i", url])
        .args(extra)
        .args(["-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg starts");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = reader.join().unwrap();
    let frames = text
        .rsplit("frame=")
        .next()
        .filter(|_| text.contains("frame="))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (status.is_some_and(|s| s.success()), frames, text)
}

/// Waits until the node registered `name` (its sequence header came).
fn wait_live(node: &Node, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.players(name).is_none() {
        assert!(
            Instant::now() < deadline,
            "{name} did not go live: {}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ffmpeg_plays_an_rtmp_published_stream_back_over_rtmp_and_the_publishers_stop_ends_it() {
    if !has_ffmpeg() {
        eprintln!("skipped: ffmpeg is not installed");
        return;
    }
    let node = Node::start();
    let mut publisher = publish(&node.url("cam"), 60);
    wait_live(&node, "cam");

    // While it plays, the node counts it as a player of the stream, and only it: the
    // stream's audio transcoder for its RTMP players is not a player.
    let counts = {
        let url = node.url("cam");
        let counting = std::thread::spawn(move || {
            let extra = ["-frames:v", "90", "-af", "volumedetect"];
            play(&url, &extra, Duration::from_secs(30))
        });
        let mut counts = Vec::new();
        while !counting.is_finished() {
            counts.extend(node.players("cam"));
            std::thread::sleep(Duration::from_millis(100));
        }
        let (ok, frames, text) = counting.join().unwrap();
        assert!(ok && frames >= 60, "{frames} frames decoded: {text}");
        // The stream's audio, AAC for the player: announced, and it decodes to the tone
        // (lavfi's sine is an eighth of full scale, about -21 dB; silence is -91 dB).
        assert!(text.contains("Audio: aac"), "no AAC audio: {text}");
        let mean_volume = text
            .split("mean_volume:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|db| db.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no volumedetect: {text}"));
        eprintln!("RTMP playback's audio: mean volume {mean_volume} dB");
        assert!(mean_volume > -40.0, "mean volume {mean_volume} dB: {text}");
        counts
    };
    let counted = counts.contains(&1);
    assert!(
        counts.iter().all(|&n| n <= 1),
        "the stream's players while one RTMP player played: {counts:?}"
    );
    assert!(
        counted,
        "the RTMP player was not counted: {}",
        node.log_text()
    );
    assert!(node
        .wait_for("RTMP play ended", Duration::from_secs(5))
        .is_some());
    // Its last player gone, the stream's audio transcoder stops.
    assert!(
        node.wait_for(
            "RTMP players' audio: transcoding off",
            Duration::from_secs(5)
        )
        .is_some(),
        "{}",
        node.log_text()
    );

    // A name nobody publishes: refused with the reason, which ffmpeg prints.
    let (ok, _, text) = play(&node.url("nobody"), &[], Duration::from_secs(15));
    assert!(!ok);
    assert!(
        text.contains("nobody is not published here"),
        "the refusal's reason: {text}"
    );

    // The publisher stops: the player's connection ends at once, not at a timeout.
    let url = node.url("cam");
    let player = std::thread::spawn(move || play(&url, &[], Duration::from_secs(30)));
    node.wait_for_n("RTMP play accepted", 2, Duration::from_secs(10))
        .expect("the second play started");
    std::thread::sleep(Duration::from_secs(2));
    let _ = publisher.kill();
    let _ = publisher.wait();
    let stopped = Instant::now();
    let (_, frames, text) = player.join().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "the player ended {:?} after the publisher",
        stopped.elapsed()
    );
    assert!(frames >= 30, "{frames} frames before the stop: {text}");
    assert!(
        node.wait_for("stopped by publisher stop", Duration::from_secs(5))
            .is_some(),
        "{}",
        node.log_text()
    );
}
