//! Keyframe detection from RTP payloads, so a CDN can start a new player on a keyframe and
//! remember the last one without depacketizing, and the picture size a keyframe announces (VP8
//! frame header, H.264 and H.265 sequence parameter sets).

use crate::rbsp::RbspBits;

/// Video codecs whose payload format [`is_keyframe`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VideoCodec {
    /// VP8, RFC 7741.
    Vp8,
    /// VP9, RFC 9628.
    Vp9,
    /// H.264, RFC 6184 (packetization modes 0 and 1).
    H264,
    /// AV1, "RTP Payload Format For AV1" (AOM).
    Av1,
    /// H.265, RFC 7798.
    H265,
}

/// Whether this RTP payload starts a keyframe (or, for H.264, carries an SPS or IDR slice; for
/// H.265, a VPS, SPS or IRAP slice).
///
/// Looks only at payload headers; short or malformed payloads give `false`.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload).unwrap_or(false),
        VideoCodec::Vp9 => vp9(payload).unwrap_or(false),
        VideoCodec::H264 => h264(payload).unwrap_or(false),
        VideoCodec::Av1 => av1(payload),
        VideoCodec::H265 => crate::h265::payload_is_keyframe(payload).unwrap_or(false),
    }
}

/// RFC 7741 §4.2 payload descriptor, then the §4.3 payload header of the first partition.
fn vp8(p: &[u8]) -> Option<bool> {
    let Some(pos) = vp8_first_partition(p)? else {
        return Some(false);
    };
    // §4.3: the inverse key frame flag P is 0 for key frames.
    Some(*p.get(pos)? & 0x01 == 0)
}

/// Where the VP8 payload header starts (after the §4.2 descriptor) in the packet that begins a
/// frame's first partition; `Some(None)` for any other packet, `None` when it is cut short.
fn vp8_first_partition(p: &[u8]) -> Option<Option<usize>> {
    let b0 = *p.first()?;
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return Some(None);
    }
    let mut pos = 1;
    if b0 & 0x80 != 0 {
        // X: extension byte with I, L, T, K flags.
        let x = *p.get(pos)?;
        pos += 1;
        if x & 0x80 != 0 {
            // I: PictureID, 15 bits when its M bit is set.
            pos += if *p.get(pos)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            pos += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            pos += 1; // T or K: TID/Y/KEYIDX
        }
    }
    Some(Some(pos))
}

/// The picture size (width, height) a keyframe's packet announces: a VP8 keyframe's first packet
/// (RFC 6386 §9.1), an H.264 sequence parameter set (H.264 §7.3.2.1.1, alone, in a STAP-A or
/// starting an FU-A), an H.265 one (H.265 §7.3.2.2, alone, in an aggregation packet or starting
/// a fragmentation unit), a VP9 scalability structure (RFC 9628 §4.2.1, its highest spatial layer),
/// an AV1 sequence header OBU (its maximum frame size). `None` for other packets and malformed
/// input.
pub fn keyframe_size(codec: VideoCodec, payload: &[u8]) -> Option<(u16, u16)> {
    match codec {
        VideoCodec::Vp8 => {
            let pos = vp8_first_partition(payload)??;
            let frame = payload.get(pos..pos + 10)?;
            // A 3-byte frame tag with P clear, the start code, then 14-bit width and height
            // (the top two bits are the scaling mode).
            if frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
            let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
            (width > 0 && height > 0).then_some((width, height))
        }
        VideoCodec::H264 => h264_sps_size(payload),
        VideoCodec::Vp9 => vp9_ss_size(payload),
        VideoCodec::Av1 => crate::av1_sequence::sequence_header_size(payload),
        VideoCodec::H265 => crate::h265::payload_sps(payload)?.size(),
    }
}

/// The SPS of an H.264 RTP payload (RFC 6184), without its NAL header, and its size.
fn h264_sps_size(p: &[u8]) -> Option<(u16, u16)> {
    let nal_type = *p.first()? & 0x1F;
    match nal_type {
        NAL_SPS => sps_size(p.get(1..)?),
        NAL_STAP_A => {
            let mut rest = p.get(1..)?;
            while rest.len() >= 3 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + size)?;
                if nal.first().is_some_and(|h| h & 0x1F == NAL_SPS) {
                    return sps_size(&nal[1..]);
                }
                rest = &rest[2 + size..];
            }
            None
        }
        NAL_FU_A => {
            let fu = *p.get(1)?;
            (fu & 0x80 != 0 && fu & 0x1F == NAL_SPS)
                .then(|| sps_size(p.get(2..)?))
                .flatten()
        }
        _ => None,
    }
}

/// Width and height of an SPS's RBSP (after the NAL header), cropped (H.264 §7.3.2.1.1, §7.4.2.1.1).
fn sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    let mut r = RbspBits::new(sps);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.skip_se()?; // offset_for_non_ref_pic
            r.skip_se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.skip_se()?; // offset_for_ref_frame
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let mut crop = [0u64; 4];
    if r.bit()? == 1 {
        for c in &mut crop {
            *c = u64::from(r.ue()?);
        }
    }
    // Crop units (Table 6-1): 4:2:0 halves both ways, 4:2:2 horizontally; fields double rows.
    let chroma = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (sub_width, sub_height) = match chroma {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let unit_x = if chroma == 0 { 1 } else { sub_width };
    let unit_y = (2 - frame_mbs_only) * if chroma == 0 { 1 } else { sub_height };
    let width = (width_mbs * 16).checked_sub(unit_x * (crop[0] + crop[1]))?;
    let height =
        ((2 - frame_mbs_only) * height_map_units * 16).checked_sub(unit_y * (crop[2] + crop[3]))?;
    let width = u16::try_from(width).ok().filter(|w| *w > 0)?;
    let height = u16::try_from(height).ok().filter(|h| *h > 0)?;
    Some((width, height))
}

/// Skips a scaling_list() of `size` entries (§7.3.2.1.1.1).
fn skip_scaling_list(r: &mut RbspBits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let code = i64::from(r.ue()?);
            // se(v) from its ue(v) code: 1, -1, 2, -2, ...
            let delta = if code % 2 == 1 {
                (code + 1) / 2
            } else {
                -(code / 2)
            };
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The size of the highest spatial layer in a VP9 payload descriptor's scalability structure
/// (RFC 9628 §4.2.1), which senders put in a keyframe's first packet.
fn vp9_ss_size(p: &[u8]) -> Option<(u16, u16)> {
    crate::vp9::Vp9Descriptor::parse(p)?.size
}

/// RFC 9628 §4.2: a key frame has P (inter-picture predicted) clear in the first packet (B)
/// of the base spatial layer.
fn vp9(p: &[u8]) -> Option<bool> {
    let d = crate::vp9::Vp9Descriptor::parse(p)?;
    if d.inter_predicted || !d.begins_frame {
        return Some(false);
    }
    Some(d.spatial_id.unwrap_or(0) == 0)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// RFC 6184 §5.6 single NAL unit, §5.7.1 STAP-A and §5.8 FU-A.
fn h264(p: &[u8]) -> Option<bool> {
    let key = |t: u8| t == NAL_IDR || t == NAL_SPS;
    let nal_type = *p.first()? & 0x1F;
    match nal_type {
        NAL_STAP_A => {
            let mut rest = p.get(1..)?;
            while rest.len() >= 3 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if size == 0 {
                    return Some(false);
                }
                if key(rest[2] & 0x1F) {
                    return Some(true);
                }
                rest = rest.get(2 + size..)?;
            }
            Some(false)
        }
        NAL_FU_A => {
            let fu = *p.get(1)?;
            Some(fu & 0x80 != 0 && key(fu & 0x1F))
        }
        t => Some(key(t)),
    }
}

/// AV1 RTP spec §4.4 aggregation header Z|Y|W(2)|N|-: N marks the first packet of a coded
/// video sequence, which starts with a sequence header and a key frame.
fn av1(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_key_and_delta() {
        // S=1 PID=0, no extension; payload header 0x10 (P=0) then key frame start code.
        assert!(is_keyframe(
            VideoCodec::Vp8,
            &[0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]
        ));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x10, 0x11]));
        // X=1, I=1 with 15-bit picture id, L=1, T=1: 5 descriptor bytes before the header.
        assert!(is_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00]
        ));
        assert!(!is_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x01]
        ));
        // Not the first partition start.
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x00, 0x10]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x90, 0xe0, 0x80]));
    }

    #[test]
    fn vp9_keyframe_size_from_the_scalability_structure() {
        // I (15-bit picture id), B, V; SS: one spatial layer, Y, 640x360, no G.
        let key = [0x8A, 0x80, 0x01, 0x10, 0x02, 0x80, 0x01, 0x68, 0xAA];
        assert_eq!(keyframe_size(VideoCodec::Vp9, &key), Some((640, 360)));
        // L in non-flexible mode (layer byte + TL0PICIDX), three spatial layers: the last.
        let svc = [
            0xAA, 0x05, 0x00, 0x00, 0x50, 0x01, 0x40, 0x00, 0xB4, 0x02, 0x80, 0x01, 0x68, 0x05,
            0x00, 0x02, 0xD0,
        ];
        assert_eq!(keyframe_size(VideoCodec::Vp9, &svc), Some((1280, 720)));
        // Flexible mode with P and two P_DIFF bytes (a delta frame may carry an SS too).
        let flexible = [0x5A, 0x03, 0x04, 0x10, 0x01, 0x40, 0x00, 0xF0];
        assert_eq!(keyframe_size(VideoCodec::Vp9, &flexible), Some((320, 240)));
        // No V, or no Y: nothing to read.
        assert_eq!(keyframe_size(VideoCodec::Vp9, &[0x88, 0x01]), None);
        assert_eq!(keyframe_size(VideoCodec::Vp9, &[0x0A, 0x00]), None);
        for cut in 0..key.len() - 1 {
            assert_eq!(keyframe_size(VideoCodec::Vp9, &key[..cut]), None, "{cut}");
        }
    }

    #[test]
    fn vp8_keyframe_size() {
        // 640x360 with the scaling bits set on the width, after a 3-byte descriptor.
        let key = [
            0x90, 0x80, 0x05, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0x68, 0x01,
        ];
        assert_eq!(keyframe_size(VideoCodec::Vp8, &key), Some((640, 360)));
        let mut delta = key;
        delta[3] |= 0x01;
        assert_eq!(keyframe_size(VideoCodec::Vp8, &delta), None);
        let mut no_start_code = key;
        no_start_code[7] = 0;
        assert_eq!(keyframe_size(VideoCodec::Vp8, &no_start_code), None);
        for len in 0..key.len() {
            assert_eq!(keyframe_size(VideoCodec::Vp8, &key[..len]), None);
        }
        assert_eq!(keyframe_size(VideoCodec::H264, &[0x65, 0x88]), None);
    }

    // SPSs as x264 (through ffmpeg) wrote them, NAL header first, with the sizes it was given:
    // baseline 640x360 (cropped from 368 rows), high 1280x720, high 4:2:2 854x480 (cropped both
    // ways), high 4:4:4 1920x1080 progressive and interlaced (field pairs, cropped).
    const SPSS: [(&[u8], (u16, u16)); 5] = [
        (
            &[
                0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
                0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
            ],
            (640, 360),
        ),
        (
            &[
                0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
                0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
            ],
            (1280, 720),
        ),
        (
            &[
                0x67, 0x7a, 0x00, 0x1f, 0xbc, 0xd9, 0x40, 0xd8, 0x3d, 0xe6, 0xf0, 0x11, 0x00, 0x00,
                0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x18, 0x31, 0x96,
            ],
            (854, 480),
        ),
        (
            &[
                0x67, 0xf4, 0x00, 0x28, 0x91, 0x9b, 0x28, 0x0f, 0x00, 0x44, 0xfc, 0x4e, 0x02, 0x20,
                0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x07, 0x81, 0xe3, 0x06, 0x32, 0xc0,
            ],
            (1920, 1080),
        ),
        (
            &[
                0x67, 0xf4, 0x00, 0x28, 0x91, 0x9b, 0x28, 0x0f, 0x00, 0x89, 0xf9, 0x70, 0x11, 0x00,
                0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x1f, 0x16, 0x2d, 0x96,
            ],
            (1920, 1080),
        ),
    ];

    #[test]
    fn h264_sps_sizes() {
        for (sps, size) in SPSS {
            assert_eq!(keyframe_size(VideoCodec::H264, sps), Some(size), "{size:?}");
            // In a STAP-A after an SEI, and at the start of an FU-A.
            let mut stap = vec![0x78, 0x00, 0x02, 0x06, 0x05];
            stap.extend_from_slice(&(sps.len() as u16).to_be_bytes());
            stap.extend_from_slice(sps);
            assert_eq!(keyframe_size(VideoCodec::H264, &stap), Some(size));
            let mut fu = vec![0x7c, 0x87];
            fu.extend_from_slice(&sps[1..]);
            assert_eq!(keyframe_size(VideoCodec::H264, &fu), Some(size));
            // Cut anywhere: no panic; too short for the sizes: none.
            for len in 0..sps.len() {
                let cut = keyframe_size(VideoCodec::H264, &sps[..len]);
                assert!(cut.is_none() || cut == Some(size), "{len}");
            }
            assert_eq!(keyframe_size(VideoCodec::H264, &sps[..6]), None);
        }
        // An IDR slice has no size; nor has an SPS of zeros (its Exp-Golomb codes never end).
        assert_eq!(keyframe_size(VideoCodec::H264, &[0x65, 0x88, 0x84]), None);
        assert_eq!(
            keyframe_size(VideoCodec::H264, &[0x67, 0x42, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        // A STAP-A whose sizes run past its end.
        assert_eq!(
            keyframe_size(VideoCodec::H264, &[0x78, 0x00, 0x40, 0x67, 0x42]),
            None
        );
    }

    #[test]
    fn sizes_of_random_bytes_never_panic() {
        // A fixed LCG: the same bytes every run, nothing to install.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        };
        for round in 0..20_000 {
            let len = usize::from(next()) % 64;
            let mut p: Vec<u8> = (0..len).map(|_| next()).collect();
            // Steer the first bytes towards what is parsed: H.264 SPS, STAP-A, FU-A, H.265
            // SPS, AP, FU (FU headers starting an SPS), VP8 keyframes.
            match (round % 7, p.first_mut()) {
                (0, Some(b)) => *b = 0x67,
                (1, Some(b)) => *b = 0x78,
                (2, Some(b)) => *b = 0x7c,
                (3, Some(b)) => *b = 0x42,
                (4, Some(b)) => *b = 0x60,
                (5, Some(b)) => {
                    *b = 0x62;
                    if let Some(fu) = p.get_mut(2) {
                        *fu = 0xa1;
                    }
                }
                (_, Some(b)) => *b &= 0x97,
                (_, None) => {}
            }
            for codec in [VideoCodec::Vp8, VideoCodec::H264, VideoCodec::H265] {
                if let Some((w, h)) = keyframe_size(codec, &p) {
                    assert!(w > 0 && h > 0);
                }
            }
        }
    }

    #[test]
    fn vp9_key_and_delta() {
        // I=1 (7-bit id), B=1, P=0.
        assert!(is_keyframe(VideoCodec::Vp9, &[0x88, 0x12, 0x00]));
        // P=1.
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xc8, 0x12]));
        // Not beginning of frame.
        assert!(!is_keyframe(VideoCodec::Vp9, &[0x80, 0x12]));
        // L=1, picture id 15-bit, layer byte SID=0 / SID=1, TL0PICIDX (non-flexible mode).
        assert!(is_keyframe(
            VideoCodec::Vp9,
            &[0xa8, 0x80, 0x01, 0x00, 0x05]
        ));
        assert!(!is_keyframe(
            VideoCodec::Vp9,
            &[0xa8, 0x80, 0x01, 0x02, 0x05]
        ));
        // Cut short before TL0PICIDX.
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xa8, 0x80, 0x01, 0x00]));
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xa8, 0x80]));
    }

    #[test]
    fn h264_forms() {
        assert!(is_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(is_keyframe(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A with an SEI (6) then an SPS (7).
        assert!(is_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x67, 0x42]
        ));
        assert!(!is_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x06, 0x05, 0x00]
        ));
        assert!(!is_keyframe(VideoCodec::H264, &[0x78, 0x00, 0x09, 0x06]));
        // FU-A start of an IDR; continuation of an IDR is not a start.
        assert!(is_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c]));
    }

    #[test]
    fn av1_new_sequence() {
        assert!(is_keyframe(VideoCodec::Av1, &[0x18, 0x0a]));
        assert!(!is_keyframe(VideoCodec::Av1, &[0x10, 0x0a]));
    }

    #[test]
    fn empty_payloads_are_not_keyframes() {
        for c in [
            VideoCodec::Vp8,
            VideoCodec::Vp9,
            VideoCodec::H264,
            VideoCodec::Av1,
            VideoCodec::H265,
        ] {
            assert!(!is_keyframe(c, &[]));
        }
    }
}
