//! A media core whose only sessions are ingests (RTMP publishers nobody plays) sleeps between
//! its timers: after handling a deadline it never asks to be woken at once again. It used to
//! spin (0.45–0.97 of a core for an unwatched RTMP stream) because the players' layer choice
//! deadline was kept for ingests but only advanced for peers.

use std::time::{Duration, Instant};

use rtcdn::control::{CoreCommand, CoreId, IngestSpec, SessionId, StreamId};
use rtcdn::media::test_support::core_config;
use rtcdn::media::{ingest_channel, ForwardQueue, MediaCore, MemorySink, NoDtls};
use rtcdn::sdp::MediaKind;
use rtp::{Pt, RtpHeaderBuilder, Ssrc};

#[test]
fn a_core_with_only_an_ingest_never_wants_its_timeout_at_once_again() {
    let mut now = Instant::now();
    let config = core_config(CoreId(0), 1);
    let mut core = MediaCore::new(config, NoDtls, ForwardQueue::new(), now);
    let mut sink = MemorySink::new();
    let (mut sender, feed) = ingest_channel(64);
    let ingest = IngestSpec {
        id: SessionId(1),
        stream: StreamId(3),
        stream_name: "cam".into(),
        feed,
        video_codec: rtp::VideoCodec::H264,
    };
    core.handle_command(now, CoreCommand::AddIngest(Box::new(ingest)), &mut sink);
    let mut buf = [0u8; 1200];
    // Ten seconds of a 30 fps stream, the core's loop as the reactor runs it: packets, then
    // whatever deadline is due.
    let mut wakeups = 0u32;
    for seq in 0..300u16 {
        let len = RtpHeaderBuilder::new(Pt::new(102), seq, u32::from(seq) * 3000, Ssrc(9))
            .write_to(&mut buf)
            .unwrap();
        buf[len] = 0x41;
        sender
            .push(MediaKind::Video, false, &buf[..len + 100])
            .unwrap();
        core.handle_ingests(now, &mut sink);
        let frame_end = now + Duration::from_millis(33);
        while let Some(deadline) = core.poll_timeout().filter(|d| *d <= frame_end) {
            now = now.max(deadline);
            core.handle_timeout(now, &mut sink);
            wakeups += 1;
            let next = core.poll_timeout();
            assert!(
                next.is_none_or(|next| next > now),
                "the core wants to wake again at once ({wakeups} wakeups so far)"
            );
        }
        now = frame_end;
    }
    // Its timers (bitrate reports and the like) come a few times a second, not per loop.
    assert!(wakeups < 200, "{wakeups} timer wakeups in 10 s");
}
