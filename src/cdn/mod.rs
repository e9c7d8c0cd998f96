//! The static CDN (Flashphoner "CDN 1.0"): an origin relays every published stream to its
//! configured edges over WebRTC, and players are sent to an edge.

pub mod relay;
