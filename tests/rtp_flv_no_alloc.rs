//! An RTMP push's (and an RTMP player's) RTP → FLV depacketizer allocates nothing per packet
//! once warm: H.264 and H.265 frames of fragmentation units, keyframes after their parameter
//! sets in an aggregation packet, cost one allocation each (the buffer the next frame is put
//! together in; the finished one is handed out as the tag body), however many packets they
//! came in. Counted by the node's own allocator wrapper.

use std::alloc::System;

use rtcdn::alloc_count::{this_thread, CountingAllocator};
use rtcdn::rtmp::rtp_flv::{FlvVideo, NalCodec, RtpToFlv};

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

const PT: u8 = 100;
/// A slice's size: five fragments of 1000 bytes.
const SLICE: usize = 5000;

/// One frame's packets: for a keyframe its parameter sets in an aggregation packet, then one
/// slice as fragmentation units, the same size every frame.
fn frame(codec: NalCodec, seq: &mut u16, time: u32, key: bool) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    let (aggregate, sets, fu_header, slice_type): (Vec<u8>, Vec<Vec<u8>>, Vec<u8>, u8) = match codec
    {
        NalCodec::H264 => (
            vec![24],
            vec![vec![0x67, 0x42, 0xC0, 0x1E, 0xAA], vec![0x68, 0xCE]],
            vec![0x7C],
            if key { 5 } else { 1 },
        ),
        NalCodec::H265 => (
            vec![48 << 1, 1],
            vec![x265::VPS.to_vec(), x265::SPS.to_vec(), x265::PPS.to_vec()],
            vec![49 << 1, 1],
            if key { 19 } else { 1 },
        ),
    };
    if key {
        let mut ap = aggregate;
        for set in &sets {
            ap.extend_from_slice(&(set.len() as u16).to_be_bytes());
            ap.extend_from_slice(set);
        }
        payloads.push(ap);
    }
    let chunks = SLICE / 1000;
    for i in 0..chunks {
        let s = if i == 0 { 0x80 } else { 0 };
        let e = if i == chunks - 1 { 0x40 } else { 0 };
        let mut p = fu_header.clone();
        p.push(s | e | slice_type);
        p.extend(std::iter::repeat_n(0x5A, 1000));
        payloads.push(p);
    }
    let last = payloads.len() - 1;
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut p = vec![0x80, if i == last { 0x80 } else { 0 } | PT];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&time.to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(&payload);
            *seq = seq.wrapping_add(1);
            p
        })
        .collect()
}

/// x265's 320x240 parameter sets (the SPS must read for an `hvc1` sequence start).
mod x265 {
    pub const VPS: [u8; 24] = [
        0x40, 0x01, 0x0C, 0x01, 0xFF, 0xFF, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x3C, 0xBA, 0x02, 0x40,
    ];
    pub const SPS: [u8; 40] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3C, 0xA0, 0x0A, 0x08, 0x0F, 0x16, 0x5B, 0xA4, 0xA4, 0xC2, 0xF0, 0x16, 0x80,
        0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0F, 0x04,
    ];
    pub const PPS: [u8; 6] = [0x44, 0x01, 0xC0, 0x73, 0xC1, 0x89];
}

#[test]
fn depacketizing_h264_and_h265_allocates_once_a_frame_and_never_a_packet() {
    for codec in [NalCodec::H264, NalCodec::H265] {
        let mut seq = 1u16;
        let packets: Vec<Vec<u8>> = (0..120u32)
            .flat_map(|i| frame(codec, &mut seq, i * 3000, i % 30 == 0))
            .collect();
        let (warm, measured) = packets.split_at(packets.len() / 2);
        let mut flv = RtpToFlv::for_codec(codec, PT);
        let mut frames = 0usize;
        let mut bytes = 0usize;
        for packet in warm {
            flv.push(packet, |v| {
                if let FlvVideo::Frame { body, .. } = v {
                    bytes += body.len();
                }
            });
        }
        let before = this_thread().expect("the counting allocator is installed");
        for packet in measured {
            // The bodies handed out are dropped here, as a writer drops them once sent.
            flv.push(packet, |v| {
                if let FlvVideo::Frame { body, .. } = v {
                    frames += 1;
                    bytes += body.len();
                }
            });
        }
        let made = this_thread().unwrap() - before;
        assert_eq!(frames, 60, "{codec:?}: frames went out");
        assert!(bytes > 120 * SLICE, "{codec:?}: {bytes} bytes");
        assert_eq!(flv.counters.losses + flv.counters.skipped, 0);
        assert!(
            measured.len() >= 5 * frames,
            "several packets a frame: {}",
            measured.len()
        );
        assert_eq!(
            made as usize,
            frames,
            "{codec:?}: allocations for {frames} frames of {} packets",
            measured.len()
        );
    }
}
