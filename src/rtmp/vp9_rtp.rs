//! VP9 frames from Enhanced RTMP (`vp09`) to RTP packets (RFC 9628): non-flexible mode with a
//! 15-bit picture id and no layer indices (one spatial and one temporal layer), B on a
//! frame's first packet, E and the marker bit on its last, P on inter frames, and on a
//! keyframe's first packet a scalability structure with its size (one layer), which the node
//! reads as the stream's picture size.
//!
//! The picture id counts frames, so a receiver sees a lost frame: libwebrtc takes such a
//! stream frame by frame, each inter frame referencing the one before (its frame-id-only
//! reference finder, used when there is no TL0PICIDX), and asks for a keyframe after a gap.
//!
//! Packets are written into the packetizer's own buffer and lent to a callback: nothing is
//! allocated per frame or per packet.

use rtp::vp9::Vp9FrameHeader;

use super::nal_rtp::{FrameInfo, RTP_MAX_PACKET};

const RTP_HEADER: usize = 12;
/// I, P, B, E, V flags and a 15-bit picture id.
const DESCRIPTOR: usize = 3;
/// The scalability structure of one spatial layer with its size: N_S|Y|G, width, height.
const SCALABILITY: usize = 5;

/// One VP9 track's packetizer (see the module docs).
pub struct Vp9Packetizer {
    pt: u8,
    ssrc: u32,
    seq: u16,
    picture_id: u16,
    /// The last keyframe's size, for the scalability structure.
    size: Option<(u16, u16)>,
    buf: [u8; RTP_MAX_PACKET],
}

impl Vp9Packetizer {
    /// A packetizer sending payload type `pt` on `ssrc`, numbering from `first_seq`.
    pub fn new(pt: u8, ssrc: u32, first_seq: u16) -> Vp9Packetizer {
        Vp9Packetizer {
            pt,
            ssrc,
            seq: first_seq,
            picture_id: first_seq & 0x7FFF,
            size: None,
            buf: [0; RTP_MAX_PACKET],
        }
    }

    /// Packetizes one frame at RTP time `timestamp`; `tagged_key` is what the FLV tag said,
    /// taken when the frame's own header does not parse. `emit` gets each packet and whether
    /// it is part of a keyframe.
    pub fn packetize(
        &mut self,
        timestamp: u32,
        frame: &[u8],
        tagged_key: bool,
        mut emit: impl FnMut(&[u8], bool),
    ) -> FrameInfo {
        let header = Vp9FrameHeader::parse(frame);
        let keyframe = header.map_or(tagged_key, |h| h.keyframe);
        if let Some(key) = header.and_then(|h| h.key) {
            self.size = key.size_u16();
        }
        let mut info = FrameInfo {
            packets: 0,
            idr: keyframe,
        };
        let mut rest = frame;
        let mut first = true;
        while first || !rest.is_empty() {
            let ss = first && keyframe && self.size.is_some();
            let room = RTP_MAX_PACKET - RTP_HEADER - DESCRIPTOR - if ss { SCALABILITY } else { 0 };
            let take = rest.len().min(room);
            let last = take == rest.len();
            let b = &mut self.buf;
            b[0] = 0x80;
            b[1] = self.pt | if last { 0x80 } else { 0 };
            b[2..4].copy_from_slice(&self.seq.to_be_bytes());
            b[4..8].copy_from_slice(&timestamp.to_be_bytes());
            b[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            b[12] = 0x80
                | if keyframe { 0 } else { 0x40 }
                | if first { 0x08 } else { 0 }
                | if last { 0x04 } else { 0 }
                | if ss { 0x02 } else { 0 };
            b[13..15].copy_from_slice(&(0x8000 | self.picture_id).to_be_bytes());
            let mut len = RTP_HEADER + DESCRIPTOR;
            if let (true, Some((width, height))) = (ss, self.size) {
                b[len] = 0x10; // N_S = 0 (one layer), Y: its size follows
                b[len + 1..len + 3].copy_from_slice(&width.to_be_bytes());
                b[len + 3..len + 5].copy_from_slice(&height.to_be_bytes());
                len += SCALABILITY;
            }
            b[len..len + take].copy_from_slice(&rest[..take]);
            len += take;
            self.seq = self.seq.wrapping_add(1);
            emit(&self.buf[..len], keyframe);
            info.packets += 1;
            rest = &rest[take..];
            first = false;
        }
        self.picture_id = (self.picture_id + 1) & 0x7FFF;
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp::vp9::Vp9Descriptor;

    #[test]
    fn a_keyframe_is_split_within_the_mtu_with_its_size_and_flags() {
        let mut p = Vp9Packetizer::new(98, 7, 0x7FFF);
        let mut key = vec![0x82, 0x49, 0x83, 0x42, 0x40, 0x27, 0xF0, 0x16, 0x70];
        key.extend((0..3000).map(|i| i as u8));
        let mut packets = Vec::new();
        let info = p.packetize(90, &key, false, |pk, k| packets.push((pk.to_vec(), k)));
        assert_eq!((info.packets, info.idr), (3, true));
        let mut joined = Vec::new();
        for (i, (packet, keyframe)) in packets.iter().enumerate() {
            assert!(packet.len() <= RTP_MAX_PACKET && *keyframe);
            let d = Vp9Descriptor::parse(&packet[12..]).unwrap();
            assert_eq!(d.picture_id, Some(0x7FFF));
            assert!(!d.inter_predicted);
            assert_eq!((d.begins_frame, d.ends_frame), (i == 0, i == 2));
            assert_eq!(packet[1] & 0x80 != 0, i == 2, "marker on the last");
            assert_eq!(d.size, (i == 0).then_some((640, 360)));
            joined.extend_from_slice(&packet[12 + d.len..]);
        }
        assert_eq!(joined, key);
        assert!(rtp::is_keyframe(rtp::VideoCodec::Vp9, &packets[0].0[12..]));
        // An inter frame: P, the next picture id (wrapped), one packet.
        let mut packets = Vec::new();
        p.packetize(3090, &[0x86, 1, 2], true, |pk, k| {
            packets.push((pk.to_vec(), k))
        });
        let d = Vp9Descriptor::parse(&packets[0].0[12..]).unwrap();
        assert_eq!(d.picture_id, Some(0));
        assert!(d.inter_predicted && d.begins_frame && d.ends_frame && !packets[0].1);
        assert_eq!(&packets[0].0[12 + d.len..], &[0x86, 1, 2]);
    }

    #[test]
    fn garbage_goes_out_as_the_tag_said_and_empty_frames_make_one_packet() {
        let mut p = Vp9Packetizer::new(98, 7, 0);
        let mut count = 0;
        let info = p.packetize(0, &[0xFF; 5], true, |pk, key| {
            assert!(key && pk[12] & 0x40 == 0);
            count += 1;
        });
        assert_eq!((info.packets, count), (1, 1));
        assert_eq!(p.packetize(0, &[], false, |_, _| {}).packets, 1);
    }
}
