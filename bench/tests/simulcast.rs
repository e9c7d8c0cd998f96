//! Simulcast passthrough (issue item 5, step 1): a publisher sends three VP8 layers (`l`, `m`,
//! `h`), each on an SSRC of its own that the RTP stream id extension names in its first
//! packets, as Chromium does for `sendEncodings`.
//!
//! A player that pins `?layer=l` gets only layer `l`, a Flashphoner WebSocket player that asks
//! for `custom.layer` `mid` only `m`; a default player gets `h`. When the
//! publisher pauses `h` (as Chromium does when its uplink shrinks), the default player moves to
//! `m`: the node asks for `m`'s keyframe, and the player's first `m` packet is that keyframe's,
//! never a delta frame before it. When `h` resumes it moves back the same way. Its sequence
//! numbers stay continuous across both switches. The same with the players on another core
//! than the publisher's. Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode, OfferOptions};

mod common;
use common::{core_stat, simulcast_video, test_node, SimulcastPublisher};

/// What a player got: (sequence number, layer, starts a keyframe).
async fn received(player: &mut ClientSession) -> Vec<(u16, u8, bool)> {
    let mut got = Vec::new();
    while let Some(p) = player.recv_rtp(Duration::from_millis(300)).await {
        got.extend(simulcast_video(&p));
    }
    got
}

fn assert_continuous(got: &[(u16, u8, bool)]) {
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0.wrapping_add(1),
            "sequence numbers continue: {got:?}"
        );
    }
}

/// A WHEP player of `sim`, pinned to `layer` (`?layer=`) when given.
async fn play(
    base: &str,
    layer: Option<&'static str>,
    certificate: &DtlsCertificate,
) -> ClientSession {
    let options = OfferOptions {
        layer,
        ..OfferOptions::default()
    };
    let timeout = Duration::from_secs(10);
    ClientSession::connect_with(base, Mode::Play, "sim", certificate, timeout, options)
        .await
        .expect("play")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_get_one_layer_and_switch_only_at_a_keyframe_with_continuous_numbers() {
    one_layer_each_and_keyframe_switches(1).await;
}

/// Players on another core than the publisher's start on their layer's keyframe, replayed
/// from the publisher's core (one replay per layer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_another_core_get_their_layers_keyframe_replayed() {
    one_layer_each_and_keyframe_switches(2).await;
}

async fn one_layer_each_and_keyframe_switches(cores: usize) {
    let node = test_node(cores);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut publisher = SimulcastPublisher::connect(&base, "sim", &certificate).await;
    // Our side of DTLS may finish before the node's, which drops what comes before its keys.
    let deadline = Instant::now() + Duration::from_secs(10);
    while core_stat(&base, "rtp_received").await < 3 {
        assert!(Instant::now() < deadline, "the node never received media");
        for layer in 0..3 {
            publisher.frame(layer, 1, false).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for layer in 0..3 {
        publisher.frame(layer, 2, true).await;
        publisher.frame(layer, 2, false).await;
    }

    // The players start on their layer's cached keyframe.
    let mut pinned = play(&base, Some("l"), &certificate).await;
    // With two cores, another session between the players puts both on the other core than
    // the publisher's: two players there waiting for replays of different layers.
    let _filler = if cores == 2 {
        let filler = ClientSession::connect(
            &base,
            Mode::Publish,
            "filler",
            &certificate,
            Duration::from_secs(10),
        );
        Some(filler.await.expect("filler"))
    } else {
        None
    };
    let mut default = play(&base, None, &certificate).await;
    // The Flashphoner SDK's `createStream({custom: {layer: "mid"}})`.
    let ws = format!("ws://{}/", node.http_addr());
    let options = OfferOptions {
        layer: Some("mid"),
        ..OfferOptions::default()
    };
    let timeout = Duration::from_secs(10);
    let mut mid = ClientSession::connect_ws_with(
        &ws,
        Mode::Play,
        "sim",
        &certificate,
        timeout,
        None,
        options,
    )
    .await
    .expect("play over the WebSocket");
    let publisher_core = publisher.session.remote_addr();
    // (The WebSocket player lands on either core: it checks the layer choice only.)
    for player in [&pinned, &default] {
        assert_eq!(
            player.remote_addr() == publisher_core,
            cores == 1,
            "players are on the publisher's core only when there is one core"
        );
    }
    for _ in 0..3 {
        for layer in 0..3 {
            publisher.frame(layer, 2, false).await;
        }
    }
    let got = received(&mut pinned).await;
    assert_eq!(
        got.len(),
        2 + 2 + 6,
        "layer l from its keyframe on: {got:?}"
    );
    assert!(got[0].2, "starts on a keyframe: {got:?}");
    assert!(got.iter().all(|&(_, layer, _)| layer == 0), "{got:?}");
    assert_continuous(&got);
    let got_mid = received(&mut mid).await;
    assert_eq!(
        got_mid.len(),
        10,
        "layer m from its keyframe on: {got_mid:?}"
    );
    assert!(got_mid[0].2 && got_mid.iter().all(|&(_, layer, _)| layer == 1));
    let before = received(&mut default).await;
    assert_eq!(before.len(), 10, "layer h from its keyframe on: {before:?}");
    assert!(before[0].2);
    assert!(before.iter().all(|&(_, layer, _)| layer == 2), "{before:?}");

    // The publisher pauses h: the default player is moved to m at m's keyframe, requested.
    while publisher
        .session
        .recv_rtcp(Duration::from_millis(10))
        .await
        .is_some()
    {}
    let paused = Instant::now();
    let mut asked = false;
    while paused.elapsed() < Duration::from_secs(4) && !asked {
        publisher.frame(0, 1, false).await;
        publisher.frame(1, 1, false).await;
        asked = publisher.pli_for(1, Duration::from_millis(50)).await;
    }
    assert!(asked, "m's keyframe was asked for once h paused");
    publisher.frame(1, 2, false).await;
    publisher.frame(1, 3, true).await;
    publisher.frame(1, 2, false).await;
    let mut got = before;
    let after_pause = received(&mut default).await;
    assert_eq!(
        after_pause
            .iter()
            .map(|&(_, l, k)| (l, k))
            .collect::<Vec<_>>(),
        [(1, true), (1, false), (1, false), (1, false), (1, false)],
        "m from its keyframe on, none of its delta frames before: {after_pause:?}"
    );
    got.extend(after_pause);

    // A default player joining while h is paused starts on m's keyframe, not h's old one.
    let mut late = play(&base, None, &certificate).await;
    publisher.frame(0, 1, false).await;
    publisher.frame(1, 1, false).await;
    let late_got = received(&mut late).await;
    assert!(!late_got.is_empty() && late_got[0].2, "{late_got:?}");
    assert!(
        late_got.iter().all(|&(_, layer, _)| layer == 1),
        "{late_got:?}"
    );
    // (The default player got that m packet too.)
    got.extend(received(&mut default).await);

    // h resumes: back to h at its keyframe.
    let resumed = Instant::now();
    let mut asked = false;
    while resumed.elapsed() < Duration::from_secs(4) && !asked {
        publisher.frame(1, 1, false).await;
        publisher.frame(2, 1, false).await;
        asked = publisher.pli_for(2, Duration::from_millis(50)).await;
    }
    assert!(asked, "h's keyframe was asked for once it resumed");
    publisher.frame(2, 2, true).await;
    publisher.frame(1, 1, false).await;
    publisher.frame(2, 1, false).await;
    let after_resume = received(&mut default).await;
    let back = after_resume
        .iter()
        .position(|&(_, layer, _)| layer == 2)
        .expect("back on h");
    assert!(
        after_resume[back].2,
        "h from its keyframe: {after_resume:?}"
    );
    assert!(after_resume[back..].iter().all(|&(_, l, _)| l == 2));
    assert!(after_resume[..back].iter().all(|&(_, l, _)| l == 1));
    got.extend(after_resume);
    assert_continuous(&got);

    // The pinned player stayed on l throughout.
    let pinned_later = received(&mut pinned).await;
    assert!(!pinned_later.is_empty());
    assert!(pinned_later.iter().all(|&(_, layer, _)| layer == 0));
    node.stop();
}
