//! [`RtpToFlv`]: a stream's H.264 RTP (RFC 6184) back into FLV video tag bodies for an RTMP
//! player, sans-IO: plain RTP packets in, in order as the publisher sent them; the AVC
//! sequence header (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 §5.2.4.1) and frames of
//! 4-byte length-prefixed NAL units out, timed in milliseconds since the first frame.
//!
//! Single NAL unit packets, STAP-A and FU-A are read (what browsers, the Flashphoner SDK and
//! rtcdn's own RTMP ingest send; packetization mode 1). An access unit ends at the marker bit,
//! or when the timestamp moves on without one. A lost packet (a gap in the sequence numbers)
//! drops the frame it was in and every frame after it until the next IDR: a player cannot
//! decode across the hole. Parameter sets go into the sequence header, sent before the first
//! IDR and again before an IDR whose SPS or PPS changed (a new resolution, another copy of the
//! stream), never inside frames. Every buffer is bounded: an access unit past
//! [`MAX_ACCESS_UNIT`] bytes is dropped like a loss.

use rtp::{RtpHeader, VideoCodec};

use super::nal_rtp::replace;

/// The largest access unit passed on (a 4K keyframe at a high bitrate is well under it).
pub const MAX_ACCESS_UNIT: usize = 4 << 20;
/// The largest SPS or PPS kept.
const MAX_PARAMETER_SET: usize = 1024;
/// The first frame after a discontinuity (another source, a jump) comes this long after the
/// one before: one frame at 30 fps, in the 90 kHz clock.
const DISCONTINUITY_STEP: u64 = 3000;
/// A timestamp step longer than this is a discontinuity, not a pause: 10 s.
const MAX_STEP: u32 = 10 * 90_000;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;
/// FLV video tag header: frame type and codec id (7: AVC), AVCPacketType, composition time.
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
    /// Of those, IDR frames.
    pub keyframes: u64,
    /// Frames dropped: after a loss, before the next keyframe (or the first one).
    pub skipped: u64,
    /// Gaps in the sequence numbers.
    pub losses: u64,
    /// Packets that were not H.264 of the stream's payload type, or not RFC 6184.
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

/// One RTMP player's video (see the module docs).
pub struct RtpToFlv {
    order: SourceOrder,
    waiting_for_keyframe: bool,
    /// The access unit being put together: an FLV video tag header, then NAL units.
    au: Vec<u8>,
    au_time: Option<u32>,
    au_idr: bool,
    /// The FU-A NAL unit being put together.
    fu: Vec<u8>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// The parameter sets of the last sequence header sent.
    sent: Option<(Vec<u8>, Vec<u8>)>,
    clock: FlvClock,
    pub counters: RtpToFlvCounters,
}

impl RtpToFlv {
    /// A depacketizer of the H.264 packets of payload type `pt`.
    pub fn new(pt: u8) -> RtpToFlv {
        RtpToFlv {
            order: SourceOrder::new(pt),
            waiting_for_keyframe: true,
            au: vec![0; FLV_HEADER],
            au_time: None,
            au_idr: false,
            fu: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
            sent: None,
            clock: FlvClock::default(),
            counters: RtpToFlvCounters::default(),
        }
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

    /// Drops the frame being put together; the next one that counts is an IDR.
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
        let Some(&indicator) = payload.first() else {
            return;
        };
        match indicator & 0x1F {
            1..=23 => self.add_nal(payload),
            NAL_STAP_A => {
                let mut rest = &payload[1..];
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
            NAL_FU_A => {
                let Some(&fu_header) = payload.get(1) else {
                    self.counters.ignored += 1;
                    return self.lose();
                };
                let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
                if start {
                    self.fu.clear();
                    self.fu.push((indicator & 0xE0) | (fu_header & 0x1F));
                } else if self.fu.is_empty() {
                    // The fragment's start was lost with the packets before (counted there).
                    return;
                }
                if self.fu.len() + payload.len() > MAX_ACCESS_UNIT {
                    self.counters.ignored += 1;
                    return self.lose();
                }
                self.fu.extend_from_slice(&payload[2..]);
                if end {
                    let nal = std::mem::take(&mut self.fu);
                    self.add_nal(&nal);
                    self.fu = nal;
                    self.fu.clear();
                }
            }
            _ => self.counters.ignored += 1,
        }
    }

    /// One whole NAL unit of the access unit.
    fn add_nal(&mut self, nal: &[u8]) {
        let Some(&first) = nal.first() else {
            return;
        };
        match first & 0x1F {
            NAL_SPS if nal.len() <= MAX_PARAMETER_SET => replace(&mut self.sps, nal),
            NAL_PPS if nal.len() <= MAX_PARAMETER_SET => replace(&mut self.pps, nal),
            NAL_SPS | NAL_PPS | NAL_AUD | 0 => {}
            kind => {
                if self.au.len() + 4 + nal.len() > MAX_ACCESS_UNIT {
                    self.counters.ignored += 1;
                    return self.lose();
                }
                self.au_idr |= kind == NAL_IDR;
                self.au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                self.au.extend_from_slice(nal);
            }
        }
    }

    /// The access unit is complete: out it goes (after a sequence header, when the IDR's
    /// parameter sets are new), unless it waits for a keyframe.
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
        // An IDR needs its parameter sets (the SPS's first bytes are the record's profile).
        let decodable = idr && self.sps.len() >= 4 && !self.pps.is_empty();
        if self.waiting_for_keyframe && !decodable {
            self.counters.skipped += 1;
            self.au.truncate(FLV_HEADER);
            return;
        }
        self.waiting_for_keyframe = false;
        let timestamp_ms = self.clock.ms(time);
        if decodable
            && self
                .sent
                .as_ref()
                .is_none_or(|(sps, pps)| *sps != self.sps || *pps != self.pps)
        {
            out(FlvVideo::Config {
                timestamp_ms,
                body: config_record(&self.sps, &self.pps),
                size: rtp::keyframe_size(VideoCodec::H264, &self.sps),
            });
            self.sent = Some((self.sps.clone(), self.pps.clone()));
        }
        let mut body = std::mem::replace(&mut self.au, vec![0; FLV_HEADER]);
        body[..FLV_HEADER].copy_from_slice(&[if idr { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
        self.counters.frames += 1;
        self.counters.keyframes += u64::from(idr);
        out(FlvVideo::Frame {
            timestamp_ms,
            keyframe: idr,
            body,
        });
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
