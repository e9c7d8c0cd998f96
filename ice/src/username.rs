//! Finding whose connectivity check a datagram is before any agent looks at it.
//!
//! A server with many ICE-lite agents on one port learns a new peer's address only from its
//! first Binding request, so it must pick the agent by the request's USERNAME,
//! `<receiver's ufrag>:<sender's ufrag>` (RFC 8445 §7.2.2). This walk reads just that, with
//! bounds checks and without decoding or allocating; the agent that gets the datagram does
//! every real check (FINGERPRINT, MESSAGE-INTEGRITY, the whole USERNAME).

/// The STUN header: type, length, magic cookie, transaction id (RFC 8489 §5).
const HEADER_LEN: usize = 20;
/// The USERNAME attribute type (RFC 8489 §14.3).
const USERNAME: u16 = 0x0006;

/// The local part of a STUN message's USERNAME: the receiver's ufrag, before the first `:`.
///
/// `None` when the datagram has no USERNAME before its attributes run out (or run past its
/// end), or the USERNAME is not UTF-8. The message type, the magic cookie and the other
/// attributes are not checked: whatever this returns only picks the agent that checks them.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    let body_len = usize::from(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]));
    let end = (HEADER_LEN + body_len).min(datagram.len());
    let mut at = HEADER_LEN;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let value = datagram.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attribute values are padded to a multiple of 4 (RFC 8489 §14).
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{encode_request, short_term_key, RequestParams};

    /// A Binding request with a PRIORITY attribute in front of its USERNAME, written by hand.
    fn hand_written(username: &[u8]) -> Vec<u8> {
        let mut msg = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0, 0, 0, 1]);
        msg.extend_from_slice(&[0x00, 0x06, 0x00, username.len() as u8]);
        msg.extend_from_slice(username);
        msg.resize(msg.len().next_multiple_of(4), 0);
        let body = (msg.len() - HEADER_LEN) as u16;
        msg[2..4].copy_from_slice(&body.to_be_bytes());
        msg
    }

    #[test]
    fn finds_the_receivers_ufrag_after_other_attributes() {
        let msg = hand_written(b"abcd1234:wxyz");
        assert_eq!(local_ufrag(&msg), Some("abcd1234"));
        // Without a colon the whole USERNAME is the local part.
        assert_eq!(local_ufrag(&hand_written(b"abcd")), Some("abcd"));
    }

    #[test]
    fn reads_what_the_controlling_agent_writes() {
        let key = short_term_key("server-password-0123456").unwrap();
        let params = RequestParams {
            username: "srv:cli",
            priority: 1,
            tie_breaker: 2,
            use_candidate: true,
            key: &key,
        };
        let request = encode_request([9u8; 12].into(), &params).unwrap();
        assert_eq!(local_ufrag(&request), Some("srv"));
    }

    #[test]
    fn garbage_has_no_ufrag() {
        let msg = hand_written(b"abcd1234:wxyz");
        // Cut inside the USERNAME value.
        assert_eq!(local_ufrag(&msg[..30]), None);
        assert_eq!(local_ufrag(&[0, 1]), None);
        assert_eq!(local_ufrag(&[]), None);
        // A header alone, and one whose length promises attributes that are not there.
        assert_eq!(local_ufrag(&msg[..HEADER_LEN]), None);
        let mut promised = msg[..HEADER_LEN].to_vec();
        promised[2..4].copy_from_slice(&400u16.to_be_bytes());
        assert_eq!(local_ufrag(&promised), None);
        // A USERNAME that is not UTF-8.
        assert_eq!(local_ufrag(&hand_written(&[0xff, 0xfe, b':', b'a'])), None);
        // An attribute length that runs past the datagram.
        let mut overlong = msg.clone();
        overlong[22..24].copy_from_slice(&0xfff0u16.to_be_bytes());
        assert_eq!(local_ufrag(&overlong), None);
        // A USERNAME beyond the header's length is not read.
        let mut short_body = msg.clone();
        short_body[2..4].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(local_ufrag(&short_body), None);
        // Noise of every length.
        let noise: Vec<u8> = (0..=255u8).map(|b| b.wrapping_mul(37)).collect();
        for len in 0..noise.len() {
            let _ = local_ufrag(&noise[..len]);
        }
    }
}
