//! Keyframes: a new player starts on the cached keyframe without asking the publisher, and
//! players' keyframe requests reach the publisher once, merged at every hop.

use std::time::Duration;

use crate::world::World;

#[test]
fn a_new_player_starts_on_the_edges_cached_keyframe_without_a_request_to_the_publisher() {
    let mut world = World::new(11);
    let origin = world.add_node();
    let edge = world.add_node();
    let publisher = world.publish(origin, "live");
    // One keyframe at the start, then none for a long while.
    world.peers[publisher.peer].publisher_mut().gop = 100_000;
    world.run_for(Duration::from_millis(300));
    world.relay(origin, edge, "live");
    world.run_for(Duration::from_millis(700));
    let first = world.play(edge, "live");
    // The late player comes ~2 s after the keyframe: ~190 packets since, which the cache (up
    // to 300) replays whole.
    world.run_for(Duration::from_secs(1));
    let plis_before = world.peers[publisher.peer].publisher_state().plis;

    let joined_at = world.now;
    let late = world.play(edge, "live");
    world.run_for(Duration::from_secs(2));

    for browser in [first, late] {
        let peer = &world.peers[browser.peer];
        crate::assert_video_intact_and_in_order(&peer.name, peer.player_state());
    }
    let player = world.peers[late.peer].player_state();
    let first_video = player.received.iter().find(|r| !r.id.audio).unwrap();
    assert_eq!(
        first_video.id.frame, 0,
        "the late player starts on the stream's only keyframe"
    );
    let waited = first_video.at - joined_at;
    // Connecting takes the ICE round trip; no keyframe round trip to the publisher on top.
    assert!(
        waited < Duration::from_millis(200),
        "first keyframe after {waited:?}"
    );
    assert_eq!(
        world.peers[publisher.peer].publisher_state().plis,
        plis_before,
        "the late player's start cost the publisher no keyframe"
    );
    let edge_counters = world.nodes[edge].core.counters();
    assert!(edge_counters.keyframe_cache_hits >= 1, "{edge_counters:?}");
}

#[test]
fn players_keyframe_requests_reach_the_publisher_once_merged() {
    let mut world = World::new(12);
    let origin = world.add_node();
    let edge = world.add_node();
    let publisher = world.publish(origin, "live");
    world.peers[publisher.peer].publisher_mut().gop = 100_000;
    world.run_for(Duration::from_millis(300));
    world.relay(origin, edge, "live");
    let players: Vec<_> = (0..5).map(|_| world.play(edge, "live")).collect();
    let at_origin = world.play(origin, "live");
    world.run_for(Duration::from_secs(3));
    let before = world.peers[publisher.peer].publisher_state().plis;

    // Every player's decoder loses its picture at once.
    for browser in players.iter().chain([&at_origin]) {
        world.peers[browser.peer].send_pli();
    }
    world.run_for(Duration::from_secs(2));

    let plis = world.peers[publisher.peer].publisher_state().plis - before;
    assert_eq!(plis, 1, "six players' PLIs reached the publisher as {plis}");
    // And the keyframe reached every player.
    for browser in players.iter().chain([&at_origin]) {
        let player = world.peers[browser.peer].player_state();
        let keyframes = player
            .received
            .iter()
            .filter(|r| r.id.keyframe && r.id.index == 0 && r.id.frame > 0)
            .count();
        assert!(
            keyframes >= 1,
            "{} got the new keyframe",
            world.peers[browser.peer].name
        );
    }
}
