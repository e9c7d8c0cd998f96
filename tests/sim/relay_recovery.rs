//! The control plane's relays on virtual time: an edge that goes away is tried again
//! with growing, jittered delays, and relayed to again as soon as it returns; its new players
//! play without anyone on the origin doing anything.

use std::time::Duration;

use rtcdn::control::relay_planner::{EdgeId, RelayState, RetryPolicy};

use crate::world::World;

#[test]
fn an_edge_that_goes_away_and_returns_is_relayed_to_again_with_the_planners_backoff() {
    let policy = RetryPolicy::default();
    let mut world = World::new(41);
    let origin = world.add_node();
    let edge = world.add_node();
    world.enable_cdn(origin, &[edge], policy);
    world.publish(origin, "live");
    let state = |world: &World| {
        world
            .cdn
            .as_ref()
            .unwrap()
            .plane
            .relay_state("live", EdgeId(edge as u32))
    };
    let up = |world: &World| matches!(state(world), Some(RelayState::Up { .. }));
    // The relay starts when the publisher's media flows, with no one asking.
    assert!(
        world.run_until(Duration::from_secs(2), up),
        "{:?}",
        state(&world)
    );
    let before = world.play(edge, "live");
    world.run_for(Duration::from_secs(2));
    assert!(!world.peers[before.peer].player_state().received.is_empty());

    let killed_at = world.now;
    world.kill(edge);
    world.run_for(Duration::from_secs(20));
    let starts: Vec<_> = world
        .cdn
        .as_ref()
        .unwrap()
        .starts
        .iter()
        .map(|s| s.0)
        .collect();
    let retries: Vec<Duration> = std::iter::once(killed_at)
        .chain(starts.iter().copied().filter(|at| *at >= killed_at))
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    // 0.5 s, then doubling to at most 8 s, each drawn from the upper half of its delay.
    let mut delay = policy.first_delay;
    assert!(
        retries.len() >= 5,
        "retries while the edge was away: {retries:?}"
    );
    for (i, waited) in retries.iter().enumerate() {
        assert!(
            *waited >= delay / 2 && *waited <= delay,
            "retry {i} after {waited:?}, not within {:?}..={delay:?}: {retries:?}",
            delay / 2
        );
        delay = (delay * 2).min(policy.max_delay);
    }

    let back_at = world.now;
    world.restart(edge);
    assert!(
        world.run_until(policy.max_delay + Duration::from_secs(2), up),
        "relayed again after the edge returned: {:?}",
        state(&world)
    );
    let waited = world.now - back_at;
    assert!(
        waited <= policy.max_delay + Duration::from_secs(1),
        "up {waited:?} after the edge returned"
    );
    let after = world.play(edge, "live");
    world.run_for(Duration::from_secs(3));
    let peer = &world.peers[after.peer];
    crate::assert_video_intact_and_in_order(&peer.name, peer.player_state());
    let (complete, _, _) = crate::completion(peer.player_state());
    assert!(complete >= 60, "{complete} frames on the returned edge");
}
