//! DTLS 1.2 records after the handshake, without the dtls crate's connection.
//!
//! A WebRTC DTLS association carries nothing after the handshake but, at the end, an alert.
//! Keeping the dtls crate's `DTLSConn` alive for that costs ~30 KB per session (handshake
//! cache, record buffers, two tasks), more than all the rest of a player. When we are the DTLS
//! client the handshake is over for both sides once the server's Finished has arrived (the
//! server retransmits nothing after it), so the connection is dropped and this small record
//! layer takes over: it authenticates the peer's alerts (close_notify or fatal ends the
//! session; an unauthenticated alert is ignored, so a spoofed datagram cannot end it) and
//! writes our own close_notify.
//!
//! Only the `TLS_ECDHE_{ECDSA,RSA}_WITH_AES_128_GCM_SHA256` record protection is supported,
//! which is why the handshake offers only those suites in the client role (every WebRTC stack
//! implements them; GStreamer's default certificate is RSA). The record
//! keys come from the master secret as in RFC 5246 §6.3; records are protected as in RFC 5288
//! with the DTLS sequence number in the additional data (RFC 6347 §4.1.2.1).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::hmac;

use super::DtlsRole;

/// The record header: type, version, epoch, sequence number, length.
const HEADER_LEN: usize = 13;
const CONTENT_ALERT: u8 = 21;
const DTLS_1_2: [u8; 2] = [0xfe, 0xfd];
/// Records protected with the handshake's keys are in epoch 1 (there is no renegotiation).
const EPOCH: u16 = 1;
const EXPLICIT_NONCE_LEN: usize = 8;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 16;
const FIXED_IV_LEN: usize = 4;
/// Our close_notify's sequence number: far above any record the handshake sent in epoch 1, so
/// the peer's replay window cannot take it for an old one.
const CLOSE_NOTIFY_SEQUENCE: u64 = 1 << 32;

/// The keys of an established association, one direction each.
pub(crate) struct EstablishedRecords {
    open: LessSafeKey,
    open_iv: [u8; FIXED_IV_LEN],
    seal: LessSafeKey,
    seal_iv: [u8; FIXED_IV_LEN],
}

impl EstablishedRecords {
    /// Derives the record keys of an AES-128-GCM association. `local_random` and
    /// `remote_random` are the 32-byte hello randoms of our side and the peer's.
    pub(crate) fn derive(
        role: DtlsRole,
        local_random: &[u8],
        remote_random: &[u8],
        master_secret: &[u8],
    ) -> Option<Self> {
        if local_random.len() != 32 || remote_random.len() != 32 || master_secret.len() != 48 {
            return None;
        }
        let (client_random, server_random) = match role {
            DtlsRole::Client => (local_random, remote_random),
            DtlsRole::Server => (remote_random, local_random),
        };
        let mut seed = [0u8; 13 + 64];
        seed[..13].copy_from_slice(b"key expansion");
        seed[13..45].copy_from_slice(server_random);
        seed[45..].copy_from_slice(client_random);
        let mut block = [0u8; 2 * (KEY_LEN + FIXED_IV_LEN)];
        prf_sha256(master_secret, &seed, &mut block);
        let (client_key, rest) = block.split_at(KEY_LEN);
        let (server_key, rest) = rest.split_at(KEY_LEN);
        let (client_iv, server_iv) = rest.split_at(FIXED_IV_LEN);
        let key = |k: &[u8]| UnboundKey::new(&AES_128_GCM, k).ok().map(LessSafeKey::new);
        let iv = |v: &[u8]| <[u8; FIXED_IV_LEN]>::try_from(v).ok();
        let (seal_key, seal_iv, open_key, open_iv) = match role {
            DtlsRole::Client => (client_key, client_iv, server_key, server_iv),
            DtlsRole::Server => (server_key, server_iv, client_key, client_iv),
        };
        Some(EstablishedRecords {
            open: key(open_key)?,
            open_iv: iv(open_iv)?,
            seal: key(seal_key)?,
            seal_iv: iv(seal_iv)?,
        })
    }

    /// Whether `datagram` holds an authentic alert that ends the association: close_notify or
    /// any fatal alert. Everything else (handshake retransmissions, forged or damaged records,
    /// warnings) is not.
    pub(crate) fn ends_association(&self, datagram: &[u8]) -> bool {
        let mut rest = datagram;
        while rest.len() >= HEADER_LEN {
            let header = &rest[..HEADER_LEN];
            let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
            let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                return false;
            };
            rest = &rest[HEADER_LEN + len..];
            let epoch = u16::from_be_bytes([header[3], header[4]]);
            if header[0] != CONTENT_ALERT || epoch != EPOCH {
                continue;
            }
            if let Some([level, description]) = self.open_alert(header, body) {
                const FATAL: u8 = 2;
                const CLOSE_NOTIFY: u8 = 0;
                if level == FATAL || description == CLOSE_NOTIFY {
                    return true;
                }
            }
        }
        false
    }

    /// Decrypts an alert record's body; `None` unless it authenticates and holds one alert.
    fn open_alert(&self, header: &[u8], body: &[u8]) -> Option<[u8; 2]> {
        const ALERT_LEN: usize = 2;
        if body.len() != EXPLICIT_NONCE_LEN + ALERT_LEN + TAG_LEN {
            return None;
        }
        let (explicit, sealed) = body.split_at(EXPLICIT_NONCE_LEN);
        let nonce = self.nonce(&self.open_iv, explicit)?;
        let aad = additional_data(&header[3..11], header[0], [header[1], header[2]], ALERT_LEN);
        let mut buf = [0u8; ALERT_LEN + TAG_LEN];
        buf.copy_from_slice(sealed);
        let plain = self
            .open
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .ok()?;
        <[u8; ALERT_LEN]>::try_from(&*plain).ok()
    }

    /// Our close_notify alert as one datagram.
    pub(crate) fn close_notify(&self) -> Vec<u8> {
        let mut epoch_seq = [0u8; 8];
        epoch_seq[..2].copy_from_slice(&EPOCH.to_be_bytes());
        epoch_seq[2..].copy_from_slice(&CLOSE_NOTIFY_SEQUENCE.to_be_bytes()[2..]);
        const WARNING: u8 = 1;
        let mut alert = [WARNING, 0];
        // The explicit nonce only has to be unique per key: the sequence number is.
        let Some(nonce) = self.nonce(&self.seal_iv, &epoch_seq) else {
            return Vec::new();
        };
        let aad = additional_data(&epoch_seq, CONTENT_ALERT, DTLS_1_2, alert.len());
        let Ok(tag) = self
            .seal
            .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut alert)
        else {
            return Vec::new();
        };
        let len = EXPLICIT_NONCE_LEN + alert.len() + TAG_LEN;
        let mut record = Vec::with_capacity(HEADER_LEN + len);
        record.push(CONTENT_ALERT);
        record.extend_from_slice(&DTLS_1_2);
        record.extend_from_slice(&epoch_seq);
        record.extend_from_slice(&(len as u16).to_be_bytes());
        record.extend_from_slice(&epoch_seq);
        record.extend_from_slice(&alert);
        record.extend_from_slice(tag.as_ref());
        record
    }

    fn nonce(&self, fixed: &[u8; FIXED_IV_LEN], explicit: &[u8]) -> Option<Nonce> {
        let mut nonce = [0u8; FIXED_IV_LEN + EXPLICIT_NONCE_LEN];
        nonce[..FIXED_IV_LEN].copy_from_slice(fixed);
        nonce[FIXED_IV_LEN..].copy_from_slice(explicit.get(..EXPLICIT_NONCE_LEN)?);
        Some(Nonce::assume_unique_for_key(nonce))
    }
}

/// RFC 5246 §6.2.3.3 with DTLS's epoch and sequence number in place of TLS's implicit one.
fn additional_data(
    epoch_seq: &[u8],
    content_type: u8,
    version: [u8; 2],
    plain_len: usize,
) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(epoch_seq);
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&(plain_len as u16).to_be_bytes());
    aad
}

/// The TLS 1.2 PRF with SHA-256 (RFC 5246 §5); `label_seed` is the label followed by the seed.
fn prf_sha256(secret: &[u8], label_seed: &[u8], out: &mut [u8]) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut a = hmac::sign(&key, label_seed);
    for chunk in out.chunks_mut(32) {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(a.as_ref());
        ctx.update(label_seed);
        let block = ctx.sign();
        chunk.copy_from_slice(&block.as_ref()[..chunk.len()]);
        a = hmac::sign(&key, a.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (EstablishedRecords, EstablishedRecords) {
        let client_random = [1u8; 32];
        let server_random = [2u8; 32];
        let master = [3u8; 48];
        let client =
            EstablishedRecords::derive(DtlsRole::Client, &client_random, &server_random, &master)
                .unwrap();
        let server =
            EstablishedRecords::derive(DtlsRole::Server, &server_random, &client_random, &master)
                .unwrap();
        (client, server)
    }

    #[test]
    fn each_side_reads_the_others_close_notify() {
        let (client, server) = pair();
        assert!(server.ends_association(&client.close_notify()));
        assert!(client.ends_association(&server.close_notify()));
        // Our own alert is not the peer's: the keys differ by direction.
        assert!(!client.ends_association(&client.close_notify()));
    }

    #[test]
    fn damaged_forged_and_truncated_alerts_are_ignored() {
        let (client, server) = pair();
        let good = client.close_notify();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            // Flipping a bit anywhere (header fields are in the additional data) breaks it,
            // except where it turns the record into something that is not an epoch-1 alert.
            assert!(!server.ends_association(&bad), "byte {i}");
        }
        for len in 0..good.len() {
            assert!(!server.ends_association(&good[..len]), "truncated to {len}");
        }
        // A plaintext alert in epoch 1 (what an off-path attacker could send) is not one.
        let forged = [21, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 2, 2, 40];
        assert!(!server.ends_association(&forged));
        assert!(!server.ends_association(&[]));
    }

    #[test]
    fn an_alert_after_other_records_in_the_datagram_counts() {
        let (client, server) = pair();
        let mut datagram = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 5, 0, 3, 1, 2];
        datagram.truncate(HEADER_LEN + 2);
        datagram[11..13].copy_from_slice(&2u16.to_be_bytes());
        datagram.extend_from_slice(&client.close_notify());
        assert!(server.ends_association(&datagram));
    }

    #[test]
    fn prf_matches_a_published_vector() {
        // The TLS 1.2 PRF (SHA-256) test vector circulated on the IETF TLS list and used by
        // several TLS implementations' test suites.
        let secret = hex("9bbe436ba940f017b17652849a71db35");
        let seed = hex("a0ba9f936cda311827a6f796ffd5198c");
        let mut label_seed = b"test label".to_vec();
        label_seed.extend_from_slice(&seed);
        let mut out = [0u8; 100];
        prf_sha256(&secret, &label_seed, &mut out);
        let expected = hex(
            "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa0\
             22f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66",
        );
        assert_eq!(out.to_vec(), expected);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
