//! Drops plaintext handshake messages that are known to panic the dtls 0.17.2 parsers.
//!
//! `HandshakeMessageClientHello::unmarshal` / `HandshakeMessageServerHello::unmarshal` index
//! past the end of the extension block when it ends with fewer than 4 bytes, and
//! `HandshakeMessageServerKeyExchange::unmarshal` indexes `data[0]`/`data[1]` of an empty body.
//! The panic kills the crate's reader task (tokio catches it; the handshake then fails), so one
//! forged datagram would print a panic and abort that handshake. This filter mirrors those
//! parsers on unfragmented epoch-0 messages and reports such datagrams so they can be dropped.
//! It cannot see a malformed message split over several fragments.
//!
//! It also spots plaintext alerts, which the crate acts on even after the handshake (see
//! [`has_plaintext_alert`]).

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const SERVER_KEY_EXCHANGE: u8 = 12;

/// True if the datagram holds a handshake message that would panic the dtls crate.
pub(crate) fn would_panic_parser(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while rest.len() > RECORD_HEADER {
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let Some(record) = rest.get(..RECORD_HEADER + len) else {
            return false;
        };
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        if record[0] == CONTENT_HANDSHAKE
            && epoch == 0
            && handshake_would_panic(&record[RECORD_HEADER..])
        {
            return true;
        }
        rest = &rest[RECORD_HEADER + len..];
    }
    false
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

fn handshake_would_panic(mut fragments: &[u8]) -> bool {
    while fragments.len() >= HANDSHAKE_HEADER {
        let h = &fragments[..HANDSHAKE_HEADER];
        let msg_type = h[0];
        let length = u24(&h[1..4]);
        let offset = u24(&h[6..9]);
        let frag_len = u24(&h[9..12]);
        if msg_type == SERVER_KEY_EXCHANGE && length < 2 {
            return true;
        }
        let end = (HANDSHAKE_HEADER + frag_len).min(fragments.len());
        let body = &fragments[HANDSHAKE_HEADER..end];
        if offset == 0 && frag_len == length && body.len() == length {
            let ext = match msg_type {
                CLIENT_HELLO => client_hello_extensions(body),
                SERVER_HELLO => server_hello_extensions(body),
                _ => None,
            };
            if ext.is_some_and(extensions_would_panic) {
                return true;
            }
        }
        fragments = &fragments[end..];
    }
    false
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// Walks the body the way the crate does; `None` where the crate would return an error.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

fn client_hello_extensions(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // version, random
    r.u8()?; // the crate reads the session id length and skips nothing
    let cookie = r.u8()?;
    r.take(cookie)?;
    let suites = r.u16()?;
    r.take(suites / 2 * 2)?;
    let methods = r.u8()?;
    r.take(methods)?;
    let ext = r.u16()?;
    r.take(ext)
}

fn server_hello_extensions(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    r.take(2 + 32)?;
    let session_id = r.u8()?;
    r.take(session_id)?;
    r.take(2 + 1)?; // cipher suite, compression method
    let ext = r.u16()?;
    r.take(ext)
}

/// The crate's loop reads `[offset + 3]` for every `offset < len`.
fn extensions_would_panic(ext: &[u8]) -> bool {
    let mut offset = 0;
    while offset < ext.len() {
        if offset + 4 > ext.len() {
            return true;
        }
        offset += 4 + usize::from(u16::from_be_bytes([ext[offset + 2], ext[offset + 3]]));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let len = (body.len() as u32).to_be_bytes();
        let mut hs = vec![
            msg_type, len[1], len[2], len[3], 0, 0, 0, 0, 0, len[1], len[2], len[3],
        ];
        hs.extend_from_slice(body);
        let mut rec = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn client_hello(ext: &[u8]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend([0x11; 32]);
        body.extend([0, 0, 0, 2, 0xc0, 0x2b, 1, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend_from_slice(ext);
        record(CLIENT_HELLO, &body)
    }

    #[test]
    fn flags_only_panicking_messages() {
        assert!(would_panic_parser(&client_hello(&[0, 10])));
        assert!(would_panic_parser(&client_hello(&[0])));
        assert!(would_panic_parser(&client_hello(&[0, 23, 0, 0, 0, 10, 0])));
        assert!(!would_panic_parser(&client_hello(&[])));
        assert!(!would_panic_parser(&client_hello(&[0, 23, 0, 0])));
        // Declared extension longer than the block: the crate's loop just ends.
        assert!(!would_panic_parser(&client_hello(&[0, 23, 0, 9])));
        assert!(would_panic_parser(&record(SERVER_KEY_EXCHANGE, &[])));
        assert!(would_panic_parser(&record(SERVER_KEY_EXCHANGE, &[3])));
        assert!(!would_panic_parser(&record(
            SERVER_KEY_EXCHANGE,
            &[3, 0, 23]
        )));
        // A bad record after a good one in the same datagram.
        let mut two = client_hello(&[]);
        two.extend(client_hello(&[0, 10]));
        assert!(would_panic_parser(&two));
        // Encrypted epochs are not inspected (the crate authenticates them first).
        let mut enc = client_hello(&[0, 10]);
        enc[4] = 1;
        assert!(!would_panic_parser(&enc));
        for junk in [
            &[][..],
            &[22],
            &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        ] {
            assert!(!would_panic_parser(junk));
        }
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
