//! The per-core media reactor: the only code that owns media sockets.

pub mod core;
pub mod io;
pub mod mesh;
