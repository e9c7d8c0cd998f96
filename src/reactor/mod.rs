//! The IO around the media plane: the only code that owns media sockets and core threads.
//! [`core`] drives one sans-IO [`MediaCore`](crate::media::MediaCore) per thread; [`io`] holds
//! the UDP backends (and every `unsafe` block of the crate outside the counting allocator);
//! [`mesh`] carries items between cores.

mod arrival;
pub mod core;
mod dtls;
#[allow(unsafe_code)] // syscalls, io_uring, pooled kernel buffers
pub mod io;
pub mod mesh;
mod stats;
