//! The picture size an AV1 RTP packet's sequence header OBU announces ("RTP Payload Format For
//! AV1" §4.4 aggregation header and OBU elements; AV1 §5.5 sequence header OBU): the largest
//! frame of the coded video sequence, which WebRTC encoders set to the frame size they send
//! and send again when it changes. [`Av1SequenceHeader`] reads on to the colour format, for
//! what a container's configuration record (`av1C`) says of the stream.

use crate::av1_obu::{leb128, RtpElements, OBU_SEQUENCE_HEADER};

/// The size the first sequence header OBU in `payload` announces; `None` when the packet has
/// none (or it is cut short or malformed).
pub(crate) fn sequence_header_size(payload: &[u8]) -> Option<(u16, u16)> {
    let (&aggregation, elements) = payload.split_first()?;
    let continues_fragment = aggregation & 0x80 != 0;
    let elements = RtpElements::new(aggregation, elements);
    // The first element continuing a fragment is not a whole OBU.
    let whole = elements.skip(usize::from(continues_fragment));
    for element in whole {
        if let Some(size) = obu_sequence_size(element.ok()?) {
            return Some(size);
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
    let mut r = Bits {
        data: obu.get(pos..)?,
        pos: 0,
    };
    let start = Start::read(&mut r)?;
    Some((
        u16::try_from(start.max_frame_width).ok()?,
        u16::try_from(start.max_frame_height).ok()?,
    ))
}

/// What a sequence header OBU says that a container or a relay needs (AV1 §5.5.1, §5.5.2):
/// profile, level and tier of the first operating point, the layers the operating points
/// span, the largest frame, and the colour format. [`Av1SequenceHeader::parse`] reads the
/// OBU's payload (after the OBU header and any size field) up to the end of `color_config()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Av1SequenceHeader {
    /// `seq_profile`: 0 main, 1 high, 2 professional.
    pub seq_profile: u8,
    /// `still_picture`.
    pub still_picture: bool,
    /// `reduced_still_picture_header`: frame headers then carry no frame type (every frame is
    /// a key frame).
    pub reduced_still_picture_header: bool,
    /// `seq_level_idx[0]`.
    pub seq_level_idx_0: u8,
    /// `seq_tier[0]`.
    pub seq_tier_0: bool,
    /// `initial_display_delay_minus_1[0]`, when present.
    pub initial_display_delay_minus_1_0: Option<u8>,
    /// `operating_points_cnt_minus_1 + 1`.
    pub operating_points: u8,
    /// The most spatial layers one operating point decodes (bits 8..=11 of
    /// `operating_point_idc`); 1 when there are none above the base (an idc of 0).
    pub spatial_layers: u8,
    /// `max_frame_width_minus_1 + 1`.
    pub max_frame_width: u32,
    /// `max_frame_height_minus_1 + 1`.
    pub max_frame_height: u32,
    /// `high_bitdepth`.
    pub high_bitdepth: bool,
    /// `twelve_bit` (profile 2 only).
    pub twelve_bit: bool,
    /// `mono_chrome`.
    pub mono_chrome: bool,
    /// `color_primaries` (2, unspecified, when not described).
    pub color_primaries: u8,
    /// `transfer_characteristics` (2 when not described).
    pub transfer_characteristics: u8,
    /// `matrix_coefficients` (2 when not described).
    pub matrix_coefficients: u8,
    /// `color_range`: full range.
    pub color_range: bool,
    /// `subsampling_x`.
    pub subsampling_x: bool,
    /// `subsampling_y`.
    pub subsampling_y: bool,
    /// `chroma_sample_position` (0, unknown, unless 4:2:0 says it).
    pub chroma_sample_position: u8,
}

impl Av1SequenceHeader {
    /// Reads a sequence header OBU's payload; `None` when it is cut short or malformed.
    pub fn parse(payload: &[u8]) -> Option<Av1SequenceHeader> {
        let mut r = Bits {
            data: payload,
            pos: 0,
        };
        let start = Start::read(&mut r)?;
        skip_tools(&mut r, start.reduced_still_picture_header)?;
        let mut header = Av1SequenceHeader {
            seq_profile: start.seq_profile,
            still_picture: start.still_picture,
            reduced_still_picture_header: start.reduced_still_picture_header,
            seq_level_idx_0: start.seq_level_idx_0,
            seq_tier_0: start.seq_tier_0,
            initial_display_delay_minus_1_0: start.initial_display_delay_minus_1_0,
            operating_points: start.operating_points,
            spatial_layers: start.spatial_layers,
            max_frame_width: start.max_frame_width,
            max_frame_height: start.max_frame_height,
            high_bitdepth: false,
            twelve_bit: false,
            mono_chrome: false,
            color_primaries: 2,
            transfer_characteristics: 2,
            matrix_coefficients: 2,
            color_range: false,
            subsampling_x: true,
            subsampling_y: true,
            chroma_sample_position: 0,
        };
        header.read_color_config(&mut r)?;
        Some(header)
    }

    /// AV1 §5.5.2 `color_config()`, up to `separate_uv_delta_q`.
    fn read_color_config(&mut self, r: &mut Bits<'_>) -> Option<()> {
        self.high_bitdepth = r.flag()?;
        if self.seq_profile == 2 && self.high_bitdepth {
            self.twelve_bit = r.flag()?;
        }
        self.mono_chrome = self.seq_profile != 1 && r.flag()?;
        if r.flag()? {
            // color_description_present_flag
            self.color_primaries = r.bits(8)? as u8;
            self.transfer_characteristics = r.bits(8)? as u8;
            self.matrix_coefficients = r.bits(8)? as u8;
        }
        if self.mono_chrome {
            self.color_range = r.flag()?;
            return Some(());
        }
        // BT.709 primaries, sRGB transfer, identity matrix: 4:4:4, full range, nothing read.
        let description = (
            self.color_primaries,
            self.transfer_characteristics,
            self.matrix_coefficients,
        );
        if description == (1, 13, 0) {
            self.color_range = true;
            (self.subsampling_x, self.subsampling_y) = (false, false);
            return Some(());
        }
        self.color_range = r.flag()?;
        (self.subsampling_x, self.subsampling_y) = match self.seq_profile {
            0 => (true, true),
            1 => (false, false),
            _ if self.twelve_bit => {
                let x = r.flag()?;
                (x, x && r.flag()?)
            }
            _ => (true, false),
        };
        if self.subsampling_x && self.subsampling_y {
            self.chroma_sample_position = r.bits(2)? as u8;
        }
        Some(())
    }
}

/// `sequence_header_obu()` up to `max_frame_height_minus_1`: what both the size and the
/// whole header need.
struct Start {
    seq_profile: u8,
    still_picture: bool,
    reduced_still_picture_header: bool,
    seq_level_idx_0: u8,
    seq_tier_0: bool,
    initial_display_delay_minus_1_0: Option<u8>,
    operating_points: u8,
    spatial_layers: u8,
    max_frame_width: u32,
    max_frame_height: u32,
}

impl Start {
    /// AV1 §5.5.1 `sequence_header_obu()`, up to `max_frame_height_minus_1`.
    fn read(r: &mut Bits<'_>) -> Option<Start> {
        let mut start = Start {
            seq_profile: r.bits(3)? as u8,
            still_picture: r.flag()?,
            reduced_still_picture_header: r.flag()?,
            seq_level_idx_0: 0,
            seq_tier_0: false,
            initial_display_delay_minus_1_0: None,
            operating_points: 1,
            spatial_layers: 1,
            max_frame_width: 0,
            max_frame_height: 0,
        };
        if start.reduced_still_picture_header {
            start.seq_level_idx_0 = r.bits(5)? as u8;
        } else {
            start.read_operating_points(r)?;
        }
        let width_bits = r.bits(4)? + 1;
        let height_bits = r.bits(4)? + 1;
        // At most 16 bits each: adding one cannot overflow.
        start.max_frame_width = r.bits(width_bits)? + 1;
        start.max_frame_height = r.bits(height_bits)? + 1;
        Some(start)
    }

    /// Timing and decoder model info, then each operating point's idc, level, tier and
    /// delays.
    fn read_operating_points(&mut self, r: &mut Bits<'_>) -> Option<()> {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if r.flag()? {
            // timing_info_present_flag
            r.bits(32)?; // num_units_in_display_tick
            r.bits(32)?; // time_scale
            if r.flag()? {
                r.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info_present = r.flag()?;
            if decoder_model_info_present {
                buffer_delay_length = r.bits(5)? + 1;
                r.bits(32)?; // num_units_in_decoding_tick
                r.bits(5)?; // buffer_removal_time_length_minus_1
                r.bits(5)?; // frame_presentation_time_length_minus_1
            }
        }
        let initial_display_delay_present = r.flag()?;
        self.operating_points = r.bits(5)? as u8 + 1;
        for i in 0..self.operating_points {
            let idc = r.bits(12)?;
            let spatial = ((idc >> 8) & 0x0F).count_ones() as u8;
            self.spatial_layers = self.spatial_layers.max(spatial);
            let level = r.bits(5)? as u8;
            let tier = level > 7 && r.flag()?;
            if decoder_model_info_present && r.flag()? {
                r.bits(buffer_delay_length)?; // decoder_buffer_delay
                r.bits(buffer_delay_length)?; // encoder_buffer_delay
                r.bits(1)?; // low_delay_mode_flag
            }
            let mut delay = None;
            if initial_display_delay_present && r.flag()? {
                delay = Some(r.bits(4)? as u8);
            }
            if i == 0 {
                (self.seq_level_idx_0, self.seq_tier_0) = (level, tier);
                self.initial_display_delay_minus_1_0 = delay;
            }
        }
        Some(())
    }
}

/// AV1 §5.5.1 from `frame_id_numbers_present_flag` to `enable_restoration`: the coding tools,
/// none of which a relay needs.
fn skip_tools(r: &mut Bits<'_>, reduced_still_picture_header: bool) -> Option<()> {
    if !reduced_still_picture_header && r.flag()? {
        r.bits(4)?; // delta_frame_id_length_minus_2
        r.bits(3)?; // additional_frame_id_length_minus_1
    }
    r.bits(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if !reduced_still_picture_header {
        // enable_interintra_compound, enable_masked_compound, enable_warped_motion,
        // enable_dual_filter
        r.bits(4)?;
        let enable_order_hint = r.flag()?;
        if enable_order_hint {
            r.bits(2)?; // enable_jnt_comp, enable_ref_frame_mvs
        }
        // seq_choose_screen_content_tools, else seq_force_screen_content_tools
        let screen_content_tools = r.flag()? || r.flag()?;
        // seq_choose_integer_mv, else seq_force_integer_mv
        if screen_content_tools && !r.flag()? {
            r.bits(1)?;
        }
        if enable_order_hint {
            r.bits(3)?; // order_hint_bits_minus_1
        }
    }
    r.bits(3)?; // enable_superres, enable_cdef, enable_restoration
    Some(())
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

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
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

    /// Bits, most significant first, into bytes (the last one padded with zeros).
    fn pack(put: impl FnOnce(&mut dyn FnMut(u64, u32))) -> Vec<u8> {
        let mut bits = Vec::new();
        put(&mut |value: u64, n: u32| {
            for i in (0..n).rev() {
                bits.push((value >> i) & 1 == 1);
            }
        });
        bits.resize(bits.len().div_ceil(8) * 8, false);
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |b, &bit| b << 1 | u8::from(bit)))
            .collect()
    }

    #[test]
    fn the_whole_header_gives_level_tier_and_colour_format() {
        let body = pack(|put| {
            put(0, 3); // seq_profile
            put(0, 2); // still_picture, reduced_still_picture_header
            put(0, 1); // timing_info_present_flag
            put(1, 1); // initial_display_delay_present_flag
            put(1, 5); // two operating points
            put(0x301, 12); // two spatial layers, temporal layer 0
            put(9, 5); // seq_level_idx 4.1
            put(1, 1); // seq_tier: high
            put(1, 1); // initial_display_delay_present_for_this_op
            put(9, 4);
            put(0x101, 12); // the base layer alone
            put(8, 5);
            put(0, 1);
            put(0, 1);
            put(10, 4);
            put(9, 4);
            put(1279, 11);
            put(719, 10);
            put(1, 1); // frame_id_numbers_present_flag
            put(0, 7); // their lengths
            put(0b101, 3); // superblock, filter intra, intra edge
            put(0, 4);
            put(1, 1); // enable_order_hint
            put(0, 2);
            put(0, 1); // seq_choose_screen_content_tools
            put(1, 1); // seq_force_screen_content_tools
            put(0, 1); // seq_choose_integer_mv
            put(1, 1); // seq_force_integer_mv
            put(6, 3); // order_hint_bits_minus_1
            put(0b011, 3); // superres, cdef, restoration
            put(0, 1); // high_bitdepth
            put(0, 1); // mono_chrome
            put(1, 1); // color_description_present_flag
            put(1, 8);
            put(1, 8);
            put(1, 8);
            put(1, 1); // color_range
            put(2, 2); // chroma_sample_position: colocated
            put(0, 2); // separate_uv_delta_q, film_grain_params_present
        });
        let header = Av1SequenceHeader::parse(&body).unwrap();
        assert_eq!(
            header,
            Av1SequenceHeader {
                seq_profile: 0,
                still_picture: false,
                reduced_still_picture_header: false,
                seq_level_idx_0: 9,
                seq_tier_0: true,
                initial_display_delay_minus_1_0: Some(9),
                operating_points: 2,
                spatial_layers: 2,
                max_frame_width: 1280,
                max_frame_height: 720,
                high_bitdepth: false,
                twelve_bit: false,
                mono_chrome: false,
                color_primaries: 1,
                transfer_characteristics: 1,
                matrix_coefficients: 1,
                color_range: true,
                subsampling_x: true,
                subsampling_y: true,
                chroma_sample_position: 2,
            }
        );
        // Cut anywhere before color_config ends: nothing.
        for cut in 0..body.len() - 1 {
            assert_eq!(Av1SequenceHeader::parse(&body[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn profile_2_at_twelve_bits_reads_its_subsampling_and_sparse_headers_their_defaults() {
        let body = pack(|put| {
            put(2, 3); // seq_profile 2
            put(0b11, 2); // still_picture, reduced_still_picture_header
            put(3, 5); // seq_level_idx[0]
            put(7, 4);
            put(7, 4);
            put(255, 8);
            put(127, 8);
            put(0b010, 3); // no frame id numbers to read; the three tools
            put(0b000, 3); // superres, cdef, restoration
            put(1, 1); // high_bitdepth
            put(1, 1); // twelve_bit
            put(0, 1); // mono_chrome
            put(0, 1); // no colour description
            put(0, 1); // color_range
            put(1, 1); // subsampling_x
            put(0, 1); // subsampling_y: 4:2:2, no sample position
            put(0, 2);
        });
        let header = Av1SequenceHeader::parse(&body).unwrap();
        assert_eq!(
            (
                header.seq_profile,
                header.seq_level_idx_0,
                header.seq_tier_0
            ),
            (2, 3, false)
        );
        assert!(header.reduced_still_picture_header && header.still_picture);
        assert_eq!(
            (header.max_frame_width, header.max_frame_height),
            (256, 128)
        );
        assert!(header.high_bitdepth && header.twelve_bit && !header.mono_chrome);
        assert_eq!(
            (
                header.subsampling_x,
                header.subsampling_y,
                header.chroma_sample_position
            ),
            (true, false, 0)
        );
        assert_eq!(
            (
                header.color_primaries,
                header.operating_points,
                header.spatial_layers
            ),
            (2, 1, 1)
        );
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
        // The whole header stops short of color_config here.
        assert_eq!(Av1SequenceHeader::parse(&body), None);
    }
}
