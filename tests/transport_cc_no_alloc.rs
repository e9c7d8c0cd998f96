//! The transport-cc work on the forwarding path allocates nothing once a session exists:
//! numbering every packet to a player (extension added or overwritten, retransmissions
//! renumbered identically), the player's feedback through the bandwidth estimator, and a
//! publisher's packets recorded and answered, over 20 s of virtual time with loss and reordering.

use std::alloc::System;
use std::time::{Duration, Instant};

use rtcdn::alloc_count::{this_thread, CountingAllocator};
use rtcdn::bwe::BweConfig;
use rtcdn::session::transport_cc::{PlayerFeedback, PublisherFeedback};
use rtp::rtcp::{TransportCc, TransportCcBuilder};
use rtp::twcc::write_with_transport_seq;
use rtp::{Pt, RtpHeader, RtpHeaderBuilder, Ssrc};

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

fn packet(buf: &mut [u8], seq: u16, len: usize) -> usize {
    RtpHeaderBuilder::new(Pt::new(96), seq, u32::from(seq) * 3000, Ssrc(7))
        .write_to(buf)
        .unwrap();
    len
}

#[test]
fn numbering_feedback_and_estimating_allocate_nothing() {
    let start = Instant::now();
    let mut player = PlayerFeedback::new(3, start, BweConfig::default()).unwrap();
    let mut publisher = PublisherFeedback::new(3);
    let mut builder = TransportCcBuilder::new();
    let (mut plain, mut out, mut fb) = ([0u8; 1500], [0u8; 1500], [0u8; 1500]);
    let mut reported: Vec<(u16, i64)> = Vec::with_capacity(64);
    let mut fb_count = 0u8;
    let mut measured = None;
    for i in 0..4000u32 {
        if i == 400 {
            // Warm: everything sized itself by now.
            measured = this_thread();
        }
        let now = start + Duration::from_millis(u64::from(i) * 5);
        let seq = i as u16;
        // To the player: the packet, numbered; every 50th sent again as a retransmission.
        let len = packet(&mut plain, seq, 1000);
        let n = player.copy_with_room(&plain[..len], &mut out).unwrap();
        player.stamp(now, &mut out[..n], true, false).unwrap();
        if i % 50 == 25 {
            let n = player.copy_with_room(&plain[..len], &mut out).unwrap();
            player.stamp(now, &mut out[..n], true, true).unwrap();
        }
        // The player reports every packet but each 20th, 30 ms later, 1-in-7 swapped.
        if i % 20 != 0 {
            let arrival = i64::from(i) * 5_000 + 30_000 + if i % 7 == 0 { 2_000 } else { 0 };
            reported.push(((i + 1) as u16, arrival));
        }
        if reported.len() == reported.capacity() {
            reported.sort_unstable_by_key(|&(s, _)| s);
            builder.start(reported[0].0, reported[0].1, fb_count, 1200);
            for &(s, at) in &reported {
                builder.push(s, Some(at)).unwrap();
            }
            let n = builder.write_to(Ssrc(9), Ssrc(7), &mut fb).unwrap();
            player.on_feedback(now, &TransportCc::parse(&fb[..n]).unwrap());
            reported.clear();
            fb_count = fb_count.wrapping_add(1);
        }
        // From a publisher: recorded, and answered when due.
        let n = write_with_transport_seq(&plain[..len], 3, seq, &mut out).unwrap();
        publisher.on_packet(now, &RtpHeader::parse(&out[..n]).unwrap());
        while publisher.poll_feedback(now, 1, 7, &mut fb).is_some() {}
    }
    let (Some(before), Some(after)) = (measured, this_thread()) else {
        panic!("the counting allocator is installed");
    };
    assert_eq!(after - before, 0, "allocations on the transport-cc paths");
    assert!(
        player.estimate_bps() > 1_000_000,
        "{}",
        player.estimate_bps()
    );
}
