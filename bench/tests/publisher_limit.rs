//! `bwe.limit_publisher`: a publisher is asked (REMB) for no more than its weakest player's
//! estimated bandwidth, which the node estimates from that player's transport-cc feedback (the
//! bench client sends it, as a browser does). Without the setting the publisher keeps hearing the
//! node's default. Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{ClientSession, Mode, OfferOptions};

mod common;
use common::{loopback_config, send, stats_json, stream_listing};

/// What the node said while the publisher streamed ~1.9 Mbit/s (a packet per 5 ms) for `seconds`.
struct Heard {
    /// The REMB bitrates the publisher heard.
    rembs: Vec<u64>,
    /// The node's estimate of the player.
    estimate: Option<u64>,
    /// The publisher's bitrate in `/api/stats` (bit/s) and in WCS's `find_all` (kbit/s).
    bitrate_bps: u64,
    find_all_kbps: u64,
}

async fn stream_and_listen(limit_publisher: bool, seconds: u64) -> Heard {
    let mut config = loopback_config(1);
    config.bwe.limit_publisher = limit_publisher;
    let node = Node::start(&config).expect("node starts");
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let mut publisher =
        ClientSession::connect(&base, Mode::Publish, "limited", &certificate, timeout)
            .await
            .expect("publish");
    let twcc = OfferOptions {
        transport_cc: true,
        ..OfferOptions::default()
    };
    let mut player =
        ClientSession::connect_with(&base, Mode::Play, "limited", &certificate, timeout, twcc)
            .await
            .expect("play");
    let start = Instant::now();
    let mut seq = 0u64;
    let mut rembs = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        // Paced by the clock, not by the sleeps: a loaded machine's late wake-ups would
        // otherwise lower the publisher's rate below what the test reads back.
        let due = start.elapsed().as_millis() as u64 / 5;
        while seq <= due {
            send(&mut publisher, &mut seq, 0, start).await;
        }
        while player.try_recv_rtp().is_some() {}
        while let Some(packet) = publisher.try_recv_rtcp() {
            for rtcp in rtp::rtcp::RtcpIter::new(&packet).flatten() {
                if let rtp::rtcp::Rtcp::Remb(remb) = rtcp {
                    rembs.push(remb.bitrate_bps);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = stats_json(&base).await;
    let estimate = stats["streams"][0]["player_bandwidth_bps"][0].as_u64();
    let bitrate_bps = stats["streams"][0]["bitrate_bps"].as_u64().unwrap_or(0);
    let list = stream_listing(&base).await;
    let find_all_kbps = list[0]["bitrate"].as_u64().unwrap_or(0);
    node.stop();
    Heard {
        rembs,
        estimate,
        bitrate_bps,
        find_all_kbps,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_publisher_is_asked_for_its_weakest_players_bandwidth() {
    let heard = stream_and_listen(true, 5).await;
    let rembs = heard.rembs;
    let estimate = heard
        .estimate
        .expect("the player's estimate, from its transport-cc feedback");
    // The publisher's bitrate is listed, in WCS's kbit/s by find_all (the two reads a moment
    // apart, so only near each other).
    assert!(heard.bitrate_bps > 500_000, "{}", heard.bitrate_bps);
    assert!(
        heard.find_all_kbps.abs_diff(heard.bitrate_bps / 1000) * 4 <= heard.bitrate_bps / 1000,
        "find_all {} kbit/s, /api/stats {} bit/s",
        heard.find_all_kbps,
        heard.bitrate_bps
    );
    let last = *rembs.last().expect("receiver reports with REMB");
    assert!(
        (100_000..5_000_000).contains(&last),
        "the publisher is asked for its player's bandwidth ({estimate}): REMB {rembs:?}"
    );
    // Within the 5% the limit moves by, of an estimate that kept moving.
    assert!(
        last.abs_diff(estimate) * 4 <= estimate,
        "REMB {last} vs estimate {estimate}"
    );

    let heard = stream_and_listen(false, 3).await;
    let rembs = heard.rembs;
    assert!(heard.estimate.is_some());
    assert!(
        rembs.iter().all(|&r| r == 5_000_000),
        "unlimited by default: {rembs:?}"
    );
}
