//! VP9 over RTP: the payload descriptor (RFC 9628 §4.2, with its scalability structure
//! §4.2.1) and what the first bytes of a frame say (VP9 bitstream spec §6.2, the uncompressed
//! header up to the frame size). One parser for keyframe detection, picture sizes and the
//! depacketizers that need frames back.

/// A parsed VP9 payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Descriptor {
    /// Bytes before the VP9 payload.
    pub len: usize,
    /// The 7- or 15-bit picture id (I).
    pub picture_id: Option<u16>,
    /// P: the frame references an earlier one.
    pub inter_predicted: bool,
    /// F: flexible mode.
    pub flexible: bool,
    /// B: the packet starts a (layer) frame.
    pub begins_frame: bool,
    /// E: the packet ends a (layer) frame.
    pub ends_frame: bool,
    /// The temporal and spatial layer ids (L), when present.
    pub temporal_id: Option<u8>,
    /// The spatial layer id (L), when present.
    pub spatial_id: Option<u8>,
    /// The scalability structure's spatial layers (V, N_S + 1), when present.
    pub spatial_layers: Option<u8>,
    /// The highest spatial layer's size in the scalability structure (V with Y).
    pub size: Option<(u16, u16)>,
}

impl Vp9Descriptor {
    /// Parses the descriptor at the start of `p`; `None` when it is cut short.
    pub fn parse(p: &[u8]) -> Option<Vp9Descriptor> {
        let b0 = *p.first()?;
        let mut d = Vp9Descriptor {
            inter_predicted: b0 & 0x40 != 0,
            flexible: b0 & 0x10 != 0,
            begins_frame: b0 & 0x08 != 0,
            ends_frame: b0 & 0x04 != 0,
            ..Vp9Descriptor::default()
        };
        let mut pos = 1;
        if b0 & 0x80 != 0 {
            let first = *p.get(pos)?;
            if first & 0x80 != 0 {
                let second = *p.get(pos + 1)?;
                d.picture_id = Some(u16::from_be_bytes([first & 0x7F, second]));
                pos += 2;
            } else {
                d.picture_id = Some(u16::from(first));
                pos += 1;
            }
        }
        if b0 & 0x20 != 0 {
            // TID(3) U(1) SID(3) D(1), and TL0PICIDX in non-flexible mode.
            let layer = *p.get(pos)?;
            d.temporal_id = Some(layer >> 5);
            d.spatial_id = Some((layer >> 1) & 0x07);
            pos += if d.flexible { 1 } else { 2 };
        }
        if d.flexible && d.inter_predicted {
            // Up to three P_DIFF bytes, each with N set when another follows.
            for _ in 0..3 {
                let diff = *p.get(pos)?;
                pos += 1;
                if diff & 0x01 == 0 {
                    break;
                }
            }
        }
        if b0 & 0x02 != 0 {
            pos = d.read_scalability_structure(p, pos)?;
        }
        (pos <= p.len()).then_some(Vp9Descriptor { len: pos, ..d })
    }

    /// §4.2.1: N_S(3) Y(1) G(1), the layers' sizes, the picture group. Returns where it ends.
    fn read_scalability_structure(&mut self, p: &[u8], mut pos: usize) -> Option<usize> {
        let ss = *p.get(pos)?;
        pos += 1;
        let layers = (ss >> 5) + 1;
        self.spatial_layers = Some(layers);
        if ss & 0x10 != 0 {
            let sizes = p.get(pos..pos + 4 * usize::from(layers))?;
            let last = &sizes[sizes.len() - 4..];
            let width = u16::from_be_bytes([last[0], last[1]]);
            let height = u16::from_be_bytes([last[2], last[3]]);
            self.size = (width > 0 && height > 0).then_some((width, height));
            pos += sizes.len();
        }
        if ss & 0x08 != 0 {
            let pictures = *p.get(pos)?;
            pos += 1;
            for _ in 0..pictures {
                // TID(3) U(1) R(2): R reference P_DIFFs follow.
                let refs = (*p.get(pos)? >> 2) & 0x03;
                pos += 1 + usize::from(refs);
            }
        }
        Some(pos)
    }
}

/// What a VP9 frame's uncompressed header says (spec §6.2), for a keyframe its colour
/// configuration and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9FrameHeader {
    /// 0 to 3.
    pub profile: u8,
    /// `show_existing_frame`: the frame only shows an earlier one.
    pub show_existing: bool,
    /// `frame_type` is KEY_FRAME.
    pub keyframe: bool,
    /// A keyframe's colour configuration and size.
    pub key: Option<Vp9KeyInfo>,
}

/// A keyframe's colour configuration (§6.2.2) and frame size (§6.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9KeyInfo {
    /// 8, 10 or 12.
    pub bit_depth: u8,
    /// `color_space`: 0 unknown, 1 BT.601, 2 BT.709, 3 SMPTE-170, 4 SMPTE-240, 5 BT.2020,
    /// 7 sRGB.
    pub color_space: u8,
    /// `color_range`: full range.
    pub full_range: bool,
    /// Chroma is halved horizontally.
    pub subsampling_x: bool,
    /// Chroma is halved vertically.
    pub subsampling_y: bool,
    /// The frame's width in pixels, 1 to 65,536.
    pub width: u32,
    /// The frame's height in pixels, 1 to 65,536.
    pub height: u32,
}

impl Vp9KeyInfo {
    /// The size in the 16 bits the RTP scalability structure and the FLV metadata give it;
    /// `None` for a side of 65,536, which neither can say.
    pub fn size_u16(&self) -> Option<(u16, u16)> {
        Some((
            u16::try_from(self.width).ok()?,
            u16::try_from(self.height).ok()?,
        ))
    }
}

impl Vp9FrameHeader {
    /// Parses the start of a frame (the first frame of a superframe); `None` when it is not a
    /// VP9 frame or is cut short.
    pub fn parse(frame: &[u8]) -> Option<Vp9FrameHeader> {
        let mut r = Bits {
            data: frame,
            pos: 0,
        };
        if r.read(2)? != 2 {
            return None; // frame_marker
        }
        let low = r.read(1)?;
        let profile = ((r.read(1)? << 1) | low) as u8;
        if profile == 3 && r.read(1)? != 0 {
            return None;
        }
        let mut header = Vp9FrameHeader {
            profile,
            show_existing: r.read(1)? == 1,
            keyframe: false,
            key: None,
        };
        if header.show_existing {
            return Some(header);
        }
        header.keyframe = r.read(1)? == 0;
        let _show_frame_and_error_resilient = r.read(2)?;
        if !header.keyframe {
            return Some(header);
        }
        if r.read(24)? != 0x49_83_42 {
            return None; // frame_sync_code
        }
        let bit_depth = if profile >= 2 {
            if r.read(1)? == 1 {
                12
            } else {
                10
            }
        } else {
            8
        };
        let color_space = r.read(3)? as u8;
        let odd_profile = profile == 1 || profile == 3;
        let (full_range, subsampling_x, subsampling_y) = if color_space != 7 {
            let full_range = r.read(1)? == 1;
            if odd_profile {
                let (x, y) = (r.read(1)? == 1, r.read(1)? == 1);
                r.read(1)?;
                (full_range, x, y)
            } else {
                (full_range, true, true)
            }
        } else {
            if !odd_profile {
                return None; // RGB needs profile 1 or 3
            }
            r.read(1)?;
            (true, false, false)
        };
        let width = r.read(16)? + 1;
        let height = r.read(16)? + 1;
        header.key = Some(Vp9KeyInfo {
            bit_depth,
            color_space,
            full_range,
            subsampling_x,
            subsampling_y,
            width,
            height,
        });
        Some(header)
    }
}

/// Big-endian bits, as the VP9 spec's `f(n)`.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            value = (value << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile 0 keyframe's first bytes: marker, profile 0, key, shown, sync code, BT.709
    /// limited range, 640x360.
    fn keyframe_640x360() -> Vec<u8> {
        keyframe_sized(640, 360)
    }

    fn keyframe_sized(width: u32, height: u32) -> Vec<u8> {
        // 10 0 0 0 0 1 0 | sync | cs 010 range 0 | w-1 16 bits | h-1 16 bits
        let mut bits = String::from("10000010");
        bits += "010010011000001101000010";
        bits += "0100";
        bits += &format!("{:016b}{:016b}", width - 1, height - 1);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect()
    }

    #[test]
    fn descriptors_in_both_modes_with_a_scalability_structure() {
        // I (15-bit 0x1234), B, E, V: N_S=0, Y, 640x360.
        let d = Vp9Descriptor::parse(&[0x8E, 0x92, 0x34, 0x10, 2, 128, 1, 104, 0xAA]).unwrap();
        assert_eq!(d.len, 8);
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.begins_frame && d.ends_frame && !d.inter_predicted);
        assert_eq!((d.spatial_layers, d.size), (Some(1), Some((640, 360))));
        // Flexible, L (SID 1), P with two P_DIFFs.
        let d = Vp9Descriptor::parse(&[0xF8, 0x05, 0x22, 0x03, 0x02, 0xAA]).unwrap();
        assert_eq!((d.len, d.spatial_id, d.temporal_id), (5, Some(1), Some(1)));
        // Non-flexible L carries TL0PICIDX; a picture group with references.
        let d = Vp9Descriptor::parse(&[0x2A, 0x00, 0x07, 0x48, 1, 0x04, 0x01]).unwrap();
        assert_eq!(d.len, 7);
        assert_eq!(d.spatial_layers, Some(3));
        for cut in 0..7 {
            assert_eq!(
                Vp9Descriptor::parse(&[0x2A, 0x00, 0x07, 0x48, 1, 0x04, 0x01][..cut]),
                None,
                "{cut}"
            );
        }
    }

    #[test]
    fn keyframe_headers_say_their_colour_and_size_and_inter_frames_say_little() {
        let h = Vp9FrameHeader::parse(&keyframe_640x360()).unwrap();
        assert!(h.keyframe && !h.show_existing);
        let key = h.key.unwrap();
        assert_eq!((key.width, key.height, key.bit_depth), (640, 360, 8));
        assert_eq!((key.color_space, key.full_range), (2, false));
        assert!(key.subsampling_x && key.subsampling_y);
        // An inter frame: frame_type 1.
        let h = Vp9FrameHeader::parse(&[0x86, 0x00]).unwrap();
        assert!(!h.keyframe && h.key.is_none());
        // show_existing_frame.
        assert!(Vp9FrameHeader::parse(&[0x88]).unwrap().show_existing);
        assert_eq!(Vp9FrameHeader::parse(&[0x00, 0x00]), None);
        let key = keyframe_640x360();
        for cut in 0..key.len() - 1 {
            assert_eq!(Vp9FrameHeader::parse(&key[..cut]), None, "{cut}");
        }
    }

    #[test]
    fn the_largest_size_a_keyframe_can_say_is_65536_square() {
        // frame_width_minus_1 is 16 bits, so 0xFFFF means 65,536 pixels (a fuzzer found
        // the overflow).
        let key = Vp9FrameHeader::parse(&keyframe_sized(65_536, 65_536))
            .unwrap()
            .key
            .unwrap();
        assert_eq!((key.width, key.height), (65_536, 65_536));
        let key = Vp9FrameHeader::parse(&keyframe_sized(1, 1))
            .unwrap()
            .key
            .unwrap();
        assert_eq!((key.width, key.height), (1, 1));
    }
}
