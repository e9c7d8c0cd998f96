//! The transport-wide sequence number header extension (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01 §2): a 16-bit counter over every RTP packet a sender puts on the transport,
//! carried in a 2-byte RFC 8285 element whose id the SDP negotiated (`a=extmap`).

use crate::ext::{is_one_byte, is_two_byte, ONE_BYTE_PROFILE, TWO_BYTE_PROFILE};
use crate::packet::header_len;
use crate::rtcp::out_buf;
use crate::{Error, RtpHeader};

/// Length of the RTP fixed header (RFC 3550 §5.1).
const FIXED_LEN: usize = 12;
/// Data length of the element.
const SEQ_LEN: usize = 2;
/// Largest id of the one-byte form (RFC 8285 §4.2: 15 is reserved).
const MAX_ONE_BYTE_ID: u8 = 14;

/// The transport-wide sequence number in element `id` of the packet's header extensions,
/// if there is such an element of 2 bytes (libwebrtc ignores one of another length).
pub fn transport_seq(header: &RtpHeader<'_>, id: u8) -> Option<u16> {
    let data = header.extensions()?.get(id)?;
    let seq: [u8; SEQ_LEN] = data.try_into().ok()?;
    Some(u16::from_be_bytes(seq))
}

/// Overwrites the transport-wide sequence number of the packet in place, when it has an
/// element `id`; returns whether it had one (if not, see [`write_with_transport_seq`]).
///
/// The packet is plaintext RTP (its payload may still be encrypted: only the header is
/// read). An element `id` that is not 2 bytes is `Malformed`.
pub fn set_transport_seq(packet: &mut [u8], id: u8, seq: u16) -> Result<bool, Error> {
    let Some(block) = Block::find(packet)? else {
        return Ok(false);
    };
    let Some(at) = block.scan(packet, id)?.found else {
        return Ok(false);
    };
    packet[at..at + SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
    Ok(true)
}

/// Writes `packet` into `out` with transport-wide sequence number `seq` in element `id`, and
/// returns the new length. Nothing is allocated.
///
/// - An element `id` already there is overwritten; the length does not change.
/// - Otherwise the element is added after the last element of the extension block, in the
///   block's form (one-byte: id 1..=14, two-byte: id 1..=255, else `OutOfRange`). It takes the
///   block's padding if there is room, else the block grows by whole words, zero-padded, and
///   its length field follows.
/// - A packet without extensions gets a new block: one-byte for ids up to 14, two-byte
///   above. The X bit is set.
///
/// The payload and any RTP padding are copied unchanged after the header. A block of another
/// profile than RFC 8285's, or one with bytes after its last element that are not padding, is
/// `Malformed`; `out` shorter than the result is `BufferTooSmall`.
pub fn write_with_transport_seq(
    packet: &[u8],
    id: u8,
    seq: u16,
    out: &mut [u8],
) -> Result<usize, Error> {
    if id == 0 {
        return Err(Error::OutOfRange("header extension id 0 is padding"));
    }
    let Some(block) = Block::find(packet)? else {
        return write_new_block(packet, id, seq, out);
    };
    let one_byte = is_one_byte(block.profile);
    if !one_byte && !is_two_byte(block.profile) {
        return Err(Error::Malformed("header extension block is not rfc 8285"));
    }
    if one_byte && id > MAX_ONE_BYTE_ID {
        return Err(Error::OutOfRange(
            "header extension id above 14 in a one-byte block",
        ));
    }
    let scan = block.scan(packet, id)?;
    if let Some(at) = scan.found {
        let out = out_buf(out, packet.len())?;
        out.copy_from_slice(packet);
        out[at..at + SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
        return Ok(packet.len());
    }
    if !scan.ends_in_padding {
        return Err(Error::Malformed(
            "header extension block does not end in padding",
        ));
    }
    let (element, element_len) = element(one_byte, id, seq);
    let data_at = block.start + 4;
    let data_len = block.end - data_at;
    let new_data_len = data_len.max((scan.used + element_len).div_ceil(4) * 4);
    let words = u16::try_from(new_data_len / 4)
        .map_err(|_| Error::OutOfRange("header extension block too long"))?;
    let new_len = packet.len() + (new_data_len - data_len);
    let out = out_buf(out, new_len)?;
    let keep = data_at + scan.used;
    out[..keep].copy_from_slice(&packet[..keep]);
    out[block.start + 2..data_at].copy_from_slice(&words.to_be_bytes());
    out[keep..keep + element_len].copy_from_slice(&element[..element_len]);
    let new_end = data_at + new_data_len;
    out[keep + element_len..new_end].fill(0);
    out[new_end..].copy_from_slice(&packet[block.end..]);
    Ok(new_len)
}

/// A packet without extensions, written with a block holding only the new element.
fn write_new_block(packet: &[u8], id: u8, seq: u16, out: &mut [u8]) -> Result<usize, Error> {
    let at = header_len(packet)?;
    let one_byte = id <= MAX_ONE_BYTE_ID;
    let profile = if one_byte {
        ONE_BYTE_PROFILE
    } else {
        TWO_BYTE_PROFILE
    };
    // Either form fits one word: 1 + 2 bytes and a zero pad, or 2 + 2 bytes.
    let (element, _) = element(one_byte, id, seq);
    let new_len = packet.len() + 8;
    let out = out_buf(out, new_len)?;
    out[..at].copy_from_slice(&packet[..at]);
    out[0] |= 0x10;
    out[at..at + 2].copy_from_slice(&profile.to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&1u16.to_be_bytes());
    out[at + 4..at + 8].copy_from_slice(&element);
    out[at + 8..].copy_from_slice(&packet[at..]);
    Ok(new_len)
}

/// The element bytes (zero-padded to 4) and their length in the form asked for.
fn element(one_byte: bool, id: u8, seq: u16) -> ([u8; 4], usize) {
    let [hi, lo] = seq.to_be_bytes();
    if one_byte {
        // RFC 8285 §4.2: id in the high nibble, length - 1 in the low one.
        ([(id << 4) | (SEQ_LEN as u8 - 1), hi, lo, 0], 1 + SEQ_LEN)
    } else {
        ([id, SEQ_LEN as u8, hi, lo], 2 + SEQ_LEN)
    }
}

/// Where a packet's header extension block is.
struct Block {
    /// Offset of the "defined by profile" field.
    start: usize,
    profile: u16,
    /// End of the block: the payload offset.
    end: usize,
}

/// What a walk over a block's elements found.
struct Scan {
    /// Packet offset of the data of the element asked for.
    found: Option<usize>,
    /// End of the last element, from the start of the block's data.
    used: usize,
    /// Whether only zero octets follow the last element.
    ends_in_padding: bool,
}

impl Block {
    fn find(packet: &[u8]) -> Result<Option<Block>, Error> {
        let end = header_len(packet)?;
        if packet[0] & 0x10 == 0 {
            return Ok(None);
        }
        let start = FIXED_LEN + 4 * usize::from(packet[0] & 0x0F);
        // `header_len` checked that the 4-byte block header fits.
        let profile = packet
            .get(start..start + 2)
            .ok_or(Error::Truncated)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))?;
        Ok(Some(Block {
            start,
            profile,
            end,
        }))
    }

    fn scan(&self, packet: &[u8], id: u8) -> Result<Scan, Error> {
        let data_at = self.start + 4;
        let data = &packet[data_at..self.end];
        let mut elements = crate::Extensions::new(self.profile, data).iter();
        let mut scan = Scan {
            found: None,
            used: 0,
            ends_in_padding: true,
        };
        while let Some((at, e)) = elements.next_with_offset() {
            if e.id == id && scan.found.is_none() {
                if e.data.len() != SEQ_LEN {
                    return Err(Error::Malformed(
                        "transport-wide sequence number element is not 2 bytes",
                    ));
                }
                scan.found = Some(data_at + at);
            }
            scan.used = at + e.data.len();
        }
        scan.ends_in_padding = data[scan.used..].iter().all(|b| *b == 0);
        Ok(scan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ssrc;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// Writes `packet` with element `id` = 0xbeef and checks the result parses, reads back
    /// and keeps the CSRCs, the other elements, the payload and the padding.
    fn insert(packet: &[u8], id: u8) -> Vec<u8> {
        let mut out = vec![0u8; packet.len() + 16];
        let n = write_with_transport_seq(packet, id, 0xbeef, &mut out).unwrap();
        out.truncate(n);
        let before = RtpHeader::parse(packet).unwrap();
        let after = RtpHeader::parse(&out).unwrap();
        assert_eq!(transport_seq(&after, id), Some(0xbeef));
        assert_eq!(
            after.csrcs().collect::<Vec<_>>(),
            before.csrcs().collect::<Vec<_>>()
        );
        assert_eq!(after.payload(), before.payload());
        assert_eq!(after.padding_len(), before.padding_len());
        assert_eq!(after.sequence_number(), before.sequence_number());
        let others = |h: &RtpHeader<'_>| -> Vec<(u8, Vec<u8>)> {
            h.extensions()
                .into_iter()
                .flat_map(|e| e.iter())
                .filter(|e| e.id != id)
                .map(|e| (e.id, e.data.to_vec()))
                .collect()
        };
        assert_eq!(others(&after), others(&before));
        // Writing the result again only overwrites.
        let mut again = vec![0u8; n];
        assert_eq!(
            write_with_transport_seq(&out, id, 0xbeef, &mut again),
            Ok(n)
        );
        assert_eq!(again, out);
        out
    }

    // CC=2, X=1: one-byte block of 2 words: id 1 (1 byte), a padding octet, id 5 (2 bytes:
    // 0x0102), 2 padding octets; payload cafe.
    const ONE_BYTE: &str = "92 60 0001 00000002 11111111 aaaaaaaa bbbbbbbb \
                            bede 0002 10ff 00 510102 0000 cafe";

    #[test]
    fn reads_and_overwrites_in_place() {
        let mut p = hex(ONE_BYTE);
        assert_eq!(
            transport_seq(&RtpHeader::parse(&p).unwrap(), 5),
            Some(0x0102)
        );
        // Id 1 is 1 byte long: not a transport-wide sequence number.
        assert_eq!(transport_seq(&RtpHeader::parse(&p).unwrap(), 1), None);
        assert_eq!(transport_seq(&RtpHeader::parse(&p).unwrap(), 7), None);
        assert_eq!(set_transport_seq(&mut p, 5, 0xfffe), Ok(true));
        assert_eq!(p, hex(&ONE_BYTE.replace("510102", "51fffe")));
        assert_eq!(set_transport_seq(&mut p, 7, 1), Ok(false));
        assert_eq!(
            set_transport_seq(&mut p, 1, 1),
            Err(Error::Malformed(
                "transport-wide sequence number element is not 2 bytes"
            ))
        );
        let mut plain = hex("8060 0001 00000002 11111111 cafe");
        assert_eq!(set_transport_seq(&mut plain, 5, 1), Ok(false));
        assert_eq!(
            set_transport_seq(&mut plain[..11], 5, 1),
            Err(Error::Truncated)
        );

        // Two-byte block: id 1 (0 bytes), id 200 (2 bytes).
        let mut p = hex("9060 0001 00000002 11111111 1000 0002 0100 c802 0304 0000 cafe");
        assert_eq!(
            transport_seq(&RtpHeader::parse(&p).unwrap(), 200),
            Some(0x0304)
        );
        assert_eq!(set_transport_seq(&mut p, 200, 9), Ok(true));
        assert_eq!(transport_seq(&RtpHeader::parse(&p).unwrap(), 200), Some(9));
    }

    #[test]
    fn adds_a_one_byte_block_to_a_packet_without_one() {
        // CC=1, P=1: 2 payload octets, 2 padding octets.
        let p = hex("a160 0001 00000002 11111111 aaaaaaaa cafe 0002");
        let out = insert(&p, 3);
        assert_eq!(
            out,
            hex("b160 0001 00000002 11111111 aaaaaaaa bede 0001 31beef00 cafe 0002")
        );
        // An id above 14 needs the two-byte form.
        let out = insert(&p, 20);
        assert_eq!(
            out,
            hex("b160 0001 00000002 11111111 aaaaaaaa 1000 0001 1402beef cafe 0002")
        );
    }

    #[test]
    fn adds_to_an_existing_one_byte_block() {
        // No room in the 2 padding octets after id 5: the block grows by a word.
        let out = insert(&hex(ONE_BYTE), 9);
        assert_eq!(
            out,
            hex("92 60 0001 00000002 11111111 aaaaaaaa bbbbbbbb \
                 bede 0003 10ff 00 510102 91beef 000000 cafe")
        );
        // Room in the padding: the block keeps its length.
        let p = hex("9060 0001 00000002 11111111 bede 0002 10ff 0000 00000000 cafe");
        let out = insert(&p, 9);
        assert_eq!(
            out,
            hex("9060 0001 00000002 11111111 bede 0002 10ff 91beef 000000 cafe")
        );
        // An id the one-byte form cannot carry.
        let mut buf = [0u8; 64];
        assert_eq!(
            write_with_transport_seq(&p, 15, 1, &mut buf),
            Err(Error::OutOfRange(
                "header extension id above 14 in a one-byte block"
            ))
        );
    }

    #[test]
    fn adds_to_an_existing_two_byte_block() {
        // Profile 0x1001 (application bits kept): id 1 with 2 bytes, then id 40 is added.
        let p = hex("9060 0001 00000002 11111111 1001 0001 0102abcd cafe");
        let out = insert(&p, 40);
        assert_eq!(
            out,
            hex("9060 0001 00000002 11111111 1001 0002 0102abcd 2802beef cafe")
        );
        // Ids below 15 go in the two-byte form too.
        insert(&p, 3);
    }

    #[test]
    fn overwrites_an_element_that_is_there() {
        let p = hex(ONE_BYTE);
        let out = insert(&p, 5);
        assert_eq!(out, hex(&ONE_BYTE.replace("510102", "51beef")));
    }

    #[test]
    fn rejects_what_it_cannot_extend() {
        let mut buf = [0u8; 64];
        let p = hex("9060 0001 00000002 11111111 bede 0001 10ff 0000 cafe");
        assert_eq!(
            write_with_transport_seq(&p, 0, 1, &mut buf),
            Err(Error::OutOfRange("header extension id 0 is padding"))
        );
        // Not an RFC 8285 block.
        let other = hex("9060 0001 00000002 11111111 abcd 0001 10ff 0000 cafe");
        assert_eq!(
            write_with_transport_seq(&other, 3, 1, &mut buf),
            Err(Error::Malformed("header extension block is not rfc 8285"))
        );
        // Id 15 stops the one-byte elements; what follows it is not padding.
        let stopped = hex("9060 0001 00000002 11111111 bede 0001 10ff f012 cafe");
        assert_eq!(
            write_with_transport_seq(&stopped, 3, 1, &mut buf),
            Err(Error::Malformed(
                "header extension block does not end in padding"
            ))
        );
        // The output must hold the grown packet.
        let needed = p.len() + 4;
        assert_eq!(
            write_with_transport_seq(&p, 3, 1, &mut buf[..needed - 1]),
            Err(Error::BufferTooSmall { needed })
        );
        assert_eq!(
            write_with_transport_seq(&p[..15], 3, 1, &mut buf),
            Err(Error::Truncated)
        );
        let plain = hex("8060 0001 00000002 11111111");
        assert_eq!(
            write_with_transport_seq(&plain, 3, 1, &mut buf[..19]),
            Err(Error::BufferTooSmall { needed: 20 })
        );
    }

    #[test]
    fn builder_packets_round_trip() {
        let csrcs = [Ssrc(7)];
        let ext = [crate::ExtensionElement {
            id: 2,
            data: &[1, 2, 3],
        }];
        let mut b = crate::RtpHeaderBuilder::new(crate::Pt::new(96), 1, 2, Ssrc(3));
        b.csrcs = &csrcs;
        b.extensions = &ext;
        let mut p = [0u8; 40];
        let n = b.write_to(&mut p).unwrap();
        p[n..n + 4].copy_from_slice(&[9, 9, 9, 9]);
        let out = insert(&p[..n + 4], 4);
        assert_eq!(out.len(), n + 4 + 4);
    }
}
