//! [`OpusToAac`]: a stream's Opus RTP made into FLV AAC audio for an RTMP player, sans-IO:
//! plain RTP packets with their arrival time in, AAC tag bodies out (through a callback) — the
//! reverse of [`super::aac_opus`].
//!
//! RTMP players (ffplay, VLC, ffmpeg) take AAC, WebRTC publishers send Opus, so the audio is
//! decoded (opus-rs, 48 kHz) and encoded to AAC-LC (the Fraunhofer FDK encoder through the
//! `fdk-aac` crate: 48 kHz, the stream's channels, 128 kbit/s stereo or 64 kbit/s mono, raw
//! frames of 1024 samples). The first tag body is the sequence header with the
//! AudioSpecificConfig (SoundFormat 10, AACPacketType 0), the rest raw frames (AACPacketType 1).
//!
//! Times are milliseconds on the player's clock, as [`super::rtp_opus_flv`] does for a push:
//! the first packet is placed at the moment it came (`now_ms`, the clock the player's video
//! shares), the rest follow their RTP timestamps, so audio and video stay as close as they
//! arrived. A lost packet (up to [`MAX_FILL_MS`]) becomes silence, keeping the AAC frames on
//! the RTP clock; a longer pause moves the timeline on without filling it; a packet older than
//! the one before (reordered, duplicated) is dropped. Garbage that does not decode is counted
//! and skipped.

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
use opus_rs::OpusDecoder;
use rtp::RtpHeader;

/// Opus RTP: always a 48 kHz clock (RFC 7587 §4.1); the AAC is made at the same rate.
const RATE: u32 = 48_000;
/// AAC-LC frames hold 1024 samples per channel.
pub const AAC_FRAME_SAMPLES: u32 = 1024;
/// The longest Opus packet's audio: 120 ms.
const MAX_OPUS_SAMPLES: usize = 5760;
/// A gap up to this long (lost packets) is filled with silence; longer is a pause.
pub const MAX_FILL_MS: u32 = 200;
/// A timestamp step longer than this is a discontinuity (another source), not a pause: 10 s.
const MAX_STEP: u32 = 10 * RATE;
/// FDK's bound for one raw frame: 6144 bits per channel.
const MAX_AAC_FRAME: usize = 768 * 2;
/// FLV audio tag header: SoundFormat 10 (AAC), 44 kHz and 16 bits as FLV requires for AAC,
/// and the channel flag (the AudioSpecificConfig says the truth).
const FLV_AAC_STEREO: u8 = 0xAF;
const FLV_AAC_MONO: u8 = 0xAE;
const AAC_SEQUENCE_HEADER: u8 = 0;
const AAC_RAW: u8 = 1;

/// Why there is no transcoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusAacError {
    #[error("Opus decoder: {0}")]
    Decoder(&'static str),
    #[error("AAC encoder: {0}")]
    Encoder(String),
}

/// What comes out for the player, in this order: the sequence header, then frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlvAac<'a> {
    /// The AAC sequence header (an audio tag body), before the first frame.
    Config { timestamp_ms: u32, body: &'a [u8] },
    /// One raw AAC frame (an audio tag body).
    Frame { timestamp_ms: u32, body: &'a [u8] },
}

/// What the transcoder counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpusAacCounters {
    /// Opus packets decoded.
    pub packets: u64,
    /// AAC frames made.
    pub frames: u64,
    /// Packets not Opus of the stream, out of order, or that did not decode.
    pub ignored: u64,
    /// Gaps filled with silence.
    pub filled: u64,
    /// Packets the Opus decoder panicked on (also ignored); a new decoder took over each time.
    pub decoder_panics: u64,
}

/// One player's Opus → AAC transcoder (see the module docs).
pub struct OpusToAac {
    pt: u8,
    channels: usize,
    decoder: Box<OpusDecoder>,
    encoder: Encoder,
    /// The sequence header's body: the FLV header bytes and the AudioSpecificConfig.
    config: Vec<u8>,
    /// The encoder's delay in samples: the first frame's audio starts this much before it.
    delay: u32,
    /// One Opus packet decoded (f32, interleaved), and the same as the encoder's input.
    decoded: Vec<f32>,
    pcm: Vec<i16>,
    /// The tag body being written: the FLV header bytes, then a raw frame.
    body: Vec<u8>,
    /// The first packet's time on the player's clock.
    start_ms: Option<u32>,
    last_seq: u16,
    last_rtp: u32,
    /// The packet's RTP time since the first, unwrapped (48 kHz).
    ticks: u64,
    /// Where the next decoded sample sits on that line, and the time skipped by pauses.
    next_tick: u64,
    skipped: u64,
    pub counters: OpusAacCounters,
}

impl OpusToAac {
    /// A transcoder of the Opus packets of payload type `pt`, made into AAC with `channels`
    /// (1 or 2).
    pub fn new(pt: u8, channels: u8) -> Result<OpusToAac, OpusAacError> {
        let channels = usize::from(channels.clamp(1, 2));
        let decoder =
            Box::new(OpusDecoder::new(RATE as i32, channels).map_err(OpusAacError::Decoder)?);
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(64_000 * channels as u32),
            sample_rate: RATE,
            transport: Transport::Raw,
            channels: if channels == 2 {
                ChannelMode::Stereo
            } else {
                ChannelMode::Mono
            },
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| OpusAacError::Encoder(e.to_string()))?;
        let info = encoder
            .info()
            .map_err(|e| OpusAacError::Encoder(e.to_string()))?;
        let asc_len = (info.confSize as usize).min(info.confBuf.len());
        if asc_len < 2 {
            return Err(OpusAacError::Encoder("no AudioSpecificConfig".to_owned()));
        }
        let flv = if channels == 2 {
            FLV_AAC_STEREO
        } else {
            FLV_AAC_MONO
        };
        let mut config = vec![flv, AAC_SEQUENCE_HEADER];
        config.extend_from_slice(&info.confBuf[..asc_len]);
        Ok(OpusToAac {
            pt,
            channels,
            decoder,
            encoder,
            config,
            delay: info.nDelay,
            decoded: vec![0.0; MAX_OPUS_SAMPLES * channels],
            pcm: Vec::with_capacity(MAX_OPUS_SAMPLES * channels),
            body: Vec::with_capacity(2 + MAX_AAC_FRAME),
            start_ms: None,
            last_seq: 0,
            last_rtp: 0,
            ticks: 0,
            next_tick: 0,
            skipped: 0,
            counters: OpusAacCounters::default(),
        })
    }

    /// The sequence header's tag body (also the first thing [`OpusToAac::push`] gives).
    pub fn sequence_header(&self) -> &[u8] {
        &self.config
    }

    /// The AudioSpecificConfig the frames are encoded with.
    pub fn audio_specific_config(&self) -> &[u8] {
        &self.config[2..]
    }

    /// The channels of the AAC.
    pub fn channels(&self) -> u8 {
        self.channels as u8
    }

    /// One plain RTP packet that came at `now_ms` on the player's clock; `out` gets what it
    /// makes.
    pub fn push(&mut self, packet: &[u8], now_ms: u32, mut out: impl FnMut(FlvAac<'_>)) {
        let Ok(header) = RtpHeader::parse(packet) else {
            self.counters.ignored += 1;
            return;
        };
        let payload = header.payload();
        if header.payload_type().value() != self.pt || payload.is_empty() {
            self.counters.ignored += 1;
            return;
        }
        let (seq, rtp_time) = (header.sequence_number(), header.timestamp());
        match self.start_ms {
            None => {
                self.start_ms = Some(now_ms);
                out(FlvAac::Config {
                    timestamp_ms: now_ms,
                    body: &self.config,
                });
            }
            Some(_) => {
                if (seq.wrapping_sub(self.last_seq) as i16) <= 0 {
                    self.counters.ignored += 1;
                    return;
                }
                let step = rtp_time.wrapping_sub(self.last_rtp);
                if (step as i32) < 0 {
                    self.counters.ignored += 1;
                    return;
                }
                // Another source: it goes on where the audio is, no gap.
                self.ticks = if step <= MAX_STEP {
                    self.ticks + u64::from(step)
                } else {
                    self.next_tick
                };
            }
        }
        self.last_seq = seq;
        self.last_rtp = rtp_time;
        let (decoder, decoded) = (&mut self.decoder, &mut self.decoded);
        let samples = match crate::panic_guard::catch_silent(|| {
            decoder.decode(payload, MAX_OPUS_SAMPLES, decoded)
        }) {
            Ok(Ok(samples)) => samples,
            Ok(Err(_)) => {
                self.counters.ignored += 1;
                return;
            }
            Err(_) => {
                // opus-rs panicked on the publisher's packet (0.1.40 has an underflow a
                // fuzzer found): its state is not to be trusted, a fresh one takes the next.
                self.counters.ignored += 1;
                self.counters.decoder_panics += 1;
                if let Ok(fresh) = OpusDecoder::new(RATE as i32, self.channels) {
                    *self.decoder = fresh;
                }
                return;
            }
        };
        self.counters.packets += 1;
        let samples = samples.min(MAX_OPUS_SAMPLES);
        self.pcm.clear();
        if self.ticks > self.next_tick {
            let gap = self.ticks - self.next_tick;
            if gap <= u64::from(MAX_FILL_MS * RATE / 1000) {
                // Lost packets: silence, so the frames after stay on the RTP clock.
                self.counters.filled += 1;
                self.pcm.resize(gap as usize * self.channels, 0);
            } else {
                self.skipped += gap;
            }
        }
        self.pcm.extend(
            self.decoded[..samples * self.channels]
                .iter()
                .map(|&s| (s * 32768.0).clamp(-32768.0, 32767.0) as i16),
        );
        self.next_tick = self.ticks + samples as u64;
        self.encode(&mut out);
    }

    /// Gives the decoded samples to the encoder; each frame it completes goes out.
    fn encode(&mut self, out: &mut impl FnMut(FlvAac<'_>)) {
        let Some(start_ms) = self.start_ms else {
            return;
        };
        let flv = self.config[0];
        let mut at = 0;
        self.body.resize(2 + MAX_AAC_FRAME, 0);
        while at < self.pcm.len() {
            let Ok(info) = self.encoder.encode(&self.pcm[at..], &mut self.body[2..]) else {
                // The encoder refused its input: what is left goes with it.
                self.counters.ignored += 1;
                break;
            };
            at += info.input_consumed;
            if info.output_size > 0 {
                let n = self.counters.frames;
                self.counters.frames += 1;
                let frame = u64::from(AAC_FRAME_SAMPLES);
                if (n + 1) * frame <= u64::from(self.delay) {
                    // The encoder's start-up: nothing of the stream in it yet.
                    continue;
                }
                // The frame's first sample, on the RTP time line and so on the player's clock.
                let first = (n * frame).saturating_sub(u64::from(self.delay)) + self.skipped;
                let timestamp_ms = start_ms.wrapping_add((first * 1000 / u64::from(RATE)) as u32);
                self.body[0] = flv;
                self.body[1] = AAC_RAW;
                out(FlvAac::Frame {
                    timestamp_ms,
                    body: &self.body[..2 + info.output_size],
                });
            } else if info.input_consumed == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp::{Pt, RtpHeaderBuilder, Ssrc};
    use symphonia_codec_aac::AacDecoder;
    use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
    use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
    use symphonia_core::packet::PacketRef;
    use symphonia_core::units::{Duration, Timestamp};

    fn rtp(seq: u16, rtp_time: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 12 + payload.len()];
        let len = RtpHeaderBuilder::new(Pt::new(111), seq, rtp_time, Ssrc(5))
            .write_to(&mut buf)
            .unwrap();
        buf[len..len + payload.len()].copy_from_slice(payload);
        buf.truncate(len + payload.len());
        buf
    }

    /// `seconds` of a 440 Hz stereo sine as 20 ms Opus packets.
    fn sine_opus(seconds: usize) -> Vec<Vec<u8>> {
        let mut encoder =
            opus_rs::OpusEncoder::new(48_000, 2, opus_rs::Application::Audio).unwrap();
        let mut packets = Vec::new();
        let mut frame = vec![0f32; 960 * 2];
        let mut out = vec![0u8; 1275];
        for n in 0..seconds * 50 {
            for i in 0..960 {
                let t = (n * 960 + i) as f32 / 48_000.0;
                let s = 0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin();
                frame[2 * i] = s;
                frame[2 * i + 1] = s;
            }
            let len = encoder.encode(&frame, 960, &mut out).unwrap();
            packets.push(out[..len].to_vec());
        }
        packets
    }

    #[derive(Debug, PartialEq)]
    enum Out {
        Config(u32, Vec<u8>),
        Frame(u32, Vec<u8>),
    }

    fn run(t: &mut OpusToAac, packet: &[u8], now_ms: u32, into: &mut Vec<Out>) {
        t.push(packet, now_ms, |a| {
            into.push(match a {
                FlvAac::Config { timestamp_ms, body } => Out::Config(timestamp_ms, body.to_vec()),
                FlvAac::Frame { timestamp_ms, body } => Out::Frame(timestamp_ms, body.to_vec()),
            })
        });
    }

    fn decode_aac(config: &[u8], frames: &[&[u8]]) -> Vec<f32> {
        let mut params = AudioCodecParameters::new();
        params.codec = CODEC_ID_AAC;
        params.extra_data = Some(config.to_vec().into_boxed_slice());
        let mut decoder = AacDecoder::try_new(&params, &AudioDecoderOptions::default()).unwrap();
        let mut left = Vec::new();
        let mut buf = Vec::new();
        for frame in frames {
            let packet = PacketRef::new(0, Timestamp::new(0), Duration::new(1024), frame);
            let decoded = decoder.decode_ref(&packet).unwrap();
            let channels = decoded.spec().channels().count();
            buf.resize(decoded.frames() * channels, 0.0);
            decoded.copy_to_slice_interleaved(&mut buf[..]);
            left.extend(buf.iter().step_by(channels).copied());
        }
        left
    }

    #[test]
    fn a_sine_in_opus_comes_out_as_aac_lc_that_decodes_to_the_same_tone_on_time() {
        let mut t = OpusToAac::new(111, 2).unwrap();
        // AAC-LC (object type 2), 48 kHz (index 3), two channels.
        assert_eq!(t.audio_specific_config(), &[0x11, 0x90]);
        let mut out = Vec::new();
        let base = 4_294_000_000u32;
        for (n, p) in sine_opus(2).iter().enumerate() {
            // Arrival times jitter; only the first one places the audio.
            let now = 5_000 + n as u32 * 20 + (n as u32 % 3) * 7;
            run(
                &mut t,
                &rtp(n as u16, base.wrapping_add(n as u32 * 960), p),
                now,
                &mut out,
            );
        }
        let Out::Config(5_000, header) = &out[0] else {
            panic!("{:?}", out[0]);
        };
        assert_eq!(header, &[0xAF, 0, 0x11, 0x90]);
        let frames: Vec<(u32, &[u8])> = out[1..]
            .iter()
            .map(|o| match o {
                Out::Frame(ts, body) => (*ts, &body[..]),
                Out::Config(..) => panic!("a second header"),
            })
            .collect();
        // Two seconds are 93.75 frames of 1024 samples: all but the last partial one, less
        // the encoder's start-up frames (its delay holds nothing of the stream).
        let startup = (t.delay / 1024) as usize;
        assert!((1..=3).contains(&startup), "delay {}", t.delay);
        assert_eq!(frames.len(), 93 - startup, "{}", frames.len());
        assert_eq!((t.counters.packets, t.counters.frames), (100, 93));
        for (i, (ts, body)) in frames.iter().enumerate() {
            assert_eq!(&body[..2], &[0xAF, 1]);
            // The encoder's delay is taken off: frame n starts at n × 1024 samples less it.
            let first = ((i + startup) as u64 * 1024).saturating_sub(u64::from(t.delay));
            assert_eq!(*ts, 5_000 + (first * 1000 / 48_000) as u32, "frame {i}");
        }
        assert!(frames.windows(2).all(|w| w[0].0 < w[1].0), "times go up");
        let bodies: Vec<&[u8]> = frames.iter().map(|(_, b)| &b[2..]).collect();
        let left = decode_aac(t.audio_specific_config(), &bodies);
        assert_eq!(left.len(), (93 - startup) * 1024);
        crate::rtmp::aac_opus::tests::assert_tone_440(&left, 0.1);
    }

    #[test]
    fn a_lost_packet_is_silence_a_pause_moves_the_time_on_and_old_packets_are_dropped() {
        let mut t = OpusToAac::new(111, 2).unwrap();
        let opus = sine_opus(1);
        let mut out = Vec::new();
        run(&mut t, &rtp(0, 0, &opus[0]), 100, &mut out);
        // Packet 1 lost: 20 ms filled.
        run(&mut t, &rtp(2, 1920, &opus[1]), 140, &mut out);
        assert_eq!(t.counters.filled, 1);
        assert_eq!(t.next_tick, 2880);
        // A duplicate and a reordered packet are dropped.
        run(&mut t, &rtp(2, 1920, &opus[1]), 140, &mut out);
        run(&mut t, &rtp(1, 960, &opus[1]), 140, &mut out);
        assert_eq!(t.counters.ignored, 2);
        // A second's pause: no silence made, the time line skips it.
        run(&mut t, &rtp(3, 2880 + 48_000, &opus[2]), 1160, &mut out);
        assert_eq!((t.counters.filled, t.skipped), (1, 48_000));
        // Another source (a jump of minutes): it follows on, without a gap.
        run(&mut t, &rtp(4, 90 * 48_000, &opus[3]), 1180, &mut out);
        assert_eq!(t.next_tick, 2880 + 48_000 + 960 + 960);
        for n in 5..50u16 {
            run(
                &mut t,
                &rtp(n, 90 * 48_000 + (u32::from(n) - 4) * 960, &opus[n as usize]),
                0,
                &mut out,
            );
        }
        // Timestamps never go back, and the pause shows in them.
        let times: Vec<u32> = out
            .iter()
            .filter_map(|o| match o {
                Out::Frame(ts, _) => Some(*ts),
                Out::Config(..) => None,
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert!(*times.last().unwrap() > 100 + 1000, "{times:?}");
    }

    #[test]
    fn garbage_and_other_payload_types_are_skipped_without_a_panic() {
        let mut t = OpusToAac::new(111, 1).unwrap();
        assert_eq!(t.config[0], 0xAE);
        let mut out = Vec::new();
        let mut other = rtp(0, 0, &[0xFC, 1, 2]);
        other[1] = 96;
        run(&mut t, &other, 0, &mut out);
        run(&mut t, &[0x80, 111, 0], 0, &mut out);
        run(&mut t, &rtp(0, 0, &[]), 0, &mut out);
        assert!(out.is_empty());
        let mut seed = 7u32;
        for n in 1..400u16 {
            let len = 1 + (n as usize * 37) % 300;
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            run(&mut t, &rtp(n, u32::from(n) * 960, &payload), 0, &mut out);
        }
        assert!(matches!(out[0], Out::Config(0, _)));
    }

    /// Sine packets framed as the `opus_aac` fuzz target reads them, with a loss, a
    /// duplicate and garbage among them.
    fn fuzz_input() -> Vec<u8> {
        let mut data = vec![1u8];
        for (n, p) in sine_opus(1).iter().enumerate().take(20) {
            let seq = if n == 7 { 5 } else { n as u16 };
            let packet = if n == 9 {
                vec![0x80, 111, 0, 9]
            } else {
                rtp(seq, n as u32 * 960, p)
            };
            if n != 3 {
                data.extend_from_slice(&(packet.len() as u16).to_be_bytes());
                data.extend_from_slice(&packet);
            }
        }
        data
    }

    /// The fuzzer's packets on which opus-rs 0.1.40 panics (an underflow reading a SILK
    /// frame's redundancy), framed as the fuzz target reads them.
    const DECODER_PANIC: &[u8] =
        include_bytes!("../../fuzz/corpus/seed-opus_aac/silk_redundancy_underflow");

    #[test]
    fn a_packet_the_decoder_panics_on_is_ignored_and_the_audio_goes_on() {
        let channels = 1 + (DECODER_PANIC[0] & 1);
        let mut t = OpusToAac::new(111, channels).unwrap();
        let mut out = Vec::new();
        let mut rest = &DECODER_PANIC[1..];
        let mut last_seq = 0;
        while let [hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
            if let Ok(header) = RtpHeader::parse(&tail[..len]) {
                last_seq = header.sequence_number();
            }
            run(&mut t, &tail[..len], 0, &mut out);
            rest = &tail[len..];
        }
        assert!(t.counters.ignored > 0);
        // A fresh decoder takes the stream's next packets.
        let decoded = t.counters.packets;
        let frames = out.len();
        for (n, p) in sine_opus(1).iter().enumerate() {
            let seq = last_seq.wrapping_add(1 + n as u16);
            run(&mut t, &rtp(seq, 960 * (1000 + n as u32), p), 0, &mut out);
        }
        assert_eq!(t.counters.packets, decoded + 50);
        assert!(out.len() > frames + 40, "{} frames", out.len() - frames);
    }

    #[test]
    fn the_fuzz_target_takes_its_seed_and_garbage() {
        crate::fuzzing::fuzz_opus_aac(include_bytes!("../../fuzz/corpus/seed-opus_aac/sine"));
        crate::fuzzing::fuzz_opus_aac(DECODER_PANIC);
        crate::fuzzing::fuzz_opus_aac(&fuzz_input());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in (0..3000).step_by(37) {
            crate::fuzzing::fuzz_opus_aac(&crate::fuzzing::pseudo_random_bytes(&mut x, len));
        }
    }

    /// Writes the fuzz seed (`cargo test … write_the_fuzz_seed -- --ignored`).
    #[test]
    #[ignore]
    fn write_the_fuzz_seed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/seed-opus_aac");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/sine"), fuzz_input()).unwrap();
    }
}
