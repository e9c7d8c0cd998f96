//! rtcdn's client side and load generator: WHIP/WHEP clients built on the same `ice`, `rtp`,
//! DTLS and SDP code as the server, and synthetic media whose every byte a receiver can check.

pub mod client;
pub mod http;
pub mod media;

pub use client::{ClientError, ClientSession, Mode};
