//! [`RtpVp9ToFlv`]: a stream's VP9 RTP (RFC 9628) as Enhanced RTMP video (`vp09`), sans-IO,
//! for an origin's RTMP push to an edge: plain RTP packets in, in order as the publisher sent
//! them; a sequence start (a VPCodecConfigurationRecord built from what the keyframe's header
//! says: profile, bit depth, chroma subsampling, colour, a level for its size) and frames out,
//! timed in milliseconds since the first frame.
//!
//! A frame runs from the packet with B to the one with E (or the marker bit), of the base
//! spatial layer. A lost packet (a gap in the sequence numbers), a frame cut short or a
//! timestamp that moves on mid-frame drops the frame and every frame after it until the next
//! keyframe (P clear, and a keyframe header that parses): a player cannot decode across the
//! hole. The sequence start goes before the first keyframe and again before a keyframe whose
//! configuration or size changed. A frame past [`MAX_ACCESS_UNIT`] bytes is dropped like a
//! loss.
//!
//! Layered VP9 (SVC: spatial layers above the base one, or a scalability structure of several)
//! is said by [`RtpVp9ToFlv::layered`]: RTMP carries one picture per frame, so only the base
//! layer would reach the edge; the push gives such a stream back to a WebRTC relay.

use rtp::vp9::{Vp9Descriptor, Vp9FrameHeader, Vp9KeyInfo};

use super::flv::{
    Vp9Config, FOURCC_VP9, VIDEO_EX_HEADER, VIDEO_FRAME_INTER, VIDEO_FRAME_KEY,
    VIDEO_PACKET_CODED_FRAMES, VIDEO_PACKET_SEQUENCE_START,
};
use super::rtp_flv::{FlvClock, FlvVideo, RtpToFlvCounters, SourceOrder, MAX_ACCESS_UNIT};

/// ExVideoTagHeader: the first byte and the FourCC.
const FLV_HEADER: usize = 5;

/// One stream's VP9 video (see the module docs).
pub struct RtpVp9ToFlv {
    order: SourceOrder,
    waiting_for_keyframe: bool,
    /// The frame being put together: an ExVideoTagHeader, then the frame's bytes.
    frame: Vec<u8>,
    frame_time: Option<u32>,
    /// Its first packet had P clear.
    frame_key: bool,
    /// The configuration of the last sequence start sent, and its size.
    sent: Option<(Vp9Config, Option<(u16, u16)>)>,
    layered: bool,
    clock: FlvClock,
    pub counters: RtpToFlvCounters,
}

impl RtpVp9ToFlv {
    /// A depacketizer of the VP9 packets of payload type `pt`.
    pub fn new(pt: u8) -> RtpVp9ToFlv {
        RtpVp9ToFlv {
            order: SourceOrder::new(pt),
            waiting_for_keyframe: true,
            frame: Vec::new(),
            frame_time: None,
            frame_key: false,
            sent: None,
            layered: false,
            clock: FlvClock::default(),
            counters: RtpToFlvCounters::default(),
        }
    }

    /// Whether frames are dropped until the next keyframe (a loss, or none came yet).
    pub fn waits_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Whether the stream showed spatial layers (see the module docs).
    pub fn layered(&self) -> bool {
        self.layered
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
        let payload = header.payload();
        let Some(d) = Vp9Descriptor::parse(payload) else {
            self.counters.ignored += 1;
            return self.lose();
        };
        let spatial_id = d.spatial_id.unwrap_or(0);
        if spatial_id > 0 || d.spatial_layers.unwrap_or(1) > 1 {
            self.layered = true;
        }
        if spatial_id > 0 {
            return;
        }
        let time = header.timestamp();
        if self.frame_time.is_some_and(|t| t != time) {
            // The frame's end was lost with the packets before, or never sent.
            self.lose();
        }
        if d.begins_frame {
            if self.frame_time.is_some() {
                self.lose();
            }
            self.frame.clear();
            self.frame.extend_from_slice(&[0; FLV_HEADER]);
            self.frame_time = Some(time);
            self.frame_key = !d.inter_predicted;
        } else if self.frame_time.is_none() {
            // The frame's start was lost (counted there).
            return;
        }
        let data = &payload[d.len..];
        if self.frame.len() + data.len() > MAX_ACCESS_UNIT + FLV_HEADER {
            self.counters.ignored += 1;
            return self.lose();
        }
        self.frame.extend_from_slice(data);
        if d.ends_frame || header.marker() {
            self.finish(&mut out);
        }
    }

    /// Drops the frame being put together; the next one that counts is a keyframe.
    fn lose(&mut self) {
        if self.frame_time.take().is_some() {
            self.counters.skipped += 1;
        }
        self.frame.clear();
        self.waiting_for_keyframe = true;
    }

    /// The frame is complete: out it goes (after a sequence start, when the keyframe's
    /// configuration is new), unless it waits for a keyframe.
    fn finish(&mut self, out: &mut impl FnMut(FlvVideo)) {
        let Some(time) = self.frame_time.take() else {
            return;
        };
        let body = &self.frame[FLV_HEADER..];
        let key = self
            .frame_key
            .then(|| Vp9FrameHeader::parse(body).and_then(|h| h.key))
            .flatten();
        if body.is_empty() || (self.waiting_for_keyframe && key.is_none()) {
            self.counters.skipped += 1;
            self.frame.clear();
            return;
        }
        self.waiting_for_keyframe = false;
        let timestamp_ms = self.clock.ms(time);
        if let Some(key) = key {
            let profile = Vp9FrameHeader::parse(body).map_or(0, |h| h.profile);
            let config = config_record(profile, &key);
            let size = key.size_u16();
            if self.sent != Some((config, size)) {
                let mut start =
                    vec![VIDEO_EX_HEADER | VIDEO_FRAME_KEY << 4 | VIDEO_PACKET_SEQUENCE_START];
                start.extend_from_slice(&FOURCC_VP9);
                start.extend_from_slice(&config.write());
                out(FlvVideo::Config {
                    timestamp_ms,
                    body: start,
                    size,
                });
                self.sent = Some((config, size));
            }
        }
        let mut frame = std::mem::take(&mut self.frame);
        let frame_type = if key.is_some() {
            VIDEO_FRAME_KEY
        } else {
            VIDEO_FRAME_INTER
        };
        frame[0] = VIDEO_EX_HEADER | frame_type << 4 | VIDEO_PACKET_CODED_FRAMES;
        frame[1..FLV_HEADER].copy_from_slice(&FOURCC_VP9);
        self.counters.frames += 1;
        self.counters.keyframes += u64::from(key.is_some());
        out(FlvVideo::Frame {
            timestamp_ms,
            keyframe: key.is_some(),
            body: frame,
        });
    }
}

/// The VPCodecConfigurationRecord of a keyframe: its colour space as ISO/IEC 23091-2 code
/// points, 4:2:0 as "colocated with luma" (what ffmpeg writes when it is not told), the
/// lowest level whose picture size the frame fits (the bitrate is not known here).
fn config_record(profile: u8, key: &Vp9KeyInfo) -> Vp9Config {
    let (colour_primaries, transfer_characteristics, matrix_coefficients) = match key.color_space {
        1 | 3 => (6, 6, 6),
        2 => (1, 1, 1),
        4 => (7, 7, 7),
        5 => (9, 14, 9),
        7 => (1, 13, 0),
        _ => (2, 2, 2),
    };
    let chroma_subsampling = match (key.subsampling_x, key.subsampling_y) {
        (true, false) => 2,
        (false, false) => 3,
        _ => 1,
    };
    let samples = u64::from(key.width) * u64::from(key.height);
    let level = [
        (36_864, 10),
        (73_728, 11),
        (122_880, 20),
        (245_760, 21),
        (552_960, 30),
        (983_040, 31),
        (2_228_224, 40),
        (8_912_896, 50),
        (35_651_584, 60),
    ]
    .iter()
    .find(|(max, _)| samples <= *max)
    .map_or(62, |(_, level)| *level);
    Vp9Config {
        profile,
        level,
        bit_depth: key.bit_depth,
        chroma_subsampling,
        full_range: key.full_range,
        colour_primaries,
        transfer_characteristics,
        matrix_coefficients,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rtmp::flv::{parse_video, VideoTag};
    use crate::rtmp::publisher::{RtmpPublisher, VP9_PT};

    /// A profile 0 keyframe of `width`x`height` (BT.709, limited range), then `extra` bytes.
    pub(crate) fn keyframe(width: u16, height: u16, extra: usize) -> Vec<u8> {
        let w = u32::from(width - 1);
        let h = u32::from(height - 1);
        // 4 bits of colour config, 32 of size: 36 bits from byte 4 on.
        let bits: u64 = (0b0100u64 << 32) | u64::from(w) << 16 | u64::from(h);
        let packed = (bits << 4).to_be_bytes();
        let mut frame = vec![0x82, 0x49, 0x83, 0x42];
        frame.extend_from_slice(&packed[3..]);
        frame.extend((0..extra).map(|i| i as u8));
        frame
    }

    fn rtp(seq: u16, time: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, if marker { 0x80 } else { 0 } | VP9_PT];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&time.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// Non-flexible descriptor: I (7-bit id), P, B, E.
    fn vp9(inter: bool, begins: bool, ends: bool, data: &[u8]) -> Vec<u8> {
        let b0 = 0x80
            | if inter { 0x40 } else { 0 }
            | if begins { 0x08 } else { 0 }
            | if ends { 0x04 } else { 0 };
        [&[b0, 1][..], data].concat()
    }

    fn run(d: &mut RtpVp9ToFlv, packets: &[Vec<u8>]) -> Vec<FlvVideo> {
        let mut out = Vec::new();
        for p in packets {
            d.push(p, |v| out.push(v));
        }
        out
    }

    fn frames(out: &[FlvVideo]) -> Vec<(u32, bool, Vec<u8>)> {
        out.iter()
            .filter_map(|v| match v {
                FlvVideo::Frame {
                    timestamp_ms,
                    keyframe,
                    body,
                } => {
                    let Ok(VideoTag::Vp9Frame { keyframe: k, frame }) = parse_video(body) else {
                        panic!("{body:?}")
                    };
                    assert_eq!(k, *keyframe);
                    Some((*timestamp_ms, *keyframe, frame.to_vec()))
                }
                FlvVideo::Config { .. } => None,
            })
            .collect()
    }

    #[test]
    fn frames_are_joined_and_the_keyframe_brings_its_configuration() {
        let key = keyframe(1280, 720, 300);
        let mut d = RtpVp9ToFlv::new(VP9_PT);
        let packets = [
            rtp(1, 9000, false, &vp9(false, true, false, &key[..100])),
            rtp(2, 9000, false, &vp9(false, false, false, &key[100..200])),
            rtp(3, 9000, true, &vp9(false, false, true, &key[200..])),
            rtp(4, 12000, true, &vp9(true, true, true, &[0x86, 9])),
        ];
        let out = run(&mut d, &packets);
        let FlvVideo::Config {
            timestamp_ms: 0,
            body,
            size: Some((1280, 720)),
        } = &out[0]
        else {
            panic!("{:?}", out[0])
        };
        let Ok(VideoTag::Vp9Config(config)) = parse_video(body) else {
            panic!("{body:?}")
        };
        assert_eq!(
            (
                config.profile,
                config.bit_depth,
                config.chroma_subsampling,
                config.level
            ),
            (0, 8, 1, 31)
        );
        assert_eq!(frames(&out), [(0, true, key), (33, false, vec![0x86, 9])]);
        assert_eq!((d.counters.frames, d.counters.keyframes), (2, 1));
        assert!(!d.layered());
    }

    #[test]
    fn a_loss_drops_frames_until_the_next_keyframe_and_size_changes_resend_the_start() {
        let mut d = RtpVp9ToFlv::new(VP9_PT);
        let inter = |seq, time| rtp(seq, time, true, &vp9(true, true, true, &[0x86, seq as u8]));
        let key = |seq, time, width| {
            rtp(
                seq,
                time,
                true,
                &vp9(false, true, true, &keyframe(width, 360, 4)),
            )
        };
        let packets = [
            inter(1, 0), // before any keyframe
            key(2, 3000, 640),
            inter(3, 6000),
            // 4 lost
            inter(5, 12000),
            // a frame whose end never came
            rtp(
                6,
                15000,
                false,
                &vp9(false, true, false, &keyframe(640, 360, 4)),
            ),
            inter(7, 18000),
            key(8, 21000, 640),
            key(9, 24000, 320),
        ];
        let out = run(&mut d, &packets);
        let got: Vec<(u32, bool)> = frames(&out).into_iter().map(|(t, k, _)| (t, k)).collect();
        assert_eq!(got, [(0, true), (33, false), (200, true), (233, true)]);
        let starts = out
            .iter()
            .filter(|v| matches!(v, FlvVideo::Config { .. }))
            .count();
        assert_eq!(
            starts, 2,
            "the same configuration goes once; a new size again"
        );
        assert_eq!(d.counters.losses, 1);
    }

    #[test]
    fn spatial_layers_are_noted_and_only_the_base_layer_goes_on() {
        let mut d = RtpVp9ToFlv::new(VP9_PT);
        // I, L, B, E with SID 0 then 1 (non-flexible: TL0PICIDX follows).
        let layer = |sid: u8, data: &[u8]| [&[0xAC, 1, sid << 1, 0][..], data].concat();
        let key = keyframe(320, 180, 2);
        let packets = [
            rtp(1, 0, false, &layer(0, &key)),
            rtp(2, 0, true, &layer(1, &keyframe(640, 360, 2))),
        ];
        let out = run(&mut d, &packets);
        assert_eq!(frames(&out), [(0, true, key)]);
        assert!(d.layered());
    }

    #[test]
    fn garbage_and_huge_frames_are_dropped_without_panic() {
        let mut d = RtpVp9ToFlv::new(VP9_PT);
        let packets = [
            vec![0x80, 1],
            rtp(1, 0, true, &[]),
            rtp(2, 0, true, &[0x80]),
            rtp(3, 0, true, &vp9(false, true, true, &[])),
            rtp(4, 0, true, &vp9(false, true, true, &[0xFF; 20])),
        ];
        assert!(run(&mut d, &packets).is_empty());
        let chunk = vec![0u8; 1200];
        let mut out = Vec::new();
        d.push(&rtp(5, 90, false, &vp9(false, true, false, &chunk)), |v| {
            out.push(v)
        });
        for seq in 6..(6 + (MAX_ACCESS_UNIT / 1200) as u16 + 2) {
            d.push(
                &rtp(seq, 90, false, &vp9(false, false, false, &chunk)),
                |v| out.push(v),
            );
            assert!(d.frame.len() <= MAX_ACCESS_UNIT + FLV_HEADER);
        }
        assert!(out.is_empty());
    }

    #[test]
    fn the_fuzz_body_runs_on_its_vp9_seed() {
        crate::fuzzing::fuzz_rtp_flv(include_bytes!(
            "../../fuzz/corpus/seed-rtp_flv/vp9_key_loss_layers"
        ));
        // A keyframe of 65,536 x 65,536 pixels, more than the scalability structure and
        // the FLV metadata can say (the fuzzer's overflow).
        crate::fuzzing::fuzz_rtp_flv(include_bytes!(
            "../../fuzz/corpus/seed-rtp_flv/vp9_largest_frame"
        ));
    }

    #[test]
    fn what_the_rtmp_ingest_packetizes_comes_back_as_the_same_frames() {
        let mut publisher = RtmpPublisher::new(7, 100, 0);
        let mut packets = Vec::new();
        let config = config_record(
            0,
            &Vp9FrameHeader::parse(&keyframe(640, 360, 0))
                .unwrap()
                .key
                .unwrap(),
        );
        let tag = |key: bool, packet_type: u8, body: &[u8]| {
            let frame_type = if key {
                VIDEO_FRAME_KEY
            } else {
                VIDEO_FRAME_INTER
            };
            [
                &[VIDEO_EX_HEADER | frame_type << 4 | packet_type][..],
                &FOURCC_VP9,
                body,
            ]
            .concat()
        };
        let messages = [
            tag(true, VIDEO_PACKET_SEQUENCE_START, &config.write()),
            tag(true, VIDEO_PACKET_CODED_FRAMES, &keyframe(640, 360, 5000)),
            tag(false, VIDEO_PACKET_CODED_FRAMES, &[0x86; 300]),
            tag(false, VIDEO_PACKET_CODED_FRAMES, &[0x86; 10]),
        ];
        for (i, m) in messages.iter().enumerate() {
            publisher
                .handle_video(i as u32 * 40, m, |p, _| packets.push(p.to_vec()))
                .unwrap();
        }
        let out = run(&mut RtpVp9ToFlv::new(VP9_PT), &packets);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(
            out[0],
            FlvVideo::Config {
                timestamp_ms: 0,
                body: messages[0].clone(),
                size: Some((640, 360))
            }
        );
        for (sent, got) in messages[1..].iter().zip(&out[1..]) {
            let FlvVideo::Frame { body, .. } = got else {
                panic!("{got:?}")
            };
            assert_eq!(body, sent);
        }
    }
}
