//! Two rtcdn nodes in one test: an origin that relays to an edge. The bench client publishes to
//! the origin over WHIP; ten clients play from the edge over WHEP and every payload must arrive
//! intact and in order. When the origin's publisher leaves, the edge's players are ended.

use std::time::{Duration, Instant};

use rtcdn::cdn::config::{BalanceMode, CdnConfig, CdnNode, CdnRole};
use rtcdn::config::Config;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT, VIDEO_PT};
use rtcdn_bench::media::{read_packet, write_packet, Probe};

const PLAYERS: usize = 10;
const MEASURED: u64 = 400;

fn node(role: CdnRole, edges: Vec<CdnNode>) -> Node {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.port_base = 0;
    config.media.threads = 2;
    config.cdn = CdnConfig { role, load_balancing_enabled: !edges.is_empty(), mode: BalanceMode::RoundRobin, nodes: edges, ..CdnConfig::default() };
    Node::start(&config).expect("node starts")
}

async fn send(publisher: &mut ClientSession, seq: &mut u64, phase: u32, start: Instant) {
    let mut buf = [0u8; 1500];
    let n = *seq;
    let video = n % 5 != 4;
    let (pt, ssrc, len) = if video { (VIDEO_PT, publisher.video_ssrc, 1100) } else { (AUDIO_PT, publisher.audio_ssrc, 160) };
    let probe = Probe { sequence: n, sent_at_ns: start.elapsed().as_nanos() as u64, phase };
    let len = write_packet(&mut buf, pt, ssrc, n as u16, (n as u32).wrapping_mul(3000), false, probe, len);
    publisher.send_rtp(&buf[..len]).await.expect("publisher sends");
    *seq += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_relays_to_edge_and_edge_players_get_every_packet() {
    let edge = node(CdnRole::Edge, Vec::new());
    let edge_addr = edge.http_addr();
    let origin = node(CdnRole::Origin, vec![CdnNode { id: 1, host: "127.0.0.1".into(), ws: Some(edge_addr.port()), wss: None }]);
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{edge_addr}");
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);

    let mut publisher = ClientSession::connect(&origin_base, Mode::Publish, "cdn", &certificate, timeout).await.expect("publish to the origin");
    // The origin relays once media flows: send until the stream is live on the edge.
    let start = Instant::now();
    let mut seq = 0u64;
    let mut players = Vec::new();
    while players.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(15), "the stream never appeared on the edge");
        send(&mut publisher, &mut seq, 0, start).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(player) = ClientSession::connect(&edge_base, Mode::Play, "cdn", &certificate, timeout).await {
            players.push(player);
        }
    }
    while players.len() < PLAYERS {
        players.push(ClientSession::connect(&edge_base, Mode::Play, "cdn", &certificate, timeout).await.expect("play from the edge"));
    }

    // Warm up until every edge player receives, then measure.
    let mut warm = [false; PLAYERS];
    while warm.iter().any(|w| !w) {
        assert!(start.elapsed() < Duration::from_secs(30), "edge players never received");
        send(&mut publisher, &mut seq, 0, start).await;
        for (i, player) in players.iter_mut().enumerate() {
            while let Some(packet) = player.recv_rtp(Duration::from_millis(2)).await {
                read_packet(&packet).expect("warm-up packet intact");
                warm[i] = true;
            }
        }
    }
    for player in &mut players {
        while player.recv_rtp(Duration::from_millis(100)).await.is_some() {}
    }
    let first = seq;
    for _ in 0..MEASURED {
        send(&mut publisher, &mut seq, 1, start).await;
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    for (i, player) in players.iter_mut().enumerate() {
        let mut expected = first;
        while expected < first + MEASURED {
            let packet = player.recv_rtp(Duration::from_secs(3)).await.unwrap_or_else(|| panic!("edge player {i} missed packet {expected}"));
            let (probe, pt) = read_packet(&packet).unwrap_or_else(|e| panic!("edge player {i}: {e}"));
            assert_eq!((probe.phase, probe.sequence), (1, expected), "edge player {i}: out of order or lost");
            assert_eq!(pt, if expected % 5 != 4 { VIDEO_PT } else { AUDIO_PT });
            expected += 1;
        }
    }

    // The origin's publisher leaves: the origin unpublishes on the edge, whose players end.
    publisher.close().await.expect("DELETE the WHIP resource");
    for (i, player) in players.iter_mut().enumerate() {
        assert!(player.wait_ended(Duration::from_secs(10)).await.is_some(), "edge player {i} was not ended");
    }
    // And the edge forgets the stream.
    let list_url = format!("{edge_base}/rest-api/stream/find_all");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = rtcdn_bench::http::request(hyper::Method::GET, &list_url, None, String::new()).await.unwrap();
        if list.body.trim() == "[]" {
            break;
        }
        assert!(Instant::now() < deadline, "the edge still lists {}", list.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    origin.stop();
    edge.stop();
}
