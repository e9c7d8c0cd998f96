//! Sender reports keep lip sync through two hops: a player that maps each packet's RTP
//! timestamp to wall-clock time through the sender reports it receives finds audio and video
//! captured at the same moment at the same time, although every hop rewrote both timestamps.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::peer::{ntp_at, Player};
use crate::world::World;

/// For each of a player's SSRCs: the offset of (NTP time from its sender reports − capture
/// time) over all its packets, in µs: (min, max).
fn offsets(player: &Player) -> BTreeMap<(bool, u32), (i64, i64)> {
    let mut out: BTreeMap<(bool, u32), (i64, i64)> = BTreeMap::new();
    for r in &player.received {
        let Some(&(_, ntp, rtp)) = player
            .sender_reports
            .iter()
            .rev()
            .find(|(ssrc, _, _)| *ssrc == r.ssrc)
        else {
            continue;
        };
        let clock = if r.id.audio { 48_000 } else { 90_000 };
        let ticks = i64::from(r.timestamp.wrapping_sub(rtp) as i32);
        let ntp_us = ntp_to_us(ntp) + ticks * 1_000_000 / clock;
        let offset = ntp_us - ntp_to_us(ntp_at(r.id.captured_us));
        let entry = out.entry((r.id.audio, r.ssrc)).or_insert((offset, offset));
        entry.0 = entry.0.min(offset);
        entry.1 = entry.1.max(offset);
    }
    out
}

fn ntp_to_us(ntp: u64) -> i64 {
    let secs = (ntp >> 32) as i64;
    let frac = ((ntp & 0xffff_ffff) * 1_000_000) >> 32;
    secs * 1_000_000 + frac as i64
}

#[test]
fn sender_reports_keep_audio_and_video_in_sync_through_origin_and_edge() {
    let mut world = World::new(21);
    let origin = world.add_node();
    let edge = world.add_node();
    world.publish(origin, "live");
    world.run_for(Duration::from_millis(700));
    world.relay(origin, edge, "live");
    let players = [world.play(edge, "live"), world.play(origin, "live")];
    world.run_for(Duration::from_secs(6));

    for browser in players {
        let peer = &world.peers[browser.peer];
        let player = peer.player_state();
        let offsets = offsets(player);
        assert_eq!(
            offsets.len(),
            2,
            "{}: audio and video with sender reports: {offsets:?}",
            peer.name
        );
        let audio = offsets.iter().find(|((a, _), _)| *a).unwrap().1;
        let video = offsets.iter().find(|((a, _), _)| !*a).unwrap().1;
        // Within a stream: one mapping for every packet (timestamps are whole ticks).
        for (min, max) in [audio, video] {
            assert!(max - min <= 100, "{}: offsets {min}..{max} µs", peer.name);
        }
        // Across: audio and video captured together play together.
        let skew = (audio.0 - video.0).abs();
        assert!(
            skew <= 1_000,
            "{}: audio/video skew {skew} µs ({audio:?} vs {video:?})",
            peer.name
        );
    }
}
