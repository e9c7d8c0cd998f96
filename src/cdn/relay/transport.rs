//! Which transport a relay session takes to its edge (`cdn.relay_transport`), and when "auto"
//! gives up on UDP: sans-IO, on the time it is given, so the link only carries it out.
//!
//! "udp" checks the edge's UDP host candidates, "tcp" connects to its passive ICE-TCP candidate
//! (RFC 6544, our side active). "auto" starts on UDP, which costs nothing where it passes, and
//! moves to TCP when the session has not connected within [`UDP_CONNECT_WINDOW`]: a network
//! between origin and edge that drops UDP (a firewall that only opens TCP ports) never lets a
//! check through, while one that passes UDP connects in a round trip or two. An edge whose
//! answer has no TCP candidate (`media.tcp = false`) leaves "auto" on UDP: there is nothing to fall
//! back to, and the session's own connect timeout ends the attempt.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::cdn::RelayTransport;
use crate::control::relay_planner::RelayFailure;
use crate::control::RelayPath;

/// How long "auto" lets a relay session try UDP before it moves to TCP. Checks are retransmitted
/// every few hundred milliseconds, so a UDP path that works connects well within it; the
/// session's connect timeout (10 s by default) leaves room for TCP after it.
pub const UDP_CONNECT_WINDOW: Duration = Duration::from_secs(3);

/// The transport of one relay attempt, from the edge's answer to its session's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TransportChoice {
    udp: Vec<SocketAddr>,
    tcp: Option<SocketAddr>,
    path: RelayPath,
    /// "auto" on UDP with a TCP candidate to fall back to, until the session connects.
    fallback_at: Option<Instant>,
}

impl TransportChoice {
    /// What `mode` makes of the edge's IPv4 candidates (the relay sockets are IPv4), at `now`,
    /// when the relay session is about to start; an error when `mode` has nothing to use.
    pub(super) fn new(
        mode: RelayTransport,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        now: Instant,
    ) -> Result<TransportChoice, RelayFailure> {
        let udp: Vec<SocketAddr> = udp.iter().copied().filter(|c| c.is_ipv4()).collect();
        let tcp = tcp.iter().copied().find(|c| c.is_ipv4());
        let no_udp = || RelayFailure::Answer("no IPv4 host candidate".into());
        let no_tcp = || {
            RelayFailure::Answer(
                "no IPv4 passive TCP candidate (cdn.relay_transport = \"tcp\" needs an edge with media.tcp = true)".into(),
            )
        };
        let (path, fallback_at) = match mode {
            RelayTransport::Udp if udp.is_empty() => return Err(no_udp()),
            RelayTransport::Udp => (RelayPath::Udp, None),
            RelayTransport::Tcp if tcp.is_none() => return Err(no_tcp()),
            RelayTransport::Tcp => (RelayPath::Tcp, None),
            RelayTransport::Auto => match (udp.is_empty(), tcp.is_some()) {
                (false, true) => (RelayPath::Udp, Some(now + UDP_CONNECT_WINDOW)),
                (false, false) => (RelayPath::Udp, None),
                (true, true) => (RelayPath::Tcp, None),
                (true, false) => return Err(no_udp()),
            },
        };
        Ok(TransportChoice {
            udp,
            tcp,
            path,
            fallback_at,
        })
    }

    /// The transport the relay session takes now.
    pub(super) fn path(&self) -> RelayPath {
        self.path
    }

    /// The edge's candidates the session checks on that transport: every UDP one, or the one
    /// TCP candidate it connects to.
    pub(super) fn candidates(&self) -> Vec<SocketAddr> {
        match self.path {
            RelayPath::Udp => self.udp.clone(),
            RelayPath::Tcp => self.tcp.into_iter().collect(),
            // Never chosen here: an RTMP relay has no WebRTC session.
            RelayPath::Rtmp => Vec::new(),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) decides the move to TCP.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.fallback_at
    }

    /// Whether the relay session must move to TCP now (once: the choice is then on TCP).
    pub(super) fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.fallback_at {
            Some(at) if now >= at => {
                self.fallback_at = None;
                self.path = RelayPath::Tcp;
                true
            }
            _ => false,
        }
    }

    /// The relay session connected: the transport stays.
    pub(super) fn connected(&mut self) {
        self.fallback_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn choice(mode: RelayTransport, tcp: bool, now: Instant) -> TransportChoice {
        let udp = [addr("[::1]:5000"), addr("10.0.0.2:5000")];
        let tcp: Vec<SocketAddr> = if tcp {
            vec![addr("[::1]:5001"), addr("10.0.0.2:5001")]
        } else {
            vec![]
        };
        TransportChoice::new(mode, &udp, &tcp, now).unwrap()
    }

    #[test]
    fn udp_and_tcp_stay_where_they_are_told() {
        let now = Instant::now();
        let mut udp = choice(RelayTransport::Udp, true, now);
        assert_eq!(udp.path(), RelayPath::Udp);
        assert_eq!(udp.candidates(), [addr("10.0.0.2:5000")], "IPv4 only");
        assert_eq!(udp.poll_timeout(), None);
        assert!(!udp.handle_timeout(now + Duration::from_secs(60)));
        let tcp = choice(RelayTransport::Tcp, true, now);
        assert_eq!(tcp.path(), RelayPath::Tcp);
        assert_eq!(tcp.candidates(), [addr("10.0.0.2:5001")]);
        assert_eq!(tcp.poll_timeout(), None);
    }

    #[test]
    fn auto_moves_to_tcp_when_udp_has_not_connected_in_the_window() {
        let now = Instant::now();
        let mut auto = choice(RelayTransport::Auto, true, now);
        assert_eq!(auto.path(), RelayPath::Udp);
        assert_eq!(auto.poll_timeout(), Some(now + UDP_CONNECT_WINDOW));
        let just_before = now + UDP_CONNECT_WINDOW - Duration::from_millis(1);
        assert!(!auto.handle_timeout(just_before));
        assert_eq!(auto.path(), RelayPath::Udp);
        assert!(auto.handle_timeout(now + UDP_CONNECT_WINDOW));
        assert_eq!(auto.path(), RelayPath::Tcp);
        assert_eq!(auto.candidates(), [addr("10.0.0.2:5001")]);
        // Once.
        assert_eq!(auto.poll_timeout(), None);
        assert!(!auto.handle_timeout(now + Duration::from_secs(60)));
    }

    #[test]
    fn auto_stays_on_udp_once_it_connected() {
        let now = Instant::now();
        let mut auto = choice(RelayTransport::Auto, true, now);
        auto.connected();
        assert_eq!(auto.poll_timeout(), None);
        assert!(!auto.handle_timeout(now + Duration::from_secs(60)));
        assert_eq!(auto.path(), RelayPath::Udp);
    }

    #[test]
    fn auto_without_a_tcp_candidate_stays_on_udp() {
        let now = Instant::now();
        let mut auto = choice(RelayTransport::Auto, false, now);
        assert_eq!(auto.poll_timeout(), None);
        assert!(!auto.handle_timeout(now + Duration::from_secs(60)));
        assert_eq!(auto.path(), RelayPath::Udp);
    }

    #[test]
    fn an_answer_without_the_candidates_a_mode_needs_is_refused() {
        let now = Instant::now();
        let tcp = [addr("10.0.0.2:5001")];
        let v6 = [addr("[::1]:5000")];
        let err = TransportChoice::new(RelayTransport::Tcp, &v6, &[], now).unwrap_err();
        assert!(err.to_string().contains("media.tcp"), "{err}");
        let err = TransportChoice::new(RelayTransport::Udp, &v6, &tcp, now).unwrap_err();
        assert!(err.to_string().contains("IPv4 host candidate"), "{err}");
        assert!(TransportChoice::new(RelayTransport::Auto, &v6, &[], now).is_err());
        // Auto with TCP only goes there at once.
        let auto = TransportChoice::new(RelayTransport::Auto, &v6, &tcp, now).unwrap();
        assert_eq!(auto.path(), RelayPath::Tcp);
        assert_eq!(auto.poll_timeout(), None);
    }
}
