//! Bad input at a running in-process node: malformed or refused signalling requests get the
//! right status and a reason; garbage datagrams (random bytes, STUN failing integrity, SRTP/SRTCP
//! failing authentication, RTP/RTCP that does not parse, stray DTLS) are dropped and counted in
//! `/api/stats` while a healthy publisher→player session on the same node keeps delivering every
//! packet intact and in order. Streams by name: 409 for a live name, 404 for an unknown one, and
//! a publisher that leaves (DELETE, or just goes silent) takes its players with it and frees the
//! name.
//!
//! Everything is sent to 127.0.0.1 only.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rtcdn::config::Config;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn::sdp::{
    self, Codec, Direction, Fingerprint, MediaKind, OfferMedia, OfferParams, SendTrack,
};
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT, VIDEO_PT};
use rtcdn_bench::http;
use rtcdn_bench::media::{read_packet, write_packet, Probe, RtpFields};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

mod common;
use common::{raw_request, stats_json, CoreStats};

fn test_node(threads: usize, consent_timeout_secs: Option<u64>) -> Node {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.bind = "127.0.0.1".parse().unwrap();
    config.media.port_base = 0;
    config.media.threads = threads;
    if let Some(secs) = consent_timeout_secs {
        config.session.consent_timeout_secs = secs;
    }
    Node::start(&config).expect("node starts")
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

/// Writes `request` as it is on a new connection; returns everything the server sent until it
/// closed (empty if it just hung up).
async fn raw_tcp(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the node");
    stream.write_all(request).await.expect("send the request");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    assert!(
        read.is_ok(),
        "the node neither answered nor closed within 10 s"
    );
    String::from_utf8_lossy(&reply).into_owned()
}

async fn post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<String>,
) -> http::HttpResponse {
    http::request(Method::POST, url, content_type, body.into())
        .await
        .expect("HTTP exchange")
}

async fn post_sdp(url: &str, body: impl Into<String>) -> http::HttpResponse {
    post(url, Some("application/sdp"), body).await
}

async fn delete(url: &str) -> http::HttpResponse {
    http::request(Method::DELETE, url, None, String::new())
        .await
        .expect("HTTP exchange")
}

/// Asserts a refusal: the status, and a reason containing `fragment` (case-insensitive).
fn assert_refused(what: &str, response: &http::HttpResponse, status: u16, fragment: &str) {
    assert_eq!(
        response.status.as_u16(),
        status,
        "{what}: status (body {:?})",
        response.body
    );
    assert!(
        response
            .body
            .to_lowercase()
            .contains(&fragment.to_lowercase()),
        "{what}: reason {:?} does not mention {fragment:?}",
        response.body
    );
    assert!(
        response.location.is_none(),
        "{what}: a refusal must not create a resource"
    );
}

/// A WHIP (`publish`) or WHEP offer as the bench client writes it, with a throwaway fingerprint
/// (the server only checks it against the DTLS certificate, which these tests never send).
fn offer(publish: bool, ufrag: &str) -> String {
    let direction = if publish {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let media = [
        (MediaKind::Audio, "0", 0x1111_1111u32),
        (MediaKind::Video, "1", 0x2222_2222u32),
    ]
    .into_iter()
    .map(|(kind, mid, ssrc)| OfferMedia {
        mid: mid.into(),
        kind,
        direction,
        codecs: match kind {
            MediaKind::Audio => vec![Codec::new(AUDIO_PT, "opus", 48000, Some(2))],
            MediaKind::Video => vec![Codec::new(VIDEO_PT, "VP8", 90000, None)],
        },
        extmaps: Vec::new(),
        send: publish.then(|| SendTrack {
            ssrc,
            cname: "bad-input".into(),
            stream_id: "bad-input".into(),
            track_id: format!("bad-input-{mid}"),
            rtx_ssrc: None,
        }),
        send_rids: Vec::new(),
    })
    .collect();
    sdp::write_offer(&OfferParams {
        ice_ufrag: ufrag.into(),
        ice_pwd: "abcdefghijklmnopqrstuvwxyz012345".into(),
        fingerprint: Fingerprint([0x5a; 32]),
        media,
        active_tcp: None,
    })
}

/// `sdp` without the lines starting with `prefix`.
fn without_lines(sdp: &str, prefix: &str) -> String {
    let kept: Vec<&str> = sdp
        .split("\r\n")
        .filter(|line| !line.starts_with(prefix))
        .collect();
    assert!(
        kept.len() < sdp.split("\r\n").count(),
        "the offer has no {prefix} line to remove"
    );
    kept.join("\r\n")
}

// ---------------------------------------------------------------------------------------------
// /api/stats
// ---------------------------------------------------------------------------------------------

/// Per-core counters of `/api/stats`, summed over the cores.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    sessions: u64,
    rtp_received: u64,
    rtp_sent: u64,
    stun_rejected: u64,
    srtp_rejected: u64,
    rtp_malformed: u64,
    unknown_source: u64,
    unclassified: u64,
}

async fn stats(base: &str) -> Stats {
    let cores = CoreStats::fetch(base).await;
    Stats {
        sessions: cores.sum("sessions"),
        rtp_received: cores.sum("rtp_received"),
        rtp_sent: cores.sum("rtp_sent"),
        stun_rejected: cores.sum("stun_rejected"),
        srtp_rejected: cores.sum("srtp_rejected"),
        rtp_malformed: cores.sum("rtp_malformed"),
        unknown_source: cores.sum("unknown_source"),
        unclassified: cores.sum("unclassified"),
    }
}

/// Polls `/api/stats` until `done` holds or `deadline` passes (a core publishes its counters
/// with its work, at most every 20 ms and 50 ms after it goes quiet); returns the last value
/// either way.
async fn stats_until(base: &str, deadline: Duration, done: impl Fn(&Stats) -> bool) -> Stats {
    let start = Instant::now();
    loop {
        let current = stats(base).await;
        if done(&current) || start.elapsed() > deadline {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Forged STUN
// ---------------------------------------------------------------------------------------------

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn put_attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    msg.extend_from_slice(&kind.to_be_bytes());
    msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len() + (4 - value.len() % 4) % 4, 0);
}

/// A Binding request exactly like a controlling agent's nominating check for `username`
/// (PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, a correct FINGERPRINT) whose MESSAGE-INTEGRITY is
/// random: it passes every check but integrity.
fn forged_binding_request(username: &str, rng: &mut impl Rng) -> Vec<u8> {
    let mut msg = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    let mut transaction = [0u8; 12];
    rng.fill_bytes(&mut transaction);
    msg.extend_from_slice(&transaction);
    put_attribute(&mut msg, 0x0006, username.as_bytes()); // USERNAME
    put_attribute(&mut msg, 0x0024, &0x6e7f_1effu32.to_be_bytes()); // PRIORITY
    put_attribute(&mut msg, 0x802a, &rng.gen::<u64>().to_be_bytes()); // ICE-CONTROLLING
    put_attribute(&mut msg, 0x0025, &[]); // USE-CANDIDATE
    let mut integrity = [0u8; 20];
    rng.fill_bytes(&mut integrity);
    put_attribute(&mut msg, 0x0008, &integrity); // MESSAGE-INTEGRITY (wrong)
                                                 // FINGERPRINT over everything before it, with the length already counting it.
    let length = (msg.len() - 20 + 8) as u16;
    msg[2..4].copy_from_slice(&length.to_be_bytes());
    let fingerprint = crc32(&msg) ^ 0x5354_554e;
    put_attribute(&mut msg, 0x8028, &fingerprint.to_be_bytes());
    msg
}

/// The forgery fails exactly at MESSAGE-INTEGRITY in rtcdn's own ICE-lite agent: USERNAME,
/// FINGERPRINT and the message format are right, so the node's `stun_rejected` counts what the
/// UDP test means it to.
#[test]
fn forged_stun_fails_only_integrity() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    let server = ice::IceCredentials {
        ufrag: "srvu".into(),
        pwd: "0123456789abcdefghijklmn".into(),
    };
    let client = ice::IceCredentials {
        ufrag: "clnt".into(),
        pwd: "nmlkjihgfedcba9876543210".into(),
    };
    let now = Instant::now();
    let mut agent = ice::IceLiteAgent::new(server, client, now);
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let forged = forged_binding_request("srvu:clnt", &mut rng);
    assert_eq!(
        agent.handle_packet(now, from, &forged),
        Err(ice::IceError::BadIntegrity)
    );
    assert!(
        agent.poll_transmit().is_none(),
        "a forged request must not be answered"
    );
    assert!(
        agent.poll_event().is_none(),
        "a forged request must not nominate"
    );
    let wrong_user = forged_binding_request("srvu:xxxx", &mut rng);
    assert_eq!(
        agent.handle_packet(now, from, &wrong_user),
        Err(ice::IceError::BadUsername)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Signalling
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalling_refuses_bad_requests_with_reasons() {
    let node = test_node(2, None);
    let base = format!("http://{}", node.http_addr());
    let whip = |name: &str| format!("{base}/whip/{name}");
    let whep = |name: &str| format!("{base}/whep/{name}");
    let good = offer(true, "bdin");

    // Malformed offers: 400 with a reason, and no stream left behind.
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage body", "this is not SDP at all \u{1f4a9}\r\n\0\0\0".into(), "malformed SDP"),
        ("empty body", String::new(), "SDP"),
        ("SDP without m-lines", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".into(), "no audio or video"),
        ("no ice-ufrag", without_lines(&good, "a=ice-ufrag:"), "ICE credentials"),
        ("no fingerprint", without_lines(&good, "a=fingerprint:"), "fingerprint"),
        (
            "sha-1 fingerprint",
            good.split("\r\n")
                .map(|line| {
                    if line.starts_with("a=fingerprint:") {
                        "a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB".to_owned()
                    } else {
                        line.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n"),
            "sha-1",
        ),
        ("SDP cut inside the video m-line", good[..good.find("m=video").expect("a video m-line") + 9].to_owned(), "SDP"),
        ("m-line without a=mid", without_lines(&good, "a=mid:"), "a=mid"),
        ("m-line without a=rtcp-mux", without_lines(&good, "a=rtcp-mux"), "rtcp-mux"),
    ];
    for (what, body, reason) in &cases {
        let response = post_sdp(&whip("bad-offer"), body.clone()).await;
        assert_refused(&format!("WHIP {what}"), &response, 400, reason);
    }
    let not_utf8 = raw_request(
        Method::POST,
        &whip("bad-offer"),
        &[("content-type", "application/sdp")],
        vec![b'v', b'=', 0xff, 0xfe, 0x80],
    )
    .await;
    assert_eq!(
        not_utf8.status,
        StatusCode::BAD_REQUEST,
        "non-UTF-8 offer: {}",
        not_utf8.body
    );
    assert!(
        not_utf8.body.contains("UTF-8"),
        "non-UTF-8 offer: reason {:?}",
        not_utf8.body
    );

    // Too large: 413 past the 64 KiB body limit; 400 (with a reason) when within the HTTP limit
    // but still larger than an SDP may be is not reachable, since both limits are 64 KiB.
    let mut huge = good.clone();
    while huge.len() <= 70 * 1024 {
        huge.push_str("a=x-padding:0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
    }
    assert_refused(
        "huge offer",
        &post_sdp(&whip("huge"), huge).await,
        413,
        "exceeds",
    );

    // Content-Type.
    assert_refused(
        "text/plain offer",
        &post(&whip("ct"), Some("text/plain"), good.clone()).await,
        415,
        "application/sdp",
    );
    assert_refused(
        "no Content-Type",
        &post(&whip("ct"), None, good.clone()).await,
        415,
        "application/sdp",
    );

    // Stream names.
    for name in ["bad%20name", "a%2Fb", "%00", "semi;colon", &"x".repeat(129)] {
        assert_refused(
            &format!("WHIP to {name:?}"),
            &post_sdp(&whip(name), good.clone()).await,
            400,
            "invalid stream name",
        );
        assert_refused(
            &format!("WHEP to {name:?}"),
            &post_sdp(&whep(name), offer(false, "bdpl")).await,
            400,
            "invalid stream name",
        );
    }

    // A '%' right before a multi-byte character (sent raw: URI libraries refuse such paths).
    for protocol in ["whip", "whep"] {
        let request = format!(
            "POST /{protocol}/%a\u{e9} HTTP/1.1\r\nhost: rtcdn\r\ncontent-type: application/sdp\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
        );
        let reply = raw_tcp(node.http_addr(), request.as_bytes()).await;
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "POST /{protocol}/%a\u{e9}: no 400 but {reply:?}"
        );
    }

    // Nothing published yet: WHEP is 404 whatever the body.
    assert_refused(
        "WHEP unknown stream",
        &post_sdp(&whep("nobody"), offer(false, "bdpl")).await,
        404,
        "not found",
    );
    assert_refused(
        "WHEP unknown stream, garbage offer",
        &post_sdp(&whep("nobody"), "garbage").await,
        404,
        "not found",
    );
    let json = stats_json(&base).await;
    assert_eq!(
        json["streams"],
        serde_json::json!([]),
        "refused requests left streams behind: {json}"
    );

    // A publish (signalling only: no ICE follow-up is needed to hold the name).
    let first = raw_request(
        Method::POST,
        &whip("live"),
        &[
            ("content-type", "application/sdp"),
            ("origin", "http://example.test"),
        ],
        good.clone().into_bytes(),
    )
    .await;
    assert_eq!(
        first.status,
        StatusCode::CREATED,
        "first WHIP: {}",
        first.body
    );
    let location = first
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("201 has a Location")
        .to_owned();
    assert!(location.starts_with("/whip/live/"), "Location {location:?}");
    let exposed = first
        .headers
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        exposed.to_lowercase().contains("location"),
        "Location is not exposed to pages: {exposed:?}"
    );
    assert_eq!(
        first
            .headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    assert!(sdp::parse(&first.body).is_ok(), "the answer parses");
    let resource = format!("{base}{location}");

    // The name is taken.
    let second = post_sdp(&whip("live"), offer(true, "bdi2")).await;
    assert_refused("second WHIP of a live name", &second, 409, "already in use");
    // Even with a garbage offer the answer is about the name.
    assert_refused(
        "second WHIP, garbage offer",
        &post_sdp(&whip("live"), "garbage").await,
        409,
        "already in use",
    );

    // WHEP to the live stream with bad offers: 400 with a reason.
    assert_refused(
        "WHEP garbage offer",
        &post_sdp(&whep("live"), "garbage").await,
        400,
        "SDP",
    );
    assert_refused(
        "WHEP without fingerprint",
        &post_sdp(
            &whep("live"),
            without_lines(&offer(false, "bdpl"), "a=fingerprint:"),
        )
        .await,
        400,
        "fingerprint",
    );
    assert_refused(
        "WHEP without ice-ufrag",
        &post_sdp(
            &whep("live"),
            without_lines(&offer(false, "bdpl"), "a=ice-ufrag:"),
        )
        .await,
        400,
        "ICE credentials",
    );
    let play = post_sdp(&whep("live"), offer(false, "bdpl")).await;
    assert_eq!(
        play.status,
        StatusCode::CREATED,
        "WHEP to a live stream: {}",
        play.body
    );
    let player_resource = http::resolve(
        &whep("live"),
        play.location.as_deref().expect("WHEP Location"),
    );

    // Trickle ICE and other methods on a resource.
    let patch = http::request(
        Method::PATCH,
        &resource,
        Some("application/trickle-ice-sdpfrag"),
        "a=candidate:x".into(),
    )
    .await
    .unwrap();
    assert_refused("PATCH", &patch, 405, "trickle");
    let get = http::request(Method::GET, &whip("live"), None, String::new())
        .await
        .unwrap();
    assert_eq!(
        get.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "GET /whip/live: {}",
        get.body
    );

    // CORS preflight.
    let preflight = raw_request(
        Method::OPTIONS,
        &whip("live"),
        &[
            ("origin", "http://example.test"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        Vec::new(),
    )
    .await;
    assert!(
        preflight.status.is_success(),
        "preflight: {}",
        preflight.status
    );
    let header = |name: &str| {
        preflight
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header("access-control-allow-origin"), "*");
    for method in ["POST", "DELETE", "PATCH", "OPTIONS"] {
        assert!(
            header("access-control-allow-methods").contains(method),
            "preflight does not allow {method}: {:?}",
            header("access-control-allow-methods")
        );
    }
    assert!(
        header("access-control-allow-headers")
            .to_lowercase()
            .contains("content-type"),
        "preflight: {:?}",
        header("access-control-allow-headers")
    );
    // Refusals carry CORS headers too, so pages can read the reason.
    let refused = raw_request(
        Method::POST,
        &whep("nobody"),
        &[
            ("content-type", "application/sdp"),
            ("origin", "http://example.test"),
        ],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(
        refused
            .headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );

    // Unknown paths.
    for path in ["/nope", "/api/nope", "/whip", "/whipx/live", "/api/stats/x"] {
        let response = http::request(Method::GET, &format!("{base}{path}"), None, String::new())
            .await
            .unwrap();
        assert!(
            response.status == StatusCode::NOT_FOUND
                || response.status == StatusCode::METHOD_NOT_ALLOWED,
            "GET {path}: {} {}",
            response.status,
            response.body
        );
    }
    assert_refused(
        "GET /nope",
        &http::request(Method::GET, &format!("{base}/nope"), None, String::new())
            .await
            .unwrap(),
        404,
        "no such resource",
    );

    // DELETE of sessions that do not exist.
    for path in [
        "/whip/live/0",
        "/whip/live/123456789abcdef",
        "/whip/live/not-hex",
        "/whep/live/ffffffffffffffff",
        "/whip/live/%00",
    ] {
        assert_refused(
            &format!("DELETE {path}"),
            &delete(&format!("{base}{path}")).await,
            404,
            "no such session",
        );
    }

    // The publisher leaves: its player's resource is gone too, a second DELETE is 404, and the
    // name is free again.
    let deleted = delete(&resource).await;
    assert_eq!(
        deleted.status,
        StatusCode::OK,
        "DELETE the WHIP resource: {}",
        deleted.body
    );
    assert_refused(
        "DELETE twice",
        &delete(&resource).await,
        404,
        "no such session",
    );
    assert_refused(
        "DELETE the ended player",
        &delete(&player_resource).await,
        404,
        "no such session",
    );
    assert_refused(
        "WHEP after the publisher left",
        &post_sdp(&whep("live"), offer(false, "bdpl")).await,
        404,
        "not found",
    );
    let again = post_sdp(&whip("live"), good.clone()).await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "WHIP after DELETE: {}",
        again.body
    );
    let again_resource = http::resolve(&whip("live"), again.location.as_deref().expect("Location"));
    assert_ne!(
        again_resource, resource,
        "a new session gets a new resource"
    );
    assert_eq!(delete(&again_resource).await.status, StatusCode::OK);

    // The node still serves after all this.
    assert_eq!(stats_json(&base).await["streams"], serde_json::json!([]));
    node.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. Garbage datagrams while a healthy session streams
// ---------------------------------------------------------------------------------------------

/// What the garbage should add to the counters.
#[derive(Debug, Default)]
struct Expected {
    stun_rejected: u64,
    srtp_rejected: u64,
    rtp_malformed: u64,
    unknown_source: u64,
    unclassified: u64,
    /// Zero-length datagrams sent: counted as unclassified if the socket backend delivers them.
    empty: u64,
}

struct Healthy {
    publisher: ClientSession,
    player: ClientSession,
    seq: u64,
    start: Instant,
}

impl Healthy {
    async fn connect(base: &str, stream: &str, certificate: &DtlsCertificate) -> Healthy {
        let publisher =
            ClientSession::connect(base, Mode::Publish, stream, certificate, CONNECT_TIMEOUT)
                .await
                .expect("publish");
        let player = ClientSession::connect(base, Mode::Play, stream, certificate, CONNECT_TIMEOUT)
            .await
            .expect("play");
        let mut healthy = Healthy {
            publisher,
            player,
            seq: 0,
            start: Instant::now(),
        };
        healthy.warm_up().await;
        healthy
    }

    /// The RTP sequence number of the next packet `send` sends.
    fn next_rtp_seq(&self) -> u16 {
        common::rtp_seq(self.seq)
    }

    fn next_is_video(&self) -> bool {
        common::is_video(self.seq)
    }

    async fn send(&mut self, phase: u32) {
        common::send(&mut self.publisher, &mut self.seq, phase, self.start).await;
    }

    /// Sends until the player receives (its keys are installed a moment after its DTLS is up),
    /// then drains the warm-up packets.
    async fn warm_up(&mut self) {
        let players = std::slice::from_mut(&mut self.player);
        let within = Duration::from_secs(15);
        let (seq, start) = (&mut self.seq, self.start);
        common::warm_up_until_received(&mut self.publisher, players, seq, start, within).await;
        common::drain_rtp(players, Duration::from_millis(100)).await;
    }

    /// Checks that the player got packets `first..first + count` of `phase`, intact, in order.
    async fn expect_delivered(&mut self, first: u64, count: u64, phase: u32) {
        let mut expected = first;
        while expected < first + count {
            let packet = self
                .player
                .recv_rtp(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "the player missed packet {expected} (got {} of {count})",
                        expected - first
                    )
                });
            let (probe, pt) =
                read_packet(&packet).unwrap_or_else(|e| panic!("packet {expected}: {e}"));
            assert_eq!(probe.phase, phase, "packet {expected}: from another phase");
            assert_eq!(probe.sequence, expected, "lost or reordered");
            assert_eq!(
                pt,
                if expected % 5 != 4 {
                    VIDEO_PT
                } else {
                    AUDIO_PT
                },
                "payload type of packet {expected}"
            );
            expected += 1;
        }
        assert!(
            self.player
                .recv_rtp(Duration::from_millis(200))
                .await
                .is_none(),
            "the player got packets nobody sent"
        );
        assert_eq!(
            self.player.counters().srtp_failures,
            0,
            "the player got packets failing SRTP"
        );
        assert!(
            self.player.ended().is_none() && self.publisher.ended().is_none(),
            "the healthy session ended"
        );
    }
}

/// A datagram of `len` random bytes whose first byte is `first`.
fn random_datagram(rng: &mut StdRng, first: u8, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    if let Some(byte) = data.first_mut() {
        *byte = first;
    }
    data
}

/// An RTP header (V=2) with `pt`, `seq`, `ssrc` and random payload and "tag": SRTP that
/// cannot authenticate.
fn fake_srtp(rng: &mut StdRng, pt: u8, seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
    let mut data = random_datagram(rng, 0x80, len.max(12));
    data[1] = pt;
    data[2..4].copy_from_slice(&seq.to_be_bytes());
    data[8..12].copy_from_slice(&ssrc.to_be_bytes());
    data
}

/// An SRTCP-looking packet (a sender report header, the E flag and an index) with a random
/// payload and tag.
fn fake_srtcp(rng: &mut StdRng, ssrc: u32, index: u32) -> Vec<u8> {
    let mut data = random_datagram(rng, 0x80, 8 + 20 + 4 + 16);
    data[1] = 200;
    data[2..4].copy_from_slice(&6u16.to_be_bytes());
    data[4..8].copy_from_slice(&ssrc.to_be_bytes());
    let at = data.len() - 16 - 4;
    data[at..at + 4].copy_from_slice(&(0x8000_0000 | index).to_be_bytes());
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_counted_and_harm_no_session() {
    const MEASURED: u64 = 700;
    let node = test_node(2, None);
    let base = format!("http://{}", node.http_addr());
    let media: Vec<SocketAddr> = node.media_addrs().to_vec();
    assert!(
        media.iter().all(|a| a.ip().is_loopback()),
        "media must be on loopback: {media:?}"
    );
    let certificate = DtlsCertificate::generate().unwrap();
    let mut healthy = Healthy::connect(&base, "healthy", &certificate).await;
    let publisher_core = healthy
        .publisher
        .remote_addr()
        .expect("publisher nominated an address");
    let player_core = healthy
        .player
        .remote_addr()
        .expect("player nominated an address");
    assert!(publisher_core.ip().is_loopback() && player_core.ip().is_loopback());

    let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed: u64 = rand::random();
    eprintln!("garbage seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let extra_ssrc = 0x0bad_0001u32;
    let mut extra_seq = 0u16;
    let mut srtcp_index = 1u32;
    let mut expected = Expected::default();
    let n_cores = media.len() as u64;

    let before = stats(&base).await;
    let first = healthy.seq;
    for i in 0..MEASURED {
        healthy.send(1).await;
        match i % 16 {
            // From a stranger's address, to every core.
            0 => {
                // Neither STUN, DTLS nor RTP by its first byte.
                let first = *[4u8, 19, 64, 100, 127, 192, 255]
                    .get(rng.gen_range(0..7))
                    .unwrap();
                let len = rng.gen_range(1..1400);
                for addr in &media {
                    garbage
                        .send_to(&random_datagram(&mut rng, first, len), addr)
                        .unwrap();
                }
                expected.unclassified += n_cores;
            }
            1 => {
                // STUN for the live sessions, failing integrity: rejected by their ICE agent.
                garbage
                    .send_to(
                        &forged_binding_request(healthy.publisher.stun_username(), &mut rng),
                        publisher_core,
                    )
                    .unwrap();
                garbage
                    .send_to(
                        &forged_binding_request(healthy.player.stun_username(), &mut rng),
                        player_core,
                    )
                    .unwrap();
                expected.stun_rejected += 2;
            }
            2 => {
                // STUN for nobody, and random bytes in the STUN range.
                for addr in &media {
                    garbage
                        .send_to(&forged_binding_request("nobody:nobody", &mut rng), addr)
                        .unwrap();
                    let len = rng.gen_range(1..200);
                    let first = rng.gen_range(0..=3);
                    garbage
                        .send_to(&random_datagram(&mut rng, first, len), addr)
                        .unwrap();
                }
                expected.unknown_source += 2 * n_cores;
            }
            3 => {
                // SRTP and SRTCP from a stranger, with the healthy publisher's SSRCs.
                let seq = healthy.next_rtp_seq();
                for addr in &media {
                    garbage
                        .send_to(
                            &fake_srtp(&mut rng, VIDEO_PT, seq, healthy.publisher.video_ssrc, 1200),
                            addr,
                        )
                        .unwrap();
                    garbage
                        .send_to(
                            &fake_srtcp(&mut rng, healthy.publisher.video_ssrc, 1000),
                            addr,
                        )
                        .unwrap();
                }
                expected.unknown_source += 2 * n_cores;
            }
            4 => {
                // DTLS-range records from a stranger.
                for addr in &media {
                    let mut record = random_datagram(&mut rng, 22, 100);
                    record[1..3].copy_from_slice(&[0xfe, 0xfd]);
                    garbage.send_to(&record, addr).unwrap();
                    let first = rng.gen_range(20..=63);
                    garbage
                        .send_to(&random_datagram(&mut rng, first, 60), addr)
                        .unwrap();
                }
                expected.unknown_source += 2 * n_cores;
            }
            // From the real publisher's address.
            5 => {
                // SRTP with the very next sequence number of the live track and a bad tag: must
                // not move the replay window or the rollover counter.
                let (pt, ssrc) = if healthy.next_is_video() {
                    (VIDEO_PT, healthy.publisher.video_ssrc)
                } else {
                    (AUDIO_PT, healthy.publisher.audio_ssrc)
                };
                let seq = healthy.next_rtp_seq();
                healthy
                    .publisher
                    .send_raw(&fake_srtp(&mut rng, pt, seq, ssrc, 1200))
                    .await
                    .unwrap();
                expected.srtp_rejected += 1;
            }
            6 => {
                // SRTP far ahead (would look like a rollover), and truncated SRTP.
                let seq = healthy.next_rtp_seq().wrapping_add(30_000);
                healthy
                    .publisher
                    .send_raw(&fake_srtp(
                        &mut rng,
                        VIDEO_PT,
                        seq,
                        healthy.publisher.video_ssrc,
                        300,
                    ))
                    .await
                    .unwrap();
                healthy
                    .publisher
                    .send_raw(&[0x80, VIDEO_PT, 0, 1, 0, 0])
                    .await
                    .unwrap();
                healthy
                    .publisher
                    .send_raw(&fake_srtp(
                        &mut rng,
                        AUDIO_PT,
                        7,
                        healthy.publisher.audio_ssrc,
                        14,
                    ))
                    .await
                    .unwrap();
                expected.srtp_rejected += 3;
            }
            7 => {
                // SRTCP failing authentication.
                healthy
                    .publisher
                    .send_raw(&fake_srtcp(
                        &mut rng,
                        healthy.publisher.video_ssrc,
                        srtcp_index,
                    ))
                    .await
                    .unwrap();
                srtcp_index += 1;
                expected.srtp_rejected += 1;
            }
            8 => {
                // Authentic SRTP whose RTP uses a payload type that was never negotiated.
                let mut buf = [0u8; 400];
                let probe = Probe {
                    sequence: u64::MAX,
                    sent_at_ns: 0,
                    phase: 9,
                };
                let fields = RtpFields {
                    pt: 77,
                    ssrc: extra_ssrc,
                    seq: extra_seq,
                    ts: 0,
                    marker: false,
                };
                let len = write_packet(&mut buf, fields, None, probe, 300);
                extra_seq = extra_seq.wrapping_add(1);
                healthy.publisher.send_rtp(&buf[..len]).await.unwrap();
                expected.rtp_malformed += 1;
            }
            9 => {
                // Authentic SRTCP whose compound packet does not parse (a length past the end).
                let mut rtcp = vec![0x80, 200, 0x00, 0x40];
                rtcp.extend_from_slice(&extra_ssrc.to_be_bytes());
                rtcp.extend_from_slice(&[0xab; 20]);
                healthy.publisher.send_rtcp(&rtcp).await.unwrap();
                expected.rtp_malformed += 1;
            }
            10 => {
                // Random bytes in the STUN range from the publisher: its ICE agent rejects them.
                let len = rng.gen_range(1..300);
                let first = rng.gen_range(0..=3);
                healthy
                    .publisher
                    .send_raw(&random_datagram(&mut rng, first, len))
                    .await
                    .unwrap();
                expected.stun_rejected += 1;
            }
            11 => {
                // Random bytes in the RTP range from the publisher.
                let len = rng.gen_range(1..1300);
                let first = rng.gen_range(128..=191);
                healthy
                    .publisher
                    .send_raw(&random_datagram(&mut rng, first, len))
                    .await
                    .unwrap();
                expected.srtp_rejected += 1;
            }
            12 => {
                // Unclassifiable bytes from the publisher.
                let len = rng.gen_range(1..1300);
                healthy
                    .publisher
                    .send_raw(&random_datagram(&mut rng, 0x40, len))
                    .await
                    .unwrap();
                expected.unclassified += 1;
            }
            // From the real player's address.
            13 => {
                // A player sends RTP: players only receive.
                healthy
                    .player
                    .send_raw(&fake_srtp(&mut rng, VIDEO_PT, 1, 0x1234_5678, 200))
                    .await
                    .unwrap();
                expected.rtp_malformed += 1;
            }
            14 => {
                // SRTCP failing authentication from the player, and random STUN-range bytes.
                healthy
                    .player
                    .send_raw(&fake_srtcp(&mut rng, 0x1234_5678, srtcp_index))
                    .await
                    .unwrap();
                srtcp_index += 1;
                let first = rng.gen_range(0..=3);
                healthy
                    .player
                    .send_raw(&random_datagram(&mut rng, first, 40))
                    .await
                    .unwrap();
                expected.srtp_rejected += 1;
                expected.stun_rejected += 1;
            }
            _ => {
                // The datagram that is nothing at all.
                for addr in &media {
                    garbage.send_to(&[], addr).unwrap();
                }
                expected.empty += n_cores;
            }
        }
        tokio::time::sleep(Duration::from_micros(300)).await;
    }

    // Every measured packet arrived intact and in order, and nothing else did.
    healthy.expect_delivered(first, MEASURED, 1).await;

    // Every datagram is counted once, in its class: poll until the counters reach what was sent,
    // then let a few more stats periods pass and require exact counts (nothing counted twice or
    // in another class).
    let reached = |s: &Stats| {
        s.stun_rejected >= before.stun_rejected + expected.stun_rejected
            && s.srtp_rejected >= before.srtp_rejected + expected.srtp_rejected
            && s.rtp_malformed >= before.rtp_malformed + expected.rtp_malformed
            && s.unknown_source >= before.unknown_source + expected.unknown_source
            && s.unclassified >= before.unclassified + expected.unclassified
            && s.rtp_received >= before.rtp_received + MEASURED
            && s.rtp_sent >= before.rtp_sent + MEASURED
    };
    let after = stats_until(&base, Duration::from_secs(10), reached).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = if reached(&after) {
        stats(&base).await
    } else {
        after
    };
    let got = Expected {
        stun_rejected: after.stun_rejected - before.stun_rejected,
        srtp_rejected: after.srtp_rejected - before.srtp_rejected,
        rtp_malformed: after.rtp_malformed - before.rtp_malformed,
        unknown_source: after.unknown_source - before.unknown_source,
        unclassified: after.unclassified - before.unclassified,
        empty: 0,
    };
    let report = format!(
        "sent {expected:?}; counted {got:?}, rtp_received +{}, rtp_sent +{}",
        after.rtp_received - before.rtp_received,
        after.rtp_sent - before.rtp_sent,
    );
    eprintln!("{report}");
    assert_eq!(
        got.stun_rejected, expected.stun_rejected,
        "stun_rejected: {report}"
    );
    assert_eq!(
        got.srtp_rejected, expected.srtp_rejected,
        "srtp_rejected: {report}"
    );
    assert_eq!(
        got.rtp_malformed, expected.rtp_malformed,
        "rtp_malformed: {report}"
    );
    assert_eq!(
        got.unknown_source, expected.unknown_source,
        "unknown_source: {report}"
    );
    assert!(
        (expected.unclassified..=expected.unclassified + expected.empty)
            .contains(&got.unclassified),
        "unclassified: {report}"
    );
    // Only the healthy publisher's packets count as media (the authentic packets with an
    // unnegotiated payload type are malformed, not received).
    assert_eq!(
        after.rtp_received - before.rtp_received,
        MEASURED,
        "rtp_received: {report}"
    );
    assert_eq!(
        after.rtp_sent - before.rtp_sent,
        MEASURED,
        "rtp_sent: {report}"
    );
    assert_eq!(
        after.sessions, 2,
        "sessions were created or lost by garbage"
    );

    // The session keeps working after the garbage stopped, and the node accepts new sessions.
    let first = healthy.seq;
    for _ in 0..100 {
        healthy.send(2).await;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    healthy.expect_delivered(first, 100, 2).await;
    let mut other = Healthy::connect(&base, "after-garbage", &certificate).await;
    let first = other.seq;
    for _ in 0..50 {
        other.send(3).await;
    }
    other.expect_delivered(first, 50, 3).await;
    node.stop();
}

/// DTLS records from a live peer's own address after the handshake (garbage, or a spoofed
/// source) must not tear its session down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_dtls_records_from_a_live_peer_are_ignored() {
    let node = test_node(1, None);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut healthy = Healthy::connect(&base, "dtls-garbage", &certificate).await;
    let mut rng = StdRng::seed_from_u64(rand::random());
    let first = healthy.seq;
    for i in 0..240u32 {
        healthy.send(1).await;
        if i % 6 >= 4 {
            // A plaintext (epoch 0) alert, as an off-path sender spoofing the peer's address
            // could send: fatal handshake_failure, or close_notify. Only authenticated alerts may
            // end a session.
            let (level, description) = if i % 6 == 4 { (2, 40) } else { (1, 0) };
            let mut alert = vec![
                21,
                0xfe,
                0xfd,
                0,
                0,
                0,
                0,
                0,
                0,
                0x10,
                i as u8,
                0,
                2,
                level,
                description,
            ];
            healthy.publisher.send_raw(&alert).await.unwrap();
            alert[9] = 0x20;
            healthy.player.send_raw(&alert).await.unwrap();
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        let mut record = match i % 6 {
            // A handshake record, epoch 0 (a stray ClientHello-like thing).
            0 => random_datagram(&mut rng, 22, 120),
            // An application-data record in the current epoch with a garbage ciphertext.
            1 => random_datagram(&mut rng, 23, 80),
            // An alert record in the current epoch with a garbage ciphertext.
            2 => random_datagram(&mut rng, 21, 40),
            // Any byte of the DTLS range, any length.
            _ => {
                let first = rng.gen_range(20..=63);
                let len = rng.gen_range(1..400);
                random_datagram(&mut rng, first, len)
            }
        };
        if record.len() >= 13 && i % 6 != 3 {
            record[1..3].copy_from_slice(&[0xfe, 0xfd]);
            if i % 6 == 1 || i % 6 == 2 {
                record[3..5].copy_from_slice(&1u16.to_be_bytes()); // epoch 1
            }
            let len = (record.len() - 13) as u16;
            record[11..13].copy_from_slice(&len.to_be_bytes());
        }
        if i % 2 == 0 {
            healthy.publisher.send_raw(&record).await.unwrap();
        } else {
            healthy.player.send_raw(&record).await.unwrap();
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    healthy.expect_delivered(first, 240, 1).await;
    // Give a DTLS failure time to surface, then check again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = healthy.seq;
    for _ in 0..50 {
        healthy.send(2).await;
    }
    healthy.expect_delivered(first, 50, 2).await;
    node.stop();
}

// ---------------------------------------------------------------------------------------------
// 3. The publisher leaves
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_delete_ends_its_players_and_frees_the_name() {
    let node = test_node(2, None);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let healthy = Healthy::connect(&base, "leaving", &certificate).await;
    let second_player =
        ClientSession::connect(&base, Mode::Play, "leaving", &certificate, CONNECT_TIMEOUT)
            .await
            .expect("second player");
    let mut other = Healthy::connect(&base, "staying", &certificate).await;

    // The name is taken while it is live.
    let taken = post_sdp(&format!("{base}/whip/leaving"), offer(true, "bdlv")).await;
    assert_refused("WHIP of a live name", &taken, 409, "already in use");

    let Healthy {
        publisher,
        mut player,
        ..
    } = healthy;
    let player_resource = player.resource().to_owned();
    let second_resource = second_player.resource().to_owned();
    let publisher_resource = publisher.resource().to_owned();
    publisher.close().await.expect("DELETE the WHIP resource");
    let why = player.wait_ended(Duration::from_secs(10)).await;
    assert!(
        why.is_some(),
        "the player was not ended when the publisher left"
    );
    let mut second_player = second_player;
    assert!(
        second_player
            .wait_ended(Duration::from_secs(10))
            .await
            .is_some(),
        "the second player was not ended"
    );

    // Their resources are gone.
    for resource in [&player_resource, &second_resource, &publisher_resource] {
        assert_refused(
            &format!("DELETE {resource}"),
            &delete(resource).await,
            404,
            "no such session",
        );
    }
    assert_refused(
        "WHEP of the ended stream",
        &post_sdp(&format!("{base}/whep/leaving"), offer(false, "bdpl")).await,
        404,
        "not found",
    );

    // The other stream did not notice.
    let first = other.seq;
    for _ in 0..100 {
        other.send(1).await;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    other.expect_delivered(first, 100, 1).await;

    // The name can be published (and played) again.
    let mut again = Healthy::connect(&base, "leaving", &certificate).await;
    let first = again.seq;
    for _ in 0..50 {
        again.send(1).await;
    }
    again.expect_delivered(first, 50, 1).await;

    // Only the live sessions remain on the cores.
    let s = stats_until(&base, Duration::from_secs(5), |s| s.sessions == 4).await;
    assert_eq!(
        s.sessions, 4,
        "sessions on the cores after the publisher left"
    );
    node.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. The publisher vanishes
// ---------------------------------------------------------------------------------------------

/// The bench client, like browsers, sends consent checks every 4 to 6 s (RFC 7675 §5.1), so the
/// shortest consent timeout that keeps healthy sessions alive is a bit above 6 s.
const SHORT_CONSENT_SECS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_publisher_is_ended_with_its_players_on_consent_timeout() {
    let node = test_node(2, Some(SHORT_CONSENT_SECS));
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let vanishing = Healthy::connect(&base, "vanishing", &certificate).await;
    let steady_since = Instant::now();
    let mut other = Healthy::connect(&base, "steady", &certificate).await;
    let Healthy {
        publisher,
        mut player,
        ..
    } = vanishing;
    let player_resource = player.resource().to_owned();
    let publisher_resource = publisher.resource().to_owned();

    // The publisher's process dies: no DELETE, no DTLS close, no more consent checks.
    drop(publisher);
    let vanished = Instant::now();
    assert_refused(
        "WHIP while the silent publisher holds the name",
        &post_sdp(&format!("{base}/whip/vanishing"), offer(true, "bdvn")).await,
        409,
        "already in use",
    );

    // Meanwhile the steady stream keeps flowing, through several consent intervals.
    let limit = Duration::from_secs(SHORT_CONSENT_SECS * 4);
    let mut player_ended = false;
    while !player_ended {
        assert!(
            vanished.elapsed() < limit,
            "the silent publisher's player was not ended within {limit:?}"
        );
        let first = other.seq;
        for _ in 0..20 {
            other.send(1).await;
        }
        other.expect_delivered(first, 20, 1).await;
        player_ended = player
            .wait_ended(Duration::from_millis(500))
            .await
            .is_some();
    }
    eprintln!(
        "player ended {:?} after the publisher vanished",
        vanished.elapsed()
    );

    // The name is free (signalling learns of the end from the core; allow it a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    let resource = loop {
        let response = post_sdp(&format!("{base}/whip/vanishing"), offer(true, "bdvn")).await;
        match response.status {
            StatusCode::CREATED => {
                break http::resolve(
                    &format!("{base}/whip/vanishing"),
                    response.location.as_deref().unwrap(),
                )
            }
            StatusCode::CONFLICT if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            status => panic!(
                "WHIP after the silent publisher was ended: {status} {}",
                response.body
            ),
        }
    };
    for gone in [&player_resource, &publisher_resource] {
        assert_refused(
            &format!("DELETE {gone}"),
            &delete(gone).await,
            404,
            "no such session",
        );
    }
    assert_eq!(delete(&resource).await.status, StatusCode::OK);

    // The steady session outlives a consent timeout or two of its own: its consent checks keep
    // it alive while the silent one was dropped.
    while steady_since.elapsed() < Duration::from_secs(SHORT_CONSENT_SECS * 3 / 2) {
        let first = other.seq;
        for _ in 0..20 {
            other.send(2).await;
        }
        other.expect_delivered(first, 20, 2).await;
    }
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_must_name_the_sessions_own_protocol_and_stream() {
    let node = test_node(1, None);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher = ClientSession::connect(
        &base,
        Mode::Publish,
        "owned",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let id = publisher.resource().rsplit('/').next().unwrap().to_owned();
    for wrong in [
        format!("{base}/whep/owned/{id}"),
        format!("{base}/whip/other/{id}"),
    ] {
        let response =
            rtcdn_bench::http::request(hyper::Method::DELETE, &wrong, None, String::new())
                .await
                .unwrap();
        assert_eq!(
            response.status.as_u16(),
            404,
            "DELETE {wrong} must not end the publisher"
        );
    }
    assert!(publisher.ended().is_none());
    publisher.close().await.expect("the right path ends it");
    node.stop();
}
