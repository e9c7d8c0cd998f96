//! Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb-03 §2.2), an
//! application-layer feedback message (RFC 4585 §6.4, PSFB FMT 15).

use super::{body_of, out_buf, u32_at, write_header, Items, FMT_AFB, PT_PSFB};
use crate::{Error, Ssrc};

/// The "REMB" identifier that tells REMB apart from other AFB messages.
const REMB_ID: [u8; 4] = *b"REMB";

/// A REMB message: the receiver's bandwidth estimate for a set of media sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Remb<'a> {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// Estimated bitrate in bits per second. On the wire it is an 18-bit mantissa and a
    /// 6-bit exponent, so writing rounds down to 18 significant bits.
    pub bitrate_bps: u64,
    /// The media sources the estimate applies to.
    pub ssrcs: Items<'a, Ssrc>,
}

impl<'a> Remb<'a> {
    /// Whether a PSFB FMT 15 body is a REMB.
    pub(crate) fn is_remb(body: &[u8]) -> bool {
        body.get(8..12) == Some(&REMB_ID[..])
    }

    /// Parses one whole REMB packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (_, body) = body_of(packet, PT_PSFB, Some(FMT_AFB))?;
        if !Self::is_remb(body) {
            return Err(Error::Malformed("afb message is not remb"));
        }
        Self::from_body(body)
    }

    pub(crate) fn from_body(body: &'a [u8]) -> Result<Self, Error> {
        let word = u32_at(body, 12)?;
        let count = usize::from((word >> 24) as u8);
        let exp = (word >> 18) & 0x3F;
        let mantissa = u128::from(word & 0x3_FFFF);
        // 18 bits shifted by up to 63 can exceed u64: saturate.
        let bitrate_bps = u64::try_from(mantissa << exp).unwrap_or(u64::MAX);
        let ssrcs = body.get(16..16 + 4 * count).ok_or(Error::Truncated)?;
        Ok(Remb {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            bitrate_bps,
            ssrcs: Items::from_wire(ssrcs),
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        20 + self.ssrcs.encoded_len()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let count =
            u8::try_from(self.ssrcs.len()).map_err(|_| Error::OutOfRange("remb over 255 ssrcs"))?;
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        write_header(out, FMT_AFB, PT_PSFB, len - 4)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..12].fill(0);
        out[12..16].copy_from_slice(&REMB_ID);
        let (mut mantissa, mut exp) = (self.bitrate_bps, 0u32);
        while mantissa > 0x3_FFFF {
            mantissa >>= 1;
            exp += 1;
        }
        let word = (u32::from(count) << 24) | (exp << 18) | mantissa as u32;
        out[16..20].copy_from_slice(&word.to_be_bytes());
        self.ssrcs.write(&mut out[20..]);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wire_vector_and_round_trips() {
        // libwebrtc-style REMB: 1 SSRC, exponent 2, mantissa 0x3e8f2 → 1,023,944 bps.
        let wire =
            hex::decode("8fce0005 00000001 00000000 52454d42 010be8f2 4baae1ab".replace(' ', ""))
                .unwrap();
        let remb = Remb::parse(&wire).unwrap();
        assert_eq!(remb.bitrate_bps, 0x3_e8f2 << 2);
        assert_eq!(remb.ssrcs.get(0), Some(Ssrc(0x4baa_e1ab)));
        let mut out = [0u8; 24];
        assert_eq!(remb.write_to(&mut out).unwrap(), 24);
        assert_eq!(&out[..], &wire[..]);
    }

    #[test]
    fn large_bitrates_round_down_and_saturate() {
        let ssrcs = [Ssrc(1), Ssrc(2)];
        let remb = Remb {
            sender_ssrc: Ssrc(9),
            bitrate_bps: 2_500_001,
            ssrcs: Items::from_slice(&ssrcs),
        };
        let mut out = [0u8; 28];
        let n = remb.write_to(&mut out).unwrap();
        let back = Remb::parse(&out[..n]).unwrap();
        assert!(back.bitrate_bps <= 2_500_001 && back.bitrate_bps > 2_490_000);
        assert_eq!(back.ssrcs, remb.ssrcs);
        // Exponent 63 overflows u64.
        let wire =
            hex::decode("8fce0004 00000001 00000000 52454d42 00ffffff".replace(' ', "")).unwrap();
        assert_eq!(Remb::parse(&wire).unwrap().bitrate_bps, u64::MAX);
    }

    #[test]
    fn rejects_missing_ssrcs_and_non_remb() {
        let wire =
            hex::decode("8fce0004 00000001 00000000 52454d42 020be8f2".replace(' ', "")).unwrap();
        assert_eq!(Remb::parse(&wire), Err(Error::Truncated));
        let wire =
            hex::decode("8fce0004 00000001 00000000 41424344 000be8f2".replace(' ', "")).unwrap();
        assert!(Remb::parse(&wire).is_err());
    }
}
