//! rtcdn's client side and load generator: WHIP/WHEP and Flashphoner WebSocket clients built on
//! the same `ice`, `rtp`, DTLS and SDP code as the server, synthetic media whose every byte a
//! receiver can check, a player's injected loss and NACKs (`repair`), the load run (`run`), and
//! the raw forwarding baseline (`limit`).

// The `--json` report is one flat `json!` object with more keys than the default limit allows.
#![recursion_limit = "256"]

pub mod cli;
pub mod client;
pub mod http;
pub mod limit;
pub mod link;
pub mod media;
pub mod repair;
pub mod rtp_publish;
pub mod run;
pub mod stats;

pub use client::{ClientError, ClientSession, Mode};
