//! The per-core media reactor: the only code that owns media sockets.

pub mod io;
