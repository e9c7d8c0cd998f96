//! rtcdn's logs as an operator and a log shipper read them: with `--log-format json` every line
//! on stderr is one JSON object with a level and a message; text into a pipe carries no colour
//! escapes; the start-up summary names the node's role, the URLs clients use (with a host they
//! can reach) and the ICE candidates; `--log` beats `RUST_LOG`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Starts rtcdn with `args` (and `RUST_LOG` as given), reads its stderr until a line `stop`
/// says stop or `limit` passes, then kills it. Returns the lines read.
fn read_logs(
    args: &[&str],
    rust_log: Option<&str>,
    limit: Duration,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rtcdn"));
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command.spawn().expect("rtcdn starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = stop(&line);
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

const LOOPBACK: [&str; 6] = [
    "--http",
    "127.0.0.1:0",
    "--udp-port-base",
    "0",
    "--media-threads",
    "1",
];

#[test]
fn json_logs_are_one_object_a_line_and_the_summary_names_role_and_urls() {
    let args = [&["--log-format", "json"][..], &LOOPBACK[..]].concat();
    let lines = read_logs(&args, None, Duration::from_secs(20), |line| {
        line.contains("\"message\":\"serving\"")
    });
    let mut summary = None;
    for line in &lines {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(!line.contains('\u{1b}'), "a colour escape: {line}");
        assert!(
            record["level"].is_string() && record["message"].is_string(),
            "{line}"
        );
        if record["message"] == "serving" {
            summary = Some(record);
        }
    }
    let summary = summary.unwrap_or_else(|| panic!("no start-up summary: {lines:#?}"));
    assert_eq!(summary["role"], "standalone", "{summary}");
    assert_eq!(summary["balancer"], "off", "{summary}");
    assert_eq!(summary["candidates"], "127.0.0.1", "{summary}");
    let whip = summary["whip"].as_str().unwrap_or_default();
    assert!(
        whip.starts_with("http://127.0.0.1:") && whip.ends_with("/whip/{stream}"),
        "{summary}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"rtcdn node started\"")),
        "the start line is JSON too: {lines:#?}"
    );
}

#[test]
fn text_logs_into_a_pipe_carry_no_colour_and_the_summary_names_the_reachable_host() {
    // Bound to every interface, the URLs name the announced address, not 0.0.0.0.
    let args = [
        "--http",
        "0.0.0.0:0",
        "--announce",
        "127.0.0.2",
        "--udp-port-base",
        "0",
        "--media-threads",
        "1",
    ];
    let lines = read_logs(&args, None, Duration::from_secs(20), |line| {
        line.contains(" serving ")
    });
    let summary = lines
        .iter()
        .find(|l| l.contains(" serving "))
        .unwrap_or_else(|| panic!("no start-up summary: {lines:#?}"));
    for line in &lines {
        assert!(
            !line.contains('\u{1b}'),
            "a colour escape in a pipe: {line}"
        );
    }
    assert!(
        summary.contains("whip=http://127.0.0.2:") && summary.contains("candidates=127.0.0.2"),
        "{summary}"
    );
    assert!(!summary.contains("0.0.0.0"), "{summary}");
}

#[test]
fn the_log_option_beats_rust_log() {
    // RUST_LOG asks for info, --log for errors only: the start-up lines are not written.
    let args = [&["--log", "error"][..], &LOOPBACK[..]].concat();
    let lines = read_logs(&args, Some("info"), Duration::from_secs(3), |_| false);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("rtcdn node started") || l.contains("serving")),
        "{lines:#?}"
    );
    // And without --log, RUST_LOG is heard.
    let lines = read_logs(&LOOPBACK, Some("info"), Duration::from_secs(20), |line| {
        line.contains("rtcdn node started")
    });
    assert!(
        lines.iter().any(|l| l.contains("rtcdn node started")),
        "{lines:#?}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_rtcdn"))
        .args(["--log-format", "xml"])
        .output()
        .expect("rtcdn runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--log-format") && stderr.contains("json"),
        "{stderr}"
    );
}
