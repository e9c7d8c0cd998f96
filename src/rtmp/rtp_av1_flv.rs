//! [`RtpAv1ToFlv`]: a stream's AV1 RTP ("RTP Payload Format For AV1", AOM) as Enhanced RTMP
//! video (`av01`), sans-IO, for an origin's RTMP push to an edge: plain RTP packets in, in
//! order as the publisher sent them; a sequence start (an AV1CodecConfigurationRecord, `av1C`,
//! built from the sequence header OBU) and temporal units out, timed in milliseconds since the
//! first one.
//!
//! A temporal unit is every packet of one RTP timestamp, up to the marker bit (or the next
//! timestamp). Its OBU elements (§4.4: the aggregation header's Z, Y and W; each element one
//! OBU, or a fragment of one continued in the next packet) are put back together and written
//! in the low overhead bitstream format, every OBU with `obu_has_size_field` set and its size,
//! as an MP4 sample has them ("AV1 Codec ISO Media File Format Binding" §2.4), which is what
//! Enhanced RTMP carries. Temporal delimiters, tile lists and padding go, as both formats say
//! they should (RTP senders mostly drop them already).
//!
//! A temporal unit is a keyframe when it holds a sequence header and its first frame header is
//! a key frame (what the N bit marks; the bit itself is not trusted). A lost packet (a gap in
//! the sequence numbers), an OBU cut short or a malformed element drops the temporal unit and
//! every one after it until the next keyframe: a player cannot decode across the hole. The
//! sequence start goes before the first keyframe and again before a keyframe whose sequence
//! header changed. A temporal unit past [`MAX_ACCESS_UNIT`] bytes is dropped like a loss.
//!
//! Spatial layers (an OBU extension with a spatial id above 0, or a sequence header whose
//! operating points span several) are said by [`RtpAv1ToFlv::layered`]: RTMP carries one
//! picture per temporal unit, so only the base layer would reach the edge; the push gives such
//! a stream back to a WebRTC relay. Temporal layers go on as they are: each temporal unit is
//! still one picture.

use rtp::av1_obu::{
    leb128_len, write_leb128, ObuIter, RtpElements, LEB128_MAX, OBU_FRAME, OBU_FRAME_HEADER,
    OBU_PADDING, OBU_SEQUENCE_HEADER, OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST,
};
use rtp::Av1SequenceHeader;

use super::flv::{
    Av1Config, FOURCC_AV1, VIDEO_EX_HEADER, VIDEO_FRAME_INTER, VIDEO_FRAME_KEY,
    VIDEO_PACKET_CODED_FRAMES, VIDEO_PACKET_SEQUENCE_START,
};
use super::rtp_flv::{FlvClock, FlvVideo, RtpToFlvCounters, SourceOrder, MAX_ACCESS_UNIT};

/// ExVideoTagHeader: the first byte and the FourCC.
const FLV_HEADER: usize = 5;

/// `obu_has_size_field` in an OBU header.
const OBU_HAS_SIZE: u8 = 0x02;

/// Why a packet's elements could not be put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    /// An element's length runs past the packet.
    Length,
    /// A fragment's start was never seen, or a fragment never ended.
    Fragment,
    /// The OBU does not read: a forbidden bit, a size field past its element.
    Obu,
    /// The temporal unit grew past the bound.
    TooLarge,
}

/// One stream's AV1 video (see the module docs).
pub struct RtpAv1ToFlv {
    order: SourceOrder,
    waiting_for_keyframe: bool,
    /// The temporal unit being put together: an ExVideoTagHeader, then OBUs with their sizes.
    unit: Vec<u8>,
    unit_time: Option<u32>,
    /// Packets of this timestamp are dropped: their temporal unit lost its start or a middle.
    skipping: Option<u32>,
    /// The timestamp of the last packet taken.
    last_time: Option<u32>,
    /// The OBU whose fragments are being put together, as RTP carries it.
    fragment: Vec<u8>,
    fragment_open: bool,
    /// The unit's first sequence header: where it sits in `unit`, and what it says.
    sequence: Option<(std::ops::Range<usize>, Av1SequenceHeader)>,
    /// Whether the unit's first frame header is a key frame's (none seen yet: `None`).
    first_frame_key: Option<bool>,
    /// The sequence header OBU of the last sequence start sent.
    sent: Option<Vec<u8>>,
    layered: bool,
    clock: FlvClock,
    pub counters: RtpToFlvCounters,
}

impl RtpAv1ToFlv {
    /// A depacketizer of the AV1 packets of payload type `pt`.
    pub fn new(pt: u8) -> RtpAv1ToFlv {
        RtpAv1ToFlv {
            order: SourceOrder::new(pt),
            waiting_for_keyframe: true,
            unit: Vec::new(),
            unit_time: None,
            skipping: None,
            last_time: None,
            fragment: Vec::new(),
            fragment_open: false,
            sequence: None,
            first_frame_key: None,
            sent: None,
            layered: false,
            clock: FlvClock::default(),
            counters: RtpToFlvCounters::default(),
        }
    }

    /// Whether temporal units are dropped until the next keyframe (a loss, or none came yet).
    pub fn waits_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Whether the stream showed spatial layers (see the module docs).
    pub fn layered(&self) -> bool {
        self.layered
    }

    /// Temporal units are dropped until the next keyframe (packets were dropped before they
    /// came here).
    pub fn resync(&mut self) {
        self.lose();
    }

    /// One plain RTP packet; `out` gets what it completes.
    pub fn push(&mut self, packet: &[u8], mut out: impl FnMut(FlvVideo)) {
        let Some((header, lost)) = self
            .order
            .admit(packet, &mut self.counters, &mut self.clock)
        else {
            return;
        };
        let time = header.timestamp();
        let payload = header.payload();
        if payload.is_empty() {
            // Padding alone: no element to read, and nothing of the unit missing.
            self.counters.ignored += 1;
            return;
        }
        let continues = payload.first().is_some_and(|a| a & 0x80 != 0);
        if lost {
            // The unit the lost packets belonged to is gone; so is this one if it is the same
            // unit, or continues an OBU begun in them.
            self.lose();
            if self.last_time == Some(time) || continues {
                self.skipping = Some(time);
            }
        }
        self.last_time = Some(time);
        if self.unit_time.is_some_and(|t| t != time) {
            // The marker bit never came, though nothing is missing: the unit ended before.
            self.finish(&mut out);
        }
        if self.skipping == Some(time) {
            return;
        }
        self.skipping = None;
        if self.unit_time.is_none() {
            if continues {
                // The stream's first packet, in the middle of a unit.
                self.skipping = Some(time);
                return;
            }
            self.begin(time);
        }
        if let Err(why) = self.read_payload(payload) {
            tracing::trace!(?why, "AV1 RTP packet dropped");
            self.counters.ignored += 1;
            self.lose();
            self.skipping = Some(time);
            return;
        }
        if header.marker() {
            self.finish(&mut out);
        }
    }

    /// A new temporal unit at RTP time `time`.
    fn begin(&mut self, time: u32) {
        self.unit.clear();
        self.unit.extend_from_slice(&[0; FLV_HEADER]);
        self.unit_time = Some(time);
        self.sequence = None;
        self.first_frame_key = None;
    }

    /// The aggregation header and the OBU elements after it (§4.4): with W = 0 each element
    /// has its length first, else all but the W-th (the last).
    fn read_payload(&mut self, payload: &[u8]) -> Result<(), Malformed> {
        let (&aggregation, elements) = payload.split_first().ok_or(Malformed::Length)?;
        let continues = aggregation & 0x80 != 0;
        let continued = aggregation & 0x40 != 0;
        let mut elements = RtpElements::new(aggregation, elements);
        let mut index = 0usize;
        while let Some(element) = elements.next() {
            let element = element.map_err(|_| Malformed::Length)?;
            index += 1;
            let last = elements.is_empty();
            self.element(element, index == 1 && continues, last && continued)?;
        }
        // No elements at all: only a fragment going on through the packet makes sense.
        if index == 0 && (continues != continued || continues != self.fragment_open) {
            return Err(Malformed::Fragment);
        }
        Ok(())
    }

    /// One OBU element: a whole OBU, or a fragment (the first of the packet `continues` one,
    /// the last is `continued` in the next packet).
    fn element(
        &mut self,
        element: &[u8],
        continues: bool,
        continued: bool,
    ) -> Result<(), Malformed> {
        if continues != self.fragment_open {
            return Err(Malformed::Fragment);
        }
        if !continues && !continued {
            return self.obu(element);
        }
        if self.fragment.len().saturating_add(element.len()) > MAX_ACCESS_UNIT {
            return Err(Malformed::TooLarge);
        }
        if !continues {
            self.fragment.clear();
        }
        self.fragment.extend_from_slice(element);
        self.fragment_open = continued;
        if continued {
            return Ok(());
        }
        let fragment = std::mem::take(&mut self.fragment);
        let result = self.obu(&fragment);
        self.fragment = fragment;
        self.fragment.clear();
        result
    }

    /// One whole OBU, as RTP carries it (a size field or not), into the unit with its size;
    /// what the unit needs to know of it noted.
    fn obu(&mut self, element: &[u8]) -> Result<(), Malformed> {
        // An element is one OBU: anything after a size field's end is not read.
        let Some(obu) = ObuIter::new(element).next() else {
            // An empty element: nothing to keep.
            return Ok(());
        };
        let obu = obu.map_err(|_| Malformed::Obu)?;
        if obu.extension.is_some_and(|e| (e >> 3) & 0x03 > 0) {
            // A spatial layer above the base: noted, and not passed on.
            self.layered = true;
            return Ok(());
        }
        let kind = obu.obu_type();
        if matches!(kind, OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING) {
            return Ok(());
        }
        let payload = obu.payload;
        let extension = obu.extension.as_slice();
        let grown = self.unit.len() + 1 + extension.len() + leb128_len(payload.len());
        if grown + payload.len() > MAX_ACCESS_UNIT + FLV_HEADER {
            return Err(Malformed::TooLarge);
        }
        let start = self.unit.len();
        self.unit.push(obu.header | OBU_HAS_SIZE);
        self.unit.extend_from_slice(extension);
        let mut size = [0; LEB128_MAX];
        let used = write_leb128(payload.len(), &mut size);
        self.unit.extend_from_slice(&size[..used]);
        self.unit.extend_from_slice(payload);
        match kind {
            OBU_SEQUENCE_HEADER if self.sequence.is_none() => {
                if let Some(sequence) = Av1SequenceHeader::parse(payload) {
                    self.layered |= sequence.spatial_layers > 1;
                    self.sequence = Some((start..self.unit.len(), sequence));
                }
            }
            OBU_FRAME_HEADER | OBU_FRAME if self.first_frame_key.is_none() => {
                let reduced = self
                    .sequence
                    .as_ref()
                    .is_some_and(|(_, s)| s.reduced_still_picture_header);
                self.first_frame_key = Some(is_key_frame(payload, reduced));
            }
            _ => {}
        }
        Ok(())
    }

    /// Drops the unit being put together; the next one that counts is a keyframe.
    fn lose(&mut self) {
        if self.unit_time.take().is_some() {
            self.counters.skipped += 1;
        }
        self.unit.clear();
        self.fragment.clear();
        self.fragment_open = false;
        self.waiting_for_keyframe = true;
    }

    /// The unit is complete: out it goes (after a sequence start, when the keyframe's
    /// sequence header is new), unless it waits for a keyframe.
    fn finish(&mut self, out: &mut impl FnMut(FlvVideo)) {
        if self.fragment_open {
            // Its last OBU never ended.
            return self.lose();
        }
        let Some(time) = self.unit_time.take() else {
            return;
        };
        let key = self.sequence.is_some() && self.first_frame_key == Some(true);
        if self.first_frame_key.is_none() || (self.waiting_for_keyframe && !key) {
            self.counters.skipped += 1;
            self.unit.clear();
            return;
        }
        self.waiting_for_keyframe = false;
        let timestamp_ms = self.clock.ms(time);
        if let Some((range, sequence)) = self.sequence.as_ref().filter(|_| key) {
            let obu = &self.unit[range.clone()];
            if self.sent.as_deref() != Some(obu) {
                out(sequence_start(timestamp_ms, sequence, obu));
                self.sent = Some(obu.to_vec());
            }
        }
        let mut unit = std::mem::take(&mut self.unit);
        let frame_type = if key {
            VIDEO_FRAME_KEY
        } else {
            VIDEO_FRAME_INTER
        };
        unit[0] = VIDEO_EX_HEADER | frame_type << 4 | VIDEO_PACKET_CODED_FRAMES;
        unit[1..FLV_HEADER].copy_from_slice(&FOURCC_AV1);
        self.counters.frames += 1;
        self.counters.keyframes += u64::from(key);
        out(FlvVideo::Frame {
            timestamp_ms,
            keyframe: key,
            body: unit,
        });
    }
}

/// The `av01` sequence start for `sequence`, whose OBU (with its size field) is `obu`, and
/// the picture size its largest frame says.
fn sequence_start(timestamp_ms: u32, sequence: &Av1SequenceHeader, obu: &[u8]) -> FlvVideo {
    let config = Av1Config {
        seq_profile: sequence.seq_profile,
        seq_level_idx_0: sequence.seq_level_idx_0,
        seq_tier_0: sequence.seq_tier_0,
        high_bitdepth: sequence.high_bitdepth,
        twelve_bit: sequence.twelve_bit,
        monochrome: sequence.mono_chrome,
        chroma_subsampling_x: sequence.subsampling_x,
        chroma_subsampling_y: sequence.subsampling_y,
        chroma_sample_position: sequence.chroma_sample_position,
        // As ffmpeg writes it: the decoder model's delay is not the container's.
        initial_presentation_delay_minus_one: None,
        config_obus: obu,
    };
    let mut body = vec![VIDEO_EX_HEADER | VIDEO_FRAME_KEY << 4 | VIDEO_PACKET_SEQUENCE_START];
    body.extend_from_slice(&FOURCC_AV1);
    body.extend_from_slice(&config.write());
    let size = u16::try_from(sequence.max_frame_width)
        .ok()
        .zip(u16::try_from(sequence.max_frame_height).ok());
    FlvVideo::Config {
        timestamp_ms,
        body,
        size,
    }
}

/// Whether a frame header OBU's payload (or a frame OBU's) starts a key frame (AV1 §5.9.2):
/// `show_existing_frame` clear, then a `frame_type` of 0. Under a reduced still picture
/// header every frame is one.
fn is_key_frame(payload: &[u8], reduced_still_picture_header: bool) -> bool {
    if reduced_still_picture_header {
        return true;
    }
    payload.first().is_some_and(|b| b & 0xE0 == 0)
}

#[cfg(test)]
#[path = "rtp_av1_flv/tests.rs"]
pub(crate) mod tests;
