//! Synthetic media: RTP packets whose payload says what they are (stream, sequence, send time)
//! and is filled with a pattern derived from that, so a receiver can check every byte. Video
//! payloads may start with a minimal VP8 payload descriptor and payload header (RFC 7741), so a
//! node's keyframe detection sees the bench's keyframes.

use rtp::{Pt, RtpHeaderBuilder, Ssrc};

/// Marks a synthetic payload.
pub const MAGIC: [u8; 4] = *b"RTCD";
/// Bytes of the payload header: magic, sequence (u64), send time (u64 ns), phase (u32).
pub const PAYLOAD_HEADER: usize = 4 + 8 + 8 + 4;
/// Bytes of the VP8 prefix a video payload may start with: the payload descriptor's first byte
/// (X clear: nothing follows it) and one more byte (the VP8 payload header's first byte on a
/// partition start).
pub const VP8_PREFIX: usize = 2;

/// What a receiver reads back from a synthetic payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The sender's running packet number.
    pub sequence: u64,
    /// The sender's clock when it sent the packet (ns since its start).
    pub sent_at_ns: u64,
    /// A label the test uses (e.g. warm-up 0, measured 1).
    pub phase: u32,
}

/// The RTP header fields of a synthetic packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields {
    pub pt: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
}

/// Where a video packet sits in its frame, as its VP8 prefix says (RFC 7741 §4.2, §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vp8Part {
    /// A frame's later packet: S clear.
    Continuation,
    /// A delta frame's first packet: S set, partition 0, P (inverse key frame) set.
    DeltaStart,
    /// A keyframe's first packet: S set, partition 0, P clear. What `rtp::is_keyframe` finds.
    KeyframeStart,
}

impl Vp8Part {
    /// Descriptor byte (X=0, N=0, S, PID=0), then the payload header's first byte: show_frame
    /// set, version 0, and P; a continuation's second byte is partition data, fixed here.
    fn prefix(self) -> [u8; VP8_PREFIX] {
        match self {
            Vp8Part::Continuation => [0x00, 0x00],
            Vp8Part::DeltaStart => [0x10, 0x11],
            Vp8Part::KeyframeStart => [0x10, 0x10],
        }
    }

    fn from_prefix(prefix: [u8; VP8_PREFIX]) -> Option<Self> {
        [
            Vp8Part::Continuation,
            Vp8Part::DeltaStart,
            Vp8Part::KeyframeStart,
        ]
        .into_iter()
        .find(|part| part.prefix() == prefix)
    }
}

fn pattern(sequence: u64, i: usize) -> u8 {
    (sequence as usize)
        .wrapping_mul(31)
        .wrapping_add(i.wrapping_mul(7)) as u8
}

/// Writes an RTP packet of `total_len` bytes carrying `probe` into `buf`; returns its length.
/// With `vp8`, the payload starts with that VP8 prefix (video); without, with the magic (audio,
/// or video that must not look like VP8 to a node).
pub fn write_packet(
    buf: &mut [u8],
    fields: RtpFields,
    vp8: Option<Vp8Part>,
    probe: Probe,
    total_len: usize,
) -> usize {
    let mut header =
        RtpHeaderBuilder::new(Pt::new(fields.pt), fields.seq, fields.ts, Ssrc(fields.ssrc));
    header.marker = fields.marker;
    let header_len = header.write_to(buf).expect("buffer holds an RTP header");
    let prefix_len = if vp8.is_some() { VP8_PREFIX } else { 0 };
    let total_len = total_len
        .max(header_len + prefix_len + PAYLOAD_HEADER)
        .min(buf.len());
    let (prefix, payload) = buf[header_len..total_len].split_at_mut(prefix_len);
    if let Some(part) = vp8 {
        prefix.copy_from_slice(&part.prefix());
    }
    payload[..4].copy_from_slice(&MAGIC);
    payload[4..12].copy_from_slice(&probe.sequence.to_be_bytes());
    payload[12..20].copy_from_slice(&probe.sent_at_ns.to_be_bytes());
    payload[20..24].copy_from_slice(&probe.phase.to_be_bytes());
    for (i, byte) in payload[PAYLOAD_HEADER..].iter_mut().enumerate() {
        *byte = pattern(probe.sequence, i);
    }
    total_len
}

/// Why a received payload is not what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Not an RTP packet.
    #[error("not RTP: {0}")]
    Rtp(String),
    /// Not a synthetic payload.
    #[error("payload lacks the magic")]
    NotSynthetic,
    /// A filler byte differs: the payload was corrupted on the way.
    #[error("payload byte {index} of packet {sequence} is corrupted")]
    Corrupted { sequence: u64, index: usize },
    /// The VP8 prefix before the magic is none the bench writes.
    #[error("VP8 prefix {0:02x?} of packet {1} is corrupted")]
    Vp8Prefix([u8; VP8_PREFIX], u64),
}

/// A received synthetic packet, verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub probe: Probe,
    pub pt: u8,
    /// The VP8 prefix the payload started with, if any.
    pub vp8: Option<Vp8Part>,
}

/// Reads and verifies a received packet; returns its probe and payload type.
pub fn read_packet(packet: &[u8]) -> Result<(Probe, u8), ProbeError> {
    read_media(packet).map(|r| (r.probe, r.pt))
}

/// Reads and verifies a received packet, its VP8 prefix included.
pub fn read_media(packet: &[u8]) -> Result<Received, ProbeError> {
    let header = rtp::RtpHeader::parse(packet).map_err(|e| ProbeError::Rtp(e.to_string()))?;
    let payload = header.payload();
    // The magic's first byte ('R') is no VP8 descriptor byte the bench writes, so where the
    // magic sits says whether a prefix comes first.
    let prefix_len = if payload.starts_with(&MAGIC) {
        0
    } else if payload
        .get(VP8_PREFIX..)
        .is_some_and(|p| p.starts_with(&MAGIC))
    {
        VP8_PREFIX
    } else {
        return Err(ProbeError::NotSynthetic);
    };
    let (prefix, payload) = payload.split_at(prefix_len);
    if payload.len() < PAYLOAD_HEADER {
        return Err(ProbeError::NotSynthetic);
    }
    let word = |r: std::ops::Range<usize>| {
        payload[r]
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
    };
    let probe = Probe {
        sequence: word(4..12),
        sent_at_ns: word(12..20),
        phase: word(20..24) as u32,
    };
    let vp8 = match prefix {
        [a, b] => Some(
            Vp8Part::from_prefix([*a, *b])
                .ok_or(ProbeError::Vp8Prefix([*a, *b], probe.sequence))?,
        ),
        _ => None,
    };
    if let Some(index) = payload[PAYLOAD_HEADER..]
        .iter()
        .enumerate()
        .position(|(i, b)| *b != pattern(probe.sequence, i))
    {
        return Err(ProbeError::Corrupted {
            sequence: probe.sequence,
            index,
        });
    }
    Ok(Received {
        probe,
        pt: header.payload_type().value(),
        vp8,
    })
}

/// The shape of one synthetic publisher's media: video frames at a frame rate, split into
/// fixed-size packets, with a keyframe burst every few seconds, and Opus-sized audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaShape {
    /// Average video bitrate, kbit/s (RTP payload and header, as sent).
    pub video_kbps: u64,
    /// Video frames per second.
    pub fps: u32,
    /// Seconds between keyframes; 0 for none.
    pub keyframe_interval_s: u32,
    /// How many times larger a keyframe is than a delta frame.
    pub keyframe_factor: u32,
    /// Bytes of every video packet (RTP header included).
    pub video_packet: usize,
    /// Audio packets per second (Opus at 20 ms: 50).
    pub audio_pps: u32,
    /// Bytes of every audio packet.
    pub audio_packet: usize,
}

impl Default for MediaShape {
    fn default() -> Self {
        MediaShape {
            video_kbps: 2500,
            fps: 30,
            keyframe_interval_s: 2,
            keyframe_factor: 8,
            video_packet: 1200,
            audio_pps: 50,
            audio_packet: 160,
        }
    }
}

impl MediaShape {
    /// Average packets per second this shape sends (video and audio).
    pub fn packets_per_second(&self) -> f64 {
        let video = self.video_kbps as f64 * 1000.0 / 8.0 / self.video_packet.max(1) as f64;
        video.max(f64::from(self.fps)) + f64::from(self.audio_pps)
    }

    /// Bytes of a delta frame and of a keyframe, keeping the average bitrate.
    fn frame_bytes(&self) -> (f64, f64) {
        let fps = f64::from(self.fps.max(1));
        let per_second = self.video_kbps as f64 * 1000.0 / 8.0;
        if self.keyframe_interval_s == 0 {
            return (per_second / fps, per_second / fps);
        }
        let frames = fps * f64::from(self.keyframe_interval_s);
        let factor = f64::from(self.keyframe_factor.max(1));
        let delta = per_second * f64::from(self.keyframe_interval_s) / (frames - 1.0 + factor);
        (delta, delta * factor)
    }
}

/// What a [`Shaper`] says to send next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A video frame: `packets` packets back to back, the last one with the marker bit.
    Video {
        frame: u64,
        keyframe: bool,
        packets: u32,
    },
    /// One audio packet.
    Audio { index: u64 },
}

/// The timeline of a [`MediaShape`]: events in send order with their offsets from the start.
pub struct Shaper {
    shape: MediaShape,
    frame: u64,
    audio: u64,
    credit: f64,
    delta: f64,
    key: f64,
    /// A receiver asked for a keyframe (PLI): the next frame is one.
    keyframe_requested: bool,
}

impl Shaper {
    /// A timeline starting at offset 0 with a keyframe.
    pub fn new(shape: MediaShape) -> Shaper {
        let (delta, key) = shape.frame_bytes();
        Shaper {
            shape,
            frame: 0,
            audio: 0,
            credit: 0.0,
            delta,
            key,
            keyframe_requested: false,
        }
    }

    /// Makes the next video frame a keyframe, as an encoder does on a PLI or FIR.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    fn frame_at(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(
            self.frame * 1_000_000_000 / u64::from(self.shape.fps.max(1)),
        )
    }

    fn audio_at(&self) -> Option<std::time::Duration> {
        (self.shape.audio_pps > 0).then(|| {
            std::time::Duration::from_nanos(
                self.audio * 1_000_000_000 / u64::from(self.shape.audio_pps),
            )
        })
    }

    /// The next event and when to send it.
    pub fn next_event(&mut self) -> (std::time::Duration, MediaEvent) {
        let video_at = self.frame_at();
        if let Some(audio_at) = self.audio_at().filter(|a| *a < video_at) {
            let index = self.audio;
            self.audio += 1;
            return (audio_at, MediaEvent::Audio { index });
        }
        let frames_per_gop = u64::from(self.shape.keyframe_interval_s) * u64::from(self.shape.fps);
        let keyframe = self.frame == 0
            || self.frame.checked_rem(frames_per_gop) == Some(0)
            || std::mem::take(&mut self.keyframe_requested);
        let bytes = self.credit + if keyframe { self.key } else { self.delta };
        let packets = ((bytes / self.shape.video_packet.max(1) as f64).floor() as u32).max(1);
        self.credit = bytes - f64::from(packets) * self.shape.video_packet as f64;
        let frame = self.frame;
        self.frame += 1;
        (
            video_at,
            MediaEvent::Video {
                frame,
                keyframe,
                packets,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_keyframe_is_the_next_video_frame() {
        let mut shaper = Shaper::new(MediaShape::default());
        let mut frames = Vec::new();
        for i in 0..200 {
            if i == 100 {
                shaper.request_keyframe();
            }
            if let (
                _,
                MediaEvent::Video {
                    frame, keyframe, ..
                },
            ) = shaper.next_event()
            {
                frames.push((frame, keyframe, i >= 100));
            }
        }
        let first_after = frames.iter().find(|(_, _, after)| *after).unwrap();
        assert!(
            first_after.1,
            "the first frame after the request: {first_after:?}"
        );
        // The periodic ones (every 60 frames at 30 fps) and the requested one, which is not.
        let keyframes: Vec<u64> = frames.iter().filter(|(_, k, _)| *k).map(|f| f.0).collect();
        assert_eq!(keyframes, [0, first_after.0, 60]);
        assert_ne!(first_after.0 % 60, 0);
    }

    fn fields(pt: u8) -> RtpFields {
        RtpFields {
            pt,
            ssrc: 0x1234,
            seq: 5,
            ts: 9000,
            marker: true,
        }
    }

    #[test]
    fn packets_round_trip_and_corruption_is_found() {
        let mut buf = [0u8; 1500];
        let probe = Probe {
            sequence: 77,
            sent_at_ns: 123_456,
            phase: 1,
        };
        let len = write_packet(&mut buf, fields(96), None, probe, 1200);
        assert_eq!(len, 1200);
        assert_eq!(read_packet(&buf[..len]), Ok((probe, 96)));
        buf[600] ^= 1;
        assert!(matches!(
            read_packet(&buf[..len]),
            Err(ProbeError::Corrupted { sequence: 77, .. })
        ));
        assert_eq!(
            read_packet(&[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(ProbeError::NotSynthetic)
        );
    }

    #[test]
    fn the_vp8_prefix_round_trips_and_marks_keyframes_as_the_node_sees_them() {
        let probe = Probe {
            sequence: 9,
            sent_at_ns: 1,
            phase: 0,
        };
        for part in [
            Vp8Part::Continuation,
            Vp8Part::DeltaStart,
            Vp8Part::KeyframeStart,
        ] {
            let mut buf = [0u8; 1500];
            let len = write_packet(&mut buf, fields(96), Some(part), probe, 1200);
            assert_eq!(len, 1200);
            let received = read_media(&buf[..len]).unwrap();
            assert_eq!(
                received,
                Received {
                    probe,
                    pt: 96,
                    vp8: Some(part)
                }
            );
            let header = rtp::RtpHeader::parse(&buf[..len]).unwrap();
            assert_eq!(
                rtp::is_keyframe(rtp::VideoCodec::Vp8, header.payload()),
                part == Vp8Part::KeyframeStart,
                "{part:?}"
            );
            // Every byte is checked: the prefix's, and the filler's after it.
            for (at, want) in [(12, "prefix"), (13, "prefix"), (12 + 2 + 24 + 5, "filler")] {
                let mut bad = buf;
                bad[at] ^= 0x40;
                let got = read_media(&bad[..len]);
                match want {
                    "prefix" => assert!(matches!(got, Err(ProbeError::Vp8Prefix(_, 9))), "{got:?}"),
                    _ => assert!(
                        matches!(
                            got,
                            Err(ProbeError::Corrupted {
                                sequence: 9,
                                index: 5
                            })
                        ),
                        "{got:?}"
                    ),
                }
            }
        }
        // Audio, or video that must not look like VP8: no prefix, the magic first.
        let mut buf = [0u8; 300];
        let len = write_packet(&mut buf, fields(111), None, probe, 160);
        assert_eq!(read_media(&buf[..len]).unwrap().vp8, None);
        // Too short for the probe after a prefix: not synthetic, not a panic.
        let mut short = buf[..12 + 6].to_vec();
        short[12..14].copy_from_slice(&[0x10, 0x10]);
        short[14..18].copy_from_slice(&MAGIC);
        assert_eq!(read_media(&short), Err(ProbeError::NotSynthetic));
    }

    #[test]
    fn the_shaper_keeps_the_bitrate_and_bursts_keyframes() {
        let shape = MediaShape::default();
        let mut shaper = Shaper::new(shape);
        let (mut video, mut audio, mut keyframes, mut biggest, mut smallest) =
            (0u64, 0u64, 0, 0, u32::MAX);
        let mut last = std::time::Duration::ZERO;
        loop {
            let (at, event) = shaper.next_event();
            assert!(at >= last, "events in time order");
            last = at;
            if at >= std::time::Duration::from_secs(10) {
                break;
            }
            match event {
                MediaEvent::Audio { .. } => audio += 1,
                MediaEvent::Video {
                    keyframe, packets, ..
                } => {
                    video += u64::from(packets);
                    if keyframe {
                        keyframes += 1;
                        biggest = biggest.max(packets);
                    } else {
                        smallest = smallest.min(packets);
                    }
                }
            }
        }
        assert_eq!(audio, 500);
        assert_eq!(keyframes, 5);
        let kbps = video * 1200 * 8 / 10 / 1000;
        assert!((2400..=2600).contains(&kbps), "video {kbps} kbit/s");
        assert!(
            biggest >= 5 * smallest,
            "keyframes burst: {biggest} vs {smallest}"
        );
    }
}
