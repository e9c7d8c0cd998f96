//! [`RtmpAudio`]: one published RTMP stream's audio, sans-IO: what the encoder announced, and
//! either its AAC sequence header and the transcoder to Opus ([`super::aac_opus`]) while
//! players want audio, or (Enhanced RTMP's FourCC `Opus`) its Opus packets forwarded as they
//! come, one RTP packet each, whether players listen or not (passing them on costs nothing).
//! Audio messages in, Opus RTP packets out (through a callback), and what to tell the operator
//! once.

use super::aac_opus::{AacToOpus, AudioError, OPUS_PT};
use super::flv::{fourcc_codec_id, parse_audio, AudioTag, FlvError, OpusHead};
use super::flv::{FOURCC_AAC, FOURCC_OPUS};
use super::nal_rtp::RTP_MAX_PACKET;

/// FLV SoundFormat 10, as `onMetaData`'s `audiocodecid` names AAC.
pub const AUDIO_CODEC_ID_AAC: u32 = 10;
/// Enhanced RTMP's `audiocodecid` for AAC: the FourCC `mp4a` as a number.
pub const AUDIO_CODEC_ID_MP4A: u32 = fourcc_codec_id(FOURCC_AAC);
/// Enhanced RTMP's `audiocodecid` for Opus: the FourCC `Opus` as a number.
pub const AUDIO_CODEC_ID_OPUS: u32 = fourcc_codec_id(FOURCC_OPUS);

/// Opus's RTP clock (RFC 7587 §4.1): 48 kHz whatever the encoder's input rate.
const OPUS_TICKS_PER_MS: u32 = 48;
const RTP_HEADER: usize = 12;

/// What an audio message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutcome {
    /// Opus packets went out (how many).
    Sent(usize),
    /// The AAC sequence header came: the transcoder is ready (its input rate).
    Configured { input_rate: u32 },
    /// The Opus sequence start came: its packets are forwarded (its channels, and the
    /// encoder's input rate, 48 kHz when the header does not say).
    OpusConfigured { channels: u8, input_rate: u32 },
    /// Nothing went out: no player wants audio, the stream was registered without audio, or
    /// the message carries none (an end of sequence, silence).
    Idle,
}

/// Why an audio message is not forwarded; each is said once per stream, the video goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpAudioError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error(transparent)]
    Transcode(#[from] AudioError),
    /// MP3, Speex, G.711 or another classic FLV sound format: not carried.
    #[error("FLV sound format {0} is not supported (only AAC, transcoded to Opus, and Opus over Enhanced RTMP)")]
    UnsupportedFormat(u8),
    /// An AAC frame before its sequence header.
    #[error("AAC frame before the AAC sequence header")]
    NoConfig,
    /// Audio came although the stream was registered without an audio track (the encoder's
    /// metadata did not announce it and it came after the video's sequence header).
    #[error("audio came after the stream went live without an audio track (not announced in onMetaData)")]
    NotAnnounced,
    /// Opus in more than one stream (surround): a WebRTC player's Opus track is one stream,
    /// mono or stereo.
    #[error("multistream Opus ({0} channels) is not supported: WebRTC players take one mono or stereo stream")]
    OpusChannels(u8),
    /// An Opus packet too large for one RTP packet within the node's MTU.
    #[error("Opus packet of {0} bytes does not fit one RTP packet")]
    OpusTooLarge(usize),
}

/// One stream's audio (see the module docs).
pub struct RtmpAudio {
    ssrc: u32,
    first_seq: u16,
    rtp_base: u32,
    /// What `onMetaData` named, when it named AAC or Opus.
    announced: Option<u32>,
    /// The stream is registered with an Opus track: packets have somewhere to go.
    registered: bool,
    /// AAC, transcoded; at most one of `transcoder` and `opus` is set.
    transcoder: Option<AacToOpus>,
    /// Opus, forwarded.
    opus: Option<OpusForward>,
    /// Players want audio; while they do not, AAC frames are not decoded.
    wanted: bool,
}

/// An Opus stream forwarded as it comes: the RTP packet it is written into, and its
/// numbering.
struct OpusForward {
    packet: Box<[u8; RTP_MAX_PACKET]>,
    seq: u16,
    frames: u64,
}

impl RtmpAudio {
    /// Audio whose Opus packets go out on `ssrc`, numbered from `first_seq`, timestamped from
    /// `rtp_base`.
    pub fn new(ssrc: u32, first_seq: u16, rtp_base: u32) -> RtmpAudio {
        RtmpAudio {
            ssrc,
            first_seq,
            rtp_base,
            announced: None,
            registered: false,
            transcoder: None,
            opus: None,
            wanted: true,
        }
    }

    /// The encoder's `onMetaData` named this audio codec id (a classic FLV SoundFormat, or
    /// with Enhanced RTMP a FourCC as a number).
    pub fn announce(&mut self, audio_codec_id: Option<u32>) {
        if let Some(id @ (AUDIO_CODEC_ID_AAC | AUDIO_CODEC_ID_MP4A | AUDIO_CODEC_ID_OPUS)) =
            audio_codec_id
        {
            self.announced = Some(id);
        }
    }

    /// Whether the stream, registered now, should have an Opus track: the metadata announced
    /// AAC or Opus, or its sequence header (or a first Opus packet) came already.
    pub fn expected(&self) -> bool {
        self.announced.is_some() || self.transcoder.is_some() || self.opus.is_some()
    }

    /// Whether the audio is Opus forwarded as it comes (rather than AAC transcoded), as far as
    /// is known yet.
    pub fn is_opus(&self) -> bool {
        self.opus.is_some()
            || (self.transcoder.is_none() && self.announced == Some(AUDIO_CODEC_ID_OPUS))
    }

    /// The stream was registered, with an Opus track if `with_audio`.
    pub fn set_registered(&mut self, with_audio: bool) {
        self.registered = with_audio;
    }

    /// Whether any player wants the audio; AAC transcoding pauses while none does (Opus is
    /// forwarded regardless). Returns whether that changed.
    pub fn set_wanted(&mut self, wanted: bool) -> bool {
        if wanted && !self.wanted {
            if let Some(transcoder) = self.transcoder.as_mut() {
                transcoder.restart();
            }
        }
        std::mem::replace(&mut self.wanted, wanted) != wanted
    }

    /// Opus frames made or forwarded so far.
    pub fn frames(&self) -> u64 {
        let made = self.transcoder.as_ref().map_or(0, |t| t.frames);
        made + self.opus.as_ref().map_or(0, |o| o.frames)
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
                let transcoder = AacToOpus::new(config, self.ssrc, self.next_seq(), self.rtp_base)?;
                let input_rate = transcoder.input_rate();
                self.transcoder = Some(transcoder);
                self.opus = None;
                Ok(AudioOutcome::Configured { input_rate })
            }
            AudioTag::AacFrame(frame) => {
                let transcoder = self.transcoder.as_mut().ok_or(RtmpAudioError::NoConfig)?;
                if !self.registered {
                    return if self.announced.is_some() {
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
            AudioTag::OpusConfig(head) => self.configure_opus(head),
            AudioTag::OpusChannels(channels) if channels > 2 => {
                Err(RtmpAudioError::OpusChannels(channels))
            }
            AudioTag::OpusFrame(frame) => self.forward_opus(timestamp_ms, frame, emit),
            AudioTag::OpusChannels(_) | AudioTag::Other => Ok(AudioOutcome::Idle),
            AudioTag::Unsupported(format) => Err(RtmpAudioError::UnsupportedFormat(format)),
        }
    }

    /// An Opus sequence start: Opus is forwarded from now on, numbered on from the packets
    /// before it (a repeated sequence start, or a switch from AAC).
    fn configure_opus(&mut self, head: Option<OpusHead>) -> Result<AudioOutcome, RtmpAudioError> {
        // Without an ID header the spec means mono or stereo.
        let (channels, input_rate) = head.map_or((2, 0), |h| (h.channels, h.input_rate));
        if head.is_some_and(|h| h.streams != 1) || channels > 2 {
            return Err(RtmpAudioError::OpusChannels(channels));
        }
        self.start_opus();
        Ok(AudioOutcome::OpusConfigured {
            channels,
            input_rate: if input_rate == 0 { 48_000 } else { input_rate },
        })
    }

    /// Opus from now on (the AAC transcoder, if any, goes), numbered on from what went out.
    fn start_opus(&mut self) -> &mut OpusForward {
        let seq = self.next_seq();
        self.transcoder = None;
        self.opus.get_or_insert_with(|| OpusForward {
            packet: Box::new([0; RTP_MAX_PACKET]),
            seq,
            frames: 0,
        })
    }

    /// One Opus packet as one RTP packet (RFC 7587): the 48 kHz clock follows the RTMP time,
    /// the marker stays clear (no DTX talkspurts are signalled over RTMP).
    fn forward_opus(
        &mut self,
        timestamp_ms: u32,
        frame: &[u8],
        mut emit: impl FnMut(&[u8]),
    ) -> Result<AudioOutcome, RtmpAudioError> {
        // Opus packets describe themselves (RFC 6716 §3.1), and the ID header is optional:
        // a packet before any sequence start starts the stream.
        let (ssrc, rtp_base) = (self.ssrc, self.rtp_base);
        let (registered, announced) = (self.registered, self.announced.is_some());
        let opus = self.start_opus();
        if !registered {
            return if announced {
                Ok(AudioOutcome::Idle)
            } else {
                Err(RtmpAudioError::NotAnnounced)
            };
        }
        let len = RTP_HEADER + frame.len();
        if len > RTP_MAX_PACKET {
            return Err(RtmpAudioError::OpusTooLarge(frame.len()));
        }
        let timestamp = rtp_base.wrapping_add(timestamp_ms.wrapping_mul(OPUS_TICKS_PER_MS));
        let packet = &mut opus.packet[..len];
        packet[0] = 0x80;
        packet[1] = OPUS_PT;
        packet[2..4].copy_from_slice(&opus.seq.to_be_bytes());
        packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        packet[RTP_HEADER..].copy_from_slice(frame);
        emit(packet);
        opus.seq = opus.seq.wrapping_add(1);
        opus.frames += 1;
        Ok(AudioOutcome::Sent(1))
    }

    /// The sequence number the next packet gets, whichever codec sent the last one.
    fn next_seq(&self) -> u16 {
        match (&self.transcoder, &self.opus) {
            (Some(transcoder), _) => transcoder.next_seq(),
            (None, Some(opus)) => opus.seq,
            (None, None) => self.first_seq,
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

    use crate::rtmp::flv::tests::{ex_audio, opus_head};
    use crate::rtmp::flv::{
        AUDIO_PACKET_CODED_FRAMES, AUDIO_PACKET_MULTICHANNEL_CONFIG, AUDIO_PACKET_SEQUENCE_END,
        AUDIO_PACKET_SEQUENCE_START, FOURCC_AC3,
    };

    fn opus_start(channels: u8) -> Vec<u8> {
        ex_audio(
            AUDIO_PACKET_SEQUENCE_START,
            FOURCC_OPUS,
            &opus_head(channels, 44_100),
        )
    }

    fn opus_frame(payload: &[u8]) -> Vec<u8> {
        ex_audio(AUDIO_PACKET_CODED_FRAMES, FOURCC_OPUS, payload)
    }

    /// (sequence number, timestamp, marker and payload type, ssrc, payload) of a packet.
    fn fields(packet: &[u8]) -> (u16, u32, u8, u32, Vec<u8>) {
        (
            u16::from_be_bytes([packet[2], packet[3]]),
            u32::from_be_bytes(packet[4..8].try_into().unwrap()),
            packet[1],
            u32::from_be_bytes(packet[8..12].try_into().unwrap()),
            packet[12..].to_vec(),
        )
    }

    #[test]
    fn opus_is_forwarded_one_packet_each_numbered_on_48khz_time_whoever_listens() {
        let mut audio = RtmpAudio::new(0xABCD, 65_534, u32::MAX - 48 * 30);
        assert!(!audio.is_opus());
        audio.announce(Some(AUDIO_CODEC_ID_OPUS));
        assert!(audio.expected() && audio.is_opus());
        assert_eq!(
            audio.handle(0, &opus_start(2), |_| panic!("nothing to send")),
            Ok(AudioOutcome::OpusConfigured {
                channels: 2,
                input_rate: 44_100
            })
        );
        // Not registered yet: announced, so quietly nothing.
        assert_eq!(
            audio.handle(0, &opus_frame(&[0xFC, 1]), |_| panic!("not registered")),
            Ok(AudioOutcome::Idle)
        );
        audio.set_registered(true);
        // No player wants audio: forwarded all the same.
        audio.set_wanted(false);
        let mut packets = Vec::new();
        for (i, ms) in [20u32, 40, 60].into_iter().enumerate() {
            let payload = [0xFC, i as u8, 0xAA];
            let outcome = audio.handle(ms, &opus_frame(&payload), |p| packets.push(fields(p)));
            assert_eq!(outcome, Ok(AudioOutcome::Sent(1)));
        }
        // An encoder repeating its sequence start (and an end of sequence) goes on numbering.
        assert_eq!(
            audio.handle(
                70,
                &ex_audio(AUDIO_PACKET_SEQUENCE_END, FOURCC_OPUS, &[]),
                |_| {}
            ),
            Ok(AudioOutcome::Idle)
        );
        audio.handle(80, &opus_start(1), |_| {}).unwrap();
        audio
            .handle(80, &opus_frame(&[0x78]), |p| packets.push(fields(p)))
            .unwrap();
        let base = u32::MAX - 48 * 30;
        assert_eq!(
            packets,
            [
                (
                    65_534,
                    base.wrapping_add(20 * 48),
                    OPUS_PT,
                    0xABCD,
                    vec![0xFC, 0, 0xAA]
                ),
                (
                    65_535,
                    base.wrapping_add(40 * 48),
                    OPUS_PT,
                    0xABCD,
                    vec![0xFC, 1, 0xAA]
                ),
                (
                    0,
                    base.wrapping_add(60 * 48),
                    OPUS_PT,
                    0xABCD,
                    vec![0xFC, 2, 0xAA]
                ),
                (1, base.wrapping_add(80 * 48), OPUS_PT, 0xABCD, vec![0x78]),
            ]
        );
        assert!(packets[0].1 > packets[1].1, "the clock wrapped");
        assert_eq!(audio.frames(), 4);
    }

    #[test]
    fn opus_surround_oversized_packets_and_unannounced_late_opus_are_said() {
        let mut audio = RtmpAudio::new(1, 0, 0);
        assert_eq!(
            audio.handle(0, &opus_start(6), |_| {}),
            Err(RtmpAudioError::Flv(FlvError::BadOpusHead(
                "mapping family 0 with more than 2 channels"
            )))
        );
        let surround = ex_audio(AUDIO_PACKET_MULTICHANNEL_CONFIG, FOURCC_OPUS, &[1, 6]);
        assert_eq!(
            audio.handle(0, &surround, |_| {}),
            Err(RtmpAudioError::OpusChannels(6))
        );
        // The stream went live without audio; Opus comes after.
        audio.set_registered(false);
        assert_eq!(
            audio.handle(0, &opus_frame(&[0xFC]), |_| {}),
            Err(RtmpAudioError::NotAnnounced)
        );
        audio.set_registered(true);
        let big = vec![0xFC; RTP_MAX_PACKET];
        assert_eq!(
            audio.handle(0, &opus_frame(&big), |_| {}),
            Err(RtmpAudioError::OpusTooLarge(RTP_MAX_PACKET))
        );
        let ac3 = ex_audio(AUDIO_PACKET_SEQUENCE_START, FOURCC_AC3, &[]);
        assert_eq!(
            audio.handle(0, &ac3, |_| {}),
            Err(RtmpAudioError::Flv(FlvError::UnsupportedAudioFourCc(
                FOURCC_AC3
            )))
        );
    }

    #[test]
    fn opus_without_id_header_starts_at_its_first_packet_and_aac_switches_keep_numbering() {
        let mut audio = RtmpAudio::new(9, 100, 0);
        // Opus packets describe themselves: no sequence start needed.
        let before = audio.handle(0, &opus_frame(&[0xFC]), |_| {});
        assert_eq!(before, Err(RtmpAudioError::NotAnnounced));
        assert!(audio.expected() && audio.is_opus(), "registered with audio");
        audio.set_registered(true);
        let mut seqs = Vec::new();
        audio
            .handle(20, &opus_frame(&[0xFC]), |p| seqs.push(fields(p).0))
            .unwrap();
        assert_eq!(seqs, [100]);
        // The encoder switches to AAC: transcoded, numbered on.
        assert_eq!(
            audio.handle(40, &CONFIG, |_| {}),
            Ok(AudioOutcome::Configured { input_rate: 44_100 })
        );
        assert!(!audio.is_opus());
        for (i, frame) in frames().iter().enumerate().take(20) {
            let ms = 40 + (i * 1024 * 1000 / 44_100) as u32;
            audio.handle(ms, frame, |p| seqs.push(fields(p).0)).unwrap();
        }
        // And back to Opus, with an empty sequence start (the spec's mono or stereo).
        let empty_start = ex_audio(AUDIO_PACKET_SEQUENCE_START, FOURCC_OPUS, &[]);
        assert_eq!(
            audio.handle(600, &empty_start, |_| {}),
            Ok(AudioOutcome::OpusConfigured {
                channels: 2,
                input_rate: 48_000
            })
        );
        audio
            .handle(600, &opus_frame(&[0xFC]), |p| seqs.push(fields(p).0))
            .unwrap();
        assert!(seqs.len() > 10, "{seqs:?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
        // Silence (an empty message) is nothing to forward, not an error.
        assert_eq!(audio.handle(620, &[], |_| {}), Ok(AudioOutcome::Idle));
    }
}
