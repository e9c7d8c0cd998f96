//! The `rtp_flv` fuzz target's body: packets into an RTMP player's RTP → FLV depacketizer, an
//! RTMP push's H.265, VP9 and AV1 RTP → Enhanced RTMP video, and its Opus RTP → Enhanced RTMP
//! audio.

/// Packets framed `[len: u16][packet]…` into [`RtpToFlv`](crate::rtmp::rtp_flv::RtpToFlv) for
/// payload type 102 (see `fuzz/README.md`, `rtp_flv`): whatever comes out parses as the FLV video
/// tags it claims to be, frames as 4-byte length-prefixed NAL units that fill the tag exactly,
/// none of RFC 6184's packet types (0, 24 to 31), within the access unit bound, on a clock that never goes back. The same packets go to an H.265
/// [`RtpToFlv`](crate::rtmp::rtp_flv::RtpToFlv) for payload type 49 (the packet's payload type
/// picks the codec): its sequence starts parse as `hvc1` configuration records with 4-byte lengths
/// whose SPS reads, its frames as `hvc1` CodedFramesX of NAL units of two bytes or more, none of
/// RFC 7798's packet types, that fill the tag exactly, within the bound, on a clock that never goes
/// back. And to [`RtpVp9ToFlv`](crate::rtmp::rtp_vp9_flv::RtpVp9ToFlv) for payload type 98: its
/// sequence starts parse as `vp09` configuration records, its frames as `vp09` frames tagged as
/// they say, within the bound, on a clock that never goes back. And to
/// [`RtpAv1ToFlv`](crate::rtmp::rtp_av1_flv::RtpAv1ToFlv) for payload type 45: its sequence starts
/// parse as `av01` configuration records whose config OBUs are one sequence header with its size,
/// its temporal units as `av01` frames of OBUs that each have a size field and fill the tag
/// exactly, within the bound, on a clock that never goes back. A length with its top bit set sends
/// the packet to [`RtpOpusToFlv`](crate::rtmp::rtp_opus_flv::RtpOpusToFlv) for payload type 111
/// instead, whose audio tags carry the packet's payload after the ExHeader and FourCC, on a clock
/// that never goes back either.
pub fn fuzz_rtp_flv(data: &[u8]) {
    use crate::rtmp::flv::{parse_video, VideoTag};
    use crate::rtmp::rtp_flv::{FlvVideo, NalCodec, RtpToFlv, MAX_ACCESS_UNIT};

    let mut flv = RtpToFlv::new(102);
    let mut last_ms = 0u32;
    let mut check = |video: FlvVideo| match video {
        FlvVideo::Config { body, .. } => {
            assert!(matches!(parse_video(&body), Ok(VideoTag::AvcConfig(_))));
        }
        FlvVideo::Frame {
            timestamp_ms,
            keyframe,
            body,
        } => check_nal_frame(NalCodec::H264, &mut last_ms, timestamp_ms, keyframe, &body),
    };
    let mut h265 = RtpToFlv::for_codec(NalCodec::H265, 49);
    let mut last_h265_ms = 0u32;
    let mut check_h265 = |video: FlvVideo| match video {
        FlvVideo::Config { body, size, .. } => {
            let Ok(VideoTag::HevcConfig(config)) = parse_video(&body) else {
                panic!("an hvc1 sequence start that does not parse: {body:?}")
            };
            assert_eq!(config.length_size, 4);
            let sps = rtp::h265::H265Sps::parse(config.sps).expect("the SPS reads");
            assert_eq!(config.profile_tier_level, sps.profile_tier_level);
            assert!(size.is_some_and(|(w, h)| w > 0 && h > 0));
        }
        FlvVideo::Frame {
            timestamp_ms,
            keyframe,
            body,
        } => check_nal_frame(
            NalCodec::H265,
            &mut last_h265_ms,
            timestamp_ms,
            keyframe,
            &body,
        ),
    };
    let mut vp9 = crate::rtmp::rtp_vp9_flv::RtpVp9ToFlv::new(98);
    let mut last_vp9_ms = 0u32;
    let mut check_vp9 = |video: FlvVideo| match video {
        FlvVideo::Config { body, size, .. } => {
            assert!(matches!(parse_video(&body), Ok(VideoTag::Vp9Config(_))));
            // No size when a side is 65,536, more than the metadata's 16 bits.
            assert!(size.is_none_or(|(w, h)| w > 0 && h > 0));
        }
        FlvVideo::Frame {
            timestamp_ms,
            keyframe,
            body,
        } => {
            assert!(timestamp_ms >= last_vp9_ms, "the VP9 clock never goes back");
            last_vp9_ms = timestamp_ms;
            assert!(body.len() <= MAX_ACCESS_UNIT + 5);
            let Ok(VideoTag::Vp9Frame {
                keyframe: tagged, ..
            }) = parse_video(&body)
            else {
                panic!("a VP9 frame that does not parse: {body:?}")
            };
            assert_eq!(tagged, keyframe);
        }
    };
    let mut av1 = crate::rtmp::rtp_av1_flv::RtpAv1ToFlv::new(45);
    let mut last_av1_ms = 0u32;
    let mut check_av1 = |video: FlvVideo| match video {
        FlvVideo::Config { body, size, .. } => {
            let Ok(VideoTag::Av1Config(config)) = parse_video(&body) else {
                panic!("an AV1 sequence start that does not parse: {body:?}")
            };
            let obus = av1_obus(config.config_obus);
            assert!(
                matches!(obus[..], [(1, _)]),
                "one sequence header: {obus:?}"
            );
            assert!(size.is_none_or(|(w, h)| w > 0 && h > 0));
        }
        FlvVideo::Frame {
            timestamp_ms,
            keyframe,
            body,
        } => {
            assert!(timestamp_ms >= last_av1_ms, "the AV1 clock never goes back");
            last_av1_ms = timestamp_ms;
            assert!(body.len() <= MAX_ACCESS_UNIT + 5);
            let Ok(VideoTag::Av1Frame {
                keyframe: tagged,
                obus,
            }) = parse_video(&body)
            else {
                panic!("an AV1 temporal unit that does not parse: {body:?}")
            };
            assert_eq!(tagged, keyframe);
            let obus = av1_obus(obus);
            // No temporal delimiters, tile lists or padding; a keyframe has its sequence header.
            assert!(obus.iter().all(|(kind, _)| ![2, 8, 15].contains(kind)));
            assert!(!keyframe || obus.iter().any(|(kind, _)| *kind == 1));
        }
    };
    let mut opus = crate::rtmp::rtp_opus_flv::RtpOpusToFlv::new(111, 2);
    let mut last_audio_ms = 0u32;
    let mut check_audio = |audio: crate::rtmp::rtp_opus_flv::FlvAudio, payload: &[u8]| {
        use crate::rtmp::rtp_opus_flv::FlvAudio;
        match audio {
            FlvAudio::Config { body, .. } => assert_eq!(&body[..13], b"\x90OpusOpusHead"),
            FlvAudio::Frame { timestamp_ms, body } => {
                assert!(
                    timestamp_ms >= last_audio_ms,
                    "the audio clock never goes back"
                );
                last_audio_ms = timestamp_ms;
                assert_eq!(&body[..5], b"\x91Opus");
                assert_eq!(&body[5..], payload);
            }
        }
    };
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi & 0x7F, *lo])).min(tail.len());
        let packet = &tail[..len];
        if *hi & 0x80 != 0 {
            let payload = rtp::RtpHeader::parse(packet).map_or(&[][..], |h| h.payload());
            opus.push(packet, 0, |audio| check_audio(audio, payload));
        } else {
            flv.push(packet, &mut check);
            h265.push(packet, &mut check_h265);
            vp9.push(packet, &mut check_vp9);
            av1.push(packet, &mut check_av1);
        }
        rest = &tail[len..];
    }
}

/// The OBUs of a temporal unit in the low overhead format, each (type, payload length):
/// panics unless every one has its size field and together they fill `unit` exactly.
fn av1_obus(mut unit: &[u8]) -> Vec<(u8, usize)> {
    let mut obus = Vec::new();
    while let Some(&header) = unit.first() {
        assert!(
            header & 0x82 == 0x02,
            "forbidden bit clear, size field set: {header:#x}"
        );
        let mut pos = if header & 0x04 != 0 { 2 } else { 1 };
        let mut len = 0usize;
        for i in 0..8 {
            let byte = unit[pos];
            pos += 1;
            len |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                break;
            }
            assert!(i < 7, "a size of at most 8 bytes");
        }
        assert!(pos + len <= unit.len(), "the OBUs fill the tag");
        obus.push(((header >> 3) & 0x0F, len));
        unit = &unit[pos + len..];
    }
    obus
}

/// An H.264 or H.265 frame from the depacketizer: never before the last one, bounded, tagged as
/// classic AVC or `hvc1` CodedFramesX with no composition time and the keyframe flag it was given,
/// its NAL units (each after a 4-byte length) filling it, none shorter than its header or of a
/// type the RTP payload format uses for its packet forms.
fn check_nal_frame(
    codec: crate::rtmp::rtp_flv::NalCodec,
    last_ms: &mut u32,
    timestamp_ms: u32,
    keyframe: bool,
    body: &[u8],
) {
    use crate::rtmp::flv::{parse_video, VideoTag, VIDEO_PACKET_CODED_FRAMES_X};
    use crate::rtmp::rtp_flv::{NalCodec, MAX_ACCESS_UNIT};

    assert!(timestamp_ms >= *last_ms, "the clock never goes back");
    *last_ms = timestamp_ms;
    assert!(body.len() <= MAX_ACCESS_UNIT + 5);
    let (tagged, nalus, header_len) = match (codec, parse_video(body)) {
        (
            NalCodec::H264,
            Ok(VideoTag::AvcFrame {
                keyframe,
                composition_ms: 0,
                nalus,
            }),
        ) => (keyframe, nalus, 1),
        (
            NalCodec::H265,
            Ok(VideoTag::HevcFrame {
                keyframe,
                composition_ms: 0,
                nalus,
            }),
        ) => {
            assert_eq!(body[0] & 0x0F, VIDEO_PACKET_CODED_FRAMES_X);
            (keyframe, nalus, 2)
        }
        _ => panic!("a {codec:?} frame that does not parse: {body:?}"),
    };
    assert_eq!(tagged, keyframe);
    let mut rest = nalus;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(
            len >= header_len && 4 + len <= rest.len(),
            "NAL units fill the tag"
        );
        let (kind, packet_form) = match codec {
            NalCodec::H264 => (rest[4] & 0x1F, matches!(rest[4] & 0x1F, 0 | 24..=31)),
            NalCodec::H265 => {
                let kind = rtp::h265::nal_type(rest[4]);
                (kind, kind >= rtp::h265::NAL_AP)
            }
        };
        assert!(!packet_form, "no RTP packet form: {kind}");
        rest = &rest[4 + len..];
    }
}
