//! [`RtmpConnection`]: one RTMP client connection on the server side, sans-IO. Bytes from the
//! client go in ([`RtmpConnection::handle_input`]); bytes for the client
//! ([`RtmpConnection::output`]) and what the client asked or sent ([`RtmpConnection::poll_event`])
//! come out.
//!
//! The handshake, the chunk stream and the AMF0 commands (connect, createStream, publish,
//! deleteStream, ...) are `rml_rtmp`'s `Handshake` and `ServerSession`, with the
//! [`ChunkGuard`] in front (see there why). This type decides what the node allows: the
//! applications it serves, one publish or one play per connection.

use std::collections::VecDeque;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use super::chunk_guard::{ChunkError, ChunkGuard, ChunkLimits};

/// What the client did that the node acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtmpEvent {
    /// The client asks to publish `stream_key` (the name, with any `?query` it carried) on
    /// `app`: answer with [`RtmpConnection::accept_publish`] or
    /// [`RtmpConnection::refuse_publish`].
    PublishRequested {
        /// The application, as the client named it (with any `?query`).
        app: String,
        stream_key: String,
    },
    /// A video message (an FLV video tag body) of the published stream.
    Video { timestamp_ms: u32, data: Bytes },
    /// An audio message (an FLV audio tag body) of the published stream.
    Audio { timestamp_ms: u32, data: Bytes },
    /// The published stream's `onMetaData`: what the encoder says it sends.
    Metadata {
        audio_codec_id: Option<u32>,
        width: Option<u32>,
        height: Option<u32>,
    },
    /// The client stopped publishing (deleteStream, closeStream, FCUnpublish).
    PublishFinished,
    /// The client asks to play `stream_key` (with any `?query`) on `app`: answer with
    /// [`RtmpConnection::accept_play`] or [`RtmpConnection::refuse_play`].
    PlayRequested { app: String, stream_key: String },
    /// The client stopped playing (deleteStream, closeStream).
    PlayFinished,
}

/// Why an RTMP connection ends, on either side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    /// The handshake failed (bad version, bad digest, ...).
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    /// The chunk stream broke a rule or a limit.
    #[error("RTMP chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A message or command the protocol crate refused.
    #[error("RTMP: {0}")]
    Protocol(String),
    /// The client connected to an application this node does not serve.
    #[error("application {0:?} is not served here (rtmp.apps)")]
    UnknownApp(String),
    /// The server refused our connection or publish (an origin's push, [`super::push`]): its
    /// status code, or its description.
    #[error("the server refused: {0}")]
    Refused(String),
}

impl RtmpError {
    /// What the protocol crate refused, as its text.
    pub(super) fn protocol(e: impl std::fmt::Display) -> RtmpError {
        RtmpError::Protocol(e.to_string())
    }
}

enum Phase {
    Handshake(Box<Handshake>),
    Chunks {
        session: Box<ServerSession>,
        guard: ChunkGuard,
    },
}

/// One client connection (see the module docs).
pub struct RtmpConnection {
    phase: Phase,
    apps: Vec<String>,
    limits: ChunkLimits,
    out: Vec<u8>,
    events: VecDeque<RtmpEvent>,
    /// The publish request waiting for an answer.
    pending_publish: Option<u32>,
    publishing: bool,
    /// The play request waiting for an answer: its request and stream ids.
    pending_play: Option<(u32, u32)>,
    /// The stream id the client plays on.
    playing: Option<u32>,
}

impl RtmpConnection {
    /// A connection that serves the applications `apps`, within `limits`.
    pub fn new(apps: Vec<String>, limits: ChunkLimits) -> RtmpConnection {
        RtmpConnection {
            phase: Phase::Handshake(Box::new(Handshake::new(PeerType::Server))),
            apps,
            limits,
            out: Vec::new(),
            events: VecDeque::new(),
            pending_publish: None,
            publishing: false,
            pending_play: None,
            playing: None,
        }
    }

    /// Whether the handshake is over.
    pub fn handshake_done(&self) -> bool {
        matches!(self.phase, Phase::Chunks { .. })
    }

    /// Bytes to send to the client (then [`RtmpConnection::clear_output`]).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The output was sent.
    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    /// The next thing the client did.
    pub fn poll_event(&mut self) -> Option<RtmpEvent> {
        self.events.pop_front()
    }

    /// Bytes from the client. After an error the connection must be closed (once
    /// [`RtmpConnection::output`], which may hold a refusal, was sent).
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        let rest = match &mut self.phase {
            Phase::Handshake(handshake) => {
                match handshake
                    .process_bytes(bytes)
                    .map_err(|e| RtmpError::Handshake(e.to_string()))?
                {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        self.out.extend_from_slice(&response_bytes);
                        return Ok(());
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        self.out.extend_from_slice(&response_bytes);
                        let (session, results) = ServerSession::new(ServerSessionConfig::new())
                            .map_err(RtmpError::protocol)?;
                        self.phase = Phase::Chunks {
                            session: Box::new(session),
                            guard: ChunkGuard::new(self.limits),
                        };
                        self.handle_results(results)?;
                        remaining_bytes
                    }
                }
            }
            Phase::Chunks { .. } => return self.handle_chunks(bytes),
        };
        self.handle_chunks(&rest)
    }

    fn handle_chunks(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Phase::Chunks { session, guard } = &mut self.phase else {
            return Ok(());
        };
        guard.check(bytes)?;
        let results = session.handle_input(bytes).map_err(RtmpError::protocol)?;
        self.handle_results(results)
    }

    /// Lets the pending publish go on (`NetStream.Publish.Start`).
    pub fn accept_publish(&mut self) -> Result<(), RtmpError> {
        let Some(request) = self.pending_publish.take() else {
            return Ok(());
        };
        let results = self.session()?.accept_request(request);
        let results = results.map_err(RtmpError::protocol)?;
        self.publishing = true;
        self.handle_results(results)
    }

    /// Refuses the pending publish with `why` (an `_error` / `NetStream.Publish.BadName` the
    /// client shows: ffmpeg prints the description).
    pub fn refuse_publish(&mut self, why: &str) -> Result<(), RtmpError> {
        let Some(request) = self.pending_publish.take() else {
            return Ok(());
        };
        let results = self
            .session()?
            .reject_request(request, "NetStream.Publish.BadName", why)
            .map_err(RtmpError::protocol)?;
        self.handle_results(results)
    }

    /// Lets the pending play go on (`NetStream.Play.Start`); video follows with
    /// [`RtmpConnection::send_video`].
    pub fn accept_play(&mut self) -> Result<(), RtmpError> {
        let Some((request, stream_id)) = self.pending_play.take() else {
            return Ok(());
        };
        let results = self.session()?.accept_request(request);
        let results = results.map_err(RtmpError::protocol)?;
        self.playing = Some(stream_id);
        self.handle_results(results)
    }

    /// Refuses the pending play with `code` (`NetStream.Play.StreamNotFound`,
    /// `NetStream.Play.Failed`) and `why`, which ffmpeg prints.
    pub fn refuse_play(&mut self, code: &str, why: &str) -> Result<(), RtmpError> {
        let Some((request, _)) = self.pending_play.take() else {
            return Ok(());
        };
        let results = self
            .session()?
            .reject_request(request, code, why)
            .map_err(RtmpError::protocol)?;
        self.handle_results(results)
    }

    /// Whether the client plays a stream.
    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// `onMetaData` for the player: H.264 (codec id 7) of this size, and AAC (10) with these
    /// channels when it gets audio.
    pub fn send_metadata(
        &mut self,
        size: Option<(u16, u16)>,
        audio_channels: Option<u8>,
    ) -> Result<(), RtmpError> {
        let Some(stream_id) = self.playing else {
            return Ok(());
        };
        let mut metadata = StreamMetadata::new();
        metadata.video_codec_id = Some(7);
        metadata.video_width = size.map(|(w, _)| u32::from(w));
        metadata.video_height = size.map(|(_, h)| u32::from(h));
        if let Some(channels) = audio_channels {
            // AAC (the players' audio is transcoded to it, see `super::opus_aac`).
            metadata.audio_codec_id = Some(10);
            metadata.audio_sample_rate = Some(48_000);
            metadata.audio_channels = Some(u32::from(channels));
            metadata.audio_is_stereo = Some(channels == 2);
        }
        metadata.encoder = Some("rtcdn".into());
        let packet = self
            .session()?
            .send_metadata(stream_id, &metadata)
            .map_err(RtmpError::protocol)?;
        self.out.extend_from_slice(&packet.bytes);
        Ok(())
    }

    /// One video tag body for the player at `timestamp_ms`.
    pub fn send_video(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), RtmpError> {
        let Some(stream_id) = self.playing else {
            return Ok(());
        };
        let packet = self
            .session()?
            .send_video_data(stream_id, data, RtmpTimestamp::new(timestamp_ms), false)
            .map_err(RtmpError::protocol)?;
        self.out.extend_from_slice(&packet.bytes);
        Ok(())
    }

    /// One audio tag body for the player at `timestamp_ms`.
    pub fn send_audio(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), RtmpError> {
        let Some(stream_id) = self.playing else {
            return Ok(());
        };
        let packet = self
            .session()?
            .send_audio_data(stream_id, data, RtmpTimestamp::new(timestamp_ms), false)
            .map_err(RtmpError::protocol)?;
        self.out.extend_from_slice(&packet.bytes);
        Ok(())
    }

    /// The stream ended: `NetStream.Play.Complete` for the player.
    pub fn finish_play(&mut self) -> Result<(), RtmpError> {
        let Some(stream_id) = self.playing.take() else {
            return Ok(());
        };
        let packet = self
            .session()?
            .finish_playing(stream_id)
            .map_err(RtmpError::protocol)?;
        self.out.extend_from_slice(&packet.bytes);
        Ok(())
    }

    fn session(&mut self) -> Result<&mut ServerSession, RtmpError> {
        match &mut self.phase {
            Phase::Chunks { session, .. } => Ok(session),
            Phase::Handshake(_) => Err(RtmpError::Protocol("no session yet".into())),
        }
    }

    fn handle_results(&mut self, results: Vec<ServerSessionResult>) -> Result<(), RtmpError> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => self.handle_event(event)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn handle_event(&mut self, event: ServerSessionEvent) -> Result<(), RtmpError> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                let base = app_name.split('?').next().unwrap_or_default();
                if self.apps.iter().any(|a| a == base) {
                    let results = self.session()?.accept_request(request_id);
                    let results = results.map_err(RtmpError::protocol)?;
                    self.handle_results(results)?;
                } else {
                    let why = format!("application {base:?} is not served here");
                    let results = self.session()?.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        &why,
                    );
                    let results = results.map_err(RtmpError::protocol)?;
                    self.handle_results(results)?;
                    return Err(RtmpError::UnknownApp(app_name));
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                if self.publishing
                    || self.pending_publish.is_some()
                    || self.playing.is_some()
                    || self.pending_play.is_some()
                {
                    let results = self.session()?.reject_request(
                        request_id,
                        "NetStream.Publish.BadName",
                        "this connection publishes a stream already",
                    );
                    let results = results.map_err(RtmpError::protocol)?;
                    return self.handle_results(results);
                }
                self.pending_publish = Some(request_id);
                self.events.push_back(RtmpEvent::PublishRequested {
                    app: app_name,
                    stream_key,
                });
            }
            ServerSessionEvent::PublishStreamFinished { .. } if self.publishing => {
                self.publishing = false;
                self.events.push_back(RtmpEvent::PublishFinished);
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } if self.publishing => self.events.push_back(RtmpEvent::Video {
                timestamp_ms: timestamp.value,
                data,
            }),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } if self.publishing => self.events.push_back(RtmpEvent::Audio {
                timestamp_ms: timestamp.value,
                data,
            }),
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } if self.publishing => {
                self.events.push_back(RtmpEvent::Metadata {
                    audio_codec_id: metadata.audio_codec_id,
                    width: metadata.video_width,
                    height: metadata.video_height,
                })
            }
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => {
                let busy = self.publishing
                    || self.pending_publish.is_some()
                    || self.playing.is_some()
                    || self.pending_play.is_some();
                if busy {
                    let results = self.session()?.reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "this connection publishes or plays a stream already",
                    );
                    let results = results.map_err(RtmpError::protocol)?;
                    return self.handle_results(results);
                }
                self.pending_play = Some((request_id, stream_id));
                self.events.push_back(RtmpEvent::PlayRequested {
                    app: app_name,
                    stream_key,
                });
            }
            ServerSessionEvent::PlayStreamFinished { .. } if self.playing.is_some() => {
                self.playing = None;
                self.events.push_back(RtmpEvent::PlayFinished);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
