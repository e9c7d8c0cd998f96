//! [`RtmpPublisher`]: one published RTMP stream's video, sans-IO: FLV video messages in, RTP
//! packets out (through a callback), with what the node logs about the encoder (its keyframe
//! interval, B-frames). H.264 (classic or `avc1`) and H.265 (`hvc1`) go out by
//! [`NalPacketizer`], VP9 (`vp09`,
//! an rtcdn origin's push or an Enhanced RTMP encoder) by [`Vp9Packetizer`], AV1 (`av01`) by
//! [`Av1Packetizer`]; the first sequence start says which, and the stream is registered with
//! that codec.

use super::av1_rtp::{Av1Error, Av1Packetizer};
use super::flv::{parse_video, FlvError, HevcSdpProfile, VideoTag};
use super::nal_rtp::{FrameInfo, NalCodec, NalPacketizer, PacketizeError, RtpClock};
use super::vp9_rtp::Vp9Packetizer;

/// The payload type of the H.264 track an RTMP stream is registered with.
pub const H264_PT: u8 = 102;
/// The payload type of the H.265 track an RTMP stream is registered with.
pub const H265_PT: u8 = 49;
/// The payload type of the VP9 track an RTMP stream is registered with (Chrome's for VP9
/// profile 0).
pub const VP9_PT: u8 = 98;
/// The payload type of the AV1 track an RTMP stream is registered with (Chrome's for AV1).
pub const AV1_PT: u8 = 45;

/// The video codec a sequence start configured, as the stream is registered with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtmpVideoCodec {
    /// H.264 of this `profile-level-id`.
    H264 { profile_level_id: String },
    /// H.265 of this profile, tier and level (the hvcC's).
    H265(HevcSdpProfile),
    /// VP9 of this `profile-id`.
    Vp9 { profile: u8 },
    /// AV1 of this `profile`, `level-idx` and `tier` (the av1C's `seq_profile`,
    /// `seq_level_idx_0` and `seq_tier_0`).
    Av1 {
        profile: u8,
        level_idx: u8,
        tier: u8,
    },
}

impl RtmpVideoCodec {
    /// The payload type, SDP encoding name and fmtp of the track the stream is registered
    /// with: as browsers offer each codec (RFC 6184 §8.1, RFC 7798 §7.1, RFC 9628 §6, "RTP
    /// Payload Format For AV1" §7.2), so players' offers match.
    pub fn sdp(&self) -> (u8, &'static str, String) {
        match self {
            RtmpVideoCodec::H264 { profile_level_id } => (
                H264_PT,
                "H264",
                format!(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
                ),
            ),
            RtmpVideoCodec::H265(HevcSdpProfile {
                profile_id,
                tier_flag,
                level_id,
            }) => (
                H265_PT,
                "H265",
                format!(
                    "level-id={level_id};profile-id={profile_id};tier-flag={tier_flag};tx-mode=SRST"
                ),
            ),
            RtmpVideoCodec::Vp9 { profile } => (VP9_PT, "VP9", format!("profile-id={profile}")),
            RtmpVideoCodec::Av1 {
                profile,
                level_idx,
                tier,
            } => (
                AV1_PT,
                "AV1",
                format!("level-idx={level_idx};profile={profile};tier={tier}"),
            ),
        }
    }

    /// The codec, as the RTP layer reads its payloads.
    pub fn video_codec(&self) -> rtp::VideoCodec {
        match self {
            RtmpVideoCodec::H264 { .. } => rtp::VideoCodec::H264,
            RtmpVideoCodec::H265(_) => rtp::VideoCodec::H265,
            RtmpVideoCodec::Vp9 { .. } => rtp::VideoCodec::Vp9,
            RtmpVideoCodec::Av1 { .. } => rtp::VideoCodec::Av1,
        }
    }

    /// The codec's name for people ("H.264").
    pub fn display_name(&self) -> &'static str {
        match self {
            RtmpVideoCodec::H264 { .. } => "H.264",
            RtmpVideoCodec::H265(_) => "H.265",
            RtmpVideoCodec::Vp9 { .. } => "VP9",
            RtmpVideoCodec::Av1 { .. } => "AV1",
        }
    }
}

/// What a video message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoOutcome {
    /// The first sequence header: the stream can be registered with this codec.
    Configured(RtmpVideoCodec),
    /// A later sequence header (the encoder restarted or changed resolution).
    Reconfigured,
    /// A frame went out as RTP.
    Frame(FrameInfo),
    /// A frame was skipped: a delta frame after a dropped one, before the next keyframe.
    Skipped,
    /// Nothing to send (end of sequence, info frame).
    Nothing,
}

/// Why a video message was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error(transparent)]
    Packetize(#[from] PacketizeError),
    /// Malformed AV1 OBUs: a temporal unit's (the frame is skipped, and the stream waits for
    /// its next keyframe) or a sequence start's.
    #[error(transparent)]
    Av1(#[from] Av1Error),
    /// A sequence start of another codec than the first one.
    #[error("the video codec changed mid-stream (the stream is registered with the first one)")]
    CodecChanged,
    /// An H.265, VP9 or AV1 frame before its sequence start, or a frame of another codec than
    /// the stream's.
    #[error("a frame of another codec than the sequence start's")]
    Unconfigured,
}

/// One RTMP stream's video (see the module docs).
pub struct RtmpPublisher {
    /// H.264 unless an `hvc1` sequence start made it H.265.
    packetizer: NalPacketizer,
    /// Set by a `vp09` sequence start: the stream is VP9.
    vp9: Option<Vp9Packetizer>,
    /// Set by an `av01` sequence start: the stream is AV1.
    av1: Option<Av1Packetizer>,
    ssrc: u32,
    first_seq: u16,
    clock: RtpClock,
    configured: bool,
    /// A frame was dropped (the core's ring was full): delta frames are skipped until the next
    /// keyframe, which players can decode again.
    waiting_for_keyframe: bool,
    /// Keyframes forwarded.
    pub keyframes: u64,
    /// Frames forwarded.
    pub frames: u64,
    last_keyframe_ms: Option<u32>,
    /// The time between the last two keyframes, in milliseconds.
    pub keyframe_interval_ms: Option<u32>,
    /// A frame with a composition time offset came: the encoder uses B-frames.
    pub b_frames: bool,
}

impl RtmpPublisher {
    /// A publisher whose packets go out on `ssrc`, numbered from `first_seq`, timestamped
    /// from `rtp_base`.
    pub fn new(ssrc: u32, first_seq: u16, rtp_base: u32) -> RtmpPublisher {
        RtmpPublisher {
            packetizer: NalPacketizer::new(NalCodec::H264, H264_PT, ssrc, first_seq),
            vp9: None,
            av1: None,
            ssrc,
            first_seq,
            clock: RtpClock { base: rtp_base },
            configured: false,
            waiting_for_keyframe: false,
            keyframes: 0,
            frames: 0,
            last_keyframe_ms: None,
            keyframe_interval_ms: None,
            b_frames: false,
        }
    }

    /// Whether a sequence header came.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// A frame could not be handed on: skip to the next keyframe.
    pub fn drop_frame(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// One video message at RTMP time `timestamp_ms`; `emit` gets each RTP packet and whether
    /// it is part of a keyframe.
    pub fn handle_video(
        &mut self,
        timestamp_ms: u32,
        data: &[u8],
        emit: impl FnMut(&[u8], bool),
    ) -> Result<VideoOutcome, VideoError> {
        match parse_video(data)? {
            VideoTag::AvcConfig(config) => {
                if self.vp9.is_some() || self.av1.is_some() || self.is_h265() {
                    return Err(VideoError::CodecChanged);
                }
                self.packetizer
                    .set_config(config.length_size, &[config.sps, config.pps]);
                if std::mem::replace(&mut self.configured, true) {
                    return Ok(VideoOutcome::Reconfigured);
                }
                Ok(VideoOutcome::Configured(RtmpVideoCodec::H264 {
                    profile_level_id: config.profile_level_id(),
                }))
            }
            VideoTag::HevcConfig(config) => {
                if self.configured && !self.is_h265() {
                    return Err(VideoError::CodecChanged);
                }
                if !self.configured {
                    self.packetizer =
                        NalPacketizer::new(NalCodec::H265, H265_PT, self.ssrc, self.first_seq);
                }
                self.packetizer
                    .set_config(config.length_size, &[config.vps, config.sps, config.pps]);
                if std::mem::replace(&mut self.configured, true) {
                    return Ok(VideoOutcome::Reconfigured);
                }
                Ok(VideoOutcome::Configured(RtmpVideoCodec::H265(
                    config.sdp_profile(),
                )))
            }
            VideoTag::HevcFrame {
                keyframe,
                composition_ms,
                nalus,
            } => {
                if !self.is_h265() {
                    return Err(VideoError::Unconfigured);
                }
                self.nal_frame(timestamp_ms, keyframe, composition_ms, nalus, emit)
            }
            VideoTag::Vp9Config(config) => {
                if self.configured && self.vp9.is_none() {
                    return Err(VideoError::CodecChanged);
                }
                if std::mem::replace(&mut self.configured, true) {
                    return Ok(VideoOutcome::Reconfigured);
                }
                self.vp9 = Some(Vp9Packetizer::new(VP9_PT, self.ssrc, self.first_seq));
                Ok(VideoOutcome::Configured(RtmpVideoCodec::Vp9 {
                    profile: config.profile,
                }))
            }
            VideoTag::Vp9Frame { keyframe, frame } => {
                let Some(packetizer) = self.vp9.as_mut() else {
                    return Err(VideoError::Unconfigured);
                };
                if self.waiting_for_keyframe && !keyframe {
                    return Ok(VideoOutcome::Skipped);
                }
                let rtp_time = self.clock.rtp_time(timestamp_ms, 0);
                let info = packetizer.packetize(rtp_time, frame, keyframe, emit);
                Ok(VideoOutcome::Frame(self.count(timestamp_ms, info)))
            }
            VideoTag::AvcFrame {
                keyframe,
                composition_ms,
                nalus,
            } => {
                if self.vp9.is_some() || self.av1.is_some() || self.is_h265() {
                    return Err(VideoError::Unconfigured);
                }
                self.nal_frame(timestamp_ms, keyframe, composition_ms, nalus, emit)
            }
            VideoTag::Av1Config(config) => {
                if self.configured && self.av1.is_none() {
                    return Err(VideoError::CodecChanged);
                }
                // A later one (a new resolution) replaces what keyframes without their own
                // sequence header get; a first one that does not parse configures nothing.
                let mut fresh = None;
                let packetizer = match self.av1.as_mut() {
                    Some(packetizer) => packetizer,
                    None => fresh.insert(Av1Packetizer::new(AV1_PT, self.ssrc, self.first_seq)),
                };
                packetizer.set_config_obus(config.config_obus)?;
                if let Some(packetizer) = fresh {
                    self.av1 = Some(packetizer);
                }
                if std::mem::replace(&mut self.configured, true) {
                    return Ok(VideoOutcome::Reconfigured);
                }
                Ok(VideoOutcome::Configured(RtmpVideoCodec::Av1 {
                    profile: config.seq_profile,
                    level_idx: config.seq_level_idx_0,
                    tier: u8::from(config.seq_tier_0),
                }))
            }
            VideoTag::Av1Frame { keyframe, obus } => {
                let Some(packetizer) = self.av1.as_mut() else {
                    return Err(VideoError::Unconfigured);
                };
                if self.waiting_for_keyframe && !keyframe {
                    return Ok(VideoOutcome::Skipped);
                }
                let rtp_time = self.clock.rtp_time(timestamp_ms, 0);
                match packetizer.packetize(rtp_time, obus, keyframe, emit) {
                    Ok(info) => Ok(VideoOutcome::Frame(self.count(timestamp_ms, info))),
                    Err(e) => {
                        // Players miss a frame the next ones may refer to.
                        self.waiting_for_keyframe = true;
                        Err(e.into())
                    }
                }
            }
            VideoTag::Other => Ok(VideoOutcome::Nothing),
        }
    }

    fn is_h265(&self) -> bool {
        self.configured && self.packetizer.codec() == NalCodec::H265
    }

    /// An H.264 or H.265 access unit.
    fn nal_frame(
        &mut self,
        timestamp_ms: u32,
        keyframe: bool,
        composition_ms: i32,
        nalus: &[u8],
        emit: impl FnMut(&[u8], bool),
    ) -> Result<VideoOutcome, VideoError> {
        if self.waiting_for_keyframe && !keyframe {
            return Ok(VideoOutcome::Skipped);
        }
        self.b_frames |= composition_ms != 0;
        let rtp_time = self.clock.rtp_time(timestamp_ms, composition_ms);
        let info = self.packetizer.packetize(rtp_time, nalus, emit)?;
        Ok(VideoOutcome::Frame(self.count(timestamp_ms, info)))
    }

    /// Counts a frame that went out; a keyframe ends a wait and times the keyframe interval.
    fn count(&mut self, timestamp_ms: u32, info: FrameInfo) -> FrameInfo {
        if info.packets > 0 {
            self.frames += 1;
        }
        if info.idr {
            self.waiting_for_keyframe = false;
            self.keyframes += 1;
            if let Some(last) = self.last_keyframe_ms.replace(timestamp_ms) {
                self.keyframe_interval_ms = Some(timestamp_ms.wrapping_sub(last));
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Vec<u8> {
        let (sps, pps) = ([0x67, 0x42, 0xC0, 0x1E, 0xAA], [0x68, 0xCE]);
        let mut m = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 5];
        m.extend_from_slice(&sps);
        m.extend_from_slice(&[1, 0, 2]);
        m.extend_from_slice(&pps);
        m
    }

    fn frame(keyframe: bool, composition: u8) -> Vec<u8> {
        let (tag, nal) = if keyframe { (0x17, 0x65) } else { (0x27, 0x41) };
        vec![tag, 1, 0, 0, composition, 0, 0, 0, 2, nal, 0x88]
    }

    #[test]
    fn sequence_header_then_frames_make_rtp_with_the_keyframe_interval() {
        let mut p = RtmpPublisher::new(7, 0, 0);
        let mut packets = Vec::new();
        let mut emit = |packet: &[u8], keyframe: bool| packets.push((packet.to_vec(), keyframe));
        let outcome = p.handle_video(0, &frame(true, 0), &mut emit);
        assert_eq!(
            outcome,
            Err(VideoError::Packetize(PacketizeError::NoConfig("H.264")))
        );
        assert_eq!(
            p.handle_video(0, &config(), &mut emit),
            Ok(VideoOutcome::Configured(RtmpVideoCodec::H264 {
                profile_level_id: "42c01e".into()
            }))
        );
        p.handle_video(0, &frame(true, 0), &mut emit).unwrap();
        p.handle_video(33, &frame(false, 0), &mut emit).unwrap();
        p.handle_video(2000, &frame(true, 0), &mut emit).unwrap();
        assert_eq!((p.keyframes, p.frames), (2, 3));
        assert_eq!(p.keyframe_interval_ms, Some(2000));
        assert!(!p.b_frames);
        // SPS, PPS, IDR; delta; SPS, PPS, IDR.
        assert_eq!(packets.len(), 7);
        let ts = |i: usize| u32::from_be_bytes(packets[i].0[4..8].try_into().unwrap());
        assert_eq!((ts(0), ts(3), ts(4)), (0, 33 * 90, 2000 * 90));
    }

    #[test]
    fn after_a_dropped_frame_delta_frames_wait_for_a_keyframe_and_b_frames_are_noted() {
        let mut p = RtmpPublisher::new(7, 0, 0);
        let mut count = 0;
        let mut emit = |_: &[u8], _: bool| count += 1;
        p.handle_video(0, &config(), &mut emit).unwrap();
        p.drop_frame();
        assert_eq!(
            p.handle_video(33, &frame(false, 0), &mut emit),
            Ok(VideoOutcome::Skipped)
        );
        p.handle_video(66, &frame(true, 40), &mut emit).unwrap();
        assert!(matches!(
            p.handle_video(99, &frame(false, 0), &mut emit),
            Ok(VideoOutcome::Frame(_))
        ));
        assert!(p.b_frames);
    }

    #[test]
    fn a_vp09_sequence_start_makes_a_vp9_stream_and_codecs_do_not_mix() {
        use crate::rtmp::flv::tests::ex_video;
        use crate::rtmp::flv::{Vp9Config, FOURCC_VP9, VIDEO_PACKET_CODED_FRAMES};
        let mut p = RtmpPublisher::new(7, 0, 0);
        let mut packets = Vec::new();
        let mut emit = |packet: &[u8], keyframe: bool| packets.push((packet.to_vec(), keyframe));
        let vp9_frame = ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_VP9, &[0x82, 0x49]);
        assert_eq!(
            p.handle_video(0, &vp9_frame, &mut emit),
            Err(VideoError::Unconfigured)
        );
        let vp9_config = Vp9Config::parse(&[1, 0, 0, 0, 0, 31, 0x82, 2, 2, 2, 0, 0]).unwrap();
        let start = ex_video(0, FOURCC_VP9, &vp9_config.write());
        assert_eq!(
            p.handle_video(0, &start, &mut emit),
            Ok(VideoOutcome::Configured(RtmpVideoCodec::Vp9 { profile: 0 }))
        );
        assert!(matches!(
            p.handle_video(40, &vp9_frame, &mut emit),
            Ok(VideoOutcome::Frame(FrameInfo { packets: 1, .. }))
        ));
        assert_eq!(
            p.handle_video(0, &config(), &mut emit),
            Err(VideoError::CodecChanged)
        );
        assert_eq!(
            p.handle_video(0, &frame(true, 0), &mut emit),
            Err(VideoError::Unconfigured)
        );
        assert_eq!(packets[0].0[1] & 0x7F, VP9_PT);
        assert_eq!(
            u32::from_be_bytes(packets[0].0[4..8].try_into().unwrap()),
            40 * 90
        );
    }

    #[test]
    fn an_hvc1_sequence_start_makes_an_h265_stream_and_codecs_do_not_mix() {
        use crate::rtmp::flv::tests::{ex_video, x265_hvcc, X265_PPS, X265_SPS, X265_VPS};
        use crate::rtmp::flv::{FOURCC_HEVC, VIDEO_PACKET_CODED_FRAMES};
        let mut p = RtmpPublisher::new(7, 0, 0);
        let mut packets = Vec::new();
        let mut emit = |packet: &[u8], keyframe: bool| packets.push((packet.to_vec(), keyframe));
        // CRA (21) after a 40 ms composition offset; then TRAIL_R (1).
        let cra = [0, 0, 0, 3, 0x2A, 0x01, 0xAF];
        let key = ex_video(
            VIDEO_PACKET_CODED_FRAMES,
            FOURCC_HEVC,
            &[&[0, 0, 40][..], &cra].concat(),
        );
        let mut trail = ex_video(
            VIDEO_PACKET_CODED_FRAMES,
            FOURCC_HEVC,
            &[0, 0, 0, 0, 0, 0, 3, 0x02, 0x01, 0xD0],
        );
        trail[0] = crate::rtmp::flv::VIDEO_EX_HEADER
            | crate::rtmp::flv::VIDEO_FRAME_INTER << 4
            | VIDEO_PACKET_CODED_FRAMES;
        assert_eq!(
            p.handle_video(0, &key, &mut emit),
            Err(VideoError::Unconfigured)
        );
        let start = ex_video(0, FOURCC_HEVC, &x265_hvcc());
        assert_eq!(
            p.handle_video(0, &start, &mut emit),
            Ok(VideoOutcome::Configured(RtmpVideoCodec::H265(
                HevcSdpProfile {
                    profile_id: 1,
                    tier_flag: 0,
                    level_id: 60
                }
            )))
        );
        p.drop_frame();
        assert_eq!(
            p.handle_video(33, &trail, &mut emit),
            Ok(VideoOutcome::Skipped)
        );
        assert_eq!(
            p.handle_video(66, &key, &mut emit),
            Ok(VideoOutcome::Frame(FrameInfo {
                packets: 4,
                idr: true
            }))
        );
        p.handle_video(99, &trail, &mut emit).unwrap();
        // H.264 does not mix in.
        assert_eq!(
            p.handle_video(0, &config(), &mut emit),
            Err(VideoError::CodecChanged)
        );
        assert_eq!(
            p.handle_video(0, &frame(true, 0), &mut emit),
            Err(VideoError::Unconfigured)
        );
        assert!(p.b_frames);
        assert_eq!((p.keyframes, p.frames), (1, 2));
        let payloads: Vec<&[u8]> = packets.iter().map(|(packet, _)| &packet[12..]).collect();
        assert_eq!(
            payloads,
            [
                &X265_VPS[..],
                &X265_SPS,
                &X265_PPS,
                &cra[4..],
                &[0x02, 0x01, 0xD0]
            ]
        );
        assert!(packets
            .iter()
            .all(|(packet, _)| packet[1] & 0x7F == H265_PT));
        // The RTP time is the presentation time.
        assert_eq!(
            u32::from_be_bytes(packets[3].0[4..8].try_into().unwrap()),
            106 * 90
        );
    }

    #[test]
    fn an_av01_sequence_start_makes_an_av1_stream_that_skips_bad_frames_to_a_keyframe() {
        use crate::rtmp::flv::tests::ex_video;
        use crate::rtmp::flv::{
            Av1Config, FOURCC_AV1, VIDEO_EX_HEADER, VIDEO_FRAME_INTER, VIDEO_PACKET_CODED_FRAMES,
        };
        let mut p = RtmpPublisher::new(7, 0, 0);
        let mut packets = Vec::new();
        let mut emit = |packet: &[u8], keyframe: bool| packets.push((packet.to_vec(), keyframe));
        // libaom's 320x240 sequence header; a key frame OBU, an inter one.
        let sequence_header = [
            0x0A, 0x0B, 0x00, 0x00, 0x00, 0x04, 0x3C, 0xFF, 0xBC, 0xDA, 0xF9, 0x00, 0x40,
        ];
        let key = ex_video(
            VIDEO_PACKET_CODED_FRAMES,
            FOURCC_AV1,
            &[0x12, 0, 0x32, 1, 0x10],
        );
        let mut inter = ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_AV1, &[0x32, 1, 0x30]);
        inter[0] = VIDEO_EX_HEADER | VIDEO_FRAME_INTER << 4 | VIDEO_PACKET_CODED_FRAMES;
        assert_eq!(
            p.handle_video(0, &key, &mut emit),
            Err(VideoError::Unconfigured)
        );
        let mut record = Av1Config {
            seq_profile: 0,
            seq_level_idx_0: 0,
            seq_tier_0: false,
            high_bitdepth: false,
            twelve_bit: false,
            monochrome: false,
            chroma_subsampling_x: true,
            chroma_subsampling_y: true,
            chroma_sample_position: 0,
            initial_presentation_delay_minus_one: None,
            config_obus: &[0x0A, 0x0B, 0x00],
        };
        let bad_start = ex_video(0, FOURCC_AV1, &record.write());
        assert!(matches!(
            p.handle_video(0, &bad_start, &mut emit),
            Err(VideoError::Av1(Av1Error::ConfigObus(_)))
        ));
        assert!(!p.is_configured());
        record.config_obus = &sequence_header;
        let start = ex_video(0, FOURCC_AV1, &record.write());
        assert_eq!(
            p.handle_video(0, &start, &mut emit),
            Ok(VideoOutcome::Configured(RtmpVideoCodec::Av1 {
                profile: 0,
                level_idx: 0,
                tier: 0
            }))
        );
        assert_eq!(
            p.handle_video(0, &start, &mut emit),
            Ok(VideoOutcome::Reconfigured)
        );
        assert!(matches!(
            p.handle_video(40, &key, &mut emit),
            Ok(VideoOutcome::Frame(FrameInfo {
                packets: 1,
                idr: true
            }))
        ));
        // A malformed temporal unit is an error and the inter frames after it wait.
        let broken = ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_AV1, &[0x32, 9, 0x10]);
        assert!(matches!(
            p.handle_video(73, &broken, &mut emit),
            Err(VideoError::Av1(Av1Error::Obus(_)))
        ));
        assert_eq!(
            p.handle_video(106, &inter, &mut emit),
            Ok(VideoOutcome::Skipped)
        );
        p.handle_video(139, &key, &mut emit).unwrap();
        assert!(matches!(
            p.handle_video(172, &inter, &mut emit),
            Ok(VideoOutcome::Frame(_))
        ));
        assert_eq!((p.keyframes, p.frames), (2, 3));
        // Other codecs do not mix in.
        assert_eq!(
            p.handle_video(0, &config(), &mut emit),
            Err(VideoError::CodecChanged)
        );
        assert_eq!(
            p.handle_video(0, &frame(true, 0), &mut emit),
            Err(VideoError::Unconfigured)
        );
        // The first key frame went with the av1C's sequence header, N set, on payload type 45.
        let (packet, keyframe) = &packets[0];
        assert!(*keyframe && packet[1] == 0x80 | AV1_PT);
        assert_eq!(packet[12..16], [0x28, 12, 0x08, 0x00]);
        assert_eq!(packet[packet.len() - 2..], [0x30, 0x10]);
    }
}
