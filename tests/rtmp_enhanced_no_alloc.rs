//! Proves that an Enhanced RTMP stream's media allocates nothing per message once started:
//! `avc1` frames (CodedFrames and CodedFramesX) through the FLV parser and the H.264
//! packetizer, Opus packets forwarded as RTP, and `av01` temporal units through the AV1
//! packetizer (fragmented, aggregated, a keyframe given the av1C's sequence header), counted by
//! the node's own allocator wrapper.

use std::alloc::System;

use rtcdn::alloc_count::{this_thread, CountingAllocator};
use rtcdn::rtmp::audio::RtmpAudio;
use rtcdn::rtmp::flv::{
    AUDIO_PACKET_CODED_FRAMES, AUDIO_PACKET_SEQUENCE_START, FOURCC_AV1, FOURCC_AVC, FOURCC_OPUS,
    OPUS_HEAD_MAGIC, SOUND_FORMAT_EX_HEADER, VIDEO_EX_HEADER, VIDEO_FRAME_INTER, VIDEO_FRAME_KEY,
    VIDEO_PACKET_CODED_FRAMES, VIDEO_PACKET_CODED_FRAMES_X, VIDEO_PACKET_SEQUENCE_START,
};
use rtcdn::rtmp::publisher::RtmpPublisher;

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

fn ex_video(frame_type: u8, packet_type: u8, body: &[u8]) -> Vec<u8> {
    let first = VIDEO_EX_HEADER | frame_type << 4 | packet_type;
    [&[first][..], &FOURCC_AVC, body].concat()
}

fn ex_opus(packet_type: u8, body: &[u8]) -> Vec<u8> {
    [
        &[SOUND_FORMAT_EX_HEADER << 4 | packet_type][..],
        &FOURCC_OPUS,
        body,
    ]
    .concat()
}

#[test]
fn enhanced_rtmp_avc1_frames_and_opus_packets_allocate_nothing_once_started() {
    let (sps, pps) = ([0x67, 0x42, 0xC0, 0x1E, 0xAA], [0x68, 0xCE, 0x3C, 0x80]);
    let mut record = vec![1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 5];
    record.extend_from_slice(&sps);
    record.extend_from_slice(&[1, 0, 4]);
    record.extend_from_slice(&pps);
    let idr: Vec<u8> = [&[0, 0, 0][..], &[0, 0, 0x0B, 0xB8, 0x65], &[0x88; 2999]].concat();
    let key = ex_video(VIDEO_FRAME_KEY, VIDEO_PACKET_CODED_FRAMES, &idr);
    let delta = ex_video(
        VIDEO_FRAME_INTER,
        VIDEO_PACKET_CODED_FRAMES_X,
        &[0, 0, 0, 3, 0x41, 0x9A, 0x02],
    );
    let mut head = OPUS_HEAD_MAGIC.to_vec();
    head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
    let opus = ex_opus(AUDIO_PACKET_CODED_FRAMES, &[0xFC; 160]);

    let mut publisher = RtmpPublisher::new(1, 0, 0);
    let mut audio = RtmpAudio::new(2, 0, 0);
    audio.set_registered(true);
    let start = ex_video(VIDEO_FRAME_KEY, VIDEO_PACKET_SEQUENCE_START, &record);
    publisher.handle_video(0, &start, |_, _| {}).unwrap();
    audio
        .handle(0, &ex_opus(AUDIO_PACKET_SEQUENCE_START, &head), |_| {})
        .unwrap();
    let mut bytes = 0usize;
    let mut run = |from: u32, bytes: &mut usize| {
        for i in from..from + 100 {
            let frame = if i % 30 == 0 { &key } else { &delta };
            publisher
                .handle_video(i * 33, frame, |p, _| *bytes += p.len())
                .unwrap();
            audio.handle(i * 20, &opus, |p| *bytes += p.len()).unwrap();
        }
    };
    run(0, &mut bytes);
    let before = this_thread().expect("the counting allocator is installed");
    run(100, &mut bytes);
    let made = this_thread().unwrap() - before;
    assert!(bytes > 100 * 172, "packets went out: {bytes} bytes");
    assert_eq!(made, 0, "allocations for 200 messages");
}

/// A low overhead OBU of `obu_type` with its size field.
fn obu(obu_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut size = [0; 8];
    let len = rtp::av1_obu::write_leb128(payload.len(), &mut size);
    [&[obu_type << 3 | 0x02][..], &size[..len], payload].concat()
}

#[test]
fn enhanced_rtmp_av01_temporal_units_allocate_nothing_once_started() {
    let av01 = |frame_type: u8, packet_type: u8, body: &[u8]| {
        let first = VIDEO_EX_HEADER | frame_type << 4 | packet_type;
        [&[first][..], &FOURCC_AV1, body].concat()
    };
    let sequence_header = obu(1, &[0, 0, 0, 4, 0x3C, 0xFF, 0xBC, 0xDA, 0xF9, 0, 0x40]);
    let td = [0x12, 0x00];
    let av1c = [&[0x81, 0x00, 0x0C, 0x00][..], &sequence_header].concat();
    let start = av01(VIDEO_FRAME_KEY, VIDEO_PACKET_SEQUENCE_START, &av1c);
    // A keyframe with its sequence header and a frame of three packets; one without (the
    // av1C's goes first); an inter frame of small OBUs sharing a packet.
    let big = obu(6, &[0x5A; 3000]);
    let key = av01(
        VIDEO_FRAME_KEY,
        VIDEO_PACKET_CODED_FRAMES,
        &[&td[..], &sequence_header, &big].concat(),
    );
    let bare_key = av01(VIDEO_FRAME_KEY, VIDEO_PACKET_CODED_FRAMES, &big);
    let small: Vec<u8> = (0..5).flat_map(|i| obu(5, &[i; 20])).collect();
    let inter = av01(
        VIDEO_FRAME_INTER,
        VIDEO_PACKET_CODED_FRAMES_X,
        &[&td[..], &small, &obu(6, &[0x11; 300])].concat(),
    );

    let mut publisher = RtmpPublisher::new(1, 0, 0);
    publisher.handle_video(0, &start, |_, _| {}).unwrap();
    let mut packets = 0usize;
    let mut run = |from: u32, packets: &mut usize| {
        for i in from..from + 100 {
            let frame = match i % 30 {
                0 => &key,
                15 => &bare_key,
                _ => &inter,
            };
            publisher
                .handle_video(i * 33, frame, |_, _| *packets += 1)
                .unwrap();
        }
    };
    run(0, &mut packets);
    let before = this_thread().expect("the counting allocator is installed");
    run(100, &mut packets);
    let made = this_thread().unwrap() - before;
    assert!(packets > 200, "packets went out: {packets}");
    assert_eq!(made, 0, "allocations for 100 temporal units");
}
