//! The IO around the media plane: the only code that owns media sockets and core threads, a thin
//! driver of the sans-IO `crate::media`. [`core`] runs one [`MediaCore`](crate::media::MediaCore)
//! per thread: it polls the sockets, reads the clock once per batch, hands the batch over,
//! flushes, and sleeps until the media core's earliest deadline (there is no periodic tick).
//! [`io`] holds the UDP backends and the ICE-TCP listeners (and every `unsafe` block of the crate outside the counting
//! allocator); [`mesh`] carries items between cores; `dtls.rs` runs each session's handshake
//! as a task (`crate::dtls`); `stats.rs` publishes a core's counters with its work, at most
//! every 20 ms and 50 ms after it goes quiet; [`tcp_framing`] is ICE-TCP's RFC 4571 framing,
//! sans-IO. Signalling (`crate::signalling`) talks to the
//! cores only through the control plane's messages (`crate::control`).

mod arrival;
pub mod core;
mod dtls;
#[allow(unsafe_code)] // syscalls, io_uring, pooled kernel buffers
pub mod io;
pub mod mesh;
mod stats;
pub mod tcp_framing;
