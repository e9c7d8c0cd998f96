//! The Flashphoner WebSocket protocol spoken directly, for what the SDK demos never send: bad
//! frames, missing fields, requests out of order, names in use or unknown. Every case must get a
//! clear FAILED or `fail`, and the session must keep working afterwards.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtcdn::config::Config;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;

/// A node with two media cores, as the WCS tests need.
fn test_node() -> Node {
    common::test_node(2)
}

struct Ws(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Ws {
    async fn open(node: &Node, path: &str) -> Ws {
        let url = format!("ws://{}{path}", node.http_addr());
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket upgrade");
        Ws(ws)
    }

    async fn send_text(&mut self, text: &str) {
        self.0.send(Message::text(text)).await.expect("send");
    }

    async fn send(&mut self, message: &str, data: Value) {
        self.send_text(&json!({ "message": message, "data": [data] }).to_string())
            .await;
    }

    /// The next frame other than a ping, as (message, data[0]).
    async fn recv(&mut self) -> (String, Value) {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.0.next())
                .await
                .expect("a frame within 10 s")
                .expect("socket open")
                .expect("no socket error");
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(text.as_str()).expect("server frames are JSON");
            let message = value["message"].as_str().expect("message name").to_owned();
            assert!(
                value["data"].is_array(),
                "every server frame carries a data array: {value}"
            );
            if message != "ping" {
                return (message, value["data"][0].clone());
            }
        }
    }

    async fn expect(&mut self, message: &str) -> Value {
        let (got, data) = self.recv().await;
        assert_eq!(got, message, "unexpected frame {got}: {data}");
        data
    }

    async fn connect(&mut self) {
        self.send(
            "connection",
            json!({ "appKey": "defaultApp", "mediaProviders": ["WebRTC"], "clientVersion": "2.0" }),
        )
        .await;
        self.expect("getVersion").await;
        let user = self.expect("getUserData").await;
        assert_eq!(user["status"], "ESTABLISHED");
        assert_eq!(
            user["appKey"], "defaultApp",
            "the connection object is echoed"
        );
    }

    async fn expect_failed(&mut self, media_session_id: &str, info: &str) {
        let status = self.expect("notifyStreamStatusEvent").await;
        assert_eq!(status["mediaSessionId"], media_session_id);
        assert_eq!(status["status"], "FAILED", "{status}");
        let got = status["info"].as_str().unwrap_or("");
        assert!(got.contains(info), "info {got:?} should contain {info:?}");
    }

    /// A request every established session answers: proof that it still works.
    async fn still_works(&mut self) {
        self.send(
            "availableStream",
            json!({ "mediaSessionId": "probe", "name": "nothing-here" }),
        )
        .await;
        let reply = self.expect("availableStream").await;
        assert_eq!(reply["id"], "probe");
        assert_eq!(
            reply["status"], "false",
            "status is the string \"false\": {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_clear_errors_and_the_session_survives() {
    let node = test_node();
    let mut ws = Ws::open(&node, "/").await;

    // Before `connection`, a stream request is refused with the SDK's own words.
    ws.send(
        "publishStream",
        json!({ "mediaSessionId": "m0", "name": "early", "sdp": "v=0" }),
    )
    .await;
    ws.expect_failed("m0", "Session not ready").await;
    ws.connect().await;

    ws.send_text("this is not json").await;
    let fail = ws.expect("fail").await;
    assert!(
        fail["info"].as_str().unwrap().contains("invalid JSON"),
        "{fail}"
    );
    ws.send_text(r#"{"data":[{}]}"#).await;
    let fail = ws.expect("fail").await;
    assert!(fail["info"].as_str().unwrap().contains("message"), "{fail}");
    ws.0.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    ws.expect("fail").await;

    // Unknown messages are ignored without closing.
    ws.send("noSuchMessage", json!({ "x": 1 })).await;
    ws.still_works().await;

    // A second `connection` is refused; the first stays established.
    ws.send("connection", json!({ "appKey": "again" })).await;
    let fail = ws.expect("fail").await;
    assert_eq!(fail["apiMethod"], "connection");
    ws.still_works().await;

    // Missing fields.
    ws.send("publishStream", json!({ "name": "x", "sdp": "v=0" }))
        .await;
    let fail = ws.expect("fail").await;
    assert_eq!(fail["info"], "MediaSessionId is null");
    ws.send(
        "publishStream",
        json!({ "mediaSessionId": "m1", "name": "x" }),
    )
    .await;
    ws.expect_failed("m1", "without an sdp offer").await;
    ws.send(
        "playStream",
        json!({ "mediaSessionId": "m2", "name": "x", "sdp": "garbage" }),
    )
    .await;
    ws.expect_failed("m2", "Stream not found").await;
    ws.send(
        "publishStream",
        json!({ "mediaSessionId": "m3", "name": "x", "sdp": "garbage" }),
    )
    .await;
    ws.expect_failed("m3", "Failed by error").await;
    ws.send(
        "publishStream",
        json!({ "mediaSessionId": "m4", "name": "bad name/", "sdp": "v=0" }),
    )
    .await;
    ws.expect_failed("m4", "invalid stream name").await;
    ws.send(
        "unPublishStream",
        json!({ "mediaSessionId": "never", "name": "x" }),
    )
    .await;
    ws.expect_failed("never", "Stream not found").await;
    ws.send(
        "sendStreamEvent",
        json!({ "mediaSessionId": "never", "type": "data", "payload": {} }),
    )
    .await;
    ws.expect("fail").await;

    // The rest the SDK sends.
    ws.send(
        "sendData",
        json!({ "operationId": "op-1", "payload": { "a": 1 } }),
    )
    .await;
    let reply = ws.expect("DataStatusEvent").await;
    assert_eq!(
        (reply["operationId"].as_str(), reply["status"].as_str()),
        (Some("op-1"), Some("ACCEPTED"))
    );
    ws.send("pong", Value::Null).await;
    ws.still_works().await;

    // Another client is not disturbed by any of this.
    let mut other = Ws::open(&node, "/websocket").await;
    other.connect().await;
    other.still_works().await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_in_use_unknown_streams_and_availability() {
    let node = test_node();
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher = ClientSession::connect(
        &base,
        Mode::Publish,
        "live",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let mut ws = Ws::open(&node, "/").await;
    ws.connect().await;
    ws.send(
        "availableStream",
        json!({ "mediaSessionId": "a1", "name": "live" }),
    )
    .await;
    assert_eq!(ws.expect("availableStream").await["status"], "true");

    // A WHIP stream's name is taken for the WebSocket protocol too (one registry).
    let offer = rtcdn::sdp::write_offer(&rtcdn::sdp::OfferParams {
        ice_ufrag: "abcd".into(),
        ice_pwd: "0123456789abcdefghijkl".into(),
        fingerprint: rtcdn::sdp::Fingerprint([1; 32]),
        media: vec![rtcdn::sdp::OfferMedia {
            mid: "0".into(),
            kind: rtcdn::sdp::MediaKind::Video,
            direction: rtcdn::sdp::Direction::SendOnly,
            codecs: vec![rtcdn::sdp::Codec::new(96, "VP8", 90000, None)],
            extmaps: Vec::new(),
            send: None,
            send_rids: Vec::new(),
        }],
        active_tcp: None,
    });
    ws.send(
        "publishStream",
        json!({ "mediaSessionId": "p1", "name": "live", "sdp": offer }),
    )
    .await;
    ws.expect_failed("p1", "Stream name is already in use")
        .await;

    // A WebSocket play of the WHIP stream is answered; an unknown name is not found.
    let play_offer = offer.replace("a=sendonly", "a=recvonly");
    ws.send(
        "playStream",
        json!({ "mediaSessionId": "q1", "name": "live", "sdp": play_offer }),
    )
    .await;
    let answer = ws.expect("setRemoteSDP").await;
    assert_eq!(answer, "q1", "setRemoteSDP data[0] is the mediaSessionId");
    ws.send(
        "playStream",
        json!({ "mediaSessionId": "q2", "name": "nope", "sdp": play_offer }),
    )
    .await;
    ws.expect_failed("q2", "Stream not found").await;

    // A REST listing sees the stream and its player.
    let list = common::stream_listing(&base).await;
    assert_eq!(list[0]["name"], "live");
    assert_eq!(list[0]["playerCount"], 1);
    let found = rtcdn_bench::http::request(
        hyper::Method::POST,
        &format!("{base}/rest-api/stream/find"),
        Some("application/json"),
        r#"{"name":"nope"}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(found.status.as_u16(), 404);

    // The publisher leaves: the WebSocket player hears why, and a new play is refused.
    publisher.close().await.unwrap();
    ws.expect_failed("q1", "Stopped by publisher stop").await;
    ws.send(
        "playStream",
        json!({ "mediaSessionId": "q3", "name": "live", "sdp": play_offer }),
    )
    .await;
    ws.expect_failed("q3", "Stream not found").await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_websocket_with_a_configured_certificate() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};

    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("rtcdn-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.key_pair.serialize_pem()).unwrap();

    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.http.tls_listen = "127.0.0.1:0".parse().unwrap();
    config.http.tls_certificate = Some(cert_path);
    config.http.tls_private_key = Some(key_path);
    config.media.port_base = 0;
    config.media.threads = 1;
    let node = Node::start(&config).expect("node starts with TLS");
    let https = node.https_addr().expect("an HTTPS listener");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(key.cert.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (ws, _) = tokio_tungstenite::client_async("wss://localhost/websocket", tls)
        .await
        .expect("wss upgrade");
    let mut ws = ws;
    ws.send(Message::text(
        json!({ "message": "connection", "data": [{ "appKey": "defaultApp" }] }).to_string(),
    ))
    .await
    .unwrap();
    let mut established = false;
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await
    {
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        if value["message"] == "getUserData" {
            assert_eq!(value["data"][0]["status"], "ESTABLISHED");
            established = true;
            break;
        }
    }
    assert!(established, "ESTABLISHED over wss://");
    node.stop();
    let _ = std::fs::remove_dir_all(dir);
}
