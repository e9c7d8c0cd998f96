//! The Flashphoner WCS WebSocket protocol, both sides of it: [`frames`] (the envelope, the
//! stream status objects the Web SDK reads, the `info` texts of ended sessions) and [`client`]
//! (a client session, as an origin's relay speaks it to an edge, and the bench to a node).
//!
//! It sits apart from `signalling` (the server side: the upgrade and what each client message
//! does) so that the CDN's relays speak the protocol without reaching into the server.
//! [`frames`] is sans-IO (text in, text out); [`client`] drives a WebSocket connection.

pub mod client;
pub mod frames;
