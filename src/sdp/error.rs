//! Errors of the SDP module. Their `Display` text is sent to HTTP clients as the reason of a 400,
//! so each one says what is wrong with the SDP in plain words.

use super::types::MediaKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The caller's answer does not fit the offer (a bug in the caller, not bad input).
    #[error("internal error: the answer does not match the offer: {0}")]
    AnswerMismatch(String),
    #[error("duplicate a=mid:{0}")]
    DuplicateMid(String),
    #[error("invalid ICE credentials: {0}")]
    InvalidIceCredentials(String),
    #[error("the SDP has no ICE credentials (a=ice-ufrag and a=ice-pwd)")]
    MissingIceCredentials,
    #[error("the SDP has no DTLS fingerprint (a=fingerprint:sha-256 ...)")]
    MissingFingerprint,
    #[error("the {kind} m-line number {index} has no a=mid")]
    MissingMid { kind: MediaKind, index: usize },
    #[error("no common {kind} codec: the offer does not accept {wanted}")]
    NoCommonCodec { kind: MediaKind, wanted: String },
    #[error("the SDP has no audio or video m-line")]
    NoMedia,
    #[error("m-line with a=mid:{mid} is not in the a=group:BUNDLE line; rtcdn requires BUNDLE")]
    NotBundled { mid: String },
    #[error("m-line with a=mid:{mid} lacks a=rtcp-mux; rtcdn requires RTP/RTCP multiplexing")]
    RtcpMuxRequired { mid: String },
    #[error("malformed SDP: {0}")]
    Syntax(String),
    #[error("the SDP is too large ({len} bytes; at most {max} are accepted)")]
    TooLarge { len: usize, max: usize },
    #[error("a=setup:{0} is not supported (expected actpass, active or passive)")]
    UnsupportedSetup(String),
    #[error("unsupported DTLS fingerprint hash function \"{0}\": only sha-256 is accepted")]
    UnsupportedFingerprint(String),
}
