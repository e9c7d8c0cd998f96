//! Codec selection: what a publisher may send, and which of a player's payload types carries a
//! published stream unchanged (rtcdn forwards, it never transcodes).

use super::error::SdpError;
use super::types::{clip, Codec, Extmap, MediaDescription, MediaKind};

/// `urn:ietf:params:rtp-hdrext:sdes:mid` (RFC 8843 §15.2).
pub const EXT_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// Absolute send time, used by REMB bandwidth estimation.
pub const EXT_ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// Transport-wide sequence numbers, used by transport-cc feedback.
pub const EXT_TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Audio level (RFC 6464).
pub const EXT_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// For a publisher's offer: the first codec in offer order that rtcdn can forward.
///
/// Audio: opus/48000/2. Video: VP8, H264 with packetization-mode=1, H265 in one RTP stream
/// without decoding order numbers (RFC 7798: tx-mode SRST, sprop-max-don-diff 0), VP9, AV1.
pub fn choose_publish_codec(media: &MediaDescription) -> Option<Codec> {
    media
        .codecs
        .iter()
        .find(|c| is_forwardable(media.kind, c))
        .cloned()
}

/// For a player's offer: the offered codec (with the offer's payload type, fmtp, feedback and
/// rtx) that can carry `published` unchanged.
///
/// Name (case-insensitive), clock rate and channels must be equal. H264 also needs an equal
/// packetization-mode and a compatible profile-level-id: an exact match is preferred, else the
/// same profile at any level (libwebrtc's profile classes, so constrained baseline `42c01f`
/// matches `42e01f`; equal profile_idc and profile-iop when unclassified). H265 needs the same
/// profile-id (default 1) and tier-flag (default 0) and a level-id (the highest the player
/// decodes, default 93) at least the published one's. VP9 and AV1 need the same profile
/// (default 0).
pub fn match_play_codec(media: &MediaDescription, published: &Codec) -> Result<Codec, SdpError> {
    let mut compatible = None;
    for codec in &media.codecs {
        match compatibility(codec, published) {
            Compatibility::Exact => return Ok(codec.clone()),
            Compatibility::SameProfile => {
                compatible.get_or_insert(codec);
            }
            Compatibility::None => {}
        }
    }
    compatible.cloned().ok_or_else(|| SdpError::NoCommonCodec {
        kind: media.kind,
        wanted: describe(published),
    })
}

/// The offered extensions whose URI is in `uris`, with the offer's ids (RFC 8285 §6: an
/// answer keeps the offerer's ids).
pub fn select_extmaps(media: &MediaDescription, uris: &[&str]) -> Vec<Extmap> {
    media
        .extmaps
        .iter()
        .filter(|e| uris.contains(&e.uri.as_str()))
        .cloned()
        .collect()
}

fn is_forwardable(kind: MediaKind, codec: &Codec) -> bool {
    match kind {
        MediaKind::Audio => {
            codec.is("opus") && codec.clock_rate == 48_000 && codec.channels == Some(2)
        }
        MediaKind::Video => {
            codec.clock_rate == 90_000
                && (codec.is("VP8")
                    || codec.is("VP9")
                    || codec.is("AV1")
                    || (codec.is("H264") && packetization_mode(codec) == "1")
                    || (codec.is("H265") && h265_single_stream_without_don(codec)))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compatibility {
    Exact,
    SameProfile,
    None,
}

fn compatibility(offered: &Codec, published: &Codec) -> Compatibility {
    let same_base = offered.name.eq_ignore_ascii_case(&published.name)
        && offered.clock_rate == published.clock_rate
        && offered.channels.unwrap_or(1) == published.channels.unwrap_or(1);
    if !same_base {
        return Compatibility::None;
    }
    if published.is("H264") {
        return h264_compatibility(offered, published);
    }
    if published.is("H265") {
        return h265_compatibility(offered, published);
    }
    let profile_key = match () {
        _ if published.is("VP9") => "profile-id",
        _ if published.is("AV1") => "profile",
        _ => return Compatibility::Exact,
    };
    let profile = |c: &Codec| c.fmtp_param(profile_key).unwrap_or("0").to_owned();
    if profile(offered) == profile(published) {
        Compatibility::Exact
    } else {
        Compatibility::None
    }
}

fn h264_compatibility(offered: &Codec, published: &Codec) -> Compatibility {
    if packetization_mode(offered) != packetization_mode(published) {
        return Compatibility::None;
    }
    let (Some(offered), Some(published)) = (profile_level_id(offered), profile_level_id(published))
    else {
        return Compatibility::None;
    };
    if offered == published {
        return Compatibility::Exact;
    }
    let same_profile = match (h264_profile(offered), h264_profile(published)) {
        (Some(a), Some(b)) => a == b,
        _ => offered[..2] == published[..2],
    };
    if same_profile {
        Compatibility::SameProfile
    } else {
        Compatibility::None
    }
}

/// RFC 7798 §7.1: one RTP stream (tx-mode SRST, the default) and no DONL fields
/// (sprop-max-don-diff 0, the default). Packets with DONL fields would be read wrongly by the
/// node's keyframe detection, and players would be sent them undeclared.
fn h265_single_stream_without_don(codec: &Codec) -> bool {
    codec
        .fmtp_param("tx-mode")
        .is_none_or(|mode| mode.eq_ignore_ascii_case("SRST"))
        && codec
            .fmtp_param("sprop-max-don-diff")
            .is_none_or(|diff| diff == "0")
}

/// RFC 7798 §7.1 defaults: profile-id 1 (Main), tier-flag 0, level-id 93 (level 3.1).
fn h265_profile_tier_level(codec: &Codec) -> Option<(u8, u8, u8)> {
    let param = |key: &str, default: u8| match codec.fmtp_param(key) {
        None => Some(default),
        Some(value) => value.parse().ok(),
    };
    Some((
        param("profile-id", 1)?,
        param("tier-flag", 0)?,
        param("level-id", 93)?,
    ))
}

fn h265_compatibility(offered: &Codec, published: &Codec) -> Compatibility {
    let (Some(offered), Some(published)) = (
        h265_profile_tier_level(offered),
        h265_profile_tier_level(published),
    ) else {
        return Compatibility::None;
    };
    let (profile, tier, level) = offered;
    if (profile, tier) != (published.0, published.1) || level < published.2 {
        Compatibility::None
    } else if level == published.2 {
        Compatibility::Exact
    } else {
        Compatibility::SameProfile
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    PredictiveHigh444,
}

/// The profile that `profile_idc` and the constraint flags (profile-iop) denote, as libwebrtc
/// classifies them (`h264_profile_level_id.cc`): e.g. 42e0, 42c0 and 4d80 are all constrained
/// baseline. Each pattern lists profile-iop bits from bit 7 down; `x` is "any".
fn h264_profile([profile_idc, iop, _level]: [u8; 3]) -> Option<H264Profile> {
    use H264Profile::*;
    const PATTERNS: [(u8, &str, H264Profile); 9] = [
        (0x42, "x1xx0000", ConstrainedBaseline),
        (0x4d, "1xxx0000", ConstrainedBaseline),
        (0x58, "11xx0000", ConstrainedBaseline),
        (0x42, "x0xx0000", Baseline),
        (0x58, "10xx0000", Baseline),
        (0x4d, "0x0x0000", Main),
        (0x64, "00000000", High),
        (0x64, "00001100", ConstrainedHigh),
        (0xf4, "00000000", PredictiveHigh444),
    ];
    let matches = |pattern: &str| {
        pattern.bytes().enumerate().all(|(i, bit)| {
            let set = iop & (0x80 >> i) != 0;
            bit == b'x' || (bit == b'1') == set
        })
    };
    PATTERNS
        .iter()
        .find(|(idc, pattern, _)| *idc == profile_idc && matches(pattern))
        .map(|&(_, _, profile)| profile)
}

/// RFC 6184 §8.1: packetization-mode defaults to 0.
fn packetization_mode(codec: &Codec) -> &str {
    codec.fmtp_param("packetization-mode").unwrap_or("0")
}

/// `[profile_idc, profile-iop, level_idc]`; RFC 6184 §8.1 default 42000A when absent.
pub(crate) fn profile_level_id(codec: &Codec) -> Option<[u8; 3]> {
    let hex = codec.fmtp_param("profile-level-id").unwrap_or("42000a");
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// A short human description of a codec for error messages, e.g.
/// `H264/90000 (packetization-mode=1;profile-level-id=42e01f)`.
fn describe(codec: &Codec) -> String {
    let mut text = format!("{}/{}", codec.name, codec.clock_rate);
    if let Some(channels) = codec.channels {
        text.push_str(&format!("/{channels}"));
    }
    let keys: &[&str] = if codec.is("H264") {
        &["packetization-mode", "profile-level-id"]
    } else if codec.is("H265") {
        &["profile-id", "tier-flag", "level-id"]
    } else if codec.is("VP9") {
        &["profile-id"]
    } else if codec.is("AV1") {
        &["profile"]
    } else {
        &[]
    };
    let params: Vec<String> = keys
        .iter()
        .filter_map(|k| codec.fmtp_param(k).map(|v| format!("{k}={v}")))
        .collect();
    if !params.is_empty() {
        text.push_str(&format!(" ({})", params.join(";")));
    }
    clip(&text)
}
