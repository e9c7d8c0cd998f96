//! Origin failover at an edge's media core, on virtual time: the relay carrying a stream from
//! origin A dies with A, the edge's control plane keeps the copy's players (only the relay's
//! publisher session leaves the core: see `Registry::orphan`), and a relay of the same stream
//! from origin B, published there anew, becomes the stream's publisher on the same core
//! (`Registry::adopt_or_publish`). The player, never touched, goes on in one stream: the same
//! SSRCs, sequence numbers one after the other, B's video starting on a keyframe, and the
//! timestamp moved on by the pause (a jitter buffer would otherwise take B's frames for
//! seconds late).

use std::time::Duration;

use rtcdn::control::{CoreEvent, SessionId};

use crate::world::World;

/// The keyframe requests a session of `node` sent, as its core last reported them.
fn keyframe_requests_out(world: &World, node: usize, id: SessionId) -> Option<u64> {
    world.nodes[node]
        .events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            CoreEvent::Bitrates {
                id: of, traffic, ..
            } if *of == id => Some(traffic.keyframe_requests_out),
            _ => None,
        })
}

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
    let second = world.relay(b, edge, "live");
    world.run_for(Duration::from_secs(3));
    assert!(world.nodes[edge].ended(player.session).is_none());
    assert_eq!(
        keyframe_requests_out(&world, edge, second.edge_session),
        Some(0),
        "the new copy started on a keyframe: nothing to ask"
    );

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

#[test]
fn a_new_copy_whose_origin_has_no_keyframe_cached_starts_on_one_it_asked_for() {
    let mut world = World::new(58);
    let (a, b, edge) = (world.add_node(), world.add_node(), world.add_node());
    world.publish(a, "live");
    let first = world.relay(a, edge, "live");
    let player = world.play(edge, "live");
    world.run_for(Duration::from_secs(3));
    world.kill(a);
    world.remove(edge, first.edge_session);
    // B's publisher sends a keyframe only when asked, and has sent for long enough that B's
    // cache holds none to start a relay on.
    let publisher = world.publish(b, "live");
    world.peers[publisher.peer].publisher_mut().gop = 100_000;
    world.run_for(Duration::from_secs(6));
    let asked_before = world.peers[publisher.peer].publisher_state().plis;
    let second = world.relay(b, edge, "live");
    world.run_for(Duration::from_secs(3));
    // B's relay asked its publisher for a keyframe, once, and started on it: the edge and its
    // player had nothing to ask.
    assert_eq!(
        world.peers[publisher.peer].publisher_state().plis - asked_before,
        1,
        "one keyframe asked for the new copy"
    );
    assert_eq!(
        keyframe_requests_out(&world, edge, second.edge_session),
        Some(0)
    );
    let video: Vec<_> = world.peers[player.peer]
        .player_state()
        .received
        .iter()
        .filter(|r| !r.id.audio)
        .collect();
    let switch = video
        .windows(2)
        .position(|w| w[1].at - w[0].at > Duration::from_secs(1))
        .expect("a pause in the player's video");
    let next = video[switch + 1];
    assert!(
        next.id.keyframe && next.id.index == 0,
        "B's video starts on the keyframe asked for: {:?}",
        next.id
    );
}
