//! Generic NACK (RFC 4585 §6.2.1).

use super::{body_of, out_buf, u32_at, write_header, Items, WireItem, FMT_NACK, PT_RTPFB};
use crate::{Error, Ssrc};

/// One NACK FCI entry: a lost packet id and a bitmask of the 16 following losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NackPair {
    /// Packet id: the sequence number of a lost packet.
    pub pid: u16,
    /// Bitmask of following lost packets: bit i set means `pid + i + 1` is lost.
    pub blp: u16,
}

impl NackPair {
    /// The lost sequence numbers this entry names, `pid` first.
    pub fn lost(self) -> impl Iterator<Item = u16> {
        let following = (0..16u16)
            .filter(move |i| self.blp & (1 << i) != 0)
            .map(move |i| self.pid.wrapping_add(i + 1));
        core::iter::once(self.pid).chain(following)
    }
}

impl WireItem for NackPair {
    const LEN: usize = 4;

    fn read(b: &[u8]) -> Self {
        NackPair {
            pid: u16::from_be_bytes([b[0], b[1]]),
            blp: u16::from_be_bytes([b[2], b[3]]),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[..2].copy_from_slice(&self.pid.to_be_bytes());
        b[2..4].copy_from_slice(&self.blp.to_be_bytes());
    }
}

/// A generic NACK: the sender of this packet is missing some RTP packets of `media_ssrc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nack<'a> {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// The media source whose packets are missing.
    pub media_ssrc: Ssrc,
    /// The (PID, BLP) entries.
    pub pairs: Items<'a, NackPair>,
}

impl<'a> Nack<'a> {
    /// Parses one whole NACK packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (_, body) = body_of(packet, PT_RTPFB, Some(FMT_NACK))?;
        Self::from_body(body)
    }

    pub(crate) fn from_body(body: &'a [u8]) -> Result<Self, Error> {
        Ok(Nack {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            media_ssrc: Ssrc(u32_at(body, 4)?),
            pairs: Items::from_wire(&body[8..]),
        })
    }

    /// Every lost sequence number, in entry order.
    pub fn lost(&self) -> impl Iterator<Item = u16> + 'a {
        self.pairs.iter().flat_map(NackPair::lost)
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        12 + self.pairs.encoded_len()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        write_header(out, FMT_NACK, PT_RTPFB, len - 4)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.media_ssrc.0.to_be_bytes());
        self.pairs.write(&mut out[12..]);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lists_losses() {
        // pid 65535 with bits 0 and 2: 65535, 0, 2; then pid 10 alone.
        let wire =
            hex::decode("81cd0004 00000001 00000002 ffff0005 000a0000".replace(' ', "")).unwrap();
        let nack = Nack::parse(&wire).unwrap();
        assert_eq!(nack.media_ssrc, Ssrc(2));
        assert_eq!(nack.lost().collect::<Vec<_>>(), vec![65_535, 0, 2, 10]);
        let mut out = [0u8; 20];
        assert_eq!(nack.write_to(&mut out).unwrap(), 20);
        assert_eq!(&out[..], &wire[..]);

        let pairs = [NackPair {
            pid: 1,
            blp: 0x8000,
        }];
        let built = Nack {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(2),
            pairs: Items::from_slice(&pairs),
        };
        let n = built.write_to(&mut out).unwrap();
        assert_eq!(Nack::parse(&out[..n]).unwrap(), built);
        assert_eq!(built.lost().collect::<Vec<_>>(), vec![1, 17]);
    }

    #[test]
    fn rejects_short() {
        assert_eq!(
            Nack::parse(&hex::decode("81cd000100000001").unwrap()),
            Err(Error::Truncated)
        );
    }
}
