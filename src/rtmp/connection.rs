//! [`RtmpConnection`]: one RTMP client connection on the server side, sans-IO. Bytes from the
//! client go in ([`RtmpConnection::handle_input`]); bytes for the client
//! ([`RtmpConnection::output`]) and what the client asked or sent ([`RtmpConnection::poll_event`])
//! come out.
//!
//! The handshake, the chunk stream and the AMF0 commands (connect, createStream, publish,
//! deleteStream, ...) are `rml_rtmp`'s `Handshake` and `ServerSession`, with the
//! [`ChunkGuard`] in front (see there why). This type decides what the node allows: the
//! applications it serves, one publish per connection, no playback yet.

use std::collections::VecDeque;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

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
}

/// Why the connection ends.
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
                            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
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
        let results = session
            .handle_input(bytes)
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        self.handle_results(results)
    }

    /// Lets the pending publish go on (`NetStream.Publish.Start`).
    pub fn accept_publish(&mut self) -> Result<(), RtmpError> {
        let Some(request) = self.pending_publish.take() else {
            return Ok(());
        };
        let results = self.session()?.accept_request(request);
        let results = results.map_err(|e| RtmpError::Protocol(e.to_string()))?;
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
            .map_err(|e| RtmpError::Protocol(e.to_string()))?;
        self.handle_results(results)
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
                    let results = results.map_err(|e| RtmpError::Protocol(e.to_string()))?;
                    self.handle_results(results)?;
                } else {
                    let why = format!("application {base:?} is not served here");
                    let results = self.session()?.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        &why,
                    );
                    let results = results.map_err(|e| RtmpError::Protocol(e.to_string()))?;
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
                if self.publishing || self.pending_publish.is_some() {
                    let results = self.session()?.reject_request(
                        request_id,
                        "NetStream.Publish.BadName",
                        "this connection publishes a stream already",
                    );
                    let results = results.map_err(|e| RtmpError::Protocol(e.to_string()))?;
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
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let results = self.session()?.reject_request(
                    request_id,
                    "NetStream.Play.Failed",
                    "RTMP playback is not served yet: play over WebRTC (WHEP)",
                );
                let results = results.map_err(|e| RtmpError::Protocol(e.to_string()))?;
                self.handle_results(results)?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
