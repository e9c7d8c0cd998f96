//! FLV video and audio tag bodies as RTMP carries them (the FLV file format spec, E.4.2 and
//! E.4.3): which codec, a frame's type, for H.264 (AVC) the decoder configuration record or the
//! frame's length-prefixed NAL units with their composition time, and for AAC the
//! AudioSpecificConfig or a raw frame. Borrowing parsers; nothing copied.

/// Why a video message was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// Shorter than its headers.
    #[error("FLV tag body too short")]
    Truncated,
    /// A classic FLV codec other than AVC (Sorenson, VP6, screen video, HEVC by id 12, ...).
    #[error("video codec id {0} is not supported (only H.264/AVC)")]
    UnsupportedCodec(u8),
    /// An Enhanced RTMP (FourCC) video message: not supported yet.
    #[error("Enhanced RTMP video {0:?} is not supported yet (only classic H.264/AVC)")]
    UnsupportedFourCc([u8; 4]),
    /// An AVCDecoderConfigurationRecord that does not parse.
    #[error("bad AVC decoder configuration record: {0}")]
    BadConfig(&'static str),
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
    /// End of sequence, or a command/info frame: nothing to forward.
    Other,
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

/// One audio message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// The AAC sequence header: an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
    /// A classic FLV sound format other than AAC (MP3, Speex, G.711, ...), by its id, or an
    /// Enhanced RTMP (FourCC) audio message (id 9).
    Unsupported(u8),
}

/// FLV SoundFormat 10: AAC.
const SOUND_FORMAT_AAC: u8 = 10;
/// FLV SoundFormat 9: Enhanced RTMP's ExHeader (a FourCC follows).
const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// Parses an audio message's body.
pub fn parse_audio(data: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let (&first, rest) = data.split_first().ok_or(FlvError::Truncated)?;
    match first >> 4 {
        SOUND_FORMAT_AAC => match rest.split_first() {
            Some((0, config)) => Ok(AudioTag::AacConfig(config)),
            Some((_, frame)) => Ok(AudioTag::AacFrame(frame)),
            None => Err(FlvError::Truncated),
        },
        SOUND_FORMAT_EX_HEADER => Ok(AudioTag::Unsupported(SOUND_FORMAT_EX_HEADER)),
        format => Ok(AudioTag::Unsupported(format)),
    }
}

/// Parses a video message's body.
pub fn parse_video(data: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let (&first, rest) = data.split_first().ok_or(FlvError::Truncated)?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader, then the packet type and a FourCC.
        let fourcc = rest.get(..4).ok_or(FlvError::Truncated)?;
        return Err(FlvError::UnsupportedFourCc([
            fourcc[0], fourcc[1], fourcc[2], fourcc[3],
        ]));
    }
    let frame_type = first >> 4;
    let codec = first & 0x0F;
    if frame_type == 5 {
        // A video info/command frame carries no picture, whatever its codec id.
        return Ok(VideoTag::Other);
    }
    if codec != 7 {
        return Err(FlvError::UnsupportedCodec(codec));
    }
    let [packet_type, c0, c1, c2, body @ ..] = rest else {
        return Err(FlvError::Truncated);
    };
    match packet_type {
        0 => parse_avc_config(body).map(VideoTag::AvcConfig),
        1 => {
            // SI24, sign-extended.
            let composition_ms = i32::from_be_bytes([*c0, *c1, *c2, 0]) >> 8;
            Ok(VideoTag::AvcFrame {
                keyframe: frame_type == 1,
                composition_ms,
                nalus: body,
            })
        }
        _ => Ok(VideoTag::Other),
    }
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
mod tests {
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
        assert_eq!(parse_audio(&[0x90, 0, 0, 0]), Ok(AudioTag::Unsupported(9)));
        assert_eq!(parse_audio(&[0xAF]), Err(FlvError::Truncated));
        assert_eq!(parse_audio(&[]), Err(FlvError::Truncated));
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
    fn other_codecs_and_enhanced_rtmp_are_named() {
        assert_eq!(parse_video(&[0x22, 0]), Err(FlvError::UnsupportedCodec(2)));
        assert_eq!(
            parse_video(&[0x90, b'h', b'v', b'c', b'1']),
            Err(FlvError::UnsupportedFourCc(*b"hvc1"))
        );
        assert_eq!(parse_video(&[]), Err(FlvError::Truncated));
        assert_eq!(parse_video(&[0x17, 2, 0, 0, 0]), Ok(VideoTag::Other));
    }
}
