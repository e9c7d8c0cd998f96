//! [`RtpToFlv`]: a stream's H.264 RTP (RFC 6184) or H.265 RTP (RFC 7798) back into FLV video
//! tag bodies, sans-IO: plain RTP packets in, in order as the publisher sent them; the sequence
//! header and frames of 4-byte length-prefixed NAL units out, timed in milliseconds since the
//! first frame. H.264 goes as classic FLV AVC (an AVCDecoderConfigurationRecord, ISO/IEC
//! 14496-15 §5.2.4.1), for an RTMP player or an origin's RTMP push; H.265 as Enhanced RTMP
//! `hvc1` (a sequence start of an HEVCDecoderConfigurationRecord, §8.3.3.1, and CodedFramesX:
//! the RTP time is the presentation time, so no composition offset), for the push.
//!
//! Single NAL unit packets, aggregation packets (H.264 STAP-A, H.265 AP) and fragmentation
//! units (H.264 FU-A, H.265 FU) are read: what browsers, the Flashphoner SDK and rtcdn's own
//! RTMP ingest send (H.264 packetization mode 1; H.265 without DONL fields, as the node never
//! negotiates sprop-max-don-diff). The two formats differ in their NAL unit header (one byte or
//! two), the type numbers and the parameter sets, which [`NalCodec`] says. An access unit ends
//! at the marker bit, or when the timestamp moves on without one. A lost packet (a gap in the
//! sequence numbers) drops the frame it was in and every frame after it until the next IDR
//! (H.265: IRAP) picture: a player cannot decode across the hole. Parameter sets go into the
//! sequence header, sent before the first keyframe and again before a keyframe whose
//! parameter sets changed (a new resolution, another copy of the stream), never inside
//! frames. Every buffer is bounded: an access unit past [`MAX_ACCESS_UNIT`] bytes is dropped
//! like a loss.

use rtp::h265::{self, H265Sps};
use rtp::{RtpHeader, VideoCodec};

use super::flv::{
    HevcConfig, FOURCC_HEVC, VIDEO_EX_HEADER, VIDEO_FRAME_INTER, VIDEO_FRAME_KEY,
    VIDEO_PACKET_CODED_FRAMES_X, VIDEO_PACKET_SEQUENCE_START,
};
pub use super::nal_rtp::NalCodec;
use super::nal_rtp::{replace, NalRole};

/// The largest access unit passed on (a 4K keyframe at a high bitrate is well under it).
pub const MAX_ACCESS_UNIT: usize = 4 << 20;
/// The largest SPS or PPS kept.
const MAX_PARAMETER_SET: usize = 1024;
/// The first frame after a discontinuity (another source, a jump) comes this long after the
/// one before: one frame at 30 fps, in the 90 kHz clock.
const DISCONTINUITY_STEP: u64 = 3000;
/// A timestamp step longer than this is a discontinuity, not a pause: 10 s.
const MAX_STEP: u32 = 10 * 90_000;

const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;
/// The frame's tag header, five bytes either way: classic FLV AVC's frame type and codec id
/// (7), AVCPacketType and composition time; Enhanced RTMP's frame type and VideoPacketType
/// (CodedFramesX), then the FourCC.
const FLV_HEADER: usize = 5;

/// What comes out for the player, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvVideo {
    /// The AVC sequence header (a video tag body), with the picture size its SPS announces.
    Config {
        timestamp_ms: u32,
        body: Vec<u8>,
        size: Option<(u16, u16)>,
    },
    /// One frame (a video tag body).
    Frame {
        timestamp_ms: u32,
        keyframe: bool,
        body: Vec<u8>,
    },
}

/// What the depacketizer counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtpToFlvCounters {
    /// Frames passed on.
    pub frames: u64,
    /// Of those, keyframes (IDR or IRAP pictures).
    pub keyframes: u64,
    /// Frames dropped: after a loss, before the next keyframe (or the first one).
    pub skipped: u64,
    /// Gaps in the sequence numbers.
    pub losses: u64,
    /// Packets that were not of the stream's payload type, or not of its payload format.
    pub ignored: u64,
}

/// The player's clock: RTP time (90 kHz) to milliseconds since the first frame, wrap-safe,
/// never going back.
#[derive(Debug, Default)]
pub(super) struct FlvClock {
    last: Option<u32>,
    ticks: u64,
    /// The next frame follows a discontinuity.
    pub(super) rebase: bool,
}

impl FlvClock {
    pub(super) fn ms(&mut self, rtp_time: u32) -> u32 {
        match self.last {
            None => {}
            Some(_) if self.rebase => self.ticks += DISCONTINUITY_STEP,
            Some(last) => {
                let step = rtp_time.wrapping_sub(last);
                if step <= MAX_STEP {
                    self.ticks += u64::from(step);
                } else if (step as i32) < 0 {
                    // Earlier than the frame before (reordered): no step back.
                } else {
                    self.ticks += DISCONTINUITY_STEP;
                }
            }
        }
        self.rebase = false;
        self.last = Some(rtp_time);
        (self.ticks / 90) as u32
    }
}

/// Where a packet stands in its source's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PacketOrder {
    /// The next one.
    InOrder,
    /// Packets before it are missing.
    AfterLoss,
    /// Another source (a layer switch, a new copy of the stream), numbered on its own.
    NewSource,
    /// A duplicate, or later than packets after it: to be dropped.
    Late,
}

/// Which packets a depacketizer takes: those of its payload type, in their source's order.
#[derive(Debug)]
pub(super) struct SourceOrder {
    pt: u8,
    ssrc: Option<u32>,
    next_seq: Option<u16>,
}

impl SourceOrder {
    /// The packets of payload type `pt`.
    pub(super) fn new(pt: u8) -> SourceOrder {
        SourceOrder {
            pt,
            ssrc: None,
            next_seq: None,
        }
    }

    /// `packet`'s header when the depacketizer takes it, and whether the frame being put
    /// together is lost (packets before it are missing, or another source began: `clock`
    /// then starts again). Other payload types and what does not parse are counted in
    /// `counters` as ignored, gaps as losses; a duplicate or late packet is dropped (its frame
    /// is gone already).
    pub(super) fn admit<'a>(
        &mut self,
        packet: &'a [u8],
        counters: &mut RtpToFlvCounters,
        clock: &mut FlvClock,
    ) -> Option<(RtpHeader<'a>, bool)> {
        let header = match RtpHeader::parse(packet) {
            Ok(header) if header.payload_type().value() == self.pt => header,
            _ => {
                counters.ignored += 1;
                return None;
            }
        };
        let lost = match self.take(&header) {
            PacketOrder::Late => return None,
            PacketOrder::NewSource => {
                clock.rebase = true;
                true
            }
            PacketOrder::AfterLoss => {
                counters.losses += 1;
                true
            }
            PacketOrder::InOrder => false,
        };
        Some((header, lost))
    }

    /// Where `header`'s packet stands; it is taken as the newest unless [`PacketOrder::Late`].
    fn take(&mut self, header: &RtpHeader<'_>) -> PacketOrder {
        let (ssrc, seq) = (header.ssrc().0, header.sequence_number());
        let next = Some(seq.wrapping_add(1));
        if self.ssrc.replace(ssrc).is_some_and(|s| s != ssrc) {
            self.next_seq = next;
            return PacketOrder::NewSource;
        }
        let order = match self.next_seq {
            None => PacketOrder::InOrder,
            Some(expected) => match (seq.wrapping_sub(expected) as i16).signum() {
                -1 => return PacketOrder::Late,
                0 => PacketOrder::InOrder,
                _ => PacketOrder::AfterLoss,
            },
        };
        self.next_seq = next;
        order
    }
}

/// One stream's H.264 or H.265 video (see the module docs).
pub struct RtpToFlv {
    codec: NalCodec,
    order: SourceOrder,
    waiting_for_keyframe: bool,
    /// The access unit being put together: an FLV video tag header, then NAL units.
    au: Vec<u8>,
    au_time: Option<u32>,
    au_idr: bool,
    /// The fragmented NAL unit being put together.
    fu: Vec<u8>,
    /// The parameter sets, in [`NalCodec`]'s slots (H.264 SPS, PPS; H.265 VPS, SPS, PPS).
    parameter_sets: [Vec<u8>; 3],
    /// The parameter sets of the last sequence header sent.
    sent: Option<[Vec<u8>; 3]>,
    clock: FlvClock,
    pub counters: RtpToFlvCounters,
}

/// What an RTP payload is, by its first NAL unit header.
enum PayloadForm<'a> {
    /// A whole NAL unit.
    Single,
    /// Aggregated NAL units, each after a 16-bit size (what follows the payload header).
    Aggregated(&'a [u8]),
    /// A fragment: the NAL unit header it restores, and what follows the FU header.
    Fragment {
        start: bool,
        end: bool,
        nal_header: [u8; 2],
        data: &'a [u8],
    },
    /// Cut short before its FU header.
    Truncated,
    /// A form not read (H.264 STAP-B, MTAP, FU-B; H.265 PACI, reserved types).
    Unknown,
}

impl PayloadForm<'_> {
    /// `payload`'s form, in `codec`'s format; it is at least one byte.
    fn of(codec: NalCodec, payload: &[u8]) -> PayloadForm<'_> {
        let first = payload[0];
        let fragment = |fu_header: u8, nal_header: [u8; 2], data| PayloadForm::Fragment {
            start: fu_header & 0x80 != 0,
            end: fu_header & 0x40 != 0,
            nal_header,
            data,
        };
        match codec {
            NalCodec::H264 => match first & 0x1F {
                1..=23 => PayloadForm::Single,
                NAL_STAP_A => PayloadForm::Aggregated(&payload[1..]),
                // The FU indicator's F and NRI, the FU header's type.
                NAL_FU_A => match payload.get(1) {
                    Some(&fu) => fragment(fu, [(first & 0xE0) | (fu & 0x1F), 0], &payload[2..]),
                    None => PayloadForm::Truncated,
                },
                _ => PayloadForm::Unknown,
            },
            NalCodec::H265 => match (h265::nal_type(first), payload.get(1)) {
                (_, None) => PayloadForm::Truncated,
                (0..=47, Some(_)) => PayloadForm::Single,
                (h265::NAL_AP, Some(_)) => PayloadForm::Aggregated(&payload[2..]),
                // The payload header's F, LayerId and TID, the FU header's type.
                (h265::NAL_FU, Some(&second)) => match payload.get(2) {
                    Some(&fu) => fragment(
                        fu,
                        [(first & 0x81) | ((fu & 0x3F) << 1), second],
                        &payload[3..],
                    ),
                    None => PayloadForm::Truncated,
                },
                _ => PayloadForm::Unknown,
            },
        }
    }
}

impl RtpToFlv {
    /// A depacketizer of the H.264 packets of payload type `pt`.
    pub fn new(pt: u8) -> RtpToFlv {
        RtpToFlv::for_codec(NalCodec::H264, pt)
    }

    /// A depacketizer of the `codec` packets of payload type `pt`.
    pub fn for_codec(codec: NalCodec, pt: u8) -> RtpToFlv {
        RtpToFlv {
            codec,
            order: SourceOrder::new(pt),
            waiting_for_keyframe: true,
            au: vec![0; FLV_HEADER],
            au_time: None,
            au_idr: false,
            fu: Vec::new(),
            parameter_sets: Default::default(),
            sent: None,
            clock: FlvClock::default(),
            counters: RtpToFlvCounters::default(),
        }
    }

    /// The codec it reads.
    pub fn codec(&self) -> NalCodec {
        self.codec
    }

    /// Whether frames are dropped until the next keyframe (a loss, or none came yet).
    pub fn waits_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Frames are dropped until the next keyframe (packets were dropped before they came
    /// here).
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
        if lost {
            self.lose();
        }
        let time = header.timestamp();
        if self.au_time.is_some_and(|t| t != time) {
            self.finish(&mut out);
        }
        self.au_time = Some(time);
        self.read_payload(header.payload());
        if header.marker() {
            self.finish(&mut out);
        }
    }

    /// Drops the frame being put together; the next one that counts is a keyframe.
    fn lose(&mut self) {
        if self.au.len() > FLV_HEADER {
            self.counters.skipped += 1;
        }
        self.au.truncate(FLV_HEADER);
        self.au_idr = false;
        self.au_time = None;
        self.fu.clear();
        self.waiting_for_keyframe = true;
    }

    fn read_payload(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        match PayloadForm::of(self.codec, payload) {
            PayloadForm::Single => self.add_nal(payload),
            PayloadForm::Aggregated(mut rest) => {
                while rest.len() >= 2 {
                    let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let Some(nal) = rest.get(2..2 + size) else {
                        self.counters.ignored += 1;
                        return self.lose();
                    };
                    self.add_nal(nal);
                    rest = &rest[2 + size..];
                }
            }
            PayloadForm::Fragment {
                start,
                end,
                nal_header,
                data,
            } => {
                if start {
                    self.fu.clear();
                    self.fu
                        .extend_from_slice(&nal_header[..self.codec.header_len()]);
                } else if self.fu.is_empty() {
                    // The fragment's start was lost with the packets before (counted there).
                    return;
                }
                if self.fu.len() + payload.len() > MAX_ACCESS_UNIT {
                    self.counters.ignored += 1;
                    return self.lose();
                }
                self.fu.extend_from_slice(data);
                if end {
                    let nal = std::mem::take(&mut self.fu);
                    self.add_nal(&nal);
                    self.fu = nal;
                    self.fu.clear();
                }
            }
            PayloadForm::Truncated => {
                self.counters.ignored += 1;
                self.lose();
            }
            PayloadForm::Unknown => self.counters.ignored += 1,
        }
    }

    /// One whole NAL unit of the access unit.
    fn add_nal(&mut self, nal: &[u8]) {
        if nal.len() < self.codec.header_len() {
            return;
        }
        match self.codec.role(nal) {
            NalRole::ParameterSet(slot) if nal.len() <= MAX_PARAMETER_SET => {
                replace(&mut self.parameter_sets[slot], nal)
            }
            NalRole::ParameterSet(_) | NalRole::Dropped => {}
            role => {
                if self.au.len() + 4 + nal.len() > MAX_ACCESS_UNIT {
                    self.counters.ignored += 1;
                    return self.lose();
                }
                self.au_idr |= role == NalRole::Keyframe;
                self.au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                self.au.extend_from_slice(nal);
            }
        }
    }

    /// Whether the parameter sets make a sequence header, as a keyframe needs: H.264's SPS
    /// has its profile bytes and there is a PPS; H.265's SPS reads as far as the record's
    /// fields, and there are a VPS and a PPS past their headers.
    fn has_parameter_sets(&self) -> bool {
        let [first, second, third] = &self.parameter_sets;
        match self.codec {
            NalCodec::H264 => first.len() >= 4 && !second.is_empty(),
            NalCodec::H265 => {
                first.len() > 2 && third.len() > 2 && H265Sps::parse(second).is_some()
            }
        }
    }

    /// The sequence header of the parameter sets, when [`RtpToFlv::has_parameter_sets`].
    fn sequence_header(&self, timestamp_ms: u32) -> Option<FlvVideo> {
        let [first, second, third] = &self.parameter_sets;
        match self.codec {
            NalCodec::H264 => Some(FlvVideo::Config {
                timestamp_ms,
                body: config_record(first, second),
                size: rtp::keyframe_size(VideoCodec::H264, first),
            }),
            NalCodec::H265 => hevc_sequence_start(timestamp_ms, first, second, third),
        }
    }

    /// The access unit is complete: out it goes (after a sequence header, when the
    /// keyframe's parameter sets are new), unless it waits for a keyframe.
    fn finish(&mut self, out: &mut impl FnMut(FlvVideo)) {
        let time = self.au_time.take();
        let idr = std::mem::replace(&mut self.au_idr, false);
        if self.au.len() == FLV_HEADER {
            return;
        }
        let Some(time) = time else {
            self.au.truncate(FLV_HEADER);
            return;
        };
        let decodable = idr && self.has_parameter_sets();
        if self.waiting_for_keyframe && !decodable {
            self.counters.skipped += 1;
            self.au.truncate(FLV_HEADER);
            return;
        }
        self.waiting_for_keyframe = false;
        let timestamp_ms = self.clock.ms(time);
        if decodable && self.sent.as_ref() != Some(&self.parameter_sets) {
            if let Some(header) = self.sequence_header(timestamp_ms) {
                out(header);
                self.sent = Some(self.parameter_sets.clone());
            }
        }
        // The frame goes out as it is, and the next one starts in a buffer of its size: frames
        // of a stream are alike, so the next one's packets rarely make it grow (one allocation
        // a frame, none a packet).
        let next = Vec::with_capacity(self.au.len());
        let mut body = std::mem::replace(&mut self.au, next);
        self.au.resize(FLV_HEADER, 0);
        body[..FLV_HEADER].copy_from_slice(&frame_header(self.codec, idr));
        self.counters.frames += 1;
        self.counters.keyframes += u64::from(idr);
        out(FlvVideo::Frame {
            timestamp_ms,
            keyframe: idr,
            body,
        });
    }
}

/// A frame's tag header (see [`FLV_HEADER`]).
fn frame_header(codec: NalCodec, keyframe: bool) -> [u8; FLV_HEADER] {
    let frame_type = if keyframe {
        VIDEO_FRAME_KEY
    } else {
        VIDEO_FRAME_INTER
    };
    match codec {
        // Classic FLV: codec id 7 (AVC), AVCPacketType 1 (NALU), composition time 0.
        NalCodec::H264 => [frame_type << 4 | 7, 1, 0, 0, 0],
        NalCodec::H265 => {
            let [a, b, c, d] = FOURCC_HEVC;
            [
                VIDEO_EX_HEADER | frame_type << 4 | VIDEO_PACKET_CODED_FRAMES_X,
                a,
                b,
                c,
                d,
            ]
        }
    }
}

/// The AVC sequence header's tag body: an AVCDecoderConfigurationRecord of one SPS and one
/// PPS, with 4-byte NAL unit lengths. `sps` is at least 4 bytes.
fn config_record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + sps.len() + pps.len());
    body.extend_from_slice(&[0x17, 0, 0, 0, 0]);
    body.extend_from_slice(&[1, sps[1], sps[2], sps[3], 0xFF, 0xE1]);
    body.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    body.extend_from_slice(sps);
    body.push(1);
    body.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    body.extend_from_slice(pps);
    body
}

/// The `hvc1` sequence start (an HEVCDecoderConfigurationRecord of one VPS, SPS and PPS, with
/// 4-byte NAL unit lengths, the profile, tier, level and picture format as the SPS says them)
/// with the picture size; `None` when the SPS does not read that far.
fn hevc_sequence_start(timestamp_ms: u32, vps: &[u8], sps: &[u8], pps: &[u8]) -> Option<FlvVideo> {
    let parsed = H265Sps::parse(sps)?;
    let record = HevcConfig::from_sps(&parsed, 4, [vps, sps, pps]).write();
    let mut body = Vec::with_capacity(FLV_HEADER + record.len());
    body.push(VIDEO_EX_HEADER | VIDEO_FRAME_KEY << 4 | VIDEO_PACKET_SEQUENCE_START);
    body.extend_from_slice(&FOURCC_HEVC);
    body.extend_from_slice(&record);
    Some(FlvVideo::Config {
        timestamp_ms,
        body,
        size: parsed.size(),
    })
}

#[cfg(test)]
mod h265_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::flv::{nal_units, parse_video, VideoTag};
    use crate::rtmp::publisher::{RtmpPublisher, H264_PT};

    const SPS: [u8; 5] = [0x67, 0x42, 0xC0, 0x1E, 0xAA];
    const PPS: [u8; 2] = [0x68, 0xCE];

    fn rtp(seq: u16, time: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, if marker { 0x80 } else { 0 } | H264_PT];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&time.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![NAL_STAP_A];
        for nal in nals {
            p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            p.extend_from_slice(nal);
        }
        p
    }

    fn run(d: &mut RtpToFlv, packets: &[Vec<u8>]) -> Vec<FlvVideo> {
        let mut out = Vec::new();
        for p in packets {
            d.push(p, |v| out.push(v));
        }
        out
    }

    fn frame_nals(v: &FlvVideo) -> Vec<Vec<u8>> {
        let FlvVideo::Frame { body, .. } = v else {
            panic!("{v:?}")
        };
        let Ok(VideoTag::AvcFrame { nalus, .. }) = parse_video(body) else {
            panic!("{body:?}")
        };
        nal_units(nalus, 4).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn stap_a_parameter_sets_make_the_sequence_header_and_fu_a_is_joined() {
        let mut d = RtpToFlv::new(H264_PT);
        let idr: Vec<u8> = [0x65].into_iter().chain(0..=200u8).collect();
        let packets = [
            rtp(10, 9000, false, &stap_a(&[&SPS, &PPS])),
            rtp(11, 9000, false, &[0x7C, 0x85, 0, 1, 2]),
            rtp(12, 9000, false, &[0x7C, 0x05, 3, 4]),
            rtp(
                13,
                9000,
                true,
                &[[0x7C, 0x45].as_slice(), &idr[5..]].concat(),
            ),
            rtp(14, 12000, true, &[0x41, 0x9A]),
        ];
        let out = run(&mut d, &packets);
        assert_eq!(out.len(), 3, "{out:?}");
        let FlvVideo::Config {
            timestamp_ms: 0,
            body,
            ..
        } = &out[0]
        else {
            panic!("{:?}", out[0])
        };
        let Ok(VideoTag::AvcConfig(config)) = parse_video(body) else {
            panic!("{body:?}")
        };
        assert_eq!(
            (config.sps, config.pps, config.length_size),
            (&SPS[..], &PPS[..], 4)
        );
        assert!(matches!(
            out[1],
            FlvVideo::Frame {
                timestamp_ms: 0,
                keyframe: true,
                ..
            }
        ));
        let mut joined = vec![0x65, 0, 1, 2, 3, 4];
        joined.extend_from_slice(&idr[5..]);
        assert_eq!(frame_nals(&out[1]), vec![joined]);
        assert!(matches!(
            out[2],
            FlvVideo::Frame {
                timestamp_ms: 33,
                keyframe: false,
                ..
            }
        ));
        assert_eq!(frame_nals(&out[2]), vec![vec![0x41, 0x9A]]);
        assert_eq!((d.counters.frames, d.counters.keyframes), (2, 1));
    }

    #[test]
    fn a_loss_drops_frames_until_the_next_idr_and_delta_frames_wait_for_the_first() {
        let mut d = RtpToFlv::new(H264_PT);
        let key = |seq, time| {
            [
                rtp(seq, time, false, &stap_a(&[&SPS, &PPS])),
                rtp(seq + 1, time, true, &[0x65, 1]),
            ]
        };
        let mut packets = vec![rtp(1, 0, true, &[0x41, 1])];
        packets.extend(key(2, 3000));
        packets.push(rtp(4, 6000, true, &[0x41, 2]));
        // 5 is lost: 6 and 7 are not decodable.
        packets.push(rtp(6, 12000, true, &[0x41, 4]));
        packets.push(rtp(7, 15000, true, &[0x41, 5]));
        // A late copy of an earlier packet changes nothing.
        packets.push(rtp(4, 6000, true, &[0x41, 2]));
        packets.extend(key(8, 18000));
        let out = run(&mut d, &packets);
        let frames: Vec<(u32, bool)> = out
            .iter()
            .filter_map(|v| match v {
                FlvVideo::Frame {
                    timestamp_ms,
                    keyframe,
                    ..
                } => Some((*timestamp_ms, *keyframe)),
                FlvVideo::Config { .. } => None,
            })
            .collect();
        assert_eq!(frames, [(0, true), (33, false), (166, true)]);
        // The parameter sets did not change: one sequence header.
        assert_eq!(
            out.iter()
                .filter(|v| matches!(v, FlvVideo::Config { .. }))
                .count(),
            1
        );
        assert_eq!(d.counters.losses, 1);
        assert_eq!(d.counters.skipped, 3);
    }

    #[test]
    fn new_parameter_sets_or_another_source_send_a_new_header_and_time_goes_on() {
        let mut d = RtpToFlv::new(H264_PT);
        let sps2 = [0x67, 0x64, 0x00, 0x28, 0xBB];
        let mut packets = vec![
            rtp(1, u32::MAX - 1499, false, &stap_a(&[&SPS, &PPS])),
            rtp(2, u32::MAX - 1499, true, &[0x65, 1]),
            // The RTP clock wraps.
            rtp(3, 1500, true, &[0x41, 1]),
            rtp(4, 4500, false, &stap_a(&[&sps2, &PPS])),
            rtp(5, 4500, true, &[0x65, 2]),
        ];
        // Another source, numbered and timed its own way.
        let mut other = rtp(900, 77, false, &stap_a(&[&SPS, &PPS]));
        other[8..12].copy_from_slice(&8u32.to_be_bytes());
        let mut other_idr = rtp(901, 77, true, &[0x65, 3]);
        other_idr[8..12].copy_from_slice(&8u32.to_be_bytes());
        packets.extend([other, other_idr]);
        let out = run(&mut d, &packets);
        let times: Vec<(bool, u32)> = out
            .iter()
            .map(|v| match v {
                FlvVideo::Config { timestamp_ms, .. } => (true, *timestamp_ms),
                FlvVideo::Frame { timestamp_ms, .. } => (false, *timestamp_ms),
            })
            .collect();
        assert_eq!(
            times,
            [
                (true, 0),
                (false, 0),
                (false, 33),
                (true, 66),
                (false, 66),
                (true, 100),
                (false, 100)
            ]
        );
    }

    #[test]
    fn other_payload_types_and_malformed_packets_are_ignored_and_size_is_bounded() {
        let mut d = RtpToFlv::new(H264_PT);
        let mut vp8 = rtp(1, 0, true, &[0x10, 0, 0]);
        vp8[1] = 0x80 | 96;
        let packets = [
            vp8,
            vec![0x80, 1],
            rtp(2, 0, true, &[NAL_STAP_A, 0, 9, 1]),
            rtp(3, 0, true, &[NAL_FU_A]),
            rtp(4, 0, true, &[]),
        ];
        assert!(run(&mut d, &packets).is_empty());
        assert_eq!(d.counters.ignored, 4);
        // A huge access unit of FU-A fragments is dropped, not kept growing.
        let mut out = Vec::new();
        let chunk = vec![0u8; 1200];
        d.push(
            &rtp(5, 90, false, &[[0x7C, 0x85].as_slice(), &chunk].concat()),
            |v| out.push(v),
        );
        for seq in 6..(6 + (MAX_ACCESS_UNIT / 1200) as u16 + 2) {
            d.push(
                &rtp(seq, 90, false, &[[0x7C, 0x05].as_slice(), &chunk].concat()),
                |v| out.push(v),
            );
            assert!(d.fu.len() <= MAX_ACCESS_UNIT);
        }
        assert!(out.is_empty());
    }

    #[test]
    fn the_fuzz_body_runs_on_its_seed_and_on_noise() {
        crate::fuzzing::fuzz_rtp_flv(include_bytes!(
            "../../fuzz/corpus/seed-rtp_flv/stap_fu_loss"
        ));
        let mut x = 7u64;
        for len in [0, 1, 13, 200, 3000] {
            crate::fuzzing::fuzz_rtp_flv(&crate::fuzzing::pseudo_random_bytes(&mut x, len));
        }
    }

    #[test]
    fn what_the_rtmp_ingest_packetizes_comes_back_as_the_same_frames() {
        let mut publisher = RtmpPublisher::new(7, 100, 0);
        let mut packets = Vec::new();
        let mut config = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 5];
        config.extend_from_slice(&SPS);
        config.extend_from_slice(&[1, 0, 2]);
        config.extend_from_slice(&PPS);
        let frame = |key: bool, len: usize| {
            let mut m = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            m.extend_from_slice(&((len + 1) as u32).to_be_bytes());
            m.push(if key { 0x65 } else { 0x41 });
            m.extend((0..len).map(|i| i as u8));
            m
        };
        let messages = [
            config,
            frame(true, 5000),
            frame(false, 300),
            frame(false, 10),
        ];
        for (i, m) in messages.iter().enumerate() {
            publisher
                .handle_video(i as u32 * 40, m, |p, _| packets.push(p.to_vec()))
                .unwrap();
        }
        let out = run(&mut RtpToFlv::new(H264_PT), &packets);
        // The last frame has no successor, but its marker bit ends it.
        assert_eq!(out.len(), 4, "{out:?}");
        for (sent, got) in messages[1..].iter().zip(&out[1..]) {
            let FlvVideo::Frame { body, .. } = got else {
                panic!("{got:?}")
            };
            assert_eq!(body, sent);
        }
    }
}
