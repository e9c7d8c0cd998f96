//! H.265 (HEVC) NAL unit types, the RTP payload format's packet forms (RFC 7798 §4.4) as far as
//! keyframe detection needs them, and the picture size and format a sequence parameter set
//! announces (H.265 §7.3.2.2).

use crate::rbsp::RbspBits;

/// Video parameter set.
pub const NAL_VPS: u8 = 32;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// Picture parameter set.
pub const NAL_PPS: u8 = 34;
/// Access unit delimiter.
pub const NAL_AUD: u8 = 35;
/// RFC 7798 §4.4.2 aggregation packet.
pub const NAL_AP: u8 = 48;
/// RFC 7798 §4.4.3 fragmentation unit.
pub const NAL_FU: u8 = 49;

/// The NAL unit type in the first byte of a NAL unit header (or of an RTP payload header,
/// which has the same layout): F(1) | Type(6) | the top bit of LayerId.
pub fn nal_type(first_header_byte: u8) -> u8 {
    (first_header_byte >> 1) & 0x3F
}

/// Whether a NAL unit type is a slice of an intra random access point picture (BLA, IDR, CRA
/// and the reserved IRAP types, 16 to 23): a decoder can start there.
pub fn is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
}

/// What a player can start decoding from: an IRAP slice, or the parameter sets sent before one.
fn starts_keyframe(nal_type: u8) -> bool {
    is_irap(nal_type) || nal_type == NAL_VPS || nal_type == NAL_SPS
}

/// The NAL units of an aggregation packet (RFC 7798 §4.4.2), after its 2-byte payload header:
/// a 16-bit size before each. Without sprop-max-don-diff (never negotiated here) there are no
/// DONL/DOND fields. Stops at the first unit that is shorter than a NAL header or runs past the
/// end.
#[derive(Debug, Clone)]
pub struct ApNalUnits<'a> {
    rest: &'a [u8],
}

impl<'a> ApNalUnits<'a> {
    /// The units of `payload`, a whole RTP payload whose header says [`NAL_AP`].
    pub fn new(payload: &'a [u8]) -> ApNalUnits<'a> {
        ApNalUnits {
            rest: payload.get(2..).unwrap_or_default(),
        }
    }
}

impl<'a> Iterator for ApNalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let size = usize::from(u16::from_be_bytes([
            *self.rest.first()?,
            *self.rest.get(1)?,
        ]));
        let unit = self.rest.get(2..2 + size).filter(|u| u.len() >= 2);
        self.rest = match unit {
            Some(_) => &self.rest[2 + size..],
            None => &[],
        };
        unit
    }
}

/// Whether an RTP payload carries an IRAP slice or a VPS or SPS: as a single NAL unit, in an
/// aggregation packet, or starting a fragmentation unit. `None` when it is cut short.
pub(crate) fn payload_is_keyframe(p: &[u8]) -> Option<bool> {
    match nal_type(*p.first()?) {
        NAL_AP => Some(ApNalUnits::new(p).any(|nal| starts_keyframe(nal_type(nal[0])))),
        NAL_FU => {
            let fu = *p.get(2)?;
            Some(fu & 0x80 != 0 && starts_keyframe(fu & 0x3F))
        }
        t => Some(starts_keyframe(t)),
    }
}

/// The SPS an RTP payload carries alone, first in an aggregation packet, or in the first
/// fragment of a fragmentation unit (as far as that fragment goes).
pub(crate) fn payload_sps(p: &[u8]) -> Option<H265Sps> {
    match nal_type(*p.first()?) {
        NAL_SPS => H265Sps::parse(p),
        NAL_AP => H265Sps::parse(ApNalUnits::new(p).find(|nal| nal_type(nal[0]) == NAL_SPS)?),
        NAL_FU => {
            // S set and FuType SPS; the fragment's data is the NAL unit after its header.
            let fu = *p.get(2)?;
            (fu & 0x80 != 0 && fu & 0x3F == NAL_SPS)
                .then(|| H265Sps::parse_rbsp(p.get(3..)?))
                .flatten()
        }
        _ => None,
    }
}

/// What a sequence parameter set says about the pictures (H.265 §7.3.2.2, §7.4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H265Sps {
    /// Displayed width: pic_width_in_luma_samples less the conformance window.
    pub width: u32,
    /// Displayed height: pic_height_in_luma_samples less the conformance window.
    pub height: u32,
    /// The general profile, tier and level (§7.3.3): profile_space(2) tier(1) profile_idc(5),
    /// 32 compatibility flags, 48 bits of constraint flags, level_idc: the 12 bytes an `hvcC`
    /// box copies, in order.
    pub profile_tier_level: [u8; 12],
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    /// Luma bit depth less 8.
    pub bit_depth_luma_minus8: u8,
    /// Chroma bit depth less 8.
    pub bit_depth_chroma_minus8: u8,
}

impl H265Sps {
    /// Parses a whole SPS NAL unit: its 2-byte header, then the RBSP with its emulation
    /// prevention bytes still in. `None` for other NAL units, SPSs cut short before the bit
    /// depths, and values the standard rules out (no picture, a size beyond 65535 once cropped,
    /// chroma_format_idc above 3, bit depths above 16, more than 7 sub-layers).
    pub fn parse(nal: &[u8]) -> Option<H265Sps> {
        if nal_type(*nal.first()?) != NAL_SPS {
            return None;
        }
        H265Sps::parse_rbsp(nal.get(2..)?)
    }

    /// The SPS fields after the NAL unit header.
    fn parse_rbsp(rbsp: &[u8]) -> Option<H265Sps> {
        let mut r = RbspBits::new(rbsp);
        r.bits(4)?; // sps_video_parameter_set_id
        let max_sub_layers_minus1 = r.bits(3)?;
        if max_sub_layers_minus1 > 6 {
            return None;
        }
        r.bit()?; // sps_temporal_id_nesting_flag
        let profile_tier_level = profile_tier_level(&mut r, max_sub_layers_minus1)?;
        if r.ue()? > 15 {
            return None; // sps_seq_parameter_set_id
        }
        let chroma_format_idc = u8::try_from(r.ue()?).ok().filter(|c| *c <= 3)?;
        if chroma_format_idc == 3 {
            // separate_colour_plane_flag: the three planes coded as monochrome pictures,
            // cropped in luma samples either way (SubWidthC = SubHeightC = 1).
            r.bit()?;
        }
        let coded_width = u64::from(r.ue()?);
        let coded_height = u64::from(r.ue()?);
        let mut window = [0u64; 4]; // left, right, top, bottom
        if r.bit()? == 1 {
            for offset in &mut window {
                *offset = u64::from(r.ue()?);
            }
        }
        let bit_depth_luma_minus8 = u8::try_from(r.ue()?).ok().filter(|d| *d <= 8)?;
        let bit_depth_chroma_minus8 = u8::try_from(r.ue()?).ok().filter(|d| *d <= 8)?;
        // Table 6-1: offsets count chroma samples.
        let (sub_width, sub_height) = match chroma_format_idc {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let displayed = |coded: u64, unit: u64, before: u64, after: u64| {
            let size = coded.checked_sub(unit * (before + after))?;
            u32::try_from(size).ok().filter(|s| (1..=65535).contains(s))
        };
        Some(H265Sps {
            width: displayed(coded_width, sub_width, window[0], window[1])?,
            height: displayed(coded_height, sub_height, window[2], window[3])?,
            profile_tier_level,
            chroma_format_idc,
            bit_depth_luma_minus8,
            bit_depth_chroma_minus8,
        })
    }

    /// The displayed size as `keyframe_size` gives it (always `Some` for a parsed SPS, whose
    /// sizes are at most 65535).
    pub fn size(&self) -> Option<(u16, u16)> {
        Some((
            u16::try_from(self.width).ok()?,
            u16::try_from(self.height).ok()?,
        ))
    }
}

/// profile_tier_level(1, max_sub_layers_minus1) (§7.3.3): the 12 general bytes, then the
/// sub-layers' flags and whatever of their profiles and levels is present, skipped.
fn profile_tier_level(r: &mut RbspBits<'_>, max_sub_layers_minus1: u32) -> Option<[u8; 12]> {
    let mut general = [0u8; 12];
    for byte in &mut general {
        *byte = r.bits(8)? as u8;
    }
    let mut present = [(false, false); 7];
    let sub_layers = &mut present[..max_sub_layers_minus1 as usize];
    for (profile, level) in sub_layers.iter_mut() {
        *profile = r.bit()? == 1;
        *level = r.bit()? == 1;
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?; // reserved_zero_2bits
    }
    for (profile, level) in sub_layers.iter() {
        if *profile {
            r.skip(88)?; // space, tier, idc, compatibility and constraint flags
        }
        if *level {
            r.skip(8)?; // sub_layer_level_idc
        }
    }
    Some(general)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS NAL units as x265 (through ffmpeg's libx265, `-preset ultrafast`) wrote them for
    /// testsrc at the sizes and pixel formats named, with what ffprobe reports for them.
    struct Sample {
        sps: &'static [u8],
        width: u32,
        height: u32,
        chroma_format_idc: u8,
        bit_depth_minus8: u8,
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const SAMPLES: [Sample; 6] = [
        // 320x240 yuv420p, Main: no conformance window.
        Sample {
            sps: &[
                0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
                0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x5b, 0xa4, 0xa4, 0xc2, 0xf0,
                0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0f, 0x04,
            ],
            width: 320,
            height: 240,
            chroma_format_idc: 1,
            bit_depth_minus8: 0,
        },
        // 322x242 yuv420p: coded 328x248, cropped.
        Sample {
            sps: &[
                0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
                0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x88, 0x04, 0x07, 0x11, 0x11, 0x96, 0xe9, 0x29,
                0x30, 0xbc, 0x05, 0xa0, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x03,
                0xc1,
            ],
            width: 322,
            height: 242,
            chroma_format_idc: 1,
            bit_depth_minus8: 0,
        },
        // 1920x1080 yuv420p: coded 1088 lines.
        Sample {
            sps: &[
                0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
                0x00, 0x03, 0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x11, 0x07, 0xcb, 0x96, 0xe9, 0x29,
                0x30, 0xbc, 0x05, 0xa0, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x03,
                0xc1,
            ],
            width: 1920,
            height: 1080,
            chroma_format_idc: 1,
            bit_depth_minus8: 0,
        },
        // 320x240 yuv444p, Main 4:4:4 (RExt).
        Sample {
            sps: &[
                0x42, 0x01, 0x01, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x03,
                0x00, 0x00, 0x3c, 0x90, 0x01, 0x41, 0x01, 0xe2, 0xcb, 0x74, 0x94, 0x98, 0x5e, 0x02,
                0xd0, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x80,
            ],
            width: 320,
            height: 240,
            chroma_format_idc: 3,
            bit_depth_minus8: 0,
        },
        // 320x240 yuv420p10le, Main 10.
        Sample {
            sps: &[
                0x42, 0x01, 0x01, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
                0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x13, 0x65, 0xba, 0x4a, 0x4c, 0x2f,
                0x01, 0x68, 0x08, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x40,
            ],
            width: 320,
            height: 240,
            chroma_format_idc: 1,
            bit_depth_minus8: 2,
        },
        // 640x360 yuv422p, Main 4:2:2 10 (RExt): coded 368 lines, cropped by whole rows
        // (SubHeightC = 1).
        Sample {
            sps: &[
                0x42, 0x01, 0x01, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9d, 0x08, 0x00, 0x00, 0x03,
                0x00, 0x00, 0x3f, 0xb0, 0x05, 0x02, 0x01, 0x71, 0xf1, 0x39, 0x6e, 0x92, 0x93, 0x0b,
                0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x10,
            ],
            width: 640,
            height: 360,
            chroma_format_idc: 2,
            bit_depth_minus8: 0,
        },
    ];

    #[test]
    fn x265_sps_fields() {
        for s in &SAMPLES {
            let sps = H265Sps::parse(s.sps).expect("x265's SPS parses");
            assert_eq!((sps.width, sps.height), (s.width, s.height));
            assert_eq!(sps.chroma_format_idc, s.chroma_format_idc, "{}", s.width);
            assert_eq!(sps.bit_depth_luma_minus8, s.bit_depth_minus8);
            assert_eq!(sps.bit_depth_chroma_minus8, s.bit_depth_minus8);
        }
        // The general profile_tier_level without its emulation prevention bytes, as hvcC has
        // it: Main (1), compatible with Main and Main 10, level 2 (60 = 30 * 2).
        assert_eq!(
            H265Sps::parse(SAMPLES[0].sps).unwrap().profile_tier_level,
            [0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3c]
        );
        // RExt (4) with its constraint flags for 4:4:4 8-bit.
        assert_eq!(
            H265Sps::parse(SAMPLES[3].sps).unwrap().profile_tier_level,
            [0x04, 0x08, 0x00, 0x00, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x00, 0x00, 0x3c]
        );
        // Level 4 at 1920x1080.
        assert_eq!(
            H265Sps::parse(SAMPLES[2].sps).unwrap().profile_tier_level[11],
            120
        );
    }

    #[test]
    fn cut_sps_never_panics() {
        for s in &SAMPLES {
            for len in 0..s.sps.len() {
                if let Some(sps) = H265Sps::parse(&s.sps[..len]) {
                    // Only the fields after the bit depths may be missing.
                    assert_eq!((sps.width, sps.height), (s.width, s.height), "{len}");
                }
            }
            assert_eq!(H265Sps::parse(&s.sps[..20]), None);
        }
    }

    #[test]
    fn other_nal_units_and_absurd_values_are_refused() {
        let vps = hex("40010c01ffff01600000030090000003000003003cba0240");
        assert_eq!(H265Sps::parse(&vps), None);
        assert_eq!(H265Sps::parse(&[]), None);
        assert_eq!(H265Sps::parse(&[0x42]), None);
        // Exp-Golomb codes of zeros that never end.
        let mut zeros = SAMPLES[0].sps[..18].to_vec();
        zeros.extend([0u8; 12]);
        assert_eq!(H265Sps::parse(&zeros), None);
        // 7 in sps_max_sub_layers_minus1 (at most 6).
        let mut sub_layers = SAMPLES[0].sps.to_vec();
        sub_layers[2] |= 0x0e;
        assert_eq!(H265Sps::parse(&sub_layers), None);
    }

    /// An SPS written field by field, to reach what x265 never writes: sub-layers, chroma
    /// format 0 and 4, sizes out of range.
    fn sps_with(
        sub_layers: &[(bool, bool)],
        chroma: u32,
        size: (u32, u32),
        crop: [u32; 4],
    ) -> Vec<u8> {
        let mut bits = Vec::new();
        let mut put = |value: u64, n: u32| {
            for i in (0..n).rev() {
                bits.push((value >> i) & 1 == 1);
            }
        };
        let ue = |put: &mut dyn FnMut(u64, u32), v: u32| {
            let code = u64::from(v) + 1;
            let len = 64 - code.leading_zeros();
            put(0, len - 1);
            put(code, len);
        };
        put(0, 4);
        put(sub_layers.len() as u64, 3);
        put(1, 1);
        for byte in [1u64, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5d] {
            put(byte, 8);
        }
        for (p, l) in sub_layers {
            put(u64::from(*p), 1);
            put(u64::from(*l), 1);
        }
        if !sub_layers.is_empty() {
            put(0, 2 * (8 - sub_layers.len() as u32));
        }
        for (p, l) in sub_layers {
            if *p {
                put(0x0123_4567_89ab, 48);
                put(0xcdef_0123_4567, 40);
            }
            if *l {
                put(0xff, 8);
            }
        }
        ue(&mut put, 0);
        ue(&mut put, chroma);
        if chroma == 3 {
            put(0, 1);
        }
        ue(&mut put, size.0);
        ue(&mut put, size.1);
        put(u64::from(crop != [0; 4]), 1);
        if crop != [0; 4] {
            for c in crop {
                ue(&mut put, c);
            }
        }
        ue(&mut put, 0);
        ue(&mut put, 0);
        put(1, 1); // stop bit
        let mut nal = vec![0x42, 0x01];
        for chunk in bits.chunks(8) {
            let byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |b, (i, bit)| b | u8::from(*bit) << (7 - i));
            // Emulation prevention, as an encoder would add it.
            if nal.ends_with(&[0, 0]) && byte <= 3 {
                nal.push(3);
            }
            nal.push(byte);
        }
        nal
    }

    #[test]
    fn sub_layers_chroma_formats_and_limits() {
        let size = |sps: Option<H265Sps>| sps.map(|s| (s.width, s.height));
        let plain = sps_with(&[], 1, (640, 480), [0; 4]);
        assert_eq!(size(H265Sps::parse(&plain)), Some((640, 480)));
        // Sub-layers with and without their profiles and levels; the general bytes stay.
        for layers in [
            &[(false, false)][..],
            &[(true, true), (false, true), (true, false)],
            &[(true, true); 6],
        ] {
            let sps = H265Sps::parse(&sps_with(layers, 1, (640, 480), [1, 2, 3, 4])).unwrap();
            assert_eq!((sps.width, sps.height), (640 - 6, 480 - 14), "{layers:?}");
            assert_eq!(sps.profile_tier_level[11], 0x5d);
        }
        // Monochrome and 4:4:4 crop in luma samples, 4:2:2 halves only widths.
        assert_eq!(
            size(H265Sps::parse(&sps_with(&[], 0, (64, 64), [1, 2, 3, 4]))),
            Some((61, 57))
        );
        assert_eq!(
            size(H265Sps::parse(&sps_with(&[], 3, (64, 64), [1, 2, 3, 4]))),
            Some((61, 57))
        );
        assert_eq!(
            size(H265Sps::parse(&sps_with(&[], 2, (64, 64), [1, 2, 3, 4]))),
            Some((58, 57))
        );
        assert_eq!(H265Sps::parse(&sps_with(&[], 4, (64, 64), [0; 4])), None);
        // Cropped to nothing, beyond the picture, 0, and above 65535 once cropped.
        assert_eq!(
            H265Sps::parse(&sps_with(&[], 1, (64, 64), [16, 16, 0, 0])),
            None
        );
        assert_eq!(
            H265Sps::parse(&sps_with(&[], 1, (64, 64), [0, 0, 40, 0])),
            None
        );
        assert_eq!(H265Sps::parse(&sps_with(&[], 1, (0, 64), [0; 4])), None);
        assert_eq!(H265Sps::parse(&sps_with(&[], 1, (65536, 64), [0; 4])), None);
        assert_eq!(
            H265Sps::parse(&sps_with(&[], 1, (65538, 64), [1, 0, 0, 0])),
            None
        );
        assert_eq!(
            size(H265Sps::parse(&sps_with(&[], 1, (65536, 64), [0, 1, 0, 0]))),
            Some((65534, 64))
        );
    }

    // x265's VPS and PPS for 320x240 and the start of its IDR_N_LP and TRAIL_R slices.
    const VPS: &[u8] = &[
        0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x3c, 0xba, 0x02, 0x40,
    ];
    const PPS: &[u8] = &[0x44, 0x01, 0xc0, 0x73, 0xc1, 0x89];
    const IDR: &[u8] = &[0x28, 0x01, 0xac, 0x21, 0x10, 0x2a, 0x2f, 0x68];
    const TRAIL_R: &[u8] = &[0x02, 0x01, 0xd0, 0x09, 0x78, 0x81, 0x08, 0x83];

    /// An aggregation packet of `nals`.
    fn ap(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![NAL_AP << 1, 0x01];
        for nal in nals {
            p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            p.extend_from_slice(nal);
        }
        p
    }

    /// A fragmentation unit of `nal` with S, E and the rest of `nal` after its header.
    fn fu(nal: &[u8], start: bool, end: bool) -> Vec<u8> {
        let fu_header = u8::from(start) << 7 | u8::from(end) << 6 | nal_type(nal[0]);
        let mut p = vec![NAL_FU << 1 | (nal[0] & 0x81), nal[1], fu_header];
        p.extend_from_slice(&nal[2..]);
        p
    }

    #[test]
    fn single_nal_unit_packets() {
        use crate::{is_keyframe, keyframe_size, VideoCodec::H265};
        assert!(is_keyframe(H265, IDR));
        assert!(is_keyframe(H265, VPS));
        assert!(is_keyframe(H265, SAMPLES[0].sps));
        assert!(!is_keyframe(H265, PPS));
        assert!(!is_keyframe(H265, TRAIL_R));
        // AUD, and a CRA (21) and a BLA_W_LP (16) slice header's first bytes.
        assert!(!is_keyframe(H265, &[NAL_AUD << 1, 0x01, 0x50]));
        assert!(is_keyframe(H265, &[0x2a, 0x01]));
        assert!(is_keyframe(H265, &[0x20, 0x01]));
        assert!(!is_keyframe(H265, &[]));
        for s in &SAMPLES {
            let size = (s.width as u16, s.height as u16);
            assert_eq!(keyframe_size(H265, s.sps), Some(size));
        }
        assert_eq!(keyframe_size(H265, VPS), None);
        assert_eq!(keyframe_size(H265, IDR), None);
        assert_eq!(keyframe_size(H265, &[]), None);
    }

    #[test]
    fn aggregation_packets() {
        use crate::{is_keyframe, keyframe_size, VideoCodec::H265};
        // The parameter sets x265 writes before each IDR picture, aggregated as senders do.
        let sets = ap(&[VPS, SAMPLES[1].sps, PPS]);
        assert!(is_keyframe(H265, &sets));
        assert_eq!(keyframe_size(H265, &sets), Some((322, 242)));
        assert_eq!(
            ApNalUnits::new(&sets).collect::<Vec<_>>(),
            [VPS, SAMPLES[1].sps, PPS]
        );
        // The SPS alone, after a PPS and an AUD.
        let late = ap(&[PPS, &[NAL_AUD << 1, 0x01, 0x50], SAMPLES[2].sps]);
        assert!(is_keyframe(H265, &late));
        assert_eq!(keyframe_size(H265, &late), Some((1920, 1080)));
        // No parameter sets or IRAP slices.
        let plain = ap(&[PPS, TRAIL_R]);
        assert!(!is_keyframe(H265, &plain));
        assert_eq!(keyframe_size(H265, &plain), None);
        // A size past the end, or too small for a NAL header: the walk stops there.
        let mut cut = sets.clone();
        cut.truncate(sets.len() - 1);
        assert_eq!(ApNalUnits::new(&cut).count(), 2);
        let past = ap(&[PPS]);
        let mut past = past[..3].to_vec();
        past.extend([0x40, 0x01]);
        assert!(!is_keyframe(H265, &past));
        let tiny = [NAL_AP << 1, 0x01, 0x00, 0x01, 0x40, 0x00, 0x02, 0x40, 0x01];
        assert!(!is_keyframe(H265, &tiny));
        assert_eq!(ApNalUnits::new(&tiny).count(), 0);
        for len in 0..sets.len() {
            let _ = (
                is_keyframe(H265, &sets[..len]),
                keyframe_size(H265, &sets[..len]),
            );
        }
    }

    #[test]
    fn fragmentation_units() {
        use crate::{is_keyframe, keyframe_size, VideoCodec::H265};
        let start = fu(IDR, true, false);
        assert_eq!(start[..3], [0x62, 0x01, 0x94]);
        assert!(is_keyframe(H265, &start));
        // The middle and last fragments of an IDR picture, and a TRAIL_R picture's first.
        assert!(!is_keyframe(H265, &fu(IDR, false, false)));
        assert!(!is_keyframe(H265, &fu(IDR, false, true)));
        assert!(!is_keyframe(H265, &fu(TRAIL_R, true, false)));
        assert!(!is_keyframe(H265, &start[..2]));
        assert_eq!(keyframe_size(H265, &start), None);
        // An SPS in fragments: the first one has its size, a later one does not.
        for s in &SAMPLES {
            let first = fu(s.sps, true, false);
            assert!(is_keyframe(H265, &first));
            let size = (s.width as u16, s.height as u16);
            assert_eq!(keyframe_size(H265, &first), Some(size));
            assert_eq!(keyframe_size(H265, &fu(s.sps, false, true)), None);
            for len in 0..first.len() {
                let cut = keyframe_size(H265, &first[..len]);
                assert!(cut.is_none() || cut == Some(size), "{len}");
            }
        }
    }
}
