//! SDP offer/answer for WHIP/WHEP and rtcdn's own client side (on sdp-types).
//!
//! sdp-types splits the text into lines and m-sections; this module reads and writes the
//! WebRTC attributes (JSEP, RFC 8829) on top of it. The server is ICE-lite with one BUNDLE
//! transport per peer and forwards media without transcoding, so an answer accepts one codec
//! per m-line: [`choose_publish_codec`] for a publisher's offer, [`match_play_codec`] for a
//! player's. No I/O, no clock and no RNG here: the `o=` session id derives from the ICE ufrag.
//! `crate::negotiate` decides with it what a session gets; the transports (`crate::signalling`,
//! the CDN's relay offers) call that.

mod answer;
mod codec;
mod error;
mod offer;
mod parse;
mod types;
mod write;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests;

pub use answer::{write_answer, AcceptedMedia, AnswerParams, MediaAnswer};
pub use codec::{
    choose_publish_codec, match_play_codec, select_extmaps, EXT_ABS_SEND_TIME, EXT_AUDIO_LEVEL,
    EXT_MID, EXT_TRANSPORT_CC,
};
pub use error::SdpError;
pub use offer::{write_offer, OfferMedia, OfferParams};
pub use parse::{parse, MAX_MEDIA, MAX_SDP_LEN, MAX_SIMULCAST_LAYERS};
pub use types::{
    Codec, Direction, Extmap, Fingerprint, MediaDescription, MediaKind, OtherMedia, SendTrack,
    SessionDescription, Setup, EXT_REPAIRED_RTP_STREAM_ID, EXT_RTP_STREAM_ID,
};
