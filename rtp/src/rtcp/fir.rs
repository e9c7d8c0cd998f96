//! Full Intra Request (RFC 5104 §4.3.1).

use super::{body_of, out_buf, u32_at, write_header, Items, WireItem, FMT_FIR, PT_PSFB};
use crate::packet::read_u32;
use crate::{Error, Ssrc};

/// One FCI entry of a FIR: the source and a command sequence number that the requester
/// increments per new request, so retransmitted requests can be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FirEntry {
    /// The media source asked for a keyframe.
    pub ssrc: Ssrc,
    /// Command sequence number.
    pub seq_nr: u8,
}

impl WireItem for FirEntry {
    const LEN: usize = 8;

    fn read(b: &[u8]) -> Self {
        FirEntry {
            ssrc: Ssrc(read_u32(b, 0)),
            seq_nr: b[4],
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.ssrc.0.to_be_bytes());
        b[4] = self.seq_nr;
        b[5..8].fill(0);
    }
}

/// A FIR packet. The media SSRC of the common header is unused (RFC 5104 §4.3.1.2) and
/// written as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fir<'a> {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// The requests.
    pub entries: Items<'a, FirEntry>,
}

impl<'a> Fir<'a> {
    /// Parses one whole FIR packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (_, body) = body_of(packet, PT_PSFB, Some(FMT_FIR))?;
        Self::from_body(body)
    }

    pub(crate) fn from_body(body: &'a [u8]) -> Result<Self, Error> {
        u32_at(body, 4)?;
        Ok(Fir {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            entries: Items::from_wire(&body[8..]),
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        12 + self.entries.encoded_len()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        write_header(out, FMT_FIR, PT_PSFB, len - 4)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..12].fill(0);
        self.entries.write(&mut out[12..]);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let entries = [
            FirEntry {
                ssrc: Ssrc(0xaabb_ccdd),
                seq_nr: 3,
            },
            FirEntry {
                ssrc: Ssrc(2),
                seq_nr: 255,
            },
        ];
        let fir = Fir {
            sender_ssrc: Ssrc(1),
            entries: Items::from_slice(&entries),
        };
        let mut buf = [0u8; 28];
        let n = fir.write_to(&mut buf).unwrap();
        assert_eq!(n, 28);
        assert_eq!(
            hex::encode(&buf[..20]),
            "84ce00060000000100000000aabbccdd03000000"
        );
        assert_eq!(Fir::parse(&buf).unwrap(), fir);
    }

    #[test]
    fn rejects_short() {
        assert_eq!(
            Fir::parse(&hex::decode("84ce000100000001").unwrap()),
            Err(Error::Truncated)
        );
    }
}
