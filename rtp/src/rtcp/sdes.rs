//! Source Description (RFC 3550 §6.5). Only CNAME matters for a CDN, so other items are
//! skipped on parse and not written.

use core::fmt;

use super::{body_of, out_buf, write_header, PT_SDES};
use crate::packet::read_u32;
use crate::{Error, Ssrc};

/// SDES item type of the canonical name (RFC 3550 §6.5.1).
const ITEM_CNAME: u8 = 1;

/// One SDES chunk: a source and its CNAME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: Ssrc,
    /// The CNAME bytes (UTF-8 per RFC 3550, not checked), empty if the chunk had none.
    pub cname: &'a [u8],
}

impl SdesChunk<'_> {
    /// Chunk length on the wire: SSRC, the CNAME item, a null octet, padding to 32 bits.
    fn encoded_len(&self) -> usize {
        let items = if self.cname.is_empty() {
            0
        } else {
            2 + self.cname.len()
        };
        4 + (items + 1).div_ceil(4) * 4
    }
}

/// Parses the chunk at the start of `b`; returns it and its length.
fn parse_chunk(b: &[u8]) -> Result<(SdesChunk<'_>, usize), Error> {
    if b.len() < 4 {
        return Err(Error::Truncated);
    }
    let mut chunk = SdesChunk {
        ssrc: Ssrc(read_u32(b, 0)),
        cname: &[],
    };
    let mut pos = 4;
    loop {
        let kind = *b.get(pos).ok_or(Error::Truncated)?;
        if kind == 0 {
            // A null item ends the list; the chunk is then padded to 32 bits (§6.5).
            let end = (pos + 1).div_ceil(4) * 4;
            return Ok((chunk, end.min(b.len())));
        }
        let len = usize::from(*b.get(pos + 1).ok_or(Error::Truncated)?);
        let text = b.get(pos + 2..pos + 2 + len).ok_or(Error::Truncated)?;
        if kind == ITEM_CNAME && chunk.cname.is_empty() {
            chunk.cname = text;
        }
        pos += 2 + len;
    }
}

/// The chunks of an SDES packet, from wire bytes or from a slice.
#[derive(Clone, Copy)]
pub struct SdesChunks<'a> {
    repr: Repr<'a>,
}

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// Validated wire bytes holding `count` chunks.
    Wire(&'a [u8], u8),
    Slice(&'a [SdesChunk<'a>]),
}

impl<'a> SdesChunks<'a> {
    /// Chunks backed by a slice, for writing.
    pub const fn from_slice(chunks: &'a [SdesChunk<'a>]) -> Self {
        SdesChunks {
            repr: Repr::Slice(chunks),
        }
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Wire(_, n) => usize::from(n),
            Repr::Slice(s) => s.len(),
        }
    }

    /// Whether there are no chunks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates the chunks.
    pub fn iter(&self) -> impl Iterator<Item = SdesChunk<'a>> + 'a {
        let (mut wire, mut left, slice) = match self.repr {
            Repr::Wire(b, n) => (b, n, [].iter()),
            Repr::Slice(s) => (&[][..], 0, s.iter()),
        };
        let from_wire = core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            // Validated in `from_body`, so this parse succeeds.
            let (chunk, len) = parse_chunk(wire).ok()?;
            wire = &wire[len..];
            Some(chunk)
        });
        from_wire.chain(slice.copied())
    }
}

impl Default for SdesChunks<'_> {
    fn default() -> Self {
        SdesChunks::from_slice(&[])
    }
}

impl PartialEq for SdesChunks<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for SdesChunks<'_> {}

impl fmt::Debug for SdesChunks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A Source Description packet (RFC 3550 §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sdes<'a> {
    /// Up to 31 chunks.
    pub chunks: SdesChunks<'a>,
}

impl<'a> Sdes<'a> {
    /// Parses one whole SDES packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (count, body) = body_of(packet, PT_SDES, None)?;
        Self::from_body(count, body)
    }

    pub(crate) fn from_body(count: u8, body: &'a [u8]) -> Result<Self, Error> {
        let mut pos = 0;
        for _ in 0..count {
            pos += parse_chunk(&body[pos..])?.1;
        }
        Ok(Sdes {
            chunks: SdesChunks {
                repr: Repr::Wire(&body[..pos], count),
            },
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        4 + self.chunks.iter().map(|c| c.encoded_len()).sum::<usize>()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.chunks.iter().any(|c| c.cname.len() > 255) {
            return Err(Error::OutOfRange("cname longer than 255 bytes"));
        }
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        let count = u8::try_from(self.chunks.len()).unwrap_or(u8::MAX);
        write_header(out, count, PT_SDES, len - 4)?;
        let mut pos = 4;
        for c in self.chunks.iter() {
            let chunk = &mut out[pos..pos + c.encoded_len()];
            chunk.fill(0);
            chunk[..4].copy_from_slice(&c.ssrc.0.to_be_bytes());
            if !c.cname.is_empty() {
                chunk[4] = ITEM_CNAME;
                chunk[5] = c.cname.len() as u8;
                chunk[6..6 + c.cname.len()].copy_from_slice(c.cname);
            }
            pos += chunk.len();
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_chunks() {
        let chunks = [
            SdesChunk {
                ssrc: Ssrc(1),
                cname: b"abcd",
            },
            SdesChunk {
                ssrc: Ssrc(2),
                cname: b"",
            },
            SdesChunk {
                ssrc: Ssrc(3),
                cname: b"x",
            },
        ];
        let sdes = Sdes {
            chunks: SdesChunks::from_slice(&chunks),
        };
        let mut buf = [0u8; 64];
        let n = sdes.write_to(&mut buf).unwrap();
        assert_eq!(n, sdes.encoded_len());
        assert_eq!(n, 4 + 12 + 8 + 8);
        assert_eq!(
            hex::encode(&buf[..16]),
            "83ca000700000001010461626364000000"[..32]
        );
        let parsed = Sdes::parse(&buf[..n]).unwrap();
        assert_eq!(parsed, sdes);
    }

    #[test]
    fn skips_other_items() {
        // One chunk: NAME "z" then CNAME "q", null, padding.
        let wire = hex::decode("81ca0003000000050201 7a0101710000".replace(' ', "")).unwrap();
        let sdes = Sdes::parse(&wire).unwrap();
        let c: Vec<_> = sdes.chunks.iter().collect();
        assert_eq!(
            c,
            vec![SdesChunk {
                ssrc: Ssrc(5),
                cname: b"q"
            }]
        );
    }

    #[test]
    fn rejects_truncated_items() {
        let wire = hex::decode("81ca00020000000501097a00").unwrap();
        assert_eq!(Sdes::parse(&wire), Err(Error::Truncated));
        // Count says two chunks, only one present.
        let wire = hex::decode("82ca00020000000500000000").unwrap();
        assert_eq!(Sdes::parse(&wire), Err(Error::Truncated));
    }
}
