//! An egress tap (an RTMP player, or an RTMP push taking audio too) on the forwarding path
//! allocates nothing: an ingest's video and audio packets
//! routed by a media core and copied into the tap's ring, the ring full and dropping, the
//! consumer taking them out, over thousands of packets once warm.

use std::alloc::System;
use std::time::{Duration, Instant};

use rtcdn::alloc_count::{this_thread, CountingAllocator};
use rtcdn::control::{CoreCommand, CoreId, EgressSpec, IngestSpec, SessionId, StreamId};
use rtcdn::media::test_support::core_config;
use rtcdn::media::{egress_channel, ingest_channel, ForwardQueue, MediaCore, MemorySink, NoDtls};
use rtcdn::sdp::MediaKind;
use rtp::{Pt, RtpHeaderBuilder, Ssrc};

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

#[test]
fn routing_into_an_egress_tap_allocates_nothing() {
    let mut now = Instant::now();
    let config = core_config(CoreId(0), 1);
    let mut core = MediaCore::new(config, NoDtls, ForwardQueue::new(), now);
    let mut sink = MemorySink::new();
    let stream = StreamId(3);
    let (mut sender, feed) = ingest_channel(64);
    let ingest = IngestSpec {
        id: SessionId(1),
        stream,
        stream_name: "cam".into(),
        feed,
        video_codec: rtp::VideoCodec::H264,
    };
    core.handle_command(now, CoreCommand::AddIngest(Box::new(ingest)), &mut sink);
    let (tap, mut rx) = egress_channel(32);
    let egress = EgressSpec {
        id: SessionId(2),
        stream,
        stream_name: "cam".into(),
        layer: 0,
        audio: true,
        tap,
    };
    core.handle_command(now, CoreCommand::AddEgress(Box::new(egress)), &mut sink);
    let mut buf = [0u8; 1200];
    let mut taken = 0u64;
    let mut audio_taken = 0u64;
    let mut warm = None;
    for seq in 0..5000u16 {
        if seq == 500 {
            // Warm: the first packet reported the stream live (events queued) long ago.
            warm = Some(core.counters().media_allocations);
        }
        // Every fifth packet is audio (an RTMP push takes it too).
        let (kind, pt, ssrc) = if seq % 5 == 0 {
            (MediaKind::Audio, 111, Ssrc(8))
        } else {
            (MediaKind::Video, 102, Ssrc(9))
        };
        let len = RtpHeaderBuilder::new(Pt::new(pt), seq, u32::from(seq) * 3000, ssrc)
            .write_to(&mut buf)
            .unwrap();
        buf[len] = 0x41;
        sender.push(kind, false, &buf[..len + 400]).unwrap();
        core.handle_ingests(now, &mut sink);
        // The consumer keeps up most of the time, and falls behind now and then (full ring).
        if seq % 100 < 60 {
            while let Some(packet) = rx.pop() {
                taken += 1;
                audio_taken += u64::from(packet.audio());
            }
        }
        now += Duration::from_millis(3);
    }
    assert!(
        this_thread().is_some(),
        "the counting allocator is installed"
    );
    assert!(rx.dropped() > 0, "the ring was full at times");
    assert!(taken > 3000, "{taken} packets taken");
    assert!(audio_taken > 500, "{audio_taken} audio packets taken");
    // Routing counts its own allocations: none once warm.
    assert_eq!(Some(core.counters().media_allocations), warm);
}
