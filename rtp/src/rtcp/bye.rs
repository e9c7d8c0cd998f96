//! Goodbye (RFC 3550 §6.6).

use super::{body_of, out_buf, write_header, Items, PT_BYE};
use crate::{Error, Ssrc};

/// A BYE packet: these sources are leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bye<'a> {
    /// Sources leaving, up to 31.
    pub ssrcs: Items<'a, Ssrc>,
    /// Optional reason text, at most 255 bytes.
    pub reason: &'a [u8],
}

impl<'a> Bye<'a> {
    /// Parses one whole BYE packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (count, body) = body_of(packet, PT_BYE, None)?;
        Self::from_body(count, body)
    }

    pub(crate) fn from_body(count: u8, body: &'a [u8]) -> Result<Self, Error> {
        let n = 4 * usize::from(count);
        let ssrcs = body.get(..n).ok_or(Error::Truncated)?;
        // The reason, if present, is a length octet and text (§6.6).
        let reason = match body.get(n) {
            None => &[][..],
            Some(&len) => body
                .get(n + 1..n + 1 + usize::from(len))
                .ok_or(Error::Truncated)?,
        };
        Ok(Bye {
            ssrcs: Items::from_wire(ssrcs),
            reason,
        })
    }

    fn reason_len(&self) -> usize {
        if self.reason.is_empty() {
            0
        } else {
            (1 + self.reason.len()).div_ceil(4) * 4
        }
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        4 + self.ssrcs.encoded_len() + self.reason_len()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.reason.len() > 255 {
            return Err(Error::OutOfRange("bye reason longer than 255 bytes"));
        }
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        let count = u8::try_from(self.ssrcs.len()).unwrap_or(u8::MAX);
        write_header(out, count, PT_BYE, len - 4)?;
        let n = 4 + self.ssrcs.encoded_len();
        self.ssrcs.write(&mut out[4..n]);
        if !self.reason.is_empty() {
            let tail = &mut out[n..];
            tail.fill(0);
            tail[0] = self.reason.len() as u8;
            tail[1..1 + self.reason.len()].copy_from_slice(self.reason);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_reason() {
        let ssrcs = [Ssrc(0x0102_0304), Ssrc(5)];
        let bye = Bye {
            ssrcs: Items::from_slice(&ssrcs),
            reason: b"bye",
        };
        let mut buf = [0u8; 32];
        let n = bye.write_to(&mut buf).unwrap();
        assert_eq!(hex::encode(&buf[..n]), "82cb0003010203040000000503627965");
        assert_eq!(Bye::parse(&buf[..n]).unwrap(), bye);
    }

    #[test]
    fn round_trips_without_reason_and_rejects_short() {
        let ssrcs = [Ssrc(7)];
        let bye = Bye {
            ssrcs: Items::from_slice(&ssrcs),
            reason: b"",
        };
        let mut buf = [0u8; 8];
        let n = bye.write_to(&mut buf).unwrap();
        assert_eq!(Bye::parse(&buf[..n]).unwrap(), bye);
        let wire = hex::decode("82cb000100000007").unwrap();
        assert_eq!(Bye::parse(&wire), Err(Error::Truncated));
        // Reason length 9 with only 3 bytes left.
        let wire = hex::decode("81cb00020000000709000000").unwrap();
        assert_eq!(Bye::parse(&wire), Err(Error::Truncated));
    }
}
