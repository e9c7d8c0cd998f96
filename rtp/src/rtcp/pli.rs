//! Picture Loss Indication (RFC 4585 §6.3.1).

use super::{body_of, out_buf, u32_at, write_header, FMT_PLI, PT_PSFB};
use crate::{Error, Ssrc};

/// A PLI: the receiver lost picture data and wants a keyframe of `media_ssrc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pli {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// The media source that should send a keyframe.
    pub media_ssrc: Ssrc,
}

impl Pli {
    /// Parses one whole PLI packet.
    pub fn parse(packet: &[u8]) -> Result<Self, Error> {
        let (_, body) = body_of(packet, PT_PSFB, Some(FMT_PLI))?;
        Self::from_body(body)
    }

    pub(crate) fn from_body(body: &[u8]) -> Result<Self, Error> {
        Ok(Pli {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            media_ssrc: Ssrc(u32_at(body, 4)?),
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        12
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let out = out_buf(buf, 12)?;
        write_header(out, FMT_PLI, PT_PSFB, 8)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.media_ssrc.0.to_be_bytes());
        Ok(12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_wire_vector() {
        let wire = hex::decode("81ce0002000000014baae1ab").unwrap();
        let pli = Pli::parse(&wire).unwrap();
        assert_eq!(pli.sender_ssrc, Ssrc(1));
        assert_eq!(pli.media_ssrc, Ssrc(0x4baa_e1ab));
        let mut out = [0u8; 12];
        assert_eq!(pli.write_to(&mut out).unwrap(), 12);
        assert_eq!(&out[..], &wire[..]);
    }

    #[test]
    fn rejects_short_and_wrong_fmt() {
        assert_eq!(
            Pli::parse(&hex::decode("81ce000100000001").unwrap()),
            Err(Error::Truncated)
        );
        assert!(Pli::parse(&hex::decode("84ce0002000000014baae1ab").unwrap()).is_err());
    }
}
