//! The control API: `GET /api/sessions` shows every live session (kind, stream, core, state,
//! bitrate, loss, age), and the id it shows ends that session through WCS's
//! `/rest-api/stream/terminate` or `DELETE /api/sessions/{id}`, a stream through
//! `DELETE /api/streams/{name}`; `GET /api/streams` shows each
//! stream's codecs, bitrate, picture size (only once known) and players; `GET /api/cdn` an
//! origin's edges and relays. Admin endpoints: a protected node wants its admin token.
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::auth::{Policy, Secret};
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;

mod common;
use common::{
    cdn_pair, get_json, is_video, loopback_config, publish_and_play, raw_request, rtp_seq, send,
    stream_listing, test_node,
};
use rtcdn_bench::client::{ClientSession, VIDEO_PT};

async fn list(base: &str) -> Vec<serde_json::Value> {
    let raw = raw_request(
        Method::GET,
        &format!("{base}/api/sessions"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.body);
    serde_json::from_str::<serde_json::Value>(&raw.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_and_one_is_ended_by_its_id() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (mut publisher, [kept, mut kicked]) = publish_and_play(&base, "ctl", &certificate).await;
    // Media until the publisher's bitrate is measured (over a receiver report period, reported
    // by its core once a second).
    let start = Instant::now();
    let mut seq = 0;
    let rows = loop {
        for _ in 0..50 {
            send(&mut publisher, &mut seq, 0, start).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let rows = list(&base).await;
        if rows[0]["bitrate_bps"].as_u64().unwrap_or(0) > 0 || start.elapsed().as_secs() > 6 {
            break rows;
        }
    };
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["publisher", "player", "player"],
        "oldest first: {rows:?}"
    );
    for row in &rows {
        // Where each came from: the bench's address, and its User-Agent.
        assert!(
            row["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{row}"
        );
        assert_eq!(row["user_agent"], rtcdn_bench::http::USER_AGENT, "{row}");
        assert_eq!(row["stream"], "ctl");
        assert_eq!(row["connected"], true, "{row}");
        assert!(row["age_secs"].as_f64().unwrap() >= 0.0);
        assert!(row["core"].as_u64().unwrap() < 2);
    }
    assert!(
        rows[0]["bitrate_bps"].as_u64().unwrap_or(0) > 100_000,
        "the publisher's bitrate: {}",
        rows[0]
    );

    // The third session, by the id the list shows.
    let id = rows[2]["id"].as_str().unwrap().to_owned();
    let body = serde_json::json!({ "mediaSessionId": id }).to_string();
    let raw = raw_request(
        Method::POST,
        &format!("{base}/rest-api/stream/terminate"),
        &[("content-type", "application/json")],
        body.into_bytes(),
    )
    .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.body);
    assert!(
        kicked.wait_ended(Duration::from_secs(5)).await.is_some(),
        "the terminated player's session ends"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let rows = loop {
        let rows = list(&base).await;
        if rows.len() == 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["id"] != id.as_str()));
    assert!(kept.ended().is_none(), "the other player plays on");
    node.stop();
}

/// Sends the publisher's next video packet as the first packet of a VP8 keyframe of
/// `width` x `height` (RFC 6386 §9.1), numbered as [`send`] numbers video.
async fn send_vp8_keyframe(publisher: &mut ClientSession, seq: &mut u64, width: u16, height: u16) {
    while !is_video(*seq) {
        send(publisher, seq, 0, Instant::now()).await;
    }
    let mut packet = vec![0x80, 0x80 | VIDEO_PT];
    packet.extend_from_slice(&rtp_seq(*seq).to_be_bytes());
    packet.extend_from_slice(&(*seq as u32).wrapping_mul(3000).to_be_bytes());
    packet.extend_from_slice(&publisher.video_ssrc.to_be_bytes());
    // Descriptor (S, partition 0), frame tag (P clear), start code, sizes, then some data.
    packet.extend_from_slice(&[0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
    packet.extend_from_slice(&width.to_le_bytes());
    packet.extend_from_slice(&height.to_le_bytes());
    packet.resize(600, 0x55);
    publisher.send_rtp(&packet).await.expect("publisher sends");
    *seq += 1;
}

/// A receiver report from `player` saying it lost `fraction` (in 256ths) of the stream's video.
async fn report_loss(player: &mut ClientSession, media_ssrc: u32, fraction: u8) {
    let mut rr = vec![0x81, 201, 0x00, 0x07];
    rr.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    rr.extend_from_slice(&media_ssrc.to_be_bytes());
    rr.extend_from_slice(&[fraction, 0, 0, 3]);
    rr.extend_from_slice(&[0; 16]);
    player.send_rtcp(&rr).await.expect("player sends RTCP");
}

async fn admin_get(url: &str) -> serde_json::Value {
    get_json(url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_show_bitrate_size_and_players_and_a_kicked_player_hears_why() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (mut publisher, [mut kept, mut kicked]) =
        publish_and_play(&base, "console", &certificate).await;

    // No size before a keyframe announced one: left out, never 0.
    let streams = admin_get(&format!("{base}/api/streams")).await;
    assert_eq!(streams.as_array().unwrap().len(), 1, "{streams}");
    assert!(streams[0].get("width").is_none(), "{streams}");
    assert!(stream_listing(&base).await[0].get("width").is_none());

    let start = Instant::now();
    let mut seq = 0;
    let mut keyframe_sent = false;
    let stream = loop {
        for _ in 0..50 {
            send(&mut publisher, &mut seq, 0, start).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if !keyframe_sent {
            send_vp8_keyframe(&mut publisher, &mut seq, 640, 360).await;
            keyframe_sent = true;
        }
        // The video SSRC a player is sent is its own: read it off a packet it got.
        if let Some(packet) = kicked.try_recv_rtp() {
            let header = rtp::RtpHeader::parse(&packet).unwrap();
            if header.payload_type().value() == VIDEO_PT {
                report_loss(&mut kicked, header.ssrc().0, 64).await;
            }
        }
        while kept.try_recv_rtp().is_some() {}
        let streams = admin_get(&format!("{base}/api/streams")).await;
        let stream = streams[0].clone();
        let ready = stream["bitrate_bps"].as_u64().unwrap_or(0) > 0
            && stream.get("width").is_some()
            && stream["players"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["loss_percent"].is_number());
        if ready || start.elapsed().as_secs() > 8 {
            break stream;
        }
    };
    assert_eq!(stream["name"], "console");
    assert_eq!(stream["state"], "live", "{stream}");
    assert!(
        stream["bitrate_bps"].as_u64().unwrap() > 100_000,
        "{stream}"
    );
    assert_eq!(
        (&stream["width"], &stream["height"]),
        (&640.into(), &360.into())
    );
    let codecs: Vec<&str> = stream["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["codec"].as_str().unwrap())
        .collect();
    assert!(codecs.contains(&"VP8"), "{stream}");
    assert_eq!(stream["player_count"], 2);
    let players = stream["players"].as_array().unwrap();
    assert!(players.iter().all(|p| p["kind"] == "player"
        && p["state"] == "connected"
        && p["peer"].as_str().unwrap().starts_with("127.0.0.1:")));
    let lossy = players
        .iter()
        .find(|p| p["loss_percent"].is_number())
        .expect("the player that reported loss");
    assert_eq!(lossy["loss_percent"], 25.0, "{stream}");
    let kicked_id = lossy["id"].as_str().unwrap().to_owned();

    // WCS's listing: the bitrate in kbit/s and the size, no made-up quality.
    let listed = stream_listing(&base).await;
    assert!(listed[0]["bitrate"].as_u64().unwrap() > 100, "{listed}");
    assert_eq!(
        (&listed[0]["width"], &listed[0]["height"]),
        (&640.into(), &360.into())
    );
    assert!(listed[0].get("quality").is_none(), "{listed}");

    // The sessions list says the same of the player.
    let sessions = list(&base).await;
    let row = sessions
        .iter()
        .find(|r| r["id"] == kicked_id.as_str())
        .unwrap();
    assert_eq!(row["state"], "connected");
    assert_eq!(row["loss_percent"], 25.0);

    // Kicked: it ends, and its resource URL says why; the other plays on.
    let resource_url = kicked.resource().to_owned();
    let live = admin_get(&resource_url).await;
    assert_eq!(live["state"], "live", "{live}");
    let url = format!("{base}/api/sessions/{kicked_id}");
    let raw = raw_request(Method::DELETE, &url, &[], Vec::new()).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.body);
    assert!(
        raw.body.contains("terminated by an administrator"),
        "{}",
        raw.body
    );
    assert!(
        kicked.wait_ended(Duration::from_secs(5)).await.is_some(),
        "the kicked player's session ends"
    );
    let ended = admin_get(&resource_url).await;
    assert_eq!(ended["state"], "ended", "{ended}");
    assert_eq!(ended["code"], "terminated", "{ended}");
    let again = raw_request(Method::DELETE, &url, &[], Vec::new()).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    let streams = admin_get(&format!("{base}/api/streams")).await;
    assert_eq!(streams[0]["player_count"], 1, "{streams}");
    assert!(kept.ended().is_none(), "the other player plays on");

    // The stream is ended: its publisher as an administrator's doing, the remaining player
    // because the publisher left; each resource says so.
    let kept_url = kept.resource().to_owned();
    let publisher_url = publisher.resource().to_owned();
    let stream_url = format!("{base}/api/streams/console");
    let raw = raw_request(Method::DELETE, &stream_url, &[], Vec::new()).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.body);
    assert!(publisher.wait_ended(Duration::from_secs(5)).await.is_some());
    assert!(kept.wait_ended(Duration::from_secs(5)).await.is_some());
    let ended = admin_get(&kept_url).await;
    assert_eq!(ended["code"], "publisher_left", "{ended}");
    let ended = admin_get(&publisher_url).await;
    assert_eq!(ended["code"], "terminated", "{ended}");
    let again = raw_request(Method::DELETE, &stream_url, &[], Vec::new()).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    assert_eq!(
        admin_get(&format!("{base}/api/streams")).await,
        serde_json::json!([])
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdn_view_shows_an_origins_edges_and_relays() {
    let lone = test_node(1);
    let view = admin_get(&format!("http://{}/api/cdn", lone.http_addr())).await;
    assert_eq!(view["role"], "standalone", "{view}");
    assert_eq!(view["edges"], serde_json::json!([]));
    lone.stop();

    let (origin, edge) = cdn_pair();
    let origin_base = format!("http://{}", origin.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher = ClientSession::connect(
        &origin_base,
        rtcdn_bench::client::Mode::Publish,
        "mapped",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("publish to the origin");
    let start = Instant::now();
    let mut seq = 0;
    let view = loop {
        send(&mut publisher, &mut seq, 0, start).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let view = admin_get(&format!("{origin_base}/api/cdn")).await;
        let edge = &view["edges"][0];
        let up = edge["relays"][0]["state"] == "up" && edge["health"] == "answering";
        if up || start.elapsed().as_secs() > 15 {
            break view;
        }
    };
    assert_eq!(view["role"], "origin", "{view}");
    let listed = &view["edges"][0];
    assert_eq!(listed["host"], "127.0.0.1");
    assert_eq!(listed["ws"], edge.http_addr().port());
    assert_eq!(listed["health"], "answering", "{view}");
    assert!(listed["calls"].is_u64(), "{view}");
    assert_eq!(
        listed["relays"],
        // Loopback passes UDP: "auto" (the default) stays there.
        serde_json::json!([{ "stream": "mapped", "state": "up", "transport": "udp" }]),
        "{view}"
    );
    assert_eq!(view["node"]["streams"], 1);
    let streams = admin_get(&format!("{origin_base}/api/streams")).await;
    assert_eq!(
        streams[0]["relays"],
        serde_json::json!([{ "edge": 1, "state": "up", "transport": "udp" }])
    );
    assert_eq!(streams[0]["source"], "publisher");
    let on_edge = admin_get(&format!("http://{}/api/cdn", edge.http_addr())).await;
    assert_eq!(on_edge["role"], "edge", "{on_edge}");
    // The edge sees the origin's relay that brings it the stream.
    let relay_in = &on_edge["relays_in"][0];
    assert_eq!(relay_in["stream"], "mapped", "{on_edge}");
    assert_eq!(relay_in["state"], "connected", "{on_edge}");
    assert!(relay_in["from"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(on_edge["relays_in"].as_array().unwrap().len(), 1);
    let edge_streams = admin_get(&format!("http://{}/api/streams", edge.http_addr())).await;
    assert_eq!(edge_streams[0]["source"], "relay", "{edge_streams}");
    assert_eq!(view["relays_in"], serde_json::json!([]));
    origin.stop();
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_list_wants_the_admin_token_on_a_protected_node() {
    let mut config = loopback_config(1);
    config.auth.publish = Policy::Token;
    config.auth.jwt_secret = Some(Secret::new("control-api-test-secret-0123456789abcdef"));
    config.auth.admin_token = Some(Secret::new("control-api-admin-token-0123"));
    let node = Node::start(&config).unwrap();
    let url = format!("http://{}/api/sessions", node.http_addr());
    let refused = raw_request(Method::GET, &url, &[], Vec::new()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let bearer = "Bearer control-api-admin-token-0123";
    let allowed = raw_request(Method::GET, &url, &[("authorization", bearer)], Vec::new()).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(allowed.body, "[]");
    let base = format!("http://{}", node.http_addr());
    for (method, path) in [
        (Method::GET, "/api/streams"),
        (Method::GET, "/api/cdn"),
        (Method::DELETE, "/api/sessions/1"),
        (Method::DELETE, "/api/streams/x"),
    ] {
        let url = format!("{base}{path}");
        let refused = raw_request(method.clone(), &url, &[], Vec::new()).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
        let allowed = raw_request(method, &url, &[("authorization", bearer)], Vec::new()).await;
        assert_ne!(allowed.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    node.stop();
}
