//! A session that never completes ICE and DTLS holds nothing for long: after
//! `session.connect_timeout_secs` it is ended and its stream name is free again. Before, 2,000
//! offers that never did ICE were each held (with a stream name and a core slot) for the 30 s
//! consent timeout.
//!
//! Everything is sent to 127.0.0.1 only.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use rtcdn::node::Node;
use rtcdn_bench::client::Mode;

mod common;
use common::{loopback_config, post_sdp_offer};

async fn publish(base: &str, stream: &str) -> StatusCode {
    post_sdp_offer(&format!("{base}/whip/{stream}"), Mode::Publish, None)
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_that_never_connects_frees_its_name_at_the_connect_timeout() {
    let mut config = loopback_config(1);
    config.session.connect_timeout_secs = 1;
    // Far longer than the connect timeout: only the connect timeout can free the name.
    config.session.consent_timeout_secs = 60;
    let node = Node::start(&config).expect("node starts");
    let base = format!("http://{}", node.http_addr());

    assert_eq!(publish(&base, "half").await, StatusCode::CREATED);
    let held_at = Instant::now();
    assert_eq!(
        publish(&base, "half").await,
        StatusCode::CONFLICT,
        "the name is held while the first offer may still connect"
    );
    loop {
        let status = publish(&base, "half").await;
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            held_at.elapsed() < Duration::from_secs(5),
            "the name was still held {:?} after the offer (connect timeout 1 s)",
            held_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        held_at.elapsed() >= Duration::from_millis(900),
        "freed only by the timeout, after {:?}",
        held_at.elapsed()
    );
    node.stop();
}
