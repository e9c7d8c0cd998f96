//! A node with `auth.publish = "token"` and `auth.play = "token"` checks a token at every entry
//! point: WHIP and WHEP POST (as `Authorization: Bearer` and as `?token=`), PATCH and DELETE,
//! the WebSocket protocol's publishStream and playStream (`custom.token` of `connection`), and
//! the admin endpoints (`/api/stats`, `/rest-api/...`) with `auth.admin_token`. Missing, expired
//! and badly signed tokens get 401, valid tokens without the grant 403. Tokens signed with an
//! RSA key of a JWKS document (RS256) are accepted when the node has that JWKS.
//!
//! Everything is sent to 127.0.0.1 only.

use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use rtcdn::auth::jwt::{self, Claims};
use rtcdn::auth::{Grant, Policy, Secret};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientError, ClientSession, Mode};
use serde_json::{json, Value};

mod common;
use common::{loopback_config, post_sdp_offer, raw_request, Raw};

const SECRET: &str = "auth-test-secret-0123456789abcdef-0123";
const ADMIN: &str = "admin-token-0123456789";
const TIMEOUT: Duration = Duration::from_secs(15);

fn protected_node(jwks: bool) -> Node {
    let mut config = loopback_config(1);
    config.auth.publish = Policy::Token;
    config.auth.play = Policy::Token;
    config.auth.jwt_secret = Some(Secret::new(SECRET));
    config.auth.admin_token = Some(Secret::new(ADMIN));
    if jwks {
        config.auth.jwks_file = Some(fixture("jwks-test.json"));
    }
    Node::start(&config).expect("node starts")
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn grant(publish: &[&str], play: &[&str]) -> Grant {
    Grant {
        publish: publish.iter().map(|s| s.to_string()).collect(),
        play: play.iter().map(|s| s.to_string()).collect(),
    }
}

fn token(publish: &[&str], play: &[&str]) -> String {
    jwt::mint(
        SECRET,
        grant(publish, play),
        Duration::from_secs(300),
        Some("test".into()),
    )
}

fn claims(exp: u64, grant: Grant) -> Claims {
    Claims {
        exp,
        nbf: None,
        iat: None,
        sub: None,
        aud: None,
        rtcdn: Some(grant),
    }
}

fn expired_token() -> String {
    jwt::sign_hs256(
        SECRET,
        &claims(jwt::unix_now() - 3600, grant(&["*"], &["*"])),
    )
}

fn wrongly_signed_token() -> String {
    jwt::sign_hs256(
        "another-secret-0123456789abcdef-01234",
        &claims(jwt::unix_now() + 300, grant(&["*"], &["*"])),
    )
}

async fn post_offer(url: &str, bearer: Option<&str>, mode: Mode) -> Raw {
    post_sdp_offer(url, mode, bearer).await
}

async fn bare(method: Method, url: &str, bearer: Option<&str>) -> Raw {
    let authorization = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|v| vec![("authorization", v)])
        .unwrap_or_default();
    raw_request(method, url, &headers, Vec::new()).await
}

#[track_caller]
fn assert_status(what: &str, raw: &Raw, status: u16, fragment: &str) {
    assert_eq!(
        raw.status.as_u16(),
        status,
        "{what}: expected {status}, got {} {:?}",
        raw.status,
        raw.body
    );
    assert!(
        raw.body.to_lowercase().contains(&fragment.to_lowercase()),
        "{what}: reason {:?} lacks {fragment:?}",
        raw.body
    );
    if status == 401 {
        assert_eq!(
            raw.headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"rtcdn\""),
            "{what}: a 401 names the scheme"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_check_tokens() {
    let node = protected_node(false);
    let base = format!("http://{}", node.http_addr());
    let whip = format!("{base}/whip/cam1");

    let cases = [
        ("no token", None, 401, "a token is required to publish"),
        ("expired", Some(expired_token()), 401, "expired"),
        (
            "wrong signature",
            Some(wrongly_signed_token()),
            401,
            "signature",
        ),
        ("garbage", Some("not-a-jwt".to_string()), 401, "malformed"),
        (
            "no grant for the name",
            Some(token(&["other*"], &["*"])),
            403,
            "does not grant publish of \"cam1\"",
        ),
        (
            "a play grant only",
            Some(token(&[], &["*"])),
            403,
            "does not grant publish",
        ),
    ];
    for (what, bearer, status, fragment) in cases {
        let raw = post_offer(&whip, bearer.as_deref(), Mode::Publish).await;
        assert_status(&format!("WHIP, {what}"), &raw, status, fragment);
    }

    // A valid grant, as a header.
    let publisher_token = token(&["cam*"], &[]);
    let created = post_offer(&whip, Some(&publisher_token), Mode::Publish).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let location = created.headers["location"].to_str().unwrap().to_owned();

    // PATCH and DELETE check the token too.
    let resource = format!("{base}{location}");
    assert_status(
        "PATCH without a token",
        &bare(Method::PATCH, &resource, None).await,
        401,
        "token is required",
    );
    assert_status(
        "PATCH with the token",
        &bare(Method::PATCH, &resource, Some(&publisher_token)).await,
        405,
        "trickle",
    );
    assert_status(
        "DELETE without a token",
        &bare(Method::DELETE, &resource, None).await,
        401,
        "token is required",
    );
    assert_status(
        "DELETE with an expired token",
        &bare(Method::DELETE, &resource, Some(&expired_token())).await,
        401,
        "expired",
    );

    // WHEP: the same rules for play, here with ?token= (clients that cannot set headers).
    let whep = format!("{base}/whep/cam1");
    assert_status(
        "WHEP without a token",
        &post_offer(&whep, None, Mode::Play).await,
        401,
        "a token is required to play",
    );
    let wrong_name = token(&[], &["cam2"]);
    assert_status(
        "WHEP, grant for another name",
        &post_offer(&format!("{whep}?token={wrong_name}"), None, Mode::Play).await,
        403,
        "does not grant play of \"cam1\"",
    );
    let player_token = token(&[], &["*"]);
    let played = post_offer(&format!("{whep}?token={player_token}"), None, Mode::Play).await;
    assert_eq!(played.status, StatusCode::CREATED, "{}", played.body);
    // An unknown stream is 404 only for a client that may play it.
    assert_status(
        "WHEP of an unknown stream",
        &post_offer(
            &format!("{base}/whep/nothing"),
            Some(&player_token),
            Mode::Play,
        )
        .await,
        404,
        "not found",
    );

    assert_status(
        "DELETE with the token",
        &bare(Method::DELETE, &resource, Some(&publisher_token)).await,
        200,
        "ended",
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_admin_token() {
    let node = protected_node(false);
    let base = format!("http://{}", node.http_addr());
    let publisher_token = token(&["*"], &[]);
    let created = post_offer(
        &format!("{base}/whip/live"),
        Some(&publisher_token),
        Mode::Publish,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    for url in [
        format!("{base}/api/stats"),
        format!("{base}/rest-api/stream/find_all"),
    ] {
        assert_status(
            &url,
            &bare(Method::GET, &url, None).await,
            401,
            "admin_token",
        );
        // A client token is no admin token.
        assert_status(
            &url,
            &bare(Method::GET, &url, Some(&publisher_token)).await,
            401,
            "admin_token",
        );
        let raw = bare(Method::GET, &url, Some(ADMIN)).await;
        assert_eq!(raw.status, StatusCode::OK, "{url}: {}", raw.body);
    }

    // The listing shows a public id; terminate by it ends the session.
    let listing = bare(
        Method::POST,
        &format!("{base}/rest-api/stream/find_all"),
        Some(ADMIN),
    )
    .await;
    let list: Value = serde_json::from_str(&listing.body).unwrap();
    let public_id = list[0]["mediaSessionId"].as_str().unwrap().to_owned();
    let location = created.headers["location"].to_str().unwrap();
    assert!(
        !location.contains(&public_id),
        "the listing's id {public_id} is not the resource's secret ({location})"
    );
    let terminate = |bearer: Option<&'static str>| {
        let url = format!("{base}/rest-api/stream/terminate");
        let body = json!({ "mediaSessionId": public_id }).to_string();
        async move {
            let authorization = bearer.map(|t| format!("Bearer {t}"));
            let mut headers = vec![("content-type", "application/json")];
            if let Some(v) = authorization.as_deref() {
                headers.push(("authorization", v));
            }
            raw_request(Method::POST, &url, &headers, body.into_bytes()).await
        }
    };
    assert_status(
        "terminate without admin",
        &terminate(None).await,
        401,
        "admin_token",
    );
    assert_status(
        "terminate",
        &terminate(Some(ADMIN)).await,
        200,
        "terminated",
    );
    let listing = bare(
        Method::GET,
        &format!("{base}/rest-api/stream/find_all"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(listing.body, "[]", "the stream ended");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_are_closed_without_an_admin_token_when_actions_are_protected() {
    let mut config = loopback_config(1);
    config.auth.publish = Policy::Token;
    config.auth.jwt_secret = Some(Secret::new(SECRET));
    let node = Node::start(&config).expect("node starts");
    let url = format!("http://{}/api/stats", node.http_addr());
    assert_status(
        "stats",
        &bare(Method::GET, &url, Some("anything-at-all-123")).await,
        403,
        "set auth.admin_token",
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_present_custom_token() {
    let node = protected_node(false);
    let ws = format!("ws://{}/", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    let refused = ClientSession::connect_ws(&ws, Mode::Publish, "cam1", &certificate, TIMEOUT)
        .await
        .err()
        .expect("publish without a token is refused");
    let ClientError::Refused(info) = refused else {
        panic!("expected a FAILED status, got {refused}")
    };
    assert!(
        info.starts_with("Unauthorized: a token is required to publish"),
        "{info}"
    );

    let custom = |token: String| Some(json!({ "token": token }));
    let refused = ClientSession::connect_ws_custom(
        &ws,
        Mode::Publish,
        "cam1",
        &certificate,
        TIMEOUT,
        custom(token(&["studio*"], &[])),
    )
    .await
    .err()
    .expect("publish of a name the token does not grant is refused");
    assert!(
        refused
            .to_string()
            .contains("Forbidden: the token does not grant publish of \"cam1\""),
        "{refused}"
    );

    let mut publisher = ClientSession::connect_ws_custom(
        &ws,
        Mode::Publish,
        "cam1",
        &certificate,
        TIMEOUT,
        custom(token(&["cam1"], &[])),
    )
    .await
    .expect("publish with the token");
    let refused = ClientSession::connect_ws(&ws, Mode::Play, "cam1", &certificate, TIMEOUT)
        .await
        .err()
        .expect("play without a token is refused");
    assert!(refused.to_string().contains("Unauthorized"), "{refused}");
    let mut player = ClientSession::connect_ws_custom(
        &ws,
        Mode::Play,
        "cam1",
        &certificate,
        TIMEOUT,
        custom(token(&[], &["cam*"])),
    )
    .await
    .expect("play with the token");

    // Media flows once both are authorized.
    let start = std::time::Instant::now();
    let mut seq = 0;
    let mut received = 0;
    while received == 0 && start.elapsed() < TIMEOUT {
        common::send(&mut publisher, &mut seq, 0, start).await;
        if player.recv_rtp(Duration::from_millis(20)).await.is_some() {
            received += 1;
        }
    }
    assert!(received > 0, "the player received media");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_from_a_jwks() {
    let node = protected_node(true);
    let whip = format!("http://{}/whip/jwks", node.http_addr());
    let sign = |key_file: &str, kid: &str| {
        let pem = std::fs::read(fixture(key_file)).unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims(jwt::unix_now() + 300, grant(&["jwks"], &[])),
            &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
        .unwrap()
    };
    assert_status(
        "RS256 signed by another key",
        &post_offer(
            &whip,
            Some(&sign("rs256-other.key.pem", "test-rs256")),
            Mode::Publish,
        )
        .await,
        401,
        "signature",
    );
    assert_status(
        "RS256 with an unknown kid",
        &post_offer(
            &whip,
            Some(&sign("rs256-test.key.pem", "nope")),
            Mode::Publish,
        )
        .await,
        401,
        "key id",
    );
    let created = post_offer(
        &whip,
        Some(&sign("rs256-test.key.pem", "test-rs256")),
        Mode::Publish,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // The HS256 secret still works beside the JWKS.
    let hs = post_offer(
        &format!("http://{}/whip/hs", node.http_addr()),
        Some(&token(&["hs"], &[])),
        Mode::Publish,
    )
    .await;
    assert_eq!(hs.status, StatusCode::CREATED, "{}", hs.body);
    node.stop();
}
