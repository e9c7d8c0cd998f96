//! WCS per-stream ACL keys (CDN 2.2) through a two-node CDN: keys are managed on the origin with
//! `/rest-api/cdn/stream/access_list/{add,remove,delete,print}`; a stream with keys plays only
//! for players presenting one (`custom.aclAuth` of the SDK's `connection`, or `?aclAuth=` on
//! WHEP), on the origin and on the edge; revoking a key stops every player holding it, on the
//! edge too, within a second, with FAILED "Restricted access"; deleting the list opens the
//! stream to all again.
//!
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientError, ClientSession, Mode};
use serde_json::{json, Value};

mod common;
use common::{cdn_pair, metrics_text, play_until_media, raw_request, sample_sum, Raw, Streaming};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn access_list(origin: &str, action: &str, body: Value) -> Raw {
    raw_request(
        Method::POST,
        &format!("{origin}/rest-api/cdn/stream/access_list/{action}"),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await
}

async fn ws_player(
    ws: &str,
    key: Option<&str>,
    certificate: &DtlsCertificate,
) -> Result<ClientSession, ClientError> {
    let custom = key.map(|k| json!({ "aclAuth": k }));
    ClientSession::connect_ws_custom(ws, Mode::Play, "acl", certificate, TIMEOUT, custom).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_keys_gate_players_on_origin_and_edge_and_revoking_stops_them() {
    let (origin, edge) = cdn_pair();
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{}", edge.http_addr());
    let edge_ws = format!("ws://{}/", edge.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    // No list for a stream that is not published.
    let missing = access_list(&origin_base, "add", json!({"name": "acl", "keys": ["k1"]})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);

    let publisher =
        ClientSession::connect(&origin_base, Mode::Publish, "acl", &certificate, TIMEOUT)
            .await
            .expect("publish on the origin");
    let sender = Streaming::start(publisher, 0);
    // A new stream is open to all; wait until the relay serves it on the edge.
    let open_player =
        play_until_media(&edge_base, "acl", &certificate, Duration::from_secs(20)).await;

    let added = access_list(
        &origin_base,
        "add",
        json!({"name": "acl", "keys": ["k1", "k2"]}),
    )
    .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    let printed = access_list(&origin_base, "print", json!({"name": "acl"})).await;
    assert_eq!(
        serde_json::from_str::<Value>(&printed.body).unwrap(),
        json!(["k1", "k2"])
    );
    for (what, body) in [
        ("no keys", json!({"name": "acl"})),
        ("keys not strings", json!({"name": "acl", "keys": [1]})),
        ("no name", json!({"keys": ["x"]})),
    ] {
        let bad = access_list(&origin_base, "add", body).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{what}: {}", bad.body);
    }

    // The keyless player on the edge was playing when the list got keys: it is stopped.
    let mut open_player = open_player;
    assert!(
        open_player
            .wait_ended(Duration::from_secs(2))
            .await
            .is_some(),
        "a player without a key is ended once the stream has keys"
    );

    // On the edge: no key or an unlisted one is refused with WCS's text; a listed one plays.
    for key in [None, Some("k3")] {
        let refused = ws_player(&edge_ws, key, &certificate)
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&refused, ClientError::Refused(info) if info == "Restricted access"),
            "{key:?}: {refused}"
        );
    }
    let mut k1_player = ws_player(&edge_ws, Some("k1"), &certificate)
        .await
        .expect("a listed key plays on the edge");
    let mut k2_whep = ClientSession::connect(
        &edge_base,
        Mode::Play,
        "acl?aclAuth=k2",
        &certificate,
        TIMEOUT,
    )
    .await
    .expect("a listed key plays over WHEP");
    let refused = ClientSession::connect(
        &edge_base,
        Mode::Play,
        "acl?aclAuth=k9",
        &certificate,
        TIMEOUT,
    )
    .await
    .err()
    .expect("an unlisted key is refused over WHEP");
    assert!(refused.to_string().contains("403"), "{refused}");
    // The origin enforces the list too.
    let origin_ws = format!("ws://{}/", origin.http_addr());
    let refused = ClientSession::connect_ws(&origin_ws, Mode::Play, "acl", &certificate, TIMEOUT)
        .await
        .err()
        .expect("the origin refuses too");
    assert!(
        refused.to_string().contains("Restricted access"),
        "{refused}"
    );
    // Each node counted its refusals: the edge two over WebSocket and one over WHEP.
    let restricted = ["kind=\"play\"", "reason=\"restricted_access\""];
    for (base, refusals) in [(&edge_base, 3.0), (&origin_base, 1.0)] {
        let metrics = metrics_text(base, None).await;
        assert_eq!(
            sample_sum(&metrics, "rtcdn_auth_refusals_total{", &restricted),
            refusals,
            "{base}: {metrics}"
        );
    }
    for player in [&mut k1_player, &mut k2_whep] {
        assert!(
            player.recv_rtp(Duration::from_secs(3)).await.is_some(),
            "listed keys receive"
        );
    }

    // Revoking k1 stops its player on the edge within a second; k2 keeps playing.
    let revoked_at = Instant::now();
    let removed = access_list(
        &origin_base,
        "remove",
        json!({"name": "acl", "keys": ["k1"]}),
    )
    .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    // The media core's DTLS close may overtake the WebSocket's FAILED; the client keeps the
    // status, the reason an SDK page acts on.
    let mut why = String::new();
    while revoked_at.elapsed() < Duration::from_secs(1) && !why.contains("Restricted access") {
        tokio::time::sleep(Duration::from_millis(5)).await;
        why = k1_player.ended().unwrap_or_default();
    }
    assert_eq!(
        why, "FAILED: Restricted access",
        "the revoked key's player got FAILED \"Restricted access\" within 1 s"
    );
    println!(
        "revoked key's edge player stopped after {:?}",
        revoked_at.elapsed()
    );
    while k2_whep.try_recv_rtp().is_some() {}
    assert!(
        k2_whep.recv_rtp(Duration::from_secs(2)).await.is_some(),
        "k2 still plays"
    );
    assert!(k2_whep.ended().is_none());

    // Deleting the list opens the stream again.
    let deleted = access_list(&origin_base, "delete", json!({"name": "acl"})).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reopened = false;
    while !reopened && Instant::now() < deadline {
        reopened = ws_player(&edge_ws, None, &certificate).await.is_ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened, "anyone plays once the list is deleted");

    sender.stop().await.close().await.unwrap();
    origin.stop();
    edge.stop();
}
