//! A controlling client and a lite server connect, and consent keeps them connected.

mod common;

use std::time::Duration;

use common::{addr, Pair, CLIENT, SERVER};
use ice::IceEvent;

#[test]
fn both_sides_connect_to_each_other() {
    let mut pair = Pair::new(1, 0.0);
    assert!(pair.run_until(Duration::from_secs(1), Pair::both_connected));
    assert_eq!(
        pair.client_events,
        [(
            pair.latency * 2,
            IceEvent::Connected {
                remote: addr(SERVER)
            }
        )]
    );
    assert_eq!(
        pair.server_events,
        [(
            pair.latency,
            IceEvent::Connected {
                remote: addr(CLIENT)
            }
        )]
    );
    assert_eq!(pair.client.remote(), Some(addr(SERVER)));
    assert_eq!(pair.server.remote(), Some(addr(CLIENT)));
    assert!(pair.client_errors.is_empty() && pair.server_errors.is_empty());
}

#[test]
fn consent_checks_keep_the_session_alive() {
    let mut pair = Pair::new(2, 0.0);
    let limit = Duration::from_secs(120);
    pair.run_until(limit, |p| p.elapsed() >= limit);
    assert_eq!(pair.client_events.len(), 1, "{:?}", pair.client_events);
    assert_eq!(pair.server_events.len(), 1, "{:?}", pair.server_events);
    // One check, then one consent check every 4–6 s (RFC 7675 §5.1).
    assert!(
        (21..=31).contains(&pair.client_sent),
        "client sent {}",
        pair.client_sent
    );
    // Every check is answered, except perhaps one still in flight when the run stops.
    assert!(pair.client_sent - pair.server_sent <= 1);
    assert!(pair.client_errors.is_empty() && pair.server_errors.is_empty());
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut pair = Pair::new(seed, 0.3);
        let limit = Duration::from_secs(60);
        pair.run_until(limit, |p| p.elapsed() >= limit);
        (
            pair.client_events,
            pair.server_events,
            pair.client_sent,
            pair.lost,
        )
    };
    assert_eq!(run(3), run(3));
}
