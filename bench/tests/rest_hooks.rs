//! WCS REST hooks against a real HTTP server the test runs: rtcdn POSTs WCS-shaped JSON to
//! `{app URL}/connect`, `/publishStream` and `/playStream`; 200 allows, 403 refuses with the
//! backend's reason, and a hook that times out or fails refuses unless the `connect` answer's
//! `restClientConfig` says `"restOnError": "LOG"` for that method. WHIP/WHEP requests go
//! through the same hooks (their bearer token as `custom.token`), WebSocket clients are routed
//! by `appKey` (`[[auth.apps]]`), and a refused `connect` closes the WebSocket.
//!
//! Everything is sent to 127.0.0.1 only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rtcdn::auth::config::HookApp;
use rtcdn::auth::{Policy, Secret};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{sdp_offer, ClientError, ClientSession, Mode};
use serde_json::{json, Value};

mod common;
use common::{loopback_config, metrics_text, post_sdp_offer, sample_sum, Raw};

const ADMIN_TOKEN: &str = "rest-hooks-admin-token-0123";

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the backend was asked: (path, body).
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// The application's backend: `/fail/...` answers `connect` with no `restClientConfig`,
/// `/log/...` with `restOnError: LOG` for publishStream and playStream. Stream names decide the
/// answer: `forbidden` 403, `slow` no answer for 3 s, `error` 500, anything else 200. A
/// `connect` whose `custom.token` is `banned` gets 403.
async fn backend() -> (SocketAddr, Calls) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls: Calls = Arc::default();
    let recorded = calls.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let calls = recorded.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let calls = calls.clone();
                    async move { Ok::<_, Infallible>(answer(req, calls).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, calls)
}

async fn answer(req: Request<hyper::body::Incoming>, calls: Calls) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    calls.lock().unwrap().push((path.clone(), body.clone()));
    let reply = |status: u16, text: &str| {
        let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    };
    if path.ends_with("/connect") {
        if body["custom"]["token"] == "banned" {
            return reply(403, "banned user");
        }
        if path.starts_with("/log/") {
            let config = json!({"restClientConfig": {
                "publishStream": {"restOnError": "LOG"},
                "playStream": {"restOnError": "LOG"},
            }});
            return reply(200, &config.to_string());
        }
        return reply(200, "{}");
    }
    match body["name"].as_str().unwrap_or("") {
        "forbidden" => reply(403, "not your stream"),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply(200, "{}")
        }
        "error" => reply(500, "backend down"),
        _ => reply(200, "{}"),
    }
}

async fn hooked_node(backend: SocketAddr) -> Node {
    let mut config = loopback_config(1);
    config.auth.publish = Policy::Hook;
    config.auth.play = Policy::Hook;
    config.auth.rest_hook_url = Some(format!("http://{backend}/fail"));
    config.auth.rest_hook_timeout_secs = 1;
    config.auth.admin_token = Some(Secret::new(ADMIN_TOKEN));
    config.auth.apps = vec![HookApp {
        key: "logApp".into(),
        url: format!("http://{backend}/log"),
    }];
    Node::start(&config).expect("node starts")
}

async fn whip(base: &str, stream: &str, bearer: Option<&str>) -> Raw {
    post_sdp_offer(&format!("{base}/whip/{stream}"), Mode::Publish, bearer).await
}

fn calls_to(calls: &Calls, suffix: &str) -> Vec<Value> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.ends_with(suffix))
        .map(|(_, body)| body.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_requests_go_through_the_hooks() {
    let (backend, calls) = backend().await;
    let node = hooked_node(backend).await;
    let base = format!("http://{}", node.http_addr());

    let allowed = whip(&base, "ok", Some("user-token")).await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{}", allowed.body);
    let connect = calls_to(&calls, "/fail/connect");
    assert_eq!(connect.len(), 1, "one connect hook per WHIP request");
    assert_eq!(connect[0]["custom"]["token"], "user-token");
    assert_eq!(connect[0]["appKey"], "defaultApp");
    let publish = calls_to(&calls, "/fail/publishStream");
    assert_eq!(publish.len(), 1);
    let body = &publish[0];
    assert_eq!(body["name"], "ok");
    assert_eq!(body["published"], true);
    assert_eq!(body["custom"]["token"], "user-token");
    assert_eq!(body["nodeId"], node.http_addr().to_string());
    assert_eq!(body["sessionId"], connect[0]["sessionId"]);
    assert!(body["mediaSessionId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(
        body.get("sdp").is_none(),
        "the offer is not sent to the backend"
    );

    let refused = whip(&base, "forbidden", None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("not your stream"), "{}", refused.body);

    // A hook that does not answer within rest_hook_timeout_secs (1 s), or fails, refuses: the
    // default restOnError is FAIL.
    let started = Instant::now();
    let slow = whip(&base, "slow", None).await;
    assert_eq!(
        slow.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        slow.body
    );
    assert!(slow.body.contains("did not answer within"), "{}", slow.body);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let failed = whip(&base, "error", None).await;
    assert_eq!(
        failed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        failed.body
    );
    assert!(failed.body.contains("answered 500"), "{}", failed.body);

    // A banned client is refused at connect, before any stream hook.
    let before = calls_to(&calls, "/fail/publishStream").len();
    let banned = whip(&base, "ok2", Some("banned")).await;
    assert_eq!(banned.status, StatusCode::FORBIDDEN, "{}", banned.body);
    assert!(banned.body.contains("banned user"), "{}", banned.body);
    assert_eq!(calls_to(&calls, "/fail/publishStream").len(), before);
    // /metrics counted the refusals: two answered 403 (forbidden, banned), two could not be
    // asked (slow, error).
    let metrics = metrics_text(&base, Some(ADMIN_TOKEN)).await;
    let refused = |reason: &str| {
        let reason = format!("reason=\"{reason}\"");
        sample_sum(
            &metrics,
            "rtcdn_auth_refusals_total{",
            &["kind=\"publish\"", &reason],
        )
    };
    assert_eq!(refused("hook_refused"), 2.0, "{metrics}");
    assert_eq!(refused("hook_failed"), 2.0, "{metrics}");

    // WHEP asks playStream.
    let play = post_sdp_offer(&format!("{base}/whep/ok"), Mode::Play, None).await;
    assert_eq!(play.status, StatusCode::CREATED, "{}", play.body);
    let played = calls_to(&calls, "/fail/playStream");
    assert_eq!(played.len(), 1);
    assert_eq!(played[0]["published"], false);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_are_routed_by_app_key_and_rest_on_error_is_theirs() {
    let (backend, calls) = backend().await;
    let node = hooked_node(backend).await;
    let ws = format!("ws://{}/", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    // The bench client connects as appKey defaultApp; logApp is reached with a raw socket below.
    let connect = |stream: &'static str, token: &'static str| {
        let ws = ws.clone();
        let certificate = certificate.clone();
        async move {
            ClientSession::connect_ws_custom(
                &ws,
                Mode::Publish,
                stream,
                &certificate,
                TIMEOUT,
                Some(json!({ "token": token })),
            )
            .await
        }
    };

    // defaultApp (FAIL): a slow hook refuses the publish with the reason.
    let refused = connect("slow", "t").await.err().expect("refused");
    assert!(
        matches!(&refused, ClientError::Refused(info) if info.contains("did not answer within")),
        "{refused}"
    );
    let refused = connect("forbidden", "t").await.err().expect("refused");
    assert!(
        matches!(&refused, ClientError::Refused(info)
            if info == "Forbidden: refused by the application's REST hook publishStream: not your stream"),
        "{refused}"
    );
    let allowed = connect("fine", "t").await.expect("allowed");
    assert_eq!(calls_to(&calls, "/fail/connect").len(), 3);

    // A banned client's WebSocket is closed at connect.
    let banned = connect("fine2", "banned").await.err().expect("closed");
    assert!(
        !matches!(banned, ClientError::Refused(_)),
        "closed before any stream: {banned}"
    );

    // logApp: its connect answer says restOnError LOG, so a slow publishStream is logged and
    // the publish goes on; a 403 still refuses.
    let sent = logapp_publish(&ws, "slow").await;
    assert_eq!(
        sent, "setRemoteSDP",
        "restOnError LOG lets a failed hook pass"
    );
    let sent = logapp_publish(&ws, "forbidden").await;
    assert_eq!(sent, "FAILED", "a 403 refuses whatever restOnError says");
    assert_eq!(calls_to(&calls, "/log/connect").len(), 2);
    allowed.close().await.unwrap();
    node.stop();
}

/// Connects as appKey `logApp` and publishes `stream`; returns `setRemoteSDP` or the status the
/// node answered with.
async fn logapp_publish(ws: &str, stream: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    let send = |message: &str, data: Value| {
        Message::text(json!({"message": message, "data": [data]}).to_string())
    };
    socket
        .send(send(
            "connection",
            json!({"appKey": "logApp", "custom": {}}),
        ))
        .await
        .unwrap();
    let certificate = DtlsCertificate::generate().unwrap();
    socket
        .send(send(
            "publishStream",
            json!({"mediaSessionId": "m1", "name": stream, "sdp": sdp_offer(Mode::Publish, &certificate)}),
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(TIMEOUT, socket.next()).await
        else {
            break;
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        match frame["message"].as_str() {
            Some("setRemoteSDP") => return "setRemoteSDP".into(),
            Some("notifyStreamStatusEvent") => {
                return frame["data"][0]["status"].as_str().unwrap_or("").to_owned()
            }
            _ => {}
        }
    }
    panic!("no answer to publishStream {stream}");
}
