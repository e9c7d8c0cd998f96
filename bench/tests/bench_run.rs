//! The bench's own correctness run, as the test suite runs it: a small load (1 stream, 20
//! players, 3 s of shaped video and audio) through an in-process node must reach every player
//! intact, in order and without loss on loopback. Speed is not asserted. A second run goes
//! through an origin and an edge, players finding the edge with `/lb` and signalling over the
//! Flashphoner WebSocket protocol, then over WHIP/WHEP following the origin's `307`. A third
//! run drops 5% of every player's video on arrival: the players' NACKs get all of it back from
//! the node's retransmission cache, and players that join after a keyframe start on it.

use std::time::Duration;

use rtcdn_bench::run::{run, RunOptions, RunReport, Signalling};

mod common;
use common::{cdn_pair, test_node};

fn assert_clean(report: &RunReport, players: usize) {
    let text = rtcdn_bench::run::describe(report);
    assert_eq!(
        report.players_connected, players,
        "every player connects:\n{text}"
    );
    assert_eq!(
        report.players_without_packets, 0,
        "every player receives:\n{text}"
    );
    assert_eq!(
        report.players_ended_early, 0,
        "no player is ended during the run:\n{text}"
    );
    assert!(
        report.packets_sent > 0,
        "the publisher sent measured packets:\n{text}"
    );
    assert_eq!(
        report.packets_expected,
        report.packets_sent * players as u64,
        "{text}"
    );
    assert_eq!(report.corrupted, 0, "no corrupted payload:\n{text}");
    assert_eq!(report.out_of_order, 0, "nothing out of order:\n{text}");
    assert_eq!(report.duplicates, 0, "no duplicates:\n{text}");
    assert_eq!(
        report.packets_received, report.packets_expected,
        "no loss on loopback at this load:\n{text}"
    );
    assert_eq!(report.loss, 0.0, "{text}");
    assert!(report.clean(), "{text}");
    assert!(
        report.latency_us_p50 > 0 && report.latency_us_p99 >= report.latency_us_p50,
        "{text}"
    );
    let json = report.to_json();
    assert_eq!(
        json["packets_received"], report.packets_received,
        "the JSON report carries the counts"
    );
}

/// The node at `server` reported how long the window's packets stayed in it: about every packet
/// the publisher sent in the window (a core publishes its counts with its work, at most every
/// 20 ms and 50 ms after it goes quiet, and an edge gets the packets a hop later, so the node's
/// window is shifted by a few packets), in a plausible order of percentiles.
fn assert_residence(report: &RunReport, server: &str) {
    let text = rtcdn_bench::run::describe(report);
    let r = report
        .residence
        .iter()
        .find(|r| r.server == server)
        .unwrap_or_else(|| panic!("no residence for {server}:\n{text}"));
    assert!(r.packets * 10 >= report.packets_sent * 9, "{r:?}\n{text}");
    assert!(
        r.p50_us <= r.p99_us && r.p99_us <= r.p999_us && r.p999_us <= r.max_us,
        "{r:?}"
    );
    assert_eq!(
        report.to_json()["residence"][server]["packets"],
        r.packets,
        "the JSON report carries it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_twenty_players_get_everything() {
    let node = test_node(2);
    let options = RunOptions {
        server: format!("http://{}", node.http_addr()),
        stream: "benchtest".into(),
        streams: 1,
        players: 20,
        seconds: 3.0,
        ..RunOptions::default()
    };
    let report = run(&options).await.expect("the bench runs");
    assert_clean(&report, 20);
    assert_residence(&report, &options.server);
    assert!(
        report.setup_ms_p50 > 0.0 && report.first_packet_ms_p50 >= report.setup_ms_p50 * 0.5,
        "{report:?}"
    );
    // Video at 2.5 Mbit/s in 1200-byte packets plus 50 audio packets/s: about 310 packets/s.
    assert!(
        (200.0..400.0).contains(&report.out_pps),
        "publisher rate {}",
        report.out_pps
    );
    // The players left with a WHEP DELETE before their publisher did (a server that does not
    // end players with their publisher would otherwise keep serving them).
    let metrics = common::metrics_text(&options.server, None).await;
    let ended = |kind: &str, reason: &str| {
        let prefix = format!("rtcdn_sessions_ended_total{{kind=\"{kind}\",reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    assert_eq!(ended("player", "deleted"), 20.0, "{metrics}");
    assert_eq!(ended("player", "publisher_left"), 0.0, "{metrics}");
    assert_eq!(ended("publisher", "deleted"), 1.0, "{metrics}");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_found_with_lb_play_from_the_edge_over_websocket() {
    let (origin, edge) = cdn_pair();
    let options = RunOptions {
        server: format!("http://{}", origin.http_addr()),
        signalling: Signalling::Ws,
        lb: true,
        stream: "benchcdn".into(),
        streams: 1,
        players: 6,
        seconds: 2.0,
        setup_timeout: Duration::from_secs(20),
        stats_servers: vec![format!("http://{}", edge.http_addr())],
        ..RunOptions::default()
    };
    let report = run(&options).await.expect("the bench runs through the CDN");
    assert_clean(&report, 6);
    // Both hops measured: the origin receives from the publisher, the edge from the origin.
    assert_residence(&report, &options.server);
    assert_residence(&report, &options.stats_servers[0]);

    // WHEP on the origin answers 307 to the edge: the client follows it.
    let options = RunOptions {
        signalling: Signalling::Whip,
        lb: false,
        stream: "benchcdn307".into(),
        ..options
    };
    let report = run(&options)
        .await
        .expect("the bench runs through the CDN over WHIP/WHEP");
    assert_clean(&report, 6);
    origin.stop();
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_that_lose_video_get_it_all_back_and_start_on_the_cached_keyframe() {
    let node = test_node(2);
    let players = 10;
    let options = RunOptions {
        server: format!("http://{}", node.http_addr()),
        stream: "benchloss".into(),
        streams: 1,
        players,
        seconds: 3.0,
        player_loss_percent: 5.0,
        // The publisher's keyframes come at 0 s and every 2 s (the first may reach the node
        // before its DTLS keys do): the players join just after the second, while the node's
        // cache still holds it (KEYFRAME_REPLAY_MAX_PACKETS, about a second of this video).
        ramp_delay: Duration::from_millis(2100),
        ..RunOptions::default()
    };
    let report = run(&options).await.expect("the bench runs");
    let text = rtcdn_bench::run::describe(&report);
    // Repaired packets count as received: the measured window is whole, in order but for them.
    assert_clean(&report, players);
    assert!(report.packets_lost > 0, "loss was injected:\n{text}");
    // Loopback may reorder a few packets (a sender moved between CPUs): the players ask for
    // those too, and they count as repaired when they arrive.
    assert_eq!(
        report.packets_nacked - report.packets_nacked_undropped,
        report.packets_lost,
        "every lost packet was asked for:\n{text}"
    );
    assert_eq!(
        report.packets_repaired, report.packets_nacked,
        "and came back:\n{text}"
    );
    assert_eq!(report.packets_unrepaired, 0, "{text}");
    assert_eq!(report.repair_ratio, Some(1.0), "{text}");
    assert!(
        report.packets_late > 0,
        "measured packets were repaired late:\n{text}"
    );
    let node_counter = |key: &str| {
        *report
            .node_repair
            .get(key)
            .unwrap_or_else(|| panic!("no {key}:\n{text}"))
    };
    // Every repair was a retransmission from the cache (some were lost again and resent).
    assert!(
        node_counter("retransmissions_sent") >= report.packets_repaired,
        "{text}"
    );
    assert_eq!(
        node_counter("nacks_forwarded_upstream"),
        0,
        "the cache held every packet asked for:\n{text}"
    );
    assert_eq!(node_counter("retransmissions_throttled"), 0, "{text}");
    // Every player started on the cached keyframe or asked for one; at least the players on the
    // publisher's core found the keyframe that had just passed.
    assert_eq!(
        node_counter("keyframe_cache_hits") + node_counter("keyframe_cache_misses"),
        players as u64,
        "{text}"
    );
    assert!(node_counter("keyframe_cache_hits") > 0, "{text}");
    assert_eq!(
        report.players_without_keyframe, 0,
        "every player saw a keyframe start:\n{text}"
    );
    assert!(
        report.first_keyframe_ms_p50 >= report.first_packet_ms_p50
            && report.first_keyframe_ms_p50 <= report.first_keyframe_ms_p95
            && report.first_keyframe_ms_p95 <= report.first_keyframe_ms_max,
        "{text}"
    );
    let json = report.to_json();
    assert_eq!(json["packets_repaired"], report.packets_repaired);
    assert_eq!(
        json["node_keyframe_cache_hits"],
        node_counter("keyframe_cache_hits")
    );
    // The bench's players negotiate no rtx: every repair went out as the original datagram.
    assert_eq!(json["node_rtx_sent"], 0, "{text}");
    node.stop();
}
