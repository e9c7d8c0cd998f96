//! STUN Binding messages for ICE, on top of stun-rs.
//!
//! Decoding is split in two steps so the checks happen in the order RFC 8489 §6.3 and
//! RFC 8445 §7.3 ask for: the header is looked at first (cheap demultiplexing, RFC 7983), then
//! the message is decoded, then FINGERPRINT, USERNAME and MESSAGE-INTEGRITY are checked. stun-rs
//! allocates while decoding; that is acceptable because STUN is control-plane traffic.

use std::net::SocketAddr;

use stun_rs::attributes::ice::{IceControlled, IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage,
    StunMessageBuilder, TransactionId,
};

use crate::IceError;

/// Size of the STUN header (RFC 8489 §5).
const HEADER_LEN: usize = 20;
/// The magic cookie 0x2112A442 (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// Large enough for every message this crate writes (the longest USERNAME stun-rs accepts is
/// 513 bytes).
const ENCODE_BUF_LEN: usize = 1024;

/// Whether `packet` looks like STUN: RFC 7983 puts STUN at first byte 0..=3, and RFC 8489 §5
/// adds the magic cookie at offset 4.
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN && packet[0] <= 3 && packet[4..8] == MAGIC_COOKIE
}

/// Makes the short-term credential key (RFC 8489 §9.1.1) for an ICE password.
///
/// `None` when the password fails the OpaqueString profile (RFC 8265); ice-chars always pass.
pub(crate) fn short_term_key(pwd: &str) -> Option<HMACKey> {
    HMACKey::new_short_term(pwd).ok()
}

/// Reads the class of a Binding message from its header without decoding the attributes.
pub(crate) fn binding_class(packet: &[u8]) -> Result<MessageClass, IceError> {
    if !is_stun(packet) {
        return Err(IceError::NotStun);
    }
    let body_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if body_len % 4 != 0 || HEADER_LEN + body_len != packet.len() {
        return Err(IceError::Malformed(format!(
            "length field {body_len} does not match datagram of {} bytes",
            packet.len()
        )));
    }
    let msg_type = u16::from_be_bytes([packet[0], packet[1]]);
    // Method bits are M0-M3, M4-M6, M7-M11 around the two class bits (RFC 8489 §5).
    let method = (msg_type & 0x000f) | ((msg_type & 0x00e0) >> 1) | ((msg_type & 0x3e00) >> 2);
    if method != BINDING.as_u16() {
        return Err(IceError::UnexpectedMessage);
    }
    Ok(match msg_type & 0x0110 {
        0x0000 => MessageClass::Request,
        0x0010 => MessageClass::Indication,
        0x0100 => MessageClass::SuccessResponse,
        _ => MessageClass::ErrorResponse,
    })
}

/// What the agents need from a verified Binding request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BindingRequest {
    pub transaction_id: TransactionId,
    /// USE-CANDIDATE is present (RFC 8445 §7.1.2).
    pub use_candidate: bool,
    /// ICE-CONTROLLING is present, i.e. the sender claims the controlling role.
    pub controlling: bool,
    /// ICE-CONTROLLED is present, i.e. the sender claims the controlled role.
    pub controlled: bool,
}

/// The credentials a Binding request must carry to be accepted by us.
pub(crate) struct ExpectedCredentials<'a> {
    /// Our ufrag: the part before the colon.
    pub local_ufrag: &'a str,
    /// The peer's ufrag: the part after the colon. Empty means "unknown, accept any".
    pub remote_ufrag: &'a str,
    /// Key from our password (the receiver's password signs requests, RFC 8445 §7.2.2).
    pub key: Option<&'a HMACKey>,
}

/// Decodes and verifies a Binding request.
pub(crate) fn parse_request(
    packet: &[u8],
    expected: &ExpectedCredentials<'_>,
) -> Result<BindingRequest, IceError> {
    let msg = decode(packet)?;
    check_fingerprint(packet, &msg)?;
    check_username(&msg, expected)?;
    check_integrity(packet, &msg, expected.key)?;
    Ok(BindingRequest {
        transaction_id: *msg.transaction_id(),
        use_candidate: msg.get::<UseCandidate>().is_some(),
        controlling: msg.get::<IceControlling>().is_some(),
        controlled: msg.get::<IceControlled>().is_some(),
    })
}

/// Decodes and verifies a Binding success response; returns its transaction id.
pub(crate) fn parse_success(
    packet: &[u8],
    key: Option<&HMACKey>,
) -> Result<TransactionId, IceError> {
    let msg = decode(packet)?;
    check_fingerprint(packet, &msg)?;
    check_integrity(packet, &msg, key)?;
    Ok(*msg.transaction_id())
}

/// Writes a Binding success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT
/// (RFC 8445 §7.3.1.5).
pub(crate) fn encode_success(
    transaction_id: TransactionId,
    mapped: SocketAddr,
    key: &HMACKey,
) -> Option<Vec<u8>> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(transaction_id)
        .with_attribute(XorMappedAddress::from(mapped))
        .with_attribute(MessageIntegrity::new(key.clone()))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&msg)
}

/// The attributes of a Binding request sent by a controlling agent (RFC 8445 §7.1).
pub(crate) struct RequestParams<'a> {
    /// `<remote ufrag>:<local ufrag>`.
    pub username: &'a str,
    pub priority: u32,
    pub tie_breaker: u64,
    pub use_candidate: bool,
    /// Key from the peer's password.
    pub key: &'a HMACKey,
}

/// Writes a Binding request. `None` if the username cannot be encoded (too long or not
/// valid under the OpaqueString profile).
pub(crate) fn encode_request(
    transaction_id: TransactionId,
    params: &RequestParams<'_>,
) -> Option<Vec<u8>> {
    let username = UserName::new(params.username).ok()?;
    let mut builder = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(transaction_id)
        .with_attribute(username)
        .with_attribute(Priority::from(params.priority))
        .with_attribute(IceControlling::from(params.tie_breaker));
    if params.use_candidate {
        builder = builder.with_attribute(UseCandidate::default());
    }
    let msg = builder
        .with_attribute(MessageIntegrity::new(params.key.clone()))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&msg)
}

fn encode(msg: &StunMessage) -> Option<Vec<u8>> {
    let mut buf = [0u8; ENCODE_BUF_LEN];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .ok()?;
    Some(buf[..len].to_vec())
}

fn decode(packet: &[u8]) -> Result<StunMessage, IceError> {
    let (msg, _) = MessageDecoderBuilder::default()
        .build()
        .decode(packet)
        .map_err(|e| IceError::Malformed(e.to_string()))?;
    Ok(msg)
}

/// FINGERPRINT is optional for us, but must match when present (RFC 8489 §14.7).
fn check_fingerprint(packet: &[u8], msg: &StunMessage) -> Result<(), IceError> {
    let Some(attr) = msg.get::<Fingerprint>() else {
        return Ok(());
    };
    let fingerprint = attr
        .as_fingerprint()
        .map_err(|_| IceError::BadFingerprint)?;
    let input = stun_rs::get_input_text::<Fingerprint>(packet).ok_or(IceError::BadFingerprint)?;
    if !fingerprint.validate(&input) {
        return Err(IceError::BadFingerprint);
    }
    Ok(())
}

/// USERNAME must be `<expected.local_ufrag>:<expected.remote_ufrag>` (RFC 8445 §7.3).
fn check_username(msg: &StunMessage, expected: &ExpectedCredentials<'_>) -> Result<(), IceError> {
    let username = msg
        .get::<UserName>()
        .and_then(|attr| attr.as_user_name().ok())
        .ok_or(IceError::BadUsername)?;
    let (local, remote) = username
        .as_str()
        .split_once(':')
        .ok_or(IceError::BadUsername)?;
    let remote_ok = expected.remote_ufrag.is_empty() || remote == expected.remote_ufrag;
    if local != expected.local_ufrag || !remote_ok {
        return Err(IceError::BadUsername);
    }
    Ok(())
}

/// MESSAGE-INTEGRITY (HMAC-SHA1) must be present and match `key` (RFC 8489 §9.1.3).
fn check_integrity(
    packet: &[u8],
    msg: &StunMessage,
    key: Option<&HMACKey>,
) -> Result<(), IceError> {
    let key = key.ok_or(IceError::BadIntegrity)?;
    let integrity = msg
        .get::<MessageIntegrity>()
        .and_then(|attr| attr.as_message_integrity().ok())
        .ok_or(IceError::BadIntegrity)?;
    let input =
        stun_rs::get_input_text::<MessageIntegrity>(packet).ok_or(IceError::BadIntegrity)?;
    if !integrity.validate(&input, key) {
        return Err(IceError::BadIntegrity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn() -> TransactionId {
        TransactionId::from([7u8; 12])
    }

    fn request(username: &str, pwd: &str) -> Vec<u8> {
        let key = short_term_key(pwd).unwrap();
        let params = RequestParams {
            username,
            priority: 1,
            tie_breaker: 2,
            use_candidate: true,
            key: &key,
        };
        encode_request(txn(), &params).unwrap()
    }

    fn expected<'a>(key: &'a HMACKey, remote_ufrag: &'a str) -> ExpectedCredentials<'a> {
        ExpectedCredentials {
            local_ufrag: "loc",
            remote_ufrag,
            key: Some(key),
        }
    }

    #[test]
    fn is_stun_needs_first_byte_cookie_and_length() {
        let packet = request("loc:rem", "pwd");
        assert!(is_stun(&packet));
        assert!(!is_stun(&packet[..19]));
        let mut rtp = packet.clone();
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
        let mut no_cookie = packet;
        no_cookie[5] ^= 1;
        assert!(!is_stun(&no_cookie));
    }

    #[test]
    fn class_is_read_from_header() {
        let packet = request("loc:rem", "pwd");
        assert_eq!(binding_class(&packet), Ok(MessageClass::Request));
        let key = short_term_key("pwd").unwrap();
        let response = encode_success(txn(), "1.2.3.4:5".parse().unwrap(), &key).unwrap();
        assert_eq!(binding_class(&response), Ok(MessageClass::SuccessResponse));
        let mut truncated = packet.clone();
        truncated.pop();
        assert!(matches!(
            binding_class(&truncated),
            Err(IceError::Malformed(_))
        ));
        let mut allocate = packet;
        allocate[1] = 0x03; // Allocate request (TURN)
        assert_eq!(binding_class(&allocate), Err(IceError::UnexpectedMessage));
    }

    #[test]
    fn request_round_trip() {
        let key = short_term_key("pwd").unwrap();
        let packet = request("loc:rem", "pwd");
        let parsed = parse_request(&packet, &expected(&key, "rem")).unwrap();
        assert_eq!(parsed.transaction_id, txn());
        assert!(parsed.use_candidate && parsed.controlling && !parsed.controlled);
        // Unknown remote ufrag accepts any remote part.
        assert!(parse_request(&packet, &expected(&key, "")).is_ok());
    }

    #[test]
    fn request_checks_username_integrity_fingerprint() {
        let key = short_term_key("pwd").unwrap();
        let exp = expected(&key, "rem");
        assert_eq!(
            parse_request(&request("loc:other", "pwd"), &exp),
            Err(IceError::BadUsername)
        );
        assert_eq!(
            parse_request(&request("xyz:rem", "pwd"), &exp),
            Err(IceError::BadUsername)
        );
        assert_eq!(
            parse_request(&request("locrem", "pwd"), &exp),
            Err(IceError::BadUsername)
        );
        assert_eq!(
            parse_request(&request("loc:rem", "nope"), &exp),
            Err(IceError::BadIntegrity)
        );
        let mut tampered = request("loc:rem", "pwd");
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        assert_eq!(
            parse_request(&tampered, &exp),
            Err(IceError::BadFingerprint)
        );
    }

    #[test]
    fn success_round_trip() {
        let key = short_term_key("pwd").unwrap();
        let response = encode_success(txn(), "[::1]:9".parse().unwrap(), &key).unwrap();
        assert_eq!(parse_success(&response, Some(&key)), Ok(txn()));
        let other = short_term_key("other").unwrap();
        assert_eq!(
            parse_success(&response, Some(&other)),
            Err(IceError::BadIntegrity)
        );
        assert_eq!(parse_success(&response, None), Err(IceError::BadIntegrity));
    }
}
