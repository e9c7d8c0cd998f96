//! The parsed view of a session description that the rest of the server works with.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::error::SdpError;

/// What rtcdn needs from an offer (or, on its client side, from an answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// The SHA-256 DTLS fingerprint. `None` only when every m-line is rejected (port 0).
    pub fingerprint: Option<Fingerprint>,
    /// `a=setup`; RFC 4145 §4 default `Active` when absent.
    pub setup: Setup,
    pub ice_lite: bool,
    /// Host UDP candidates (component 1, literal IP) found, without duplicates, in SDP order.
    pub candidates: Vec<SocketAddr>,
    /// Host passive TCP candidates (RFC 6544, component 1, literal IP): where an active side
    /// connects. Deduplicated, in SDP order.
    pub tcp_candidates: Vec<SocketAddr>,
    /// Audio and video m-lines, in SDP order.
    pub media: Vec<MediaDescription>,
    /// m-lines rtcdn cannot use at all (data channels, unknown media types). `write_answer`
    /// answers each with port 0 at its original position, so callers only handle `media`.
    pub other_media: Vec<OtherMedia>,
    /// The mids of the `a=group:BUNDLE` line, in order; empty when there is none.
    pub bundle_mids: Vec<String>,
}

/// A SHA-256 certificate fingerprint (RFC 8122). Other hash functions are rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// The DTLS role negotiation attribute (RFC 4145, RFC 5763).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

/// The media direction attribute, from the point of view of the SDP's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One audio or video m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub mid: String,
    pub kind: MediaKind,
    pub direction: Direction,
    /// The author rejected or disabled this m-line (port 0 without `a=bundle-only`).
    pub port_zero: bool,
    pub rtcp_mux: bool,
    /// `a=rtcp-rsize` (RFC 5506) was present.
    pub rtcp_rsize: bool,
    /// The transport protocol of the m-line, e.g. `UDP/TLS/RTP/SAVPF`.
    pub proto: String,
    /// In m-line order; rtx codecs are folded into their primary's `rtx_pt`.
    pub codecs: Vec<Codec>,
    pub extmaps: Vec<Extmap>,
    /// Primary media SSRCs (without the rtx and FEC-FR secondaries), in SDP order.
    pub ssrcs: Vec<u32>,
    /// `(media, rtx)` pairs from `a=ssrc-group:FID`.
    pub rtx_ssrcs: Vec<(u32, u32)>,
    pub cname: Option<String>,
    /// The `a=msid` value (`<stream id> <track id>`), else the first `a=ssrc:<n> msid:` value.
    pub msid: Option<String>,
    /// The simulcast layers the author sends (RFC 8853 `a=simulcast:send`), each with an
    /// `a=rid:<id> send` line (RFC 8851), in the `a=simulcast` order; empty without simulcast.
    pub send_rids: Vec<String>,
    /// The simulcast layers the author receives (`a=simulcast:recv`, `a=rid:<id> recv`): in an
    /// answer, those of the offer's layers it took.
    pub recv_rids: Vec<String>,
}

/// An m-line that is neither audio nor video (e.g. `m=application ... webrtc-datachannel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherMedia {
    /// Position among all m-lines of the SDP (0-based).
    pub index: usize,
    /// The media type token, e.g. `application`.
    pub media_type: String,
    pub proto: String,
    /// The raw format list of the m-line.
    pub fmt: String,
    pub mid: Option<String>,
}

/// One RTP payload format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub pt: u8,
    /// The encoding name as written in `a=rtpmap`, e.g. `VP8`, `H264`, `opus`.
    pub name: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
    /// The `a=fmtp` parameters, without the payload type.
    pub fmtp: Option<String>,
    /// The `a=rtcp-fb` values for this payload type (including `*` ones), e.g. `nack pli`.
    pub rtcp_fb: Vec<String>,
    /// The payload type of the rtx format (RFC 4588) whose `apt` points at this codec.
    pub rtx_pt: Option<u8>,
}

/// An RTP header extension mapping (RFC 8285).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extmap {
    pub id: u8,
    pub uri: String,
}

/// The RTP stream id extension (RFC 8852): a simulcast layer's rid in its packets.
pub const EXT_RTP_STREAM_ID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// The repaired RTP stream id extension (RFC 8852): the rid an RTX packet repairs.
pub const EXT_REPAIRED_RTP_STREAM_ID: &str =
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// A track that the author of the SDP sends on an m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTrack {
    pub ssrc: u32,
    /// Written as `a=ssrc-group:FID <ssrc> <rtx_ssrc>` when set; needed when rtx is negotiated.
    pub rtx_ssrc: Option<u32>,
    pub cname: String,
    pub stream_id: String,
    pub track_id: String,
}

impl SessionDescription {
    /// The audio/video m-line with this mid.
    pub fn media_by_mid(&self, mid: &str) -> Option<&MediaDescription> {
        self.media.iter().find(|m| m.mid == mid)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = SdpError;

    /// Parses `AB:CD:...` (32 colon-separated hex bytes, either case).
    fn from_str(s: &str) -> Result<Self, SdpError> {
        let invalid = || SdpError::Syntax(format!("invalid sha-256 fingerprint \"{}\"", clip(s)));
        let mut bytes = [0u8; 32];
        let mut parts = s.trim().split(':');
        for byte in bytes.iter_mut() {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(bytes))
    }
}

impl Setup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::ActPass => "actpass",
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MediaKind {
    /// The m-line media token: `audio` or `video`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction seen from the other side: what an answer mirrors (RFC 3264 §6.1).
    pub fn reversed(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            other => other,
        }
    }

    /// The author of the SDP sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// The author of the SDP receives media.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Codec {
    /// A codec with no fmtp, feedback or rtx.
    pub fn new(pt: u8, name: &str, clock_rate: u32, channels: Option<u16>) -> Self {
        Self {
            pt,
            name: name.to_owned(),
            clock_rate,
            channels,
            fmtp: None,
            rtcp_fb: Vec::new(),
            rtx_pt: None,
        }
    }

    /// The value of one `key=value` fmtp parameter (key compared case-insensitively).
    pub fn fmtp_param(&self, key: &str) -> Option<&str> {
        fmtp_param(self.fmtp.as_deref()?, key)
    }

    /// The name compared case-insensitively (`opus` vs GStreamer's `OPUS`).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// The value of `key` in an fmtp parameter list such as `minptime=10;useinbandfec=1`.
pub(crate) fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|param| param.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
}

/// Shortens untrusted text quoted in an error message (those go back to HTTP clients).
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
