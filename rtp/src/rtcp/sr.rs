//! Sender Report (RFC 3550 §6.4.1).

use super::rr::read_blocks;
use super::{body_of, out_buf, u32_at, write_header, Items, ReportBlock, PT_SR};
use crate::{Error, Ssrc};

/// A Sender Report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderReport<'a> {
    /// SSRC of the sender.
    pub sender_ssrc: Ssrc,
    /// 64-bit NTP timestamp: seconds since 1900 in the upper half, fraction in the lower.
    pub ntp_time: u64,
    /// RTP timestamp corresponding to `ntp_time`, in the media clock.
    pub rtp_time: u32,
    /// Packets sent since the start of transmission.
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission.
    pub octet_count: u32,
    /// Up to 31 report blocks.
    pub reports: Items<'a, ReportBlock>,
}

impl<'a> SenderReport<'a> {
    /// Parses one whole SR packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (count, body) = body_of(packet, PT_SR, None)?;
        Self::from_body(count, body)
    }

    pub(crate) fn from_body(count: u8, body: &'a [u8]) -> Result<Self, Error> {
        let ntp_hi = u32_at(body, 4)?;
        let ntp_lo = u32_at(body, 8)?;
        Ok(SenderReport {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            ntp_time: (u64::from(ntp_hi) << 32) | u64::from(ntp_lo),
            rtp_time: u32_at(body, 12)?,
            packet_count: u32_at(body, 16)?,
            octet_count: u32_at(body, 20)?,
            reports: read_blocks(body.get(24..).unwrap_or_default(), count)?,
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        28 + self.reports.encoded_len()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        let count = u8::try_from(self.reports.len()).unwrap_or(u8::MAX);
        write_header(out, count, PT_SR, len - 4)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..16].copy_from_slice(&self.ntp_time.to_be_bytes());
        out[16..20].copy_from_slice(&self.rtp_time.to_be_bytes());
        out[20..24].copy_from_slice(&self.packet_count.to_be_bytes());
        out[24..28].copy_from_slice(&self.octet_count.to_be_bytes());
        self.reports.write(&mut out[28..]);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wire_vector_and_round_trips() {
        // SR, RC=1, from a browser capture shape: ssrc, NTP, RTP ts, counts, one block.
        let wire = hex::decode(
            "81c8000c 902f9e2e da8bd1fc dddddddd 00000000 00000001 00000003 \
             bc5e9a40 00000000 00000046 00000000 00000000 00000000"
                .replace(' ', ""),
        )
        .unwrap();
        let sr = SenderReport::parse(&wire).unwrap();
        assert_eq!(sr.sender_ssrc, Ssrc(0x902f_9e2e));
        assert_eq!(sr.ntp_time, 0xda8b_d1fc_dddd_dddd);
        assert_eq!((sr.rtp_time, sr.packet_count, sr.octet_count), (0, 1, 3));
        assert_eq!(sr.reports.len(), 1);
        assert_eq!(sr.reports.get(0).unwrap().extended_highest_seq, 0x46);
        let mut out = [0u8; 52];
        assert_eq!(sr.write_to(&mut out).unwrap(), 52);
        assert_eq!(&out[..], &wire[..]);
        assert_eq!(
            sr.write_to(&mut out[..51]),
            Err(Error::BufferTooSmall { needed: 52 })
        );
    }

    #[test]
    fn ignores_profile_extensions_and_rejects_short() {
        let mut wire = vec![0x80, 200, 0, 7];
        wire.extend_from_slice(&[0u8; 28]);
        assert!(SenderReport::parse(&wire).is_ok());
        wire[3] = 5;
        assert_eq!(SenderReport::parse(&wire[..24]), Err(Error::Truncated));
        // Wrong packet type for this parser.
        wire[1] = 201;
        assert!(SenderReport::parse(&wire).is_err());
    }
}
