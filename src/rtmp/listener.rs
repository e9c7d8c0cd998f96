//! The RTMP listener, the IO edge of `crate::rtmp`: accepts TCP connections within
//! `rtmp.max_connections`, reads each into its [`RtmpConnection`] under the handshake and idle
//! timeouts, writes its answers, and carries out what it asks: a publish is authorized (an
//! origin's RTMP relay by its relay token) and, at the stream's sequence header, registered;
//! its video (H.264, VP9 or AV1), and its audio as Opus (AAC transcoded while players or
//! relays listen, Enhanced RTMP's Opus as it comes), go to the stream's media core as RTP
//! through the ingest ring, with the core's wake-up once per frame. A play is authorized and
//! registered as a player with a tap on the stream's publisher's core; the tap's RTP becomes
//! FLV video for the player, written as the player's socket takes it (a player too slow loses
//! frames until the next keyframe, and is closed when it takes nothing for
//! `rtmp.idle_timeout_secs`). A stream with Opus audio also gives its RTMP players AAC,
//! transcoded once for all of them ([`super::player_audio`]) and timed on the clock their
//! video shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tracing::{debug, info, warn};

use super::audio::{AudioOutcome, RtmpAudio};
use super::av1_rtp::Av1Error;
use super::chunk_guard::ChunkLimits;
use super::connection::{RtmpConnection, RtmpEvent};
use super::ingest::{self, Registered};
use super::nal_rtp::RTP_MAX_PACKET;
use super::player::{self, Playing};
use super::player_audio::{self, AacFrame, AudioSubscription, PlayerAudio};
use super::publisher::{RtmpPublisher, VideoError, VideoOutcome};
use super::rtp_flv::{FlvVideo, RtpToFlv};
use crate::auth::Authorized;
use crate::config::rtmp::RtmpConfig;
use crate::control::registry::{AclChange, ClientInfo};
use crate::control::status::SessionStatus;
use crate::control::{CoreCommand, EndReason};
use crate::sdp::MediaKind;
use crate::session::Traffic;
use crate::signalling::media::end_session;
use crate::signalling::Signalling;

/// Bytes read from a connection at a time.
const READ_BUFFER: usize = 16 * 1024;
/// How long a frame waits for room in the core's ring before it is dropped (and the stream
/// skips to its next keyframe).
const RING_WAIT: Duration = Duration::from_millis(500);
/// How often a stream's players are counted, to transcode its audio only while one listens.
const PLAYERS_CHECK: Duration = Duration::from_secs(1);
/// How often what an RTMP player was sent goes to the control plane.
const TRAFFIC_REPORT: Duration = Duration::from_secs(1);
/// How often an RTMP player waiting for a keyframe after a loss asks for one.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// Accepts RTMP connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<Signalling>, config: RtmpConfig) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let config = Arc::new(config);
    let audio = Arc::new(PlayerAudio::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: do not spin.
                warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, max = config.max_connections, "RTMP connection refused: rtmp.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let config = config.clone();
        let audio = audio.clone();
        tokio::spawn(async move {
            let mut client = Client::new(peer, &config, audio, state.clone());
            if let Err(why) = client.run(stream, &state, &config).await {
                info!(%peer, stream = client.name.as_deref().unwrap_or("-"), "RTMP connection closed: {why}");
            } else {
                debug!(%peer, "RTMP connection closed by the client");
            }
            client.finish(&state, false);
            drop(permit);
        });
    }
}

/// A published stream's state on its connection.
struct Published {
    name: String,
    /// An origin's relay of this CDN publishes it (`cdn.stream_distribution = "rtmp"`).
    relay: bool,
    /// The stream's access list the relay brought.
    acl: Option<Vec<String>>,
    publisher: RtmpPublisher,
    audio: RtmpAudio,
    /// When the players were last counted, to pause the audio transcoder while none wants it.
    players_checked: Option<Instant>,
    /// Set at the sequence header.
    ingest: Option<Registered>,
    /// An audio problem was logged (once per stream; the video goes on).
    audio_noted: bool,
    /// Malformed AV1 temporal units skipped (logged at the first, second, fourth, ...).
    bad_frames: u64,
    b_frames_noted: bool,
    interval_noted: Option<u32>,
}

/// A played stream's state on its connection.
struct Played {
    name: String,
    playing: Playing,
    flv: RtpToFlv,
    /// The tap's dropped packets already accounted for.
    dropped: u64,
    /// When the last packet came (a stream whose video stopped ends its players).
    last_packet: tokio::time::Instant,
    started: Instant,
    /// Video messages and bytes written to the player.
    messages: u64,
    bytes: u64,
    /// When they were last reported to the control plane.
    reported: Instant,
    /// When a keyframe was last asked for.
    keyframe_asked: Instant,
    /// The stream's audio as AAC, when it has Opus.
    audio: Option<AudioSubscription>,
    /// The clock the stream's audio is timed on, and where the player's first video frame sits
    /// on it (see [`player_audio::video_origin`]): what the player is sent counts from there.
    epoch: Instant,
    video_origin_ms: Option<u32>,
    /// The AAC sequence header went out (after the metadata, with the video's).
    audio_started: bool,
    /// AAC frames sent, and skipped (before the video, or the player fell behind).
    audio_frames: u64,
    audio_skipped: u64,
}

/// What ended a played stream's wait.
enum PlayWake {
    Read(std::io::Result<usize>),
    Video,
    Audio(Result<AacFrame, broadcast::error::RecvError>),
    Status(Option<SessionStatus>),
    Quiet,
}

/// One connection's state beyond the protocol.
struct Client {
    peer: SocketAddr,
    connection: RtmpConnection,
    name: Option<String>,
    published: Option<Published>,
    played: Option<Played>,
    /// The node's RTMP players' audio transcoders.
    player_audio: Arc<PlayerAudio>,
    state: Arc<Signalling>,
}

impl Client {
    fn new(
        peer: SocketAddr,
        config: &RtmpConfig,
        player_audio: Arc<PlayerAudio>,
        state: Arc<Signalling>,
    ) -> Client {
        let limits = ChunkLimits {
            max_message_bytes: config.max_message_bytes,
            ..ChunkLimits::default()
        };
        Client {
            peer,
            connection: RtmpConnection::new(config.apps.clone(), limits),
            name: None,
            published: None,
            played: None,
            player_audio,
            state,
        }
    }

    /// Serves the connection; `Err` says why the node closed it.
    async fn run(
        &mut self,
        mut stream: TcpStream,
        state: &Signalling,
        config: &RtmpConfig,
    ) -> Result<(), String> {
        let mut buf = vec![0u8; READ_BUFFER];
        // The whole handshake has its time (a byte now and then does not stretch it); after
        // it, every read has the idle timeout.
        let handshake_deadline =
            tokio::time::Instant::now() + Duration::from_secs(config.handshake_timeout_secs);
        let idle = Duration::from_secs(config.idle_timeout_secs);
        loop {
            let (deadline, what) = if self.connection.handshake_done() {
                (
                    tokio::time::Instant::now() + idle,
                    "nothing received for rtmp.idle_timeout_secs",
                )
            } else {
                (
                    handshake_deadline,
                    "handshake not done within rtmp.handshake_timeout_secs",
                )
            };
            let read = if let Some(played) = &mut self.played {
                // A player sends little (acknowledgements): its wait is for the stream's video.
                let quiet = played.last_packet + idle;
                let Playing {
                    receiver, status, ..
                } = &mut played.playing;
                let wake = tokio::select! {
                    read = stream.read(&mut buf) => PlayWake::Read(read),
                    () = receiver.wait() => PlayWake::Video,
                    frame = next_audio(&mut played.audio) => PlayWake::Audio(frame),
                    status = status.recv() => PlayWake::Status(status),
                    () = tokio::time::sleep_until(quiet) => PlayWake::Quiet,
                };
                match wake {
                    PlayWake::Read(read) => read.map_err(|e| e.to_string())?,
                    PlayWake::Video => {
                        self.play_video(&mut stream, idle, state).await?;
                        continue;
                    }
                    PlayWake::Audio(frame) => {
                        self.play_audio(&mut stream, idle, frame).await?;
                        continue;
                    }
                    PlayWake::Status(Some(SessionStatus::Ended(reason))) => {
                        return self.end_play(&mut stream, &reason.to_string()).await;
                    }
                    PlayWake::Status(_) => continue,
                    PlayWake::Quiet => {
                        let why = "no video from the stream for rtmp.idle_timeout_secs";
                        return self.end_play(&mut stream, why).await;
                    }
                }
            } else {
                tokio::time::timeout_at(deadline, stream.read(&mut buf))
                    .await
                    .map_err(|_| what.to_owned())?
                    .map_err(|e| e.to_string())?
            };
            if read == 0 {
                return Ok(());
            }
            let result = self.connection.handle_input(&buf[..read]);
            self.flush(&mut stream).await?;
            result.map_err(|e| e.to_string())?;
            while let Some(event) = self.connection.poll_event() {
                // A refusal goes out before the connection closes: the client shows its text.
                let handled = self.handle_event(event, state).await;
                self.flush(&mut stream).await?;
                handled?;
            }
        }
    }

    async fn flush(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        if !self.connection.output().is_empty() {
            stream
                .write_all(self.connection.output())
                .await
                .map_err(|e| e.to_string())?;
            self.connection.clear_output();
        }
        Ok(())
    }

    async fn handle_event(&mut self, event: RtmpEvent, state: &Signalling) -> Result<(), String> {
        match event {
            RtmpEvent::PublishRequested { app, stream_key } => {
                self.start_publish(&app, &stream_key, state).await
            }
            RtmpEvent::Video { timestamp_ms, data } => {
                self.handle_video(timestamp_ms, &data, state).await
            }
            RtmpEvent::Audio { timestamp_ms, data } => {
                self.handle_audio(timestamp_ms, &data, state);
                Ok(())
            }
            RtmpEvent::Metadata {
                audio_codec_id,
                width,
                height,
            } => {
                if let Some(published) = self.published.as_mut() {
                    debug!(peer = %self.peer, stream = published.name, ?audio_codec_id, ?width, ?height, "RTMP metadata");
                    published.audio.announce(audio_codec_id);
                }
                Ok(())
            }
            RtmpEvent::PublishFinished => {
                self.finish(state, true);
                Ok(())
            }
            RtmpEvent::PlayRequested { app, stream_key } => {
                self.start_play(&app, &stream_key, state).await
            }
            RtmpEvent::PlayFinished => Err("the player stopped playing".into()),
        }
    }

    async fn start_play(
        &mut self,
        app: &str,
        stream_key: &str,
        state: &Signalling,
    ) -> Result<(), String> {
        let (name, credentials) = player::parse_key(app, stream_key);
        self.name = Some(name.clone());
        let client = ClientInfo::new(self.peer, Some("RTMP"));
        match player::start(state, &name, &credentials, client).await {
            Ok(playing) => {
                self.connection.accept_play().map_err(|e| e.to_string())?;
                let audio = self.player_audio.subscribe(&self.state, &name);
                let audio = match audio {
                    Ok(audio) => Some(audio),
                    Err(why) => {
                        info!(peer = %self.peer, stream = name, "RTMP play without audio: {why}");
                        None
                    }
                };
                info!(peer = %self.peer, stream = name, session = %playing.id, audio = audio.is_some(), "RTMP play accepted");
                let epoch = audio.as_ref().map_or_else(Instant::now, |a| a.epoch());
                self.played = Some(Played {
                    name,
                    flv: RtpToFlv::new(playing.pt),
                    playing,
                    dropped: 0,
                    last_packet: tokio::time::Instant::now(),
                    started: Instant::now(),
                    messages: 0,
                    bytes: 0,
                    reported: Instant::now(),
                    // The core asked at the start, when it had no keyframe cached.
                    keyframe_asked: Instant::now(),
                    audio,
                    epoch,
                    video_origin_ms: None,
                    audio_started: false,
                    audio_frames: 0,
                    audio_skipped: 0,
                });
                Ok(())
            }
            Err(refusal) => {
                self.connection
                    .refuse_play(refusal.code, &refusal.why)
                    .map_err(|e| e.to_string())?;
                Err(format!("play of {name:?} refused: {}", refusal.why))
            }
        }
    }

    /// The tap queued video: as FLV to the player, written before more is taken (a player
    /// too slow for the stream leaves the tap's ring to fill: the core drops packets, and
    /// frames are skipped until the next keyframe).
    async fn play_video(
        &mut self,
        stream: &mut TcpStream,
        idle: Duration,
        state: &Signalling,
    ) -> Result<(), String> {
        let Some(played) = self.played.as_mut() else {
            return Ok(());
        };
        let mut out = Vec::new();
        while let Some(packet) = played.playing.receiver.pop() {
            played.last_packet = tokio::time::Instant::now();
            played.flv.push(packet.packet(), |video| out.push(video));
        }
        let dropped = played.playing.receiver.dropped();
        if dropped > played.dropped {
            debug!(peer = %self.peer, stream = played.name, packets = dropped - played.dropped, "RTMP player behind: packets dropped, waiting for the next keyframe");
            played.dropped = dropped;
            played.flv.resync();
        }
        // After a loss (or while the first keyframe, asked for by the core, does not come)
        // the player waits for a keyframe: a WebRTC publisher sends one when asked (an RTMP
        // encoder only at its interval; the core counts the request).
        if played.flv.waits_for_keyframe()
            && played.keyframe_asked.elapsed() >= KEYFRAME_REQUEST_INTERVAL
        {
            played.keyframe_asked = Instant::now();
            let id = played.playing.id;
            state.cores[played.playing.core.0].send(CoreCommand::RequestKeyframe { id });
        }
        // The core dropped the tap: the session ended, and its status says why (it is sent
        // before the core hears).
        let finished =
            played
                .playing
                .receiver
                .is_finished()
                .then(|| match played.playing.status.try_recv() {
                    Ok(SessionStatus::Ended(reason)) => reason.to_string(),
                    _ => "the stream ended".to_owned(),
                });
        let messages = out.len() as u64;
        if played.video_origin_ms.is_none() {
            let newest = out.iter().map(|video| match video {
                FlvVideo::Config { timestamp_ms, .. } | FlvVideo::Frame { timestamp_ms, .. } => {
                    *timestamp_ms
                }
            });
            if let Some(newest) = newest.max() {
                let now_ms = played.epoch.elapsed().as_millis() as u32;
                played.video_origin_ms = Some(player_audio::video_origin(now_ms, newest));
            }
        }
        let audio_config = played.audio.as_ref().map(|a| (a.channels(), a.config()));
        // The video keeps its own times (from its first frame); the audio is put on them.
        for video in out {
            match video {
                FlvVideo::Config {
                    timestamp_ms,
                    body,
                    size,
                } => {
                    self.connection
                        .send_metadata(size, audio_config.as_ref().map(|(c, _)| *c))
                        .map_err(|e| e.to_string())?;
                    self.connection
                        .send_video(timestamp_ms, body.into())
                        .map_err(|e| e.to_string())?;
                    if let Some((_, config)) = &audio_config {
                        if !played.audio_started {
                            played.audio_started = true;
                            self.connection
                                .send_audio(timestamp_ms, config.clone())
                                .map_err(|e| e.to_string())?;
                        }
                    }
                }
                FlvVideo::Frame {
                    timestamp_ms, body, ..
                } => self
                    .connection
                    .send_video(timestamp_ms, body.into())
                    .map_err(|e| e.to_string())?,
            }
        }
        let pending = self.connection.output().len() as u64;
        tokio::time::timeout(idle, self.flush(stream))
            .await
            .map_err(|_| "the player took no video for rtmp.idle_timeout_secs".to_owned())??;
        if let Some(played) = self.played.as_mut() {
            played.bytes += pending;
            played.messages += messages;
            if played.reported.elapsed() >= TRAFFIC_REPORT {
                played.reported = Instant::now();
                report_traffic(state, played);
            }
        }
        if let Some(why) = finished {
            return self.end_play(stream, &why).await;
        }
        Ok(())
    }

    /// The stream's audio made an AAC frame: to the player once its video (and with it the
    /// metadata and the AAC sequence header) started, at its time from the player's start.
    async fn play_audio(
        &mut self,
        stream: &mut TcpStream,
        idle: Duration,
        frame: Result<AacFrame, broadcast::error::RecvError>,
    ) -> Result<(), String> {
        let Some(played) = self.played.as_mut() else {
            return Ok(());
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                played.audio_skipped += n;
                return Ok(());
            }
            Err(broadcast::error::RecvError::Closed) => {
                played.audio = None;
                return Ok(());
            }
        };
        // Before the player's video started, or older than its first frame: not for it.
        let timestamp_ms = played
            .video_origin_ms
            .filter(|_| played.audio_started)
            .and_then(|origin| player_audio::audio_time(origin, frame.timestamp_ms));
        let Some(timestamp_ms) = timestamp_ms else {
            played.audio_skipped += 1;
            return Ok(());
        };
        self.connection
            .send_audio(timestamp_ms, frame.body)
            .map_err(|e| e.to_string())?;
        played.audio_frames += 1;
        let pending = self.connection.output().len() as u64;
        tokio::time::timeout(idle, self.flush(stream))
            .await
            .map_err(|_| "the player took no audio for rtmp.idle_timeout_secs".to_owned())??;
        if let Some(played) = self.played.as_mut() {
            played.bytes += pending;
            played.messages += 1;
        }
        Ok(())
    }

    /// Tells the player the stream is over (`NetStream.Play.Complete`) and ends the connection
    /// for `why`.
    async fn end_play(&mut self, stream: &mut TcpStream, why: &str) -> Result<(), String> {
        if self.connection.finish_play().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.flush(stream)).await;
        }
        Err(format!("RTMP play ended: {why}"))
    }

    async fn start_publish(
        &mut self,
        app: &str,
        stream_key: &str,
        state: &Signalling,
    ) -> Result<(), String> {
        let key = ingest::parse_key(app, stream_key);
        let name = key.name.clone();
        self.name = Some(name.clone());
        let authorized = ingest::authorize_publish(state, &key)
            .await
            .map_err(|e| e.to_string());
        let relay = matches!(authorized, Ok(Authorized::Relay));
        // Checked here, and in the cluster when the node is in one, before the publisher is
        // told to go on; the registry checks again when the first frame registers the stream.
        // A relay's copy may take over an orphaned stream (its source was lost).
        let checked = authorized.and_then(|by| {
            let registry = state.registry();
            if relay && registry.is_orphaned(&name) {
                return Ok(by);
            }
            let free = registry.check_publish(&name);
            free.map(|()| by).map_err(|e| e.to_string())
        });
        let refused = match checked {
            Ok(by) => match crate::signalling::media::claim_in_cluster(state, &name, &by).await {
                Ok(()) => {
                    info!(peer = %self.peer, stream = name, by = ?by, "RTMP publish accepted");
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            Err(why) => Some(why),
        };
        if let Some(why) = refused {
            self.connection
                .refuse_publish(&why)
                .map_err(|e| e.to_string())?;
            return Err(format!("publish of {name:?} refused: {why}"));
        }
        self.connection
            .accept_publish()
            .map_err(|e| e.to_string())?;
        let mut rng = rand::thread_rng();
        use rand::Rng;
        self.published = Some(Published {
            name,
            relay,
            acl: key.acl.filter(|_| relay),
            publisher: RtmpPublisher::new(rng.gen::<u32>() | 1, rng.gen(), rng.gen()),
            audio: RtmpAudio::new(rng.gen::<u32>() | 1, rng.gen(), rng.gen()),
            players_checked: None,
            ingest: None,
            audio_noted: false,
            bad_frames: 0,
            b_frames_noted: false,
            interval_noted: None,
        });
        Ok(())
    }

    async fn handle_video(
        &mut self,
        timestamp_ms: u32,
        data: &[u8],
        state: &Signalling,
    ) -> Result<(), String> {
        // Room for the frame's packets (a few more for SPS, PPS and fragment headers), or the
        // encoder waits: TCP pushes back on it. Past RING_WAIT the frame is dropped.
        let needed = data.len() / (RTP_MAX_PACKET - 14) + 4;
        let mut waited = Duration::ZERO;
        while self.ring_short_of(needed) && waited < RING_WAIT {
            tokio::time::sleep(Duration::from_millis(2)).await;
            waited += Duration::from_millis(2);
        }
        let dropped = self.ring_short_of(needed);
        let peer = self.peer;
        let Some(published) = self.published.as_mut() else {
            return Ok(());
        };
        if dropped {
            warn!(%peer, stream = published.name, "media core behind: RTMP frame dropped, waiting for the next keyframe");
            published.publisher.drop_frame();
            return Ok(());
        }
        let Published {
            publisher, ingest, ..
        } = published;
        let outcome = publisher.handle_video(timestamp_ms, data, |packet, keyframe| {
            if let Some(ingest) = ingest.as_mut() {
                // Room was checked above; a full ring here drops the packet (a loss the
                // players' NACKs cannot repair: the next keyframe will).
                let _ = ingest.sender.push(MediaKind::Video, keyframe, packet);
            }
        });
        match outcome {
            Ok(VideoOutcome::Configured(codec)) => {
                let client = ClientInfo {
                    ingest: true,
                    relay: published.relay,
                    ..ClientInfo::new(peer, Some("RTMP"))
                };
                let with_audio = published.audio.expected();
                let registered =
                    ingest::register(state, &published.name, &codec, with_audio, client)
                        .map_err(|e| format!("cannot register the stream: {e}"))?;
                let (video, format) = (codec.display_name(), codec.sdp().2);
                let codecs = match (with_audio, published.audio.is_opus()) {
                    (false, _) => video.to_owned(),
                    (true, true) => format!("{video}, Opus"),
                    (true, false) => format!("{video}, AAC as Opus"),
                };
                info!(%peer, stream = published.name, session = %registered.id, core = registered.core.0, format, relay = published.relay, "RTMP stream live ({codecs})");
                if let Some(keys) = published.acl.take() {
                    // The origin's access list comes with its relay's publish.
                    let _ = state.change_acl(&published.name, AclChange::Set(keys));
                }
                published.audio.set_registered(with_audio);
                published.ingest = Some(registered);
            }
            Ok(VideoOutcome::Frame(info)) => {
                if let Some(ingest) = &published.ingest {
                    if info.packets > 0 {
                        state.cores[ingest.core.0].waker.wake();
                    }
                }
                if note_encoder(peer, published) {
                    if let (Some(ingest), Some(interval)) =
                        (&published.ingest, published.publisher.keyframe_interval_ms)
                    {
                        state.control(|plane, _| {
                            plane.handle_keyframe_interval(ingest.id, interval)
                        });
                    }
                }
            }
            Ok(VideoOutcome::Reconfigured) => {
                info!(%peer, stream = published.name, "RTMP sequence header changed");
            }
            Ok(VideoOutcome::Skipped | VideoOutcome::Nothing) => {}
            Err(VideoError::Av1(e @ Av1Error::Obus(_))) => {
                // One broken temporal unit (nothing of it went out): the stream goes on from
                // its next keyframe.
                published.bad_frames += 1;
                if published.bad_frames.is_power_of_two() {
                    warn!(%peer, stream = published.name, skipped = published.bad_frames, "RTMP AV1 frame skipped, waiting for the next keyframe: {e}");
                }
            }
            Err(e) => {
                // A frame before the sequence header, or a codec rtcdn does not carry: say it
                // once per kind of problem would need state; the encoder's setup is wrong, so
                // the publish ends with the reason.
                return Err(format!("video of {:?}: {e}", published.name));
            }
        }
        Ok(())
    }

    /// An audio message: AAC transcoded to Opus into the ring while the stream has players,
    /// Enhanced RTMP's Opus into the ring as it comes. An audio problem is logged once and
    /// the video goes on.
    fn handle_audio(&mut self, timestamp_ms: u32, data: &[u8], state: &Signalling) {
        let peer = self.peer;
        let Some(published) = self.published.as_mut() else {
            return;
        };
        let now = Instant::now();
        if let Some(ingest) = &published.ingest {
            if published
                .players_checked
                .is_none_or(|at| now.duration_since(at) >= PLAYERS_CHECK)
            {
                published.players_checked = Some(now);
                let registry = state.registry();
                // A relay to an edge listens for the edge's players.
                let players = registry
                    .stream(&published.name)
                    .filter(|s| s.publisher == ingest.id)
                    .is_some_and(|s| !s.players.is_empty() || !s.relays.is_empty());
                if published.audio.set_wanted(players) && !published.audio.is_opus() {
                    let state = if players {
                        "on: a player listens"
                    } else {
                        "paused: no player"
                    };
                    info!(%peer, stream = published.name, "RTMP audio transcoding {state}");
                }
            }
        }
        let Published { audio, ingest, .. } = published;
        let outcome = audio.handle(timestamp_ms, data, |packet| {
            if let Some(ingest) = ingest.as_mut() {
                // A full ring drops the packet: 20 ms of audio the players conceal.
                let _ = ingest.sender.push(MediaKind::Audio, false, packet);
            }
        });
        match outcome {
            Ok(AudioOutcome::Sent(n)) if n > 0 => {
                if let Some(ingest) = &published.ingest {
                    state.cores[ingest.core.0].waker.wake();
                }
            }
            Ok(AudioOutcome::Configured { input_rate }) => {
                debug!(%peer, stream = published.name, input_rate, "RTMP AAC sequence header");
            }
            Ok(AudioOutcome::OpusConfigured {
                channels,
                input_rate,
            }) => {
                debug!(%peer, stream = published.name, channels, input_rate, "RTMP Opus sequence start (Enhanced RTMP): forwarded as it comes");
            }
            Ok(_) => {}
            Err(e) => {
                if !std::mem::replace(&mut published.audio_noted, true) {
                    warn!(%peer, stream = published.name, "RTMP audio not forwarded: {e}");
                }
            }
        }
    }

    /// Whether the stream's ring has fewer than `packets` free slots.
    fn ring_short_of(&self, packets: usize) -> bool {
        self.published
            .as_ref()
            .and_then(|p| p.ingest.as_ref())
            .is_some_and(|ingest| ingest.sender.free() < packets)
    }

    /// Ends the published or played stream, if any; `unpublished` when the publisher said so
    /// (else the connection broke).
    fn finish(&mut self, state: &Signalling, unpublished: bool) {
        if let Some(played) = self.played.take() {
            let c = played.flv.counters;
            info!(peer = %self.peer, stream = played.name, session = %played.playing.id, duration_s = %format_args!("{:.1}", played.started.elapsed().as_secs_f64()), frames = c.frames, keyframes = c.keyframes, frames_skipped = c.skipped, losses = c.losses, packets_dropped = played.dropped, audio_frames = played.audio_frames, audio_skipped = played.audio_skipped, bytes = played.bytes, "RTMP play ended");
            state.unwatch(played.playing.id);
            report_traffic(state, &played);
            end_session(state, played.playing.id, EndReason::Deleted);
        }
        self.finish_publish(state, unpublished);
    }

    /// Ends the published stream, if any. An origin's relay that did not unpublish lost its
    /// source (the origin, or the link to it, broke): the stream's players wait for its next
    /// copy, as for a WebRTC relay.
    fn finish_publish(&mut self, state: &Signalling, unpublished: bool) {
        let Some(published) = self.published.take() else {
            return;
        };
        let p = &published.publisher;
        info!(peer = %self.peer, stream = published.name, frames = p.frames, keyframes = p.keyframes, keyframe_interval_ms = ?p.keyframe_interval_ms, opus_frames = published.audio.frames(), "RTMP publish ended");
        let reason = if published.relay && !unpublished {
            EndReason::SourceLost
        } else {
            EndReason::Deleted
        };
        if let Some(ingest) = published.ingest {
            end_session(state, ingest.id, reason);
            state.cores[ingest.core.0].waker.wake();
        }
    }
}

/// The next AAC frame of the player's audio; never, without audio.
async fn next_audio(
    audio: &mut Option<AudioSubscription>,
) -> Result<AacFrame, broadcast::error::RecvError> {
    match audio {
        Some(audio) => audio.frames.recv().await,
        None => std::future::pending().await,
    }
}

/// Tells the control plane what a player was sent so far.
fn report_traffic(state: &Signalling, played: &Played) {
    let traffic = Traffic {
        packets_out: played.messages,
        bytes_out: played.bytes,
        ..Traffic::default()
    };
    state.control(|plane, _| plane.handle_egress_traffic(played.playing.id, traffic));
}

/// Logs what players of an RTMP stream depend on: the keyframe interval (RTMP cannot be asked
/// for a keyframe, so a new player waits up to this long when the cache has none), and
/// B-frames, which WebRTC players do not reorder. Returns whether the interval is new.
fn note_encoder(peer: SocketAddr, published: &mut Published) -> bool {
    let p = &published.publisher;
    if p.b_frames && !published.b_frames_noted {
        published.b_frames_noted = true;
        warn!(%peer, stream = published.name, "the encoder sends B-frames: WebRTC players show them out of order; set -bf 0 (ffmpeg) or the baseline profile / bframes=0 (OBS)");
    }
    if let Some(interval) = p.keyframe_interval_ms {
        let noted = published.interval_noted.unwrap_or(0);
        // Once, and again when it moves by more than a fifth.
        if published.interval_noted.is_none() || interval.abs_diff(noted) > noted / 5 {
            published.interval_noted = Some(interval);
            info!(%peer, stream = published.name, keyframe_interval_ms = interval, "RTMP keyframe interval (players' keyframe requests cannot shorten it)");
            return true;
        }
    }
    false
}
