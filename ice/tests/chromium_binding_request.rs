//! Binding requests captured from Chrome, answered by the lite agent.
//!
//! The two vectors (and their passwords) are published captures of Chrome's checks toward
//! an ICE-lite media server, in the babblevoice/projectrtp test suite. Layout: USERNAME,
//! GOOG-NETWORK-INFO (0xC057, unknown to us), ICE-CONTROLLING, USE-CANDIDATE, PRIORITY,
//! MESSAGE-INTEGRITY, FINGERPRINT.

use std::net::SocketAddr;
use std::time::Instant;

use ice::{IceCredentials, IceError, IceEvent, IceLiteAgent};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, XorMappedAddress};
use stun_rs::{DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, TransactionId};

struct Capture {
    hex: &'static str,
    /// Our ufrag (before the colon in USERNAME) and password: the MESSAGE-INTEGRITY key.
    local: (&'static str, &'static str),
    /// Chrome's ufrag (after the colon) and password.
    remote: (&'static str, &'static str),
}

const CAPTURES: [Capture; 2] = [
    Capture {
        hex: "0001005c2112a442546a56583341484a6b5a457400060015393037643261663462313133306237653a2b394f41000000c0570004000003e7802a00081617d3f2124471b400250000002400046e001eff000800141dd53ef0e9774d2fbbad5c904327d2cecb0c161f802800042e8f2b6b",
        local: ("907d2af4b1130b7e", "vjwMJC1QaQKkmddLFOWbtmIF"),
        remote: ("+9OA", "EHF1KuU51q+m7U0o246kgM29"),
    },
    Capture {
        hex: "0001005c2112a4426977794337524e516367556500060015343635613064383863333238376336613a5a483651000000c0570004000003e7802a0008912756f47f66a6e200250000002400046e001eff000800140bcc9d77b7beabf7e63d32095423e527b2908aa380280004ca294ea6",
        local: ("465a0d88c3287c6a", "nxIUvOuFnrokdbuiloUXtK51"),
        remote: ("ZH6Q", "oQBeaQ7QASCyv0qQQ+lxwQaE"),
    },
];

fn creds((ufrag, pwd): (&str, &str)) -> IceCredentials {
    IceCredentials {
        ufrag: ufrag.into(),
        pwd: pwd.into(),
    }
}

fn browser() -> SocketAddr {
    "192.168.1.20:54321".parse().unwrap()
}

#[test]
fn chrome_checks_are_answered_and_nominate() {
    for capture in &CAPTURES {
        let packet = hex::decode(capture.hex).unwrap();
        assert!(ice::is_stun(&packet));
        let now = Instant::now();
        let mut agent = IceLiteAgent::new(creds(capture.local), creds(capture.remote), now);
        agent.handle_packet(now, browser(), &packet).unwrap();
        assert_eq!(
            agent.poll_event(),
            Some(IceEvent::Connected { remote: browser() })
        );

        let response = agent.poll_transmit().unwrap();
        assert_eq!(response.destination, browser());
        assert_eq!(agent.poll_transmit(), None);

        // Decode the answer independently of the crate, validating integrity and fingerprint
        // the way the browser will: with our password.
        let key = HMACKey::new_short_term(capture.local.1).unwrap();
        let ctx = DecoderContextBuilder::default()
            .with_key(key)
            .with_validation()
            .build();
        let decoder = MessageDecoderBuilder::default().with_context(ctx).build();
        let (msg, len) = decoder.decode(&response.contents).unwrap();
        assert_eq!(len, response.contents.len());
        assert_eq!(msg.class(), MessageClass::SuccessResponse);
        let request_id: [u8; 12] = packet[8..20].try_into().unwrap();
        assert_eq!(*msg.transaction_id(), TransactionId::from(request_id));
        let mapped = msg
            .get::<XorMappedAddress>()
            .unwrap()
            .as_xor_mapped_address()
            .unwrap();
        assert_eq!(*mapped.socket_address(), browser());
        assert!(msg.get::<MessageIntegrity>().is_some());
        assert!(msg.get::<Fingerprint>().is_some());
    }
}

#[test]
fn chrome_check_with_our_password_wrong_is_rejected() {
    let capture = &CAPTURES[0];
    let packet = hex::decode(capture.hex).unwrap();
    let now = Instant::now();
    // Signed with the receiver's password, so Chrome's own password must not verify it.
    let mut agent = IceLiteAgent::new(
        IceCredentials {
            ufrag: capture.local.0.into(),
            pwd: capture.remote.1.into(),
        },
        creds(capture.remote),
        now,
    );
    assert_eq!(
        agent.handle_packet(now, browser(), &packet),
        Err(IceError::BadIntegrity)
    );
    assert_eq!(agent.poll_transmit(), None);
    assert_eq!(agent.poll_event(), None);
}

#[test]
fn chrome_check_for_another_session_is_rejected() {
    let capture = &CAPTURES[0];
    let packet = hex::decode(capture.hex).unwrap();
    let now = Instant::now();
    let other = creds(CAPTURES[1].local);
    let mut agent = IceLiteAgent::new(other, creds(capture.remote), now);
    assert_eq!(
        agent.handle_packet(now, browser(), &packet),
        Err(IceError::BadUsername)
    );
}
