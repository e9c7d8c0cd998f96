//! `GET /metrics` serves the node's counters in the Prometheus text format: it parses, the
//! values move with real traffic (a synthetic publisher and two players over WHIP/WHEP: packets,
//! bytes, sessions by role, the stream's players and bitrate), and every family the README's
//! table documents is in a scrape. It is an admin endpoint: with protected actions it needs the
//! admin token (refusals are counted), and it never carries CORS headers.
//!
//! Everything is sent to 127.0.0.1 only.

use std::alloc::System;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::alloc_count::CountingAllocator;
use rtcdn::auth::{Policy, Secret};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};

mod common;
use common::{loopback_config, raw_request, send, test_node};

const TIMEOUT: Duration = Duration::from_secs(10);

// As in the rtcdn binary: `rtcdn_media_allocations_total` is served only where allocations are
// counted.
#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

/// The families a scrape declares (`# TYPE` lines).
fn families(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect()
}

/// The families the README's metrics table documents (its rows' first column).
fn documented_families() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let table = readme
        .split_once("<!-- metric families:")
        .expect("the README marks its metrics table")
        .1;
    let rows: Vec<String> = table
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(rows.len() >= 30, "{rows:?}");
    rows
}

/// Samples of a scrape: `name{labels}` → value. Every non-comment line must be a sample.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        assert!(series.starts_with("rtcdn_"), "unprefixed family: {line:?}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

/// The sum of every sample of `family` (over its labels).
fn total(samples: &HashMap<String, f64>, family: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.as_str() == family || k.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(base: &str, bearer: Option<&str>) -> common::Raw {
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("origin", "http://elsewhere.example")];
    if let Some(v) = authorization.as_deref() {
        headers.push(("authorization", v));
    }
    raw_request(
        Method::GET,
        &format!("{base}/metrics"),
        &headers,
        Vec::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let before = scrape(&base, None).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert_eq!(
        before.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        before.headers.get("access-control-allow-origin").is_none(),
        "an admin endpoint answers no other origin"
    );
    let before = parse(&before.body);
    let build = format!(
        "rtcdn_build_info{{version=\"0.1.0\",revision=\"{}\"}}",
        rtcdn::GIT_REVISION
    );
    assert_eq!(before[&build], 1.0, "{build}");
    assert_eq!(total(&before, "rtcdn_streams"), 0.0);

    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher = ClientSession::connect(&base, Mode::Publish, "m", &certificate, TIMEOUT)
        .await
        .expect("publish");
    let mut players = Vec::new();
    for _ in 0..2 {
        players.push(
            ClientSession::connect(&base, Mode::Play, "m", &certificate, TIMEOUT)
                .await
                .expect("play"),
        );
    }
    let start = Instant::now();
    let mut seq = 0;
    let mut received = 0;
    // (SSRC, sequence number) of a packet the first player got, for its repair requests.
    let mut got = None;
    while received < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "players received {received}"
        );
        send(&mut publisher, &mut seq, 0, start).await;
        for (i, player) in players.iter_mut().enumerate() {
            while let Some(packet) = player.recv_rtp(Duration::from_millis(1)).await {
                received += 1;
                if i == 0 && packet.len() >= 12 {
                    let ssrc = u32::from_be_bytes(packet[8..12].try_into().unwrap());
                    got = Some((ssrc, u16::from_be_bytes([packet[2], packet[3]])));
                }
            }
        }
    }
    // Forwarding allocated nothing. (The first repair requests below may: a session's first
    // RTCP buffer, once; `no_alloc_forwarding` measures the steady state after them.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let forwarded = parse(&scrape(&base, None).await.body);
    assert!(forwarded.contains_key("rtcdn_media_allocations_total{core=\"0\"}"));
    assert_eq!(total(&forwarded, "rtcdn_media_allocations_total"), 0.0);

    // The first player asks for a packet again and for a keyframe: the stream counts both.
    let (ssrc, got_seq) = got.expect("the first player got packets");
    players[0]
        .send_rtcp(&common::nack(ssrc, &[got_seq]))
        .await
        .unwrap();
    let pli = rtp::rtcp::Rtcp::Pli(rtp::rtcp::Pli {
        sender_ssrc: rtp::Ssrc(7),
        media_ssrc: rtp::Ssrc(ssrc),
    });
    let mut buf = [0u8; 64];
    let n = pli.write_to(&mut buf).unwrap();
    players[0].send_rtcp(&buf[..n]).await.unwrap();
    // A core publishes its counters with its work, and 50 ms after it goes quiet at the latest;
    // a publisher's bitrate reaches the registry once a second: media goes on meanwhile.
    let bitrate = "rtcdn_stream_bitrate_bits_per_second{stream=\"m\"}";
    let nacks = "rtcdn_stream_nacks_received_total{stream=\"m\"}";
    let after_text = loop {
        for _ in 0..20 {
            send(&mut publisher, &mut seq, 0, start).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for player in &mut players {
            while player.recv_rtp(Duration::from_millis(1)).await.is_some() {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = scrape(&base, None).await.body;
        let samples = parse(&text);
        if samples.get(bitrate).is_some_and(|&bps| bps > 0.0)
            && samples.get(nacks).is_some_and(|&n| n > 0.0)
        {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no bitrate for the stream: {text}"
        );
    };
    let after = parse(&after_text);
    let moved = |family: &str| total(&after, family) - total(&before, family);
    assert!(
        moved("rtcdn_rtp_received_packets_total") >= 100.0,
        "received moved by {}",
        moved("rtcdn_rtp_received_packets_total")
    );
    assert!(
        moved("rtcdn_rtp_sent_packets_total") >= 200.0,
        "sent moved by {}",
        moved("rtcdn_rtp_sent_packets_total")
    );
    // Every media packet sent is a UDP datagram here (a few may still be queued when the core
    // publishes its counters); sends carry one or (GSO) more of them.
    let (datagrams, sends) = (
        moved("rtcdn_udp_sent_datagrams_total"),
        moved("rtcdn_udp_sends_total"),
    );
    assert!(
        datagrams >= 0.9 * moved("rtcdn_rtp_sent_packets_total")
            && sends >= 1.0
            && sends <= datagrams,
        "{datagrams} datagrams in {sends} sends"
    );
    assert_eq!(
        total(&after, "rtcdn_sessions"),
        3.0,
        "a publisher and two players"
    );
    assert_eq!(total(&after, "rtcdn_streams"), 1.0);
    assert_eq!(after["rtcdn_stream_players{stream=\"m\"}"], 2.0);
    assert_eq!(after["rtcdn_stream_media_flowing{stream=\"m\"}"], 1.0);
    assert!(total(&after, "rtcdn_residence_seconds_count") > 0.0);
    assert_eq!(
        total(&after, "rtcdn_residence_seconds_count"),
        after
            .iter()
            .filter(|(k, _)| k.starts_with("rtcdn_residence_seconds_bucket")
                && k.contains("le=\"+Inf\""))
            .map(|(_, v)| v)
            .sum::<f64>(),
        "+Inf holds every measured packet"
    );

    // Bytes move with the packets, a few hundred bytes each (SRTP as on the wire).
    for direction in ["received", "sent"] {
        let packets = moved(&format!("rtcdn_rtp_{direction}_packets_total"));
        let bytes = moved(&format!("rtcdn_rtp_{direction}_bytes_total"));
        let per_packet = bytes / packets;
        assert!(
            (40.0..1500.0).contains(&per_packet),
            "{direction}: {bytes} bytes in {packets} packets"
        );
    }
    let role = |role: &str| {
        after
            .iter()
            .filter(|(k, _)| {
                k.starts_with("rtcdn_sessions_by_role{") && k.contains(&format!("role=\"{role}\""))
            })
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(role("publisher"), 1.0);
    assert_eq!(role("player"), 2.0);
    for other in ["relay", "relay_in", "ingest"] {
        assert_eq!(role(other), 0.0, "{other}");
    }
    assert_eq!(
        total(&before, "rtcdn_sessions_by_role"),
        0.0,
        "no session before"
    );
    assert!(after[bitrate] > 10_000.0, "{}", after[bitrate]);
    let stream = |family: &str| after[&format!("rtcdn_stream_{family}_total{{stream=\"m\"}}")];
    assert!(stream("received_packets") >= 100.0, "{after_text}");
    assert!(stream("sent_packets") >= 200.0, "{after_text}");
    assert!(stream("received_bytes") > 40.0 * stream("received_packets"));
    assert!(stream("sent_bytes") > 40.0 * stream("sent_packets"));
    assert_eq!(stream("nacks_received"), 1.0);
    assert_eq!(stream("keyframe_requests_received"), 1.0);
    assert!(
        stream("keyframe_requests_sent") >= 1.0,
        "the player's PLI goes on to the publisher"
    );
    let uptime = after["rtcdn_uptime_seconds"];
    assert!(uptime > 0.0 && uptime < 120.0, "uptime {uptime}");
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = after["rtcdn_start_time_seconds"];
    assert!(
        (unix_now - started - uptime).abs() < 5.0,
        "started {started}"
    );
    assert_eq!(
        total(&after, "rtcdn_auth_refusals_total"),
        0.0,
        "an open node refuses nothing"
    );

    // Every family the README documents is served.
    let served = families(&after_text);
    for family in documented_families() {
        assert!(
            served.contains(family.as_str()),
            "the README documents {family}, which /metrics does not serve: {served:?}"
        );
    }
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_on_a_protected_node() {
    let mut config = loopback_config(1);
    config.auth.publish = Policy::Token;
    config.auth.jwt_secret = Some(Secret::new("metrics-test-secret-0123456789abcdef-01"));
    config.auth.admin_token = Some(Secret::new("metrics-admin-token-0123"));
    let node = Node::start(&config).expect("node starts");
    let base = format!("http://{}", node.http_addr());
    assert_eq!(scrape(&base, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&base, Some("wrong-token-000000000")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let ok = scrape(&base, Some("metrics-admin-token-0123")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let samples = parse(&ok.body);
    assert!(samples.contains_key("rtcdn_sessions{core=\"0\"}"));
    assert_eq!(
        samples["rtcdn_auth_refusals_total{kind=\"admin\",reason=\"admin_token\"}"], 2.0,
        "the two scrapes without the admin token"
    );
    // A publish without a token is refused and counted as such.
    let whip = raw_request(
        Method::POST,
        &format!("{base}/whip/cam"),
        &[("content-type", "application/sdp")],
        b"v=0\r\n".to_vec(),
    )
    .await;
    assert_eq!(whip.status, StatusCode::UNAUTHORIZED, "{}", whip.body);
    let samples = parse(&scrape(&base, Some("metrics-admin-token-0123")).await.body);
    assert_eq!(
        samples["rtcdn_auth_refusals_total{kind=\"publish\",reason=\"missing_token\"}"],
        1.0
    );
    assert_eq!(total(&samples, "rtcdn_auth_refusals_total"), 3.0);
    node.stop();
}
