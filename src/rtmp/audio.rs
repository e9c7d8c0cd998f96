//! [`RtmpAudio`]: one published RTMP stream's audio, sans-IO: what the encoder announced, its
//! AAC sequence header, and the transcoder to Opus ([`super::aac_opus`]) while players want
//! audio. Audio messages in, Opus RTP packets out (through a callback), and what to tell the
//! operator once.

use super::aac_opus::{AacToOpus, AudioError};
use super::flv::{parse_audio, AudioTag, FlvError};

/// FLV SoundFormat 10, as `onMetaData`'s `audiocodecid` names AAC.
pub const AUDIO_CODEC_ID_AAC: u32 = 10;

/// What an audio message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutcome {
    /// Opus packets went out (how many).
    Sent(usize),
    /// The AAC sequence header came: the transcoder is ready (its input rate).
    Configured { input_rate: u32 },
    /// Nothing went out: no player wants audio, or the stream was registered without audio.
    Idle,
}

/// Why an audio message is not forwarded; each is said once per stream, the video goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpAudioError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error(transparent)]
    Transcode(#[from] AudioError),
    /// MP3, Speex, G.711 or Enhanced RTMP audio: not carried (yet).
    #[error("FLV sound format {0} is not supported (only AAC, transcoded to Opus)")]
    UnsupportedFormat(u8),
    /// An AAC frame before its sequence header.
    #[error("AAC frame before the AAC sequence header")]
    NoConfig,
    /// Audio came although the stream was registered without an audio track (the encoder's
    /// metadata did not announce it and it came after the video's sequence header).
    #[error("audio came after the stream went live without an audio track (not announced in onMetaData)")]
    NotAnnounced,
}

/// One stream's audio (see the module docs).
pub struct RtmpAudio {
    ssrc: u32,
    first_seq: u16,
    rtp_base: u32,
    /// `onMetaData` named AAC.
    announced: bool,
    /// The stream is registered with an Opus track: packets have somewhere to go.
    registered: bool,
    transcoder: Option<AacToOpus>,
    /// Players want audio; while they do not, frames are not decoded.
    wanted: bool,
}

impl RtmpAudio {
    /// Audio whose Opus packets go out on `ssrc`, numbered from `first_seq`, timestamped from
    /// `rtp_base`.
    pub fn new(ssrc: u32, first_seq: u16, rtp_base: u32) -> RtmpAudio {
        RtmpAudio {
            ssrc,
            first_seq,
            rtp_base,
            announced: false,
            registered: false,
            transcoder: None,
            wanted: true,
        }
    }

    /// The encoder's `onMetaData` named this audio codec id.
    pub fn announce(&mut self, audio_codec_id: Option<u32>) {
        self.announced |= audio_codec_id == Some(AUDIO_CODEC_ID_AAC);
    }

    /// Whether the stream, registered now, should have an Opus track: the metadata announced
    /// AAC or its sequence header came already.
    pub fn expected(&self) -> bool {
        self.announced || self.transcoder.is_some()
    }

    /// The stream was registered, with an Opus track if `with_audio`.
    pub fn set_registered(&mut self, with_audio: bool) {
        self.registered = with_audio;
    }

    /// Whether any player wants the audio; transcoding pauses while none does. Returns
    /// whether that changed.
    pub fn set_wanted(&mut self, wanted: bool) -> bool {
        if wanted && !self.wanted {
            if let Some(transcoder) = self.transcoder.as_mut() {
                transcoder.restart();
            }
        }
        std::mem::replace(&mut self.wanted, wanted) != wanted
    }

    /// Opus frames made so far.
    pub fn frames(&self) -> u64 {
        self.transcoder.as_ref().map_or(0, |t| t.frames)
    }

    /// One audio message at RTMP time `timestamp_ms`; `emit` gets each Opus RTP packet.
    pub fn handle(
        &mut self,
        timestamp_ms: u32,
        data: &[u8],
        mut emit: impl FnMut(&[u8]),
    ) -> Result<AudioOutcome, RtmpAudioError> {
        match parse_audio(data)? {
            AudioTag::AacConfig(config) => {
                // A repeated sequence header (an encoder reconfigured) goes on numbering where
                // the last one stopped: players see one stream, not a jump back.
                let seq = self
                    .transcoder
                    .as_ref()
                    .map_or(self.first_seq, AacToOpus::next_seq);
                let transcoder = AacToOpus::new(config, self.ssrc, seq, self.rtp_base)?;
                let input_rate = transcoder.input_rate();
                self.transcoder = Some(transcoder);
                Ok(AudioOutcome::Configured { input_rate })
            }
            AudioTag::AacFrame(frame) => {
                let transcoder = self.transcoder.as_mut().ok_or(RtmpAudioError::NoConfig)?;
                if !self.registered {
                    return if self.announced {
                        Ok(AudioOutcome::Idle)
                    } else {
                        Err(RtmpAudioError::NotAnnounced)
                    };
                }
                if !self.wanted {
                    return Ok(AudioOutcome::Idle);
                }
                let mut sent = 0;
                transcoder.handle_frame(timestamp_ms, frame, |packet| {
                    sent += 1;
                    emit(packet);
                })?;
                Ok(AudioOutcome::Sent(sent))
            }
            AudioTag::Unsupported(format) => Err(RtmpAudioError::UnsupportedFormat(format)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AAC sequence header message: AAC-LC, 44.1 kHz, stereo.
    const CONFIG: [u8; 4] = [0xAF, 0, 0x12, 0x10];

    /// The raw frames of the test tone, as RTMP audio messages.
    fn frames() -> Vec<Vec<u8>> {
        let data = include_bytes!("testdata/sine440_44k1_stereo.aac");
        let (frames, _) = crate::rtmp::aac_opus::tests::adts_frames(data);
        frames
            .iter()
            .map(|frame| [&[0xAF, 1][..], frame].concat())
            .collect()
    }

    fn play(audio: &mut RtmpAudio) -> usize {
        let mut packets = 0;
        for (i, frame) in frames().iter().enumerate() {
            let ms = (i * 1024 * 1000 / 44_100) as u32;
            audio.handle(ms, frame, |_| packets += 1).unwrap();
        }
        packets
    }

    #[test]
    fn announced_aac_is_expected_and_transcoded_once_registered_and_wanted() {
        let mut audio = RtmpAudio::new(1, 0, 0);
        assert!(!audio.expected());
        audio.announce(Some(AUDIO_CODEC_ID_AAC));
        assert!(audio.expected());
        assert_eq!(
            audio.handle(0, &CONFIG, |_| {}),
            Ok(AudioOutcome::Configured { input_rate: 44_100 })
        );
        // Not registered yet (the video's sequence header is still to come): nothing out.
        assert_eq!(play(&mut audio), 0);
        audio.set_registered(true);
        audio.set_wanted(false);
        assert_eq!(play(&mut audio), 0, "no player wants audio");
        audio.set_wanted(true);
        assert!(play(&mut audio) >= 48);
        assert!(audio.frames() >= 48);
        // The encoder sends its sequence header again: numbering goes on.
        let record = |audio: &mut RtmpAudio, seqs: &mut Vec<u16>| {
            for (i, frame) in frames().iter().enumerate().take(10) {
                let ms = 10_000 + (i * 1024 * 1000 / 44_100) as u32;
                audio
                    .handle(ms, frame, |p| seqs.push(u16::from_be_bytes([p[2], p[3]])))
                    .unwrap();
            }
        };
        let mut seqs = Vec::new();
        record(&mut audio, &mut seqs);
        let before = seqs.len();
        audio.handle(0, &CONFIG, |_| {}).unwrap();
        record(&mut audio, &mut seqs);
        assert!(before > 0 && seqs.len() > before, "{seqs:?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
    }

    #[test]
    fn unannounced_late_audio_other_formats_and_frames_before_config_are_said() {
        let mut audio = RtmpAudio::new(1, 0, 0);
        audio.announce(Some(2));
        assert!(!audio.expected(), "MP3 is not carried");
        let frame = &frames()[3];
        assert_eq!(
            audio.handle(0, frame, |_| {}),
            Err(RtmpAudioError::NoConfig)
        );
        audio.handle(0, &CONFIG, |_| {}).unwrap();
        assert!(
            audio.expected(),
            "its sequence header came before the video's"
        );
        audio.set_registered(false);
        assert_eq!(
            audio.handle(0, frame, |_| {}),
            Err(RtmpAudioError::NotAnnounced)
        );
        assert_eq!(
            audio.handle(0, &[0x2F, 0xFF, 0xFB], |_| {}),
            Err(RtmpAudioError::UnsupportedFormat(2))
        );
        assert_eq!(
            audio.handle(0, &[0xAF], |_| {}),
            Err(RtmpAudioError::Flv(FlvError::Truncated))
        );
    }
}
