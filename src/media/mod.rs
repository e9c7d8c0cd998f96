//! The media plane of one core, sans-IO: [`MediaCore`] owns a core's sessions and feeds them
//! datagrams, commands, DTLS outcomes, items from other cores and the time; its router
//! (`media/router.rs`) decides where every packet and every request goes. Nothing here reads the clock, opens a
//! socket or spawns a thread: the reactor (`crate::reactor`) drives a `MediaCore` on a real
//! node, and a test drives one by hand on virtual time with a [`MemorySink`], a
//! [`ForwardQueue`] and [`NoDtls`].
//!
//! ```text
//! datagram ─ demux ─┬─ STUN ─── session (ICE) ──────────┐
//!                   ├─ DTLS ─── DtlsAssociation         ├─ drain: transmits → TxSink
//!                   └─ SRTP ─── session (decrypt) ─ router ─ players (encrypt) → TxSink
//!                                                       └─ other cores → ForwardSink
//! ```

mod core;
mod counters;
pub mod demux;
mod dtls;
mod forward;
mod peer;
mod router;
mod timers;
mod tx;

pub use self::core::{MediaCore, MediaCoreConfig, SocketRequest};
pub use self::counters::MediaCounters;
pub use self::demux::Datagram;
pub use self::dtls::{
    peer_test_keys, test_keys, DtlsAssociation, DtlsStarter, NoAssociation, NoDtls,
};
pub use self::forward::{ForwardKind, ForwardQueue, ForwardSink, ForwardedItem, FORWARD_MTU};
pub use self::tx::{MemorySink, SentDatagram, SocketId, TxSink, MAX_DATAGRAM};
