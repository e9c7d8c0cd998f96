//! The ICE side of a session: which agent it runs, and how consent keeps it alive.
//!
//! Clients that connect to rtcdn get an ICE-lite agent, whose consent is renewed by their
//! authenticated media as well as by their checks; the relays rtcdn opens to other nodes run
//! a controlling agent that sends consent checks of its own (RFC 7675).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{
    DisconnectReason, IceControllingAgent, IceCredentials, IceError, IceEvent, IceLiteAgent,
    Transmit,
};

use super::SplitMix64;
use crate::control::{EndReason, SessionRole};

/// The ICE side a session plays: ICE-lite for clients that connect to us, controlling for the
/// relays rtcdn opens to other nodes.
#[allow(clippy::large_enum_variant)] // One per session, never moved on the packet path.
pub(super) enum IceAgent {
    Lite(IceLiteAgent),
    Controlling(IceControllingAgent),
}

impl IceAgent {
    /// The agent for a session of `role`, giving up on a peer silent for `consent_timeout`. A
    /// relay's agent takes its tie-breaker from `random`.
    pub(super) fn new(
        role: &SessionRole,
        local: IceCredentials,
        remote: IceCredentials,
        consent_timeout: Duration,
        random: &mut SplitMix64,
        now: Instant,
    ) -> IceAgent {
        match role {
            SessionRole::Relay {
                remote_candidates, ..
            } => {
                let mut agent = IceControllingAgent::new(
                    local,
                    remote,
                    remote_candidates.clone(),
                    random.next(),
                    now,
                );
                agent.set_consent_timeout(consent_timeout);
                IceAgent::Controlling(agent)
            }
            _ => {
                let mut agent = IceLiteAgent::new(local, remote, now);
                agent.set_consent_timeout(consent_timeout);
                IceAgent::Lite(agent)
            }
        }
    }

    pub(super) fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<(), IceError> {
        match self {
            IceAgent::Lite(a) => a.handle_packet(now, from, packet),
            IceAgent::Controlling(a) => a.handle_packet(now, from, packet),
        }
    }
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        match self {
            IceAgent::Lite(a) => a.handle_timeout(now),
            IceAgent::Controlling(a) => a.handle_timeout(now),
        }
    }
    pub(super) fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            IceAgent::Lite(a) => a.poll_transmit(),
            IceAgent::Controlling(a) => a.poll_transmit(),
        }
    }
    pub(super) fn poll_event(&mut self) -> Option<IceEvent> {
        match self {
            IceAgent::Lite(a) => a.poll_event(),
            IceAgent::Controlling(a) => a.poll_event(),
        }
    }
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            IceAgent::Lite(a) => a.poll_timeout(),
            IceAgent::Controlling(a) => a.poll_timeout(),
        }
    }
    /// Authenticated media counts as consent for a lite agent; a controlling agent runs its own
    /// consent checks.
    pub(super) fn renew_consent(&mut self, now: Instant, from: SocketAddr) {
        if let IceAgent::Lite(a) = self {
            a.renew_consent(now, from);
        }
    }
}

/// Why a session ends when its agent stops.
pub(super) fn end_reason(reason: DisconnectReason) -> EndReason {
    match reason {
        DisconnectReason::NeverConnected => EndReason::NeverConnected,
        _ => EndReason::ConsentExpired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(role: &SessionRole, random: &mut SplitMix64) -> IceAgent {
        let credentials = |ufrag: &str| IceCredentials {
            ufrag: ufrag.into(),
            pwd: "password-0123456789012345".into(),
        };
        let consent = Duration::from_secs(30);
        let (local, remote) = (credentials("locl"), credentials("remt"));
        IceAgent::new(role, local, remote, consent, random, Instant::now())
    }

    #[test]
    fn only_a_relay_controls_and_draws_from_the_sessions_random_values() {
        // The draws that follow (a player's sequence bases, the RTCP SSRC) depend on it.
        let relay = SessionRole::Relay {
            tracks: Vec::new(),
            remote_candidates: vec!["127.0.0.1:5000".parse().unwrap()],
            path: crate::control::RelayPath::Udp,
            layers: None,
        };
        let (mut random, mut untouched) = (SplitMix64(7), SplitMix64(7));
        assert!(matches!(
            agent(&relay, &mut random),
            IceAgent::Controlling(_)
        ));
        untouched.next();
        assert_eq!(random.next(), untouched.next());

        let player = SessionRole::Player { tracks: Vec::new() };
        let (mut random, mut untouched) = (SplitMix64(7), SplitMix64(7));
        assert!(matches!(agent(&player, &mut random), IceAgent::Lite(_)));
        assert_eq!(random.next(), untouched.next());
    }

    #[test]
    fn a_peer_that_never_came_is_told_from_one_that_went_away() {
        assert_eq!(
            end_reason(DisconnectReason::NeverConnected),
            EndReason::NeverConnected
        );
        for gone in [DisconnectReason::ConsentExpired, DisconnectReason::Failed] {
            assert_eq!(end_reason(gone), EndReason::ConsentExpired);
        }
    }
}
