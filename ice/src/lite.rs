//! The server side: an ICE-lite agent (RFC 8445 §2.5) with consent freshness (RFC 7675).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::{HMACKey, MessageClass};

use crate::stun::{self, BindingRequest, ExpectedCredentials};
use crate::{DisconnectReason, IceCredentials, IceError, IceEvent, Transmit};

/// RFC 7675 §5.1: consent expires 30 seconds after the last proof of it.
pub(crate) const DEFAULT_CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Server side, RFC 8445 §2.5 ICE-lite.
///
/// The agent has no candidates of its own to check: it answers every valid Binding request
/// and takes the source address of the latest nominating request (USE-CANDIDATE from a
/// controlling peer) as the peer's address. Every valid request from that address renews
/// consent (RFC 7675); when none arrives for the consent timeout the agent disconnects.
///
/// Requests with a wrong USERNAME, MESSAGE-INTEGRITY or FINGERPRINT are answered with
/// nothing at all, not with a 400/401 error response: an unauthenticated sender learns
/// nothing and cannot use the server as a reflector. Browsers just retry, which is what
/// they would do after a 401 as well.
///
/// A lite agent is always the controlled agent (RFC 8445 §6.1.1). A request that claims
/// the controlled role (ICE-CONTROLLED) is still answered, but never nominates.
#[derive(Debug)]
pub struct IceLiteAgent {
    // Passed by argument.
    local: IceCredentials,
    remote: IceCredentials,
    consent_timeout: Duration,
    // Derived.
    local_key: Option<HMACKey>,
    // Protocol state.
    state: LiteState,
    /// Last valid request from the nominated address; before nomination, creation time.
    consent_since: Instant,
    // Output queues.
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiteState {
    AwaitingNomination,
    Nominated(SocketAddr),
    Closed,
}

impl IceLiteAgent {
    /// A lite agent for one session. `local` goes into our SDP, `remote` comes from the
    /// peer's; an empty `remote.ufrag` accepts any remote ufrag in USERNAME.
    pub fn new(local: IceCredentials, remote: IceCredentials, now: Instant) -> Self {
        Self {
            local_key: stun::short_term_key(&local.pwd),
            local,
            remote,
            consent_timeout: DEFAULT_CONSENT_TIMEOUT,
            state: LiteState::AwaitingNomination,
            consent_since: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Feeds one datagram received from `from`.
    ///
    /// Only Binding requests are accepted; anything else is dropped with an error and
    /// changes nothing. A deadline that has already passed at `now` is acted on first, so a
    /// late request cannot revive an expired agent.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<(), IceError> {
        // A request that arrives after the deadline must not revive an expired agent.
        self.handle_timeout(now);
        if self.state == LiteState::Closed {
            return Err(IceError::Closed);
        }
        match stun::binding_class(packet)? {
            MessageClass::Request => {}
            // RFC 8445 §11 keepalives. They carry no integrity, so they prove nothing and renew
            // nothing; libnice sends only these once connected (see `renew_consent`).
            MessageClass::Indication => return Ok(()),
            _ => return Err(IceError::UnexpectedMessage),
        }
        let expected = ExpectedCredentials {
            local_ufrag: &self.local.ufrag,
            remote_ufrag: &self.remote.ufrag,
            key: self.local_key.as_ref(),
        };
        let (request, response) = answer_request(packet, from, &expected)?;
        self.transmits.extend(response);
        if request.use_candidate && request.controlling && !request.controlled {
            self.nominate(now, from);
        }
        if self.state == LiteState::Nominated(from) {
            self.consent_since = now;
        }
        Ok(())
    }

    /// Renews consent because authenticated media (SRTP/SRTCP that passed its tag check) arrived
    /// from `from`. An ICE-lite agent sends no checks of its own, and some full agents (libnice,
    /// used by GStreamer) send no consent checks after connecting, only indications; media that
    /// only the peer's keys can produce is as good a proof that it still wants the session.
    pub fn renew_consent(&mut self, now: Instant, from: SocketAddr) {
        if self.state == LiteState::Nominated(from) {
            self.consent_since = now;
        }
    }

    /// Advances time: reports [`DisconnectReason::ConsentExpired`] or
    /// [`DisconnectReason::NeverConnected`] once the deadline from `poll_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let reason = match self.state {
            LiteState::Closed => return,
            _ if now < self.consent_deadline() => return,
            LiteState::AwaitingNomination => DisconnectReason::NeverConnected,
            LiteState::Nominated(_) => DisconnectReason::ConsentExpired,
        };
        self.state = LiteState::Closed;
        self.events.push_back(IceEvent::Disconnected { reason });
    }

    /// The next datagram to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None` once disconnected.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            LiteState::Closed => None,
            _ => Some(self.consent_deadline()),
        }
    }

    /// The nominated address of the peer, while connected.
    pub fn remote(&self) -> Option<SocketAddr> {
        match self.state {
            LiteState::Nominated(remote) => Some(remote),
            _ => None,
        }
    }

    /// How long the agent waits for a valid request from the nominated address (and, before
    /// nomination, for a nomination) before it disconnects. Default 30 s (RFC 7675 §5.1).
    pub fn set_consent_timeout(&mut self, timeout: Duration) {
        self.consent_timeout = timeout;
    }

    fn consent_deadline(&self) -> Instant {
        self.consent_since + self.consent_timeout
    }

    fn nominate(&mut self, now: Instant, from: SocketAddr) {
        let event = match self.state {
            LiteState::AwaitingNomination => IceEvent::Connected { remote: from },
            LiteState::Nominated(current) if current != from => {
                IceEvent::RemoteChanged { remote: from }
            }
            LiteState::Nominated(_) | LiteState::Closed => return,
        };
        self.state = LiteState::Nominated(from);
        self.consent_since = now;
        self.events.push_back(event);
    }
}

/// Verifies a Binding request and builds the success response (RFC 8445 §7.3.1): the
/// request's transaction id, XOR-MAPPED-ADDRESS = source address, MESSAGE-INTEGRITY with
/// our password, FINGERPRINT. Shared by both agents.
pub(crate) fn answer_request(
    packet: &[u8],
    from: SocketAddr,
    expected: &ExpectedCredentials<'_>,
) -> Result<(BindingRequest, Option<Transmit>), IceError> {
    let request = stun::parse_request(packet, expected)?;
    // parse_request fails with BadIntegrity when there is no key, so this is Some.
    let response = expected
        .key
        .and_then(|key| stun::encode_success(request.transaction_id, from, key))
        .map(|contents| Transmit {
            destination: from,
            contents,
        });
    Ok((request, response))
}

#[cfg(test)]
mod tests {
    use stun_rs::TransactionId;

    use super::*;
    use crate::stun::RequestParams;

    const PEER: &str = "192.0.2.7:50000";

    fn creds(ufrag: &str, pwd: &str) -> IceCredentials {
        IceCredentials {
            ufrag: ufrag.into(),
            pwd: pwd.into(),
        }
    }

    fn agent(now: Instant) -> IceLiteAgent {
        IceLiteAgent::new(
            creds("srv", "server-password-0123456"),
            creds("cli", "x"),
            now,
        )
    }

    fn check(use_candidate: bool, txn: u8) -> Vec<u8> {
        let key = stun::short_term_key("server-password-0123456").unwrap();
        let params = RequestParams {
            username: "srv:cli",
            priority: 100,
            tie_breaker: 42,
            use_candidate,
            key: &key,
        };
        stun::encode_request(TransactionId::from([txn; 12]), &params).unwrap()
    }

    #[test]
    fn check_without_nomination_is_answered_but_does_not_connect() {
        let now = Instant::now();
        let mut agent = agent(now);
        agent
            .handle_packet(now, PEER.parse().unwrap(), &check(false, 1))
            .unwrap();
        let response = agent.poll_transmit().unwrap();
        assert_eq!(response.destination, PEER.parse().unwrap());
        let key = stun::short_term_key("server-password-0123456").unwrap();
        let txn = stun::parse_success(&response.contents, Some(&key)).unwrap();
        assert_eq!(txn, TransactionId::from([1; 12]));
        assert_eq!(agent.poll_event(), None);
        assert_eq!(agent.remote(), None);
    }

    #[test]
    fn nomination_connects_and_renews_consent() {
        let now = Instant::now();
        let peer = PEER.parse().unwrap();
        let mut agent = agent(now);
        agent.set_consent_timeout(Duration::from_secs(2));
        let later = now + Duration::from_secs(1);
        agent.handle_packet(later, peer, &check(true, 1)).unwrap();
        assert_eq!(
            agent.poll_event(),
            Some(IceEvent::Connected { remote: peer })
        );
        assert_eq!(agent.remote(), Some(peer));
        assert_eq!(agent.poll_timeout(), Some(later + Duration::from_secs(2)));
        let renewed = later + Duration::from_millis(1500);
        agent
            .handle_packet(renewed, peer, &check(false, 2))
            .unwrap();
        assert_eq!(agent.poll_timeout(), Some(renewed + Duration::from_secs(2)));
    }

    #[test]
    fn never_nominated_times_out() {
        let now = Instant::now();
        let mut agent = agent(now);
        agent.set_consent_timeout(Duration::from_secs(3));
        assert_eq!(agent.poll_timeout(), Some(now + Duration::from_secs(3)));
        agent.handle_timeout(now + Duration::from_secs(2));
        assert_eq!(agent.poll_event(), None);
        agent.handle_timeout(now + Duration::from_secs(3));
        let reason = DisconnectReason::NeverConnected;
        assert_eq!(agent.poll_event(), Some(IceEvent::Disconnected { reason }));
        assert_eq!(agent.poll_timeout(), None);
        let late = now + Duration::from_secs(4);
        let result = agent.handle_packet(late, PEER.parse().unwrap(), &check(true, 1));
        assert_eq!(result, Err(IceError::Closed));
    }

    #[test]
    fn authenticated_media_renews_consent_only_from_the_nominated_address() {
        let now = Instant::now();
        let mut agent = agent(now);
        agent.set_consent_timeout(Duration::from_secs(30));
        let peer: SocketAddr = PEER.parse().unwrap();
        agent.handle_packet(now, peer, &check(true, 1)).unwrap();
        while agent.poll_event().is_some() {}
        let later = now + Duration::from_secs(25);
        agent.renew_consent(later, "10.9.9.9:9".parse().unwrap());
        assert_eq!(
            agent.poll_timeout(),
            Some(now + Duration::from_secs(30)),
            "another address renews nothing"
        );
        agent.renew_consent(later, peer);
        assert_eq!(agent.poll_timeout(), Some(later + Duration::from_secs(30)));
        agent.handle_timeout(now + Duration::from_secs(40));
        assert_eq!(agent.poll_event(), None, "still alive thanks to the media");
    }

    #[test]
    fn responses_are_rejected_and_indications_ignored() {
        let now = Instant::now();
        let mut agent = agent(now);
        let key = stun::short_term_key("server-password-0123456").unwrap();
        let peer = PEER.parse().unwrap();
        let response = stun::encode_success(TransactionId::from([3; 12]), peer, &key).unwrap();
        assert_eq!(
            agent.handle_packet(now, peer, &response),
            Err(IceError::UnexpectedMessage)
        );
        let mut indication = check(false, 4);
        indication[1] = 0x11; // Binding indication
        assert_eq!(agent.handle_packet(now, peer, &indication), Ok(()));
        assert!(
            agent.poll_transmit().is_none(),
            "indications are not answered"
        );
        assert!(agent.poll_event().is_none());
        assert_eq!(
            agent.handle_packet(now, peer, b"\x80hello"),
            Err(IceError::NotStun)
        );
        assert_eq!(agent.poll_transmit(), None);
    }
}
