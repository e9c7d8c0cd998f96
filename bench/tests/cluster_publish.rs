//! In a dynamic CDN (`[cluster]`), a Flashphoner SDK client that publishes a name another node
//! of the cluster publishes gets WCS's own refusal, "Stream name is already in use", as on one
//! node; the stream keeps playing where it is published; and once its publisher leaves (its
//! session ends on the node, without any DELETE), the name is free on the other node within a
//! moment, as a new epoch. Each node knows who publishes a name and sees the other in its view
//! of the cluster.
//!
//! A real `redis-server` on a loopback port; everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientError, ClientSession, Mode};

mod common;
use common::{cluster_node, play_until_media, RedisServer, Streaming};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_publisher_of_a_name_published_elsewhere_is_refused_as_wcs_refuses_it() {
    let redis = RedisServer::start();
    let a = cluster_node(&redis.url());
    let b = cluster_node(&redis.url());
    let (a_base, a_ws) = (
        format!("http://{}", a.http_addr()),
        format!("ws://{}/", a.http_addr()),
    );
    let b_ws = format!("ws://{}/", b.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    let publisher = ClientSession::connect_ws(&a_ws, Mode::Publish, "live", &certificate, TIMEOUT)
        .await
        .expect("publish on a");
    let sender = Streaming::start(publisher, 0);
    let refused = ClientSession::connect_ws(&b_ws, Mode::Publish, "live", &certificate, TIMEOUT)
        .await
        .err()
        .expect("the name is taken in the cluster");
    assert!(
        matches!(&refused, ClientError::Refused(info) if info == "Stream name is already in use"),
        "{refused}"
    );
    // b knows who publishes it, and sees a in its view of the cluster.
    let b_cluster = b.signalling().cluster.clone().expect("b is in a cluster");
    let a_id = a.signalling().cluster.as_ref().unwrap().node_id().clone();
    let owner = b_cluster
        .stream_owner("live")
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(owner.node, a_id);
    let first_epoch = owner.epoch;
    let deadline = Instant::now() + Duration::from_secs(5);
    while b_cluster.view().node(&a_id).is_none() {
        assert!(Instant::now() < deadline, "b's view never shows a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b_cluster.view().is_fresh(Instant::now()));
    // The stream itself is unharmed.
    let mut player = play_until_media(&a_base, "live", &certificate, TIMEOUT).await;
    assert!(player.recv_rtp(Duration::from_secs(2)).await.is_some());

    // The publisher leaves: the name is free on b.
    sender.stop().await.close().await.unwrap();
    let left = Instant::now();
    let republished = loop {
        match ClientSession::connect_ws(&b_ws, Mode::Publish, "live", &certificate, TIMEOUT).await {
            Ok(publisher) => break publisher,
            Err(ClientError::Refused(info)) if info == "Stream name is already in use" => {
                assert!(
                    left.elapsed() < Duration::from_secs(5),
                    "still taken {:?} after the publisher left",
                    left.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    println!(
        "the name was free on the other node {} ms after its publisher left",
        left.elapsed().as_millis()
    );
    let owner = b_cluster
        .stream_owner("live")
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(owner.node, *b_cluster.node_id());
    assert!(owner.epoch > first_epoch);
    republished.close().await.unwrap();
    a.stop();
    b.stop();
}
