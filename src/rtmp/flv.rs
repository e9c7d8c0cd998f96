//! FLV video and audio tag bodies as RTMP carries them: the classic tags (the FLV file format
//! spec, E.4.2 and E.4.3) and Enhanced RTMP's FourCC tags (veovera's enhanced-rtmp v1/v2,
//! "Enhanced Audio" and "Enhanced Video"). Which codec, a frame's type, for H.264 (AVC, classic
//! or FourCC `avc1`) the decoder configuration record or the frame's length-prefixed NAL units
//! with their composition time, for H.265 (`hvc1`) the same with its HEVCDecoderConfigurationRecord
//! (`hvcC`), for VP9 (`vp09`) the VPCodecConfigurationRecord (`vpcC`) or
//! one frame as it is (no composition time), for AV1 (`av01`) the
//! AV1CodecConfigurationRecord (`av1C`) or one temporal unit's OBUs, for AAC (classic or `mp4a`) the
//! AudioSpecificConfig or a raw frame, and for Opus (`Opus`) its ID header (RFC 7845 §5.1) or
//! one raw Opus packet.
//! Borrowing parsers; nothing copied. The constants are the wire values, for writers too.
//!
//! Enhanced RTMP's multitrack and ModEx packets, and FourCCs other than `avc1`, `hvc1`, `vp09`,
//! `av01`, `Opus` and `mp4a`, are refused by name: a publisher's setup that rtcdn cannot carry is said, not
//! guessed at.

/// Classic FLV CodecID 7: AVC (H.264).
pub const VIDEO_CODEC_AVC: u8 = 7;
/// The video tag's first byte bit that makes it an Enhanced RTMP ExVideoTagHeader (the low
/// nibble is then a VideoPacketType and a FourCC follows).
pub const VIDEO_EX_HEADER: u8 = 0x80;
/// VideoFrameType 1: a keyframe (bits 4-6 of the first byte).
pub const VIDEO_FRAME_KEY: u8 = 1;
/// VideoFrameType 2: an inter frame.
pub const VIDEO_FRAME_INTER: u8 = 2;
/// VideoFrameType 5: a video info / command frame (no picture).
pub const VIDEO_FRAME_COMMAND: u8 = 5;

/// Enhanced RTMP VideoPacketType: the codec's configuration record.
pub const VIDEO_PACKET_SEQUENCE_START: u8 = 0;
/// Enhanced RTMP VideoPacketType: frames, after an SI24 composition time offset.
pub const VIDEO_PACKET_CODED_FRAMES: u8 = 1;
/// Enhanced RTMP VideoPacketType: end of sequence.
pub const VIDEO_PACKET_SEQUENCE_END: u8 = 2;
/// Enhanced RTMP VideoPacketType: frames with a composition time offset of zero (not sent).
pub const VIDEO_PACKET_CODED_FRAMES_X: u8 = 3;
/// Enhanced RTMP VideoPacketType: AMF-encoded metadata (HDR colour info, ...), no picture.
pub const VIDEO_PACKET_METADATA: u8 = 4;
/// Enhanced RTMP VideoPacketType: the sequence start of an MPEG-2 TS carriage.
pub const VIDEO_PACKET_MPEG2TS_SEQUENCE_START: u8 = 5;
/// Enhanced RTMP VideoPacketType: several tracks in one message.
pub const VIDEO_PACKET_MULTITRACK: u8 = 6;
/// Enhanced RTMP VideoPacketType: a modifier (nanosecond timestamp offset, ...) comes first.
pub const VIDEO_PACKET_MOD_EX: u8 = 7;

/// Enhanced RTMP video FourCC: H.264, carried as classic AVC is.
pub const FOURCC_AVC: [u8; 4] = *b"avc1";
/// Enhanced RTMP video FourCC: H.265, carried as `avc1` is (composition time, length-prefixed
/// NAL units) with an HEVCDecoderConfigurationRecord.
pub const FOURCC_HEVC: [u8; 4] = *b"hvc1";
/// Enhanced RTMP video FourCC: AV1.
pub const FOURCC_AV1: [u8; 4] = *b"av01";
/// Enhanced RTMP video FourCC: VP9.
pub const FOURCC_VP9: [u8; 4] = *b"vp09";

/// FLV SoundFormat 10: AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;
/// FLV SoundFormat 9: Enhanced RTMP's ExAudioTagHeader (the low nibble is then an
/// AudioPacketType and a FourCC follows).
pub const SOUND_FORMAT_EX_HEADER: u8 = 9;
/// Classic AAC's AACPacketType 0: the AudioSpecificConfig.
pub const AAC_PACKET_SEQUENCE_HEADER: u8 = 0;
/// Classic AAC's AACPacketType 1: a raw frame.
pub const AAC_PACKET_RAW: u8 = 1;

/// Enhanced RTMP AudioPacketType: the codec's configuration (for Opus its ID header).
pub const AUDIO_PACKET_SEQUENCE_START: u8 = 0;
/// Enhanced RTMP AudioPacketType: coded frames (for Opus one packet).
pub const AUDIO_PACKET_CODED_FRAMES: u8 = 1;
/// Enhanced RTMP AudioPacketType: end of sequence.
pub const AUDIO_PACKET_SEQUENCE_END: u8 = 2;
/// Enhanced RTMP AudioPacketType: the channel order and count.
pub const AUDIO_PACKET_MULTICHANNEL_CONFIG: u8 = 4;
/// Enhanced RTMP AudioPacketType: several tracks in one message.
pub const AUDIO_PACKET_MULTITRACK: u8 = 5;
/// Enhanced RTMP AudioPacketType: a modifier (nanosecond timestamp offset, ...) comes first.
pub const AUDIO_PACKET_MOD_EX: u8 = 7;

/// Enhanced RTMP audio FourCC: Opus, forwarded as it comes.
pub const FOURCC_OPUS: [u8; 4] = *b"Opus";
/// Enhanced RTMP audio FourCC: AAC, carried as classic AAC is.
pub const FOURCC_AAC: [u8; 4] = *b"mp4a";
/// Enhanced RTMP audio FourCC: MP3 (not carried).
pub const FOURCC_MP3: [u8; 4] = *b".mp3";
/// Enhanced RTMP audio FourCC: AC-3 (not carried).
pub const FOURCC_AC3: [u8; 4] = *b"ac-3";
/// Enhanced RTMP audio FourCC: E-AC-3 (not carried).
pub const FOURCC_EAC3: [u8; 4] = *b"ec-3";
/// Enhanced RTMP audio FourCC: FLAC (not carried).
pub const FOURCC_FLAC: [u8; 4] = *b"fLaC";

/// A FourCC as `onMetaData`'s `audiocodecid`/`videocodecid` carry it in Enhanced RTMP: its
/// bytes as a big-endian number (`Opus` is 0x4F70_7573).
pub const fn fourcc_codec_id(fourcc: [u8; 4]) -> u32 {
    u32::from_be_bytes(fourcc)
}

/// Why a video or audio message was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// Shorter than its headers.
    #[error("FLV tag body too short")]
    Truncated,
    /// A classic FLV codec other than AVC (Sorenson, VP6, screen video, HEVC by id 12, ...).
    #[error("video codec id {0} is not supported (only H.264/AVC)")]
    UnsupportedCodec(u8),
    /// An Enhanced RTMP video FourCC other than `avc1`, `hvc1`, `vp09` and `av01` (`vp08`, ...).
    #[error(
        "Enhanced RTMP video \"{}\" is not supported: rtcdn takes avc1 (H.264), hvc1 (H.265), vp09 (VP9) and av01 (AV1) over Enhanced RTMP",
        .0.escape_ascii()
    )]
    UnsupportedFourCc([u8; 4]),
    /// An Enhanced RTMP audio FourCC other than `Opus` and `mp4a` (`.mp3`, `ac-3`, `ec-3`,
    /// `fLaC`, ...).
    #[error(
        "Enhanced RTMP audio \"{}\" is not supported yet: rtcdn takes Opus and mp4a (AAC) over Enhanced RTMP",
        .0.escape_ascii()
    )]
    UnsupportedAudioFourCc([u8; 4]),
    /// An Enhanced RTMP VideoPacketType rtcdn does not take: multitrack, ModEx, MPEG-2 TS
    /// carriage, or a reserved value.
    #[error("Enhanced RTMP video packet type {0} ({name}) is not supported", name = video_packet_name(*.0))]
    UnsupportedVideoPacket(u8),
    /// An Enhanced RTMP AudioPacketType rtcdn does not take: multitrack, ModEx, or a reserved
    /// value.
    #[error("Enhanced RTMP audio packet type {0} ({name}) is not supported", name = audio_packet_name(*.0))]
    UnsupportedAudioPacket(u8),
    /// An AVCDecoderConfigurationRecord that does not parse.
    #[error("bad AVC decoder configuration record: {0}")]
    BadConfig(&'static str),
    /// An HEVCDecoderConfigurationRecord that does not parse.
    #[error("bad HEVC decoder configuration record (hvcC): {0}")]
    BadHevcConfig(&'static str),
    /// A VPCodecConfigurationRecord that does not parse.
    #[error("bad VP9 codec configuration record (vpcC): {0}")]
    BadVp9Config(&'static str),
    /// An AV1CodecConfigurationRecord that does not parse.
    #[error("bad AV1 codec configuration record (av1C): {0}")]
    BadAv1Config(&'static str),
    /// An Opus ID header (RFC 7845 §5.1) that does not parse.
    #[error("bad Opus ID header (OpusHead, RFC 7845 section 5.1): {0}")]
    BadOpusHead(&'static str),
}

fn video_packet_name(packet_type: u8) -> &'static str {
    match packet_type {
        VIDEO_PACKET_MPEG2TS_SEQUENCE_START => "MPEG-2 TS sequence start",
        VIDEO_PACKET_MULTITRACK => "multitrack",
        VIDEO_PACKET_MOD_EX => "ModEx",
        _ => "reserved",
    }
}

fn audio_packet_name(packet_type: u8) -> &'static str {
    match packet_type {
        AUDIO_PACKET_MULTITRACK => "multitrack",
        AUDIO_PACKET_MOD_EX => "ModEx",
        _ => "reserved",
    }
}

/// One video message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// The AVC sequence header: SPS, PPS and the NAL length size.
    AvcConfig(AvcConfig<'a>),
    /// One frame's NAL units, each prefixed by its length.
    AvcFrame {
        keyframe: bool,
        /// Presentation minus decoding time, in milliseconds (non-zero with B-frames).
        composition_ms: i32,
        nalus: &'a [u8],
    },
    /// H.265's sequence start (Enhanced RTMP `hvc1`).
    HevcConfig(HevcConfig<'a>),
    /// One H.265 access unit's NAL units, each prefixed by its length.
    HevcFrame {
        keyframe: bool,
        /// Presentation minus decoding time, in milliseconds (non-zero with B-frames).
        composition_ms: i32,
        nalus: &'a [u8],
    },
    /// VP9's sequence start (Enhanced RTMP `vp09`).
    Vp9Config(Vp9Config),
    /// One VP9 frame (or superframe) as the encoder made it.
    Vp9Frame { keyframe: bool, frame: &'a [u8] },
    /// AV1's sequence start (Enhanced RTMP `av01`).
    Av1Config(Av1Config<'a>),
    /// One AV1 temporal unit: OBUs in the low overhead bitstream format (each with its size
    /// field), as in an MP4 sample.
    Av1Frame { keyframe: bool, obus: &'a [u8] },
    /// End of sequence, a command/info frame or (Enhanced RTMP) metadata: nothing to forward.
    Other,
}

/// What a VPCodecConfigurationRecord says ("VP Codec ISO Media File Format Binding" §2.3,
/// the `vpcC` box's body: version 1 and flags, then the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Config {
    /// 0 to 3: the SDP's `profile-id`.
    pub profile: u8,
    pub level: u8,
    pub bit_depth: u8,
    /// 0, 1: 4:2:0; 2: 4:2:2; 3: 4:4:4.
    pub chroma_subsampling: u8,
    pub full_range: bool,
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
}

/// The `vpcC` box body's length: version and flags, eight bytes of record, an empty
/// codecInitializationData's size.
pub const VP9_CONFIG_LEN: usize = 12;

impl Vp9Config {
    /// Parses the box body (what ffmpeg and OBS write); the initialization data is ignored
    /// (VP9 has none).
    pub fn parse(data: &[u8]) -> Result<Vp9Config, FlvError> {
        let [version, _, _, _, profile, level, bits, primaries, transfer, matrix, ..] = *data
        else {
            return Err(FlvError::BadVp9Config("shorter than its 10 bytes"));
        };
        if version != 1 {
            return Err(FlvError::BadVp9Config("version not 1"));
        }
        if profile > 3 {
            return Err(FlvError::BadVp9Config("profile above 3"));
        }
        let bit_depth = bits >> 4;
        if !matches!(bit_depth, 8 | 10 | 12) {
            return Err(FlvError::BadVp9Config("bit depth not 8, 10 or 12"));
        }
        Ok(Vp9Config {
            profile,
            level,
            bit_depth,
            chroma_subsampling: (bits >> 1) & 0x07,
            full_range: bits & 1 != 0,
            colour_primaries: primaries,
            transfer_characteristics: transfer,
            matrix_coefficients: matrix,
        })
    }

    /// The box body, as [`Vp9Config::parse`] reads it.
    pub fn write(&self) -> [u8; VP9_CONFIG_LEN] {
        [
            1,
            0,
            0,
            0,
            self.profile,
            self.level,
            self.bit_depth << 4 | (self.chroma_subsampling & 0x07) << 1 | u8::from(self.full_range),
            self.colour_primaries,
            self.transfer_characteristics,
            self.matrix_coefficients,
            0,
            0,
        ]
    }
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1), first SPS and PPS only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig<'a> {
    /// Bytes of each NAL unit's length prefix in frames (1, 2 or 4).
    pub length_size: u8,
    pub sps: &'a [u8],
    pub pps: &'a [u8],
}

impl AvcConfig<'_> {
    /// The SDP `profile-level-id` (RFC 6184 §8.1): the SPS's profile, constraint flags and
    /// level, as six hex digits.
    pub fn profile_level_id(&self) -> String {
        match self.sps {
            [_, profile, constraints, level, ..] => {
                format!("{profile:02x}{constraints:02x}{level:02x}")
            }
            _ => "42e01f".to_owned(),
        }
    }
}

/// An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1, the `hvcC` box's body):
/// the SPS's profile, tier and level and picture format as the record repeats them, the NAL
/// length size, and the first VPS, SPS and PPS of its arrays (others are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HevcConfig<'a> {
    /// The SPS's general profile_tier_level bytes: profile space, tier and profile idc,
    /// 32 compatibility flags, 48 constraint flags, level idc (12 bytes as the SPS has them).
    pub profile_tier_level: [u8; 12],
    pub chroma_format_idc: u8,
    pub bit_depth_luma_minus8: u8,
    pub bit_depth_chroma_minus8: u8,
    /// Bytes of each NAL unit's length prefix in frames (1, 2 or 4).
    pub length_size: u8,
    pub vps: &'a [u8],
    pub sps: &'a [u8],
    pub pps: &'a [u8],
}

/// The fixed part of an hvcC before its arrays.
const HEVC_CONFIG_HEADER: usize = 23;

impl<'a> HevcConfig<'a> {
    /// The record of these parameter sets, with the profile, tier, level and picture format
    /// their SPS says (`parsed`) and `length_size`-byte NAL unit lengths in frames.
    pub fn from_sps(
        parsed: &rtp::H265Sps,
        length_size: u8,
        [vps, sps, pps]: [&'a [u8]; 3],
    ) -> HevcConfig<'a> {
        HevcConfig {
            profile_tier_level: parsed.profile_tier_level,
            chroma_format_idc: parsed.chroma_format_idc,
            bit_depth_luma_minus8: parsed.bit_depth_luma_minus8,
            bit_depth_chroma_minus8: parsed.bit_depth_chroma_minus8,
            length_size,
            vps,
            sps,
            pps,
        }
    }

    /// Parses the box body; arrays of other NAL unit types (SEI) are skipped.
    pub fn parse(record: &'a [u8]) -> Result<HevcConfig<'a>, FlvError> {
        let Some((header, mut rest)) = record.split_first_chunk::<HEVC_CONFIG_HEADER>() else {
            return Err(FlvError::BadHevcConfig("shorter than its 23-byte header"));
        };
        // Version 1; some early muxers wrote 0 with the same layout.
        if header[0] > 1 {
            return Err(FlvError::BadHevcConfig("version above 1"));
        }
        let length_size = (header[21] & 0x03) + 1;
        if length_size == 3 {
            return Err(FlvError::BadHevcConfig("NAL length size 3"));
        }
        let mut sets: [Option<&[u8]>; 3] = [None; 3];
        for _ in 0..header[22] {
            let [kind, n0, n1, after @ ..] = rest else {
                return Err(FlvError::BadHevcConfig("NAL unit array truncated"));
            };
            rest = after;
            let slot = (*kind & 0x3F).checked_sub(rtp::h265::NAL_VPS);
            for _ in 0..u16::from_be_bytes([*n0, *n1]) {
                let (nal, after) =
                    take_u16_prefixed(rest).ok_or(FlvError::BadHevcConfig("NAL unit truncated"))?;
                rest = after;
                if let Some(set @ None) = slot.and_then(|i| sets.get_mut(usize::from(i))) {
                    *set = (nal.len() > 2).then_some(nal);
                }
            }
        }
        let [Some(vps), Some(sps), Some(pps)] = sets else {
            return Err(FlvError::BadHevcConfig("no VPS, SPS or PPS"));
        };
        let mut profile_tier_level = [0; 12];
        profile_tier_level.copy_from_slice(&header[1..13]);
        Ok(HevcConfig {
            profile_tier_level,
            chroma_format_idc: header[16] & 0x03,
            bit_depth_luma_minus8: header[17] & 0x07,
            bit_depth_chroma_minus8: header[18] & 0x07,
            length_size,
            vps,
            sps,
            pps,
        })
    }

    /// The box body, as [`HevcConfig::parse`] reads it: one array each for the VPS, SPS and
    /// PPS, marked complete; no segmentation or parallelism said, frame rate unknown.
    pub fn write(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(
            HEVC_CONFIG_HEADER + 3 * 5 + self.vps.len() + self.sps.len() + self.pps.len(),
        );
        body.push(1);
        body.extend_from_slice(&self.profile_tier_level);
        body.extend_from_slice(&[
            0xF0,
            0x00,
            0xFC,
            0xFC | (self.chroma_format_idc & 0x03),
            0xF8 | (self.bit_depth_luma_minus8 & 0x07),
            0xF8 | (self.bit_depth_chroma_minus8 & 0x07),
            0,
            0,
            // constantFrameRate 0, one temporal layer, temporal ids nested.
            (1 << 3) | (1 << 2) | ((self.length_size.max(1) - 1) & 0x03),
            3,
        ]);
        for (kind, nal) in [
            (rtp::h265::NAL_VPS, self.vps),
            (rtp::h265::NAL_SPS, self.sps),
            (rtp::h265::NAL_PPS, self.pps),
        ] {
            body.push(0x80 | kind);
            body.extend_from_slice(&1u16.to_be_bytes());
            // Parameter sets are far shorter than 64 KiB; a longer one is cut, not wrapped.
            let len = nal.len().min(usize::from(u16::MAX));
            body.extend_from_slice(&(len as u16).to_be_bytes());
            body.extend_from_slice(&nal[..len]);
        }
        body
    }

    /// The SDP parameters of RFC 7798 §7.1 this record's profile, tier and level give.
    pub fn sdp_profile(&self) -> HevcSdpProfile {
        let ptl = self.profile_tier_level;
        HevcSdpProfile {
            profile_id: ptl[0] & 0x1F,
            tier_flag: (ptl[0] >> 5) & 1,
            level_id: ptl[11],
        }
    }
}

/// H.265's SDP `profile-id`, `tier-flag` and `level-id` (RFC 7798 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HevcSdpProfile {
    pub profile_id: u8,
    pub tier_flag: u8,
    pub level_id: u8,
}

/// One audio message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// The AAC sequence header (classic, or Enhanced RTMP `mp4a`): an AudioSpecificConfig
    /// (ISO/IEC 14496-3 §1.6.2.1).
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
    /// Enhanced RTMP Opus's sequence start: its ID header, or `None` when it carries none
    /// (the spec then means mono or stereo, as a multichannel config may say).
    OpusConfig(Option<OpusHead>),
    /// One Opus packet (RFC 6716 §3), as an RTP payload takes it (RFC 7587).
    OpusFrame(&'a [u8]),
    /// Enhanced RTMP Opus's multichannel config: the number of channels (AAC's own config
    /// says its channels, so `mp4a`'s is [`AudioTag::Other`]).
    OpusChannels(u8),
    /// An end of sequence, or the empty message RTMP means as silence: nothing to forward.
    Other,
    /// A classic FLV sound format other than AAC (MP3, Speex, G.711, ...), by its id.
    Unsupported(u8),
}

/// The fixed part of an Opus ID header (RFC 7845 §5.1) as Enhanced RTMP's Opus sequence
/// start carries it; the channel mapping table is read only for its stream count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    pub channels: u8,
    /// Samples (at 48 kHz) the decoder drops at the start.
    pub pre_skip: u16,
    /// The encoder's input rate, for information only (0: not said); Opus decodes at 48 kHz.
    pub input_rate: u32,
    /// 0: mono or stereo in one stream; other families map channels onto several streams.
    pub mapping_family: u8,
    /// Opus streams in each packet (1 with mapping family 0).
    pub streams: u8,
}

/// The ID header's magic signature.
pub const OPUS_HEAD_MAGIC: [u8; 8] = *b"OpusHead";
/// The ID header's length with mapping family 0.
pub const OPUS_HEAD_LEN: usize = 19;

impl OpusHead {
    /// Parses an ID header; what follows it is ignored.
    pub fn parse(data: &[u8]) -> Result<OpusHead, FlvError> {
        let Some((fixed, mapping)) = data.split_first_chunk::<OPUS_HEAD_LEN>() else {
            return Err(FlvError::BadOpusHead("shorter than its 19 bytes"));
        };
        let [m0, m1, m2, m3, m4, m5, m6, m7, version, channels, s0, s1, r0, r1, r2, r3, _, _, family] =
            *fixed;
        if [m0, m1, m2, m3, m4, m5, m6, m7] != OPUS_HEAD_MAGIC {
            return Err(FlvError::BadOpusHead("no OpusHead signature"));
        }
        // §5.1: a major version other than 0 (the high nibble) is not compatible.
        if version >> 4 != 0 {
            return Err(FlvError::BadOpusHead("version not 0.x"));
        }
        if channels == 0 {
            return Err(FlvError::BadOpusHead("no channels"));
        }
        let streams = match (family, mapping) {
            (0, _) if channels > 2 => {
                return Err(FlvError::BadOpusHead(
                    "mapping family 0 with more than 2 channels",
                ))
            }
            (0, _) => 1,
            (_, [streams, coupled, table @ ..]) => {
                if *streams == 0 || coupled > streams || table.len() < usize::from(channels) {
                    return Err(FlvError::BadOpusHead("bad channel mapping table"));
                }
                *streams
            }
            _ => return Err(FlvError::BadOpusHead("channel mapping table missing")),
        };
        Ok(OpusHead {
            channels,
            pre_skip: u16::from_le_bytes([s0, s1]),
            input_rate: u32::from_le_bytes([r0, r1, r2, r3]),
            mapping_family: family,
            streams,
        })
    }
}

/// Parses an audio message's body.
pub fn parse_audio(data: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let Some((&first, rest)) = data.split_first() else {
        // The Enhanced RTMP spec documents it: an empty audio message is silence.
        return Ok(AudioTag::Other);
    };
    match first >> 4 {
        SOUND_FORMAT_AAC => match rest.split_first() {
            Some((&AAC_PACKET_SEQUENCE_HEADER, config)) => Ok(AudioTag::AacConfig(config)),
            Some((_, frame)) => Ok(AudioTag::AacFrame(frame)),
            None => Err(FlvError::Truncated),
        },
        SOUND_FORMAT_EX_HEADER => parse_ex_audio(first & 0x0F, rest),
        format => Ok(AudioTag::Unsupported(format)),
    }
}

/// An ExAudioTagHeader's body: after the AudioPacketType nibble, a FourCC and its payload.
fn parse_ex_audio(packet_type: u8, rest: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    // Multitrack puts a track header, and ModEx its modifier, before the FourCC.
    if matches!(packet_type, AUDIO_PACKET_MULTITRACK | AUDIO_PACKET_MOD_EX) {
        return Err(FlvError::UnsupportedAudioPacket(packet_type));
    }
    let (fourcc, body) = split_fourcc(rest)?;
    let opus = match fourcc {
        FOURCC_OPUS => true,
        FOURCC_AAC => false,
        other => return Err(FlvError::UnsupportedAudioFourCc(other)),
    };
    match packet_type {
        AUDIO_PACKET_SEQUENCE_START if !opus => Ok(AudioTag::AacConfig(body)),
        AUDIO_PACKET_SEQUENCE_START if body.is_empty() => Ok(AudioTag::OpusConfig(None)),
        AUDIO_PACKET_SEQUENCE_START => OpusHead::parse(body).map(|h| AudioTag::OpusConfig(Some(h))),
        AUDIO_PACKET_CODED_FRAMES if !opus => Ok(AudioTag::AacFrame(body)),
        // RFC 6716 §3.4 R1: an Opus packet has at least its TOC byte.
        AUDIO_PACKET_CODED_FRAMES if body.is_empty() => Err(FlvError::Truncated),
        AUDIO_PACKET_CODED_FRAMES => Ok(AudioTag::OpusFrame(body)),
        AUDIO_PACKET_SEQUENCE_END => Ok(AudioTag::Other),
        AUDIO_PACKET_MULTICHANNEL_CONFIG if !opus => Ok(AudioTag::Other),
        AUDIO_PACKET_MULTICHANNEL_CONFIG => match body {
            [_order, channels, ..] => Ok(AudioTag::OpusChannels(*channels)),
            _ => Err(FlvError::Truncated),
        },
        _ => Err(FlvError::UnsupportedAudioPacket(packet_type)),
    }
}

/// Parses a video message's body.
pub fn parse_video(data: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let (&first, rest) = data.split_first().ok_or(FlvError::Truncated)?;
    let frame_type = (first >> 4) & 0x07;
    if first & VIDEO_EX_HEADER != 0 {
        return parse_ex_video(frame_type, first & 0x0F, rest);
    }
    let codec = first & 0x0F;
    if frame_type == VIDEO_FRAME_COMMAND {
        // A video info/command frame carries no picture, whatever its codec id.
        return Ok(VideoTag::Other);
    }
    if codec != VIDEO_CODEC_AVC {
        return Err(FlvError::UnsupportedCodec(codec));
    }
    let [packet_type, c0, c1, c2, body @ ..] = rest else {
        return Err(FlvError::Truncated);
    };
    match packet_type {
        0 => parse_avc_config(body).map(VideoTag::AvcConfig),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == VIDEO_FRAME_KEY,
            composition_ms: si24([*c0, *c1, *c2]),
            nalus: body,
        }),
        _ => Ok(VideoTag::Other),
    }
}

/// What an AV1CodecConfigurationRecord says ("AV1 Codec ISO Media File Format Binding"
/// §2.3.3, the `av1C` box's body): the sequence header's profile, level and colour format,
/// and the OBUs (usually the sequence header) a decoder needs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Av1Config<'a> {
    pub seq_profile: u8,
    pub seq_level_idx_0: u8,
    pub seq_tier_0: bool,
    pub high_bitdepth: bool,
    pub twelve_bit: bool,
    pub monochrome: bool,
    pub chroma_subsampling_x: bool,
    pub chroma_subsampling_y: bool,
    pub chroma_sample_position: u8,
    /// `initial_presentation_delay_minus_one`, when present.
    pub initial_presentation_delay_minus_one: Option<u8>,
    /// `configOBUs`: OBUs in the low overhead bitstream format.
    pub config_obus: &'a [u8],
}

impl<'a> Av1Config<'a> {
    /// Parses the box body: marker and version 1, the sequence header's fields, then the
    /// config OBUs (taken as they are).
    pub fn parse(data: &'a [u8]) -> Result<Av1Config<'a>, FlvError> {
        let [marker_version, profile_level, flags, delay, config_obus @ ..] = data else {
            return Err(FlvError::BadAv1Config("shorter than its 4 bytes"));
        };
        if *marker_version != 0x81 {
            return Err(FlvError::BadAv1Config("marker not set or version not 1"));
        }
        let bit = |n: u8| flags & (0x80 >> n) != 0;
        Ok(Av1Config {
            seq_profile: profile_level >> 5,
            seq_level_idx_0: profile_level & 0x1F,
            seq_tier_0: bit(0),
            high_bitdepth: bit(1),
            twelve_bit: bit(2),
            monochrome: bit(3),
            chroma_subsampling_x: bit(4),
            chroma_subsampling_y: bit(5),
            chroma_sample_position: flags & 0x03,
            initial_presentation_delay_minus_one: (delay & 0x10 != 0).then_some(delay & 0x0F),
            config_obus,
        })
    }

    /// The box body, as [`Av1Config::parse`] reads it.
    pub fn write(&self) -> Vec<u8> {
        let flag = |on: bool, n: u8| u8::from(on) << (7 - n);
        let flags = flag(self.seq_tier_0, 0)
            | flag(self.high_bitdepth, 1)
            | flag(self.twelve_bit, 2)
            | flag(self.monochrome, 3)
            | flag(self.chroma_subsampling_x, 4)
            | flag(self.chroma_subsampling_y, 5)
            | (self.chroma_sample_position & 0x03);
        let delay = self
            .initial_presentation_delay_minus_one
            .map_or(0, |d| 0x10 | (d & 0x0F));
        let mut body = vec![
            0x81,
            (self.seq_profile & 0x07) << 5 | (self.seq_level_idx_0 & 0x1F),
            flags,
            delay,
        ];
        body.extend_from_slice(self.config_obus);
        body
    }
}

/// An ExVideoTagHeader's body: after the VideoPacketType nibble, a FourCC and its payload;
/// `avc1` is read as classic AVC is, and `hvc1` the same way with its own record.
fn parse_ex_video(frame_type: u8, packet_type: u8, rest: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    if frame_type == VIDEO_FRAME_COMMAND && packet_type != VIDEO_PACKET_METADATA {
        // A command (a UI8, no FourCC) and no picture.
        return Ok(VideoTag::Other);
    }
    // MPEG-2 TS carriage, multitrack, ModEx and the reserved values 8..=15.
    if packet_type >= VIDEO_PACKET_MPEG2TS_SEQUENCE_START {
        return Err(FlvError::UnsupportedVideoPacket(packet_type));
    }
    let (fourcc, body) = split_fourcc(rest)?;
    let keyframe = frame_type == VIDEO_FRAME_KEY;
    if fourcc == FOURCC_VP9 {
        return parse_vp9(keyframe, packet_type, body);
    }
    if fourcc == FOURCC_AV1 {
        return parse_av1(keyframe, packet_type, body);
    }
    let hevc = match fourcc {
        FOURCC_AVC => false,
        FOURCC_HEVC => true,
        _ => return Err(FlvError::UnsupportedFourCc(fourcc)),
    };
    let (composition_ms, nalus) = match packet_type {
        VIDEO_PACKET_SEQUENCE_START if hevc => {
            return HevcConfig::parse(body).map(VideoTag::HevcConfig)
        }
        VIDEO_PACKET_SEQUENCE_START => return parse_avc_config(body).map(VideoTag::AvcConfig),
        VIDEO_PACKET_CODED_FRAMES => {
            let [c0, c1, c2, nalus @ ..] = body else {
                return Err(FlvError::Truncated);
            };
            (si24([*c0, *c1, *c2]), nalus)
        }
        VIDEO_PACKET_CODED_FRAMES_X => (0, body),
        // SequenceEnd, Metadata.
        _ => return Ok(VideoTag::Other),
    };
    Ok(if hevc {
        VideoTag::HevcFrame {
            keyframe,
            composition_ms,
            nalus,
        }
    } else {
        VideoTag::AvcFrame {
            keyframe,
            composition_ms,
            nalus,
        }
    })
}

/// `av01`'s body: the configuration record, or a temporal unit with no composition time
/// before it.
fn parse_av1(keyframe: bool, packet_type: u8, body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    match packet_type {
        VIDEO_PACKET_SEQUENCE_START => Av1Config::parse(body).map(VideoTag::Av1Config),
        VIDEO_PACKET_CODED_FRAMES | VIDEO_PACKET_CODED_FRAMES_X if body.is_empty() => {
            Err(FlvError::Truncated)
        }
        VIDEO_PACKET_CODED_FRAMES | VIDEO_PACKET_CODED_FRAMES_X => Ok(VideoTag::Av1Frame {
            keyframe,
            obus: body,
        }),
        _ => Ok(VideoTag::Other),
    }
}

/// `vp09`'s body: the configuration record, or a frame with no composition time before it
/// (the spec gives one to AVC and HEVC only).
fn parse_vp9(keyframe: bool, packet_type: u8, body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    match packet_type {
        VIDEO_PACKET_SEQUENCE_START => Vp9Config::parse(body).map(VideoTag::Vp9Config),
        VIDEO_PACKET_CODED_FRAMES | VIDEO_PACKET_CODED_FRAMES_X if body.is_empty() => {
            Err(FlvError::Truncated)
        }
        VIDEO_PACKET_CODED_FRAMES | VIDEO_PACKET_CODED_FRAMES_X => Ok(VideoTag::Vp9Frame {
            keyframe,
            frame: body,
        }),
        _ => Ok(VideoTag::Other),
    }
}

/// A signed 24-bit big-endian number (a composition time offset), sign-extended.
fn si24([b0, b1, b2]: [u8; 3]) -> i32 {
    i32::from_be_bytes([b0, b1, b2, 0]) >> 8
}

fn split_fourcc(data: &[u8]) -> Result<([u8; 4], &[u8]), FlvError> {
    data.split_first_chunk::<4>()
        .map(|(fourcc, rest)| (*fourcc, rest))
        .ok_or(FlvError::Truncated)
}

fn parse_avc_config(record: &[u8]) -> Result<AvcConfig<'_>, FlvError> {
    let [_version, _profile, _compat, _level, length_byte, sps_count, rest @ ..] = record else {
        return Err(FlvError::BadConfig("shorter than its header"));
    };
    let length_size = (length_byte & 0x03) + 1;
    if length_size == 3 {
        return Err(FlvError::BadConfig("NAL length size 3"));
    }
    if sps_count & 0x1F == 0 {
        return Err(FlvError::BadConfig("no SPS"));
    }
    let (sps, mut rest) = take_u16_prefixed(rest).ok_or(FlvError::BadConfig("SPS truncated"))?;
    for _ in 1..(sps_count & 0x1F) {
        (_, rest) = take_u16_prefixed(rest).ok_or(FlvError::BadConfig("SPS truncated"))?;
    }
    let (&pps_count, rest) = rest.split_first().ok_or(FlvError::BadConfig("no PPS"))?;
    if pps_count == 0 {
        return Err(FlvError::BadConfig("no PPS"));
    }
    let (pps, _) = take_u16_prefixed(rest).ok_or(FlvError::BadConfig("PPS truncated"))?;
    if sps.is_empty() || pps.is_empty() {
        return Err(FlvError::BadConfig("empty SPS or PPS"));
    }
    Ok(AvcConfig {
        length_size,
        sps,
        pps,
    })
}

fn take_u16_prefixed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let [hi, lo, rest @ ..] = data else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The NAL units of a frame whose lengths are `length_size`-byte prefixes; stops at the first
/// prefix that runs past the end (the rest of a truncated frame is dropped).
pub fn nal_units(data: &[u8], length_size: u8) -> impl Iterator<Item = &[u8]> {
    let size = usize::from(length_size);
    let mut rest = data;
    std::iter::from_fn(move || loop {
        if rest.len() < size || size == 0 {
            return None;
        }
        let (prefix, after) = rest.split_at(size);
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if after.len() < len {
            rest = &[];
            return None;
        }
        let (nal, next) = after.split_at(len);
        rest = next;
        if !nal.is_empty() {
            return Some(nal);
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn audio_tags_say_aac_config_frame_or_which_format() {
        // 0xAF: AAC, 44 kHz, 16 bit, stereo.
        assert_eq!(
            parse_audio(&[0xAF, 0, 0x12, 0x10]),
            Ok(AudioTag::AacConfig(&[0x12, 0x10]))
        );
        assert_eq!(
            parse_audio(&[0xAF, 1, 0x21, 0x1B]),
            Ok(AudioTag::AacFrame(&[0x21, 0x1B]))
        );
        assert_eq!(parse_audio(&[0x2F, 0xFF]), Ok(AudioTag::Unsupported(2)));
        assert_eq!(parse_audio(&[0xAF]), Err(FlvError::Truncated));
        // RTMP's silence message.
        assert_eq!(parse_audio(&[]), Ok(AudioTag::Other));
    }

    /// An Enhanced RTMP audio message: ExHeader with `packet_type`, `fourcc`, `body`.
    pub(crate) fn ex_audio(packet_type: u8, fourcc: [u8; 4], body: &[u8]) -> Vec<u8> {
        [
            &[SOUND_FORMAT_EX_HEADER << 4 | packet_type][..],
            &fourcc,
            body,
        ]
        .concat()
    }

    /// An OpusHead (RFC 7845 §5.1) with mapping family 0.
    pub(crate) fn opus_head(channels: u8, input_rate: u32) -> Vec<u8> {
        let mut head = OPUS_HEAD_MAGIC.to_vec();
        head.extend_from_slice(&[1, channels]);
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&input_rate.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        head
    }

    #[test]
    fn enhanced_opus_gives_its_id_header_and_packets() {
        let head = opus_head(2, 44_100);
        assert_eq!(
            parse_audio(&ex_audio(AUDIO_PACKET_SEQUENCE_START, FOURCC_OPUS, &head)),
            Ok(AudioTag::OpusConfig(Some(OpusHead {
                channels: 2,
                pre_skip: 312,
                input_rate: 44_100,
                mapping_family: 0,
                streams: 1,
            })))
        );
        // No ID header: the spec's default, mono or stereo.
        assert_eq!(
            parse_audio(&ex_audio(AUDIO_PACKET_SEQUENCE_START, FOURCC_OPUS, &[])),
            Ok(AudioTag::OpusConfig(None))
        );
        assert_eq!(
            parse_audio(&ex_audio(
                AUDIO_PACKET_CODED_FRAMES,
                FOURCC_OPUS,
                &[0xFC, 1, 2]
            )),
            Ok(AudioTag::OpusFrame(&[0xFC, 1, 2]))
        );
        assert_eq!(
            parse_audio(&ex_audio(AUDIO_PACKET_SEQUENCE_END, FOURCC_OPUS, &[])),
            Ok(AudioTag::Other)
        );
        assert_eq!(
            parse_audio(&ex_audio(
                AUDIO_PACKET_MULTICHANNEL_CONFIG,
                FOURCC_OPUS,
                &[1, 6, 0]
            )),
            Ok(AudioTag::OpusChannels(6))
        );
        // The codec id onMetaData carries for it.
        assert_eq!(fourcc_codec_id(FOURCC_OPUS), 0x4F70_7573);
    }

    #[test]
    fn enhanced_audio_truncations_and_bad_id_headers_are_errors() {
        let full = ex_audio(AUDIO_PACKET_CODED_FRAMES, FOURCC_OPUS, &[0xFC]);
        for len in 1..full.len() {
            assert_eq!(parse_audio(&full[..len]), Err(FlvError::Truncated), "{len}");
        }
        let channels = ex_audio(AUDIO_PACKET_MULTICHANNEL_CONFIG, FOURCC_OPUS, &[1]);
        assert_eq!(parse_audio(&channels), Err(FlvError::Truncated));
        let head = opus_head(2, 48_000);
        for len in 1..OPUS_HEAD_LEN {
            let message = ex_audio(AUDIO_PACKET_SEQUENCE_START, FOURCC_OPUS, &head[..len]);
            assert_eq!(
                parse_audio(&message),
                Err(FlvError::BadOpusHead("shorter than its 19 bytes")),
                "{len}"
            );
        }
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut head = opus_head(2, 48_000);
            edit(&mut head);
            OpusHead::parse(&head)
        };
        assert_eq!(
            bad(&|h| h[0] = b'o'),
            Err(FlvError::BadOpusHead("no OpusHead signature"))
        );
        assert_eq!(
            bad(&|h| h[8] = 0x10),
            Err(FlvError::BadOpusHead("version not 0.x"))
        );
        assert_eq!(
            bad(&|h| h[9] = 0),
            Err(FlvError::BadOpusHead("no channels"))
        );
        assert_eq!(
            bad(&|h| h[9] = 6),
            Err(FlvError::BadOpusHead(
                "mapping family 0 with more than 2 channels"
            ))
        );
        assert_eq!(
            bad(&|h| h[18] = 1),
            Err(FlvError::BadOpusHead("channel mapping table missing"))
        );
        // Family 1, 6 channels in 4 streams (2 coupled), with its table: parses.
        let surround = bad(&|h| {
            h[9] = 6;
            h[18] = 1;
            h.extend_from_slice(&[4, 2, 0, 4, 1, 2, 3, 5]);
        });
        assert_eq!(surround.map(|h| (h.channels, h.streams)), Ok((6, 4)));
        assert_eq!(
            bad(&|h| {
                h[18] = 1;
                h.extend_from_slice(&[1, 2, 0]);
            }),
            Err(FlvError::BadOpusHead("bad channel mapping table"))
        );
    }

    #[test]
    fn enhanced_aac_is_read_as_classic_aac_and_other_audio_fourccs_are_named() {
        assert_eq!(
            parse_audio(&ex_audio(
                AUDIO_PACKET_SEQUENCE_START,
                FOURCC_AAC,
                &[0x12, 0x10]
            )),
            Ok(AudioTag::AacConfig(&[0x12, 0x10]))
        );
        assert_eq!(
            parse_audio(&ex_audio(AUDIO_PACKET_CODED_FRAMES, FOURCC_AAC, &[0x21])),
            Ok(AudioTag::AacFrame(&[0x21]))
        );
        for fourcc in [FOURCC_MP3, FOURCC_AC3, FOURCC_EAC3, FOURCC_FLAC] {
            let message = ex_audio(AUDIO_PACKET_SEQUENCE_START, fourcc, &[1, 2]);
            let refused = parse_audio(&message);
            assert_eq!(refused, Err(FlvError::UnsupportedAudioFourCc(fourcc)));
            let text = refused.unwrap_err().to_string();
            assert!(
                text.contains(std::str::from_utf8(&fourcc).unwrap())
                    && text.contains("not supported yet"),
                "{text}"
            );
        }
        // Multitrack and ModEx put more before the FourCC; reserved types mean nothing yet.
        for packet_type in [AUDIO_PACKET_MULTITRACK, AUDIO_PACKET_MOD_EX] {
            let message = ex_audio(packet_type, FOURCC_OPUS, &[0; 8]);
            assert_eq!(
                parse_audio(&message),
                Err(FlvError::UnsupportedAudioPacket(packet_type))
            );
        }
        let reserved = ex_audio(3, FOURCC_OPUS, &[1]);
        assert_eq!(
            parse_audio(&reserved),
            Err(FlvError::UnsupportedAudioPacket(3))
        );
        assert_eq!(
            FlvError::UnsupportedAudioPacket(AUDIO_PACKET_MULTITRACK).to_string(),
            "Enhanced RTMP audio packet type 5 (multitrack) is not supported"
        );
    }

    /// An AVC sequence header video message with this SPS and PPS.
    pub(crate) fn config_message(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut m = vec![0x17, 0, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
        m.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        m.extend_from_slice(sps);
        m.push(1);
        m.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        m.extend_from_slice(pps);
        m
    }

    #[test]
    fn sequence_header_gives_sps_pps_and_profile() {
        let sps = [0x67, 0x42, 0xC0, 0x1E, 0xAA];
        let pps = [0x68, 0xCE, 0x3C, 0x80];
        let message = config_message(&sps, &pps);
        let VideoTag::AvcConfig(config) = parse_video(&message).unwrap() else {
            panic!("not a config");
        };
        assert_eq!(config.length_size, 4);
        assert_eq!(config.sps, sps);
        assert_eq!(config.pps, pps);
        assert_eq!(config.profile_level_id(), "42c01e");
    }

    #[test]
    fn frames_give_keyframe_composition_time_and_nal_units() {
        let message = [
            0x27, 1, 0xFF, 0xFF, 0xD8, // inter frame, composition time -40
            0, 0, 0, 2, 0x41, 0x9A, 0, 0, 0, 1, 0x06, // two NAL units
        ];
        let VideoTag::AvcFrame {
            keyframe,
            composition_ms,
            nalus,
        } = parse_video(&message).unwrap()
        else {
            panic!("not a frame");
        };
        assert!(!keyframe);
        assert_eq!(composition_ms, -40);
        let units: Vec<&[u8]> = nal_units(nalus, 4).collect();
        assert_eq!(units, [&[0x41, 0x9A][..], &[0x06][..]]);
        // A length running past the end stops the list.
        assert_eq!(nal_units(&[0, 0, 0, 9, 1], 4).count(), 0);
    }

    #[test]
    fn other_codecs_and_enhanced_rtmp_fourccs_are_named() {
        assert_eq!(parse_video(&[0x22, 0]), Err(FlvError::UnsupportedCodec(2)));
        for fourcc in [*b"vp08", *b"\0\x01ab"] {
            let message = ex_video(VIDEO_PACKET_SEQUENCE_START, fourcc, &[1]);
            let refused = parse_video(&message);
            assert_eq!(refused, Err(FlvError::UnsupportedFourCc(fourcc)));
        }
        assert_eq!(
            FlvError::UnsupportedFourCc(*b"vp08").to_string(),
            "Enhanced RTMP video \"vp08\" is not supported: rtcdn takes avc1 (H.264), hvc1 (H.265), vp09 (VP9) and av01 (AV1) over Enhanced RTMP"
        );
        assert_eq!(parse_video(&[]), Err(FlvError::Truncated));
        assert_eq!(parse_video(&[0x17, 2, 0, 0, 0]), Ok(VideoTag::Other));
    }

    /// An Enhanced RTMP keyframe video message: ExHeader with `packet_type`, `fourcc`, `body`.
    pub(crate) fn ex_video(packet_type: u8, fourcc: [u8; 4], body: &[u8]) -> Vec<u8> {
        let first = VIDEO_EX_HEADER | VIDEO_FRAME_KEY << 4 | packet_type;
        [&[first][..], &fourcc, body].concat()
    }

    /// x265's VPS, SPS and PPS for 320x240 4:2:0 8-bit Main, level 2 (60).
    pub(crate) const X265_VPS: [u8; 24] = [
        0x40, 0x01, 0x0C, 0x01, 0xFF, 0xFF, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x3C, 0xBA, 0x02, 0x40,
    ];
    pub(crate) const X265_SPS: [u8; 40] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3C, 0xA0, 0x0A, 0x08, 0x0F, 0x16, 0x5B, 0xA4, 0xA4, 0xC2, 0xF0, 0x16, 0x80,
        0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0F, 0x04,
    ];
    pub(crate) const X265_PPS: [u8; 6] = [0x44, 0x01, 0xC0, 0x73, 0xC1, 0x89];

    /// An hvcC as ffmpeg's muxer writes it for x265's parameter sets, with an SEI array
    /// (type 39) first, which the parser skips.
    pub(crate) fn x265_hvcc() -> Vec<u8> {
        let mut record = vec![
            0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3C, 0xF0,
            0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F, 0x04,
        ];
        for (kind, nals) in [
            (
                39u8,
                vec![&[0x4E, 0x01, 0x05, 0x80][..], &[0x4E, 0x01, 0x06][..]],
            ),
            (32, vec![&X265_VPS[..]]),
            (33, vec![&X265_SPS[..]]),
            (34, vec![&X265_PPS[..]]),
        ] {
            record.push(0x80 | kind);
            record.extend_from_slice(&(nals.len() as u16).to_be_bytes());
            for nal in nals {
                record.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                record.extend_from_slice(nal);
            }
        }
        record
    }

    #[test]
    fn hvc1_sequence_start_and_frames_read_like_avc1() {
        let record = x265_hvcc();
        let start = ex_video(VIDEO_PACKET_SEQUENCE_START, FOURCC_HEVC, &record);
        let Ok(VideoTag::HevcConfig(config)) = parse_video(&start) else {
            panic!("not an hvcC: {:?}", parse_video(&start));
        };
        assert_eq!(
            (config.vps, config.sps, config.pps),
            (&X265_VPS[..], &X265_SPS[..], &X265_PPS[..])
        );
        assert_eq!(config.length_size, 4);
        assert_eq!(
            (
                config.chroma_format_idc,
                config.bit_depth_luma_minus8,
                config.bit_depth_chroma_minus8
            ),
            (1, 0, 0)
        );
        assert_eq!(
            config.sdp_profile(),
            HevcSdpProfile {
                profile_id: 1,
                tier_flag: 0,
                level_id: 60
            }
        );
        // What the writer makes reads back the same (its arrays are the three sets alone).
        let written = config.write();
        assert_eq!(HevcConfig::parse(&written), Ok(config));
        // Everything but the array count matches ffmpeg's header.
        assert_eq!(
            written[..HEVC_CONFIG_HEADER - 1],
            record[..HEVC_CONFIG_HEADER - 1]
        );
        let nalus = [0, 0, 0, 3, 0x26, 0x01, 0xAF];
        let coded = ex_video(
            VIDEO_PACKET_CODED_FRAMES,
            FOURCC_HEVC,
            &[&[0x00, 0x00, 0x21][..], &nalus].concat(),
        );
        assert_eq!(
            parse_video(&coded),
            Ok(VideoTag::HevcFrame {
                keyframe: true,
                composition_ms: 33,
                nalus: &nalus
            })
        );
        let mut coded_x = ex_video(VIDEO_PACKET_CODED_FRAMES_X, FOURCC_HEVC, &nalus);
        coded_x[0] = VIDEO_EX_HEADER | VIDEO_FRAME_INTER << 4 | VIDEO_PACKET_CODED_FRAMES_X;
        assert_eq!(
            parse_video(&coded_x),
            Ok(VideoTag::HevcFrame {
                keyframe: false,
                composition_ms: 0,
                nalus: &nalus
            })
        );
        assert_eq!(
            parse_video(&ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_HEVC, &[0, 0])),
            Err(FlvError::Truncated)
        );
    }

    #[test]
    fn bad_hvcc_records_are_named_and_every_truncation_is_an_error() {
        let record = x265_hvcc();
        for len in 0..record.len() {
            assert!(
                matches!(
                    HevcConfig::parse(&record[..len]),
                    Err(FlvError::BadHevcConfig(_))
                ),
                "{len} bytes"
            );
        }
        let mut three = record.clone();
        three[21] = 0xFE;
        assert_eq!(
            HevcConfig::parse(&three),
            Err(FlvError::BadHevcConfig("NAL length size 3"))
        );
        let mut no_pps = record.clone();
        no_pps[22] = 3;
        assert_eq!(
            HevcConfig::parse(&no_pps),
            Err(FlvError::BadHevcConfig("no VPS, SPS or PPS"))
        );
        let mut version = record;
        version[0] = 2;
        assert_eq!(
            HevcConfig::parse(&version),
            Err(FlvError::BadHevcConfig("version above 1"))
        );
    }

    #[test]
    fn enhanced_avc1_reads_as_classic_avc() {
        let sps = [0x67, 0x64, 0x00, 0x1F, 0xAC];
        let pps = [0x68, 0xEE, 0x3C, 0x80];
        // The classic sequence header's record, behind an ExHeader and `avc1`.
        let record = &config_message(&sps, &pps)[5..];
        let start = ex_video(VIDEO_PACKET_SEQUENCE_START, FOURCC_AVC, record);
        let VideoTag::AvcConfig(config) = parse_video(&start).unwrap() else {
            panic!("not a config");
        };
        assert_eq!((config.sps, config.pps), (&sps[..], &pps[..]));
        assert_eq!(config.profile_level_id(), "64001f");
        let nalus = [0, 0, 0, 2, 0x65, 0x88];
        // CodedFrames: an SI24 composition time (here -40) before the NAL units.
        let coded = ex_video(
            VIDEO_PACKET_CODED_FRAMES,
            FOURCC_AVC,
            &[&[0xFF, 0xFF, 0xD8][..], &nalus].concat(),
        );
        assert_eq!(
            parse_video(&coded),
            Ok(VideoTag::AvcFrame {
                keyframe: true,
                composition_ms: -40,
                nalus: &nalus
            })
        );
        // CodedFramesX: none, zero.
        let mut coded_x = ex_video(VIDEO_PACKET_CODED_FRAMES_X, FOURCC_AVC, &nalus);
        coded_x[0] = VIDEO_EX_HEADER | VIDEO_FRAME_INTER << 4 | VIDEO_PACKET_CODED_FRAMES_X;
        assert_eq!(
            parse_video(&coded_x),
            Ok(VideoTag::AvcFrame {
                keyframe: false,
                composition_ms: 0,
                nalus: &nalus
            })
        );
        for packet_type in [VIDEO_PACKET_SEQUENCE_END, VIDEO_PACKET_METADATA] {
            let message = ex_video(packet_type, FOURCC_AVC, &[2, 0, 0]);
            assert_eq!(parse_video(&message), Ok(VideoTag::Other));
        }
        // A command frame: one command byte, no FourCC.
        let command = VIDEO_EX_HEADER | VIDEO_FRAME_COMMAND << 4 | VIDEO_PACKET_CODED_FRAMES;
        assert_eq!(parse_video(&[command, 0]), Ok(VideoTag::Other));
    }

    #[test]
    fn vp09_sequence_start_and_frames() {
        let config = Vp9Config {
            profile: 2,
            level: 31,
            bit_depth: 10,
            chroma_subsampling: 1,
            full_range: true,
            colour_primaries: 9,
            transfer_characteristics: 16,
            matrix_coefficients: 9,
        };
        let start = ex_video(VIDEO_PACKET_SEQUENCE_START, FOURCC_VP9, &config.write());
        assert_eq!(parse_video(&start), Ok(VideoTag::Vp9Config(config)));
        // ffmpeg's bytes for an 8-bit 4:2:0 profile 0 stream.
        let ffmpeg = [1, 0, 0, 0, 0, 31, 0x82, 2, 2, 2, 0, 0];
        let VideoTag::Vp9Config(read) = parse_video(&ex_video(0, FOURCC_VP9, &ffmpeg)).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (read.profile, read.bit_depth, read.chroma_subsampling),
            (0, 8, 1)
        );
        let frame = [0x82, 0x49, 0x83, 0x42, 0x00];
        assert_eq!(
            parse_video(&ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_VP9, &frame)),
            Ok(VideoTag::Vp9Frame {
                keyframe: true,
                frame: &frame
            })
        );
        for bad in [
            &[1, 0, 0, 0, 0][..],
            &[0; 12],
            &[1, 0, 0, 0, 4, 0, 0x80, 0, 0, 0],
        ] {
            let message = ex_video(VIDEO_PACKET_SEQUENCE_START, FOURCC_VP9, bad);
            assert!(matches!(
                parse_video(&message),
                Err(FlvError::BadVp9Config(_))
            ));
        }
        let empty = ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_VP9, &[]);
        assert_eq!(parse_video(&empty), Err(FlvError::Truncated));
    }

    #[test]
    fn av01_sequence_start_and_temporal_units() {
        // libaom's 8-bit 4:2:0 main profile at level 4.0, then a sequence header OBU.
        let obus = [0x0A, 0x03, 0x00, 0x00, 0x00];
        let body = [&[0x81, 0x08, 0x0C, 0x00][..], &obus].concat();
        let config = Av1Config {
            seq_profile: 0,
            seq_level_idx_0: 8,
            seq_tier_0: false,
            high_bitdepth: false,
            twelve_bit: false,
            monochrome: false,
            chroma_subsampling_x: true,
            chroma_subsampling_y: true,
            chroma_sample_position: 0,
            initial_presentation_delay_minus_one: None,
            config_obus: &obus,
        };
        let start = ex_video(VIDEO_PACKET_SEQUENCE_START, FOURCC_AV1, &body);
        assert_eq!(parse_video(&start), Ok(VideoTag::Av1Config(config)));
        assert_eq!(config.write(), body);
        // Every field set goes round.
        let full = Av1Config {
            seq_profile: 2,
            seq_level_idx_0: 31,
            seq_tier_0: true,
            high_bitdepth: true,
            twelve_bit: true,
            monochrome: true,
            chroma_subsampling_x: false,
            chroma_subsampling_y: true,
            chroma_sample_position: 2,
            initial_presentation_delay_minus_one: Some(9),
            config_obus: &[],
        };
        assert_eq!(Av1Config::parse(&full.write()), Ok(full));
        let tu = [0x32, 0x01, 0xAA];
        let mut coded = ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_AV1, &tu);
        coded[0] = VIDEO_EX_HEADER | VIDEO_FRAME_INTER << 4 | VIDEO_PACKET_CODED_FRAMES;
        assert_eq!(
            parse_video(&coded),
            Ok(VideoTag::Av1Frame {
                keyframe: false,
                obus: &tu
            })
        );
        for bad in [&[0x81, 0, 0][..], &[0x01, 0, 0, 0], &[0x82, 0, 0, 0]] {
            let message = ex_video(VIDEO_PACKET_SEQUENCE_START, FOURCC_AV1, bad);
            assert!(matches!(
                parse_video(&message),
                Err(FlvError::BadAv1Config(_))
            ));
        }
        let empty = ex_video(VIDEO_PACKET_CODED_FRAMES_X, FOURCC_AV1, &[]);
        assert_eq!(parse_video(&empty), Err(FlvError::Truncated));
    }

    #[test]
    fn enhanced_video_truncations_multitrack_and_modex_are_errors() {
        let coded = ex_video(VIDEO_PACKET_CODED_FRAMES, FOURCC_AVC, &[0, 0, 0]);
        for len in 1..coded.len() {
            assert_eq!(
                parse_video(&coded[..len]),
                Err(FlvError::Truncated),
                "{len}"
            );
        }
        let start = ex_video(VIDEO_PACKET_SEQUENCE_START, FOURCC_AVC, &[1, 0x42]);
        assert!(matches!(parse_video(&start), Err(FlvError::BadConfig(_))));
        for packet_type in 5..=15 {
            let message = ex_video(packet_type, FOURCC_AVC, &[0; 12]);
            assert_eq!(
                parse_video(&message),
                Err(FlvError::UnsupportedVideoPacket(packet_type))
            );
        }
        assert_eq!(
            FlvError::UnsupportedVideoPacket(VIDEO_PACKET_MULTITRACK).to_string(),
            "Enhanced RTMP video packet type 6 (multitrack) is not supported"
        );
    }
}
