//! [`RtpToRtmp`]: a stream's plain RTP (H.264, H.265, VP9 or AV1 video, Opus audio) as the
//! RTMP messages of one publish, sans-IO — what an origin's RTMP push sends an edge. Packets in
//! as a tap hands them over, with the time they came on the push's clock; `onMetaData`, video
//! and audio tag bodies out, in order.
//!
//! Video goes through [`RtpToFlv`] (H.264, or H.265 as Enhanced RTMP `hvc1`), [`RtpVp9ToFlv`]
//! (VP9, as `vp09`) or [`RtpAv1ToFlv`] (AV1, as `av01`), audio through [`RtpOpusToFlv`]. Their
//! clocks are put on one timeline by arrival: the newest video frame of the first batch, and
//! the first audio packet, are placed at the time they came; the rest follow their RTP time. A
//! push that starts on the keyframe cache replays older frames at once, and they land before
//! "now", where they belong against the live audio. Times start at [`CLOCK_BASE_MS`], so they
//! never go below zero.

use super::rtp_av1_flv::RtpAv1ToFlv;
use super::rtp_flv::{FlvVideo, NalCodec, RtpToFlv};
use super::rtp_opus_flv::{FlvAudio, RtpOpusToFlv};
use super::rtp_vp9_flv::RtpVp9ToFlv;

/// The video codecs an RTMP push carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarriedVideo {
    /// Classic FLV AVC.
    H264,
    /// Enhanced RTMP `hvc1`.
    H265,
    /// Enhanced RTMP `vp09`.
    Vp9,
    /// Enhanced RTMP `av01`.
    Av1,
}

/// The stream's video depacketizer, by codec.
enum VideoToFlv {
    H264(RtpToFlv),
    H265(RtpToFlv),
    Vp9(RtpVp9ToFlv),
    Av1(RtpAv1ToFlv),
}

impl VideoToFlv {
    fn push(&mut self, packet: &[u8], out: impl FnMut(FlvVideo)) {
        match self {
            VideoToFlv::H264(flv) | VideoToFlv::H265(flv) => flv.push(packet, out),
            VideoToFlv::Vp9(flv) => flv.push(packet, out),
            VideoToFlv::Av1(flv) => flv.push(packet, out),
        }
    }

    fn resync(&mut self) {
        match self {
            VideoToFlv::H264(flv) | VideoToFlv::H265(flv) => flv.resync(),
            VideoToFlv::Vp9(flv) => flv.resync(),
            VideoToFlv::Av1(flv) => flv.resync(),
        }
    }

    fn waits_for_keyframe(&self) -> bool {
        match self {
            VideoToFlv::H264(flv) | VideoToFlv::H265(flv) => flv.waits_for_keyframe(),
            VideoToFlv::Vp9(flv) => flv.waits_for_keyframe(),
            VideoToFlv::Av1(flv) => flv.waits_for_keyframe(),
        }
    }
}

/// Where the push's clock starts, in milliseconds: frames replayed from the keyframe cache at
/// the start are placed before it (a group of pictures is well under 10 s).
pub const CLOCK_BASE_MS: u32 = 10_000;

/// One RTMP message for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtmpMessage {
    /// `onMetaData`: the picture size (when the sequence header says it).
    Metadata { size: Option<(u16, u16)> },
    /// A video tag body.
    Video { timestamp_ms: u32, body: Vec<u8> },
    /// An audio tag body.
    Audio { timestamp_ms: u32, body: Vec<u8> },
}

/// One push's media (see the module docs).
pub struct RtpToRtmp {
    video: VideoToFlv,
    audio: Option<RtpOpusToFlv>,
    /// Where the video's first frame sits on the push's clock.
    video_start_ms: Option<u32>,
}

impl RtpToRtmp {
    /// `video` of payload type `video_pt`, and Opus of `audio`'s payload type and channels.
    pub fn new(video: CarriedVideo, video_pt: u8, audio: Option<(u8, u8)>) -> RtpToRtmp {
        let video = match video {
            CarriedVideo::H264 => VideoToFlv::H264(RtpToFlv::new(video_pt)),
            CarriedVideo::H265 => VideoToFlv::H265(RtpToFlv::for_codec(NalCodec::H265, video_pt)),
            CarriedVideo::Vp9 => VideoToFlv::Vp9(RtpVp9ToFlv::new(video_pt)),
            CarriedVideo::Av1 => VideoToFlv::Av1(RtpAv1ToFlv::new(video_pt)),
        };
        RtpToRtmp {
            video,
            audio: audio.map(|(pt, channels)| RtpOpusToFlv::new(pt, channels)),
            video_start_ms: None,
        }
    }

    /// Whether the video waits for a keyframe (the start, or a loss).
    pub fn waits_for_keyframe(&self) -> bool {
        self.video.waits_for_keyframe()
    }

    /// Why the stream's video cannot go over RTMP after all: a layered (SVC) VP9 or AV1
    /// stream shows its layers only in its packets.
    pub fn not_carried(&self) -> Option<&'static str> {
        match &self.video {
            VideoToFlv::Vp9(flv) if flv.layered() => Some(
                "its VP9 is layered (SVC): RTMP carries one picture per frame, so the edge's \
                 players would get the base spatial layer alone",
            ),
            VideoToFlv::Av1(flv) if flv.layered() => Some(
                "its AV1 has spatial layers (SVC): RTMP carries one picture per temporal unit, \
                 so the edge's players would get the base spatial layer alone",
            ),
            _ => None,
        }
    }

    /// `onMetaData`'s `videocodecid`: FLV's AVC, or the FourCC.
    pub fn codec_id(&self) -> u32 {
        match self.video {
            VideoToFlv::H264(_) => u32::from(super::flv::VIDEO_CODEC_AVC),
            VideoToFlv::H265(_) => super::flv::fourcc_codec_id(super::flv::FOURCC_HEVC),
            VideoToFlv::Vp9(_) => super::flv::fourcc_codec_id(super::flv::FOURCC_VP9),
            VideoToFlv::Av1(_) => super::flv::fourcc_codec_id(super::flv::FOURCC_AV1),
        }
    }

    /// Packets were dropped before they came here: frames wait for the next keyframe.
    pub fn resync(&mut self) {
        self.video.resync();
    }

    /// A batch of plain RTP packets (`true` for audio) that came at `now_ms` on the push's
    /// clock (from [`CLOCK_BASE_MS`]); `out` gets the messages they make.
    pub fn push<'a>(
        &mut self,
        packets: impl IntoIterator<Item = (bool, &'a [u8])>,
        now_ms: u32,
        out: &mut Vec<RtmpMessage>,
    ) {
        let mut video = Vec::new();
        let mut audio = Vec::new();
        for (is_audio, packet) in packets {
            if is_audio {
                if let Some(flv) = self.audio.as_mut() {
                    flv.push(packet, now_ms, |a| audio.push(a));
                }
            } else {
                self.video.push(packet, |v| video.push(v));
            }
        }
        let newest = video.last().map_or(0, |item| match item {
            FlvVideo::Config { timestamp_ms, .. } | FlvVideo::Frame { timestamp_ms, .. } => {
                *timestamp_ms
            }
        });
        for item in video {
            let start = *self
                .video_start_ms
                .get_or_insert(now_ms.saturating_sub(newest));
            match item {
                FlvVideo::Config {
                    timestamp_ms,
                    body,
                    size,
                } => {
                    out.push(RtmpMessage::Metadata { size });
                    out.push(RtmpMessage::Video {
                        timestamp_ms: start.wrapping_add(timestamp_ms),
                        body,
                    });
                }
                FlvVideo::Frame {
                    timestamp_ms, body, ..
                } => out.push(RtmpMessage::Video {
                    timestamp_ms: start.wrapping_add(timestamp_ms),
                    body,
                }),
            }
        }
        for item in audio {
            let (FlvAudio::Config { timestamp_ms, body } | FlvAudio::Frame { timestamp_ms, body }) =
                item;
            out.push(RtmpMessage::Audio { timestamp_ms, body });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp::{Pt, RtpHeaderBuilder, Ssrc};

    fn rtp(pt: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let len = RtpHeaderBuilder::new(Pt::new(pt), seq, ts, Ssrc(u32::from(pt)))
            .write_to(&mut buf)
            .unwrap();
        rtp::set_marker(&mut buf[..len], marker).unwrap();
        buf[len..len + payload.len()].copy_from_slice(payload);
        buf[..len + payload.len()].to_vec()
    }

    /// A keyframe (SPS, PPS, IDR as a STAP-A and a single NAL unit) at 90 kHz time `ts`.
    fn keyframe(seq: u16, ts: u32) -> Vec<Vec<u8>> {
        let stap = [24, 0, 4, 0x67, 0x42, 0xC0, 0x1E, 0, 2, 0x68, 0xCE];
        vec![
            rtp(102, seq, ts, false, &stap),
            rtp(102, seq + 1, ts, true, &[0x65, 1, 2]),
        ]
    }

    fn delta(seq: u16, ts: u32) -> Vec<u8> {
        rtp(102, seq, ts, true, &[0x41, 9])
    }

    fn times(out: &[RtmpMessage]) -> (Vec<u32>, Vec<u32>) {
        let video = out
            .iter()
            .filter_map(|m| match m {
                RtmpMessage::Video { timestamp_ms, .. } => Some(*timestamp_ms),
                _ => None,
            })
            .collect();
        let audio = out
            .iter()
            .filter_map(|m| match m {
                RtmpMessage::Audio { timestamp_ms, .. } => Some(*timestamp_ms),
                _ => None,
            })
            .collect();
        (video, audio)
    }

    #[test]
    fn a_replayed_group_of_pictures_lands_before_the_live_audio() {
        let mut rtmp = RtpToRtmp::new(CarriedVideo::H264, 102, Some((111, 2)));
        // The cache replays a keyframe and a second of frames at once, with live audio.
        let mut batch: Vec<(bool, Vec<u8>)> =
            keyframe(1, 0).into_iter().map(|p| (false, p)).collect();
        for i in 1..=30u16 {
            batch.push((false, delta(2 + i, u32::from(i) * 3000)));
        }
        batch.push((true, rtp(111, 7, 48_000, false, &[0xFC])));
        let now = CLOCK_BASE_MS + 40;
        let mut out = Vec::new();
        rtmp.push(batch.iter().map(|(a, p)| (*a, p.as_slice())), now, &mut out);
        assert!(matches!(out[0], RtmpMessage::Metadata { .. }));
        let (video, audio) = times(&out);
        // Sequence header and keyframe a second before the newest frame, which is now.
        assert_eq!(video.first(), Some(&(now - 1000)));
        assert_eq!(video.last(), Some(&now));
        // Audio: its sequence start and first frame now.
        assert_eq!(audio, vec![now, now]);
        // The next frame and packet follow their RTP time, whenever they come.
        out.clear();
        rtmp.push(
            [
                (false, delta(33, 31 * 3000).as_slice()),
                (true, rtp(111, 8, 48_000 + 960, false, &[0xFC]).as_slice()),
            ],
            now + 500,
            &mut out,
        );
        assert_eq!(times(&out), (vec![now + 33], vec![now + 20]));
    }

    #[test]
    fn video_without_audio_and_garbage_make_nothing_unexpected() {
        let mut rtmp = RtpToRtmp::new(CarriedVideo::H264, 102, None);
        let mut out = Vec::new();
        rtmp.push(
            [(true, &[0x80u8, 111, 0, 1][..]), (false, &[1, 2, 3][..])],
            CLOCK_BASE_MS,
            &mut out,
        );
        assert!(out.is_empty());
        assert!(rtmp.waits_for_keyframe());
        let frame = keyframe(1, 0);
        rtmp.push(
            frame.iter().map(|p| (false, p.as_slice())),
            CLOCK_BASE_MS,
            &mut out,
        );
        assert!(!rtmp.waits_for_keyframe());
        rtmp.resync();
        assert!(rtmp.waits_for_keyframe());
    }

    #[test]
    fn av1_goes_as_av01_until_it_shows_spatial_layers() {
        use crate::rtmp::flv::{fourcc_codec_id, FOURCC_AV1};
        use crate::rtmp::rtp_av1_flv::tests::{elements, testsrc, Packetizer};

        let mut rtmp = RtpToRtmp::new(CarriedVideo::Av1, 45, None);
        assert_eq!(rtmp.codec_id(), fourcc_codec_id(FOURCC_AV1));
        let units = testsrc();
        let mut packetizer = Packetizer { seq: 1, mtu: 1200 };
        let key = packetizer.unit(&elements(&units[0], false), 0);
        let mut out = Vec::new();
        rtmp.push(
            key.iter().map(|p| (false, p.as_slice())),
            CLOCK_BASE_MS,
            &mut out,
        );
        assert_eq!(
            out[0],
            RtmpMessage::Metadata {
                size: Some((320, 240))
            }
        );
        let bodies: Vec<&[u8]> = out[1..]
            .iter()
            .map(|m| match m {
                RtmpMessage::Video { body, .. } => &body[..5],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(bodies, [&b"\x90av01"[..], &b"\x91av01"[..]]);
        assert_eq!(rtmp.not_carried(), None);
        // A frame of spatial layer 1 next to the base one.
        let mut layered = elements(&units[1], false);
        layered.push(vec![0x34, 1 << 3, 0x10]);
        let packets = packetizer.unit(&layered, 3000);
        rtmp.push(
            packets.iter().map(|p| (false, p.as_slice())),
            CLOCK_BASE_MS + 33,
            &mut out,
        );
        assert!(rtmp.not_carried().is_some_and(|why| why.contains("AV1")));
    }

    #[test]
    fn h265_goes_as_hvc1_with_its_size_in_the_metadata() {
        use crate::rtmp::flv::tests::{X265_PPS, X265_SPS, X265_VPS};
        use crate::rtmp::flv::{fourcc_codec_id, FOURCC_HEVC};

        let mut rtmp = RtpToRtmp::new(CarriedVideo::H265, 49, None);
        assert_eq!(rtmp.codec_id(), fourcc_codec_id(FOURCC_HEVC));
        let mut ap = vec![48 << 1, 1];
        for nal in [&X265_VPS[..], &X265_SPS, &X265_PPS] {
            ap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            ap.extend_from_slice(nal);
        }
        let key = [
            rtp(49, 1, 0, false, &ap),
            rtp(49, 2, 0, true, &[0x2A, 0x01, 0xAF]),
            rtp(49, 3, 3000, true, &[0x02, 0x01, 0xD0]),
        ];
        let mut out = Vec::new();
        rtmp.push(
            key.iter().map(|p| (false, p.as_slice())),
            CLOCK_BASE_MS,
            &mut out,
        );
        assert_eq!(
            out[0],
            RtmpMessage::Metadata {
                size: Some((320, 240))
            }
        );
        let bodies: Vec<&[u8]> = out[1..]
            .iter()
            .map(|m| match m {
                RtmpMessage::Video { body, .. } => &body[..5],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(bodies, [&b"\x90hvc1"[..], b"\x93hvc1", b"\xa3hvc1"]);
        assert_eq!(rtmp.not_carried(), None);
        assert!(!rtmp.waits_for_keyframe());
    }
}
