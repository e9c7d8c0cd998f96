//! SRTP and SRTCP (RFC 3711, RFC 7714).

/// An SRTP protection profile negotiated through DTLS `use_srtp` (RFC 5764).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// AEAD_AES_128_GCM (RFC 7714), DTLS-SRTP id 0x0007.
    AeadAes128Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711), DTLS-SRTP id 0x0001.
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }
    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm => 12,
            SrtpProfile::Aes128CmHmacSha1_80 => 14,
        }
    }
}
