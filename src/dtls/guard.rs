//! Keeps datagrams away from the dtls 0.17.2 parsers that would panic on them.
//!
//! Several of the crate's handshake message parsers index past the end of a short body (an empty
//! ClientKeyExchange or ServerKeyExchange, a ClientHello whose extension block ends in fewer than
//! 4 bytes...). The crate's reader task dies on such a panic, which ends the handshake and, before
//! [`crate::panic_guard`], printed a backtrace per datagram. Rather than mirror each known bug,
//! [`HandshakeGuard`] replays on every plaintext handshake record what the crate's reader will
//! do with it and runs the crate's own message parser on each message that becomes complete,
//! under `catch_unwind`: a datagram on which it panics is dropped before the crate sees it.
//!
//! The reader (`dtls::conn::DTLSConn::handle_incoming_packet`) splits a datagram into records
//! (dropping all of it if the lengths do not add up), caches each handshake fragment of an
//! epoch-0 record in its fragment buffer and, whenever the next expected message can be
//! reassembled, parses it. Its quirks:
//! - the fragment buffer walks a record by each fragment's `length` (the whole message's), not
//!   its `fragment_length`, so a fragment's bytes are what that walk says they are;
//! - reassembly follows offsets through the first cached fragment at each offset, appends each
//!   one's bytes whatever their number, stops early at a zero-length fragment, and takes the
//!   message type and length from the first fragment cached for that message.
//!
//! The guard cannot know which datagrams the crate actually processed (it drops replays and
//! anything the inbound queue had no room for), so it does not track the crate's state; it makes
//! that state irrelevant. Every fragment must be a plain slice of its message (its bytes number
//! its `fragment_length`, it ends within `length`, it is empty only if the message is), all
//! fragments of one message must agree on type and length, and their bytes must agree wherever
//! they overlap (re-fragmented retransmissions do). Then whatever chain of fragments the crate
//! completes, from whichever subset of what was let through, it rebuilds the one message the
//! guard knows byte for byte, and the guard parsed that message when it let its last missing
//! byte through. What the guard keeps per transport is bounded ([`MAX_MESSAGE_BYTES`],
//! [`MAX_MESSAGES`]).
//!
//! Records of later epochs are decrypted by the crate before it parses them, so only the
//! authenticated peer can get anything past that; they are not inspected.
//!
//! It also spots plaintext alerts, which the crate acts on even after the handshake (see
//! [`has_plaintext_alert`]).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use ::dtls::content::ContentType;
use ::dtls::handshake::Handshake;
use ::dtls::record_layer::record_layer_header::RecordLayerHeader;

use crate::panic_guard;

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_ALERT: u8 = 21;

/// The crate's reader reads each datagram into a buffer of this size (its private
/// `INBOUND_BUFFER_SIZE`) and would see only a prefix of a longer one.
pub(crate) const MAX_DATAGRAM: usize = 8192;

/// Bytes of handshake messages kept per transport. A browser's whole handshake is a few KiB.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Handshake messages kept per transport (a handshake has about ten).
pub(crate) const MAX_MESSAGES: usize = 64;

/// Why [`HandshakeGuard::admit`] refused a datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("longer than the dtls reader's buffer")]
    TooLong,
    /// The crate would drop the whole datagram too.
    #[error("record lengths do not add up to the datagram")]
    Framing,
    #[error("a handshake record ends inside a fragment header")]
    TruncatedFragment,
    /// The crate would not rebuild the message from it the way the guard does.
    #[error("a handshake fragment is not a slice of its message")]
    NotASlice,
    #[error("a handshake fragment disagrees with one let through before")]
    Conflict,
    #[error("more handshake messages than a transport may keep")]
    TooMuch,
    #[error("the dtls parser panics on handshake message {seq} (at {site})")]
    ParserPanic { seq: u16, site: &'static str },
}

/// What one transport has let through of the handshake (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct HandshakeGuard {
    messages: BTreeMap<u16, Message>,
    bytes: usize,
}

#[derive(Debug, Clone)]
struct Message {
    msg_type: u8,
    length: u32,
    /// `length` bytes, of which `known` marks those let through so far.
    body: Vec<u8>,
    known: Vec<bool>,
    missing: usize,
}

/// A handshake fragment as the crate's fragment buffer cuts it out of a record.
struct Piece<'a> {
    msg_type: u8,
    length: u32,
    seq: u16,
    offset: u32,
    fragment_length: u32,
    data: &'a [u8],
}

impl HandshakeGuard {
    /// `Ok` if the dtls crate may have `datagram`; then it is part of what the guard knows.
    pub(crate) fn admit(&mut self, datagram: &[u8]) -> Result<(), Refused> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(Refused::TooLong);
        }
        let mut pieces = Vec::new();
        for record in records(datagram)? {
            if is_plaintext_handshake(record) {
                fragments(&record[RECORD_HEADER..], &mut pieces)?;
            }
        }
        if pieces.is_empty() {
            return Ok(());
        }
        // Staged on copies of the messages touched, so that a refused datagram leaves no trace.
        let mut touched: BTreeMap<u16, Message> = BTreeMap::new();
        let (mut bytes, mut new_messages) = (self.bytes, 0);
        for piece in pieces {
            let message = match touched.entry(piece.seq) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => match self.messages.get(&piece.seq) {
                    Some(known) => e.insert(known.clone()),
                    None => {
                        bytes += piece.length as usize;
                        new_messages += 1;
                        if bytes > MAX_MESSAGE_BYTES
                            || self.messages.len() + new_messages > MAX_MESSAGES
                        {
                            return Err(Refused::TooMuch);
                        }
                        e.insert(Message::new(piece.msg_type, piece.length))
                    }
                },
            };
            message.add(&piece)?;
        }
        for (&seq, message) in &touched {
            let was_incomplete = self.messages.get(&seq).is_none_or(|m| m.missing > 0);
            if message.missing == 0 && was_incomplete {
                // A parse error is fine: the crate logs it and goes on.
                let raw = message.raw(seq);
                let _parsed =
                    panic_guard::catch_silent(|| Handshake::unmarshal(&mut raw.as_slice()))
                        .map_err(|site| Refused::ParserPanic { seq, site })?;
            }
        }
        self.messages.extend(touched);
        self.bytes = bytes;
        Ok(())
    }
}

impl Message {
    fn new(msg_type: u8, length: u32) -> Message {
        let len = length as usize;
        Message {
            msg_type,
            length,
            body: vec![0; len],
            known: vec![false; len],
            missing: len,
        }
    }

    fn add(&mut self, piece: &Piece<'_>) -> Result<(), Refused> {
        if (self.msg_type, self.length) != (piece.msg_type, piece.length) {
            return Err(Refused::Conflict);
        }
        let (start, len) = (piece.offset as usize, piece.fragment_length as usize);
        let slice = piece.data.len() == len
            && start + len <= self.body.len()
            && (len > 0 || self.body.is_empty());
        if !slice {
            return Err(Refused::NotASlice);
        }
        let range = start..start + len;
        let (body, known) = (&mut self.body[range.clone()], &mut self.known[range]);
        for ((b, k), &new) in body.iter_mut().zip(known.iter_mut()).zip(piece.data) {
            match *k {
                true if *b != new => return Err(Refused::Conflict),
                true => {}
                false => {
                    (*b, *k) = (new, true);
                    self.missing -= 1;
                }
            }
        }
        Ok(())
    }

    /// The message as the crate's `FragmentBuffer::pop` rebuilds it: a header saying offset 0
    /// and fragment length = length, then the body.
    fn raw(&self, seq: u16) -> Vec<u8> {
        let length = self.length.to_be_bytes();
        let seq = seq.to_be_bytes();
        let mut raw = vec![
            self.msg_type,
            length[1],
            length[2],
            length[3],
            seq[0],
            seq[1],
        ];
        raw.extend_from_slice(&[0, 0, 0, length[1], length[2], length[3]]);
        raw.extend_from_slice(&self.body);
        raw
    }
}

/// The datagram's records as the crate's `unpack_datagram` splits it, which drops the whole
/// datagram unless every record is longer than its header and they end exactly at its end.
fn records(datagram: &[u8]) -> Result<Vec<&[u8]>, Refused> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() <= RECORD_HEADER {
            return Err(Refused::Framing);
        }
        let len = RECORD_HEADER + usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let (record, next) = rest.split_at_checked(len).ok_or(Refused::Framing)?;
        out.push(record);
        rest = next;
    }
    Ok(out)
}

/// An epoch-0 handshake record the crate would cache (its own header parser decides).
fn is_plaintext_handshake(record: &[u8]) -> bool {
    RecordLayerHeader::unmarshal(&mut &record[..])
        .is_ok_and(|h| h.content_type == ContentType::Handshake && h.epoch == 0)
}

/// Cuts a handshake record's body into fragments exactly as the crate's
/// `FragmentBuffer::push` does: each fragment spans `length` bytes after its header, or up to
/// the end of the record, whatever its `fragment_length` says.
fn fragments<'a>(mut body: &'a [u8], out: &mut Vec<Piece<'a>>) -> Result<(), Refused> {
    while !body.is_empty() {
        // The crate keeps the fragments before a truncated header and fails the record; a
        // genuine peer never sends one.
        let h = body
            .get(..HANDSHAKE_HEADER)
            .ok_or(Refused::TruncatedFragment)?;
        let length = u24(&h[1..4]);
        let end = (HANDSHAKE_HEADER + length as usize).min(body.len());
        out.push(Piece {
            msg_type: h[0],
            length,
            seq: u16::from_be_bytes([h[4], h[5]]),
            offset: u24(&h[6..9]),
            fragment_length: u24(&h[9..12]),
            data: &body[HANDSHAKE_HEADER..end],
        });
        body = &body[end..];
    }
    Ok(())
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// True if the datagram holds a plaintext (epoch 0) alert record.
///
/// Once the handshake is done every genuine alert is encrypted. A plaintext one is
/// unauthenticated, so anyone able to spoof the peer's address can send it, yet dtls 0.17 still
/// acts on it (any alert ends `read` with an error, i.e. the connection): connected transports
/// drop such datagrams (RFC 6347 §4.1.2.7: invalid records are discarded, since UDP forgery is
/// easy).
pub(crate) fn has_plaintext_alert(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while rest.len() >= RECORD_HEADER {
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        if rest[0] == CONTENT_ALERT && epoch == 0 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        match rest.get(RECORD_HEADER + len..) {
            Some(next) => rest = next,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake fragment with its 12-byte header.
    fn fragment(msg_type: u8, seq: u16, length: usize, offset: usize, body: &[u8]) -> Vec<u8> {
        let be = |n: usize| (n as u32).to_be_bytes();
        let (l, o, f) = (be(length), be(offset), be(body.len()));
        let seq = seq.to_be_bytes();
        let mut hs = vec![msg_type, l[1], l[2], l[3], seq[0], seq[1]];
        hs.extend_from_slice(&[o[1], o[2], o[3], f[1], f[2], f[3]]);
        hs.extend_from_slice(body);
        hs
    }

    /// An epoch-0 handshake record holding `fragments`.
    fn record_of(fragments: &[Vec<u8>], record_seq: u8) -> Vec<u8> {
        let body = fragments.concat();
        let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, record_seq];
        rec.extend((body.len() as u16).to_be_bytes());
        rec.extend(body);
        rec
    }

    fn record(msg_type: u8, body: &[u8]) -> Vec<u8> {
        record_of(&[fragment(msg_type, 0, body.len(), 0, body)], 0)
    }

    const CLIENT_HELLO: u8 = 1;
    const SERVER_KEY_EXCHANGE: u8 = 12;
    const CLIENT_KEY_EXCHANGE: u8 = 16;

    fn client_hello_body(ext: &[u8]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend([0x11; 32]);
        body.extend([0, 0, 0, 2, 0xc0, 0x2b, 1, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend_from_slice(ext);
        body
    }

    fn client_hello(ext: &[u8]) -> Vec<u8> {
        record(CLIENT_HELLO, &client_hello_body(ext))
    }

    /// A ClientHello as Chrome sends it (extended master secret, use_srtp, supported groups,
    /// signature algorithms, renegotiation info).
    fn valid_client_hello() -> Vec<u8> {
        client_hello(&[
            0, 23, 0, 0, // extended_master_secret
            0, 14, 0, 5, 0, 2, 0, 1, 0, // use_srtp: SRTP_AES128_CM_HMAC_SHA1_80
            0, 10, 0, 4, 0, 2, 0, 23, // supported_groups: secp256r1
            0, 13, 0, 4, 0, 2, 4, 3, // signature_algorithms: ecdsa_secp256r1_sha256
            0xff, 1, 0, 1, 0, // renegotiation_info
        ])
    }

    fn admit(datagrams: &[&[u8]]) -> Result<(), Refused> {
        let mut guard = HandshakeGuard::default();
        datagrams.iter().try_for_each(|d| guard.admit(d))
    }

    fn refuses_as_panic(result: Result<(), Refused>) -> bool {
        matches!(result, Err(Refused::ParserPanic { .. }))
    }

    #[test]
    fn drops_the_reported_datagrams() {
        // An empty ClientKeyExchange.
        let first = hex::decode("16fefd0000000000000000000c100000000000000000000000").unwrap();
        assert!(refuses_as_panic(admit(&[&first])));
        // A ClientHello header whose fragment_length hides the empty ServerKeyExchange behind
        // it; the crate walks by length and parses the ServerKeyExchange.
        let second = hex::decode(concat!(
            "16fefd000000000000200500250100000000200500250100000c00000000000000000000",
            "0000150101000000000000150100"
        ))
        .unwrap();
        assert!(admit(&[&second]).is_err());
        // Every message of a record is parsed: an empty ServerKeyExchange behind a ClientHello.
        let hello = valid_client_hello();
        let behind = record_of(
            &[
                hello[RECORD_HEADER..].to_vec(),
                fragment(SERVER_KEY_EXCHANGE, 1, 0, 0, &[]),
            ],
            0,
        );
        assert!(refuses_as_panic(admit(&[&behind])));
    }

    #[test]
    fn the_crate_panics_on_what_is_dropped_and_parses_what_passes() {
        use crate::fuzzing::dtls_reader::CrateReader;
        let reaches_a_panic = |datagrams: &[&[u8]]| {
            let mut reader = CrateReader::default();
            panic_guard::catch_silent(|| datagrams.iter().for_each(|d| reader.receive(d))).is_err()
        };
        let first = hex::decode("16fefd0000000000000000000c100000000000000000000000").unwrap();
        assert!(reaches_a_panic(&[&first]));
        let body = client_hello_body(&[0, 10]);
        let (a, b) = body.split_at(30);
        let first = record_of(&[fragment(CLIENT_HELLO, 0, body.len(), 0, a)], 0);
        let second = record_of(&[fragment(CLIENT_HELLO, 0, body.len(), 30, b)], 1);
        assert!(reaches_a_panic(&[&first, &second]));
        assert!(!reaches_a_panic(&[&valid_client_hello()]));
        let hello = valid_client_hello();
        let parsed = Handshake::unmarshal(&mut &hello[RECORD_HEADER..]);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn passes_valid_handshake_messages() {
        let mut guard = HandshakeGuard::default();
        assert_eq!(guard.admit(&valid_client_hello()), Ok(()));
        // Retransmitted as is.
        assert_eq!(guard.admit(&valid_client_hello()), Ok(()));
        let mut key = vec![65, 4];
        key.extend([7; 64]);
        let mut cke = record_of(&[fragment(CLIENT_KEY_EXCHANGE, 1, key.len(), 0, &key)], 1);
        assert_eq!(guard.admit(&cke), Ok(()));
        cke[10] = 2;
        assert_eq!(
            guard.admit(&cke),
            Ok(()),
            "record sequence numbers do not matter"
        );
        // Not handshake records, or not plaintext: not the guard's business.
        let ccs = [20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 1];
        assert_eq!(guard.admit(&ccs), Ok(()));
        let mut encrypted = record(CLIENT_KEY_EXCHANGE, &[]);
        encrypted[4] = 1;
        assert_eq!(guard.admit(&encrypted), Ok(()));
        // A message in two fragments, in two datagrams, either order.
        let body = client_hello_body(&[0, 23, 0, 0]);
        let (a, b) = body.split_at(20);
        let first = record_of(&[fragment(CLIENT_HELLO, 5, body.len(), 0, a)], 4);
        let second = record_of(&[fragment(CLIENT_HELLO, 5, body.len(), 20, b)], 5);
        assert_eq!(admit(&[&first, &second]), Ok(()));
        assert_eq!(admit(&[&second, &first]), Ok(()));
    }

    #[test]
    fn drops_a_bad_message_split_over_fragments() {
        // An extension block ending in 2 bytes, split so that no fragment is a whole message.
        let body = client_hello_body(&[0, 10]);
        let (a, b) = body.split_at(30);
        let first = record_of(&[fragment(CLIENT_HELLO, 0, body.len(), 0, a)], 0);
        let second = record_of(&[fragment(CLIENT_HELLO, 0, body.len(), 30, b)], 1);
        let mut guard = HandshakeGuard::default();
        assert_eq!(guard.admit(&first), Ok(()));
        assert!(refuses_as_panic(guard.admit(&second)));
        // The refused fragment left no trace: another completion is judged on its own, and
        // once it is through, the bad one conflicts with it.
        let harmless = [&body[30..body.len() - 4], &[0, 0, 0, 0][..]].concat();
        let other = record_of(&[fragment(CLIENT_HELLO, 0, body.len(), 30, &harmless)], 2);
        assert_eq!(guard.admit(&other), Ok(()));
        assert_eq!(guard.admit(&second), Err(Refused::Conflict));
        // Fragments of one message that disagree on its type or length.
        let empty_cke = record_of(&[fragment(CLIENT_KEY_EXCHANGE, 0, 0, 0, &[])], 3);
        assert_eq!(guard.admit(&empty_cke), Err(Refused::Conflict));
    }

    #[test]
    fn refuses_what_the_crate_would_not_walk_cleanly() {
        let hello = valid_client_hello();
        let mut guard = HandshakeGuard::default();
        assert_eq!(
            guard.admit(&hello[..hello.len() - 1]),
            Err(Refused::Framing)
        );
        assert_eq!(guard.admit(&hello[..RECORD_HEADER]), Err(Refused::Framing));
        let mut truncated = hello.clone();
        truncated.extend(record_of(&[vec![CLIENT_HELLO, 0, 0]], 1));
        assert_eq!(guard.admit(&truncated), Err(Refused::TruncatedFragment));
        let mut long = hello.clone();
        long.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(guard.admit(&long), Err(Refused::TooLong));
        // Nothing of a refused datagram was kept.
        assert!(guard.messages.is_empty());
        assert_eq!(guard.admit(&hello), Ok(()));
    }

    #[test]
    fn passes_refragmented_retransmissions_only_if_consistent() {
        let body = client_hello_body(&[0, 23, 0, 0]);
        let n = body.len();
        let whole = record_of(&[fragment(CLIENT_HELLO, 0, n, 0, &body)], 0);
        let part = |offset: usize, end: usize, seq: u8| {
            record_of(
                &[fragment(CLIENT_HELLO, 0, n, offset, &body[offset..end])],
                seq,
            )
        };
        let mut guard = HandshakeGuard::default();
        assert_eq!(guard.admit(&part(0, 25, 1)), Ok(()));
        assert_eq!(guard.admit(&whole), Ok(()));
        for (offset, end) in [(0, 10), (10, 40), (40, n), (5, 6)] {
            assert_eq!(guard.admit(&part(offset, end, 2)), Ok(()));
        }
        let mut altered = body.clone();
        altered[12] ^= 1;
        let altered = record_of(&[fragment(CLIENT_HELLO, 0, n, 10, &altered[10..20])], 3);
        assert_eq!(guard.admit(&altered), Err(Refused::Conflict));
        // Not slices: the crate would rebuild something else from them.
        let empty = record_of(&[fragment(CLIENT_HELLO, 0, n, 5, &[])], 4);
        assert_eq!(guard.admit(&empty), Err(Refused::NotASlice));
        let past_the_end = record_of(&[fragment(CLIENT_HELLO, 0, n, n - 1, &[1, 2])], 4);
        assert_eq!(guard.admit(&past_the_end), Err(Refused::NotASlice));
        let mut short = part(0, 10, 4);
        short[RECORD_HEADER + 11] = 11; // fragment_length 11 over 10 bytes
        assert_eq!(guard.admit(&short), Err(Refused::NotASlice));
    }

    #[test]
    fn bounds_what_a_transport_keeps() {
        let mut guard = HandshakeGuard::default();
        // Messages that never complete.
        let refused = (0..=MAX_MESSAGES).find_map(|seq| {
            let frag = fragment(CLIENT_HELLO, seq as u16, 100, 1, &[1]);
            guard.admit(&record_of(&[frag], 0)).err().map(|e| (seq, e))
        });
        assert_eq!(refused, Some((MAX_MESSAGES, Refused::TooMuch)));
        let mut guard = HandshakeGuard::default();
        let refused = (0..10).find_map(|seq| {
            let frag = fragment(CLIENT_HELLO, seq, 30_000, 0, &[1]);
            guard.admit(&record_of(&[frag], 0)).err().map(|e| (seq, e))
        });
        assert_eq!(refused, Some((2, Refused::TooMuch)));
        assert!(guard.bytes <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn spots_plaintext_alerts_only() {
        let alert = |epoch: u8| vec![21, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, 9, 0, 2, 2, 40];
        assert!(has_plaintext_alert(&alert(0)));
        assert!(
            !has_plaintext_alert(&alert(1)),
            "encrypted alerts are the crate's business"
        );
        // Behind a handshake record in the same datagram.
        let mut two = client_hello(&[]);
        two.extend(alert(0));
        assert!(has_plaintext_alert(&two));
        assert!(!has_plaintext_alert(&client_hello(&[])));
        let mut app_data = alert(1);
        app_data[0] = 23;
        assert!(!has_plaintext_alert(&app_data));
        for junk in [
            &[][..],
            &[21],
            &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        ] {
            assert!(!has_plaintext_alert(junk));
        }
    }
}
