//! Origin failover at an edge's media core, on virtual time: the relay carrying a stream from
//! origin A dies with A, the edge's control plane keeps the copy's players (only the relay's
//! publisher session leaves the core: see `Registry::orphan`), and a relay of the same stream
//! from origin B, published there anew, becomes the stream's publisher on the same core
//! (`Registry::adopt_or_publish`). The player, never touched, goes on in one stream: the same
//! SSRCs, sequence numbers one after the other, B's video starting on a keyframe, and the
//! timestamp moved on by the pause (a jitter buffer would otherwise take B's frames for
//! seconds late).

use std::time::Duration;

use crate::world::World;

#[test]
fn an_edge_hands_its_players_to_the_next_copy_with_numbering_and_timing_carried_on() {
    let mut world = World::new(57);
    let (a, b, edge) = (world.add_node(), world.add_node(), world.add_node());
    world.publish(a, "live");
    let first = world.relay(a, edge, "live");
    let player = world.play(edge, "live");
    world.run_for(Duration::from_secs(3));
    let received = |world: &World| world.peers[player.peer].player_state().received.len();
    let before = received(&world);
    assert!(before > 100, "the player got A's copy: {before} packets");

    world.kill(a);
    world.remove(edge, first.edge_session);
    world.run_for(Duration::from_secs(4));
    let paused = received(&world);
    assert!(
        paused - before < 50,
        "nothing but what was on its way came during the pause"
    );

    world.publish(b, "live");
    world.run_for(Duration::from_millis(500));
    world.relay(b, edge, "live");
    world.run_for(Duration::from_secs(3));
    assert!(world.nodes[edge].ended(player.session).is_none());

    let state = world.peers[player.peer].player_state();
    let video: Vec<_> = state.received.iter().filter(|r| !r.id.audio).collect();
    let switch = video
        .windows(2)
        .position(|w| w[1].at - w[0].at > Duration::from_secs(1))
        .expect("a pause in the player's video");
    let (last, next) = (video[switch], video[switch + 1]);
    assert!(
        video.len() - switch > 100,
        "B's copy played on: {} packets",
        video.len() - switch
    );
    assert!(video.iter().all(|r| r.ssrc == last.ssrc), "one video SSRC");
    assert_eq!(next.seq, last.seq.wrapping_add(1), "numbering carries on");
    assert!(
        next.id.keyframe && next.id.index == 0,
        "B's video starts on a keyframe: {:?}",
        next.id
    );
    for w in video[switch..].windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "{:?} then {:?}",
            w[0],
            w[1]
        );
    }
    // The node saw the same pause as the player, give or take the keyframe replay's burst.
    let pause_ticks = (next.at - last.at).as_millis() as i64 * 90;
    let step = i64::from(next.timestamp.wrapping_sub(last.timestamp));
    assert!(
        (step - pause_ticks).abs() < 90 * 300,
        "the timestamp moved {step} for a pause of {pause_ticks} ticks"
    );
}
