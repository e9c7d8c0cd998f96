//! The crate's error type.

/// Why a datagram was rejected by an agent.
///
/// Every variant means "drop this datagram"; none of them ends the agent. The caller usually
/// logs the error at debug level and carries on (the peer may be probing with stale
/// credentials, or the packet may simply be noise on the port).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IceError {
    /// FINGERPRINT is present but does not match the message (RFC 8489 §14.7).
    #[error("stun fingerprint mismatch")]
    BadFingerprint,
    /// MESSAGE-INTEGRITY is missing or does not match the expected password.
    #[error("stun message integrity missing or wrong")]
    BadIntegrity,
    /// USERNAME is missing or is not `<local ufrag>:<remote ufrag>` (RFC 8445 §7.3).
    #[error("stun username missing or wrong")]
    BadUsername,
    /// The agent has already reported [`IceEvent::Disconnected`](crate::IceEvent) and
    /// ignores all further input.
    #[error("ice agent is disconnected")]
    Closed,
    /// The datagram starts like STUN but could not be decoded.
    #[error("malformed stun message: {0}")]
    Malformed(String),
    /// The datagram is not STUN at all (RFC 7983 demultiplexing).
    #[error("not a stun message")]
    NotStun,
    /// A well-formed STUN message this agent has no use for: a non-Binding method, an
    /// indication, an error response, or a response to a request the agent did not send.
    #[error("unexpected stun message")]
    UnexpectedMessage,
}
