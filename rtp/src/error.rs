//! The one error type of the crate.

/// Everything that can go wrong in `rtp`.
///
/// Variants fall into three groups: malformed input bytes (the peer sent garbage, drop the
/// packet), security failures on SRTP input (drop the packet, maybe count it), and misuse by
/// the caller (a bug or a buffer that is too small).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- Malformed input ---
    /// The input ends before the structure it announces.
    #[error("packet truncated")]
    Truncated,
    /// The version field is not 2 (RFC 3550 §5.1).
    #[error("unsupported rtp/rtcp version {0}")]
    BadVersion(u8),
    /// The padding count is zero or larger than the packet (RFC 3550 §5.1).
    #[error("invalid padding")]
    BadPadding,
    /// A length field disagrees with the data.
    #[error("invalid length field")]
    BadLength,
    /// Some other malformed structure; the text names it.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),

    // --- SRTP security failures ---
    /// The authentication tag did not verify (RFC 3711 §3.3, RFC 7714 §8.2).
    #[error("srtp authentication failed")]
    AuthenticationFailed,
    /// The packet index was already seen or is behind the replay window (RFC 3711 §3.3.2).
    #[error("srtp packet replayed or too old")]
    Replayed,
    /// 2^48 SRTP or 2^31 SRTCP packets were protected with one key (RFC 3711 §9.2): rekey.
    #[error("srtp packet index exhausted, rekey required")]
    IndexExhausted,

    // --- Caller misuse ---
    /// The output buffer cannot hold the result; `needed` bytes are required.
    #[error("output buffer too small, {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
    },
    /// A master key or salt has the wrong length for the profile.
    #[error("wrong key material length: expected {expected}, got {got}")]
    KeyLength {
        /// Length the profile requires.
        expected: usize,
        /// Length that was passed.
        got: usize,
    },
    /// A value cannot be represented on the wire (e.g. more than 31 report blocks).
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
    /// The crypto library refused an operation that cannot fail on valid lengths.
    #[error("crypto library error")]
    Crypto,
}
