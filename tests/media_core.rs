//! Media cores driven by hand on virtual time, with no socket, thread, runtime or DTLS:
//! publishers and players connect with real STUN checks from controlling ICE agents, are keyed
//! with the fixed test keys, and the players get every packet the publisher sends, intact, in
//! order and rewritten to their own SSRC and payload type. Two cores of one node talk through
//! their forward queues: a player on the other core starts on the keyframe the publisher's core
//! replays to it. A core wakes by deadline: an idle second costs a few timeouts, not fifty.
//! In burst order (as with UDP GSO) a frame goes out player by player at its end, and at the
//! latest at the end of the batch.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceEvent};
use rtcdn::control::{
    CoreCommand, CoreEvent, CoreId, EgressSpec, EndReason, PlayedTrack, SessionId, SessionRole,
    SessionSpec, StreamId,
};
use rtcdn::media::test_support::{
    core_config, core_session_spec, opus_track, peer_agent, peer_srtp, receive_from_core,
    vp8_track, FromCore,
};
use rtcdn::media::{egress_channel, ForwardQueue, MediaCore, MemorySink, NoDtls, SocketId};
use rtcdn::sdp::MediaKind;
use rtp::srtp::SrtpContext;
use rtp::{Pt, RtpHeader, RtpHeaderBuilder, Ssrc};

const PUBLISHER: SessionId = SessionId(1);
const STREAM: StreamId = StreamId(7);
const PUBLISHED_PT: u8 = 96;
const PUBLISHED_SSRC: u32 = 0xabc0_0001;
const PUBLISHED_AUDIO_PT: u8 = 111;
const PUBLISHED_AUDIO_SSRC: u32 = 0xabc0_0002;

/// The client side of one session: its ICE agent, SRTP and what it received.
struct Client {
    id: SessionId,
    /// The core its session is on.
    core: usize,
    addr: SocketAddr,
    /// The core's socket its datagrams arrive on: the UDP one, or an ICE-TCP connection.
    socket: SocketId,
    ice: IceControllingAgent,
    ice_connected: bool,
    srtp_tx: SrtpContext,
    srtp_rx: SrtpContext,
    /// Decrypted RTP from the core.
    rtp: Vec<Vec<u8>>,
    /// Decrypted RTCP from the core.
    rtcp: usize,
}

/// One media core, the address its clients reach it at, and what it sent.
struct Core {
    addr: SocketAddr,
    media: MediaCore<NoDtls, ForwardQueue>,
    sink: MemorySink,
    /// Times its deadline came and `handle_timeout` ran.
    timeouts: usize,
}

/// Cores of one node, their clients, and a clock moved by hand.
struct Sim {
    now: Instant,
    cores: Vec<Core>,
    clients: Vec<Client>,
    events: Vec<CoreEvent>,
    /// The cores hold bursts (`MediaCore::set_burst_order`); a batch ends at each delivery.
    burst_order: bool,
}

fn credentials(name: &str) -> IceCredentials {
    IceCredentials {
        ufrag: format!("{name}ufrag"),
        pwd: format!("{name}-password-0123456789"),
    }
}

fn spec(id: SessionId, role: SessionRole) -> SessionSpec {
    let core_ice = credentials(&format!("core{}", id.0));
    let peer_ice = credentials(&format!("peer{}", id.0));
    // The publisher is on core 0.
    core_session_spec(id, STREAM, "live", role, core_ice, peer_ice)
}

fn publisher_role() -> SessionRole {
    SessionRole::Publisher {
        tracks: vec![vp8_track(PUBLISHED_PT)],
    }
}

/// A publisher of video and Opus audio.
fn av_publisher_role() -> SessionRole {
    SessionRole::Publisher {
        tracks: vec![vp8_track(PUBLISHED_PT), opus_track(PUBLISHED_AUDIO_PT)],
    }
}

/// A player of video and audio (the audio on the same payload type, SSRC `ssrc + 1`).
fn av_player_role(pt: u8, ssrc: u32) -> SessionRole {
    let SessionRole::Player { mut tracks } = player_role(pt, ssrc) else {
        unreachable!()
    };
    tracks.push(PlayedTrack {
        kind: MediaKind::Audio,
        pt: PUBLISHED_AUDIO_PT,
        ssrc: ssrc + 1,
        ..tracks[0].clone()
    });
    SessionRole::Player { tracks }
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
    fn new(cores: usize) -> Sim {
        let now = Instant::now();
        let cores = (0..cores)
            .map(|i| {
                let config = core_config(CoreId(i), 42 + i as u64);
                Core {
                    addr: SocketAddr::from(([10, 0, 0, 1], 4000 + i as u16)),
                    media: MediaCore::new(config, NoDtls, ForwardQueue::new(), now),
                    sink: MemorySink::new(),
                    timeouts: 0,
                }
            })
            .collect();
        Sim {
            now,
            cores,
            clients: Vec::new(),
            events: Vec::new(),
            burst_order: false,
        }
    }

    /// Cores that hold bursts, as a node with UDP GSO runs them.
    fn with_burst_order(cores: usize) -> Sim {
        let mut sim = Sim::new(cores);
        sim.burst_order = true;
        for core in &mut sim.cores {
            core.media.set_burst_order(true, &mut core.sink);
        }
        sim
    }

    fn command(&mut self, core: usize, command: CoreCommand) {
        let core = &mut self.cores[core];
        core.media.handle_command(self.now, command, &mut core.sink);
        self.deliver();
    }

    /// Adds a session to `core` through a command, and its client, whose checks start at once.
    fn add(&mut self, core: usize, id: SessionId, role: SessionRole) {
        self.add_on(core, id, role, SocketId::MAIN);
    }

    /// Like `add`, with the client's datagrams arriving on `socket` (an ICE-TCP connection).
    fn add_on(&mut self, core: usize, id: SessionId, role: SessionRole, socket: SocketId) {
        let spec = spec(id, role);
        let (srtp_tx, srtp_rx) = peer_srtp();
        self.clients.push(Client {
            id,
            core,
            addr: SocketAddr::from(([10, 0, 1, id.0 as u8], 5000)),
            socket,
            ice: peer_agent(&spec, self.cores[core].addr, self.now),
            ice_connected: false,
            srtp_tx,
            srtp_rx,
            rtp: Vec::new(),
            rtcp: 0,
        });
        self.command(core, CoreCommand::AddSession(Box::new(spec)));
    }

    fn client(&mut self, id: SessionId) -> &mut Client {
        self.clients.iter_mut().find(|c| c.id == id).unwrap()
    }

    /// Carries datagrams both ways and items between cores (instantly) until none is left.
    fn deliver(&mut self) {
        let now = self.now;
        loop {
            let mut moved = false;
            if self.burst_order {
                // What was handed to the cores before is a batch that ended.
                for core in &mut self.cores {
                    core.media.end_batch(now, &mut core.sink);
                }
            }
            for client in &mut self.clients {
                let core = &mut self.cores[client.core];
                while let Some(transmit) = client.ice.poll_transmit() {
                    assert_eq!(transmit.destination, core.addr);
                    let mut contents = transmit.contents;
                    core.media.handle_datagram(
                        now,
                        client.socket,
                        client.addr,
                        &mut contents,
                        &mut core.sink,
                    );
                    moved = true;
                }
                while let Some(event) = client.ice.poll_event() {
                    if let IceEvent::Connected { .. } = event {
                        client.ice_connected = true;
                    }
                }
            }
            for i in 0..self.cores.len() {
                let items: Vec<_> = self.cores[i].media.forward_sink_mut().drain().collect();
                for item in items {
                    let to = &mut self.cores[item.core.0];
                    to.media.handle_forwarded(
                        now,
                        item.stream,
                        item.kind,
                        &item.payload,
                        &mut to.sink,
                    );
                    moved = true;
                }
                let core = &mut self.cores[i];
                for sent in core.sink.drain() {
                    moved = true;
                    // A client that went away no longer receives.
                    let Some(client) = self.clients.iter_mut().find(|c| c.addr == sent.destination)
                    else {
                        assert_eq!(sent.socket, SocketId::MAIN);
                        continue;
                    };
                    assert_eq!(
                        sent.socket, client.socket,
                        "on the socket its checks came on"
                    );
                    assert_eq!(client.core, i, "a session's datagrams come from its core");
                    client.receive(now, core.addr, sent.contents);
                }
                while let Some(event) = core.media.poll_event() {
                    self.events.push(event);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves the clock to the earliest deadline (cores or clients) up to `until`, fires what is
    /// due and delivers what that sent; returns false once `until` is reached.
    fn progress(&mut self, until: Instant) -> bool {
        let next = self
            .clients
            .iter()
            .filter_map(|c| c.ice.poll_timeout())
            .chain(self.cores.iter().filter_map(|c| c.media.poll_timeout()))
            .min()
            .map_or(until, |at| at.min(until));
        self.now = self.now.max(next);
        for client in &mut self.clients {
            if client.ice.poll_timeout().is_some_and(|at| at <= self.now) {
                client.ice.handle_timeout(self.now);
            }
        }
        for core in &mut self.cores {
            if core.media.poll_timeout().is_some_and(|at| at <= self.now) {
                core.media.handle_timeout(self.now, &mut core.sink);
                core.timeouts += 1;
            }
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
        let core = self.client(id).core;
        while !self.client(id).ice_connected
            || self.cores[core]
                .media
                .session(id)
                .and_then(|s| s.remote())
                .is_none()
        {
            assert!(self.progress(until), "ICE of {id} did not connect");
        }
        let core = &mut self.cores[core];
        core.media
            .connect_with_test_keys(self.now, id, &mut core.sink);
        assert!(core.media.session(id).unwrap().is_connected());
        self.deliver();
        assert!(self.events.contains(&CoreEvent::SessionConnected { id }));
    }

    /// The publisher (on core 0) sends one video packet.
    fn publish(&mut self, seq: u16, payload: &[u8]) {
        self.hand_to_core((PUBLISHED_PT, PUBLISHED_SSRC), seq, false, payload);
        self.deliver();
    }

    /// The publisher's packet reaches its core, whose output stays in its sink (no delivery:
    /// the core's batch has not ended).
    fn hand_to_core(&mut self, (pt, ssrc): (u8, u32), seq: u16, marker: bool, payload: &[u8]) {
        let now = self.now;
        let client = self.clients.iter_mut().find(|c| c.id == PUBLISHER).unwrap();
        let mut buf = vec![0u8; 1500];
        let header = RtpHeaderBuilder {
            marker,
            ..RtpHeaderBuilder::new(Pt::new(pt), seq, u32::from(seq) * 3000, Ssrc(ssrc))
        }
        .write_to(&mut buf)
        .unwrap();
        buf[header..header + payload.len()].copy_from_slice(payload);
        let len = client
            .srtp_tx
            .protect_rtp(&mut buf, header + payload.len())
            .unwrap();
        buf.truncate(len);
        let core = &mut self.cores[client.core];
        core.media
            .handle_datagram(now, client.socket, client.addr, &mut buf, &mut core.sink);
    }

    /// Which player each datagram core 0 has sent so far goes to, in order (what went to the
    /// publisher left out).
    fn sent_to(&self) -> Vec<SessionId> {
        self.sent_to_before(usize::MAX)
    }

    /// Like `sent_to`, of the first `n` datagrams only.
    fn sent_to_before(&self, n: usize) -> Vec<SessionId> {
        self.cores[0]
            .sink
            .sent()
            .iter()
            .take(n)
            .map(|sent| {
                let client = self.clients.iter().find(|c| c.addr == sent.destination);
                client.expect("a client's address").id
            })
            .filter(|&id| id != PUBLISHER)
            .collect()
    }
}

impl Client {
    fn receive(&mut self, now: Instant, from: SocketAddr, mut data: Vec<u8>) {
        match receive_from_core(&mut self.ice, &mut self.srtp_rx, now, from, &mut data) {
            FromCore::Stun => {}
            FromCore::Rtp(packet) => self.rtp.push(packet.to_vec()),
            FromCore::Rtcp(_) => self.rtcp += 1,
            other => panic!("the core sent {other:?}"),
        }
    }

    /// Checks that this player got the publisher's packets `first..first + count` intact, in
    /// order, on its own SSRC and payload type.
    fn assert_received(&self, (pt, ssrc): (u8, u32), first: u16, count: u16) {
        let id = self.id;
        assert_eq!(self.rtp.len(), usize::from(count), "player {id}");
        let mut previous: Option<u16> = None;
        for (i, packet) in self.rtp.iter().enumerate() {
            let header = RtpHeader::parse(packet).unwrap();
            assert_eq!(header.ssrc(), Ssrc(ssrc));
            assert_eq!(header.payload_type(), Pt::new(pt));
            let seq = first.wrapping_add(i as u16);
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
}

/// A VP8 packet (one-packet frames): a keyframe every tenth sequence number.
fn payload(seq: u16) -> Vec<u8> {
    let keyframe = seq.is_multiple_of(10);
    let mut payload = vec![0x10, if keyframe { 0x10 } else { 0x11 }];
    payload.extend((0..200).map(|i| (i as u16 ^ seq) as u8));
    payload
}

/// ICE-TCP: a player and a publisher whose checks came over TCP connections (each its own
/// socket id) are answered on them, and media follows: the player's packets leave on its
/// connection (the sink asserts every datagram's socket), the publisher's arrive on its own.
#[test]
fn sessions_connected_over_ice_tcp_get_everything_on_their_connections() {
    everything_over_ice_tcp(Sim::new(1));
}

/// The same in burst order: a player on an ICE-TCP connection gets its bursts there.
#[test]
fn with_burst_order_sessions_connected_over_ice_tcp_get_everything_on_their_connections() {
    everything_over_ice_tcp(Sim::with_burst_order(1));
}

fn everything_over_ice_tcp(mut sim: Sim) {
    sim.add_on(0, PUBLISHER, publisher_role(), SocketId::tcp(0));
    sim.connect(PUBLISHER);
    let udp_player = (SessionId(2), (100u8, 0x1111_0002u32));
    let tcp_player = (SessionId(3), (101u8, 0x1111_0003u32));
    sim.add(
        0,
        udp_player.0,
        player_role(udp_player.1 .0, udp_player.1 .1),
    );
    sim.connect(udp_player.0);
    sim.add_on(
        0,
        tcp_player.0,
        player_role(tcp_player.1 .0, tcp_player.1 .1),
        SocketId::tcp(7),
    );
    sim.connect(tcp_player.0);
    for seq in 0..50u16 {
        sim.publish(seq, &payload(seq));
        sim.run_for(Duration::from_millis(20));
    }
    for (id, track) in [udp_player, tcp_player] {
        sim.client(id).assert_received(track, 0, 50);
    }
    // Consent checks keep coming over TCP and are answered there.
    sim.run_for(Duration::from_secs(40));
    assert_eq!(sim.cores[0].media.session_count(), 3);
    assert_eq!(sim.cores[0].media.counters().unknown_source, 0);
}

#[test]
fn two_players_get_the_publishers_packets_intact_on_virtual_time() {
    let mut sim = Sim::new(1);
    let players = [
        (SessionId(2), (100u8, 0x1111_0002u32)),
        (SessionId(3), (101u8, 0x1111_0003u32)),
    ];
    sim.add(0, PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    for (id, (pt, ssrc)) in players {
        sim.add(0, id, player_role(pt, ssrc));
        sim.connect(id);
    }
    let core = &sim.cores[0].media;
    assert_eq!(core.session_count(), 3);

    let first = 65_500u16; // across the wrap
    let count = 100u16;
    for i in 0..count {
        let seq = first.wrapping_add(i);
        sim.publish(seq, &payload(seq));
        sim.run_for(Duration::from_millis(20));
    }
    assert!(sim
        .events
        .contains(&CoreEvent::MediaStarted { id: PUBLISHER }));
    for (id, track) in players {
        sim.client(id).assert_received(track, first, count);
    }
    // The publisher heard from the core (a keyframe request for the new players, reports).
    assert!(sim.client(PUBLISHER).rtcp > 0);
    let counters = sim.cores[0].media.counters();
    assert_eq!(counters.rtp_received, u64::from(count));
    assert_eq!(counters.rtp_sent, 2 * u64::from(count));
    assert_eq!(counters.srtp_rejected + counters.rtp_malformed, 0);
    // Bytes as on the wire: the 202-byte payload, a 12-byte header, the SRTP tag and the
    // header extensions each side negotiated.
    let per_packet = |bytes: u64, packets: u64| bytes as f64 / packets as f64;
    let received = per_packet(counters.rtp_received_bytes, counters.rtp_received);
    let sent = per_packet(counters.rtp_sent_bytes, counters.rtp_sent);
    assert!(
        (214.0..300.0).contains(&received),
        "{received} bytes a packet in"
    );
    assert!((214.0..300.0).contains(&sent), "{sent} bytes a packet out");

    // Idle, the core wakes for its sessions' deadlines, not on a 20 ms tick.
    let before = sim.cores[0].timeouts;
    sim.run_for(Duration::from_secs(10));
    let wakes = sim.cores[0].timeouts - before;
    assert!(wakes < 100, "{wakes} wake-ups in 10 idle seconds");
    assert_eq!(
        sim.cores[0].media.session_count(),
        3,
        "consent checks keep every session"
    );
}

#[test]
fn an_egress_starts_on_the_cached_keyframe_gets_the_plain_packets_and_ends_when_removed() {
    let mut sim = Sim::new(1);
    sim.add(0, PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    // A keyframe (seq 10), then more, cached on the publisher's core.
    for seq in 10..15u16 {
        sim.publish(seq, &payload(seq));
        sim.run_for(Duration::from_millis(20));
    }
    let egress = SessionId(4);
    let (tap, mut rx) = egress_channel(64);
    sim.command(
        0,
        CoreCommand::AddEgress(Box::new(EgressSpec {
            id: egress,
            stream: STREAM,
            stream_name: "cam".into(),
            layer: 0,
            audio: false,
            tap,
        })),
    );
    assert!(sim
        .events
        .contains(&CoreEvent::SessionConnected { id: egress }));
    let before = sim.cores[0].media.counters().media_allocations;
    for seq in 15..30u16 {
        sim.publish(seq, &payload(seq));
        sim.run_for(Duration::from_millis(20));
    }
    // The publisher's own packets, as it sent them (not rewritten for a player), from the
    // cached keyframe on, none twice.
    let got: Vec<u16> = std::iter::from_fn(|| rx.pop())
        .map(|p| {
            let header = RtpHeader::parse(p.packet()).unwrap();
            assert_eq!(header.ssrc(), Ssrc(PUBLISHED_SSRC));
            assert_eq!(header.payload(), payload(header.sequence_number()));
            header.sequence_number()
        })
        .collect();
    assert_eq!(got, (10..30).collect::<Vec<_>>());
    assert_eq!(rx.dropped(), 0);
    // Copying into the tap allocates nothing (when the test binary counts allocations).
    assert_eq!(sim.cores[0].media.counters().media_allocations, before);
    // Its player lost packets: the publisher is asked for a keyframe (a PLI).
    let rtcp = sim.client(PUBLISHER).rtcp;
    sim.command(0, CoreCommand::RequestKeyframe { id: egress });
    sim.run_for(Duration::from_millis(50));
    assert!(
        sim.client(PUBLISHER).rtcp > rtcp,
        "no keyframe request reached the publisher"
    );
    sim.command(
        0,
        CoreCommand::RemoveSession {
            id: egress,
            reason: EndReason::PublisherLeft,
        },
    );
    assert!(rx.is_finished());
    assert!(sim.events.contains(&CoreEvent::SessionEnded {
        id: egress,
        reason: EndReason::PublisherLeft
    }));
}

#[test]
fn a_player_on_another_core_starts_on_the_keyframe_replayed_from_the_publishers_core() {
    replay_to_another_core(&mut Sim::new(2));
}

fn replay_to_another_core(sim: &mut Sim) {
    let (here, there) = (SessionId(2), SessionId(3));
    let (here_track, there_track) = ((100u8, 0x2222_0002u32), (101u8, 0x2222_0003u32));
    sim.add(0, PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    sim.add(0, here, player_role(here_track.0, here_track.1));
    sim.connect(here);
    // Signalling forwards the stream to the core of the player still to come.
    sim.command(
        0,
        CoreCommand::AttachCore {
            stream: STREAM,
            core: CoreId(1),
        },
    );
    // A keyframe (seq 10), then more.
    for seq in 10..15u16 {
        sim.publish(seq, &payload(seq));
        sim.run_for(Duration::from_millis(20));
    }
    sim.add(1, there, player_role(there_track.0, there_track.1));
    sim.connect(there);
    for seq in 15..30u16 {
        sim.publish(seq, &payload(seq));
        sim.run_for(Duration::from_millis(20));
    }
    sim.client(here).assert_received(here_track, 10, 20);
    // Its first packets are the replay from the keyframe on, then live ones, none twice.
    sim.client(there).assert_received(there_track, 10, 20);
    let there_core = sim.cores[1].media.counters();
    assert_eq!(there_core.keyframe_cache_hits, 1);
    assert_eq!(there_core.rtp_sent, 20);
    assert_eq!(sim.cores[0].media.counters().rtp_received, 20);
}

#[test]
fn a_player_whose_peer_goes_silent_ends_at_its_consent_deadline() {
    let mut sim = Sim::new(1);
    sim.add(0, PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    let player = SessionId(2);
    sim.add(0, player, player_role(100, 0x2222));
    sim.connect(player);
    // The player's peer vanishes: no more consent checks from it.
    sim.clients.retain(|c| c.id != player);
    sim.run_for(Duration::from_secs(29));
    assert!(sim.cores[0].media.session(player).is_some());
    sim.run_for(Duration::from_secs(2));
    assert!(sim.cores[0].media.session(player).is_none());
    assert!(sim.events.iter().any(|e| matches!(
        e,
        CoreEvent::SessionEnded { id, .. } if *id == player
    )));
    assert!(sim.cores[0].media.session(PUBLISHER).is_some());
}

/// ICE-TCP: a player whose only path was a TCP connection ends as soon as the reactor reports
/// the connection closed, not at its consent deadline half a minute later; closes of other
/// connections, or of its connection id from another address, leave it alone.
#[test]
fn a_player_whose_ice_tcp_connection_closes_ends_at_once() {
    let mut sim = Sim::new(1);
    sim.add(0, PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    let player = SessionId(2);
    sim.add_on(0, player, player_role(100, 0x2222), SocketId::tcp(3));
    sim.connect(player);
    let addr = sim.client(player).addr;
    let now = sim.now;
    let media = &mut sim.cores[0].media;
    media.handle_tcp_closed(now, SocketId::tcp(4), addr);
    media.handle_tcp_closed(now, SocketId::tcp(3), SocketAddr::from(([10, 0, 9, 9], 1)));
    assert!(media.session(player).is_some());
    sim.clients.retain(|c| c.id != player);
    sim.cores[0]
        .media
        .handle_tcp_closed(now, SocketId::tcp(3), addr);
    assert!(sim.cores[0].media.session(player).is_none());
    sim.deliver();
    assert!(sim.events.contains(&CoreEvent::SessionEnded {
        id: player,
        reason: EndReason::TransportClosed
    }));
    assert!(sim.cores[0].media.session(PUBLISHER).is_some());
}

/// A player's id and its video track's payload type and SSRC.
type PlayerTrack = (SessionId, (u8, u32));

/// Connects the publisher and `players` players of video and audio (ids 2, 3, ...) on core 0;
/// returns each player's id and video track.
fn burst_sim(players: u32) -> (Sim, Vec<PlayerTrack>) {
    let mut sim = Sim::with_burst_order(1);
    sim.add(0, PUBLISHER, av_publisher_role());
    sim.connect(PUBLISHER);
    let players: Vec<_> = (0..players)
        .map(|i| (SessionId(2 + u64::from(i)), (100u8, 0x3333_0000 + 2 * i)))
        .collect();
    for &(id, (pt, ssrc)) in &players {
        sim.add(0, id, av_player_role(pt, ssrc));
        sim.connect(id);
    }
    (sim, players)
}

/// Burst order: a frame's packets are held until its last one (the marker bit), then each
/// player gets all of them back to back before the next player gets any, so that its frame can
/// leave in one GSO send while its datagrams are in the cache; every player still gets every
/// packet, intact and in order.
#[test]
fn with_burst_order_a_frame_goes_out_player_by_player_at_its_last_packet() {
    let (mut sim, players) = burst_sim(3);
    let video = (PUBLISHED_PT, PUBLISHED_SSRC);
    sim.hand_to_core(video, 0, false, &payload(0));
    sim.hand_to_core(video, 1, false, &payload(1));
    assert!(sim.sent_to().is_empty(), "held until the frame ends");
    sim.hand_to_core(video, 2, true, &payload(2));
    let ids: Vec<SessionId> = players.iter().map(|p| p.0).collect();
    let grouped: Vec<SessionId> = ids.iter().flat_map(|&id| [id; 3]).collect();
    assert_eq!(sim.sent_to(), grouped);
    sim.deliver();
    for &(id, track) in &players {
        sim.client(id).assert_received(track, 0, 3);
    }
    let counters = sim.cores[0].media.counters();
    assert_eq!((counters.rtp_received, counters.rtp_sent), (3, 9));
}

/// A batch that ends mid-frame (the reactor woke on the frame's first datagrams, the rest
/// arrive a moment later) does not end the burst: the rest of the frame joins it in the next
/// batch, and every player still gets the whole frame back to back.
#[test]
fn with_burst_order_a_frame_split_over_batches_goes_out_whole() {
    let (mut sim, players) = burst_sim(3);
    let video = (PUBLISHED_PT, PUBLISHED_SSRC);
    for seq in 0..3 {
        sim.hand_to_core(video, seq, false, &payload(seq));
    }
    let now = sim.now;
    let core = &mut sim.cores[0];
    core.media.end_batch(now, &mut core.sink);
    assert!(sim.sent_to().is_empty(), "held across the end of the batch");
    sim.hand_to_core(video, 3, true, &payload(3));
    let grouped: Vec<SessionId> = players.iter().flat_map(|p| [p.0; 4]).collect();
    assert_eq!(sim.sent_to(), grouped);
    sim.deliver();
    for &(id, track) in &players {
        sim.client(id).assert_received(track, 0, 4);
    }
}

/// An unfinished frame is held a millisecond at most: the core's timeout comes by then, and
/// the burst leaves player by player at it (or at the end of a batch after it), without its
/// marker bit.
#[test]
fn with_burst_order_an_unfinished_frame_leaves_a_millisecond_after_its_first_packet() {
    let (mut sim, players) = burst_sim(3);
    for seq in 0..3 {
        sim.hand_to_core((PUBLISHED_PT, PUBLISHED_SSRC), seq, false, &payload(seq));
    }
    let now = sim.now;
    let hold = Duration::from_millis(1);
    let core = &mut sim.cores[0];
    assert!(core.media.poll_timeout().is_some_and(|at| at <= now + hold));
    core.media
        .end_batch(now + hold - Duration::from_micros(1), &mut core.sink);
    assert!(sim.sent_to().is_empty(), "held for the rest of the frame");
    let core = &mut sim.cores[0];
    core.media.handle_timeout(now + hold, &mut core.sink);
    let grouped: Vec<SessionId> = players.iter().flat_map(|p| [p.0; 3]).collect();
    assert_eq!(sim.sent_to(), grouped);
    sim.deliver();
    for &(id, track) in &players {
        sim.client(id).assert_received(track, 0, 3);
    }
    // The same at the end of a batch a millisecond on.
    for seq in 3..5 {
        sim.hand_to_core((PUBLISHED_PT, PUBLISHED_SSRC), seq, false, &payload(seq));
    }
    let core = &mut sim.cores[0];
    core.media.end_batch(now + hold, &mut core.sink);
    let grouped: Vec<SessionId> = players.iter().flat_map(|p| [p.0; 2]).collect();
    assert_eq!(sim.sent_to(), grouped);
}

/// Audio is not held behind video: an audio packet sends the video held before it (as the
/// send queue's flush at the audio packet did before burst order), then itself, at once.
#[test]
fn with_burst_order_audio_is_not_held_behind_video() {
    let (mut sim, players) = burst_sim(2);
    sim.hand_to_core((PUBLISHED_PT, PUBLISHED_SSRC), 0, false, &payload(0));
    sim.hand_to_core((PUBLISHED_PT, PUBLISHED_SSRC), 1, false, &payload(1));
    let audio = (PUBLISHED_AUDIO_PT, PUBLISHED_AUDIO_SSRC);
    sim.hand_to_core(audio, 500, false, b"opus");
    let (a, b) = (players[0].0, players[1].0);
    assert_eq!(sim.sent_to(), [a, a, b, b, a, b]);
    sim.deliver();
    for &(id, (_, ssrc)) in &players {
        let client = sim.client(id);
        let ssrcs: Vec<u32> = client
            .rtp
            .iter()
            .map(|p| RtpHeader::parse(p).unwrap().ssrc().0)
            .collect();
        assert_eq!(ssrcs, [ssrc, ssrc, ssrc + 1], "player {id}");
    }
}

/// A player's share of a burst is never split, and the sink is asked to submit once 64 or
/// more datagrams were written since the last submit, at a player's end: the kernel copies a
/// few players' datagrams at a time, while they are in the cache.
#[test]
fn with_burst_order_the_sink_submits_every_few_players() {
    let (mut sim, players) = burst_sim(4);
    for seq in 0..22 {
        sim.hand_to_core(
            (PUBLISHED_PT, PUBLISHED_SSRC),
            seq,
            seq == 21,
            &payload(seq),
        );
    }
    let grouped: Vec<SessionId> = players.iter().flat_map(|p| [p.0; 22]).collect();
    assert_eq!(sim.sent_to(), grouped);
    let submits = sim.cores[0].sink.submits().to_vec();
    assert_eq!(submits.len(), 1, "{submits:?}");
    assert_eq!(
        sim.sent_to_before(submits[0]).len(),
        66,
        "after the third player's 22"
    );
}

/// Without burst order (a node without GSO) every packet goes to every player at once.
#[test]
fn without_burst_order_each_packet_goes_to_every_player_at_once() {
    let mut sim = Sim::new(1);
    sim.add(0, PUBLISHER, publisher_role());
    sim.connect(PUBLISHER);
    let (a, b) = (SessionId(2), SessionId(3));
    for (id, ssrc) in [(a, 0x10), (b, 0x20)] {
        sim.add(0, id, player_role(100, ssrc));
        sim.connect(id);
    }
    sim.hand_to_core((PUBLISHED_PT, PUBLISHED_SSRC), 0, false, &payload(0));
    sim.hand_to_core((PUBLISHED_PT, PUBLISHED_SSRC), 1, true, &payload(1));
    assert_eq!(sim.sent_to(), [a, b, a, b]);
}

/// With burst order, a player on another core still starts on the replayed keyframe and gets
/// every live packet once: the held burst goes out before the replay changes what it takes.
#[test]
fn with_burst_order_a_player_on_another_core_starts_on_the_replayed_keyframe() {
    let mut sim = Sim::with_burst_order(2);
    replay_to_another_core(&mut sim);
}
