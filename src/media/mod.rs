//! The media plane of one core, sans-IO: the middle of the node. [`MediaCore`] owns a core's
//! sessions (`crate::session`) and feeds them datagrams, commands from the control plane
//! (`crate::control`), DTLS outcomes, items from other cores and the time; its router
//! (`router.rs`: streams → players, fan-out, keyframe-request merging, NACK mapping, sender
//! report translation) decides where every packet and every request goes, and answers players'
//! NACKs from the [`retransmission_cache`]. [`demux`] is the one RFC 7983 demultiplexer.
//!
//! Nothing here reads the clock, opens a socket or spawns a thread: the reactor
//! (`crate::reactor`, the IO edge) drives a `MediaCore` on a real node, and the tests, the
//! simulator (`tests/sim`) and the `session_input` fuzz target drive one by hand on virtual
//! time with a [`MemorySink`], a [`ForwardQueue`] and [`NoDtls`].
//!
//! Publishers that are not WebRTC peers ([`ingest`]: RTMP) hand the core plain RTP through a
//! ring; the router takes it from there as from a decrypted SRTP packet. Players that are not
//! WebRTC peers ([`egress`]: RTMP) tap a stream's plain video at its publisher's core through
//! a ring the other way.
//!
//! ```text
//! datagram ─ demux ─┬─ STUN ─── session (ICE) ──────────┐
//!                   ├─ DTLS ─── DtlsAssociation         ├─ drain: transmits → TxSink
//!                   └─ SRTP ─── session (decrypt) ─ router ─ players (encrypt) → TxSink
//!                                                       └─ other cores → ForwardSink
//! ```

mod burst;
mod core;
mod counters;
pub mod demux;
mod dtls;
pub mod egress;
mod forward;
pub mod ingest;
mod peer;
pub mod retransmission_cache;
mod router;
#[doc(hidden)]
pub mod test_support;
mod timers;
mod tx;

pub use self::core::{MediaCore, MediaCoreConfig, SocketRequest};
pub use self::counters::MediaCounters;
pub use self::demux::Datagram;
pub use self::dtls::{
    peer_test_keys, test_keys, DtlsAssociation, DtlsStarter, NoAssociation, NoDtls,
};
pub use self::egress::{egress_channel, EgressPacket, EgressReceiver, EgressTap, EGRESS_MTU};
pub use self::forward::{ForwardKind, ForwardQueue, ForwardSink, ForwardedItem, FORWARD_MTU};
pub use self::ingest::{ingest_channel, IngestFeed, IngestSender, INGEST_MTU};
pub use self::tx::{MemorySink, SentDatagram, SocketId, TxSink, MAX_DATAGRAM};
