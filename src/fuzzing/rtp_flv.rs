//! The `rtp_flv` fuzz target's body: packets into an RTMP player's RTP → FLV depacketizer, an
//! RTMP push's VP9 RTP → Enhanced RTMP video, and its Opus RTP → Enhanced RTMP audio.

/// Packets framed `[len: u16][packet]…` into [`RtpToFlv`](crate::rtmp::rtp_flv::RtpToFlv) for
/// payload type 102 (see `fuzz/README.md`, `rtp_flv`): whatever comes out parses as the FLV
/// video tags it claims to be, frames as 4-byte length-prefixed NAL units that fill the tag
/// exactly, within the access unit bound, on a clock that never goes back. The same packets go
/// to [`RtpVp9ToFlv`](crate::rtmp::rtp_vp9_flv::RtpVp9ToFlv) for payload type 98: its sequence
/// starts parse as `vp09` configuration records, its frames as `vp09` frames tagged as they
/// say, within the bound, on a clock that never goes back. A length with its
/// top bit set sends the packet to [`RtpOpusToFlv`](crate::rtmp::rtp_opus_flv::RtpOpusToFlv)
/// for payload type 111 instead, whose audio tags carry the packet's payload after the
/// ExHeader and FourCC, on a clock that never goes back either.
pub fn fuzz_rtp_flv(data: &[u8]) {
    use crate::rtmp::flv::{parse_video, VideoTag};
    use crate::rtmp::rtp_flv::{FlvVideo, RtpToFlv, MAX_ACCESS_UNIT};

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
        } => {
            assert!(
                timestamp_ms >= last_ms,
                "the player's clock never goes back"
            );
            last_ms = timestamp_ms;
            assert!(body.len() <= MAX_ACCESS_UNIT + 5);
            let Ok(VideoTag::AvcFrame {
                keyframe: tagged,
                composition_ms: 0,
                nalus,
            }) = parse_video(&body)
            else {
                panic!("a frame that does not parse: {body:?}")
            };
            assert_eq!(tagged, keyframe);
            let mut rest = nalus;
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                assert!(len > 0 && 4 + len <= rest.len(), "NAL units fill the tag");
                rest = &rest[4 + len..];
            }
        }
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
            vp9.push(packet, &mut check_vp9);
        }
        rest = &tail[len..];
    }
}
