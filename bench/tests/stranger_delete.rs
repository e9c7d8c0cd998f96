//! A stranger cannot stop a WHIP publisher and take its stream name. Today's listings
//! (`/rest-api/stream/find_all`) show a publisher's `mediaSessionId`; before resource URLs got a
//! secret of their own, that id was the last segment of the publisher's `Location`, so a DELETE
//! with it cut every player and freed the name for the stranger's own publish. Now the id only
//! identifies: the DELETE is 404, the stranger's publish 409, and the players keep receiving.
//! The publisher's own DELETE (with its `Location`) still ends the stream.
//!
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::Mode;

mod common;
use common::{
    drain_rtp, post_sdp_offer, publish_and_play, raw_request, send, stream_listing, test_node,
    warm_up_until_received,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_can_neither_stop_a_publisher_nor_take_its_name() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let (mut publisher, mut players) = publish_and_play::<3>(&base, "victim", &certificate).await;
    let start = Instant::now();
    let mut seq = 0;
    let within = Duration::from_secs(15);
    warm_up_until_received(&mut publisher, &mut players, &mut seq, start, within).await;

    // The stranger reads the listing (open on a node with open policies) and tries every id it
    // shows, as a publisher's and as a player's resource.
    let list = stream_listing(&base).await;
    let id = list[0]["mediaSessionId"]
        .as_str()
        .expect("a listed id")
        .to_owned();
    assert!(
        !publisher.resource().contains(&id),
        "the listed id {id} is not in the publisher's resource URL {}",
        publisher.resource()
    );
    for url in [
        format!("{base}/whip/victim/{id}"),
        format!("{base}/whep/victim/{id}"),
    ] {
        let raw = raw_request(Method::DELETE, &url, &[], Vec::new()).await;
        assert_eq!(raw.status, StatusCode::NOT_FOUND, "{url}: {}", raw.body);
    }
    let squat = post_sdp_offer(&format!("{base}/whip/victim"), Mode::Publish, None).await;
    assert_eq!(squat.status, StatusCode::CONFLICT, "{}", squat.body);

    // Nothing was cut: every player keeps receiving.
    drain_rtp(&mut players, Duration::from_millis(50)).await;
    for _ in 0..20 {
        send(&mut publisher, &mut seq, 1, start).await;
    }
    for (i, player) in players.iter_mut().enumerate() {
        assert!(
            player.recv_rtp(Duration::from_secs(2)).await.is_some(),
            "player {i} still receives"
        );
        assert!(player.ended().is_none(), "player {i} was not ended");
    }

    // The owner's DELETE, with its Location, still ends the stream and its players.
    publisher.close().await.expect("the owner's DELETE");
    for player in &mut players {
        assert!(
            player.wait_ended(Duration::from_secs(5)).await.is_some(),
            "the publisher's end ends its players"
        );
    }
    node.stop();
}
