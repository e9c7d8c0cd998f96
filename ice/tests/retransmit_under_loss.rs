//! Connectivity checks are retransmitted until one gets through, and given up after 8 s.

mod common;

use std::time::Duration;

use common::Pair;
use ice::{DisconnectReason, IceEvent};

#[test]
fn connects_despite_heavy_loss() {
    // With 30 % loss each way a check round trip succeeds with p = 0.49; 11 tries in 8 s
    // all fail with p < 0.001.
    let mut retransmitted = 0;
    for seed in 0..32 {
        let mut pair = Pair::new(seed, 0.3);
        assert!(
            pair.run_until(Duration::from_secs(10), Pair::both_connected),
            "seed {seed}"
        );
        if pair.client_sent > 1 {
            retransmitted += 1;
        }
        assert!(pair.client_errors.is_empty() && pair.server_errors.is_empty());
    }
    assert!(
        retransmitted > 8,
        "only {retransmitted} runs needed a retransmission"
    );
}

#[test]
fn lossy_consent_holds_for_minutes() {
    let mut pair = Pair::new(10, 0.3);
    let limit = Duration::from_secs(300);
    pair.run_until(limit, |p| p.elapsed() >= limit);
    assert!(pair.lost > 0);
    assert!(pair
        .client_events
        .iter()
        .all(|(_, e)| matches!(e, IceEvent::Connected { .. })));
    assert!(pair
        .server_events
        .iter()
        .all(|(_, e)| matches!(e, IceEvent::Connected { .. })));
}

#[test]
fn gives_up_when_nothing_gets_through() {
    let mut pair = Pair::new(11, 1.0);
    pair.run_until(Duration::from_secs(20), |p| !p.client_events.is_empty());
    let failed = IceEvent::Disconnected {
        reason: DisconnectReason::Failed,
    };
    assert_eq!(pair.client_events, [(Duration::from_secs(8), failed)]);
    assert_eq!(pair.client_sent, 11);
    assert_eq!(pair.client.poll_timeout(), None);
}
