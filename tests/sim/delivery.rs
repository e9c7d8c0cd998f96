//! Clean links: everything the publisher sends reaches every player, intact and in order,
//! through one node and through origin → edge.

use std::time::Duration;

use crate::world::World;
use crate::{assert_arrived_in_order, assert_video_intact_and_in_order, completion};

#[test]
fn every_payload_reaches_every_player_intact_and_in_order_through_origin_and_edge() {
    let mut world = World::new(1);
    let origin = world.add_node();
    let edge = world.add_node();
    let publisher = world.publish(origin, "live");
    world.run_for(Duration::from_millis(500));
    let relay = world.relay(origin, edge, "live");
    let at_origin = world.play(origin, "live");
    let at_edge: Vec<_> = (0..3).map(|_| world.play(edge, "live")).collect();
    world.run_for(Duration::from_secs(10));

    assert!(world.nodes[edge].connected(relay.edge_session), "relay up");
    let sent = world.peers[publisher.peer].publisher_state();
    assert!(
        sent.nacked.is_empty(),
        "no loss, no NACK: {:?}",
        sent.nacked
    );
    for browser in std::iter::once(at_origin).chain(at_edge) {
        let peer = &world.peers[browser.peer];
        let player = peer.player_state();
        assert_video_intact_and_in_order(&peer.name, player);
        assert_arrived_in_order(&peer.name, player);
        let (complete, _, incomplete) = completion(player);
        assert!(
            incomplete.is_empty(),
            "{}: frames {incomplete:?} incomplete",
            peer.name
        );
        // 30 frames a second for the ~9 s it played.
        assert!(complete >= 260, "{}: {complete} frames", peer.name);
        let audio = player.received.iter().filter(|r| r.id.audio).count();
        assert!(audio >= 450, "{}: {audio} audio packets", peer.name);
        assert!(
            player
                .received
                .iter()
                .filter(|r| r.id.audio)
                .all(|r| r.intact),
            "{}: audio intact",
            peer.name
        );
        assert_eq!(peer.srtp_errors, 0, "{}", peer.name);
    }
}
