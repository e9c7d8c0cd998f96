//! `--log-format json` as a log shipper reads it: every line rtcdn writes to stderr is one JSON
//! object with a level and a message, no terminal colour escapes, and the start-up summary
//! names the node's role and the URLs clients use.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn json_logs_are_one_object_a_line_and_the_summary_names_role_and_urls() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtcdn"))
        .args([
            "--log-format",
            "json",
            "--http",
            "127.0.0.1:0",
            "--udp-port-base",
            "0",
            "--media-threads",
            "1",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rtcdn starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let summary = loop {
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!("no start-up summary ({e}); lines: {lines:#?}");
            }
        };
        lines.push(line.clone());
        let record: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(!line.contains('\u{1b}'), "a colour escape: {line}");
        assert!(
            record["level"].is_string() && record["message"].is_string(),
            "{line}"
        );
        if record["message"] == "serving" {
            break record;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(summary["role"], "standalone", "{summary}");
    assert_eq!(summary["balancer"], "off", "{summary}");
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
