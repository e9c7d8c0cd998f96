//! The picture size an AV1 RTP packet's sequence header OBU announces ("RTP Payload Format For
//! AV1" §4.4 aggregation header and OBU elements; AV1 §5.5 sequence header OBU): the largest
//! frame of the coded video sequence, which WebRTC encoders set to the frame size they send
//! and send again when it changes.

use crate::av1_obu::{leb128, OBU_SEQUENCE_HEADER};

/// The size the first sequence header OBU in `payload` announces; `None` when the packet has
/// none (or it is cut short or malformed).
pub(crate) fn sequence_header_size(payload: &[u8]) -> Option<(u16, u16)> {
    let aggregation = *payload.first()?;
    let continues_fragment = aggregation & 0x80 != 0;
    let count = usize::from((aggregation >> 4) & 0x03);
    let mut rest = payload.get(1..)?;
    // Every element takes at least a byte, so this counts no further than the payload's length
    // (a u8 overflowed on a packet of 256 empty elements, found by the rtp_header fuzz target).
    let mut index = 0usize;
    while !rest.is_empty() {
        index += 1;
        // With W = 0 every element has a length; else all but the W-th.
        let element = if count == 0 || index < count {
            let (len, used) = leb128(rest)?;
            let len = usize::try_from(len).ok()?;
            let element = rest.get(used..used.checked_add(len)?)?;
            rest = &rest[used + len..];
            element
        } else {
            std::mem::take(&mut rest)
        };
        if index == 1 && continues_fragment {
            continue;
        }
        if let Some(size) = obu_sequence_size(element) {
            return Some(size);
        }
        if count != 0 && index >= count {
            break;
        }
    }
    None
}

/// A sequence header OBU's size, `None` for any other OBU.
fn obu_sequence_size(obu: &[u8]) -> Option<(u16, u16)> {
    let header = *obu.first()?;
    if (header >> 3) & 0x0F != OBU_SEQUENCE_HEADER {
        return None;
    }
    let mut pos = 1;
    if header & 0x04 != 0 {
        pos += 1; // the extension header
    }
    if header & 0x02 != 0 {
        // obu_has_size_field: RTP packets should not have one, but may.
        let (_, used) = leb128(obu.get(pos..)?)?;
        pos += used;
    }
    sequence_size(obu.get(pos..)?)
}

/// AV1 §5.5.1 `sequence_header_obu()`, up to `max_frame_height_minus_1`.
fn sequence_size(data: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits { data, pos: 0 };
    r.bits(3)?; // seq_profile
    r.bits(1)?; // still_picture
    let reduced_still_picture_header = r.bits(1)? == 1;
    if reduced_still_picture_header {
        r.bits(5)?; // seq_level_idx[0]
    } else {
        let timing_info_present = r.bits(1)? == 1;
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if timing_info_present {
            r.bits(32)?; // num_units_in_display_tick
            r.bits(32)?; // time_scale
            if r.bits(1)? == 1 {
                r.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info_present = r.bits(1)? == 1;
            if decoder_model_info_present {
                buffer_delay_length = r.bits(5)? + 1;
                r.bits(32)?; // num_units_in_decoding_tick
                r.bits(5)?; // buffer_removal_time_length_minus_1
                r.bits(5)?; // frame_presentation_time_length_minus_1
            }
        }
        let initial_display_delay_present = r.bits(1)? == 1;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.bits(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.bits(1)?; // seq_tier
            }
            if decoder_model_info_present && r.bits(1)? == 1 {
                r.bits(buffer_delay_length)?; // decoder_buffer_delay
                r.bits(buffer_delay_length)?; // encoder_buffer_delay
                r.bits(1)?; // low_delay_mode_flag
            }
            if initial_display_delay_present && r.bits(1)? == 1 {
                r.bits(4)?; // initial_display_delay_minus_1
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = u64::from(r.bits(width_bits)?) + 1;
    let height = u64::from(r.bits(height_bits)?) + 1;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

/// Big-endian bits, as AV1's `f(n)`.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |v, _| Some(v << 1 | self.bit()?))
    }

    /// AV1 §4.10.3 `uvlc()`; 32 or more leading zeros is taken as malformed.
    fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        Some(self.bits(zeros)? + ((1u32 << zeros) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence header OBU body for `width` x `height` (16 bits each), profile 0, one
    /// operating point, no timing info: what libaom writes for a WebRTC stream.
    fn sequence_header(width: u16, height: u16) -> Vec<u8> {
        let mut bits = Vec::new();
        let mut put = |value: u64, n: u32| {
            for i in (0..n).rev() {
                bits.push((value >> i) & 1 == 1);
            }
        };
        put(0, 3); // seq_profile
        put(0, 1); // still_picture
        put(0, 1); // reduced_still_picture_header
        put(0, 1); // timing_info_present_flag
        put(0, 1); // initial_display_delay_present_flag
        put(0, 5); // operating_points_cnt_minus_1
        put(0, 12); // operating_point_idc[0]
        put(8, 5); // seq_level_idx[0] = 4.0 (> 7: a tier bit follows)
        put(0, 1); // seq_tier[0]
        put(15, 4); // frame_width_bits_minus_1
        put(15, 4); // frame_height_bits_minus_1
        put(u64::from(width) - 1, 16);
        put(u64::from(height) - 1, 16);
        put(0, 7); // what follows, here only to fill the byte
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |b, &bit| b << 1 | u8::from(bit)))
            .collect()
    }

    #[test]
    fn a_sequence_header_in_its_own_element_gives_the_size() {
        let obu = [&[OBU_SEQUENCE_HEADER << 3][..], &sequence_header(1280, 720)].concat();
        // N=1, W=2: the sequence header with a length, then a frame OBU without one.
        let mut packet = vec![0x28, obu.len() as u8];
        packet.extend_from_slice(&obu);
        packet.extend_from_slice(&[6 << 3, 0xAA, 0xBB]);
        assert_eq!(sequence_header_size(&packet), Some((1280, 720)));
        // W=0: every element has a length.
        let mut packet = vec![0x08, obu.len() as u8];
        packet.extend_from_slice(&obu);
        assert_eq!(sequence_header_size(&packet), Some((1280, 720)));
    }

    #[test]
    fn packets_without_a_sequence_header_or_cut_short_give_nothing() {
        // A frame OBU alone (W=1).
        assert_eq!(sequence_header_size(&[0x10, 6 << 3, 1, 2, 3]), None);
        // The first element continues a fragment: not read as an OBU header.
        let obu = [&[OBU_SEQUENCE_HEADER << 3][..], &sequence_header(640, 360)].concat();
        let mut packet = vec![0x90];
        packet.extend_from_slice(&obu);
        assert_eq!(sequence_header_size(&packet), None);
        let whole = [&[0x10][..], &obu].concat();
        assert_eq!(sequence_header_size(&whole), Some((640, 360)));
        for cut in 0..whole.len() - 1 {
            assert_eq!(sequence_header_size(&whole[..cut]), None, "cut at {cut}");
        }
        // A length past the end, an endless LEB128.
        assert_eq!(sequence_header_size(&[0x00, 0x7F, 8]), None);
        assert_eq!(
            sequence_header_size(&[0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            None
        );
    }

    #[test]
    fn a_packet_of_hundreds_of_empty_elements_is_read_to_its_end() {
        // W=0, then 300 elements of length 0, then the sequence header.
        let obu = [&[OBU_SEQUENCE_HEADER << 3][..], &sequence_header(320, 240)].concat();
        let mut packet = vec![0x00];
        packet.extend(std::iter::repeat_n(0u8, 300));
        assert_eq!(sequence_header_size(&packet), None);
        packet.push(obu.len() as u8);
        packet.extend_from_slice(&obu);
        assert_eq!(sequence_header_size(&packet), Some((320, 240)));
    }

    #[test]
    fn timing_and_decoder_model_info_are_skipped() {
        let mut bits = Vec::new();
        let mut put = |value: u64, n: u32| {
            for i in (0..n).rev() {
                bits.push((value >> i) & 1 == 1);
            }
        };
        put(0, 3);
        put(0, 1);
        put(0, 1);
        put(1, 1); // timing_info_present_flag
        put(1, 32);
        put(90_000, 32);
        put(1, 1); // equal_picture_interval
        put(0b00101, 5); // uvlc: two zeros, then 1, then 01 -> 4
        put(1, 1); // decoder_model_info_present_flag
        put(9, 5); // buffer_delay_length_minus_1 -> 10 bits
        put(1, 32);
        put(0, 5);
        put(0, 5);
        put(1, 1); // initial_display_delay_present_flag
        put(0, 5); // one operating point
        put(0, 12);
        put(1, 5); // seq_level_idx 1: no tier bit
        put(1, 1); // decoder_model_present_for_this_op
        put(3, 10);
        put(3, 10);
        put(0, 1);
        put(1, 1); // initial_display_delay_present_for_this_op
        put(9, 4);
        put(10, 4); // 11-bit width
        put(10, 4); // 11-bit height
        put(1919, 11);
        put(1079, 11);
        bits.resize(bits.len().div_ceil(8) * 8, false);
        let body: Vec<u8> = bits
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |b, &bit| b << 1 | u8::from(bit)))
            .collect();
        // With an extension header and a size field this time.
        let mut packet = vec![
            0x10,
            OBU_SEQUENCE_HEADER << 3 | 0x06,
            0x00,
            body.len() as u8,
        ];
        packet.extend_from_slice(&body);
        assert_eq!(sequence_header_size(&packet), Some((1920, 1080)));
    }
}
