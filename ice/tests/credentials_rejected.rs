//! Checks with the wrong password, the wrong ufrag or a broken FINGERPRINT get no answer.

mod common;

use std::time::Duration;

use common::{addr, client_creds, server_creds, Pair, CLIENT};
use ice::{DisconnectReason, IceCredentials, IceError, IceEvent};

fn run_with_server_seen_as(seen: IceCredentials) -> Pair {
    let mut pair = Pair::with_credentials(4, 0.0, client_creds(), server_creds(), seen);
    pair.server.set_consent_timeout(Duration::from_secs(20));
    pair.run_until(Duration::from_secs(30), |_| false);
    pair
}

fn assert_rejected(pair: &Pair, error: IceError) {
    assert!(!pair.server_errors.is_empty());
    assert!(
        pair.server_errors.iter().all(|e| *e == error),
        "{:?}",
        pair.server_errors
    );
    assert_eq!(pair.server_sent, 0, "rejected checks get no response");
    assert_eq!(pair.server.remote(), None);
    let failed = IceEvent::Disconnected {
        reason: DisconnectReason::Failed,
    };
    assert_eq!(pair.client_events, [(Duration::from_secs(8), failed)]);
    let never = IceEvent::Disconnected {
        reason: DisconnectReason::NeverConnected,
    };
    assert_eq!(pair.server_events, [(Duration::from_secs(20), never)]);
}

#[test]
fn wrong_password_is_rejected() {
    let seen = IceCredentials {
        pwd: "notTheServerPassword0000".into(),
        ..server_creds()
    };
    assert_rejected(&run_with_server_seen_as(seen), IceError::BadIntegrity);
}

#[test]
fn wrong_ufrag_is_rejected() {
    let seen = IceCredentials {
        ufrag: "otherSrv".into(),
        ..server_creds()
    };
    assert_rejected(&run_with_server_seen_as(seen), IceError::BadUsername);
}

#[test]
fn wrong_remote_ufrag_is_rejected_unless_unknown() {
    // The server expects the remote part of USERNAME to be the client's ufrag.
    let mut pair = Pair::new(5, 0.0);
    let expected = IceCredentials {
        ufrag: "expected".into(),
        ..client_creds()
    };
    pair.server = ice::IceLiteAgent::new(server_creds(), expected, pair.now);
    pair.run_until(Duration::from_secs(1), |_| false);
    assert!(!pair.server_errors.is_empty());
    assert!(pair
        .server_errors
        .iter()
        .all(|e| *e == IceError::BadUsername));
    assert_eq!(pair.server.remote(), None);

    // With the remote ufrag unknown (empty), any remote part is accepted.
    let mut server = ice::IceLiteAgent::new(server_creds(), IceCredentials::default(), pair.now);
    let mut client = ice::IceControllingAgent::new(
        IceCredentials {
            ufrag: "stranger".into(),
            ..client_creds()
        },
        server_creds(),
        vec![pair.server_addr],
        5,
        pair.now,
    );
    let check = client.poll_transmit().unwrap();
    server
        .handle_packet(pair.now, addr(CLIENT), &check.contents)
        .unwrap();
    assert_eq!(
        server.poll_event(),
        Some(IceEvent::Connected {
            remote: addr(CLIENT)
        })
    );
}

#[test]
fn tampered_fingerprint_is_rejected() {
    let mut pair = Pair::new(6, 0.0);
    let mut check = pair.client.poll_transmit().unwrap().contents;
    let last = check.len() - 1;
    check[last] ^= 0x01;
    assert_eq!(
        pair.inject_to_server(addr(CLIENT), &check),
        Err(IceError::BadFingerprint)
    );
    assert_eq!(pair.server_sent, 0);

    // Tampering anywhere before FINGERPRINT is caught too, by FINGERPRINT first.
    check[last] ^= 0x01;
    check[25] ^= 0x01; // inside USERNAME
    assert_eq!(
        pair.inject_to_server(addr(CLIENT), &check),
        Err(IceError::BadFingerprint)
    );
    check[25] ^= 0x01;
    assert_eq!(pair.inject_to_server(addr(CLIENT), &check), Ok(()));
    assert_eq!(pair.server_sent, 1);
}
