//! The `session_input` target's harness: media cores whose publisher and player are connected
//! (real STUN checks from the `ice` crate's controlling agents, SRTP keyed with the fixed test
//! keys), fed arbitrary datagrams from both and from strangers at advancing virtual times.
//! Nothing may panic, every datagram a core sends must be one RFC 7983 names, and a core that
//! just handled its timeout must not want it again at once (its driver would spin).
//!
//! The input is one byte of [`Setup`] flags, then records `[control][length: u16 BE][datagram]`
//! (the last may be shorter than its length says). `control`: bits 0–1 the [`Source`]; bit 2
//! seals the datagram (RTP or RTCP by its first bytes) with the source's SRTP keys, so that the
//! fuzzer's plaintext reaches the sessions and the router; bits 3–7, `w`, wait `4·w²` ms of
//! virtual time first (up to 3.8 s, [`MAX_VIRTUAL_TIME`] in all), handling every deadline of
//! the cores and the peers' agents on the way.
//!
//! Between records the peers' ICE agents run (their consent checks keep the sessions alive)
//! and items cross between the cores. What the cores send to strangers is dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials};
use rtp::srtp::SrtpContext;
use rtp::RtpHeader;

use crate::control::{
    CoreCommand, CoreId, PlayedTrack, PlayerLayers, PublishedTrack, RtxStream, SessionId,
    SessionRole, SessionSpec, SimulcastLayers, StreamId,
};
use crate::media::test_support::{
    core_session_spec, opus_track, peer_agent, peer_srtp, receive_from_core, vp8_track, FromCore,
};
use crate::media::{
    Datagram, ForwardQueue, MediaCore, MediaCoreConfig, MemorySink, NoDtls, SocketId, MAX_DATAGRAM,
};
use crate::sdp::MediaKind;
use crate::session::SessionTimeouts;

const STREAM: StreamId = StreamId(1);
const PUBLISHER: SessionId = SessionId(1);
const PLAYER: SessionId = SessionId(2);

/// The publisher's payload types and the SSRCs its offer announced (with rtx).
const VIDEO_PT: u8 = 96;
const VIDEO_RTX_PT: u8 = 97;
const AUDIO_PT: u8 = 111;
const VIDEO_SSRC: u32 = 0x1000_0001;
const VIDEO_RTX_SSRC: u32 = 0x1000_0002;
/// What the player's answer told it.
const PLAYER_VIDEO_PT: u8 = 100;
const PLAYER_RTX_PT: u8 = 101;
const PLAYER_VIDEO_SSRC: u32 = 0x2000_0001;
const PLAYER_RTX_SSRC: u32 = 0x2000_0002;
const PLAYER_AUDIO_SSRC: u32 = 0x2000_0003;
/// Header extension ids, as Chromium numbers them.
const TRANSPORT_CC_EXT: u8 = 3;
const RID_EXT: u8 = 10;
const REPAIRED_RID_EXT: u8 = 11;
const RIDS: [&str; 3] = ["l", "m", "h"];

/// Virtual time the records may wait in all; later waits are skipped, so that a long input
/// stays fast.
const MAX_VIRTUAL_TIME: Duration = Duration::from_secs(120);
/// Rounds of deadlines one wait may take; more means the cores' time stands still.
const MAX_ROUNDS_PER_WAIT: usize = 100_000;

/// What the sessions negotiated, from the input's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setup(pub(crate) u8);

impl Setup {
    /// The publisher's video is three simulcast layers (rids in [`RID_EXT`]); the player is
    /// sent the highest.
    pub(crate) const SIMULCAST: u8 = 1;
    /// Both negotiated rtx (RFC 4588) for video.
    pub(crate) const RTX: u8 = 2;
    /// Both negotiated transport-cc.
    pub(crate) const TRANSPORT_CC: u8 = 4;
    /// The player is on a second core, to which the publisher's core forwards the stream.
    pub(crate) const TWO_CORES: u8 = 8;

    fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

/// Who sends a record's datagram, from its control byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The publisher's peer, from its address, to the publisher's core.
    Publisher = 0,
    /// The player's peer, from its address, to the player's core.
    Player = 1,
    /// An address no session knows, to the publisher's core.
    Stranger = 2,
    /// The player's host from another port (a NAT rebinding), to the player's core.
    Rebound = 3,
}

impl Source {
    fn of(control: u8) -> Source {
        match control & 3 {
            0 => Source::Publisher,
            1 => Source::Player,
            2 => Source::Stranger,
            _ => Source::Rebound,
        }
    }
}

/// A record's control byte: `source`, sealed or not, after waiting `4·wait²` ms (`wait` < 32).
#[cfg(test)]
pub(crate) fn control(source: Source, seal: bool, wait: u8) -> u8 {
    source as u8 | if seal { 4 } else { 0 } | (wait << 3)
}

/// One media core, where its peers reach it, and what it sent.
struct Core {
    addr: SocketAddr,
    media: MediaCore<NoDtls, ForwardQueue>,
    sink: MemorySink,
}

/// Anything that sends to a core: a session's peer (with its ICE agent) or a stranger.
struct Sender {
    addr: SocketAddr,
    /// Index of the core it sends to.
    core: usize,
    /// SRTP with the peer's side of the test keys, for sealed records.
    tx: SrtpContext,
}

/// A session's peer: its ICE agent, and what it decrypted last.
struct Peer {
    sender: Sender,
    ice: IceControllingAgent,
    rx: SrtpContext,
    /// The SSRC and sequence number of the last RTP packet it decrypted.
    last_rtp: Option<(u32, u16)>,
}

/// The cores, the publisher's and the player's peers, two strangers and the virtual clock.
pub(crate) struct KeyedCores {
    start: Instant,
    now: Instant,
    cores: Vec<Core>,
    /// The publisher's peer, then the player's (each made when its session is added).
    peers: Vec<Peer>,
    /// [`Source::Stranger`], [`Source::Rebound`].
    strangers: [Sender; 2],
}

/// Runs one input (see the module docs) and hands back the cores for a test to read.
pub(crate) fn run(data: &[u8]) -> KeyedCores {
    let (setup, mut rest) = match data {
        [setup, rest @ ..] => (Setup(*setup), rest),
        [] => (Setup(0), data),
    };
    let mut cores = KeyedCores::new(setup);
    while let [control, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        cores.feed(*control, datagram);
        rest = next;
    }
    cores
}

fn srtp_tx() -> SrtpContext {
    peer_srtp().0
}

fn srtp_rx() -> SrtpContext {
    peer_srtp().1
}

/// ICE credentials of one end of session `id` (`end`: "core" or "peer").
fn credentials(end: &str, id: SessionId) -> IceCredentials {
    IceCredentials {
        ufrag: format!("{end}{}", id.0),
        pwd: format!("{end}-password-{}-0123456789", id.0),
    }
}

fn spec(id: SessionId, role: SessionRole) -> SessionSpec {
    let (core_ice, peer_ice) = (credentials("core", id), credentials("peer", id));
    core_session_spec(id, STREAM, "fuzz", role, core_ice, peer_ice)
}

fn publisher_role(setup: Setup) -> SessionRole {
    let rtx = setup.has(Setup::RTX);
    let transport_cc = setup.has(Setup::TRANSPORT_CC).then_some(TRANSPORT_CC_EXT);
    let simulcast = setup.has(Setup::SIMULCAST).then(|| SimulcastLayers {
        rids: RIDS.map(String::from).to_vec(),
        rid_ext: RID_EXT,
        repaired_rid_ext: rtx.then_some(REPAIRED_RID_EXT),
    });
    // Chromium announces no SSRCs for simulcast.
    let rtx_ssrcs = (rtx && simulcast.is_none()).then_some((VIDEO_SSRC, VIDEO_RTX_SSRC));
    let video = PublishedTrack {
        rtx_pt: rtx.then_some(VIDEO_RTX_PT),
        rtx_ssrcs,
        transport_cc,
        simulcast,
        ..vp8_track(VIDEO_PT)
    };
    let audio = PublishedTrack {
        transport_cc,
        ..opus_track(AUDIO_PT)
    };
    SessionRole::Publisher {
        tracks: vec![audio, video],
    }
}

fn player_role(setup: Setup) -> SessionRole {
    let transport_cc = setup.has(Setup::TRANSPORT_CC).then_some(TRANSPORT_CC_EXT);
    let video = PlayedTrack {
        kind: MediaKind::Video,
        pt: PLAYER_VIDEO_PT,
        ssrc: PLAYER_VIDEO_SSRC,
        rtx: setup.has(Setup::RTX).then_some(RtxStream {
            pt: PLAYER_RTX_PT,
            ssrc: PLAYER_RTX_SSRC,
        }),
        transport_cc,
        layers: setup.has(Setup::SIMULCAST).then_some(PlayerLayers {
            count: 3,
            target: 2,
            pinned: false,
        }),
    };
    let audio = PlayedTrack {
        kind: MediaKind::Audio,
        pt: AUDIO_PT,
        ssrc: PLAYER_AUDIO_SSRC,
        rtx: None,
        transport_cc,
        layers: None,
    };
    SessionRole::Player {
        tracks: vec![audio, video],
    }
}

impl KeyedCores {
    /// The cores with the publisher's session on the first and the player's on the last, both
    /// connected through ICE and keyed.
    fn new(setup: Setup) -> KeyedCores {
        let now = Instant::now();
        let timeouts = SessionTimeouts {
            connect: Duration::from_secs(10),
            consent: Duration::from_secs(30),
        };
        let count = if setup.has(Setup::TWO_CORES) { 2 } else { 1 };
        let cores: Vec<Core> = (0..count)
            .map(|i| Core {
                addr: SocketAddr::from(([10, 0, 0, 1], 4000 + i as u16)),
                media: MediaCore::new(
                    MediaCoreConfig {
                        id: CoreId(i),
                        timeouts,
                        seed: 42 + i as u64,
                    },
                    NoDtls,
                    ForwardQueue::new(),
                    now,
                ),
                sink: MemorySink::new(),
            })
            .collect();
        let player_core = count - 1;
        let strangers = [
            Sender {
                addr: SocketAddr::from(([10, 0, 9, 9], 6000)),
                core: 0,
                tx: srtp_tx(),
            },
            Sender {
                addr: SocketAddr::from(([10, 0, 1, 2], 5001)),
                core: player_core,
                tx: srtp_tx(),
            },
        ];
        let mut this = KeyedCores {
            start: now,
            now,
            cores,
            peers: Vec::with_capacity(2),
            strangers,
        };
        if player_core != 0 {
            // What signalling does before it places a player on another core.
            let attach = CoreCommand::AttachCore {
                stream: STREAM,
                core: CoreId(player_core),
            };
            this.command(0, attach);
        }
        let publisher = spec(PUBLISHER, publisher_role(setup));
        this.add_and_connect(publisher, ([10, 0, 1, 1], 0));
        let player = spec(PLAYER, player_role(setup));
        this.add_and_connect(player, ([10, 0, 1, 2], player_core));
        this
    }

    fn command(&mut self, core: usize, command: CoreCommand) {
        let core = &mut self.cores[core];
        core.media.handle_command(self.now, command, &mut core.sink);
    }

    /// Adds session `spec` to `core` and its peer at `host`, runs ICE until both ends are
    /// connected and keys their SRTP as DTLS would have.
    fn add_and_connect(&mut self, spec: SessionSpec, (host, core): ([u8; 4], usize)) {
        let id = spec.id;
        let peer = self.peers.len();
        self.peers.push(Peer {
            sender: Sender {
                addr: SocketAddr::from((host, 5000)),
                core,
                tx: srtp_tx(),
            },
            ice: peer_agent(&spec, self.cores[core].addr, self.now),
            rx: srtp_rx(),
            last_rtp: None,
        });
        self.command(core, CoreCommand::AddSession(Box::new(spec)));
        let until = self.now + Duration::from_secs(5);
        loop {
            self.pump();
            let session = self.cores[core].media.session(id);
            if self.peers[peer].ice.remote().is_some()
                && session.is_some_and(|s| s.remote().is_some())
            {
                break;
            }
            assert!(self.now < until, "ICE of session {id} did not connect");
            let next = self.next_deadline().map_or(until, |at| at.min(until));
            self.fire(next);
        }
        let core = &mut self.cores[core];
        core.media
            .connect_with_test_keys(self.now, id, &mut core.sink);
        self.pump();
    }

    /// One record: wait, then the datagram from its source.
    fn feed(&mut self, control: u8, datagram: &[u8]) {
        let wait = u64::from(control >> 3);
        let wait = Duration::from_millis(4 * wait * wait);
        if self.now + wait <= self.start + MAX_VIRTUAL_TIME {
            self.wait(wait);
        }
        let sender = match Source::of(control) {
            Source::Publisher => &mut self.peers[0].sender,
            Source::Player => &mut self.peers[1].sender,
            Source::Stranger => &mut self.strangers[0],
            Source::Rebound => &mut self.strangers[1],
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut len = datagram.len().min(MAX_DATAGRAM);
        buf[..len].copy_from_slice(&datagram[..len]);
        if control & 4 != 0 {
            len = seal(&mut sender.tx, &mut buf, len);
        }
        let core = &mut self.cores[sender.core];
        let (src, now) = (sender.addr, self.now);
        core.media
            .handle_datagram(now, SocketId::MAIN, src, &mut buf[..len], &mut core.sink);
        self.pump();
    }

    /// Moves the clock on by `wait`, from deadline to deadline.
    fn wait(&mut self, wait: Duration) {
        let until = self.now + wait;
        for _ in 0..MAX_ROUNDS_PER_WAIT {
            let next = self.next_deadline().map_or(until, |at| at.min(until));
            self.fire(next);
            if self.now >= until {
                return;
            }
        }
        panic!("virtual time stands still at {:?}", self.now - self.start);
    }

    /// The earliest deadline of the cores and the peers' agents.
    fn next_deadline(&self) -> Option<Instant> {
        let cores = self.cores.iter().filter_map(|c| c.media.poll_timeout());
        let peers = self.peers.iter().filter_map(|p| p.ice.poll_timeout());
        cores.chain(peers).min()
    }

    /// Moves the clock to `at` (never back), handles what is due, and carries what that sent.
    fn fire(&mut self, at: Instant) {
        let now = self.now.max(at);
        self.now = now;
        for peer in &mut self.peers {
            if peer.ice.poll_timeout().is_some_and(|due| due <= now) {
                peer.ice.handle_timeout(now);
            }
        }
        for core in &mut self.cores {
            if core.media.poll_timeout().is_some_and(|due| due <= now) {
                core.media.handle_timeout(now, &mut core.sink);
                let again = core.media.poll_timeout();
                assert!(
                    again.is_none_or(|due| due > now),
                    "core {} handled its timeout and wants it again at once",
                    core.media.id().0
                );
            }
        }
        self.pump();
    }

    /// Carries the peers' checks to the cores, items between the cores and the cores'
    /// datagrams to the peers, until none is left.
    fn pump(&mut self) {
        let now = self.now;
        loop {
            let mut moved = false;
            for peer in &mut self.peers {
                let core = &mut self.cores[peer.sender.core];
                while let Some(mut transmit) = peer.ice.poll_transmit() {
                    moved = true;
                    if transmit.destination == core.addr {
                        let src = peer.sender.addr;
                        let sink = &mut core.sink;
                        core.media.handle_datagram(
                            now,
                            SocketId::MAIN,
                            src,
                            &mut transmit.contents,
                            sink,
                        );
                    }
                }
            }
            for i in 0..self.cores.len() {
                let items: Vec<_> = self.cores[i].media.forward_sink_mut().drain().collect();
                for item in items {
                    moved = true;
                    let to = &mut self.cores[item.core.0];
                    let (stream, kind) = (item.stream, item.kind);
                    to.media
                        .handle_forwarded(now, stream, kind, &item.payload, &mut to.sink);
                }
                let core = &mut self.cores[i];
                while core.media.poll_event().is_some() {}
                while core.media.poll_socket_request().is_some() {}
                for sent in core.sink.drain() {
                    moved = true;
                    assert_eq!(sent.socket, SocketId::MAIN, "no relay sockets here");
                    assert_ne!(
                        Datagram::classify(&sent.contents),
                        Datagram::Unknown,
                        "core {i} sent something RFC 7983 does not name: {sent:?}"
                    );
                    let to = self
                        .peers
                        .iter_mut()
                        .find(|p| p.sender.addr == sent.destination);
                    if let Some(peer) = to.filter(|p| p.sender.core == i) {
                        peer.receive(now, core.addr, sent.contents);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

impl Peer {
    fn receive(&mut self, now: Instant, from: SocketAddr, mut data: Vec<u8>) {
        let received = receive_from_core(&mut self.ice, &mut self.rx, now, from, &mut data);
        if let FromCore::Rtp(packet) = received {
            if let Ok(header) = RtpHeader::parse(packet) {
                self.last_rtp = Some((header.ssrc().0, header.sequence_number()));
            }
        }
    }
}

/// Protects the RTP or RTCP packet in `buf[..len]` in place, as its sender would; returns its
/// new length (`len` unchanged when it is neither, or does not fit).
fn seal(tx: &mut SrtpContext, buf: &mut [u8], len: usize) -> usize {
    let sealed = match Datagram::classify(&buf[..len]) {
        Datagram::Rtp => tx.protect_rtp(buf, len),
        Datagram::Rtcp => tx.protect_rtcp(buf, len),
        _ => return len,
    };
    sealed.unwrap_or(len)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use rtp::rtcp::{Items, Nack, NackPair, Pli, Rtcp, SenderReport};
    use rtp::{ExtensionElement, Pt, RtpHeaderBuilder, Ssrc};

    use super::*;
    use crate::media::MediaCounters;

    fn record(control: u8, datagram: &[u8]) -> Vec<u8> {
        let len = u16::try_from(datagram.len()).expect("a datagram fits a record");
        [&[control][..], &len.to_be_bytes(), datagram].concat()
    }

    /// A VP8 packet of the publisher's (a keyframe's first when `key`), with the
    /// transport-wide number `twcc` when the setup has transport-cc and `rid` when given.
    fn video(
        setup: Setup,
        (ssrc, seq): (u32, u16),
        twcc: u16,
        rid: Option<&str>,
        key: bool,
    ) -> Vec<u8> {
        let twcc = twcc.to_be_bytes();
        let mut ext = Vec::new();
        if setup.has(Setup::TRANSPORT_CC) {
            ext.push(ExtensionElement {
                id: TRANSPORT_CC_EXT,
                data: &twcc,
            });
        }
        if let Some(rid) = rid {
            ext.push(ExtensionElement {
                id: RID_EXT,
                data: rid.as_bytes(),
            });
        }
        let ts = u32::from(seq).wrapping_mul(3000);
        let mut header = RtpHeaderBuilder::new(Pt::new(VIDEO_PT), seq, ts, Ssrc(ssrc));
        header.extensions = &ext;
        let mut packet = vec![0u8; header.encoded_len() + 100];
        let at = header.write_to(&mut packet).expect("room for the header");
        // VP8 payload descriptor with S=1, PID 0, then the frame header's P bit.
        packet[at] = 0x10;
        packet[at + 1] = if key { 0x00 } else { 0x01 };
        packet
    }

    fn rtcp(packet: Rtcp<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; packet.encoded_len()];
        let len = packet.write_to(&mut buf).expect("room for the packet");
        buf.truncate(len);
        buf
    }

    /// `packet` as SRTP (or SRTCP), the way a peer with `tx` sends it.
    fn protect(tx: &mut SrtpContext, packet: &[u8]) -> Vec<u8> {
        let mut buf = packet.to_vec();
        buf.resize(packet.len() + 64, 0);
        let len = seal(tx, &mut buf, packet.len());
        assert!(len > packet.len(), "sealed");
        buf.truncate(len);
        buf
    }

    /// The seed corpus: real datagrams, each input for the path its name says.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let mut seeds = Vec::new();

        // The publisher's video as it sends it (SRTP), a keyframe first, then a sender report.
        let setup = Setup(Setup::RTX | Setup::TRANSPORT_CC);
        let mut tx = srtp_tx();
        let mut publish = vec![setup.0];
        for seq in 1..=10u16 {
            let packet = video(setup, (VIDEO_SSRC, seq), seq, None, seq == 1);
            let sent = protect(&mut tx, &packet);
            publish.extend(record(control(Source::Publisher, false, 2), &sent));
        }
        let report = rtcp(Rtcp::SenderReport(SenderReport {
            sender_ssrc: Ssrc(VIDEO_SSRC),
            ntp_time: 0xe000_0000 << 32,
            rtp_time: 30_000,
            packet_count: 10,
            octet_count: 1000,
            reports: Items::default(),
        }));
        let sent = protect(&mut tx, &report);
        publish.extend(record(control(Source::Publisher, false, 0), &sent));
        seeds.push(("publisher_srtp", publish.clone()));

        // Then the player asks (SRTCP) for two of the packets it got again, and for a keyframe.
        let (ssrc, last) = run(&publish).peers[1]
            .last_rtp
            .expect("the player got video");
        let mut tx = srtp_tx();
        let pairs = [NackPair {
            pid: last.wrapping_sub(4),
            blp: 0b10,
        }];
        let nack = rtcp(Rtcp::Nack(Nack {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(ssrc),
            pairs: Items::from_slice(&pairs),
        }));
        let pli = rtcp(Rtcp::Pli(Pli {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(ssrc),
        }));
        let mut asked = publish;
        for packet in [nack, pli] {
            let sent = protect(&mut tx, &packet);
            asked.extend(record(control(Source::Player, false, 1), &sent));
        }
        seeds.push(("player_nack_pli", asked));

        // A real connectivity check for the player's session, from an address no session has.
        let core = SocketAddr::from(([10, 0, 0, 1], 4000));
        let mut agent = IceControllingAgent::new(
            credentials("peer", PLAYER),
            credentials("core", PLAYER),
            vec![core],
            99,
            Instant::now(),
        );
        let check = agent.poll_transmit().expect("a first check").contents;
        let stranger = [vec![0], record(control(Source::Stranger, false, 0), &check)].concat();
        seeds.push(("stranger_stun_check", stranger));

        // Three simulcast layers in plaintext, sealed by the harness, to a player on the
        // other core: a keyframe of each layer, then deltas; then the player's sealed PLI.
        let setup = Setup(Setup::SIMULCAST | Setup::TRANSPORT_CC | Setup::TWO_CORES);
        let mut layers = vec![setup.0];
        let mut twcc = 0;
        for round in 0..4u16 {
            for (layer, rid) in (0u32..).zip(RIDS) {
                twcc += 1;
                let ssrc = VIDEO_SSRC + 0x100 * layer;
                let packet = video(setup, (ssrc, 100 + round), twcc, Some(rid), round == 0);
                layers.extend(record(control(Source::Publisher, true, 2), &packet));
            }
        }
        let pli = rtcp(Rtcp::Pli(Pli {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(PLAYER_VIDEO_SSRC),
        }));
        layers.extend(record(control(Source::Player, true, 1), &pli));
        seeds.push(("simulcast_sealed", layers));
        seeds
    }

    fn seed_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/seed-session_input")
    }

    /// Writes [`seeds`] into the fuzz crate's seed corpus:
    /// `cargo test -p rtcdn --lib write_session_input_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/seed-session_input"]
    fn write_session_input_seeds() {
        std::fs::create_dir_all(seed_dir()).unwrap();
        for (name, input) in seeds() {
            std::fs::write(seed_dir().join(name), input).unwrap();
        }
    }

    fn counters(cores: &KeyedCores) -> Vec<MediaCounters> {
        cores.cores.iter().map(|c| c.media.counters()).collect()
    }

    #[test]
    fn every_setup_connects_and_keys_both_sessions() {
        for flags in 0..16 {
            let cores = run(&[flags]);
            let last = cores.cores.len() - 1;
            for (core, id) in [(0, PUBLISHER), (last, PLAYER)] {
                let session = cores.cores[core].media.session(id);
                assert!(session.is_some_and(|s| s.is_connected()), "{flags}: {id}");
            }
        }
    }

    /// The committed seeds are real datagrams: each reaches what its name says.
    #[test]
    fn the_seed_corpus_reaches_the_sessions_and_the_router() {
        for (name, _) in seeds() {
            let input = std::fs::read(seed_dir().join(name))
                .unwrap_or_else(|e| panic!("seed {name}: {e} (see write_session_input_seeds)"));
            let cores = run(&input);
            let counters = counters(&cores);
            let (first, last) = (counters[0], counters[counters.len() - 1]);
            assert_eq!(
                first.srtp_rejected + first.rtp_malformed,
                0,
                "{name}: {first:?}"
            );
            match name {
                "publisher_srtp" => {
                    assert_eq!(first.rtp_received, 10, "{first:?}");
                    assert_eq!(first.rtp_sent, 10, "{first:?}");
                }
                "player_nack_pli" => assert_eq!(first.retransmissions_sent, 2, "{first:?}"),
                "stranger_stun_check" => {
                    assert_eq!(first.stun_rejected + first.unknown_source, 0, "{first:?}");
                }
                "simulcast_sealed" => {
                    assert_eq!(first.rtp_received, 12, "{first:?}");
                    assert!(last.rtp_sent > 0, "the other core's player: {last:?}");
                }
                _ => unreachable!("{name}"),
            }
        }
    }

    /// Pseudo-random inputs over every setup run clean (the fuzz target explores further).
    #[test]
    fn pseudo_random_inputs_run() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200usize {
            run(&crate::fuzzing::pseudo_random_bytes(&mut x, len * 3 % 400));
        }
    }
}
