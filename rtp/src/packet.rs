//! RTP fixed header, CSRCs and RFC 8285 header extensions: a borrowing parser, a writer and
//! in-place field setters (RFC 3550 §5.1).

use core::fmt;

use crate::ext::{ExtensionElement, Extensions, ONE_BYTE_PROFILE, TWO_BYTE_PROFILE};
use crate::Error;

/// Length of the fixed RTP header (RFC 3550 §5.1).
const FIXED_LEN: usize = 12;

/// A synchronization source identifier (RFC 3550 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl From<u32> for Ssrc {
    fn from(v: u32) -> Self {
        Ssrc(v)
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// An RTP payload type: 7 bits (RFC 3550 §5.1). The constructor masks off the top bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pt(u8);

impl Pt {
    /// Payload type from the low 7 bits of `v`.
    pub const fn new(v: u8) -> Self {
        Pt(v & 0x7F)
    }
    /// The 7-bit value.
    pub const fn value(self) -> u8 {
        self.0
    }
}

impl From<u8> for Pt {
    fn from(v: u8) -> Self {
        Pt::new(v)
    }
}

impl fmt::Display for Pt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A parsed RTP packet header that borrows the packet it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader<'a> {
    packet: &'a [u8],
    extensions: Option<Extensions<'a>>,
    payload_offset: usize,
    padding_len: usize,
}

impl<'a> RtpHeader<'a> {
    /// Parses and validates a whole plaintext RTP packet: version, CSRC list, extension
    /// length and padding count must all fit in `packet`.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let payload_offset = header_len(packet)?;
        let extensions = if packet[0] & 0x10 != 0 {
            let start = FIXED_LEN + 4 * usize::from(packet[0] & 0x0F);
            Some(Extensions::new(
                u16::from_be_bytes([packet[start], packet[start + 1]]),
                &packet[start + 4..payload_offset],
            ))
        } else {
            None
        };
        let padding_len = if packet[0] & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding, itself included.
            let pad = usize::from(packet[packet.len() - 1]);
            if pad == 0 || pad > packet.len() - payload_offset {
                return Err(Error::BadPadding);
            }
            pad
        } else {
            0
        };
        Ok(RtpHeader {
            packet,
            extensions,
            payload_offset,
            padding_len,
        })
    }

    /// The marker bit.
    pub fn marker(&self) -> bool {
        self.packet[1] & 0x80 != 0
    }
    /// The payload type.
    pub fn payload_type(&self) -> Pt {
        Pt::new(self.packet[1])
    }
    /// The 16-bit sequence number as sent.
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.packet[2], self.packet[3]])
    }
    /// The RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        read_u32(self.packet, 4)
    }
    /// The synchronization source.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(read_u32(self.packet, 8))
    }
    /// Whether the padding bit is set.
    pub fn has_padding(&self) -> bool {
        self.padding_len > 0
    }
    /// Number of padding octets at the end of the packet, count octet included.
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }
    /// Contributing sources (at most 15).
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        let n = usize::from(self.packet[0] & 0x0F);
        self.packet[FIXED_LEN..FIXED_LEN + 4 * n]
            .chunks_exact(4)
            .map(|c| Ssrc(read_u32(c, 0)))
    }
    /// The header extension block, if the X bit is set.
    pub fn extensions(&self) -> Option<Extensions<'a>> {
        self.extensions
    }
    /// Header length: fixed header, CSRCs and extension block. The payload starts here.
    pub fn payload_offset(&self) -> usize {
        self.payload_offset
    }
    /// Payload length without the padding.
    pub fn payload_len(&self) -> usize {
        self.packet.len() - self.payload_offset - self.padding_len
    }
    /// The payload without the padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.packet[self.payload_offset..self.packet.len() - self.padding_len]
    }
}

/// Length of the RTP header at the start of `packet` (fixed part, CSRCs, extension), checking
/// only the version and that the header fits. Padding is not looked at, so this works on SRTP
/// packets whose padding count is still encrypted.
pub fn header_len(packet: &[u8]) -> Result<usize, Error> {
    if packet.len() < FIXED_LEN {
        return Err(Error::Truncated);
    }
    let version = packet[0] >> 6;
    if version != 2 {
        return Err(Error::BadVersion(version));
    }
    let mut len = FIXED_LEN + 4 * usize::from(packet[0] & 0x0F);
    if packet[0] & 0x10 != 0 {
        // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the data.
        if packet.len() < len + 4 {
            return Err(Error::Truncated);
        }
        let words = usize::from(u16::from_be_bytes([packet[len + 2], packet[len + 3]]));
        len += 4 + 4 * words;
    }
    if packet.len() < len {
        return Err(Error::Truncated);
    }
    Ok(len)
}

/// Writes an RTP header into a buffer: what a synthetic-media client or a packetizer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpHeaderBuilder<'a> {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: Pt,
    /// Sequence number.
    pub sequence_number: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: Ssrc,
    /// Contributing sources, at most 15.
    pub csrcs: &'a [Ssrc],
    /// Extension elements. The one-byte form is used when every id is 1..=14 and every
    /// length 1..=16, the two-byte form otherwise (RFC 8285 §4.2, §4.3).
    pub extensions: &'a [ExtensionElement<'a>],
}

impl<'a> RtpHeaderBuilder<'a> {
    /// A header with no CSRCs, no extensions and the marker bit clear.
    pub fn new(payload_type: Pt, sequence_number: u16, timestamp: u32, ssrc: Ssrc) -> Self {
        RtpHeaderBuilder {
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            ..Default::default()
        }
    }

    fn one_byte_form(&self) -> bool {
        self.extensions
            .iter()
            .all(|e| (1..=14).contains(&e.id) && (1..=16).contains(&e.data.len()))
    }

    fn extension_data_len(&self) -> usize {
        let head = if self.one_byte_form() { 1 } else { 2 };
        let raw: usize = self.extensions.iter().map(|e| head + e.data.len()).sum();
        raw.div_ceil(4) * 4
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        let ext = if self.extensions.is_empty() {
            0
        } else {
            4 + self.extension_data_len()
        };
        FIXED_LEN + 4 * self.csrcs.len() + ext
    }

    /// Writes the header into `buf` and returns its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.encoded_len();
        if self.csrcs.len() > 15 {
            return Err(Error::OutOfRange("more than 15 csrcs"));
        }
        let one_byte = self.one_byte_form();
        if !one_byte
            && self
                .extensions
                .iter()
                .any(|e| e.id == 0 || e.data.len() > 255)
        {
            return Err(Error::OutOfRange("extension id 0 or longer than 255 bytes"));
        }
        let ext_words = self.extension_data_len() / 4;
        if ext_words > usize::from(u16::MAX) {
            return Err(Error::OutOfRange("extension block too long"));
        }
        let buf = buf
            .get_mut(..len)
            .ok_or(Error::BufferTooSmall { needed: len })?;
        let x = if self.extensions.is_empty() { 0 } else { 0x10 };
        buf[0] = 0x80 | x | self.csrcs.len() as u8;
        buf[1] = (u8::from(self.marker) << 7) | self.payload_type.value();
        buf[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        buf[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let mut pos = FIXED_LEN;
        for c in self.csrcs {
            buf[pos..pos + 4].copy_from_slice(&c.0.to_be_bytes());
            pos += 4;
        }
        if x == 0 {
            return Ok(len);
        }
        let profile = if one_byte {
            ONE_BYTE_PROFILE
        } else {
            TWO_BYTE_PROFILE
        };
        buf[pos..pos + 2].copy_from_slice(&profile.to_be_bytes());
        buf[pos + 2..pos + 4].copy_from_slice(&(ext_words as u16).to_be_bytes());
        pos += 4;
        for e in self.extensions {
            if one_byte {
                buf[pos] = (e.id << 4) | (e.data.len() as u8 - 1);
                pos += 1;
            } else {
                buf[pos] = e.id;
                buf[pos + 1] = e.data.len() as u8;
                pos += 2;
            }
            buf[pos..pos + e.data.len()].copy_from_slice(e.data);
            pos += e.data.len();
        }
        buf[pos..].fill(0);
        Ok(len)
    }
}

fn fixed_mut(packet: &mut [u8]) -> Result<&mut [u8], Error> {
    packet.get_mut(..FIXED_LEN).ok_or(Error::Truncated)
}

/// Overwrites the SSRC of the RTP packet in `packet`.
pub fn set_ssrc(packet: &mut [u8], ssrc: Ssrc) -> Result<(), Error> {
    fixed_mut(packet)?[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
    Ok(())
}

/// Overwrites the sequence number of the RTP packet in `packet`.
pub fn set_sequence_number(packet: &mut [u8], seq: u16) -> Result<(), Error> {
    fixed_mut(packet)?[2..4].copy_from_slice(&seq.to_be_bytes());
    Ok(())
}

/// Overwrites the timestamp of the RTP packet in `packet`.
pub fn set_timestamp(packet: &mut [u8], timestamp: u32) -> Result<(), Error> {
    fixed_mut(packet)?[4..8].copy_from_slice(&timestamp.to_be_bytes());
    Ok(())
}

/// Overwrites the payload type of the RTP packet in `packet`, keeping the marker bit.
pub fn set_payload_type(packet: &mut [u8], pt: Pt) -> Result<(), Error> {
    let b = &mut fixed_mut(packet)?[1];
    *b = (*b & 0x80) | pt.value();
    Ok(())
}

/// Sets or clears the marker bit of the RTP packet in `packet`.
pub fn set_marker(packet: &mut [u8], marker: bool) -> Result<(), Error> {
    let b = &mut fixed_mut(packet)?[1];
    *b = (*b & 0x7F) | (u8::from(marker) << 7);
    Ok(())
}

/// Big-endian u32 at `at`. Callers have checked the length.
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn parses_plain_header() {
        // V=2, M=1, PT=96, seq 0x1234, ts 0xdeadbeef, ssrc 0x01020304, 3 payload bytes.
        let p = hex("80e0 1234 deadbeef 01020304 aabbcc");
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.marker());
        assert_eq!(h.payload_type(), Pt::new(96));
        assert_eq!(h.sequence_number(), 0x1234);
        assert_eq!(h.timestamp(), 0xdead_beef);
        assert_eq!(h.ssrc(), Ssrc(0x0102_0304));
        assert_eq!(h.payload_offset(), 12);
        assert_eq!(h.payload(), &[0xaa, 0xbb, 0xcc]);
        assert!(h.extensions().is_none());
    }

    #[test]
    fn parses_csrcs_one_byte_extensions_and_padding() {
        // CC=2, X=1, P=1; one-byte ext: id 1 len 1, padding 0, id 3 len 3; 2 pad bytes.
        let p = hex("b2 60 0001 00000002 11111111 aaaaaaaa bbbbbbbb \
             bede 0002 10ff 0032 010203 00 \
             cafe 0002");
        let h = RtpHeader::parse(&p).unwrap();
        let csrcs: Vec<_> = h.csrcs().collect();
        assert_eq!(csrcs, vec![Ssrc(0xaaaa_aaaa), Ssrc(0xbbbb_bbbb)]);
        let ext = h.extensions().unwrap();
        assert_eq!(ext.profile(), 0xBEDE);
        let elems: Vec<_> = ext.iter().map(|e| (e.id, e.data.to_vec())).collect();
        assert_eq!(elems, vec![(1, vec![0xff]), (3, vec![1, 2, 3])]);
        assert_eq!(ext.get(3), Some(&[1u8, 2, 3][..]));
        assert_eq!(h.payload_offset(), 12 + 8 + 12);
        assert_eq!(h.padding_len(), 2);
        assert_eq!(h.payload(), &[0xca, 0xfe]);
        assert_eq!(h.payload_len(), 2);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(Error::Truncated));
        assert_eq!(RtpHeader::parse(&[0x40; 12]), Err(Error::BadVersion(1)));
        // CC=1 but no room for the CSRC.
        assert_eq!(
            RtpHeader::parse(&hex("8100 0001 00000002 11111111")),
            Err(Error::Truncated)
        );
        // Extension length points past the end.
        assert_eq!(
            RtpHeader::parse(&hex("9000 0001 00000002 11111111 bede 0009 0000 0000")),
            Err(Error::Truncated)
        );
        // Padding count 0 and larger than the payload.
        assert_eq!(
            RtpHeader::parse(&hex("a000 0001 00000002 11111111 00")),
            Err(Error::BadPadding)
        );
        assert_eq!(
            RtpHeader::parse(&hex("a000 0001 00000002 11111111 05")),
            Err(Error::BadPadding)
        );
        assert_eq!(
            RtpHeader::parse(&hex("a000 0001 00000002 11111111")),
            Err(Error::BadPadding)
        );
    }

    #[test]
    fn builder_round_trips() {
        let csrcs = [Ssrc(7), Ssrc(8)];
        let ext = [
            ExtensionElement {
                id: 1,
                data: &[0xaa],
            },
            ExtensionElement {
                id: 14,
                data: &[1, 2, 3, 4, 5],
            },
        ];
        let mut b = RtpHeaderBuilder::new(Pt::new(111), 65535, 48_000, Ssrc(0xfeed));
        b.marker = true;
        b.csrcs = &csrcs;
        b.extensions = &ext;
        let mut buf = [0u8; 64];
        let n = b.write_to(&mut buf).unwrap();
        assert_eq!(n, b.encoded_len());
        assert_eq!(n, 12 + 8 + 4 + 8);
        let h = RtpHeader::parse(&buf[..n]).unwrap();
        assert!(h.marker());
        assert_eq!(h.payload_type(), Pt::new(111));
        assert_eq!(h.sequence_number(), 65535);
        assert_eq!(h.csrcs().collect::<Vec<_>>(), csrcs.to_vec());
        let ext_out: Vec<_> = h.extensions().unwrap().iter().collect();
        assert_eq!(ext_out, ext.to_vec());
        assert_eq!(h.payload_offset(), n);

        // An id above 14 forces the two-byte form.
        let ext = [ExtensionElement { id: 20, data: &[] }];
        b.extensions = &ext;
        let n = b.write_to(&mut buf).unwrap();
        let h = RtpHeader::parse(&buf[..n]).unwrap();
        assert_eq!(h.extensions().unwrap().profile(), 0x1000);
        assert_eq!(
            h.extensions().unwrap().iter().collect::<Vec<_>>(),
            ext.to_vec()
        );
        assert_eq!(
            b.write_to(&mut buf[..10]),
            Err(Error::BufferTooSmall { needed: n })
        );
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut p = hex("80e0 1234 deadbeef 01020304 aabbcc");
        set_ssrc(&mut p, Ssrc(9)).unwrap();
        set_sequence_number(&mut p, 7).unwrap();
        set_timestamp(&mut p, 5).unwrap();
        set_payload_type(&mut p, Pt::new(100)).unwrap();
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            (h.ssrc(), h.sequence_number(), h.timestamp()),
            (Ssrc(9), 7, 5)
        );
        assert_eq!(h.payload_type(), Pt::new(100));
        assert!(h.marker());
        set_marker(&mut p, false).unwrap();
        assert_eq!(p[1], 100);
        assert_eq!(set_ssrc(&mut p[..11], Ssrc(1)), Err(Error::Truncated));
    }
}
