//! [`RtpOpusToFlv`]: a stream's Opus RTP as Enhanced RTMP audio tag bodies (SoundFormat 9,
//! the ExHeader, FourCC `Opus`), sans-IO — what an origin's RTMP push sends an edge, which
//! passes the packets on to its WebRTC players as they were: no transcoding between rtcdn
//! nodes.
//!
//! The sequence start carries an OpusHead (RFC 7845 §5.1), each coded frame one Opus packet.
//! Times are milliseconds on the push's clock: the first packet is placed at the moment it
//! came (`now_ms`, which the video's first frame shares), the rest follow their RTP
//! timestamps (48 kHz), so audio and video stay as close as they arrived. A packet older than
//! the one before (reordered) is dropped; a jump past [`MAX_STEP`] continues 20 ms on.

use rtp::RtpHeader;

/// FLV SoundFormat 9: Enhanced RTMP's ExHeader (a FourCC follows).
const SOUND_FORMAT_EX_HEADER: u8 = 9;
/// Enhanced RTMP AudioPacketType: SequenceStart.
const SEQUENCE_START: u8 = 0;
/// Enhanced RTMP AudioPacketType: CodedFrames.
const CODED_FRAMES: u8 = 1;
const FOURCC_OPUS: [u8; 4] = *b"Opus";
/// The Opus RTP clock (RFC 7587 §4.1: always 48 kHz).
const CLOCK_RATE: u32 = 48_000;
/// A timestamp step longer than this is a discontinuity (another source), not a pause: 10 s.
const MAX_STEP: u32 = 10 * CLOCK_RATE;
/// After a discontinuity the next packet comes one 20 ms frame later.
const DISCONTINUITY_STEP: u64 = 960;

/// What comes out for the server, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvAudio {
    /// The sequence start (an audio tag body with the OpusHead), before the first frame.
    Config { timestamp_ms: u32, body: Vec<u8> },
    /// One Opus packet (an audio tag body).
    Frame { timestamp_ms: u32, body: Vec<u8> },
}

/// One push's audio (see the module docs).
pub struct RtpOpusToFlv {
    pt: u8,
    channels: u8,
    /// The first packet's time on the push's clock, and the RTP time since counted from it.
    start_ms: Option<u32>,
    last_rtp: u32,
    ticks: u64,
    last_seq: u16,
    /// Packets passed on, and those that were not Opus of the stream or came out of order.
    pub frames: u64,
    pub ignored: u64,
}

impl RtpOpusToFlv {
    /// The Opus packets of payload type `pt`, announced with `channels` (1 or 2).
    pub fn new(pt: u8, channels: u8) -> RtpOpusToFlv {
        RtpOpusToFlv {
            pt,
            channels: channels.clamp(1, 2),
            start_ms: None,
            last_rtp: 0,
            ticks: 0,
            last_seq: 0,
            frames: 0,
            ignored: 0,
        }
    }

    /// One plain RTP packet that came at `now_ms` on the push's clock; `out` gets what it
    /// makes.
    pub fn push(&mut self, packet: &[u8], now_ms: u32, mut out: impl FnMut(FlvAudio)) {
        let Ok(header) = RtpHeader::parse(packet) else {
            self.ignored += 1;
            return;
        };
        let payload = header.payload();
        if header.payload_type().value() != self.pt || payload.is_empty() {
            self.ignored += 1;
            return;
        }
        let (seq, rtp_time) = (header.sequence_number(), header.timestamp());
        let start_ms = match self.start_ms {
            None => {
                self.start_ms = Some(now_ms);
                out(FlvAudio::Config {
                    timestamp_ms: now_ms,
                    body: self.sequence_start(),
                });
                now_ms
            }
            Some(start_ms) => {
                if (seq.wrapping_sub(self.last_seq) as i16) <= 0 {
                    self.ignored += 1;
                    return;
                }
                let step = rtp_time.wrapping_sub(self.last_rtp);
                if (step as i32) < 0 {
                    self.ignored += 1;
                    return;
                }
                self.ticks += if step <= MAX_STEP {
                    u64::from(step)
                } else {
                    DISCONTINUITY_STEP
                };
                start_ms
            }
        };
        self.last_seq = seq;
        self.last_rtp = rtp_time;
        self.frames += 1;
        let timestamp_ms =
            start_ms.wrapping_add((self.ticks * 1000 / u64::from(CLOCK_RATE)) as u32);
        let mut body = Vec::with_capacity(5 + payload.len());
        body.push(SOUND_FORMAT_EX_HEADER << 4 | CODED_FRAMES);
        body.extend_from_slice(&FOURCC_OPUS);
        body.extend_from_slice(payload);
        out(FlvAudio::Frame { timestamp_ms, body });
    }

    /// The sequence start's body: the ExHeader, the FourCC and an OpusHead.
    fn sequence_start(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(5 + 19);
        body.push(SOUND_FORMAT_EX_HEADER << 4 | SEQUENCE_START);
        body.extend_from_slice(&FOURCC_OPUS);
        body.extend_from_slice(b"OpusHead");
        body.push(1); // version
        body.push(self.channels);
        body.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: WebRTC's Opus has none to skip
        body.extend_from_slice(&CLOCK_RATE.to_le_bytes()); // input sample rate
        body.extend_from_slice(&0i16.to_le_bytes()); // output gain
        body.push(0); // channel mapping family 0: mono or stereo
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp::{Pt, RtpHeaderBuilder, Ssrc};

    fn opus(seq: u16, rtp_time: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let len = RtpHeaderBuilder::new(Pt::new(111), seq, rtp_time, Ssrc(5))
            .write_to(&mut buf)
            .unwrap();
        buf[len..len + payload.len()].copy_from_slice(payload);
        buf[..len + payload.len()].to_vec()
    }

    fn run(flv: &mut RtpOpusToFlv, packet: &[u8], now_ms: u32) -> Vec<FlvAudio> {
        let mut out = Vec::new();
        flv.push(packet, now_ms, |a| out.push(a));
        out
    }

    #[test]
    fn the_first_packet_brings_the_opus_head_and_frames_follow_their_rtp_time() {
        let mut flv = RtpOpusToFlv::new(111, 2);
        let out = run(&mut flv, &opus(10, 4_294_967_000, &[0xFC, 1, 2]), 250);
        let [FlvAudio::Config {
            timestamp_ms: 250,
            body: head,
        }, FlvAudio::Frame {
            timestamp_ms: 250,
            body,
        }] = out.as_slice()
        else {
            panic!("{out:?}");
        };
        assert_eq!(&head[..5], &[0x90, b'O', b'p', b'u', b's']);
        assert_eq!(&head[5..13], b"OpusHead");
        assert_eq!((head[13], head[14]), (1, 2));
        assert_eq!(&head[17..21], &48_000u32.to_le_bytes());
        assert_eq!(head.len(), 5 + 19);
        assert_eq!(body, &[0x91, b'O', b'p', b'u', b's', 0xFC, 1, 2]);
        // 20 ms later in RTP time (across the wrap), whatever the arrival time says.
        let out = run(
            &mut flv,
            &opus(11, 4_294_967_000u32.wrapping_add(960), &[7]),
            900,
        );
        assert!(matches!(
            out.as_slice(),
            [FlvAudio::Frame {
                timestamp_ms: 270,
                ..
            }]
        ));
        // A packet from before (reordered, or a duplicate) is dropped.
        assert!(run(
            &mut flv,
            &opus(11, 4_294_967_000u32.wrapping_add(960), &[7]),
            900
        )
        .is_empty());
        assert!(run(&mut flv, &opus(9, 4_294_967_000, &[7]), 900).is_empty());
        // A jump of a minute is a new source: 20 ms on.
        let out = run(&mut flv, &opus(12, 60 * 48_000, &[7]), 900);
        assert!(matches!(
            out.as_slice(),
            [FlvAudio::Frame {
                timestamp_ms: 290,
                ..
            }]
        ));
        assert_eq!((flv.frames, flv.ignored), (3, 2));
    }

    #[test]
    fn other_payload_types_and_garbage_are_ignored() {
        let mut flv = RtpOpusToFlv::new(100, 2);
        assert!(run(&mut flv, &opus(1, 0, &[1]), 0).is_empty());
        assert!(run(&mut flv, &[0x80, 1, 2], 0).is_empty());
        let mut flv = RtpOpusToFlv::new(111, 2);
        assert!(run(&mut flv, &opus(1, 0, &[]), 0).is_empty());
        assert_eq!(flv.ignored, 1);
    }
}
