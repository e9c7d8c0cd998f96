//! Entry points for the fuzz targets (built with the `fuzzing` feature).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{IceControllingAgent, IceCredentials, IceLiteAgent};

/// Feeds arbitrary bytes to both agents as a datagram, then drains them.
///
/// The first byte, when present, picks the remote ufrag the lite agent expects (known or
/// unknown), so both USERNAME paths are reached. Must never panic.
pub fn fuzz_stun(data: &[u8]) {
    // Only the base of virtual time: nothing below depends on the real clock.
    let now = Instant::now();
    let from = SocketAddr::from(([192, 0, 2, 1], 5000));
    let server = IceCredentials {
        ufrag: "srv".into(),
        pwd: "server-password-0123456".into(),
    };
    let client = IceCredentials {
        ufrag: "cli".into(),
        pwd: "client-password-0123456".into(),
    };
    let lite_remote = match data.first() {
        Some(b) if b & 1 == 1 => IceCredentials {
            ufrag: String::new(),
            ..client.clone()
        },
        _ => client.clone(),
    };

    let mut lite = IceLiteAgent::new(server.clone(), lite_remote, now);
    let _ = lite.handle_packet(now, from, data);
    while lite.poll_transmit().is_some() {}
    while lite.poll_event().is_some() {}
    lite.handle_timeout(now + Duration::from_secs(60));

    let mut controlling = IceControllingAgent::new(client, server, vec![from], 0, now);
    let _ = controlling.handle_packet(now, from, data);
    while controlling.poll_transmit().is_some() {}
    while controlling.poll_event().is_some() {}
    controlling.handle_timeout(now + Duration::from_secs(60));
}

/// Walks arbitrary bytes for a USERNAME's local part. Must never panic, and what it finds must
/// be a piece of the datagram without a colon.
pub fn fuzz_stun_username(data: &[u8]) {
    if let Some(ufrag) = crate::local_ufrag(data) {
        assert!(!ufrag.contains(':'), "{ufrag:?} holds the separator");
        let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
        let at = ufrag.as_ptr() as usize;
        assert!(
            at >= start && at + ufrag.len() <= end,
            "not borrowed from the datagram"
        );
    }
}
