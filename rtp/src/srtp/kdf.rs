//! SRTP key derivation (RFC 3711 §4.3) with the AES-CM PRF (§4.3.3), key derivation rate 0
//! as DTLS-SRTP requires (RFC 5764 §4.1.2).

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;

/// Key derivation labels (RFC 3711 §4.3.1, §4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Label {
    RtpEncryption = 0x00,
    RtpAuth = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuth = 0x04,
    RtcpSalt = 0x05,
}

/// Derives `out.len()` bytes of session key material for `label`.
///
/// With kdr 0, r = 0 and x = (label || 0) XOR master_salt, the label sitting at octet 7 of
/// the 112-bit salt (§4.3.1). The PRF is AES-CM keyed with the master key over x * 2^16,
/// i.e. the salt in the first octets of the block and a 16-bit block counter in the last two
/// (§4.3.3). A 96-bit GCM salt is placed the same way (RFC 7714 §11), as libsrtp does.
pub(crate) fn derive(master_key: &[u8; 16], master_salt: &[u8], label: Label, out: &mut [u8]) {
    let aes = Aes128::new(GenericArray::from_slice(master_key));
    let mut x = [0u8; 16];
    let n = master_salt.len().min(14);
    x[..n].copy_from_slice(&master_salt[..n]);
    x[7] ^= label as u8;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        let mut b = GenericArray::from(block);
        aes.encrypt_block(&mut b);
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3711 Appendix B.3 key derivation test vectors.
    #[test]
    fn rfc3711_b3_vectors() {
        let key: [u8; 16] = hex::decode("E1F97A0D3E018BE0D64FA32C06DE4139")
            .unwrap()
            .try_into()
            .unwrap();
        let salt = hex::decode("0EC675AD498AFEEBB6960B3AABE6").unwrap();
        let mut enc = [0u8; 16];
        derive(&key, &salt, Label::RtpEncryption, &mut enc);
        assert_eq!(hex::encode_upper(enc), "C61E7A93744F39EE10734AFE3FF7A087");
        let mut s = [0u8; 14];
        derive(&key, &salt, Label::RtpSalt, &mut s);
        assert_eq!(hex::encode_upper(s), "30CBBC08863D8C85D49DB34A9AE1");
        let mut auth = [0u8; 94];
        derive(&key, &salt, Label::RtpAuth, &mut auth);
        assert_eq!(
            hex::encode_upper(&auth[..32]),
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE"
        );
    }
}
