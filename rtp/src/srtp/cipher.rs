//! The two transforms, working in place on caller buffers: AEAD_AES_128_GCM on ring
//! (RFC 7714) and AES_CM_128_HMAC_SHA1_80 on RustCrypto (RFC 3711 §4.1.1, §4.2.1). ring's
//! SHA-1 has no SHA-NI path and measured 4x slower, so HMAC stays on RustCrypto.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{KeyInit, StreamCipher};
use aes::Aes128Enc;
use ctr::cipher::InnerIvInit;
use ctr::cipher::StreamCipherCoreWrapper;
use ctr::CtrCore;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::kdf::{derive, Label};
use crate::Error;

/// GCM tag length (RFC 7714 §5).
pub(crate) const GCM_TAG: usize = 16;
/// HMAC-SHA1 tag length of the _80 profile (RFC 3711 §5.2).
pub(crate) const HMAC_TAG: usize = 10;
/// The SRTCP E-flag and index word (RFC 3711 §3.4).
pub(crate) const INDEX_WORD: usize = 4;
const E_FLAG: u32 = 0x8000_0000;

// Keys stay inline: one cipher per context, and no pointer chase per packet.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Cipher {
    Gcm { rtp: GcmKey, rtcp: GcmKey },
    Cm { rtp: CmKey, rtcp: CmKey },
}

/// One direction's GCM session key and salt.
pub(crate) struct GcmKey {
    key: LessSafeKey,
    salt: [u8; 12],
}

/// One direction's AES-CM session key, salt and HMAC key.
pub(crate) struct CmKey {
    aes: Aes128Enc,
    salt: [u8; 14],
    auth: Hmac<Sha1>,
}

impl Cipher {
    pub fn gcm(key: &[u8; 16], salt: &[u8]) -> Result<Self, Error> {
        Ok(Cipher::Gcm {
            rtp: GcmKey::new(key, salt, Label::RtpEncryption, Label::RtpSalt)?,
            rtcp: GcmKey::new(key, salt, Label::RtcpEncryption, Label::RtcpSalt)?,
        })
    }

    pub fn cm(key: &[u8; 16], salt: &[u8]) -> Result<Self, Error> {
        Ok(Cipher::Cm {
            rtp: CmKey::new(
                key,
                salt,
                [Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt],
            )?,
            rtcp: CmKey::new(
                key,
                salt,
                [Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt],
            )?,
        })
    }

    /// Protects the RTP packet in `buf[..buf.len() - tag]`, writing the tag at the end.
    pub fn encrypt_rtp(
        &self,
        buf: &mut [u8],
        hdr: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<(), Error> {
        match self {
            Cipher::Gcm { rtp, .. } => {
                let iv = rtp.iv(ssrc, (u64::from(roc) << 16) | u64::from(seq));
                let (body, tag_out) = buf.split_at_mut(buf.len() - GCM_TAG);
                let (aad, plain) = body.split_at_mut(hdr);
                rtp.seal(iv, aad, plain, tag_out)
            }
            Cipher::Cm { rtp, .. } => {
                let (body, tag_out) = buf.split_at_mut(buf.len() - HMAC_TAG);
                rtp.keystream(ssrc, roc, seq, &mut body[hdr..]);
                tag_out.copy_from_slice(&rtp.tag(body, Some(roc)));
                Ok(())
            }
        }
    }

    /// Authenticates and decrypts the SRTP packet filling `buf`; returns the plaintext length.
    pub fn decrypt_rtp(
        &self,
        buf: &mut [u8],
        hdr: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<usize, Error> {
        match self {
            Cipher::Gcm { rtp, .. } => {
                let iv = rtp.iv(ssrc, (u64::from(roc) << 16) | u64::from(seq));
                let (aad, sealed) = buf.split_at_mut(hdr);
                rtp.open(iv, aad, sealed)?;
                Ok(buf.len() - GCM_TAG)
            }
            Cipher::Cm { rtp, .. } => {
                let (body, tag) = buf.split_at_mut(buf.len() - HMAC_TAG);
                rtp.verify(body, Some(roc), tag)?;
                rtp.keystream(ssrc, roc, seq, &mut body[hdr..]);
                Ok(body.len())
            }
        }
    }

    /// Protects the RTCP packet in `buf[..len]` with SRTCP index `index`; `buf` is exactly
    /// the output length.
    pub fn encrypt_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<(), Error> {
        let word = (E_FLAG | index).to_be_bytes();
        match self {
            Cipher::Gcm { rtcp, .. } => {
                // RFC 7714 §9.1: header(8) | ciphertext | tag | E+index; AAD is the first
                // 8 octets followed by the E+index word (§17).
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&word);
                let iv = rtcp.iv(ssrc, u64::from(index));
                let (body, tail) = buf.split_at_mut(len);
                let (tag_out, word_out) = tail.split_at_mut(GCM_TAG);
                rtcp.seal(iv, &aad, &mut body[8..], tag_out)?;
                word_out.copy_from_slice(&word);
                Ok(())
            }
            Cipher::Cm { rtcp, .. } => {
                // RFC 3711 §3.4: header(8) | ciphertext | E+index | tag; the index takes the
                // place of ROC||SEQ in the IV (§4.1.1) and is authenticated, no ROC appended.
                rtcp.keystream(ssrc, index >> 16, index as u16, &mut buf[8..len]);
                buf[len..len + INDEX_WORD].copy_from_slice(&word);
                let (body, tag_out) = buf.split_at_mut(len + INDEX_WORD);
                tag_out.copy_from_slice(&rtcp.tag(body, None));
                Ok(())
            }
        }
    }

    /// Authenticates and (if E is set) decrypts the SRTCP packet filling `buf`; returns the
    /// RTCP length.
    pub fn decrypt_rtcp(&self, buf: &mut [u8], ssrc: u32, word: u32) -> Result<usize, Error> {
        let index = word & !E_FLAG;
        let encrypted = word & E_FLAG != 0;
        match self {
            Cipher::Gcm { rtcp, .. } => {
                let iv = rtcp.iv(ssrc, u64::from(index));
                let plain_len = buf.len() - GCM_TAG - INDEX_WORD;
                if encrypted {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&word.to_be_bytes());
                    let end = buf.len() - INDEX_WORD;
                    rtcp.open(iv, &aad, &mut buf[8..end])?;
                } else {
                    // RFC 7714 §9.2: unencrypted SRTCP authenticates the whole packet and the
                    // word as AAD. Move the word in front of the tag so the AAD is contiguous.
                    buf[plain_len..].rotate_right(INDEX_WORD);
                    let (aad, tag) = buf.split_at_mut(plain_len + INDEX_WORD);
                    rtcp.open(iv, aad, tag)?;
                }
                Ok(plain_len)
            }
            Cipher::Cm { rtcp, .. } => {
                let (body, tag) = buf.split_at_mut(buf.len() - HMAC_TAG);
                rtcp.verify(body, None, tag)?;
                let plain_len = body.len() - INDEX_WORD;
                if encrypted {
                    rtcp.keystream(ssrc, index >> 16, index as u16, &mut body[8..plain_len]);
                }
                Ok(plain_len)
            }
        }
    }
}

impl GcmKey {
    fn new(
        master_key: &[u8; 16],
        master_salt: &[u8],
        key_label: Label,
        salt_label: Label,
    ) -> Result<Self, Error> {
        let mut key = [0u8; 16];
        derive(master_key, master_salt, key_label, &mut key);
        let mut salt = [0u8; 12];
        derive(master_key, master_salt, salt_label, &mut salt);
        let unbound = UnboundKey::new(&AES_128_GCM, &key).map_err(|_| Error::Crypto)?;
        Ok(GcmKey {
            key: LessSafeKey::new(unbound),
            salt,
        })
    }

    /// RFC 7714 §8.1 (RTP: 00 00 | SSRC | ROC | SEQ) and §9.1 (RTCP: 00 00 | SSRC | 00 00 |
    /// 0 | 31-bit index) XORed with the session salt. Both are 00 00 | SSRC | 48-bit index.
    fn iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        iv
    }

    fn seal(
        &self,
        iv: [u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        tag_out: &mut [u8],
    ) -> Result<(), Error> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), in_out)
            .map_err(|_| Error::Crypto)?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    fn open(&self, iv: [u8; 12], aad: &[u8], sealed: &mut [u8]) -> Result<(), Error> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad), sealed)
            .map(|_| ())
            .map_err(|_| Error::AuthenticationFailed)
    }
}

impl CmKey {
    fn new(master_key: &[u8; 16], master_salt: &[u8], labels: [Label; 3]) -> Result<Self, Error> {
        let mut key = [0u8; 16];
        derive(master_key, master_salt, labels[0], &mut key);
        // RFC 3711 §5.2: 160-bit session authentication key.
        let mut auth = [0u8; 20];
        derive(master_key, master_salt, labels[1], &mut auth);
        let mut salt = [0u8; 14];
        derive(master_key, master_salt, labels[2], &mut salt);
        Ok(CmKey {
            aes: Aes128Enc::new(GenericArray::from_slice(&key)),
            salt,
            auth: <Hmac<Sha1> as Mac>::new_from_slice(&auth).map_err(|_| Error::Crypto)?,
        })
    }

    /// XORs AES-CM keystream into `data`. IV = (salt * 2^16) XOR (SSRC * 2^64) XOR
    /// (index * 2^16) (RFC 3711 §4.1.1), with index = ROC||SEQ or the SRTCP index.
    fn keystream(&self, ssrc: u32, hi: u32, lo: u16, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..12].copy_from_slice(&hi.to_be_bytes());
        iv[12..14].copy_from_slice(&lo.to_be_bytes());
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        let core = CtrCore::inner_iv_init(self.aes.clone(), &iv.into());
        let mut ctr: ctr::Ctr128BE<Aes128Enc> = StreamCipherCoreWrapper::from_core(core);
        ctr.apply_keystream(data);
    }

    /// HMAC-SHA1 over the authenticated portion, then ROC for SRTP (RFC 3711 §4.2), truncated
    /// to 80 bits.
    fn tag(&self, authenticated: &[u8], roc: Option<u32>) -> [u8; HMAC_TAG] {
        let mut mac = self.auth.clone();
        mac.update(authenticated);
        if let Some(roc) = roc {
            mac.update(&roc.to_be_bytes());
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; HMAC_TAG];
        tag.copy_from_slice(&full[..HMAC_TAG]);
        tag
    }

    /// Constant-time tag check, so timing does not reveal how many tag bytes matched.
    fn verify(&self, authenticated: &[u8], roc: Option<u32>, tag: &[u8]) -> Result<(), Error> {
        let expected = self.tag(authenticated, roc);
        if bool::from(expected.ct_eq(tag)) {
            Ok(())
        } else {
            Err(Error::AuthenticationFailed)
        }
    }
}

#[cfg(test)]
impl CmKey {
    pub(crate) fn tag_for_test(&self, authenticated: &[u8]) -> [u8; HMAC_TAG] {
        self.tag(authenticated, None)
    }
}

#[cfg(test)]
impl GcmKey {
    pub(crate) fn seal_aad_only_for_test(
        &self,
        ssrc: u32,
        index: u32,
        aad: &[u8],
    ) -> [u8; GCM_TAG] {
        let mut tag = [0u8; GCM_TAG];
        self.seal(self.iv(ssrc, u64::from(index)), aad, &mut [], &mut tag)
            .unwrap();
        tag
    }
}
