//! The node's control plane, sans-IO, and its one owner: [`plane::ControlPlane`] owns the
//! stream and session [`registry`] and the [`relay_planner`] (when each stream is relayed to
//! each CDN edge), takes what happened through its `handle_*` inputs, with the time, and gives
//! out what to do ([`plane::ControlAction`]: commands for the media cores in the typed
//! [`messages`], re-exported here; [`status`]es for whoever watches a session; relay orders).
//! Every decision of the control plane is made there: who may publish a name and play a
//! stream, which sessions end when a publisher leaves or a key is revoked, and why, which
//! stream is relayed where, retried and stopped.
//!
//! Nothing here touches a socket, a runtime, the clock or a random source: the transports
//! (`signalling` for HTTP, WHIP/WHEP and WebSocket clients, which holds the plane; `cdn::relay`
//! for the links to the edges) feed it and carry out its actions, and the relay planner's
//! jitter comes from the RNG it is given.

pub mod messages;
pub mod plane;
pub mod registry;
pub mod relay_planner;
pub mod status;

pub use messages::*;
