//! Receiver Report and report blocks (RFC 3550 §6.4.2, §6.4.1).

use super::{body_of, out_buf, u32_at, write_header, Items, WireItem, PT_RR};
use crate::packet::read_u32;
use crate::{Error, Ssrc};

/// One reception report block (RFC 3550 §6.4.1), 24 bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost: a signed 24-bit value (duplicates can make it
    /// negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s (DLSR).
    pub delay_since_last_sr: u32,
}

impl WireItem for ReportBlock {
    const LEN: usize = 24;

    fn read(b: &[u8]) -> Self {
        // Sign-extend the 24-bit cumulative loss.
        let lost = (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8;
        ReportBlock {
            ssrc: Ssrc(read_u32(b, 0)),
            fraction_lost: b[4],
            cumulative_lost: lost,
            extended_highest_seq: read_u32(b, 8),
            jitter: read_u32(b, 12),
            last_sr: read_u32(b, 16),
            delay_since_last_sr: read_u32(b, 20),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.ssrc.0.to_be_bytes());
        b[4] = self.fraction_lost;
        // Clamp to the 24-bit range so an extreme count saturates instead of wrapping.
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF);
        b[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        b[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        b[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        b[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// Reads `count` report blocks at the start of `b`.
pub(crate) fn read_blocks(b: &[u8], count: u8) -> Result<Items<'_, ReportBlock>, Error> {
    let len = usize::from(count) * ReportBlock::LEN;
    b.get(..len).map(Items::from_wire).ok_or(Error::Truncated)
}

/// A Receiver Report (RFC 3550 §6.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiverReport<'a> {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// Up to 31 report blocks.
    pub reports: Items<'a, ReportBlock>,
}

impl<'a> ReceiverReport<'a> {
    /// Parses one whole RR packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (count, body) = body_of(packet, PT_RR, None)?;
        Self::from_body(count, body)
    }

    pub(crate) fn from_body(count: u8, body: &'a [u8]) -> Result<Self, Error> {
        // Profile-specific extensions after the blocks (§6.4.2) are ignored.
        Ok(ReceiverReport {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            reports: read_blocks(body.get(4..).unwrap_or_default(), count)?,
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        8 + self.reports.encoded_len()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        let count = u8::try_from(self.reports.len()).unwrap_or(u8::MAX);
        write_header(out, count, PT_RR, len - 4)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        self.reports.write(&mut out[8..]);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_negative_loss() {
        let blocks = [
            ReportBlock {
                ssrc: Ssrc(0x1234_5678),
                fraction_lost: 25,
                cumulative_lost: -3,
                extended_highest_seq: 0x0001_0005,
                jitter: 90,
                last_sr: 0xaabb_ccdd,
                delay_since_last_sr: 65_536,
            },
            ReportBlock {
                ssrc: Ssrc(2),
                cumulative_lost: 0x7F_FFFF,
                ..Default::default()
            },
        ];
        let rr = ReceiverReport {
            sender_ssrc: Ssrc(9),
            reports: Items::from_slice(&blocks),
        };
        let mut buf = [0u8; 64];
        let n = rr.write_to(&mut buf).unwrap();
        assert_eq!(n, 56);
        assert_eq!(hex::encode(&buf[..12]), "82c9000d0000000912345678");
        assert_eq!(hex::encode(&buf[12..16]), "19fffffd");
        let parsed = ReceiverReport::parse(&buf[..n]).unwrap();
        assert_eq!(parsed, rr);
        assert_eq!(parsed.reports.get(0).unwrap().cumulative_lost, -3);
    }

    #[test]
    fn rejects_missing_blocks() {
        // RC=1 but no block follows.
        let buf = hex::decode("81c9000100000009").unwrap();
        assert_eq!(ReceiverReport::parse(&buf), Err(Error::Truncated));
        assert!(ReceiverReport::default().write_to(&mut [0u8; 7]).is_err());
    }
}
