//! A media core driven by hand on virtual time, with no socket, thread, runtime or DTLS: one
//! publisher and two players connect with real STUN checks from controlling ICE agents, are keyed
//! with the fixed test keys, and the players get every packet the publisher sends, intact, in
//! order and rewritten to their own SSRC and payload type. The core wakes by deadline: an idle
//! second costs a handful of timeouts, not fifty.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceEvent};
use rtcdn::control::{
    CoreCommand, CoreEvent, CoreId, PlayedTrack, PublishedTrack, SessionId, SessionRole,
    SessionSpec, StreamId,
};
use rtcdn::dtls::DtlsRole;
use rtcdn::media::{
    peer_test_keys, Datagram, ForwardQueue, MediaCore, MediaCoreConfig, MemorySink, NoDtls,
    SocketId,
};
use rtcdn::sdp::MediaKind;
use rtcdn::session::SessionTimeouts;
use rtp::srtp::SrtpContext;
use rtp::{Pt, RtpHeader, RtpHeaderBuilder, Ssrc};

const PUBLISHER: SessionId = SessionId(1);
const STREAM: StreamId = StreamId(7);
const PUBLISHED_PT: u8 = 96;
const PUBLISHED_SSRC: u32 = 0xabc0_0001;

/// The client side of one session: its ICE agent, SRTP and what it received.
struct Client {
    id: SessionId,
    addr: SocketAddr,
    ice: IceControllingAgent,
    ice_connected: bool,
    srtp_tx: SrtpContext,
    srtp_rx: SrtpContext,
    /// Decrypted RTP from the core.
    rtp: Vec<Vec<u8>>,
    /// Decrypted RTCP from the core.
    rtcp: usize,
}

/// One core, its clients, and a clock moved by hand.
struct Sim {
    now: Instant,
    core_addr: SocketAddr,
    core: MediaCore<NoDtls, ForwardQueue>,
    sink: MemorySink,
    clients: Vec<Client>,
    events: Vec<CoreEvent>,
    /// Times the core's deadline came and `handle_timeout` ran.
    core_timeouts: usize,
}

fn credentials(name: &str) -> IceCredentials {
    IceCredentials {
        ufrag: format!("{name}ufrag"),
        pwd: format!("{name}-password-0123456789"),
    }
}

fn spec(id: SessionId, role: SessionRole) -> SessionSpec {
    SessionSpec {
        id,
        stream: STREAM,
        stream_name: "live".into(),
        role,
        local_ice: credentials(&format!("core{}", id.0)),
        remote_ice: credentials(&format!("peer{}", id.0)),
        remote_fingerprint: [0; 32],
        dtls_role: DtlsRole::Server,
        publisher_core: Some(CoreId(0)),
    }
}

fn publisher_role() -> SessionRole {
    SessionRole::Publisher {
        tracks: vec![PublishedTrack {
            kind: MediaKind::Video,
            pt: PUBLISHED_PT,
            clock_rate: 90_000,
            codec: "VP8".into(),
            rtx_pt: None,
            rtx_ssrcs: None,
            transport_cc: None,
            simulcast: None,
        }],
    }
}

fn player_role(pt: u8, ssrc: u32) -> SessionRole {
    SessionRole::Player {
        tracks: vec![PlayedTrack {
            kind: MediaKind::Video,
            pt,
            ssrc,
            rtx: None,
            transport_cc: None,
            layers: None,
        }],
    }
}

impl Sim {
    fn new() -> Sim {
        let now = Instant::now();
        let config = MediaCoreConfig {
            id: CoreId(0),
            timeouts: SessionTimeouts {
                connect: Duration::from_secs(10),
                consent: Duration::from_secs(30),
            },
            seed: 42,
        };
        Sim {
            now,
            core_addr: "10.0.0.1:4000".parse().unwrap(),
            core: MediaCore::new(config, NoDtls, ForwardQueue::new(), now),
            sink: MemorySink::new(),
            clients: Vec::new(),
            events: Vec::new(),
            core_timeouts: 0,
        }
    }

    /// Adds a session through a command, and its client, whose checks start at once.
    fn add(&mut self, id: SessionId, role: SessionRole) {
        let spec = spec(id, role);
        let keys = peer_test_keys();
        let client = Client {
            id,
            addr: SocketAddr::from(([10, 0, 1, id.0 as u8], 5000)),
            ice: IceControllingAgent::new(
                spec.remote_ice.clone(),
                spec.local_ice.clone(),
                vec![self.core_addr],
                id.0,
                self.now,
            ),
            ice_connected: false,
            srtp_tx: SrtpContext::new(keys.profile, &keys.local_key, &keys.local_salt).unwrap(),
            srtp_rx: SrtpContext::new(keys.profile, &keys.remote_key, &keys.remote_salt).unwrap(),
            rtp: Vec::new(),
            rtcp: 0,
        };
        self.core.handle_command(
            self.now,
            CoreCommand::AddSession(Box::new(spec)),
            &mut self.sink,
        );
        self.clients.push(client);
        self.deliver();
    }

    fn client(&mut self, id: SessionId) -> &mut Client {
        self.clients.iter_mut().find(|c| c.id == id).unwrap()
    }

    /// Carries datagrams both ways (instantly) until none is left.
    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            for client in &mut self.clients {
                while let Some(transmit) = client.ice.poll_transmit() {
                    assert_eq!(transmit.destination, self.core_addr);
                    let mut contents = transmit.contents;
                    self.core.handle_datagram(
                        self.now,
                        SocketId::MAIN,
                        client.addr,
                        &mut contents,
                        &mut self.sink,
                    );
                    moved = true;
                }
                while let Some(event) = client.ice.poll_event() {
                    if let IceEvent::Connected { .. } = event {
                        client.ice_connected = true;
                    }
                }
            }
            for sent in self.sink.drain().collect::<Vec<_>>() {
                assert_eq!(sent.socket, SocketId::MAIN);
                moved = true;
                // A client that went away no longer receives.
                let Some(client) = self.clients.iter_mut().find(|c| c.addr == sent.destination)
                else {
                    continue;
                };
                let mut data = sent.contents;
                match Datagram::classify(&data) {
                    Datagram::Stun => {
                        let _ = client.ice.handle_packet(self.now, self.core_addr, &data);
                    }
                    Datagram::Rtp => {
                        let len = client.srtp_rx.unprotect_rtp(&mut data).unwrap();
                        data.truncate(len);
                        client.rtp.push(data);
                    }
                    Datagram::Rtcp => {
                        client.srtp_rx.unprotect_rtcp(&mut data).unwrap();
                        client.rtcp += 1;
                    }
                    other => panic!("the core sent {other:?}"),
                }
            }
            while let Some(event) = self.core.poll_event() {
                self.events.push(event);
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves the clock to the earliest deadline (core or clients) up to `until`, fires what is
    /// due and delivers what that sent; returns false once `until` is reached.
    fn progress(&mut self, until: Instant) -> bool {
        let next = self
            .clients
            .iter()
            .filter_map(|c| c.ice.poll_timeout())
            .chain(self.core.poll_timeout())
            .min()
            .map_or(until, |at| at.min(until));
        self.now = self.now.max(next);
        for client in &mut self.clients {
            if client.ice.poll_timeout().is_some_and(|at| at <= self.now) {
                client.ice.handle_timeout(self.now);
            }
        }
        if self.core.poll_timeout().is_some_and(|at| at <= self.now) {
            self.core.handle_timeout(self.now, &mut self.sink);
            self.core_timeouts += 1;
        }
        self.deliver();
        self.now < until
    }

    fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.progress(until) {}
    }

    /// Runs until ICE is up on both ends of `id`, then keys it as DTLS would have.
    fn connect(&mut self, id: SessionId) {
        let until = self.now + Duration::from_secs(5);
        while !self.client(id).ice_connected
            || self.core.session(id).and_then(|s| s.remote()).is_none()
        {
            assert!(self.progress(until), "ICE of {id} did not connect");
        }
        self.core
            .connect_with_test_keys(self.now, id, &mut self.sink);
        self.deliver();
        assert!(self.core.session(id).unwrap().is_connected());
        assert!(self.events.contains(&CoreEvent::SessionConnected { id }));
    }

    /// The publisher sends one video packet.
    fn publish(&mut self, seq: u16, payload: &[u8]) {
        let now = self.now;
        let client = self.client(PUBLISHER);
        let mut buf = vec![0u8; 1500];
        let header = RtpHeaderBuilder::new(
            Pt::new(PUBLISHED_PT),
            seq,
            u32::from(seq) * 3000,
            Ssrc(PUBLISHED_SSRC),
        )
        .write_to(&mut buf)
        .unwrap();
        buf[header..header + payload.len()].copy_from_slice(payload);
        let len = client
            .srtp_tx
            .protect_rtp(&mut buf, header + payload.len())
            .unwrap();
        buf.truncate(len);
        let src = client.addr;
        self.core
            .handle_datagram(now, SocketId::MAIN, src, &mut buf, &mut self.sink);
        self.deliver();
    }
}

fn payload(seq: u16) -> Vec<u8> {
    (0..200).map(|i| (i as u16 ^ seq) as u8).collect()
}

#[test]
fn two_players_get_the_publishers_packets_intact_on_virtual_time() {
    let mut sim = Sim::new();
    let players = [
        (SessionId(2), 100u8, 0x1111_0002u32),
        (SessionId(3), 101u8, 0x1111_0003u32),
    ];
    sim.add(PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    for (id, pt, ssrc) in players {
        sim.add(id, player_role(pt, ssrc));
        sim.connect(id);
    }
    assert_eq!(sim.core.session_count(), 3);

    let first_seq = 65_500u16; // across the wrap
    let count = 100u16;
    for i in 0..count {
        let seq = first_seq.wrapping_add(i);
        sim.publish(seq, &payload(seq));
        sim.run_for(Duration::from_millis(20));
    }
    assert!(sim
        .events
        .contains(&CoreEvent::MediaStarted { id: PUBLISHER }));

    for (id, pt, ssrc) in players {
        let received = &sim.client(id).rtp;
        assert_eq!(received.len(), usize::from(count), "player {id}");
        let mut previous: Option<u16> = None;
        for (i, packet) in received.iter().enumerate() {
            let header = RtpHeader::parse(packet).unwrap();
            assert_eq!(header.ssrc(), Ssrc(ssrc));
            assert_eq!(header.payload_type(), Pt::new(pt));
            let seq = first_seq.wrapping_add(i as u16);
            assert_eq!(
                header.payload(),
                payload(seq).as_slice(),
                "player {id} packet {i}"
            );
            if let Some(previous) = previous {
                assert_eq!(header.sequence_number(), previous.wrapping_add(1));
            }
            previous = Some(header.sequence_number());
        }
    }
    // The publisher heard from the core (a keyframe request for the new players, reports).
    assert!(sim.client(PUBLISHER).rtcp > 0);
    let counters = sim.core.counters();
    assert_eq!(counters.rtp_received, u64::from(count));
    assert_eq!(counters.rtp_sent, 2 * u64::from(count));
    assert_eq!(counters.srtp_rejected + counters.rtp_malformed, 0);

    // Idle, the core wakes for its sessions' deadlines, not on a 20 ms tick.
    let before = sim.core_timeouts;
    sim.run_for(Duration::from_secs(10));
    let wakes = sim.core_timeouts - before;
    assert!(wakes < 100, "{wakes} wake-ups in 10 idle seconds");
    assert_eq!(
        sim.core.session_count(),
        3,
        "consent checks keep every session"
    );
}

#[test]
fn a_player_whose_peer_goes_silent_ends_at_its_consent_deadline() {
    let mut sim = Sim::new();
    sim.add(PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    let player = SessionId(2);
    sim.add(player, player_role(100, 0x2222));
    sim.connect(player);
    // The player's peer vanishes: no more consent checks from it.
    sim.clients.retain(|c| c.id != player);
    sim.run_for(Duration::from_secs(29));
    assert!(sim.core.session(player).is_some());
    sim.run_for(Duration::from_secs(2));
    assert!(sim.core.session(player).is_none());
    assert!(sim.events.iter().any(|e| matches!(
        e,
        CoreEvent::SessionEnded { id, .. } if *id == player
    )));
    assert!(sim.core.session(PUBLISHER).is_some());
}
