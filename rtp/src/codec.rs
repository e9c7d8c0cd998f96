//! Keyframe detection from RTP payloads, so a CDN can start a new player on a keyframe and
//! remember the last one without depacketizing, and the picture size a VP8 keyframe announces.

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
}

/// Whether this RTP payload starts a keyframe (or, for H.264, carries an SPS or IDR slice).
///
/// Looks only at payload headers; short or malformed payloads give `false`.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload).unwrap_or(false),
        VideoCodec::Vp9 => vp9(payload).unwrap_or(false),
        VideoCodec::H264 => h264(payload).unwrap_or(false),
        VideoCodec::Av1 => av1(payload),
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

/// The picture size (width, height) a keyframe's first packet announces, where the codec puts
/// it in the first bytes of the frame: VP8 (RFC 6386 §9.1). `None` for other packets, other
/// codecs (their sizes sit in parameter sets this crate does not parse) and malformed input.
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
        VideoCodec::Vp9 | VideoCodec::H264 | VideoCodec::Av1 => None,
    }
}

/// RFC 9628 §4.2: a key frame has P (inter-picture predicted) clear in the first packet (B)
/// of the base spatial layer.
fn vp9(p: &[u8]) -> Option<bool> {
    let b0 = *p.first()?;
    let picture_id = b0 & 0x80 != 0;
    let inter_predicted = b0 & 0x40 != 0;
    let layer_indices = b0 & 0x20 != 0;
    let begins_frame = b0 & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return Some(false);
    }
    if !layer_indices {
        return Some(true);
    }
    let mut pos = 1;
    if picture_id {
        pos += if *p.get(pos)? & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer index: TID(3) U(1) SID(3) D(1); the picture starts at spatial layer 0.
    let sid = (*p.get(pos)? >> 1) & 0x07;
    Some(sid == 0)
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

    #[test]
    fn vp9_key_and_delta() {
        // I=1 (7-bit id), B=1, P=0.
        assert!(is_keyframe(VideoCodec::Vp9, &[0x88, 0x12, 0x00]));
        // P=1.
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xc8, 0x12]));
        // Not beginning of frame.
        assert!(!is_keyframe(VideoCodec::Vp9, &[0x80, 0x12]));
        // L=1, picture id 15-bit, layer byte SID=0 / SID=1.
        assert!(is_keyframe(VideoCodec::Vp9, &[0xa8, 0x80, 0x01, 0x00]));
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xa8, 0x80, 0x01, 0x02]));
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
        ] {
            assert!(!is_keyframe(c, &[]));
        }
    }
}
