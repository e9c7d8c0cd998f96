//! A nomination from another address moves the session there.

mod common;

use std::time::Duration;

use common::{addr, Pair};
use ice::IceEvent;

#[test]
fn nomination_from_new_address_changes_remote() {
    let mut pair = Pair::new(12, 0.0);
    assert!(pair.run_until(Duration::from_secs(1), Pair::both_connected));
    pair.run_until(Duration::from_secs(12), |p| {
        p.elapsed() >= Duration::from_secs(12)
    });

    let moved = addr("192.0.2.99:51000");
    pair.move_client(moved, 13);
    let switched = |p: &Pair| p.server_events.len() == 2 && p.client.remote().is_some();
    assert!(pair.run_until(Duration::from_secs(20), switched));
    assert_eq!(
        pair.server_events[1].1,
        IceEvent::RemoteChanged { remote: moved }
    );
    assert_eq!(pair.server.remote(), Some(moved));
    assert_eq!(pair.client.remote(), Some(pair.server_addr));

    // Consent now comes from the new address only: the session stays up.
    let limit = Duration::from_secs(120);
    pair.run_until(limit, |p| p.elapsed() >= limit);
    assert_eq!(pair.server_events.len(), 2, "{:?}", pair.server_events);
}

#[test]
fn repeated_nomination_from_same_address_is_quiet() {
    let mut pair = Pair::new(14, 0.0);
    assert!(pair.run_until(Duration::from_secs(1), Pair::both_connected));
    let same = pair.client_addr;
    pair.move_client(same, 15);
    pair.run_until(Duration::from_secs(5), |_| false);
    assert_eq!(pair.server_events.len(), 1, "{:?}", pair.server_events);
}
