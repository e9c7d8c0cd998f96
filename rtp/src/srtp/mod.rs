//! SRTP and SRTCP (RFC 3711, RFC 7714), in place and without per-packet allocation.
//!
//! An [`SrtpContext`] is one direction of one DTLS-SRTP session: the local side protects with
//! one context and unprotects with another, each keyed from the exporter output (RFC 5764
//! §4.2). It keeps per-SSRC state (rollover counter, replay windows) in a small `Vec` that
//! grows only when a new SSRC appears; on the receive side only after that SSRC's first packet
//! authenticated, so forged packets cannot make it grow.

mod cipher;
mod kdf;
mod replay;

use cipher::{Cipher, GCM_TAG, HMAC_TAG, INDEX_WORD};
use replay::{RtcpStream, RtpStream};

use crate::packet::{header_len, read_u32};
use crate::Error;

/// Highest SRTCP index: 31 bits (RFC 3711 §3.4).
const MAX_SRTCP_INDEX: u32 = 0x7FFF_FFFF;

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
    /// Bytes SRTP adds to an RTP packet: the authentication tag.
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpProfile::AeadAes128Gcm => GCM_TAG,
            SrtpProfile::Aes128CmHmacSha1_80 => HMAC_TAG,
        }
    }
    /// Bytes SRTCP adds to an RTCP packet: the tag and the E-flag/index word.
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + INDEX_WORD
    }
    /// The DTLS-SRTP protection profile id (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub fn dtls_id(self) -> u16 {
        match self {
            SrtpProfile::AeadAes128Gcm => 0x0007,
            SrtpProfile::Aes128CmHmacSha1_80 => 0x0001,
        }
    }
    /// The profile with DTLS-SRTP id `id`, if supported.
    pub fn from_dtls_id(id: u16) -> Option<Self> {
        match id {
            0x0007 => Some(SrtpProfile::AeadAes128Gcm),
            0x0001 => Some(SrtpProfile::Aes128CmHmacSha1_80),
            _ => None,
        }
    }
}

/// SSRCs per direction a context holds without allocating: audio, video and their
/// retransmission streams. More still work; each further one allocates once.
const STREAMS_RESERVED: usize = 4;

/// One direction of an SRTP session: all SSRCs sent (or received) under one master key.
pub struct SrtpContext {
    profile: SrtpProfile,
    cipher: Cipher,
    rtp: Vec<RtpStream>,
    rtcp: Vec<RtcpStream>,
}

impl core::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("rtp_ssrcs", &self.rtp.len())
            .field("rtcp_ssrcs", &self.rtcp.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys (RFC 3711 §4.3, kdr 0) from the master key and salt.
    pub fn new(profile: SrtpProfile, master_key: &[u8], master_salt: &[u8]) -> Result<Self, Error> {
        let key: &[u8; 16] = master_key.try_into().map_err(|_| Error::KeyLength {
            expected: profile.key_len(),
            got: master_key.len(),
        })?;
        if master_salt.len() != profile.salt_len() {
            return Err(Error::KeyLength {
                expected: profile.salt_len(),
                got: master_salt.len(),
            });
        }
        let cipher = match profile {
            SrtpProfile::AeadAes128Gcm => Cipher::gcm(key, master_salt)?,
            SrtpProfile::Aes128CmHmacSha1_80 => Cipher::cm(key, master_salt)?,
        };
        Ok(SrtpContext {
            profile,
            cipher,
            // Reserved here so the first packet of a stream does not allocate on the media path.
            rtp: Vec::with_capacity(STREAMS_RESERVED),
            rtcp: Vec::with_capacity(STREAMS_RESERVED),
        })
    }

    /// The profile this context was made for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Protects the plaintext RTP packet in `buf[..len]` in place and returns the SRTP
    /// length, `len + profile.rtp_overhead()`; `buf` must have room for it. The rollover
    /// counter of the packet's SSRC follows its sequence numbers (RFC 3711 §3.3.1).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let packet = buf
            .get(..len)
            .ok_or(Error::BufferTooSmall { needed: len })?;
        let hdr = header_len(packet)?;
        let out_len = len + self.profile.rtp_overhead();
        let out = buf
            .get_mut(..out_len)
            .ok_or(Error::BufferTooSmall { needed: out_len })?;
        let ssrc = read_u32(out, 8);
        let seq = u16::from_be_bytes([out[2], out[3]]);
        let i = match self.rtp.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                self.rtp.push(RtpStream::new(ssrc));
                self.rtp.len() - 1
            }
        };
        let index = self.rtp[i].estimate(seq);
        // RFC 3711 §9.2: no more than 2^48 packets under one key.
        let roc = u32::try_from(index.roc()).map_err(|_| Error::IndexExhausted)?;
        self.cipher.encrypt_rtp(out, hdr, ssrc, roc, seq)?;
        self.rtp[i].window.accept(index.value());
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTP packet filling `buf`, in place; returns the RTP
    /// length. The packet index is estimated from the highest index seen (RFC 3711 §3.3.1,
    /// Appendix A). Replayed packets and packets behind the 128-packet window fail with
    /// [`Error::Replayed`] (§3.3.2). State changes only after the packet authenticated. After
    /// an error the contents of `buf` are unspecified.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let hdr = header_len(buf)?;
        if buf.len() < hdr + self.profile.rtp_overhead() {
            return Err(Error::Truncated);
        }
        let ssrc = read_u32(buf, 8);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let pos = self.rtp.iter().position(|s| s.ssrc == ssrc);
        let stream = pos.map_or(RtpStream::new(ssrc), |i| self.rtp[i]);
        let index = stream.estimate(seq);
        stream.window.check(index.value())?;
        let roc = u32::try_from(index.roc()).map_err(|_| Error::IndexExhausted)?;
        let len = self.cipher.decrypt_rtp(buf, hdr, ssrc, roc, seq)?;
        let i = pos.unwrap_or_else(|| {
            self.rtp.push(stream);
            self.rtp.len() - 1
        });
        self.rtp[i].window.accept(index.value());
        Ok(len)
    }

    /// Protects the plaintext (compound) RTCP packet in `buf[..len]` in place and returns the
    /// SRTCP length, `len + profile.rtcp_overhead()`. The payload after the first 8 octets is
    /// encrypted and the E flag set; each sender SSRC has its own SRTCP index, starting at 1
    /// like libsrtp.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let packet = buf
            .get(..len)
            .ok_or(Error::BufferTooSmall { needed: len })?;
        check_rtcp_header(packet)?;
        let out_len = len + self.profile.rtcp_overhead();
        let out = buf
            .get_mut(..out_len)
            .ok_or(Error::BufferTooSmall { needed: out_len })?;
        let ssrc = read_u32(out, 4);
        let i = match self.rtcp.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                self.rtcp.push(RtcpStream::new(ssrc));
                self.rtcp.len() - 1
            }
        };
        // RFC 3711 §9.2: rekey before the 31-bit index would repeat.
        let index = self.rtcp[i]
            .sent
            .checked_add(1)
            .filter(|i| *i <= MAX_SRTCP_INDEX);
        let index = index.ok_or(Error::IndexExhausted)?;
        self.cipher.encrypt_rtcp(out, len, ssrc, index)?;
        self.rtcp[i].sent = index;
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTCP packet filling `buf`, in place; returns the RTCP
    /// length. Packets with the E flag clear are authenticated but not decrypted (RFC 3711
    /// §3.4). Replays fail with [`Error::Replayed`]. After an error the contents of `buf` are
    /// unspecified.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = buf.len();
        if len < 8 + self.profile.rtcp_overhead() {
            return Err(Error::Truncated);
        }
        check_rtcp_header(buf)?;
        let word_at = match self.profile {
            SrtpProfile::AeadAes128Gcm => len - INDEX_WORD,
            SrtpProfile::Aes128CmHmacSha1_80 => len - HMAC_TAG - INDEX_WORD,
        };
        let word = read_u32(buf, word_at);
        let index = u64::from(word & MAX_SRTCP_INDEX);
        let ssrc = read_u32(buf, 4);
        let pos = self.rtcp.iter().position(|s| s.ssrc == ssrc);
        let stream = pos.map_or(RtcpStream::new(ssrc), |i| self.rtcp[i]);
        stream.window.check(index)?;
        let plain = self.cipher.decrypt_rtcp(buf, ssrc, word)?;
        let i = pos.unwrap_or_else(|| {
            self.rtcp.push(stream);
            self.rtcp.len() - 1
        });
        self.rtcp[i].window.accept(index);
        Ok(plain)
    }

    /// Records that packet `seq` of `ssrc` arrived inside another, already authenticated
    /// stream: an RFC 4588 retransmission, which SRTP protects under its own SSRC and index, so
    /// the replay check of the packet it carries is made here. Fails with [`Error::Replayed`]
    /// when that packet was received before or is behind the window (drop the copy: forwarding
    /// it again would reuse the index it went out with, with other header bytes); marks it
    /// received otherwise. A new `ssrc` gets its state as with a first packet.
    pub fn accept_repaired(&mut self, ssrc: crate::Ssrc, seq: u16) -> Result<(), Error> {
        let pos = self.rtp.iter().position(|s| s.ssrc == ssrc.0);
        let stream = pos.map_or(RtpStream::new(ssrc.0), |i| self.rtp[i]);
        let index = stream.estimate(seq);
        stream.window.check(index.value())?;
        let i = pos.unwrap_or_else(|| {
            self.rtp.push(stream);
            self.rtp.len() - 1
        });
        self.rtp[i].window.accept(index.value());
        Ok(())
    }

    /// The rollover counter of `ssrc`: the upper 32 bits of its highest packet index.
    pub fn roc(&self, ssrc: crate::Ssrc) -> Option<u32> {
        let s = self.rtp.iter().find(|s| s.ssrc == ssrc.0)?;
        s.window.top().map(|t| (t >> 16) as u32)
    }
}

/// SRTCP needs the version and the sender SSRC in the first 8 octets.
fn check_rtcp_header(packet: &[u8]) -> Result<(), Error> {
    if packet.len() < 8 {
        return Err(Error::Truncated);
    }
    let version = packet[0] >> 6;
    if version != 2 {
        return Err(Error::BadVersion(version));
    }
    Ok(())
}

#[cfg(test)]
mod oracle_tests;
