//! The packet path allocates nothing: SRTP protect/unprotect (both profiles, RTP and RTCP),
//! RTP parsing and rewriting, RTCP parsing, and recording arrivals for transport-wide
//! feedback and writing it, counted with a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rtp::rtcp::{Rtcp, RtcpIter};
use rtp::srtp::{SrtpContext, SrtpProfile};
use rtp::{Pt, RtpHeader, RtpHeaderBuilder, RtpRewriter, Ssrc};

struct Counting;

thread_local! {
    // Per thread, so the test harness's own threads do not count.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

// Forwards to the system allocator and counts calls; the crate under test stays
// `forbid(unsafe_code)`, only this test binary implements the trait.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn write_packet(buf: &mut [u8], seq: u16) -> usize {
    let h = RtpHeaderBuilder::new(Pt::new(96), seq, u32::from(seq) * 3000, Ssrc(0xabcd));
    let n = h.write_to(buf).unwrap();
    buf[n..n + 1200].fill(0x5a);
    n + 1200
}

fn forward(
    profile: SrtpProfile,
    seq: u16,
    tx: &mut SrtpContext,
    rx: &mut SrtpContext,
    out: &mut SrtpContext,
    rw: &mut RtpRewriter,
) {
    let mut buf = [0u8; 1500];
    let len = write_packet(&mut buf, seq);
    let sealed = tx.protect_rtp(&mut buf, len).unwrap();
    assert_eq!(sealed, len + profile.rtp_overhead());
    let plain = rx.unprotect_rtp(&mut buf[..sealed]).unwrap();
    let h = RtpHeader::parse(&buf[..plain]).unwrap();
    assert_eq!(h.payload_len(), 1200);
    rw.rewrite(&mut buf[..plain]).unwrap();
    out.protect_rtp(&mut buf, plain).unwrap();
}

fn rtcp_round(tx: &mut SrtpContext, rx: &mut SrtpContext) {
    let mut buf = [0u8; 256];
    let pli = rtp::rtcp::Pli {
        sender_ssrc: Ssrc(1),
        media_ssrc: Ssrc(2),
    };
    let n = Rtcp::Pli(pli).write_to(&mut buf).unwrap();
    let sealed = tx.protect_rtcp(&mut buf, n).unwrap();
    let plain = rx.unprotect_rtcp(&mut buf[..sealed]).unwrap();
    for p in RtcpIter::new(&buf[..plain]) {
        assert!(matches!(p, Ok(Rtcp::Pli(_))));
    }
}

#[test]
fn packet_path_does_not_allocate() {
    let before = allocs();
    std::hint::black_box(vec![0u8; 16]);
    assert!(allocs() > before, "the counter sees allocations");
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let key = [3u8; 16];
        let salt = vec![4u8; profile.salt_len()];
        let mut tx = SrtpContext::new(profile, &key, &salt).unwrap();
        let mut rx = SrtpContext::new(profile, &key, &salt).unwrap();
        let mut out = SrtpContext::new(profile, &key, &salt).unwrap();
        let mut rw = RtpRewriter::new(Ssrc(77), Pt::new(100), 1, 1);

        // From the first packet of each SSRC on: contexts reserve room for their streams.
        let before = allocs();
        for i in 0..2000u16 {
            forward(
                profile,
                65_000u16.wrapping_add(i),
                &mut tx,
                &mut rx,
                &mut out,
                &mut rw,
            );
            rtcp_round(&mut tx, &mut rx);
        }
        let after = allocs();
        assert_eq!(
            after - before,
            0,
            "{profile:?} allocated on the packet path"
        );
        assert_eq!(rx.roc(Ssrc(0xabcd)), Some(1));
    }
}

#[test]
fn twcc_recording_and_feedback_do_not_allocate() {
    use std::time::{Duration, Instant};

    use rtp::rtcp::{PacketStatus, TransportCc};
    use rtp::twcc::{set_transport_seq, transport_seq, write_with_transport_seq, TwccRecorder};

    let t0 = Instant::now();
    let mut rec = TwccRecorder::new();
    let mut feedback = [0u8; 1200];
    let mut packet = [0u8; 1500];
    let mut with_ext = [0u8; 1508];
    // One packet a millisecond, every 13th lost, 1 in 9 swapped with the next; 20 s.
    let mut round = |rec: &mut TwccRecorder, ms: u32| {
        let len = write_packet(&mut packet, ms as u16);
        let n = write_with_transport_seq(&packet[..len], 3, 0, &mut with_ext).unwrap();
        let seq = if ms % 9 == 0 {
            ms + 1
        } else if ms % 9 == 1 {
            ms - 1
        } else {
            ms
        } as u16;
        assert!(set_transport_seq(&mut with_ext[..n], 3, seq).unwrap());
        let h = RtpHeader::parse(&with_ext[..n]).unwrap();
        let now = t0 + Duration::from_millis(u64::from(ms));
        if ms % 13 != 5 {
            rec.on_packet(now, transport_seq(&h, 3).unwrap());
        }
        if rec.poll_timeout().is_some_and(|due| due <= now) {
            while let Some(n) = rec
                .poll_feedback(now, Ssrc(1), Ssrc(2), &mut feedback)
                .unwrap()
            {
                let fb = TransportCc::parse(&feedback[..n]).unwrap();
                let received = fb
                    .packets()
                    .unwrap()
                    .filter(|(_, s)| matches!(s, PacketStatus::Received { .. }))
                    .count();
                assert!(received > 0);
            }
        }
    };
    // Warm up: the first rounds size the reused buffers.
    for ms in 0..1_000 {
        round(&mut rec, ms);
    }
    let before = allocs();
    for ms in 1_000..20_000 {
        round(&mut rec, ms);
    }
    assert_eq!(allocs() - before, 0, "twcc path allocated");
    assert!(rec.stats().feedback_packets > 150);
}
