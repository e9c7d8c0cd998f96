//! rtcdn: a real-time WebRTC CDN node.
//!
//! The server is split into sans-IO protocol logic ([`sdp`], [`session`], [`media`],
//! [`negotiate`], [`control`], [`retransmission_cache`], [`loss_detector`], [`rtx`]) and the
//! only parts that touch sockets and threads ([`reactor`], [`signalling`], the [`dtls`] driver
//! task, [`node`]).
//!
//! Unsafe code is denied outside [`reactor::io`] (syscalls, io_uring) and [`alloc_count`] (the
//! counting global allocator).
#![deny(unsafe_code)]

/// The git revision this build is from (`-modified` with uncommitted changes; "unknown" outside
/// a git checkout), set by `build.rs`.
pub const GIT_REVISION: &str = env!("RTCDN_GIT_REVISION");

#[allow(unsafe_code)] // a GlobalAlloc is unsafe to implement
pub mod alloc_count;
pub mod auth;
pub mod bwe;
pub mod cdn;
pub mod config;
pub mod control;
pub mod dtls;
#[doc(hidden)]
pub mod fuzzing;
pub mod loss_detector;
pub mod media;
pub mod negotiate;
pub mod node;
pub mod panic_guard;
pub mod reactor;
pub mod retransmission_cache;
pub mod rtx;
pub mod sdp;
pub mod session;
pub mod signalling;
pub mod simulcast;
pub mod transport_cc;
pub mod wcs_protocol;
