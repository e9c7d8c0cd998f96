//! Two rtcdn nodes in one test: an origin that relays to an edge. The bench client publishes to
//! the origin over WHIP; ten clients play from the edge over WHEP and every payload must arrive
//! intact and in order. When the origin's publisher leaves, the edge's players are ended.

use std::time::{Duration, Instant};

use rtcdn::config::cdn::CdnRole;
use rtcdn::config::Config;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode, VIDEO_PT};
use rtcdn_bench::media::read_packet;

mod common;
use common::{
    assert_players_get_every_packet, cdn_origin_of, cdn_pair, core_stat, drain_rtp, is_video,
    metrics_text, play_until_media, rtp_seq, sample_sum, send, wait_for_core_stat,
    warm_up_until_received, Streaming,
};

const PLAYERS: usize = 10;
const MEASURED: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_relays_to_edge_and_edge_players_get_every_packet() {
    let (origin, edge) = cdn_pair();
    let edge_addr = edge.http_addr();
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{edge_addr}");
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);

    let mut publisher =
        ClientSession::connect(&origin_base, Mode::Publish, "cdn", &certificate, timeout)
            .await
            .expect("publish to the origin");
    // The origin relays once media flows: send until the stream is live on the edge.
    let start = Instant::now();
    let mut seq = 0u64;
    let mut players = Vec::new();
    while players.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the stream never appeared on the edge"
        );
        send(&mut publisher, &mut seq, 0, start).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(player) =
            ClientSession::connect(&edge_base, Mode::Play, "cdn", &certificate, timeout).await
        {
            players.push(player);
        }
    }
    while players.len() < PLAYERS {
        players.push(
            ClientSession::connect(&edge_base, Mode::Play, "cdn", &certificate, timeout)
                .await
                .expect("play from the edge"),
        );
    }

    // Warm up until every edge player receives, then measure.
    let within = Duration::from_secs(30);
    warm_up_until_received(&mut publisher, &mut players, &mut seq, start, within).await;
    drain_rtp(&mut players, Duration::from_millis(100)).await;
    let gap = Duration::from_micros(500);
    assert_players_get_every_packet(&mut publisher, &mut players, &mut seq, start, MEASURED, gap)
        .await;

    // WHEP on the origin sends players to the edge; `?local=1` is answered by the origin itself
    // (here: a 400 for the bad offer, instead of the redirect).
    let whep = |query: &str| {
        let url = format!("{origin_base}/whep/cdn{query}");
        async move {
            rtcdn_bench::http::request(
                hyper::Method::POST,
                &url,
                Some("application/sdp"),
                "not an offer".into(),
            )
            .await
            .unwrap()
        }
    };
    for query in ["", "?nonlocal=1", "?local=10"] {
        let redirect = whep(query).await;
        assert_eq!(redirect.status.as_u16(), 307, "{query}: {}", redirect.body);
        let location = redirect.location.unwrap_or_default();
        assert!(
            location.starts_with(&format!("{edge_base}/whep/cdn")),
            "{location}"
        );
    }
    let local = whep("?x=1&local=1").await;
    assert_eq!(local.status.as_u16(), 400, "{}", local.body);

    // Both nodes' /metrics show the relay: up on the origin, connected on the edge, the
    // sessions by role on each.
    let origin_metrics = metrics_text(&origin_base, None).await;
    assert_eq!(
        sample_sum(&origin_metrics, "rtcdn_relays{", &["state=\"up\""]),
        1.0
    );
    assert_eq!(
        sample_sum(&origin_metrics, "rtcdn_relays{", &["state=\"backoff\""]),
        0.0
    );
    let roles = |text: &str, role: &str| {
        sample_sum(
            text,
            "rtcdn_sessions_by_role{",
            &[&format!("role=\"{role}\"")],
        )
    };
    assert_eq!(roles(&origin_metrics, "publisher"), 1.0);
    assert_eq!(roles(&origin_metrics, "relay"), 1.0);
    let edge_metrics = metrics_text(&edge_base, None).await;
    assert_eq!(
        sample_sum(&edge_metrics, "rtcdn_relays_in{", &["state=\"connected\""]),
        1.0
    );
    assert_eq!(roles(&edge_metrics, "relay_in"), 1.0);
    assert_eq!(roles(&edge_metrics, "publisher"), 0.0);
    assert_eq!(roles(&edge_metrics, "player"), PLAYERS as f64);

    // The origin's publisher leaves: the origin unpublishes on the edge, whose players end.
    publisher.close().await.expect("DELETE the WHIP resource");
    for (i, player) in players.iter_mut().enumerate() {
        assert!(
            player.wait_ended(Duration::from_secs(10)).await.is_some(),
            "edge player {i} was not ended"
        );
    }
    // And the edge forgets the stream.
    let list_url = format!("{edge_base}/rest-api/stream/find_all");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = rtcdn_bench::http::request(hyper::Method::GET, &list_url, None, String::new())
            .await
            .unwrap();
        if list.body.trim() == "[]" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge still lists {}",
            list.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    origin.stop();
    edge.stop();
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for a test that binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn edge_on(port: u16) -> Node {
    let mut config = Config::default();
    config.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    config.media.port_base = 0;
    config.media.threads = 1;
    config.cdn.role = CdnRole::Edge;
    config.cdn.secret = Some(rtcdn::auth::Secret::new(common::CDN_SECRET));
    Node::start(&config).expect("edge starts")
}

/// An edge on a known port and an origin relaying to it, with their base URLs.
fn origin_and_edge() -> (Node, u16, Node, String, String) {
    let edge_port = free_port();
    let edge = edge_on(edge_port);
    let origin = cdn_origin_of(&edge);
    let origin_base = format!("http://{}", origin.http_addr());
    (
        edge,
        edge_port,
        origin,
        origin_base,
        format!("http://127.0.0.1:{edge_port}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_restart_heals_without_touching_the_origin() {
    let (edge, edge_port, origin, origin_base, edge_base) = origin_and_edge();
    let certificate = DtlsCertificate::generate().unwrap();
    let publisher = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "heal",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    // The publisher streams for the whole test, from its own task.
    let sender = Streaming::start(publisher, 0);

    let mut first =
        play_until_media(&edge_base, "heal", &certificate, Duration::from_secs(20)).await;
    edge.stop();
    // The first edge's player hears nothing more once what was in flight is drained.
    while first.recv_rtp(Duration::from_millis(200)).await.is_some() {}
    assert!(
        first.recv_rtp(Duration::from_secs(1)).await.is_none(),
        "the stopped edge still sends"
    );

    // A new edge process on the same address: the origin's relay retries with backoff and the
    // stream plays there again.
    let edge = edge_on(edge_port);
    let mut second =
        play_until_media(&edge_base, "heal", &certificate, Duration::from_secs(30)).await;
    let mut got = 0;
    while got < 50 {
        let packet = second
            .recv_rtp(Duration::from_secs(3))
            .await
            .expect("media keeps flowing through the new edge");
        read_packet(&packet).expect("intact");
        got += 1;
    }
    let publisher = sender.stop().await;
    assert!(
        publisher.ended().is_none(),
        "the publisher on the origin was never harmed"
    );
    publisher.close().await.unwrap();
    origin.stop();
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wcs_example_files_start_an_origin_that_relays() {
    let edge_port = free_port();
    let edge = edge_on(edge_port);
    // The shipped WCS files, with the edge's and our own ports made free for the test.
    let dir = std::env::temp_dir().join(format!("rtcdn-wcs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/wcs-example");
    let xml = std::fs::read_to_string(example.join("loadbalancing.xml")).unwrap();
    assert!(
        xml.contains("<ws>8180</ws>"),
        "the example relays to the shipped edge"
    );
    std::fs::write(
        dir.join("loadbalancing.xml"),
        xml.replace("<ws>8180</ws>", &format!("<ws>{edge_port}</ws>")),
    )
    .unwrap();
    let properties = std::fs::read_to_string(example.join("flashphoner.properties")).unwrap();
    let properties = properties
        .replace(rtcdn::config::cdn::EXAMPLE_SECRET, common::CDN_SECRET)
        .replace("ws.port=8080", &format!("ws.port={}", free_port()))
        .replace(
            "media_port_from=31000",
            &format!(
                "media_port_from={}",
                40000 + (std::process::id() % 20000) as u16
            ),
        );
    std::fs::write(dir.join("flashphoner.properties"), properties).unwrap();
    let config = rtcdn::config::wcs::load_wcs_dir(&dir).expect("the WCS files load");
    assert!(
        config.cdn.relays(),
        "load_balancing_enabled=true with a node makes a relaying origin"
    );
    let origin = Node::start(&config).expect("origin starts from the WCS files");
    let origin_base = format!("http://{}", origin.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "wcs",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let edge_base = format!("http://127.0.0.1:{edge_port}");
    let start = Instant::now();
    let mut seq = 0;
    let player = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the stream never reached the edge"
        );
        for _ in 0..20 {
            send(&mut publisher, &mut seq, 1, start).await;
        }
        if let Ok(mut player) = ClientSession::connect(
            &edge_base,
            Mode::Play,
            "wcs",
            &certificate,
            Duration::from_secs(5),
        )
        .await
        {
            for _ in 0..40 {
                send(&mut publisher, &mut seq, 1, start).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if player.recv_rtp(Duration::from_secs(2)).await.is_some() {
                break player;
            }
        }
    };
    // The origin's balancer sends players to that edge.
    let lb = rtcdn_bench::http::request(
        hyper::Method::GET,
        &format!("{origin_base}/lb"),
        None,
        String::new(),
    )
    .await
    .unwrap();
    let lb: serde_json::Value = serde_json::from_str(&lb.body).unwrap();
    assert_eq!(
        (lb["server"].as_str(), lb["ws"].as_u64()),
        (Some("127.0.0.1"), Some(u64::from(edge_port)))
    );
    drop(player);
    publisher.close().await.unwrap();
    origin.stop();
    edge.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// The publisher's view of what reached it: (PLIs, NACKed sequence numbers of `media_ssrc`).
fn feedback(packet: &[u8], media_ssrc: u32) -> (usize, Vec<u16>) {
    let (mut plis, mut nacked) = (0, Vec::new());
    for rtcp in rtp::rtcp::RtcpIter::new(packet).flatten() {
        match rtcp {
            rtp::rtcp::Rtcp::Pli(pli) if pli.media_ssrc.0 == media_ssrc => plis += 1,
            rtp::rtcp::Rtcp::Nack(nack) if nack.media_ssrc.0 == media_ssrc => {
                nacked.extend(nack.lost())
            }
            _ => {}
        }
    }
    (plis, nacked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_asked_for_by_the_node_that_sees_it_and_keyframe_requests_cross_the_relay() {
    let (edge, _, origin, origin_base, edge_base) = origin_and_edge();
    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "fb",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut seq = 0u64;
    // Stream until an edge player receives video, keeping the packets' sequence numbers.
    let (mut player, video) = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no video reached the edge"
        );
        for _ in 0..10 {
            send(&mut publisher, &mut seq, 1, start).await;
        }
        let Ok(mut player) = ClientSession::connect(
            &edge_base,
            Mode::Play,
            "fb",
            &certificate,
            Duration::from_secs(5),
        )
        .await
        else {
            continue;
        };
        let mut found = None;
        for _ in 0..50 {
            send(&mut publisher, &mut seq, 1, start).await;
            while let Some(packet) = player.recv_rtp(Duration::from_millis(10)).await {
                let header = rtp::RtpHeader::parse(&packet).unwrap();
                if header.payload_type().value() == VIDEO_PT {
                    let (probe, _) = read_packet(&packet).unwrap();
                    found = Some((header.ssrc().0, header.sequence_number(), probe.sequence));
                }
            }
        }
        if let Some(found) = found {
            break (player, found);
        }
    };
    let (player_ssrc, player_seq, probe_seq) = video;
    let offset = player_seq.wrapping_sub(rtp_seq(probe_seq));
    while publisher
        .recv_rtcp(Duration::from_millis(50))
        .await
        .is_some()
    {}

    // One video packet is lost between the publisher and the origin. The origin sees the gap
    // and asks the publisher for it at once, before any player could.
    while !is_video(seq) {
        send(&mut publisher, &mut seq, 1, start).await;
    }
    let lost = seq;
    seq += 1;
    for _ in 0..10 {
        send(&mut publisher, &mut seq, 1, start).await;
    }
    let mut nacked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while nacked.is_empty() && Instant::now() < deadline {
        if let Some(packet) = publisher.recv_rtcp(Duration::from_millis(20)).await {
            nacked.extend(feedback(&packet, publisher.video_ssrc).1);
        }
    }
    assert_eq!(
        nacked,
        [rtp_seq(lost)],
        "the origin asked for the packet it missed, in the publisher's numbering"
    );
    assert!(wait_for_core_stat(&origin_base, "upstream_losses_requested", 1).await >= 1);

    // The publisher sends it again: it reaches the edge's player late, with the number the
    // gap left for it, and both nodes count it recovered (the edge saw the gap too).
    let mut again = lost;
    send(&mut publisher, &mut again, 1, start).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let repaired = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let packet = player
            .recv_rtp(left)
            .await
            .expect("the repaired packet reached the edge's player");
        if read_packet(&packet).unwrap().0.sequence == lost {
            break rtp::RtpHeader::parse(&packet).unwrap().sequence_number();
        }
    };
    assert_eq!(repaired, rtp_seq(lost).wrapping_add(offset));
    for base in [&origin_base, &edge_base] {
        assert_eq!(
            wait_for_core_stat(base, "upstream_losses_recovered", 1).await,
            1,
            "{base}"
        );
    }

    // The edge's player asks for a keyframe, which crosses the relay to the publisher, and
    // for two packets it had: the edge's cache answers both (one of them the repaired packet),
    // nothing goes upstream for them.
    while publisher
        .recv_rtcp(Duration::from_millis(50))
        .await
        .is_some()
    {}
    let forwarded_before = core_stat(&edge_base, "nacks_forwarded_upstream").await;
    let pli = rtp::rtcp::Pli {
        sender_ssrc: rtp::Ssrc(7),
        media_ssrc: rtp::Ssrc(player_ssrc),
    };
    let mut buf = [0u8; 64];
    let n = rtp::rtcp::Rtcp::Pli(pli).write_to(&mut buf).unwrap();
    player.send_rtcp(&buf[..n]).await.unwrap();
    player
        .send_rtcp(&common::nack(player_ssrc, &[player_seq, repaired]))
        .await
        .unwrap();
    let (mut plis, mut nacked) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while plis == 0 && Instant::now() < deadline {
        send(&mut publisher, &mut seq, 1, start).await;
        if let Some(packet) = publisher.recv_rtcp(Duration::from_millis(20)).await {
            let (p, n) = feedback(&packet, publisher.video_ssrc);
            plis += p;
            nacked.extend(n);
        }
    }
    assert!(
        plis > 0,
        "the edge player's PLI never reached the publisher"
    );
    assert!(nacked.is_empty(), "the publisher was asked for {nacked:?}");
    assert_eq!(
        wait_for_core_stat(&edge_base, "retransmissions_sent", 2).await,
        2
    );
    assert_eq!(
        core_stat(&edge_base, "nacks_forwarded_upstream").await,
        forwarded_before
    );
    publisher.close().await.unwrap();
    origin.stop();
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_own_loadbalancing_xml_relays_over_wss() {
    // An edge with a TLS certificate for 127.0.0.1, WebSocket over TLS only.
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("rtcdn-wss-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("edge.pem"), dir.join("edge.key"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.key_pair.serialize_pem()).unwrap();
    let wss_port = free_port();
    let mut edge_config = Config::default();
    edge_config.http.listen = "127.0.0.1:0".parse().unwrap();
    edge_config.http.tls_listen = std::net::SocketAddr::from(([127, 0, 0, 1], wss_port));
    edge_config.http.tls_certificate = Some(cert_path.clone());
    edge_config.http.tls_private_key = Some(key_path);
    edge_config.media.port_base = 0;
    edge_config.media.threads = 1;
    edge_config.cdn.role = CdnRole::Edge;
    edge_config.cdn.secret = Some(rtcdn::auth::Secret::new(common::CDN_SECRET));
    let edge = Node::start(&edge_config).expect("TLS edge starts");

    // The seed's example as written (WCS docs, CDN 1.0), with the edge's address and port
    // changed to this test's edge.
    let seed_xml = r#"<loadbalancer mode="roundrobin" stream_distribution="webrtc">
  <node id="1"><ip>edge1.mydomain.com</ip><wss>443</wss></node>
</loadbalancer>"#;
    std::fs::write(
        dir.join("loadbalancing.xml"),
        seed_xml
            .replace("edge1.mydomain.com", "127.0.0.1")
            .replace("443", &wss_port.to_string()),
    )
    .unwrap();
    std::fs::write(
        dir.join("flashphoner.properties"),
        format!(
            "load_balancing_enabled=true\nws.port={}\nrtcdn.cdn_secret={}\n",
            free_port(),
            common::CDN_SECRET
        ),
    )
    .unwrap();
    let mut config = rtcdn::config::wcs::load_wcs_dir(&dir).expect("the seed's files load");
    config.media.port_base = 0;
    config.cdn.tls_ca_file = Some(cert_path);
    let origin = Node::start(&config).expect("origin starts");
    let origin_base = format!("http://{}", origin.http_addr());

    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "seed",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    // The stream appears on the edge (its REST listing is served on the plain listener too).
    let list_url = format!("http://{}/rest-api/stream/find_all", edge.http_addr());
    loop {
        assert!(
            Instant::now() < deadline,
            "the stream never reached the wss:// edge"
        );
        for _ in 0..10 {
            send(&mut publisher, &mut seq, 1, start).await;
        }
        let list = rtcdn_bench::http::request(hyper::Method::GET, &list_url, None, String::new())
            .await
            .unwrap();
        let list: serde_json::Value = serde_json::from_str(&list.body).unwrap();
        if list.as_array().is_some_and(|l| {
            l.iter()
                .any(|s| s["name"] == "seed" && s["status"] == "PUBLISHING")
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sender = Streaming::start(publisher, seq);
    let edge_base = format!("http://{}", edge.http_addr());
    let mut player =
        play_until_media(&edge_base, "seed", &certificate, Duration::from_secs(15)).await;
    assert!(player.recv_rtp(Duration::from_secs(3)).await.is_some());
    sender.stop().await.close().await.unwrap();
    origin.stop();
    edge.stop();
    let _ = std::fs::remove_dir_all(dir);
}
