//! When consent stops (the path dies), both sides disconnect after the consent timeout.

mod common;

use std::time::Duration;

use common::Pair;
use ice::{DisconnectReason, IceEvent};

const EXPIRED: IceEvent = IceEvent::Disconnected {
    reason: DisconnectReason::ConsentExpired,
};

#[test]
fn consent_expires_after_the_timeout() {
    let mut pair = Pair::new(7, 0.0);
    pair.client.set_consent_timeout(Duration::from_secs(10));
    pair.server.set_consent_timeout(Duration::from_secs(10));
    assert!(pair.run_until(Duration::from_secs(1), Pair::both_connected));
    let connected_at = pair.elapsed();
    pair.run_until(Duration::from_secs(30), |p| {
        p.elapsed() >= Duration::from_secs(30)
    });
    assert_eq!(pair.client_events.len(), 1, "consent checks keep it alive");

    // The path dies: from now on every datagram is lost.
    pair.loss = 1.0;
    let died_at = pair.elapsed();
    pair.run_until(Duration::from_secs(120), |p| {
        p.server_events.len() == 2 && p.client_events.len() == 2
    });
    let (server_at, server_event) = pair.server_events[1];
    let (client_at, client_event) = pair.client_events[1];
    assert_eq!(server_event, EXPIRED);
    assert_eq!(client_event, EXPIRED);
    // The last consent check got through at most ~6 s before the path died (or just after:
    // datagrams already in flight still arrive).
    let in_flight = pair.latency * 2;
    for at in [server_at, client_at] {
        let window =
            died_at + Duration::from_secs(3)..=died_at + Duration::from_secs(10) + in_flight;
        assert!(window.contains(&at), "{at:?} not in {window:?}");
    }
    assert!(connected_at < died_at);
    assert_eq!(pair.client.poll_timeout(), None);
    assert_eq!(pair.server.poll_timeout(), None);
    assert_eq!(pair.server.remote(), None);
}

#[test]
fn default_consent_timeout_is_thirty_seconds() {
    let mut pair = Pair::new(8, 0.0);
    assert!(pair.run_until(Duration::from_secs(1), Pair::both_connected));
    pair.loss = 1.0;
    let died_at = pair.elapsed();
    pair.run_until(Duration::from_secs(120), |p| p.server_events.len() == 2);
    let (at, event) = pair.server_events[1];
    assert_eq!(event, EXPIRED);
    // The nominating check itself was the last request the server saw.
    assert_eq!(at, Duration::from_millis(20) + Duration::from_secs(30));
    assert!(at > died_at);
}

#[test]
fn server_without_nomination_gives_up() {
    let mut pair = Pair::new(9, 1.0);
    pair.server.set_consent_timeout(Duration::from_secs(5));
    pair.run_until(Duration::from_secs(60), |_| false);
    let never = IceEvent::Disconnected {
        reason: DisconnectReason::NeverConnected,
    };
    assert_eq!(pair.server_events, [(Duration::from_secs(5), never)]);
}
