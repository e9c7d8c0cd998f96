//! [`RtpToFlv`] on H.265 (RFC 7798) packets: x265's parameter sets, aggregation packets,
//! fragmentation units, losses, new parameter sets, truncations, and what the `hvc1` ingest
//! packetizes.

use super::*;
use crate::rtmp::flv::tests::{ex_video, x265_hvcc, X265_PPS, X265_SPS, X265_VPS};
use crate::rtmp::flv::{nal_units, parse_video, VideoTag, VIDEO_PACKET_CODED_FRAMES};
use crate::rtmp::publisher::{RtmpPublisher, H265_PT};

/// A CRA (type 21) slice's NAL unit header, and a TRAIL_R (type 1) one.
const CRA: [u8; 2] = [0x2A, 0x01];
const TRAIL: [u8; 2] = [0x02, 0x01];

fn rtp(seq: u16, time: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, if marker { 0x80 } else { 0 } | H265_PT];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&time.to_be_bytes());
    p.extend_from_slice(&9u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An aggregation packet (RFC 7798 §4.4.2): payload header type 48, 16-bit sizes, no DONL.
fn ap(nals: &[&[u8]]) -> Vec<u8> {
    let mut p = vec![h265::NAL_AP << 1, 0x01];
    for nal in nals {
        p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        p.extend_from_slice(nal);
    }
    p
}

/// `nal` as fragmentation units (RFC 7798 §4.4.3) of at most `chunk` bytes of its body.
fn fus(nal: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let header = [(nal[0] & 0x81) | (h265::NAL_FU << 1), nal[1]];
    let kind = h265::nal_type(nal[0]);
    let pieces: Vec<&[u8]> = nal[2..].chunks(chunk).collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let s = if i == 0 { 0x80 } else { 0 };
            let e = if i == last { 0x40 } else { 0 };
            [&header[..], &[s | e | kind], piece].concat()
        })
        .collect()
}

fn slice(header: [u8; 2], len: usize) -> Vec<u8> {
    header
        .into_iter()
        .chain((0..len).map(|i| (i * 7) as u8 | 1))
        .collect()
}

/// A keyframe of `seq` and on at `time`: the parameter sets in an AP, then a CRA alone.
fn keyframe(seq: u16, time: u32, cra: &[u8]) -> Vec<Vec<u8>> {
    vec![
        rtp(seq, time, false, &ap(&[&X265_VPS, &X265_SPS, &X265_PPS])),
        rtp(seq + 1, time, true, cra),
    ]
}

fn run(d: &mut RtpToFlv, packets: &[Vec<u8>]) -> Vec<FlvVideo> {
    let mut out = Vec::new();
    for p in packets {
        d.push(p, |v| out.push(v));
    }
    out
}

/// A frame's keyframe flag and NAL units, as an `hvc1` CodedFramesX tag.
fn frame(v: &FlvVideo) -> (u32, bool, Vec<Vec<u8>>) {
    let FlvVideo::Frame {
        timestamp_ms,
        keyframe,
        body,
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(body[0] & 0x0F, VIDEO_PACKET_CODED_FRAMES_X);
    let Ok(VideoTag::HevcFrame {
        keyframe: tagged,
        composition_ms: 0,
        nalus,
    }) = parse_video(body)
    else {
        panic!("{body:?}")
    };
    assert_eq!(tagged, *keyframe);
    (
        *timestamp_ms,
        *keyframe,
        nal_units(nalus, 4).map(<[u8]>::to_vec).collect(),
    )
}

fn configs(out: &[FlvVideo]) -> Vec<(u32, Vec<u8>)> {
    out.iter()
        .filter_map(|v| match v {
            FlvVideo::Config {
                timestamp_ms, body, ..
            } => Some((*timestamp_ms, body.clone())),
            FlvVideo::Frame { .. } => None,
        })
        .collect()
}

fn frames(out: &[FlvVideo]) -> Vec<(u32, bool, Vec<Vec<u8>>)> {
    out.iter()
        .filter(|v| matches!(v, FlvVideo::Frame { .. }))
        .map(frame)
        .collect()
}

#[test]
fn an_ap_of_x265_parameter_sets_makes_the_hvc1_sequence_start_and_single_nals_the_frames() {
    let mut d = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
    assert_eq!(d.codec(), NalCodec::H265);
    let cra = slice(CRA, 40);
    let mut packets = keyframe(1, 9000, &cra);
    // An access unit delimiter and a suffix SEI (type 40) in the next frame.
    let aud = [h265::NAL_AUD << 1, 1, 0x50];
    let sei = [40 << 1, 1, 0x05, 0x80];
    packets.push(rtp(3, 12000, false, &aud));
    packets.push(rtp(4, 12000, false, &TRAIL));
    packets.push(rtp(5, 12000, true, &sei));
    let out = run(&mut d, &packets);
    assert_eq!(out.len(), 3, "{out:?}");
    let FlvVideo::Config {
        timestamp_ms: 0,
        body,
        size: Some((320, 240)),
    } = &out[0]
    else {
        panic!("{:?}", out[0])
    };
    assert_eq!(&body[..5], b"\x90hvc1");
    let Ok(VideoTag::HevcConfig(config)) = parse_video(body) else {
        panic!("{body:?}")
    };
    assert_eq!(
        (config.vps, config.sps, config.pps, config.length_size),
        (&X265_VPS[..], &X265_SPS[..], &X265_PPS[..], 4)
    );
    // What the SPS says, as ffmpeg's muxer wrote it for the same stream.
    let muxed = ex_video(0, FOURCC_HEVC, &x265_hvcc());
    let Ok(VideoTag::HevcConfig(muxed)) = parse_video(&muxed) else {
        panic!("x265's hvcC reads")
    };
    assert_eq!(
        (
            config.profile_tier_level,
            config.chroma_format_idc,
            config.bit_depth_luma_minus8,
            config.bit_depth_chroma_minus8
        ),
        (
            muxed.profile_tier_level,
            muxed.chroma_format_idc,
            muxed.bit_depth_luma_minus8,
            muxed.bit_depth_chroma_minus8
        )
    );
    assert_eq!(frame(&out[1]), (0, true, vec![cra]));
    assert_eq!(
        frame(&out[2]),
        (33, false, vec![TRAIL.to_vec(), sei.to_vec()])
    );
    assert_eq!((d.counters.frames, d.counters.keyframes), (2, 1));
}

#[test]
fn fragmentation_units_are_joined_with_the_nal_header_they_restore() {
    let mut d = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
    // An IDR_W_RADL (19) with LayerId 0 and TID 1, in four fragments.
    let idr = slice([19 << 1, 0x01], 1000);
    let mut packets = vec![rtp(1, 0, false, &ap(&[&X265_VPS, &X265_SPS, &X265_PPS]))];
    let pieces = fus(&idr, 300);
    assert_eq!(pieces.len(), 4);
    for (i, piece) in pieces.iter().enumerate() {
        packets.push(rtp(2 + i as u16, 0, i == 3, piece));
    }
    // A fragment whose start was never seen is dropped, not joined.
    let trail = slice(TRAIL, 500);
    let trail_pieces = fus(&trail, 200);
    packets.push(rtp(6, 3000, false, &trail_pieces[1]));
    // Units of RTP's own types (here an FU's header, aggregated) are no NAL units: dropped.
    let fu_like = [h265::NAL_FU << 1, 1, 0x81, 7];
    packets.push(rtp(7, 6000, true, &ap(&[&fu_like, &TRAIL])));
    let out = run(&mut d, &packets);
    assert_eq!(configs(&out).len(), 1);
    assert_eq!(
        frames(&out),
        [(0, true, vec![idr]), (66, false, vec![TRAIL.to_vec()])]
    );
    assert_eq!(d.counters.ignored, 0);
}

#[test]
fn a_loss_mid_frame_drops_frames_until_the_next_irap() {
    let mut d = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
    let cra = slice(CRA, 10);
    // Delta frames before the first keyframe wait for it.
    let mut packets = vec![rtp(1, 0, true, &TRAIL)];
    packets.extend(keyframe(2, 3000, &cra));
    packets.push(rtp(4, 6000, true, &TRAIL));
    // A frame (a prefix SEI, then a fragmented slice) loses its slice's middle: it and the
    // next frame are not decodable.
    let trail = slice(TRAIL, 500);
    let pieces = fus(&trail, 200);
    packets.push(rtp(5, 9000, false, &[39 << 1, 1, 0x05, 0x80]));
    packets.push(rtp(6, 9000, false, &pieces[0]));
    packets.push(rtp(8, 9000, true, &pieces[2]));
    packets.push(rtp(9, 12000, true, &TRAIL));
    packets.extend(keyframe(10, 15000, &cra));
    packets.push(rtp(12, 18000, true, &TRAIL));
    let out = run(&mut d, &packets);
    let got: Vec<(u32, bool)> = frames(&out).into_iter().map(|(t, k, _)| (t, k)).collect();
    assert_eq!(got, [(0, true), (33, false), (133, true), (166, false)]);
    // The parameter sets did not change: one sequence start.
    assert_eq!(configs(&out).len(), 1);
    assert_eq!(d.counters.losses, 1);
    assert_eq!(d.counters.skipped, 3);
    assert!(!d.waits_for_keyframe());
    d.resync();
    assert!(d.waits_for_keyframe());
}

#[test]
fn new_parameter_sets_send_a_new_sequence_start_and_an_unreadable_sps_none() {
    let mut d = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
    let cra = slice(CRA, 10);
    let mut packets = keyframe(1, 0, &cra);
    packets.extend(keyframe(3, 3000, &cra));
    // Another PPS (pps_pic_parameter_set_id 0, other flags).
    let pps2 = [0x44, 0x01, 0xC1, 0x72, 0xB0, 0x62];
    packets.push(rtp(5, 6000, false, &ap(&[&X265_VPS, &X265_SPS, &pps2])));
    packets.push(rtp(6, 6000, true, &cra));
    let out = run(&mut d, &packets);
    let starts = configs(&out);
    assert_eq!(
        starts.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [0, 66],
        "{out:?}"
    );
    let Ok(VideoTag::HevcConfig(config)) = parse_video(&starts[1].1) else {
        panic!("{:?}", starts[1])
    };
    assert_eq!(config.pps, pps2);
    // An SPS cut short before its bit depths makes no sequence start: the IRAP waits.
    let mut d = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
    let packets = [
        rtp(1, 0, false, &ap(&[&X265_VPS, &X265_SPS[..20], &X265_PPS])),
        rtp(2, 0, true, &cra),
    ];
    assert!(run(&mut d, &packets).is_empty());
    assert!(d.waits_for_keyframe());
}

#[test]
fn every_truncation_of_every_packet_is_taken_without_panic() {
    let cra = slice(CRA, 700);
    let mut packets = vec![rtp(1, 0, false, &ap(&[&X265_VPS, &X265_SPS, &X265_PPS]))];
    for (i, piece) in fus(&cra, 300).iter().enumerate() {
        packets.push(rtp(2 + i as u16, 0, i == 2, piece));
    }
    packets.push(rtp(5, 3000, true, &TRAIL));
    // Unknown forms: PACI (50) and a reserved type; an AP whose size runs past the end.
    packets.push(rtp(6, 6000, true, &[50 << 1, 1, 0, 0]));
    packets.push(rtp(7, 6000, true, &[60 << 1, 1]));
    packets.push(rtp(8, 6000, true, &[h265::NAL_AP << 1, 1, 0, 9, 2]));
    for cut in 0..packets.iter().map(Vec::len).max().unwrap() {
        let mut d = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
        for (i, packet) in packets.iter().enumerate() {
            // One packet cut at a time, the others whole.
            let mut out = Vec::new();
            let end = if i == cut % packets.len() {
                cut.min(packet.len())
            } else {
                packet.len()
            };
            d.push(&packet[..end], |v| out.push(v));
            frames(&out);
        }
    }
    let mut d = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
    run(&mut d, &packets);
    assert_eq!(d.counters.ignored, 3);
}

#[test]
fn what_the_hvc1_ingest_packetizes_comes_back_as_the_same_nal_units() {
    let mut publisher = RtmpPublisher::new(7, 100, 0);
    let mut packets = Vec::new();
    let start = ex_video(0, FOURCC_HEVC, &x265_hvcc());
    let tag = |key: bool, nal: &[u8]| {
        let mut m = ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_HEVC, &[0, 0, 0]);
        if !key {
            m[0] = VIDEO_EX_HEADER | VIDEO_FRAME_INTER << 4 | VIDEO_PACKET_CODED_FRAMES;
        }
        m.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        m.extend_from_slice(nal);
        m
    };
    let nals = [slice(CRA, 5000), slice(TRAIL, 300), slice(TRAIL, 10)];
    let messages = [
        start,
        tag(true, &nals[0]),
        tag(false, &nals[1]),
        tag(false, &nals[2]),
    ];
    for (i, m) in messages.iter().enumerate() {
        publisher
            .handle_video(i as u32 * 40, m, |p, _| packets.push(p.to_vec()))
            .unwrap();
    }
    let out = run(&mut RtpToFlv::for_codec(NalCodec::H265, H265_PT), &packets);
    assert_eq!(configs(&out).len(), 1, "{out:?}");
    let got = frames(&out);
    assert_eq!(
        got,
        [
            (0, true, vec![nals[0].clone()]),
            (40, false, vec![nals[1].clone()]),
            (80, false, vec![nals[2].clone()]),
        ]
    );
}

#[test]
fn the_fuzz_body_runs_on_its_h265_seed() {
    crate::fuzzing::fuzz_rtp_flv(include_bytes!(
        "../../../fuzz/corpus/seed-rtp_flv/h265_ap_fu_loss"
    ));
}
