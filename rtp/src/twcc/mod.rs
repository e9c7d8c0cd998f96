//! Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01) at
//! the media receiver: [`TwccRecorder`] turns arrivals into the feedback a sender's bandwidth
//! estimator reads, and the functions here read, rewrite and add the transport-wide sequence
//! number header extension that numbers the packets.
//!
//! The feedback packet itself (decoding and writing) is
//! [`rtcp::TransportCc`](crate::rtcp::TransportCc) and
//! [`rtcp::TransportCcBuilder`](crate::rtcp::TransportCcBuilder).

mod header_ext;
mod recorder;

pub use header_ext::{set_transport_seq, transport_seq, write_with_transport_seq};
pub use recorder::{TwccRecorder, TwccRecorderStats};
