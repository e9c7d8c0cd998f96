//! The deterministic simulator: publisher → origin → relay → edge → players, every node a real
//! `MediaCore`, every browser a sans-IO client, all on one virtual clock with a seeded network
//! between every pair (`net`). A scenario runs minutes of virtual time in well under a second,
//! and a failure replays exactly from its seed.
//!
//! What is real: every datagram the nodes exchange (STUN, SRTP, SRTCP), the relay between
//! nodes, ICE consent, retransmission caches and loss detectors, keyframe caches and requests,
//! sender-report translation. What is not: signalling (a scenario adds sessions with the
//! commands signalling would send) and DTLS, which the `dtls` crate cannot run on a virtual
//! clock — SRTP is keyed with fixed test keys once ICE is up. Real DTLS stays covered by the
//! real-socket and browser tests.

mod net;
mod peer;
mod world;

mod delivery;
mod failover;
mod keyframes;
mod lip_sync;
mod loss;
mod relay_recovery;
mod simulcast;
mod timeouts;

use std::collections::{BTreeMap, BTreeSet};

use peer::{Player, Received};

/// Checks that a player got its video intact and in order: every payload it received matches
/// what the publisher sent, the payloads in RTP sequence order (the order a jitter buffer puts
/// them in, whatever order repairs arrived in) are the publisher's order with nothing twice
/// under two numbers, and the first packet is the start of a keyframe. Returns the number of
/// complete frames (see [`completion`]).
pub fn assert_video_intact_and_in_order(name: &str, player: &Player) -> usize {
    let video: Vec<&Received> = player.received.iter().filter(|r| !r.id.audio).collect();
    assert!(!video.is_empty(), "{name} received no video");
    let first = video[0];
    assert!(
        first.id.keyframe && first.id.index == 0,
        "{name} starts on {:?}, not on a keyframe's first packet",
        first.id
    );
    let mut by_seq = BTreeMap::new();
    for r in &video {
        assert!(r.intact, "{name}: payload {:?} damaged", r.id);
        let key = (r.id.frame, r.id.index);
        if let Some(earlier) = by_seq.insert((r.ssrc, r.extended_seq), key) {
            assert_eq!(earlier, key, "{name}: seq {} carried two payloads", r.seq);
        }
    }
    let mut previous = None;
    for (&(_, seq), &key) in &by_seq {
        if let Some((last_seq, last)) = previous {
            assert!(
                key > last,
                "{name}: seq {seq} has {key:?}, seq {last_seq} had {last:?}"
            );
        }
        previous = Some((seq, key));
    }
    completion(player).0
}

/// Checks that a player on a clean path received its video in the publisher's order.
pub fn assert_arrived_in_order(name: &str, player: &Player) {
    let mut last = None;
    for r in player.received.iter().filter(|r| !r.id.audio) {
        let key = (r.id.frame, r.id.index);
        if let Some(last) = last {
            assert!(key > last, "{name}: {key:?} arrived after {last:?}");
        }
        last = Some(key);
    }
}

/// How many of the frames a player should have it got whole: (complete, expected, the
/// incomplete ones). Expected are the frames from the first it received to the last one that
/// left the publisher half a second before the end — later ones may still be in flight or
/// being repaired.
pub fn completion(player: &Player) -> (usize, usize, Vec<u32>) {
    let mut frames: BTreeMap<u32, (u16, BTreeSet<u16>)> = BTreeMap::new();
    for r in player.received.iter().filter(|r| !r.id.audio && r.intact) {
        let entry = frames.entry(r.id.frame).or_default();
        entry.0 = r.id.count;
        entry.1.insert(r.id.index);
    }
    let (Some(&first), Some(&last)) = (frames.keys().next(), frames.keys().next_back()) else {
        return (0, 0, Vec::new());
    };
    // 15 frames: half a second at 30 frames a second.
    let last = last.saturating_sub(15).max(first);
    let incomplete: Vec<u32> = (first..=last)
        .filter(|f| {
            frames
                .get(f)
                .is_none_or(|(count, got)| got.len() != usize::from(*count))
        })
        .collect();
    let expected = (last - first + 1) as usize;
    (expected - incomplete.len(), expected, incomplete)
}
