//! STUN and ICE for rtcdn: an ICE-lite server agent and a controlling client agent.
//!
//! Both agents are sans-IO state machines. They never touch a socket and never read the
//! clock: every input carries the current [`Instant`](std::time::Instant), and everything the agent wants to do
//! comes back out of a `poll_*` method.
//!
//! * [`IceLiteAgent`] is the server side (RFC 8445 §2.5 ICE-lite). It answers connectivity
//!   checks, learns the peer's address from the nominating check and watches consent freshness
//!   (RFC 7675). Browsers send no candidates in WHIP/WHEP, so no candidates are configured.
//! * [`IceControllingAgent`] is the client side used by rtcdn's bench client and the
//!   origin→edge relay. It checks the server's candidates with aggressive nomination (allowed
//!   against a lite peer, RFC 8445 §7.1.1), then sends consent checks.
//! * [`local_ufrag`] reads the receiver's ufrag from a Binding request without decoding it,
//!   so a server with many agents on one port can pick the agent a new peer's check is for.
//!
//! # The run loop
//!
//! After every `handle_*` call, drain [`poll_transmit`](IceLiteAgent::poll_transmit) and
//! [`poll_event`](IceLiteAgent::poll_event), then ask [`poll_timeout`](IceLiteAgent::poll_timeout)
//! when to call [`handle_timeout`](IceLiteAgent::handle_timeout) next. `None` from
//! `poll_timeout` means the agent has nothing left to do (it has disconnected).
//!
//! ```no_run
//! use std::net::{SocketAddr, UdpSocket};
//! use std::time::Instant;
//!
//! use ice::{IceCredentials, IceEvent, IceLiteAgent};
//!
//! # fn main() -> std::io::Result<()> {
//! let socket = UdpSocket::bind("0.0.0.0:3478")?;
//! let local = IceCredentials::random(&mut rand::thread_rng()); // goes into the SDP answer
//! let remote = IceCredentials { ufrag: "from".into(), pwd: "the SDP offer".into() };
//! let mut agent = IceLiteAgent::new(local, remote, Instant::now());
//! let mut buf = [0u8; 1500];
//! loop {
//!     // Sleep until the agent's deadline or the next datagram, whichever comes first.
//!     let Some(deadline) = agent.poll_timeout() else { break };
//!     let wait = deadline.saturating_duration_since(Instant::now());
//!     socket.set_read_timeout(Some(wait.max(std::time::Duration::from_millis(1))))?;
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, from)) if ice::is_stun(&buf[..n]) => {
//!             if let Err(e) = agent.handle_packet(Instant::now(), from, &buf[..n]) {
//!                 eprintln!("dropped stun from {from}: {e}");
//!             }
//!         }
//!         Ok(_) => { /* DTLS, RTP, RTCP: someone else's business (RFC 7983) */ }
//!         Err(_) => agent.handle_timeout(Instant::now()),
//!     }
//!     while let Some(t) = agent.poll_transmit() {
//!         socket.send_to(&t.contents, t.destination)?;
//!     }
//!     while let Some(event) = agent.poll_event() {
//!         match event {
//!             IceEvent::Connected { remote } => println!("media goes to {remote}"),
//!             IceEvent::RemoteChanged { remote } => println!("media now goes to {remote}"),
//!             IceEvent::Disconnected { reason } => println!("gone: {reason:?}"),
//!             _ => {}
//!         }
//!     }
//! }
//! # let _: Option<SocketAddr> = agent.remote();
//! # Ok(())
//! # }
//! ```
//!
//! # Time and randomness
//!
//! Time is whatever `now` the caller passes in; tests drive both agents with virtual time.
//! [`IceControllingAgent`] draws transaction ids, its tie-breaker and consent jitter from a
//! generator seeded by the caller, so a run is reproducible from its seed.
//!
//! # Errors and panics
//!
//! `handle_packet` returns an [`IceError`] for every datagram it drops. Errors never end an
//! agent; only [`IceEvent::Disconnected`] does. No input, however malformed, makes the crate
//! panic (see the `fuzzing` feature).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;

use rand::Rng;

mod controlling;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod lite;
mod stun;
mod username;

pub use controlling::IceControllingAgent;
pub use error::IceError;
pub use lite::IceLiteAgent;
pub use stun::is_stun;
pub use username::local_ufrag;

/// An ICE username fragment and password (RFC 8445 §5.3, RFC 8839 §5.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceCredentials {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh credentials: an 8-character ufrag and a 24-character password made of ice-chars
    /// (RFC 8839 §5.4 asks for at least 4 and 22 characters, 24 and 128 bits of randomness).
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self {
            ufrag: random_ice_chars(rng, 8),
            pwd: random_ice_chars(rng, 24),
        }
    }
}

/// `ice-char = ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.4): 6 bits per character.
fn random_ice_chars<R: Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    const ICE_CHARS: &[u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| char::from(ICE_CHARS[rng.gen_range(0..ICE_CHARS.len())]))
        .collect()
}

/// One datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The encoded STUN message.
    pub contents: Vec<u8>,
}

/// What an agent reports through `poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IceEvent {
    /// The first nomination succeeded: media may flow to and from `remote`.
    Connected {
        /// The peer's address on the nominated pair.
        remote: SocketAddr,
    },
    /// A later nomination picked another address (e.g. the peer switched networks).
    RemoteChanged {
        /// The peer's new address.
        remote: SocketAddr,
    },
    /// The agent has stopped for good; it sends nothing more and rejects further input.
    Disconnected {
        /// Why it stopped.
        reason: DisconnectReason,
    },
}

/// Why an agent reported [`IceEvent::Disconnected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// No consent for the consent timeout after being connected (RFC 7675 §5.1).
    ConsentExpired,
    /// The controlling agent's checks all went unanswered.
    Failed,
    /// The lite agent saw no nomination within the consent timeout of its creation.
    NeverConnected,
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn random_credentials_use_ice_chars() {
        let mut rng = StdRng::seed_from_u64(1);
        let creds = IceCredentials::random(&mut rng);
        assert_eq!(creds.ufrag.len(), 8);
        assert_eq!(creds.pwd.len(), 24);
        let ice_char = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
        assert!(creds.ufrag.chars().chain(creds.pwd.chars()).all(ice_char));
        assert_ne!(creds, IceCredentials::random(&mut rng));
    }

    #[test]
    fn random_works_through_dyn_rng() {
        let mut rng = StdRng::seed_from_u64(2);
        let dyn_rng: &mut dyn rand::RngCore = &mut rng;
        assert_eq!(IceCredentials::random(dyn_rng).pwd.len(), 24);
    }
}
