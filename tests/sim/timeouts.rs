//! Time-driven behaviour: ICE consent expires after 30 virtual seconds without checks, and
//! the node stops sending to the peer that went away.

use std::time::Duration;

use rtcdn::control::EndReason;

use crate::net::LinkConfig;
use crate::world::{World, CONSENT};

#[test]
fn a_player_that_vanishes_is_ended_when_consent_expires_and_is_sent_nothing_more() {
    let mut world = World::new(31);
    let node = world.add_node();
    world.publish(node, "live");
    world.run_for(Duration::from_millis(300));
    let gone = world.play(node, "live");
    let stays = world.play(node, "live");
    world.run_for(Duration::from_secs(3));
    assert!(world.nodes[node].connected(gone.session));

    let vanished_at = world.now;
    world.set_browser_link(
        gone,
        LinkConfig {
            up: false,
            ..LinkConfig::default()
        },
    );
    world.run_for(CONSENT + Duration::from_secs(5));

    let ended = world.nodes[node]
        .events
        .iter()
        .find_map(|(at, e)| match e {
            rtcdn::control::CoreEvent::SessionEnded { id, reason } if *id == gone.session => {
                Some((*at, reason.clone()))
            }
            _ => None,
        })
        .expect("the vanished player's session ended");
    assert_eq!(ended.1, EndReason::ConsentExpired);
    let after = ended.0 - vanished_at;
    // The last consent check answered came up to one check interval (5 s ± 20%) before.
    assert!(
        after >= CONSENT - Duration::from_secs(6) && after <= CONSENT + Duration::from_secs(1),
        "ended {after:?} after the player vanished"
    );
    // Nothing more goes its way: what the link carried after the end is nothing.
    let (player, server) = (world.peers[gone.peer].addr, world.nodes[node].addr);
    let sent_then = world.net.counts(server, player).sent;
    world.run_for(Duration::from_secs(5));
    assert_eq!(
        world.net.counts(server, player).sent,
        sent_then,
        "sent to an ended session"
    );
    // The other player never noticed.
    assert!(world.nodes[node].ended(stays.session).is_none());
    let last = world.peers[stays.peer]
        .player_state()
        .received
        .last()
        .unwrap()
        .at;
    assert!(world.now - last < Duration::from_millis(100));
}
