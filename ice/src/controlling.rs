//! The client side: a controlling agent against an ICE-lite server.
//!
//! With a lite peer the controlling agent may nominate aggressively (RFC 8445 §7.1.1 and
//! §2.5): every check carries USE-CANDIDATE and the first pair that succeeds is the selected
//! pair. Afterwards consent is kept with a Binding request every 5 s ±20 % (RFC 7675 §5.1).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stun_rs::{HMACKey, MessageClass, TransactionId};

use crate::lite::{answer_request, DEFAULT_CONSENT_TIMEOUT};
use crate::stun::{self, ExpectedCredentials, RequestParams};
use crate::{DisconnectReason, IceCredentials, IceError, IceEvent, Transmit};

/// First retransmission timeout of a connectivity check.
const INITIAL_RTO: Duration = Duration::from_millis(100);
/// The retransmission timeout doubles up to this.
const MAX_RTO: Duration = Duration::from_secs(1);
/// Checks that got no answer by then have failed (about 11 transmissions per candidate).
const CHECK_TIMEOUT: Duration = Duration::from_secs(8);
/// Consent checks go out every 5 s ±20 %, in milliseconds (RFC 7675 §5.1).
const CONSENT_INTERVAL_MS: std::ops::RangeInclusive<u64> = 4_000..=6_000;
/// Consent requests whose responses still count. Consent requests are not retransmitted
/// (a new one follows within seconds), so a few late responses are all there is to match.
const MAX_PENDING_CONSENT: usize = 8;
/// PRIORITY of the peer-reflexive candidate the peer would learn from our checks
/// (RFC 8445 §5.1.2.1): type preference 110, local preference 65535, component 1.
const PRFLX_PRIORITY: u32 = (110 << 24) | (0xffff << 8) | (256 - 1);

/// Client side (rtcdn's own bench client and the origin→edge relay): a controlling agent
/// against an ICE-lite server.
///
/// It checks every remote candidate at once with USE-CANDIDATE, retransmitting each check
/// from 100 ms, doubling up to 1 s, for 8 s. The first check answered with a valid success
/// response from the address it was sent to selects that address ([`IceEvent::Connected`]).
/// If none is answered in time the agent reports [`DisconnectReason::Failed`].
///
/// Once connected it sends consent checks every 5 s ±20 % and reports
/// [`DisconnectReason::ConsentExpired`] when no check has been answered for the consent
/// timeout. It also answers Binding requests, in case the peer is a full agent.
///
/// Transaction ids, the tie-breaker and jitter come from a generator seeded with `seed`.
#[derive(Debug)]
pub struct IceControllingAgent {
    // Passed by argument.
    local: IceCredentials,
    remote: IceCredentials,
    consent_timeout: Duration,
    // Derived.
    local_key: Option<HMACKey>,
    remote_key: Option<HMACKey>,
    rng: StdRng,
    tie_breaker: u64,
    // Protocol state.
    state: ControllingState,
    // Output queues.
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
}

#[derive(Debug)]
enum ControllingState {
    AwaitingResponse {
        checks: Vec<Check>,
        give_up_at: Instant,
    },
    Connected {
        remote: SocketAddr,
        consent: Consent,
    },
    Closed,
}

/// One connectivity check in flight: the same request is resent until it is answered.
#[derive(Debug)]
struct Check {
    destination: SocketAddr,
    transaction_id: TransactionId,
    request: Vec<u8>,
    next_send: Instant,
    rto: Duration,
}

#[derive(Debug)]
struct Consent {
    last_response: Instant,
    next_request: Instant,
    pending: VecDeque<TransactionId>,
}

impl IceControllingAgent {
    /// Starts checking `remote_candidates` at once: the first requests are ready in
    /// [`poll_transmit`](Self::poll_transmit) when this returns. Without any candidate (or
    /// with credentials that cannot be encoded) the agent reports
    /// [`DisconnectReason::Failed`] straight away.
    pub fn new(
        local: IceCredentials,
        remote: IceCredentials,
        remote_candidates: Vec<SocketAddr>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut agent = Self {
            local_key: stun::short_term_key(&local.pwd),
            remote_key: stun::short_term_key(&remote.pwd),
            tie_breaker: rng.gen(),
            rng,
            local,
            remote,
            consent_timeout: DEFAULT_CONSENT_TIMEOUT,
            state: ControllingState::Closed,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        agent.start_checks(remote_candidates, now);
        agent
    }

    /// Feeds one datagram received from `from`: a success response to one of our checks, or
    /// a Binding request from the peer (answered, never nominating).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<(), IceError> {
        self.handle_timeout(now);
        if matches!(self.state, ControllingState::Closed) {
            return Err(IceError::Closed);
        }
        match stun::binding_class(packet)? {
            MessageClass::Request => self.handle_request(from, packet),
            MessageClass::SuccessResponse => self.handle_success(now, from, packet),
            MessageClass::Indication | MessageClass::ErrorResponse => {
                Err(IceError::UnexpectedMessage)
            }
        }
    }

    /// Advances time: retransmits checks, sends consent checks, and reports
    /// [`IceEvent::Disconnected`] when checks or consent have run out.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            ControllingState::AwaitingResponse { checks, give_up_at } => {
                if now >= *give_up_at {
                    return self.close(DisconnectReason::Failed);
                }
                for check in checks.iter_mut().filter(|c| c.next_send <= now) {
                    self.transmits.push_back(Transmit {
                        destination: check.destination,
                        contents: check.request.clone(),
                    });
                    check.rto = (check.rto * 2).min(MAX_RTO);
                    check.next_send = now + check.rto;
                }
            }
            ControllingState::Connected { consent, .. } => {
                if now >= consent.last_response + self.consent_timeout {
                    return self.close(DisconnectReason::ConsentExpired);
                }
                if now >= consent.next_request {
                    self.send_consent_check(now);
                }
            }
            ControllingState::Closed => {}
        }
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
        match &self.state {
            ControllingState::AwaitingResponse { checks, give_up_at } => checks
                .iter()
                .map(|c| c.next_send)
                .chain([*give_up_at])
                .min(),
            ControllingState::Connected { consent, .. } => Some(
                consent
                    .next_request
                    .min(consent.last_response + self.consent_timeout),
            ),
            ControllingState::Closed => None,
        }
    }

    /// The selected address of the peer, while connected.
    pub fn remote(&self) -> Option<SocketAddr> {
        match self.state {
            ControllingState::Connected { remote, .. } => Some(remote),
            _ => None,
        }
    }

    /// How long the agent keeps going without an answered consent check. Default 30 s
    /// (RFC 7675 §5.1).
    pub fn set_consent_timeout(&mut self, timeout: Duration) {
        self.consent_timeout = timeout;
    }

    fn start_checks(&mut self, mut candidates: Vec<SocketAddr>, now: Instant) {
        // Keep the first of each duplicate, in the caller's order.
        let mut seen = Vec::with_capacity(candidates.len());
        candidates.retain(|c| {
            let new = !seen.contains(c);
            seen.push(*c);
            new
        });
        let mut checks = Vec::with_capacity(candidates.len());
        for destination in candidates {
            let transaction_id = self.rng.gen::<[u8; 12]>().into();
            let Some(request) = self.encode_request(transaction_id, true) else {
                break;
            };
            self.transmits.push_back(Transmit {
                destination,
                contents: request.clone(),
            });
            let rto = INITIAL_RTO;
            checks.push(Check {
                destination,
                transaction_id,
                request,
                next_send: now + rto,
                rto,
            });
        }
        if checks.is_empty() {
            return self.close(DisconnectReason::Failed);
        }
        let give_up_at = now + CHECK_TIMEOUT;
        self.state = ControllingState::AwaitingResponse { checks, give_up_at };
    }

    fn handle_request(&mut self, from: SocketAddr, packet: &[u8]) -> Result<(), IceError> {
        let expected = ExpectedCredentials {
            local_ufrag: &self.local.ufrag,
            remote_ufrag: &self.remote.ufrag,
            key: self.local_key.as_ref(),
        };
        let (_, response) = answer_request(packet, from, &expected)?;
        self.transmits.extend(response);
        Ok(())
    }

    fn handle_success(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<(), IceError> {
        let transaction_id = stun::parse_success(packet, self.remote_key.as_ref())?;
        match &mut self.state {
            ControllingState::AwaitingResponse { checks, .. } => {
                // RFC 8445 §7.2.5.2.1: the response must come from where the request went.
                let answered = checks
                    .iter()
                    .find(|c| c.transaction_id == transaction_id && c.destination == from)
                    .ok_or(IceError::UnexpectedMessage)?
                    .transaction_id;
                let consent = Consent {
                    last_response: now,
                    next_request: now + self.consent_interval(),
                    // Retransmissions of the winning check may still be answered.
                    pending: VecDeque::from([answered]),
                };
                self.state = ControllingState::Connected {
                    remote: from,
                    consent,
                };
                self.events.push_back(IceEvent::Connected { remote: from });
                Ok(())
            }
            ControllingState::Connected { remote, consent } => {
                if *remote != from || !consent.pending.contains(&transaction_id) {
                    return Err(IceError::UnexpectedMessage);
                }
                consent.last_response = now;
                Ok(())
            }
            ControllingState::Closed => Err(IceError::Closed),
        }
    }

    fn send_consent_check(&mut self, now: Instant) {
        let transaction_id: TransactionId = self.rng.gen::<[u8; 12]>().into();
        let request = self.encode_request(transaction_id, false);
        let interval = self.consent_interval();
        let ControllingState::Connected { remote, consent } = &mut self.state else {
            return;
        };
        consent.next_request = now + interval;
        // The same username and key encoded fine for the first checks, so this is Some.
        let Some(contents) = request else {
            return;
        };
        if consent.pending.len() == MAX_PENDING_CONSENT {
            consent.pending.pop_front();
        }
        consent.pending.push_back(transaction_id);
        self.transmits.push_back(Transmit {
            destination: *remote,
            contents,
        });
    }

    fn encode_request(&self, transaction_id: TransactionId, nominate: bool) -> Option<Vec<u8>> {
        let username = format!("{}:{}", self.remote.ufrag, self.local.ufrag);
        let params = RequestParams {
            username: &username,
            priority: PRFLX_PRIORITY,
            tie_breaker: self.tie_breaker,
            use_candidate: nominate,
            key: self.remote_key.as_ref()?,
        };
        stun::encode_request(transaction_id, &params)
    }

    fn consent_interval(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(CONSENT_INTERVAL_MS))
    }

    fn close(&mut self, reason: DisconnectReason) {
        self.state = ControllingState::Closed;
        self.transmits.clear();
        self.events.push_back(IceEvent::Disconnected { reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "198.51.100.1:3478";

    fn creds(ufrag: &str, pwd: &str) -> IceCredentials {
        IceCredentials {
            ufrag: ufrag.into(),
            pwd: pwd.into(),
        }
    }

    fn agent(candidates: &[&str], now: Instant) -> IceControllingAgent {
        let candidates = candidates.iter().map(|c| c.parse().unwrap()).collect();
        IceControllingAgent::new(
            creds("cli", "client-pwd"),
            creds("srv", "server-pwd"),
            candidates,
            7,
            now,
        )
    }

    fn drain(agent: &mut IceControllingAgent) -> Vec<Transmit> {
        std::iter::from_fn(|| agent.poll_transmit()).collect()
    }

    #[test]
    fn priority_is_prflx_for_component_one() {
        assert_eq!(PRFLX_PRIORITY, 1_862_270_975);
    }

    #[test]
    fn checks_go_out_at_once_and_back_off() {
        let now = Instant::now();
        let mut agent = agent(&[SERVER, "198.51.100.2:3478", SERVER], now);
        let first = drain(&mut agent);
        assert_eq!(first.len(), 2, "duplicates are checked once");
        let mut sends = vec![Duration::ZERO];
        while let Some(at) = agent.poll_timeout() {
            agent.handle_timeout(at);
            if !drain(&mut agent).is_empty() {
                sends.push(at - now);
            }
        }
        let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [0, 100, 300, 700, 1500, 2500, 3500, 4500, 5500, 6500, 7500]
        );
        let reason = DisconnectReason::Failed;
        assert_eq!(agent.poll_event(), Some(IceEvent::Disconnected { reason }));
    }

    #[test]
    fn retransmissions_repeat_the_same_transaction() {
        let now = Instant::now();
        let mut agent = agent(&[SERVER], now);
        let first = drain(&mut agent);
        agent.handle_timeout(now + INITIAL_RTO);
        assert_eq!(drain(&mut agent), first);
    }

    #[test]
    fn no_candidates_fails_at_once() {
        let mut agent = agent(&[], Instant::now());
        let reason = DisconnectReason::Failed;
        assert_eq!(agent.poll_event(), Some(IceEvent::Disconnected { reason }));
        assert_eq!(agent.poll_timeout(), None);
    }

    #[test]
    fn same_seed_same_bytes() {
        let now = Instant::now();
        assert_eq!(
            drain(&mut agent(&[SERVER], now)),
            drain(&mut agent(&[SERVER], now))
        );
    }

    #[test]
    fn checks_carry_ice_attributes() {
        let now = Instant::now();
        let mut agent = agent(&[SERVER], now);
        let request = drain(&mut agent).remove(0).contents;
        let key = stun::short_term_key("server-pwd").unwrap();
        let expected = ExpectedCredentials {
            local_ufrag: "srv",
            remote_ufrag: "cli",
            key: Some(&key),
        };
        let parsed = stun::parse_request(&request, &expected).unwrap();
        assert!(parsed.use_candidate && parsed.controlling && !parsed.controlled);
    }

    fn answer(request: &[u8], signed_with: &str, from: SocketAddr) -> Vec<u8> {
        let txn: [u8; 12] = request[8..20].try_into().unwrap();
        let key = stun::short_term_key(signed_with).unwrap();
        stun::encode_success(txn.into(), from, &key).unwrap()
    }

    #[test]
    fn only_authentic_symmetric_answers_connect() {
        let now = Instant::now();
        let server = SERVER.parse().unwrap();
        let mut agent = agent(&[SERVER], now);
        let request = drain(&mut agent).remove(0).contents;
        let forged = answer(&request, "client-pwd", server);
        assert_eq!(
            agent.handle_packet(now, server, &forged),
            Err(IceError::BadIntegrity)
        );
        let genuine = answer(&request, "server-pwd", server);
        let elsewhere = "198.51.100.9:3478".parse().unwrap();
        assert_eq!(
            agent.handle_packet(now, elsewhere, &genuine),
            Err(IceError::UnexpectedMessage)
        );
        assert_eq!(agent.remote(), None);
        agent.handle_packet(now, server, &genuine).unwrap();
        assert_eq!(
            agent.poll_event(),
            Some(IceEvent::Connected { remote: server })
        );
        // A late answer to a retransmission of the same check counts as consent, not an error.
        assert_eq!(agent.handle_packet(now, server, &genuine), Ok(()));
    }

    #[test]
    fn consent_checks_are_jittered_and_not_nominating() {
        let now = Instant::now();
        let server = SERVER.parse().unwrap();
        let mut agent = agent(&[SERVER], now);
        let request = drain(&mut agent).remove(0).contents;
        agent
            .handle_packet(now, server, &answer(&request, "server-pwd", server))
            .unwrap();
        let mut last = now;
        for _ in 0..20 {
            let at = agent.poll_timeout().unwrap();
            let gap = at - last;
            assert!(
                gap >= Duration::from_secs(4) && gap <= Duration::from_secs(6),
                "{gap:?}"
            );
            agent.handle_timeout(at);
            let consent = drain(&mut agent).remove(0).contents;
            let key = stun::short_term_key("server-pwd").unwrap();
            let expected = ExpectedCredentials {
                local_ufrag: "srv",
                remote_ufrag: "cli",
                key: Some(&key),
            };
            let parsed = stun::parse_request(&consent, &expected).unwrap();
            assert!(!parsed.use_candidate && parsed.controlling);
            agent
                .handle_packet(at, server, &answer(&consent, "server-pwd", server))
                .unwrap();
            last = at;
        }
        assert_eq!(
            agent.poll_event(),
            Some(IceEvent::Connected { remote: server })
        );
        assert_eq!(agent.poll_event(), None, "consent held throughout");
    }
}
