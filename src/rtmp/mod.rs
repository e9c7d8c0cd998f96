//! RTMP: encoders (ffmpeg, OBS, hardware encoders) publish `rtmp://HOST:1935/live/NAME`, and
//! the stream is registered like any publisher, so WebRTC players (WHEP, the Flashphoner SDK,
//! CDN edges) play NAME; RTMP players (ffplay, VLC) play any stream with H.264 video the same
//! way, with its Opus audio as AAC.
//!
//! Sans-IO in the middle, IO at the edge:
//!
//! ```text
//! TCP ─ listener ─ connection (chunk_guard + rml_rtmp: handshake, chunks, AMF0)
//!                      │ publish ─ ingest (auth policy, registry, core placement)
//!                      ├ video ─ publisher (flv ─ nal_rtp…) ─┬ ingest ring ─ media core router
//!                      ├ audio ─ audio (flv ─ aac_opus|Opus) ─┘
//!                      │ play ─ player (auth policy, registry: a player with an egress tap)
//!                      ├ video ◂─ rtp_flv ◂─ egress ring ◂─ the publisher's media core
//!                      └ audio ◂─ player_audio (opus_aac, one per stream) ◂─ audio-only ring
//! ```
//!
//! [`connection`] is one client connection (bytes in, bytes and events out), [`chunk_guard`]
//! the chunk stream checks in front of the protocol crate, [`flv`] the tag parsers (classic
//! FLV, and Enhanced RTMP's FourCC tags: `avc1`, `hvc1`, `vp09` and `av01` video, `Opus` and `mp4a`
//! audio), [`nal_rtp`] the RFC 6184 (H.264) and RFC 7798 (H.265) packetizer, [`vp9_rtp`] the RFC 9628 one, [`av1_rtp`]
//! AV1's (AOM), [`publisher`] one
//! stream's video, [`audio`] its audio, AAC transcoded by [`aac_opus`] to Opus once per stream
//! while players listen, Opus (Enhanced RTMP) forwarded as it comes, one RTP packet a frame,
//! [`ingest`] the node's side of a publish, [`player`] the node's side of a play, [`rtp_flv`] the RFC 6184
//! depacketizer that makes a stream's RTP FLV again for an RTMP player, [`opus_aac`] the
//! Opus to AAC transcoder for RTMP players, run once per stream by [`player_audio`] while one
//! plays, [`push`] an origin's RTMP publish to an edge, fed by [`rtp_rtmp`] (with
//! [`rtp_vp9_flv`] for VP9, [`rtp_av1_flv`] for AV1 and [`rtp_opus_flv`] for Opus), [`listener`] the TCP listener and its limits.

pub mod aac_opus;
pub mod audio;
pub mod av1_rtp;
pub mod chunk_guard;
pub mod connection;
pub mod flv;
pub mod ingest;
pub mod listener;
pub mod nal_rtp;
pub mod opus_aac;
pub mod player;
pub mod player_audio;
pub mod publisher;
pub mod push;
pub mod rtp_av1_flv;
pub mod rtp_flv;
pub mod rtp_opus_flv;
pub mod rtp_rtmp;
pub mod rtp_vp9_flv;
pub mod vp9_rtp;

pub use connection::{RtmpConnection, RtmpError, RtmpEvent};
