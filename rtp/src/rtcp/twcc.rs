//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01 §3.1), RTPFB FMT 15. Only the fixed fields are decoded; the packet status
//! chunks and receive deltas stay borrowed for the bandwidth estimator.

use super::{body_of, out_buf, padded_len, u32_at, write_header, FMT_TWCC, PT_RTPFB};
use crate::{Error, Ssrc};

/// A transport-cc feedback packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransportCc<'a> {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// Media source SSRC (unused by most senders).
    pub media_ssrc: Ssrc,
    /// Transport-wide sequence number of the first packet reported.
    pub base_seq: u16,
    /// Number of packets whose status is reported.
    pub status_count: u16,
    /// Reference time, 24 bits, in multiples of 64 ms.
    pub reference_time: u32,
    /// Feedback packet count, to detect lost feedback.
    pub fb_count: u8,
    /// Packet status chunks and receive deltas, padding removed.
    pub chunks: &'a [u8],
}

impl<'a> TransportCc<'a> {
    /// Parses one whole transport-cc packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (_, body) = body_of(packet, PT_RTPFB, Some(FMT_TWCC))?;
        Self::from_body(body)
    }

    pub(crate) fn from_body(body: &'a [u8]) -> Result<Self, Error> {
        let word = u32_at(body, 8)?;
        let time = u32_at(body, 12)?;
        Ok(TransportCc {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            media_ssrc: Ssrc(u32_at(body, 4)?),
            base_seq: (word >> 16) as u16,
            status_count: word as u16,
            reference_time: time >> 8,
            fb_count: time as u8,
            chunks: &body[16..],
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes: padded to 32 bits.
    pub fn encoded_len(&self) -> usize {
        padded_len(16 + self.chunks.len())
    }

    /// Writes the packet into `buf`, returning its length. A body that is not a multiple of
    /// 4 bytes gets RTCP padding (P bit) as libwebrtc sends it.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.reference_time > 0xFF_FFFF {
            return Err(Error::OutOfRange("twcc reference time above 24 bits"));
        }
        let len = self.encoded_len();
        let body_len = 16 + self.chunks.len();
        let out = out_buf(buf, len)?;
        write_header(out, FMT_TWCC, PT_RTPFB, body_len)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.media_ssrc.0.to_be_bytes());
        out[12..14].copy_from_slice(&self.base_seq.to_be_bytes());
        out[14..16].copy_from_slice(&self.status_count.to_be_bytes());
        let time = (self.reference_time << 8) | u32::from(self.fb_count);
        out[16..20].copy_from_slice(&time.to_be_bytes());
        out[20..4 + body_len].copy_from_slice(self.chunks);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_padded_wire_vector_and_round_trips() {
        // Base seq 153, 1 status, ref time 0x2b6813, fb count 0; one run-length chunk
        // (0x2001) and one 1-byte delta (0x44), then 1 padding octet.
        let wire =
            hex::decode("afcd0005 fa17fa17 422d3ff5 00990001 2b681300 20014401".replace(' ', ""))
                .unwrap();
        let t = TransportCc::parse(&wire).unwrap();
        assert_eq!(
            (t.sender_ssrc, t.media_ssrc),
            (Ssrc(0xfa17_fa17), Ssrc(0x422d_3ff5))
        );
        assert_eq!((t.base_seq, t.status_count), (153, 1));
        assert_eq!((t.reference_time, t.fb_count), (0x2b_6813, 0));
        assert_eq!(t.chunks, &[0x20, 0x01, 0x44]);
        let mut out = [0u8; 24];
        assert_eq!(t.write_to(&mut out).unwrap(), 24);
        assert_eq!(&out[..], &wire[..]);
        assert_eq!(TransportCc::parse(&out).unwrap(), t);
    }

    #[test]
    fn rejects_short() {
        let wire = hex::decode("8fcd0003 fa17fa17 422d3ff5 00990001".replace(' ', "")).unwrap();
        assert_eq!(TransportCc::parse(&wire), Err(Error::Truncated));
    }
}
