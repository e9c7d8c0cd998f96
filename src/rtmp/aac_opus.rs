//! [`AacToOpus`]: an RTMP stream's AAC audio made into Opus RTP for WebRTC players, sans-IO:
//! raw AAC frames with their RTMP time in, RTP packets out (through a callback).
//!
//! WebRTC players only take Opus (and G.711), encoders publishing RTMP send AAC, so the audio is
//! decoded (symphonia's AAC-LC decoder), resampled to 48 kHz (rubato) and encoded (opus-rs) in
//! 20 ms frames, once per stream whatever the number of players. The RTP clock counts the
//! samples made, anchored to the RTMP time at the first frame and again after a gap, so the
//! audio keeps the encoder's pace without drifting from it.

use std::collections::VecDeque;

use opus_rs::{Application, OpusEncoder};
use rubato::{FftFixedIn, Resampler};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

/// The payload type of the Opus track an RTMP stream with audio is registered with.
pub const OPUS_PT: u8 = 111;
/// Opus in WebRTC: 48 kHz, two channels (RFC 7587), here in 20 ms frames.
const OPUS_RATE: u32 = 48_000;
const CHANNELS: usize = 2;
const FRAME_SAMPLES: usize = 960;
/// What the encoder is asked for: music-grade stereo, as encoders' AAC usually is.
const OPUS_BITRATE_BPS: i32 = 96_000;
/// AAC-LC frames hold 1024 samples per channel.
const AAC_FRAME_SAMPLES: usize = 1024;
/// Samples (per channel) decoded but not yet encoded, at most: more means the RTMP times
/// and the audio disagree (a stalled encoder catching up); the backlog is dropped.
const MAX_BACKLOG_SAMPLES: usize = OPUS_RATE as usize / 2;
/// A frame whose RTMP time is this far from where the samples made so far put it starts a new
/// timeline (the encoder paused, dropped audio, or restarted its clock).
const RESYNC_MS: i64 = 200;
/// The longest Opus packet (RFC 6716 §3.2.1 allows 1275 bytes per frame).
const MAX_OPUS_PACKET: usize = 1275;
const RTP_HEADER: usize = 12;

/// Why the audio cannot be transcoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    /// The AudioSpecificConfig is not AAC-LC with one or two channels (HE-AAC, 5.1, ...).
    #[error("AAC configuration not supported (AAC-LC, mono or stereo only): {0}")]
    UnsupportedConfig(String),
    /// A frame did not decode.
    #[error("AAC frame does not decode: {0}")]
    Decode(String),
    /// The resampler refused the input rate.
    #[error("cannot resample {0} Hz audio to 48 kHz: {1}")]
    Resample(u32, String),
    /// The Opus encoder failed.
    #[error("Opus encoder: {0}")]
    Encode(String),
}

/// One stream's AAC → Opus transcoder (see the module docs).
pub struct AacToOpus {
    decoder: AacDecoder,
    /// From the AAC rate to 48 kHz; none when the AAC is 48 kHz already.
    resampler: Option<FftFixedIn<f32>>,
    input_rate: u32,
    /// Decoded samples per channel waiting for the resampler's fixed input size.
    planar: [Vec<f32>; CHANNELS],
    /// 48 kHz interleaved stereo waiting to fill a 20 ms Opus frame.
    pcm: VecDeque<f32>,
    encoder: OpusEncoder,
    /// One decoded AAC frame, interleaved.
    decoded: Vec<f32>,
    /// One Opus frame's input, interleaved.
    interleaved: Vec<f32>,
    packet: Vec<u8>,
    ssrc: u32,
    seq: u16,
    rtp_base: u32,
    /// The RTP time of the next Opus frame, in samples from `rtp_base`; `None` until the first
    /// frame anchors it.
    next_rtp: Option<u64>,
    /// The RTMP time the next Opus frame starts at, by the samples made since the anchor.
    anchor: Option<(u32, u64)>,
    /// Opus frames made.
    pub frames: u64,
}

impl AacToOpus {
    /// A transcoder for the AAC stream `config` (the AudioSpecificConfig of the sequence
    /// header) whose packets go out on `ssrc`, numbered from `first_seq`, timestamped from
    /// `rtp_base`.
    pub fn new(
        config: &[u8],
        ssrc: u32,
        first_seq: u16,
        rtp_base: u32,
    ) -> Result<Self, AudioError> {
        let mut params = AudioCodecParameters::new();
        params.codec = CODEC_ID_AAC;
        params.extra_data = Some(config.to_vec().into_boxed_slice());
        let decoder = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| AudioError::UnsupportedConfig(e.to_string()))?;
        let input_rate = decoder.codec_params().sample_rate.unwrap_or(OPUS_RATE);
        let resampler = if input_rate == OPUS_RATE {
            None
        } else {
            let resampler = FftFixedIn::new(
                input_rate as usize,
                OPUS_RATE as usize,
                AAC_FRAME_SAMPLES,
                2,
                CHANNELS,
            )
            .map_err(|e| AudioError::Resample(input_rate, e.to_string()))?;
            Some(resampler)
        };
        let mut encoder = OpusEncoder::new(OPUS_RATE as i32, CHANNELS, Application::Audio)
            .map_err(|e| AudioError::Encode(e.to_string()))?;
        encoder.bitrate_bps = OPUS_BITRATE_BPS;
        Ok(AacToOpus {
            decoder,
            resampler,
            input_rate,
            planar: [Vec::new(), Vec::new()],
            pcm: VecDeque::new(),
            encoder,
            decoded: Vec::new(),
            interleaved: vec![0.0; FRAME_SAMPLES * CHANNELS],
            packet: vec![0; RTP_HEADER + MAX_OPUS_PACKET],
            ssrc,
            seq: first_seq,
            rtp_base,
            next_rtp: None,
            anchor: None,
            frames: 0,
        })
    }

    /// The sequence number of the next packet.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The AAC sample rate.
    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// Forgets buffered audio: the next frame starts a new timeline (after a pause in
    /// transcoding, when no player wanted the audio).
    pub fn restart(&mut self) {
        self.decoder.reset();
        for channel in &mut self.planar {
            channel.clear();
        }
        self.pcm.clear();
        self.anchor = None;
    }

    /// One raw AAC frame at RTMP time `timestamp_ms`; `emit` gets each Opus RTP packet.
    pub fn handle_frame(
        &mut self,
        timestamp_ms: u32,
        frame: &[u8],
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), AudioError> {
        self.resync(timestamp_ms);
        self.decode(frame)?;
        self.resample()?;
        if self.pcm.len() > MAX_BACKLOG_SAMPLES * CHANNELS {
            self.pcm.clear();
            self.anchor = None;
            return Ok(());
        }
        while self.pcm.len() >= FRAME_SAMPLES * CHANNELS {
            for (slot, sample) in self
                .interleaved
                .iter_mut()
                .zip(self.pcm.drain(..FRAME_SAMPLES * CHANNELS))
            {
                *slot = sample;
            }
            let len = self
                .encoder
                .encode(
                    &self.interleaved,
                    FRAME_SAMPLES,
                    &mut self.packet[RTP_HEADER..],
                )
                .map_err(|e| AudioError::Encode(e.to_string()))?;
            let rtp_time = self.next_rtp.unwrap_or(0);
            self.write_header(rtp_time);
            emit(&self.packet[..RTP_HEADER + len]);
            self.seq = self.seq.wrapping_add(1);
            self.next_rtp = Some(rtp_time + FRAME_SAMPLES as u64);
            if let Some((_, made)) = self.anchor.as_mut() {
                *made += FRAME_SAMPLES as u64;
            }
            self.frames += 1;
        }
        Ok(())
    }

    /// Anchors the RTP clock at the first frame, and again when `timestamp_ms` is far from
    /// where the samples made so far put the stream.
    fn resync(&mut self, timestamp_ms: u32) {
        let buffered = (self.pcm.len() / CHANNELS) as u64;
        if let Some((at_ms, made)) = self.anchor {
            let expected_ms =
                i64::from(at_ms) + ((made + buffered) * 1000 / u64::from(OPUS_RATE)) as i64;
            let actual_ms = i64::from(at_ms) + i64::from(timestamp_ms.wrapping_sub(at_ms) as i32);
            if (actual_ms - expected_ms).abs() <= RESYNC_MS {
                return;
            }
            self.pcm.clear();
            for channel in &mut self.planar {
                channel.clear();
            }
        }
        self.anchor = Some((timestamp_ms, 0));
        let rtp = u64::from(timestamp_ms) * u64::from(OPUS_RATE) / 1000;
        // Never backwards: players' jitter buffers take a new timeline only going forward.
        self.next_rtp = Some(self.next_rtp.map_or(rtp, |next| next.max(rtp)));
    }

    fn decode(&mut self, frame: &[u8]) -> Result<(), AudioError> {
        let packet = PacketRef::new(
            0,
            Timestamp::new(0),
            Duration::new(AAC_FRAME_SAMPLES as u64),
            frame,
        );
        // symphonia decodes what the publisher sent: a panic in it (none known) costs this
        // frame and the decoder's state, not the stream's audio task.
        let decoder = &mut self.decoder;
        match crate::panic_guard::catch_silent(|| decoder.decode_ref(&packet).map(|_| ())) {
            Ok(result) => result.map_err(|e| AudioError::Decode(e.to_string()))?,
            Err(site) => {
                self.decoder.reset();
                return Err(AudioError::Decode(format!(
                    "the AAC decoder panicked at {site}"
                )));
            }
        };
        let decoded = self.decoder.last_decoded();
        let channels = decoded.spec().channels().count();
        let frames = decoded.frames();
        self.decoded.resize(frames * channels, 0.0);
        decoded.copy_to_slice_interleaved(&mut self.decoded[..]);
        for i in 0..frames {
            let left = self.decoded[i * channels];
            // Mono is sent as two equal channels.
            let right = if channels > 1 {
                self.decoded[i * channels + 1]
            } else {
                left
            };
            self.planar[0].push(left);
            self.planar[1].push(right);
        }
        Ok(())
    }

    /// Moves the decoded samples to the 48 kHz queue, through the resampler in its input size.
    fn resample(&mut self) -> Result<(), AudioError> {
        let Some(resampler) = self.resampler.as_mut() else {
            for (&left, &right) in self.planar[0].iter().zip(&self.planar[1]) {
                self.pcm.push_back(left);
                self.pcm.push_back(right);
            }
            for channel in &mut self.planar {
                channel.clear();
            }
            return Ok(());
        };
        loop {
            let needed = resampler.input_frames_next();
            if self.planar[0].len() < needed {
                return Ok(());
            }
            let input = [&self.planar[0][..needed], &self.planar[1][..needed]];
            let output = resampler
                .process(&input, None)
                .map_err(|e| AudioError::Resample(self.input_rate, e.to_string()))?;
            for (&left, &right) in output[0].iter().zip(&output[1]) {
                self.pcm.push_back(left);
                self.pcm.push_back(right);
            }
            for channel in &mut self.planar {
                channel.drain(..needed);
            }
        }
    }

    fn write_header(&mut self, rtp_time: u64) {
        let timestamp = self.rtp_base.wrapping_add(rtp_time as u32);
        let header = &mut self.packet[..RTP_HEADER];
        header[0] = 0x80;
        header[1] = OPUS_PT;
        header[2..4].copy_from_slice(&self.seq.to_be_bytes());
        header[4..8].copy_from_slice(&timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Asserts that 48 kHz `samples` hold a 440 Hz tone louder than `min_rms`, past the
    /// codecs' start-up (the first 200 ms) and before their end (the last 100 ms): both
    /// transcoders' tests.
    pub(in crate::rtmp) fn assert_tone_440(samples: &[f32], min_rms: f32) {
        let middle = &samples[9_600..samples.len() - 4_800];
        // Rising zero crossings a second.
        let crossings = middle
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        let hz = crossings as f32 / (middle.len() as f32 / 48_000.0);
        assert!((430.0..450.0).contains(&hz), "{hz} Hz");
        let rms = (middle.iter().map(|x| x * x).sum::<f32>() / middle.len() as f32).sqrt();
        assert!(rms > min_rms, "rms {rms}");
    }

    /// AAC-LC, 44.1 kHz, stereo.
    const CONFIG: [u8; 2] = [0x12, 0x10];

    #[test]
    fn he_aac_and_multichannel_configs_are_refused_clearly() {
        // Object type 5 (SBR), 44.1 kHz, stereo.
        let he_aac = [0x2A, 0x10];
        assert!(matches!(
            AacToOpus::new(&he_aac, 1, 0, 0),
            Err(AudioError::UnsupportedConfig(_))
        ));
        // AAC-LC, 44.1 kHz, 6 channels.
        let surround = [0x12, 0x30];
        assert!(matches!(
            AacToOpus::new(&surround, 1, 0, 0),
            Err(AudioError::UnsupportedConfig(_))
        ));
        assert!(AacToOpus::new(&[0x12], 1, 0, 0).is_err());
        assert_eq!(
            AacToOpus::new(&CONFIG, 1, 0, 0).unwrap().input_rate(),
            44_100
        );
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        let mut t = AacToOpus::new(&CONFIG, 1, 0, 0).unwrap();
        let mut emitted = 0;
        for garbage in [
            &[][..],
            &[0xFF; 3],
            &[0x21, 0x1B, 0x94, 0xA5, 0x00],
            &[0u8; 2048],
        ] {
            let _ = t.handle_frame(0, garbage, |_| emitted += 1);
        }
        assert!(emitted < 4);
    }

    #[test]
    fn rtp_timestamps_follow_the_samples_and_restart_after_a_gap() {
        let mut t = AacToOpus::new(&CONFIG, 9, 100, 1000).unwrap();
        t.anchor = None;
        t.resync(2000);
        assert_eq!(t.next_rtp, Some(96_000));
        t.write_header(96_000);
        assert_eq!(&t.packet[..2], &[0x80, OPUS_PT]);
        assert_eq!(u16::from_be_bytes([t.packet[2], t.packet[3]]), 100);
        assert_eq!(
            u32::from_be_bytes(t.packet[4..8].try_into().unwrap()),
            97_000
        );
        assert_eq!(u32::from_be_bytes(t.packet[8..12].try_into().unwrap()), 9);
        // Two seconds of frames later, on time: no resync.
        t.anchor = Some((2000, 96_000));
        t.next_rtp = Some(192_000);
        t.resync(4010);
        assert_eq!(t.next_rtp, Some(192_000));
        // A second's gap: a new anchor at the RTMP time.
        t.resync(5000);
        assert_eq!(t.next_rtp, Some(240_000));
        // An encoder clock going back does not move RTP time back.
        t.resync(1000);
        assert_eq!(t.next_rtp, Some(240_000));
    }

    /// The raw frames of an ADTS file (ffmpeg's `-f adts`), and the AudioSpecificConfig its
    /// headers describe.
    pub(in crate::rtmp) fn adts_frames(data: &[u8]) -> (Vec<&[u8]>, [u8; 2]) {
        let mut frames = Vec::new();
        let mut config = [0; 2];
        let mut at = 0;
        while at + 7 <= data.len() {
            let h = &data[at..at + 7];
            let len =
                (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
            let (profile, rate, channels) = (
                (h[2] >> 6) + 1,
                (h[2] >> 2) & 0xF,
                ((h[2] & 1) << 2) | (h[3] >> 6),
            );
            config = [
                (profile << 3) | (rate >> 1),
                ((rate & 1) << 7) | (channels << 3),
            ];
            let header = if h[1] & 1 == 1 { 7 } else { 9 };
            frames.push(&data[at + header..at + len]);
            at += len;
        }
        (frames, config)
    }

    #[test]
    fn a_second_of_aac_becomes_fifty_opus_frames_that_decode_to_the_same_tone() {
        let data = include_bytes!("testdata/sine440_44k1_stereo.aac");
        let (frames, config) = adts_frames(data);
        assert_eq!(config, CONFIG);
        let mut t = AacToOpus::new(&config, 7, 65_535, 0).unwrap();
        let mut packets: Vec<Vec<u8>> = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let ms = (i * AAC_FRAME_SAMPLES * 1000 / 44_100) as u32;
            t.handle_frame(ms, frame, |p| packets.push(p.to_vec()))
                .unwrap();
        }
        // A second of AAC and the encoder's priming frames, less what the resampler and the
        // last partial frame hold.
        assert_eq!(frames.len(), 45);
        assert!((48..=53).contains(&packets.len()), "{}", packets.len());
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        let ts = |p: &[u8]| u32::from_be_bytes(p[4..8].try_into().unwrap());
        assert_eq!((seq(&packets[0]), seq(&packets[1])), (65_535, 0));
        assert_eq!(ts(&packets[1]) - ts(&packets[0]), 960);
        let mut decoder = opus_rs::OpusDecoder::new(48_000, 2).unwrap();
        let mut left: Vec<f32> = Vec::new();
        let mut out = vec![0f32; FRAME_SAMPLES * CHANNELS];
        for p in &packets {
            let n = decoder
                .decode(&p[RTP_HEADER..], FRAME_SAMPLES, &mut out)
                .unwrap();
            left.extend(out[..n * CHANNELS].iter().step_by(2).copied());
        }
        assert_tone_440(&left, 0.03);
    }
}
