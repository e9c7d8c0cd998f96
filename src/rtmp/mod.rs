//! RTMP ingest: encoders (ffmpeg, OBS, hardware encoders) publish `rtmp://HOST:1935/live/NAME`,
//! and the stream is registered like any publisher, so WebRTC players (WHEP, the Flashphoner
//! SDK, CDN edges) play NAME.
//!
//! Sans-IO in the middle, IO at the edge:
//!
//! ```text
//! TCP ─ listener ─ connection (chunk_guard + rml_rtmp: handshake, chunks, AMF0)
//!                      │ publish ─ ingest (auth policy, registry, core placement)
//!                      └ video ─ publisher (flv ─ h264_rtp) ─ ingest ring ─ media core router
//! ```
//!
//! [`connection`] is one client connection (bytes in, bytes and events out), [`chunk_guard`]
//! the chunk stream checks in front of the protocol crate, [`flv`] the video tag parser,
//! [`h264_rtp`] the RFC 6184 packetizer, [`publisher`] one stream's video, [`ingest`] the
//! node's side of a publish, [`listener`] the TCP listener and its limits.
//!
//! Video only for now: AAC audio is dropped (with a log line) until it is transcoded to Opus.

pub mod chunk_guard;
pub mod connection;
pub mod flv;
pub mod h264_rtp;
pub mod ingest;
pub mod listener;
pub mod publisher;

pub use connection::{RtmpConnection, RtmpError, RtmpEvent};
