//! The node's control plane, sans-IO: which streams and sessions exist and where they run
//! ([`registry`]), the typed messages between it and the media cores ([`messages`], re-exported
//! here), what a session's watcher is told ([`status`]), and when each stream is relayed to
//! each CDN edge ([`relay_planner`]).
//!
//! Nothing here touches a socket or a runtime: the transports (`signalling` for HTTP and
//! WebSocket clients, `cdn::relay` for the links to edges) feed it what happened, with the
//! time, and carry out what it decides. (The one clock it reads is the registry's stamp of when
//! a session was accepted, shown as its age by the control API.)

pub mod messages;
pub mod plane;
pub mod registry;
pub mod relay_planner;
pub mod status;

pub use messages::*;
