//! RTP, RTCP and SRTP for rtcdn.
//!
//! Everything here is sans-IO: functions read `&[u8]`, write into a caller's `&mut [u8]` and
//! return lengths. Nothing reads a clock or a random source; the caller passes in whatever it
//! needs (e.g. the random sequence base of an [`RtpRewriter`]). The packet path allocates
//! nothing: parsers borrow their input, rewrites and SRTP work in place.
//!
//! A forwarding step on a core: unprotect what the publisher sent, rewrite it for one player
//! and protect it with that player's context. `buf` is a pooled packet buffer with room for
//! the SRTP tag after the datagram.
//!
//! ```no_run
//! # fn demo(buf: &mut [u8], n: usize, key: &[u8], salt: &[u8]) -> Result<(), rtp::Error> {
//! use rtp::srtp::{SrtpContext, SrtpProfile};
//! use rtp::{Pt, RtpRewriter, Ssrc};
//!
//! let mut from_publisher = SrtpContext::new(SrtpProfile::AeadAes128Gcm, key, salt)?;
//! let mut to_player = SrtpContext::new(SrtpProfile::AeadAes128Gcm, key, salt)?;
//! // Bases come from the caller's RNG: the crate never reads one.
//! let mut rewriter = RtpRewriter::new(Ssrc(0x1234_5678), Pt::new(96), 4711, 90_000);
//!
//! if rtp::rtcp::is_rtcp(&buf[..n]) {
//!     let len = from_publisher.unprotect_rtcp(&mut buf[..n])?;
//!     for packet in rtp::rtcp::RtcpIter::new(&buf[..len]) {
//!         let _packet = packet?;
//!     }
//! } else {
//!     let len = from_publisher.unprotect_rtp(&mut buf[..n])?;
//!     let header = rtp::RtpHeader::parse(&buf[..len])?;
//!     let _key = rtp::is_keyframe(rtp::VideoCodec::Vp8, header.payload());
//!     rewriter.rewrite(&mut buf[..len])?;
//!     let _out_len = to_player.protect_rtp(buf, len)?;
//! }
//! # Ok(()) }
//! ```
//!
//! [`twcc`] is the receiving side of transport-wide congestion control: it records arrivals
//! and writes the feedback ([`rtcp::TransportCc`]) a sender's bandwidth estimator reads, on
//! the `Instant`s the caller passes in.
//!
//! Panic policy: no input bytes can make this crate panic. An error means bad input or a
//! misused API; a panic would be a bug in a local invariant.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod av1_obu;
mod av1_sequence;
mod codec;
mod error;
mod ext;
pub mod h265;
mod missing;
mod packet;
mod rbsp;
mod rewrite;
mod seq;
pub mod vp9;

pub mod rtcp;
pub mod srtp;
pub mod twcc;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use av1_sequence::Av1SequenceHeader;
pub use codec::{is_keyframe, keyframe_size, VideoCodec};
pub use error::Error;
pub use ext::{ExtensionElement, ExtensionIter, Extensions};
pub use h265::H265Sps;
pub use missing::{MissingPacket, MissingSeqs, SeqArrival};
pub use packet::{
    header_len, set_marker, set_payload_type, set_sequence_number, set_ssrc, set_timestamp, Pt,
    RtpHeader, RtpHeaderBuilder, Ssrc,
};
pub use rewrite::RtpRewriter;
pub use seq::SeqNo;
