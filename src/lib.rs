//! rtcdn: a real-time WebRTC CDN node.
//!
//! The server is split into sans-IO protocol logic (`sdp`, `session`, `stream`) and the only parts
//! that touch sockets and threads (`reactor`, `signalling`, `dtls`'s driver task, `main.rs`).

pub mod dtls;
pub mod reactor;
pub mod sdp;
