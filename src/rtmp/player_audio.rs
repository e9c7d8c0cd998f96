//! The audio of a stream's RTMP players: one [`OpusToAac`] transcoder per stream, whatever the
//! number of its RTMP players, running only while one plays.
//!
//! The first RTMP player of a stream with Opus audio starts a [`StreamAudio`]: a task on the
//! signalling runtime with its own audio-only tap on the stream's publisher's core (a player
//! session of the stream, like an RTMP player, that takes no video), which transcodes the
//! stream's Opus to AAC and broadcasts the FLV tag bodies to every RTMP player of the stream.
//! Each player holds an [`AudioSubscription`]; the task ends when the last one is dropped (and
//! with the stream: its tap finishes, the players go on with video only).
//!
//! Times are on the task's clock ([`AudioSubscription::epoch`]): the audio's first packet at
//! the moment it came, then RTP time, as an RTMP push times Opus against video (see
//! [`super::rtp_rtmp`]). Each player puts its video on that clock by arrival too
//! ([`video_origin`]) and the audio on its video's times ([`audio_time`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, info, warn};

use super::opus_aac::{FlvAac, OpusToAac};
use crate::control::registry::StreamTrack;
use crate::control::{EgressSpec, EndReason, StreamId};
use crate::media::egress::AUDIO_ONLY_LAYER;
use crate::media::egress_channel;
use crate::sdp::MediaKind;
use crate::signalling::media::{end_session, new_session_id};
use crate::signalling::Signalling;

/// Audio packets the task's tap holds: two seconds of 20 ms Opus packets.
const AUDIO_RING_PACKETS: usize = 128;
/// AAC frames a player may fall behind by before it skips (~1.4 s at 48 kHz).
const BROADCAST_FRAMES: usize = 64;

/// One AAC frame for the stream's RTMP players: an FLV audio tag body at a time on the
/// stream audio's clock.
#[derive(Debug, Clone)]
pub struct AacFrame {
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// The stream's Opus as RTMP can carry it: the payload type and the channels, or why not.
pub fn opus_audio(tracks: &[StreamTrack]) -> Result<(u8, u8), String> {
    let audio = tracks.iter().find(|t| t.kind == MediaKind::Audio);
    let Some(audio) = audio else {
        return Err("the stream has no audio".to_owned());
    };
    if !audio.codec.name.eq_ignore_ascii_case("opus") {
        return Err(format!(
            "its audio is {}, not Opus",
            audio.codec.name.to_uppercase()
        ));
    }
    let channels = audio.codec.channels.unwrap_or(2).clamp(1, 2);
    Ok((audio.codec.pt, channels as u8))
}

/// Where a player's first video frame sits on the audio's clock: the newest frame of its
/// first batch, `newest_ms` after the first on the video's own clock, came at `now_ms`. The
/// first frames are the core's cache since its last keyframe, up to seconds old, replayed at
/// once; only the newest is live, as the audio is.
pub fn video_origin(now_ms: u32, newest_ms: u32) -> u32 {
    now_ms.wrapping_sub(newest_ms)
}

/// An AAC frame's time for a player whose first video frame is at `origin_ms` on the audio's
/// clock: the same time line as its video; none for audio from before that frame.
pub fn audio_time(origin_ms: u32, frame_ms: u32) -> Option<u32> {
    let time = frame_ms.wrapping_sub(origin_ms);
    ((time as i32) >= 0).then_some(time)
}

/// The running transcoders of the node's streams, by name.
#[derive(Default)]
pub struct PlayerAudio {
    streams: Mutex<HashMap<String, Weak<StreamAudio>>>,
}

/// One stream's transcoder task, as its players share it; dropping the last stops it.
pub struct StreamAudio {
    frames: broadcast::Sender<AacFrame>,
    /// The sequence header's body (the encoder's configuration never changes).
    config: Bytes,
    channels: u8,
    epoch: Instant,
    /// Dropped with the last player: the task ends.
    stop: oneshot::Sender<()>,
}

/// A player's share of its stream's audio.
pub struct AudioSubscription {
    audio: Arc<StreamAudio>,
    pub frames: broadcast::Receiver<AacFrame>,
}

impl AudioSubscription {
    /// The AAC sequence header's body, for the player before its first frame.
    pub fn config(&self) -> Bytes {
        self.audio.config.clone()
    }

    /// The audio's clock (its times are milliseconds since), which the player's video is to
    /// share.
    pub fn epoch(&self) -> Instant {
        self.audio.epoch
    }

    /// The AAC's channels.
    pub fn channels(&self) -> u8 {
        self.audio.channels
    }
}

impl PlayerAudio {
    /// A share of `name`'s audio, the stream's transcoder started for it when none runs.
    /// `Err` says why the player gets no audio.
    pub fn subscribe(
        &self,
        state: &Arc<Signalling>,
        name: &str,
    ) -> Result<AudioSubscription, String> {
        let tracks = state.registry().stream(name).map(|s| s.tracks.clone());
        let (pt, channels) = opus_audio(tracks.as_deref().unwrap_or_default())?;
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.retain(|_, audio| audio.strong_count() > 0);
        // A task whose tap ended (the stream's publisher changed) is not reused.
        let running = streams.get(name).and_then(Weak::upgrade);
        if let Some(audio) = running.filter(|audio| !audio.stop.is_closed()) {
            let frames = audio.frames.subscribe();
            return Ok(AudioSubscription { audio, frames });
        }
        let audio = start(state.clone(), name, pt, channels)?;
        streams.insert(name.to_owned(), Arc::downgrade(&audio));
        let frames = audio.frames.subscribe();
        Ok(AudioSubscription { audio, frames })
    }
}

/// Starts `name`'s transcoder task with its tap, a transcoder of the stream (not a player).
fn start(
    state: Arc<Signalling>,
    name: &str,
    pt: u8,
    channels: u8,
) -> Result<Arc<StreamAudio>, String> {
    let mut transcoder =
        OpusToAac::new(pt, channels).map_err(|e| format!("no AAC transcoder: {e}"))?;
    // The sequence header is fixed by the encoder's settings: made once, for every player.
    let config = Bytes::copy_from_slice(transcoder.sequence_header());
    let id = new_session_id();
    let (tap, mut receiver) = egress_channel(AUDIO_RING_PACKETS);
    let spec = EgressSpec {
        id,
        stream: StreamId(0),
        stream_name: name.to_owned(),
        layer: AUDIO_ONLY_LAYER,
        audio: true,
        tap,
    };
    state
        .control(|plane, now| plane.handle_transcoder_egress(now, spec))
        .map_err(|e| format!("no audio tap: {e}"))?;
    let (frames, _) = broadcast::channel(BROADCAST_FRAMES);
    let (stop_tx, mut stop) = oneshot::channel();
    let audio = Arc::new(StreamAudio {
        frames: frames.clone(),
        config,
        channels: transcoder.channels(),
        epoch: Instant::now(),
        stop: stop_tx,
    });
    let epoch = audio.epoch;
    let name = name.to_owned();
    info!(stream = name, session = %id, "RTMP players' audio: Opus to AAC transcoding on");
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                () = receiver.wait() => {}
            }
            let now_ms = epoch.elapsed().as_millis() as u32;
            while let Some(packet) = receiver.pop() {
                if !packet.audio() {
                    continue;
                }
                transcoder.push(packet.packet(), now_ms, |aac| {
                    if let FlvAac::Frame { timestamp_ms, body } = aac {
                        // No receiver: the last player is leaving, the stop follows.
                        let _ = frames.send(AacFrame {
                            timestamp_ms,
                            body: Bytes::copy_from_slice(body),
                        });
                    }
                });
            }
            if receiver.is_finished() {
                debug!(stream = name, "RTMP players' audio: the stream's tap ended");
                break;
            }
        }
        let c = transcoder.counters;
        if c.packets == 0 && c.ignored > 0 {
            warn!(
                stream = name,
                ignored = c.ignored,
                "RTMP players' audio: no Opus packet decoded"
            );
        }
        info!(stream = name, session = %id, duration_s = %format_args!("{:.1}", started.elapsed().as_secs_f64()), opus_packets = c.packets, aac_frames = c.frames, ignored = c.ignored, decoder_panics = c.decoder_panics, gaps_filled = c.filled, "RTMP players' audio: transcoding off");
        end_session(&state, id, EndReason::Deleted);
    });
    Ok(audio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Codec;

    fn track(kind: MediaKind, name: &str, channels: Option<u16>) -> StreamTrack {
        StreamTrack {
            kind,
            codec: Codec {
                pt: 111,
                name: name.into(),
                clock_rate: 48_000,
                channels,
                fmtp: None,
                rtcp_fb: Vec::new(),
                rtx_pt: None,
            },
            extmaps: Vec::new(),
            rids: Vec::new(),
        }
    }

    #[test]
    fn a_players_audio_lands_on_its_video_times_by_arrival() {
        // A 2 s group of pictures replayed from the cache: its newest frame is live at 10 s.
        let origin = video_origin(10_000, 2_000);
        assert_eq!(origin, 8_000);
        // Audio made just now plays with the live frame, not with the cached keyframe.
        assert_eq!(audio_time(origin, 10_020), Some(2_020));
        assert_eq!(audio_time(origin, 8_000), Some(0));
        // Older than the player's first frame: not for it.
        assert_eq!(audio_time(origin, 7_990), None);
        // Across the clock's wrap.
        let origin = video_origin(5, 1_000);
        assert_eq!(audio_time(origin, 10), Some(1_005));
    }

    #[test]
    fn only_opus_audio_is_transcoded() {
        let video = track(MediaKind::Video, "H264", None);
        assert_eq!(
            opus_audio(&[video.clone(), track(MediaKind::Audio, "opus", Some(2))]),
            Ok((111, 2))
        );
        assert_eq!(
            opus_audio(&[track(MediaKind::Audio, "OPUS", Some(1))]),
            Ok((111, 1))
        );
        assert_eq!(
            opus_audio(&[track(MediaKind::Audio, "PCMU", None)]),
            Err("its audio is PCMU, not Opus".to_owned())
        );
        assert_eq!(
            opus_audio(&[video]),
            Err("the stream has no audio".to_owned())
        );
    }
}
