//! rtcdn: a real-time WebRTC CDN node.
//!
//! Sans-IO in the middle, IO at the edges. The middle decides, takes the time as an argument
//! and is driven by hand in tests: [`media`] (a core's sessions and the router), [`session`]
//! (one peer), [`control`] (the control plane: registry, relay planner, session statuses),
//! [`sdp`] and [`negotiate`] (offer and answer), [`simulcast`], [`bwe`], [`config`] and the
//! protocol frames of [`wcs_protocol`]. The edges own the sockets, threads and runtimes and carry
//! out what the middle decides: [`reactor`] (media sockets and core threads), [`signalling`]
//! (HTTP and WebSocket), [`cdn`] (the links to edges), [`cluster`] (the dynamic CDN's state in
//! Redis, around its sans-IO membership and ownership), the [`dtls`] handshake tasks, [`auth`]'s
//! REST hook, and [`node`] (start and stop). The README's Layout section has the map.
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
pub mod cluster;
pub mod config;
pub mod control;
pub mod dtls;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod negotiate;
pub mod node;
pub mod panic_guard;
pub mod reactor;
pub mod rtmp;
pub mod sdp;
pub mod session;
pub mod signalling;
pub mod simulcast;
pub mod wcs_protocol;
