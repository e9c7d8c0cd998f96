//! AV1 temporal units from Enhanced RTMP (`av01`) to RTP packets ("RTP Payload Format For
//! AV1", AOM, §4.4–§4.5): each packet an aggregation header Z|Y|W|N and OBU elements, the OBUs
//! without their size fields (`obu_has_size_field` cleared); temporal delimiters, tile lists and
//! padding are left out (§5: they should be). OBUs share a packet while they fit and a large
//! one is split across packets (Z on a packet whose first element continues one, Y on a packet
//! whose last element goes on in the next). W is the element count up to 3 (the last element
//! without a length), else 0 with every element's length. The marker bit ends the temporal unit.
//!
//! A keyframe starts a coded video sequence: its first packet has N set and it carries the
//! sequence header, so a player joining at it can decode. An encoder's keyframe usually has
//! one; when it has none the av1C's configuration OBUs go first, within the same temporal unit.
//!
//! A temporal unit is read whole before anything is sent: malformed OBUs (a size past the end,
//! a LEB128 that does not end) send nothing and are an error. Packets are written into the
//! packetizer's own buffer and lent to a callback: nothing is allocated per frame or packet.

use rtp::av1_obu::{
    leb128_len, write_leb128, Obu, ObuIter, LEB128_MAX, OBU_PADDING, OBU_SEQUENCE_HEADER,
    OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST,
};

use super::nal_rtp::{FrameInfo, RTP_MAX_PACKET};

const RTP_HEADER: usize = 12;
/// Where the OBU elements start: after the RTP header and the aggregation header.
const ELEMENTS: usize = RTP_HEADER + 1;

/// Why AV1 data was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Av1Error {
    /// A temporal unit's OBUs do not parse; nothing of it was sent.
    #[error("malformed AV1 temporal unit: {0}")]
    Obus(rtp::Error),
    /// The av1C's configuration OBUs do not parse.
    #[error("malformed AV1 configuration OBUs (av1C): {0}")]
    ConfigObus(rtp::Error),
}

/// One AV1 track's packetizer (see the module docs).
pub struct Av1Packetizer {
    out: PacketWriter,
    /// The av1C's configuration OBUs (low overhead format), sent before a keyframe without a
    /// sequence header of its own.
    config_obus: Vec<u8>,
    /// Whether `config_obus` holds a sequence header.
    config_has_sequence_header: bool,
}

impl Av1Packetizer {
    /// A packetizer sending payload type `pt` on `ssrc`, numbering from `first_seq`.
    pub fn new(pt: u8, ssrc: u32, first_seq: u16) -> Av1Packetizer {
        Av1Packetizer {
            out: PacketWriter {
                pt,
                ssrc,
                seq: first_seq,
                buf: [0; RTP_MAX_PACKET + LEB128_MAX],
            },
            config_obus: Vec::new(),
            config_has_sequence_header: false,
        }
    }

    /// Takes a sequence start's configuration OBUs (the av1C's `configOBUs`), for keyframes
    /// that come without a sequence header.
    pub fn set_config_obus(&mut self, obus: &[u8]) -> Result<(), Av1Error> {
        let has_sequence_header = scan(obus).map_err(Av1Error::ConfigObus)?;
        self.config_obus.clear();
        self.config_obus.extend_from_slice(obus);
        self.config_has_sequence_header = has_sequence_header;
        Ok(())
    }

    /// Packetizes one temporal unit (OBUs in the low overhead format) at RTP time
    /// `timestamp`; `keyframe` is what the FLV tag said. `emit` gets each packet and whether it
    /// is part of a keyframe.
    pub fn packetize(
        &mut self,
        timestamp: u32,
        temporal_unit: &[u8],
        keyframe: bool,
        emit: impl FnMut(&[u8], bool),
    ) -> Result<FrameInfo, Av1Error> {
        let has_sequence_header = scan(temporal_unit).map_err(Av1Error::Obus)?;
        let prefix: &[u8] = if keyframe && !has_sequence_header {
            &self.config_obus
        } else {
            &[]
        };
        let new_sequence = keyframe && (has_sequence_header || self.config_has_sequence_header);
        let elements = ObuIter::new(prefix)
            .chain(ObuIter::new(temporal_unit))
            // scan() read them all.
            .filter_map(Result::ok)
            .filter(|obu| {
                !matches!(
                    obu.obu_type(),
                    OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING
                )
            })
            .map(Element::new);
        let packets =
            self.out
                .write_temporal_unit(timestamp, elements, keyframe, new_sequence, emit);
        Ok(FrameInfo {
            packets,
            idr: keyframe && packets > 0,
        })
    }
}

/// Reads every OBU of `obus`: whether one is a sequence header, or the first error.
fn scan(obus: &[u8]) -> Result<bool, rtp::Error> {
    let mut has_sequence_header = false;
    for obu in ObuIter::new(obus) {
        has_sequence_header |= obu?.obu_type() == OBU_SEQUENCE_HEADER;
    }
    Ok(has_sequence_header)
}

/// The packet being written: the RTP fields and a buffer with room for one LEB128 past the
/// largest packet (an element's length is written before the packet knows whether it keeps it).
struct PacketWriter {
    pt: u8,
    ssrc: u32,
    seq: u16,
    buf: [u8; RTP_MAX_PACKET + LEB128_MAX],
}

impl PacketWriter {
    /// Writes `elements` as packets; returns how many.
    fn write_temporal_unit<'a>(
        &mut self,
        timestamp: u32,
        mut elements: impl Iterator<Item = Element<'a>>,
        keyframe: bool,
        new_sequence: bool,
        mut emit: impl FnMut(&[u8], bool),
    ) -> usize {
        let mut cursor = elements.next().map(|element| (element, 0));
        let mut packets = 0;
        while let Some((element, offset)) = cursor {
            let continues_fragment = offset > 0;
            let packet = self.fill(element, offset, &mut elements);
            cursor = packet.next;
            let b = &mut self.buf;
            b[0] = 0x80;
            b[1] = self.pt | if cursor.is_none() { 0x80 } else { 0 };
            b[2..4].copy_from_slice(&self.seq.to_be_bytes());
            b[4..8].copy_from_slice(&timestamp.to_be_bytes());
            b[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            b[12] = u8::from(continues_fragment) << 7
                | u8::from(packet.fragment_goes_on) << 6
                | packet.w << 4
                | u8::from(packets == 0 && new_sequence) << 3;
            self.seq = self.seq.wrapping_add(1);
            emit(&self.buf[..packet.len], keyframe);
            packets += 1;
        }
        packets
    }

    /// Writes the OBU elements of one packet, starting at `offset` into `element`.
    fn fill<'a>(
        &mut self,
        mut element: Element<'a>,
        mut offset: usize,
        elements: &mut impl Iterator<Item = Element<'a>>,
    ) -> Filled<'a> {
        let mut pos = ELEMENTS;
        let mut count = 0usize;
        // Where the last element's length field starts, and its size.
        let mut last_length = (pos, 0);
        let next = loop {
            let remaining = element.len() - offset;
            let room = RTP_MAX_PACKET.saturating_sub(pos);
            // The packet's last element needs no length while it is one of at most three.
            let without_length = count < 3;
            let needed = remaining
                + if without_length {
                    0
                } else {
                    leb128_len(remaining)
                };
            let take = match () {
                _ if needed <= room => remaining,
                _ if without_length => room,
                _ => room.saturating_sub(leb128_len(room)),
            };
            if take == 0 {
                break Some((element, offset));
            }
            let field = write_leb128(take, &mut self.buf[pos..]);
            last_length = (pos, field);
            pos += field;
            element.copy_to(offset, &mut self.buf[pos..pos + take]);
            pos += take;
            count += 1;
            offset += take;
            if offset < element.len() {
                break Some((element, offset));
            }
            match elements.next() {
                Some(following) => (element, offset) = (following, 0),
                None => break None,
            }
        };
        let fragment_goes_on = next.is_some_and(|(_, offset)| offset > 0);
        if count > 3 {
            return Filled {
                len: pos,
                w: 0,
                fragment_goes_on,
                next,
            };
        }
        // W = count: the last element's length goes.
        let (at, field) = last_length;
        self.buf.copy_within(at + field..pos, at);
        Filled {
            len: pos - field,
            w: count as u8, // at most 3
            fragment_goes_on,
            next,
        }
    }
}

/// One packet's elements as written.
struct Filled<'a> {
    len: usize,
    w: u8,
    /// The last element is a fragment the next packet continues (Y).
    fragment_goes_on: bool,
    /// Where the next packet starts.
    next: Option<(Element<'a>, usize)>,
}

/// An OBU as an OBU element: its headers with `obu_has_size_field` cleared, then its payload.
#[derive(Clone, Copy)]
struct Element<'a> {
    head: [u8; 2],
    head_len: usize,
    payload: &'a [u8],
}

impl<'a> Element<'a> {
    fn new(obu: Obu<'a>) -> Element<'a> {
        Element {
            head: [obu.header & !0x02, obu.extension.unwrap_or(0)],
            head_len: 1 + usize::from(obu.extension.is_some()),
            payload: obu.payload,
        }
    }

    fn len(&self) -> usize {
        self.head_len + self.payload.len()
    }

    /// Copies the element's bytes from `from` into all of `out`.
    fn copy_to(&self, from: usize, out: &mut [u8]) {
        let head = &self.head[..self.head_len];
        let from_head = head.get(from..).unwrap_or_default();
        let n = from_head.len().min(out.len());
        out[..n].copy_from_slice(&from_head[..n]);
        let start = from.saturating_sub(self.head_len);
        let rest = out.len() - n;
        out[n..].copy_from_slice(&self.payload[start..start + rest]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp::av1_obu::{leb128, OBU_FRAME, OBU_METADATA};

    /// A low overhead OBU of `obu_type` with a size field and `payload`.
    fn obu(obu_type: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![obu_type << 3 | 0x02];
        let mut size = [0; LEB128_MAX];
        let len = write_leb128(payload.len(), &mut size);
        out.extend_from_slice(&size[..len]);
        out.extend_from_slice(payload);
        out
    }

    const TD: [u8; 2] = [0x12, 0x00];

    /// libaom's for 320x240 4:2:0 (profile 0, level 2.0).
    fn sequence_header() -> Vec<u8> {
        let body = [
            0x00, 0x00, 0x00, 0x04, 0x3C, 0xFF, 0xBC, 0xDA, 0xF9, 0x00, 0x40,
        ];
        obu(OBU_SEQUENCE_HEADER, &body)
    }

    /// A test-side depacketizer: the temporal unit's OBUs, each with a size field again, and
    /// the aggregation headers; checks Z/Y agree across packets and the marker is on the last.
    fn depacketize(packets: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut headers) = (Vec::new(), Vec::new());
        let mut fragment: Vec<u8> = Vec::new();
        let mut pending_y = false;
        for (i, packet) in packets.iter().enumerate() {
            assert!(packet.len() <= RTP_MAX_PACKET, "{} bytes", packet.len());
            assert_eq!(packet[1] & 0x80 != 0, i == packets.len() - 1, "marker");
            let aggregation = packet[12];
            headers.push(aggregation);
            assert_eq!(aggregation & 0x80 != 0, pending_y, "Z follows Y");
            let w = usize::from(aggregation >> 4 & 0x03);
            let mut rest = &packet[13..];
            let mut index = 0;
            while !rest.is_empty() {
                index += 1;
                let element = if w == 0 || index < w {
                    let (len, used) = leb128(rest).unwrap();
                    let element = &rest[used..used + len as usize];
                    rest = &rest[used + len as usize..];
                    element
                } else {
                    std::mem::take(&mut rest)
                };
                let continued = index == 1 && aggregation & 0x80 != 0;
                if !continued {
                    assert!(fragment.is_empty(), "an unfinished OBU");
                }
                fragment.extend_from_slice(element);
                let goes_on = rest.is_empty() && aggregation & 0x40 != 0;
                if !goes_on {
                    let header = fragment[0];
                    assert_eq!(header & 0x02, 0, "no size field");
                    let head = 1 + usize::from(header & 0x04 != 0);
                    let body = &fragment[head..];
                    out.push(header | 0x02);
                    out.extend_from_slice(&fragment[1..head]);
                    let mut size = [0; LEB128_MAX];
                    let len = write_leb128(body.len(), &mut size);
                    out.extend_from_slice(&size[..len]);
                    out.extend_from_slice(body);
                    fragment.clear();
                }
            }
            assert!(w == 0 || index == w, "W counts the elements");
            pending_y = aggregation & 0x40 != 0;
        }
        assert!(!pending_y && fragment.is_empty());
        (out, headers)
    }

    fn run(p: &mut Av1Packetizer, tu: &[u8], keyframe: bool) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        let info = p
            .packetize(90, tu, keyframe, |packet, key| {
                assert_eq!(key, keyframe);
                packets.push(packet.to_vec());
            })
            .unwrap();
        assert_eq!(info.packets, packets.len());
        packets
    }

    #[test]
    fn a_keyframe_is_fragmented_with_n_on_its_first_packet_and_the_td_dropped() {
        let mut p = Av1Packetizer::new(45, 7, 0xFFFF);
        let frame = obu(OBU_FRAME, &(0..3000).map(|i| i as u8).collect::<Vec<_>>());
        let tu = [&TD[..], &sequence_header(), &frame].concat();
        let packets = run(&mut p, &tu, true);
        assert_eq!(packets.len(), 3);
        let (obus, headers) = depacketize(&packets);
        assert_eq!(obus, [sequence_header(), frame].concat());
        // The sequence header and the frame's start, W=2 (Y); the middle, W=1 (Z, Y); the end.
        assert_eq!(headers, [0x68, 0xD0, 0x90]);
        assert!(rtp::is_keyframe(rtp::VideoCodec::Av1, &packets[0][12..]));
        assert_eq!(
            rtp::keyframe_size(rtp::VideoCodec::Av1, &packets[0][12..]),
            Some((320, 240))
        );
        let seqs: Vec<u16> = packets
            .iter()
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        assert_eq!(seqs, [0xFFFF, 0, 1]);
        assert!(packets
            .iter()
            .all(|p| p[1] & 0x7F == 45 && p[4..8] == 90u32.to_be_bytes()));
    }

    #[test]
    fn small_obus_share_a_packet_with_every_length_past_three() {
        let mut p = Av1Packetizer::new(45, 7, 0);
        let two = [obu(OBU_METADATA, &[1, 2]), obu(OBU_FRAME, &[3; 40])].concat();
        let packets = run(&mut p, &[&TD[..], &two].concat(), false);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][12], 0x20, "W=2, not a new sequence");
        assert_eq!(depacketize(&packets).0, two);
        let five: Vec<u8> = (0..5).flat_map(|i| obu(OBU_METADATA, &[i; 9])).collect();
        let packets = run(&mut p, &five, false);
        assert_eq!(packets[0][12], 0x00, "W=0");
        assert_eq!(depacketize(&packets).0, five);
    }

    #[test]
    fn a_keyframe_without_a_sequence_header_gets_the_av1c_one() {
        let mut p = Av1Packetizer::new(45, 7, 0);
        p.set_config_obus(&sequence_header()).unwrap();
        let frame = obu(OBU_FRAME, &[9; 100]);
        let packets = run(&mut p, &[&TD[..], &frame].concat(), true);
        let (obus, headers) = depacketize(&packets);
        assert_eq!(obus, [sequence_header(), frame.clone()].concat());
        assert_eq!(headers, [0x28]);
        // Not before an inter frame; and without any sequence header, no N.
        let packets = run(&mut p, &frame, false);
        assert_eq!(depacketize(&packets), (frame.clone(), vec![0x10]));
        let mut bare = Av1Packetizer::new(45, 7, 0);
        assert_eq!(run(&mut bare, &frame, true)[0][12], 0x10);
        assert_eq!(
            p.set_config_obus(&[0x0A, 0x09]),
            Err(Av1Error::ConfigObus(rtp::Error::Truncated))
        );
    }

    #[test]
    fn padding_tile_lists_and_a_lone_td_send_nothing() {
        let mut p = Av1Packetizer::new(45, 7, 0);
        let tu = [
            &TD[..],
            &obu(OBU_PADDING, &[0; 30]),
            &obu(OBU_TILE_LIST, &[1]),
        ]
        .concat();
        let info = p
            .packetize(0, &tu, true, |_, _| panic!("a packet"))
            .unwrap();
        assert_eq!((info.packets, info.idr), (0, false));
        // An extension header goes along; a last OBU without a size field is taken too.
        let frame = [0x34, 0x28, 0xAA, 0xBB];
        let packets = run(&mut p, &frame, false);
        assert_eq!(&packets[0][12..], [0x10, 0x34, 0x28, 0xAA, 0xBB]);
    }

    #[test]
    fn malformed_temporal_units_send_nothing() {
        let mut p = Av1Packetizer::new(45, 7, 0);
        let good = obu(OBU_FRAME, &[1; 10]);
        for (bad, error) in [
            (&[0x32, 0x10, 0x01][..], rtp::Error::Truncated),
            (&[0x32, 0x80, 0x80], rtp::Error::Malformed("AV1 OBU size")),
            (
                &[0x92, 0x00],
                rtp::Error::Malformed("AV1 OBU forbidden bit set"),
            ),
        ] {
            let tu = [&good[..], bad].concat();
            let sent = p.packetize(0, &tu, true, |_, _| panic!("a packet"));
            assert_eq!(sent, Err(Av1Error::Obus(error)));
        }
        // The sequence numbers went on where they were.
        assert_eq!(run(&mut p, &good, false)[0][2..4], [0, 0]);
    }

    #[test]
    fn any_split_reassembles_to_the_temporal_unit() {
        let mut p = Av1Packetizer::new(45, 7, 0);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let tu: Vec<u8> = (0..1 + next(8))
                .flat_map(|_| {
                    let len = match next(4) {
                        0 => next(4),
                        1 => 1180 + next(20),
                        _ => next(3000),
                    };
                    obu(OBU_METADATA, &vec![0x5A; len as usize])
                })
                .collect();
            let (obus, _) = depacketize(&run(&mut p, &tu, false));
            assert_eq!(obus, tu);
        }
    }
}
