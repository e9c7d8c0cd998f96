//! A deterministic two-party harness: an [`IceControllingAgent`] (client) and an
//! [`IceLiteAgent`] (server) joined by an in-memory network with virtual time, fixed latency
//! and seeded loss. Modelled on str0m's `progress()` and quinn's `Pair::drive()`.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceError, IceEvent, IceLiteAgent, Transmit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const SERVER: &str = "198.51.100.1:3478";
pub const CLIENT: &str = "203.0.113.5:40000";

pub fn server_creds() -> IceCredentials {
    IceCredentials {
        ufrag: "srvUfrag".into(),
        pwd: "serverPassword0123456789".into(),
    }
}

pub fn client_creds() -> IceCredentials {
    IceCredentials {
        ufrag: "cliUfrag".into(),
        pwd: "clientPassword0123456789".into(),
    }
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

struct InFlight {
    deliver_at: Instant,
    from: SocketAddr,
    transmit: Transmit,
}

/// Both agents, the network between them and everything they reported.
pub struct Pair {
    pub start: Instant,
    pub now: Instant,
    pub client: IceControllingAgent,
    pub client_addr: SocketAddr,
    pub server: IceLiteAgent,
    pub server_addr: SocketAddr,
    /// One-way delay of every datagram.
    pub latency: Duration,
    /// Probability that a datagram is lost, drawn from `net_rng`.
    pub loss: f64,
    net_rng: StdRng,
    in_flight: Vec<InFlight>,
    pub client_events: Vec<(Duration, IceEvent)>,
    pub server_events: Vec<(Duration, IceEvent)>,
    pub client_errors: Vec<IceError>,
    pub server_errors: Vec<IceError>,
    /// Datagrams sent by the client / server, including lost ones.
    pub client_sent: usize,
    pub server_sent: usize,
    pub lost: usize,
}

impl Pair {
    /// A client with `client_creds()` checking `SERVER`, a server with `server_creds()`.
    pub fn new(seed: u64, loss: f64) -> Self {
        Self::with_credentials(seed, loss, client_creds(), server_creds(), server_creds())
    }

    /// Like `new`, but the client believes the server has `server_as_seen_by_client`.
    pub fn with_credentials(
        seed: u64,
        loss: f64,
        client: IceCredentials,
        server: IceCredentials,
        server_as_seen_by_client: IceCredentials,
    ) -> Self {
        let start = Instant::now();
        let server_addr = addr(SERVER);
        let client_agent = IceControllingAgent::new(
            client.clone(),
            server_as_seen_by_client,
            vec![server_addr],
            seed,
            start,
        );
        Self {
            start,
            now: start,
            client: client_agent,
            client_addr: addr(CLIENT),
            server: IceLiteAgent::new(server, client, start),
            server_addr,
            latency: Duration::from_millis(20),
            loss,
            net_rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            in_flight: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_errors: Vec::new(),
            server_errors: Vec::new(),
            client_sent: 0,
            server_sent: 0,
            lost: 0,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The client moves to `new_addr` (say, from Wi-Fi to cellular) and starts a new
    /// controlling agent there with the same credentials. Datagrams still in flight to the
    /// old address are lost.
    pub fn move_client(&mut self, new_addr: SocketAddr, seed: u64) {
        self.client_addr = new_addr;
        self.client = IceControllingAgent::new(
            client_creds(),
            server_creds(),
            vec![self.server_addr],
            seed,
            self.now,
        );
        self.drain();
    }

    /// One step: queue every pending transmit, advance virtual time to the earliest
    /// deadline (agent timeout or datagram arrival), deliver and fire what is due.
    /// Returns false when nothing is left to happen.
    pub fn progress(&mut self) -> bool {
        self.drain();
        let next = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .chain(self.in_flight.iter().map(|f| f.deliver_at))
            .min();
        let Some(next) = next else {
            return false;
        };
        self.now = self.now.max(next);
        self.deliver_due();
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.drain();
        true
    }

    /// Runs until `done` holds or `limit` of virtual time has passed; returns `done`'s value.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        while !done(self) {
            if self.elapsed() > limit || !self.progress() {
                return done(self);
            }
        }
        true
    }

    pub fn both_connected(&self) -> bool {
        let connected = |events: &[(Duration, IceEvent)]| {
            events
                .iter()
                .any(|(_, e)| matches!(e, IceEvent::Connected { .. }))
        };
        connected(&self.client_events) && connected(&self.server_events)
    }

    /// Sends a raw datagram from `from` to the server right now.
    pub fn inject_to_server(&mut self, from: SocketAddr, packet: &[u8]) -> Result<(), IceError> {
        let result = self.server.handle_packet(self.now, from, packet);
        self.drain();
        result
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) =
            self.in_flight.drain(..).partition(|f| f.deliver_at <= now);
        self.in_flight = later;
        for f in due {
            let to = f.transmit.destination;
            let contents = &f.transmit.contents;
            if to == self.server_addr {
                if let Err(e) = self.server.handle_packet(now, f.from, contents) {
                    self.server_errors.push(e);
                }
            } else if to == self.client_addr {
                if let Err(e) = self.client.handle_packet(now, f.from, contents) {
                    self.client_errors.push(e);
                }
            }
            // Anything else went to an address nobody has any more.
        }
    }

    fn drain(&mut self) {
        let elapsed = self.elapsed();
        while let Some(e) = self.client.poll_event() {
            self.client_events.push((elapsed, e));
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push((elapsed, e));
        }
        while let Some(t) = self.client.poll_transmit() {
            self.client_sent += 1;
            self.send(self.client_addr, t);
        }
        while let Some(t) = self.server.poll_transmit() {
            self.server_sent += 1;
            self.send(self.server_addr, t);
        }
    }

    fn send(&mut self, from: SocketAddr, transmit: Transmit) {
        if self.loss > 0.0 && self.net_rng.gen_bool(self.loss) {
            self.lost += 1;
            return;
        }
        let deliver_at = self.now + self.latency;
        self.in_flight.push(InFlight {
            deliver_at,
            from,
            transmit,
        });
    }
}
