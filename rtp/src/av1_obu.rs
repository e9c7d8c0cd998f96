//! AV1 OBUs in the low overhead bitstream format (AV1 §5.2, §5.3): the OBU header, unsigned
//! LEB128 (§4.10.5) both ways, an iterator over a buffer of OBUs each carrying its size, as
//! an MP4 sample or an Enhanced RTMP `av01` frame holds one temporal unit, and one over the
//! OBU elements of an RTP packet.
//!
//! The iterators borrow their input and allocate nothing; a malformed OBU ends it with an error
//! (and nothing after it is read).

use crate::Error;

/// `OBU_SEQUENCE_HEADER` (AV1 §6.2.2).
pub const OBU_SEQUENCE_HEADER: u8 = 1;
/// `OBU_TEMPORAL_DELIMITER`.
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
/// `OBU_FRAME_HEADER`.
pub const OBU_FRAME_HEADER: u8 = 3;
/// `OBU_TILE_GROUP`.
pub const OBU_TILE_GROUP: u8 = 4;
/// `OBU_METADATA`.
pub const OBU_METADATA: u8 = 5;
/// `OBU_FRAME`.
pub const OBU_FRAME: u8 = 6;
/// `OBU_TILE_LIST`.
pub const OBU_TILE_LIST: u8 = 8;
/// `OBU_PADDING`.
pub const OBU_PADDING: u8 = 15;

/// The most bytes an unsigned LEB128 may take in AV1 (§4.10.5: `leb128()` reads at most 8).
pub const LEB128_MAX: usize = 8;

/// An unsigned LEB128 of at most 8 bytes: its value and length; `None` when it does not end
/// within `data` or its first 8 bytes.
pub fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(LEB128_MAX).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// How many bytes [`write_leb128`] takes for `value`.
pub fn leb128_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

/// Writes `value` as the shortest unsigned LEB128 at the start of `out`, returning its length.
///
/// # Panics
/// When `out` is shorter than [`leb128_len`]`(value)`: a caller's sizing bug.
pub fn write_leb128(mut value: usize, out: &mut [u8]) -> usize {
    let mut i = 0;
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// One OBU: its header (and extension header) and its payload, without its size field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obu<'a> {
    /// The first header byte as it came: forbidden bit 0, type, extension flag, has-size flag.
    pub header: u8,
    /// The extension header byte (temporal and spatial id), when the extension flag is set.
    pub extension: Option<u8>,
    /// The OBU's payload: what follows its headers and size field.
    pub payload: &'a [u8],
}

impl Obu<'_> {
    /// `obu_type` (one of the `OBU_*` constants, or a reserved value).
    pub fn obu_type(&self) -> u8 {
        (self.header >> 3) & 0x0F
    }

    /// Whether the OBU came with `obu_has_size_field` set.
    pub fn has_size_field(&self) -> bool {
        self.header & 0x02 != 0
    }
}

/// The OBUs of a low overhead bitstream buffer, in order (see the module docs).
///
/// Every OBU must have `obu_has_size_field` set, except that the last one may leave it unset
/// and fill the rest of the buffer (as "AV1 Codec ISO Media File Format Binding" §2.4 allows
/// for the last OBU of a sample).
#[derive(Debug, Clone)]
pub struct ObuIter<'a> {
    rest: &'a [u8],
}

impl<'a> ObuIter<'a> {
    /// The OBUs of `data`.
    pub fn new(data: &'a [u8]) -> ObuIter<'a> {
        ObuIter { rest: data }
    }

    fn read(&mut self) -> Result<Obu<'a>, Error> {
        let data = self.rest;
        let header = data[0];
        if header & 0x80 != 0 {
            return Err(Error::Malformed("AV1 OBU forbidden bit set"));
        }
        let mut pos = 1;
        let extension = if header & 0x04 != 0 {
            pos += 1;
            Some(*data.get(1).ok_or(Error::Truncated)?)
        } else {
            None
        };
        let payload_len = if header & 0x02 != 0 {
            let (size, used) = leb128(&data[pos..]).ok_or(Error::Malformed("AV1 OBU size"))?;
            pos += used;
            usize::try_from(size).map_err(|_| Error::BadLength)?
        } else {
            data.len() - pos
        };
        let end = pos.checked_add(payload_len).ok_or(Error::BadLength)?;
        let payload = data.get(pos..end).ok_or(Error::Truncated)?;
        self.rest = &data[end..];
        Ok(Obu {
            header,
            extension,
            payload,
        })
    }
}

impl<'a> Iterator for ObuIter<'a> {
    type Item = Result<Obu<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let obu = self.read();
        if obu.is_err() {
            self.rest = &[];
        }
        Some(obu)
    }
}

/// The OBU elements of an AV1 RTP payload ("RTP Payload Format For AV1" §4.4), after its
/// aggregation header: with W = 0 every element has its length first, else all but the W-th,
/// which fills the rest. An element whose length does not read or runs past the payload ends
/// the iteration with an error.
#[derive(Debug, Clone)]
pub struct RtpElements<'a> {
    rest: &'a [u8],
    /// W: how many elements the packet says it has (0: each with its length).
    count: usize,
    /// Elements read so far: every element takes at least a byte, so this counts no further
    /// than the payload's length (a u8 overflowed on 256 empty elements in an earlier copy).
    index: usize,
}

impl<'a> RtpElements<'a> {
    /// The elements after `aggregation`, the payload's first byte, in `elements`.
    pub fn new(aggregation: u8, elements: &'a [u8]) -> RtpElements<'a> {
        RtpElements {
            rest: elements,
            count: usize::from((aggregation >> 4) & 0x03),
            index: 0,
        }
    }

    /// Whether no element is left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

impl<'a> Iterator for RtpElements<'a> {
    type Item = Result<&'a [u8], Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        self.index += 1;
        if self.count != 0 && self.index >= self.count {
            return Some(Ok(std::mem::take(&mut self.rest)));
        }
        let element = leb128(self.rest)
            .ok_or(Error::Malformed("AV1 OBU element length"))
            .and_then(|(len, used)| {
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|len| used.checked_add(len))
                    .ok_or(Error::BadLength)?;
                let element = self.rest.get(used..end).ok_or(Error::Truncated)?;
                self.rest = &self.rest[end..];
                Ok(element)
            });
        if element.is_err() {
            self.rest = &[];
        }
        Some(element)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_elements_with_and_without_w() {
        // W = 2: a length for the first, the second fills the rest.
        let elements: Vec<_> = RtpElements::new(0x20, &[2, 0xA, 0xB, 0xC, 0xD]).collect();
        assert_eq!(elements, [Ok(&[0xA, 0xB][..]), Ok(&[0xC, 0xD][..])]);
        // W = 0: every element with its length; one running past the end is an error, last.
        let elements: Vec<_> = RtpElements::new(0x00, &[1, 0xA, 0, 3, 0xB]).collect();
        assert_eq!(
            elements,
            [Ok(&[0xA][..]), Ok(&[][..]), Err(Error::Truncated)]
        );
        let mut unfinished = RtpElements::new(0x00, &[0x80]);
        assert!(matches!(unfinished.next(), Some(Err(Error::Malformed(_)))));
        assert!(unfinished.is_empty() && unfinished.next().is_none());
        // 300 empty elements: counted without overflow.
        assert_eq!(RtpElements::new(0x00, &[0; 300]).count(), 300);
    }

    #[test]
    fn leb128_goes_round_and_is_bounded() {
        let mut buf = [0u8; LEB128_MAX];
        for value in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 40] {
            let len = write_leb128(value, &mut buf);
            assert_eq!(len, leb128_len(value), "{value}");
            assert_eq!(leb128(&buf[..len]), Some((value as u64, len)));
        }
        assert_eq!(leb128(&[0x80, 0x01]), Some((128, 2)));
        // Padded with continuation bytes is still valid; 9 bytes or an unfinished one is not.
        assert_eq!(leb128(&[0x81, 0x80, 0x00]), Some((1, 3)));
        assert_eq!(leb128(&[0xFF; 9]), None);
        assert_eq!(leb128(&[0x80]), None);
        assert_eq!(leb128(&[]), None);
    }

    #[test]
    fn obus_are_read_with_extension_and_without_a_size_at_the_end() {
        // TD (size 0), a frame OBU with an extension header, a padding OBU without a size.
        let data = [0x12, 0x00, 0x36, 0x28, 0x02, 0xAA, 0xBB, 0x78, 0x01, 0x02];
        let obus: Vec<Obu> = ObuIter::new(&data).map(Result::unwrap).collect();
        assert_eq!(obus.len(), 3);
        assert_eq!(obus[0].obu_type(), OBU_TEMPORAL_DELIMITER);
        assert!(obus[0].payload.is_empty() && obus[0].has_size_field());
        assert_eq!(obus[1].obu_type(), OBU_FRAME);
        assert_eq!(obus[1].extension, Some(0x28));
        assert_eq!(obus[1].payload, [0xAA, 0xBB]);
        assert_eq!(obus[2].obu_type(), OBU_PADDING);
        assert!(!obus[2].has_size_field());
        assert_eq!(obus[2].payload, [0x01, 0x02]);
    }

    #[test]
    fn malformed_obus_end_the_iteration_with_an_error() {
        let cases: [(&[u8], Error); 5] = [
            (&[0x32, 0x05, 0xAA], Error::Truncated),
            (&[0x32, 0xFF], Error::Malformed("AV1 OBU size")),
            (&[0x36], Error::Truncated),
            (&[0xB2, 0x00], Error::Malformed("AV1 OBU forbidden bit set")),
            (
                &[0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
                Error::Truncated,
            ),
        ];
        for (data, error) in cases {
            let mut obus = ObuIter::new(data);
            assert_eq!(obus.next(), Some(Err(error)), "{data:02x?}");
            assert_eq!(obus.next(), None);
        }
        // A good OBU, then one cut short.
        let mut obus = ObuIter::new(&[0x12, 0x00, 0x32, 0x02, 0xAA]);
        assert!(obus.next().unwrap().is_ok());
        assert_eq!(obus.next(), Some(Err(Error::Truncated)));
    }
}
