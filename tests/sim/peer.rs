//! The simulator's browsers: a publisher that sends video frames (as one stream, or as
//! simulcast layers, each its own SSRC announced by its rid) and audio with sender reports and
//! answers NACKs and PLIs, and a player that records what it receives, NACKs its gaps and, with
//! transport-cc, sends feedback on when each packet arrived.
//!
//! Both are sans-IO like the node: `handle_datagram`, `handle_timeout`, `poll_transmit`,
//! `poll_timeout`. ICE is the `ice` crate's controlling agent (what rtcdn's own relay and bench
//! client use); SRTP is keyed with the fixed test keys the simulator gives the node's session,
//! since the `dtls` crate cannot run on a virtual clock.
//!
//! Every payload says what it is (frame, packet index, capture time) and carries a pattern
//! derived from that, so a player can check that each payload arrived intact.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ice::{IceControllingAgent, IceCredentials, IceEvent};
use rtcdn::media::demux::Datagram;
use rtp::rtcp::{Items, Nack, NackPair, Pli, Rtcp, RtcpIter, SenderReport};
use rtp::srtp::{SrtpContext, SrtpProfile};
use rtp::twcc::{transport_seq, TwccRecorder};
use rtp::{ExtensionElement, Pt, RtpHeader, RtpHeaderBuilder, SeqNo, Ssrc};

pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;
const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const SR_INTERVAL: Duration = Duration::from_secs(1);
/// The video of a publisher without simulcast: 12 packets per keyframe, 3 per delta frame,
/// 400 bytes of payload each (about 330 kbit/s).
const VIDEO: VideoShape = VideoShape {
    keyframe_packets: 12,
    delta_packets: 3,
    payload: 400,
};
/// A keyframe every this many frames without a PLI (2 s), unless a scenario sets its own.
const GOP: u32 = 60;
/// The RTP stream id extension's id (RFC 8852) on a simulcast publisher's packets.
pub const RID_EXT: u8 = 10;
/// A simulcast layer's first this many packets carry its rid (Chromium sends it until the
/// receiver's reports show the SSRC arrived).
const RID_PACKETS: u32 = 20;
const AUDIO_PAYLOAD: usize = 80;
/// How long a publisher keeps what it sent, to answer NACKs.
const HISTORY: usize = 2_000;
/// A player's NACK retries, as a browser does: at once, then every 50 ms, 10 times.
const NACK_RETRY: Duration = Duration::from_millis(50);
const NACK_TRIES: u8 = 10;

/// The SRTP keys of one peer: what it sends with and what it receives with.
#[derive(Clone)]
pub struct Keys {
    pub tx_key: Vec<u8>,
    pub tx_salt: Vec<u8>,
    pub rx_key: Vec<u8>,
    pub rx_salt: Vec<u8>,
}

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PayloadId {
    /// Audio packets are frames of their own.
    pub audio: bool,
    pub frame: u32,
    pub index: u16,
    pub count: u16,
    pub keyframe: bool,
    /// When the publisher captured it, µs after the publisher started.
    pub captured_us: u64,
    /// The simulcast layer it belongs to (0 without simulcast).
    pub layer: u8,
    /// The payload's length.
    pub len: u16,
}

/// How big a video stream's frames are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoShape {
    pub keyframe_packets: u16,
    pub delta_packets: u16,
    /// Bytes of payload per packet.
    pub payload: usize,
}

impl VideoShape {
    /// About the bitrate of the stream's delta frames, RTP headers included.
    pub fn delta_bps(&self) -> u64 {
        let bytes = (self.payload + 12) as u64 * u64::from(self.delta_packets);
        bytes * 8 * 30
    }
}

/// The three layers of a simulcast publisher, lowest first, each with its rid: about 120,
/// 490 and 1,220 kbit/s of delta frames, keyframes three times as big.
pub const SIMULCAST: [(&str, VideoShape); 3] = [
    (
        "l",
        VideoShape {
            keyframe_packets: 3,
            delta_packets: 1,
            payload: 500,
        },
    ),
    (
        "m",
        VideoShape {
            keyframe_packets: 6,
            delta_packets: 2,
            payload: 1000,
        },
    ),
    (
        "h",
        VideoShape {
            keyframe_packets: 15,
            delta_packets: 5,
            payload: 1000,
        },
    ),
];

/// One RTP packet as a player received it (after SRTP).
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub ssrc: u32,
    pub seq: u16,
    /// The sequence number extended by the player (rollovers counted), per SSRC.
    pub extended_seq: u64,
    pub timestamp: u32,
    pub id: PayloadId,
    /// The payload matched the pattern its id implies.
    pub intact: bool,
}

pub enum Role {
    Publisher(Publisher),
    Player(Player),
}

/// One video stream a publisher sends: its only one, or one simulcast layer.
pub struct VideoLayer {
    pub ssrc: u32,
    /// The layer's rid, with simulcast: its first packets carry it.
    pub rid: Option<String>,
    pub shape: VideoShape,
    seq: u16,
    keyframe_wanted: bool,
    history: VecDeque<(u16, Vec<u8>)>,
    packets: u32,
    octets: u32,
    /// PLIs that named this stream.
    pub plis: u32,
    /// The frames it sent as keyframes.
    pub keyframes: Vec<u32>,
    /// The layer sends nothing (Chromium pauses upper layers when its uplink narrows).
    pub paused: bool,
}

impl VideoLayer {
    fn new(ssrc: u32, rid: Option<String>, shape: VideoShape, seq: u16) -> VideoLayer {
        VideoLayer {
            ssrc,
            rid,
            shape,
            seq,
            keyframe_wanted: true,
            history: VecDeque::with_capacity(HISTORY),
            packets: 0,
            octets: 0,
            plis: 0,
            keyframes: Vec::new(),
            paused: false,
        }
    }
}

pub struct Publisher {
    /// Its video: one stream, or its simulcast layers, lowest first.
    pub video: Vec<VideoLayer>,
    pub audio_ssrc: u32,
    started: Option<Instant>,
    audio_seq: u16,
    frame: u32,
    audio_frame: u32,
    next_frame: Option<Instant>,
    next_audio: Option<Instant>,
    next_sr: Option<Instant>,
    audio_packets: u32,
    audio_octets: u32,
    /// Sequence numbers NACKed by the node, in order.
    pub nacked: Vec<u16>,
    /// PLIs received, for any of its video streams.
    pub plis: u32,
    /// Whether to send audio too.
    pub audio: bool,
    /// A keyframe every this many frames (besides those PLIs ask for).
    pub gop: u32,
}

pub struct Player {
    pub received: Vec<Received>,
    /// Highest extended sequence number per SSRC, and the gaps being NACKed.
    highest: BTreeMap<u32, u64>,
    missing: BTreeMap<(u32, u64), (Instant, u8)>,
    pub nacks_sent: u32,
    /// Sender reports received: (ssrc, ntp, rtp).
    pub sender_reports: Vec<(u32, u64, u32)>,
    /// Whether to NACK gaps at all.
    pub nack: bool,
    /// Transport-cc, when negotiated: arrivals recorded, feedback sent.
    /// Boxed: most players in a scenario have none.
    twcc: Option<Box<PlayerTwcc>>,
    /// The RTX stream (RFC 4588) of its video, when negotiated: `(pt, ssrc)` of the RTX stream
    /// and the SSRC of the video it repairs.
    rtx: Option<(u8, u32, u32)>,
    /// Retransmissions received on the RTX stream.
    pub rtx_received: u32,
    /// Transport-cc feedback packets sent.
    pub feedback_sent: u32,
}

/// A player's transport-cc: the extension id its packets carry the number in, and the
/// arrivals waiting for feedback.
struct PlayerTwcc {
    extension_id: u8,
    recorder: TwccRecorder,
}

/// How often a player sends transport-cc feedback: Chromium's interval above about 220 kbit/s.
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);

pub struct Peer {
    pub name: String,
    pub addr: SocketAddr,
    ice: IceControllingAgent,
    remote: Option<SocketAddr>,
    pub connected_at: Option<Instant>,
    pub disconnected: bool,
    tx: SrtpContext,
    rx: SrtpContext,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    pub role: Role,
    pub srtp_errors: u32,
}

impl Peer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        addr: SocketAddr,
        server: SocketAddr,
        local: IceCredentials,
        remote: IceCredentials,
        keys: &Keys,
        role: Role,
        seed: u64,
        now: Instant,
    ) -> Peer {
        let profile = SrtpProfile::AeadAes128Gcm;
        Peer {
            name: name.to_string(),
            addr,
            ice: IceControllingAgent::new(local, remote, vec![server], seed, now),
            remote: None,
            connected_at: None,
            disconnected: false,
            tx: SrtpContext::new(profile, &keys.tx_key, &keys.tx_salt).unwrap(),
            rx: SrtpContext::new(profile, &keys.rx_key, &keys.rx_salt).unwrap(),
            out: VecDeque::new(),
            role,
            srtp_errors: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn publisher(
        name: &str,
        addr: SocketAddr,
        server: SocketAddr,
        local: IceCredentials,
        remote: IceCredentials,
        keys: &Keys,
        (video_ssrc, audio_ssrc): (u32, u32),
        seed: u64,
        now: Instant,
    ) -> Peer {
        let video_seq = (seed as u16).wrapping_mul(7919);
        let role = Role::Publisher(Publisher {
            video: vec![VideoLayer::new(video_ssrc, None, VIDEO, video_seq)],
            audio_ssrc,
            started: None,
            audio_seq: (seed as u16).wrapping_mul(104_729u32 as u16),
            frame: 0,
            audio_frame: 0,
            next_frame: None,
            next_audio: None,
            next_sr: None,
            audio_packets: 0,
            audio_octets: 0,
            nacked: Vec::new(),
            plis: 0,
            audio: true,
            gop: GOP,
        });
        Peer::new(name, addr, server, local, remote, keys, role, seed, now)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn player(
        name: &str,
        addr: SocketAddr,
        server: SocketAddr,
        local: IceCredentials,
        remote: IceCredentials,
        keys: &Keys,
        seed: u64,
        now: Instant,
    ) -> Peer {
        let role = Role::Player(Player {
            received: Vec::new(),
            highest: BTreeMap::new(),
            missing: BTreeMap::new(),
            nacks_sent: 0,
            sender_reports: Vec::new(),
            nack: true,
            twcc: None,
            feedback_sent: 0,
            rtx: None,
            rtx_received: 0,
        });
        Peer::new(name, addr, server, local, remote, keys, role, seed, now)
    }

    pub fn publisher_state(&self) -> &Publisher {
        match &self.role {
            Role::Publisher(p) => p,
            Role::Player(_) => panic!("{} is a player", self.name),
        }
    }

    pub fn publisher_mut(&mut self) -> &mut Publisher {
        match &mut self.role {
            Role::Publisher(p) => p,
            Role::Player(_) => panic!("{} is a player", self.name),
        }
    }

    pub fn player_state(&self) -> &Player {
        match &self.role {
            Role::Player(p) => p,
            Role::Publisher(_) => panic!("{} is a publisher", self.name),
        }
    }

    pub fn player_mut(&mut self) -> &mut Player {
        match &mut self.role {
            Role::Player(p) => p,
            Role::Publisher(_) => panic!("{} is a publisher", self.name),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected_at.is_some() && !self.disconnected
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match Datagram::classify(bytes) {
            Datagram::Stun => {
                let _ = self.ice.handle_packet(now, from, bytes);
                self.drain_ice(now);
            }
            Datagram::Rtcp if self.remote == Some(from) => {
                let mut buf = bytes.to_vec();
                match self.rx.unprotect_rtcp(&mut buf) {
                    Ok(n) => self.handle_rtcp(now, &buf[..n]),
                    Err(_) => self.srtp_errors += 1,
                }
            }
            Datagram::Rtp if self.remote == Some(from) => {
                let mut buf = bytes.to_vec();
                match self.rx.unprotect_rtp(&mut buf) {
                    Ok(n) => self.handle_rtp(now, &buf[..n]),
                    Err(_) => self.srtp_errors += 1,
                }
            }
            _ => {}
        }
    }

    fn drain_ice(&mut self, now: Instant) {
        while let Some(t) = self.ice.poll_transmit() {
            self.out.push_back((t.destination, t.contents));
        }
        while let Some(event) = self.ice.poll_event() {
            match event {
                IceEvent::Connected { remote } | IceEvent::RemoteChanged { remote } => {
                    self.remote = Some(remote);
                    self.connected_at.get_or_insert(now);
                    if let Role::Publisher(p) = &mut self.role {
                        p.started.get_or_insert(now);
                        p.next_frame.get_or_insert(now);
                        p.next_audio.get_or_insert(now);
                        p.next_sr.get_or_insert(now + Duration::from_millis(100));
                    }
                }
                IceEvent::Disconnected { .. } => self.disconnected = true,
                _ => {}
            }
        }
    }

    fn handle_rtp(&mut self, now: Instant, packet: &[u8]) {
        let Role::Player(player) = &mut self.role else {
            return;
        };
        let Ok(header) = RtpHeader::parse(packet) else {
            return;
        };
        if let Some(twcc) = player.twcc.as_mut() {
            if let Some(number) = transport_seq(&header, twcc.extension_id) {
                twcc.recorder.on_packet(now, number);
            }
        }
        let (mut ssrc, mut seq, mut payload) =
            (header.ssrc().0, header.sequence_number(), header.payload());
        if let Some((pt, rtx_ssrc, media_ssrc)) = player.rtx {
            // A retransmission: the number it repairs in front of the original payload.
            if header.payload_type().value() == pt && ssrc == rtx_ssrc && payload.len() >= 2 {
                player.rtx_received += 1;
                (ssrc, seq, payload) = (
                    media_ssrc,
                    u16::from_be_bytes([payload[0], payload[1]]),
                    &payload[2..],
                );
            }
        }
        let (id, intact) = read_payload(payload);
        let highest = player.highest.get(&ssrc).copied();
        let extended = match highest {
            Some(h) => SeqNo::new(h).extend(seq).value(),
            None => u64::from(seq) + (1 << 16),
        };
        player.received.push(Received {
            at: now,
            ssrc,
            seq,
            extended_seq: extended,
            timestamp: header.timestamp(),
            id,
            intact,
        });
        player.missing.remove(&(ssrc, extended));
        if let Some(h) = highest {
            if extended > h + 1 && extended - h < 1_000 && player.nack && !id.audio {
                for lost in h + 1..extended {
                    player.missing.insert((ssrc, lost), (now, 0));
                }
            }
        }
        if highest.is_none_or(|h| extended > h) {
            player.highest.insert(ssrc, extended);
        }
    }

    fn handle_rtcp(&mut self, now: Instant, compound: &[u8]) {
        for packet in RtcpIter::new(compound) {
            let Ok(packet) = packet else { return };
            match (&mut self.role, packet) {
                (Role::Publisher(p), Rtcp::Nack(nack)) => {
                    let lost: Vec<u16> = nack.lost().collect();
                    p.nacked.extend(&lost);
                    let Some(layer) = p.video.iter().find(|v| v.ssrc == nack.media_ssrc.0) else {
                        continue;
                    };
                    for seq in lost {
                        if let Some((_, plain)) = layer.history.iter().find(|(s, _)| *s == seq) {
                            let plain = plain.clone();
                            if let Some(to) = self.remote {
                                let mut buf = plain;
                                let len = buf.len();
                                buf.resize(len + 16, 0);
                                let n = self.tx.protect_rtp(&mut buf, len).unwrap();
                                buf.truncate(n);
                                self.out.push_back((to, buf));
                            }
                        }
                    }
                }
                (Role::Publisher(p), Rtcp::Pli(pli)) => {
                    p.plis += 1;
                    if let Some(layer) = p.video.iter_mut().find(|v| v.ssrc == pli.media_ssrc.0) {
                        layer.plis += 1;
                        layer.keyframe_wanted = true;
                    }
                }
                (Role::Player(p), Rtcp::SenderReport(sr)) => {
                    p.sender_reports
                        .push((sr.sender_ssrc.0, sr.ntp_time, sr.rtp_time));
                }
                _ => {}
            }
        }
        let _ = now;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.ice.handle_timeout(now);
        self.drain_ice(now);
        let Some(to) = self.remote else { return };
        if self.disconnected {
            return;
        }
        let mut plain: Vec<Vec<u8>> = Vec::new();
        let mut rtcp: Vec<Vec<u8>> = Vec::new();
        match &mut self.role {
            Role::Publisher(p) => p.produce(now, &mut plain, &mut rtcp),
            Role::Player(p) => p.produce(now, &mut rtcp),
        }
        for mut buf in plain {
            let len = buf.len();
            buf.resize(len + 16, 0);
            let n = self.tx.protect_rtp(&mut buf, len).unwrap();
            buf.truncate(n);
            self.out.push_back((to, buf));
        }
        for mut buf in rtcp {
            let len = buf.len();
            buf.resize(len + 32, 0);
            let n = self.tx.protect_rtcp(&mut buf, len).unwrap();
            buf.truncate(n);
            self.out.push_back((to, buf));
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let ice = self.ice.poll_timeout();
        let role = if self.remote.is_some() && !self.disconnected {
            match &self.role {
                Role::Publisher(p) => [
                    p.next_frame,
                    p.next_sr,
                    p.audio.then_some(p.next_audio).flatten(),
                ]
                .into_iter()
                .flatten()
                .min(),
                Role::Player(p) => {
                    let feedback = p.twcc.as_ref().and_then(|t| t.recorder.poll_timeout());
                    p.missing.values().map(|(at, _)| *at).chain(feedback).min()
                }
            }
        } else {
            None
        };
        [ice, role].into_iter().flatten().min()
    }

    /// A player asks for a keyframe of the video it receives (a PLI), as a decoder that lost
    /// its picture does.
    pub fn send_pli(&mut self) {
        let Some(to) = self.remote else { return };
        let Some(ssrc) = self
            .player_state()
            .received
            .iter()
            .rev()
            .find(|r| !r.id.audio)
            .map(|r| r.ssrc)
        else {
            return;
        };
        let mut buf = Player::pli(ssrc);
        let len = buf.len();
        buf.resize(len + 32, 0);
        let n = self.tx.protect_rtcp(&mut buf, len).unwrap();
        buf.truncate(n);
        self.out.push_back((to, buf));
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }
}

impl Publisher {
    /// Sends its video as simulcast layers from now on (before it connects): one SSRC each,
    /// from `first_ssrc` up, with the rid and shape of each of `layers`, lowest first.
    pub fn set_simulcast(&mut self, first_ssrc: u32, layers: &[(&str, VideoShape)]) {
        let seq = self.video[0].seq;
        self.video = layers
            .iter()
            .enumerate()
            .map(|(i, (rid, shape))| {
                let seq = seq.wrapping_add(10_007 * i as u16);
                VideoLayer::new(first_ssrc + i as u32, Some(rid.to_string()), *shape, seq)
            })
            .collect();
    }

    fn produce(&mut self, now: Instant, plain: &mut Vec<Vec<u8>>, rtcp: &mut Vec<Vec<u8>>) {
        let started = self.started.unwrap_or(now);
        let layers = self.video.len() as u32;
        while let Some(at) = self.next_frame.filter(|at| *at <= now) {
            let captured_us = at.duration_since(started).as_micros() as u64;
            for (index, video) in self.video.iter_mut().enumerate() {
                if video.paused {
                    continue;
                }
                // Each layer's periodic keyframes fall on frames of their own.
                let phase = index as u32 * self.gop / layers;
                let keyframe =
                    video.keyframe_wanted || (self.frame + phase).is_multiple_of(self.gop);
                video.keyframe_wanted = false;
                if keyframe {
                    video.keyframes.push(self.frame);
                }
                let shape = video.shape;
                let count = if keyframe {
                    shape.keyframe_packets
                } else {
                    shape.delta_packets
                };
                for packet_index in 0..count {
                    let id = PayloadId {
                        audio: false,
                        frame: self.frame,
                        index: packet_index,
                        count,
                        keyframe,
                        captured_us,
                        layer: index as u8,
                        len: shape.payload as u16,
                    };
                    let rid = video
                        .rid
                        .as_deref()
                        .filter(|_| video.packets < RID_PACKETS)
                        .map(|rid| (RID_EXT, rid.as_bytes()));
                    let packet = rtp_packet(
                        VIDEO_PT,
                        video.seq,
                        video_timestamp(captured_us),
                        video.ssrc,
                        packet_index + 1 == count,
                        rid,
                        &id,
                    );
                    if video.history.len() == HISTORY {
                        video.history.pop_front();
                    }
                    video.history.push_back((video.seq, packet.clone()));
                    video.packets += 1;
                    video.octets += (packet.len() - 12) as u32;
                    plain.push(packet);
                    video.seq = video.seq.wrapping_add(1);
                }
            }
            self.frame += 1;
            self.next_frame = Some(at + FRAME_INTERVAL);
        }
        while let Some(at) = self.next_audio.filter(|at| *at <= now && self.audio) {
            let captured_us = at.duration_since(started).as_micros() as u64;
            let id = PayloadId {
                audio: true,
                frame: self.audio_frame,
                index: 0,
                count: 1,
                keyframe: false,
                captured_us,
                layer: 0,
                len: AUDIO_PAYLOAD as u16,
            };
            let packet = rtp_packet(
                AUDIO_PT,
                self.audio_seq,
                audio_timestamp(captured_us),
                self.audio_ssrc,
                false,
                None,
                &id,
            );
            self.audio_packets += 1;
            self.audio_octets += (packet.len() - 12) as u32;
            plain.push(packet);
            self.audio_seq = self.audio_seq.wrapping_add(1);
            self.audio_frame += 1;
            self.next_audio = Some(at + AUDIO_INTERVAL);
        }
        if let Some(at) = self.next_sr.filter(|at| *at <= now) {
            let since_us = now.duration_since(started).as_micros() as u64;
            let ntp = ntp_at(since_us);
            // One per video stream: each layer has its own SSRC and counts.
            for video in self.video.iter().filter(|v| v.packets > 0) {
                let mut report = vec![0u8; 28];
                SenderReport {
                    sender_ssrc: Ssrc(video.ssrc),
                    ntp_time: ntp,
                    rtp_time: video_timestamp(since_us),
                    packet_count: video.packets,
                    octet_count: video.octets,
                    reports: Items::from_slice(&[]),
                }
                .write_to(&mut report)
                .unwrap();
                rtcp.push(report);
            }
            if self.audio {
                let mut audio = vec![0u8; 28];
                SenderReport {
                    sender_ssrc: Ssrc(self.audio_ssrc),
                    ntp_time: ntp,
                    rtp_time: audio_timestamp(since_us),
                    packet_count: self.audio_packets,
                    octet_count: self.audio_octets,
                    reports: Items::from_slice(&[]),
                }
                .write_to(&mut audio)
                .unwrap();
                rtcp.push(audio);
            }
            self.next_sr = Some(at + SR_INTERVAL);
        }
    }
}

impl Player {
    /// Negotiates transport-cc with the number in extension `extension_id`: the player records
    /// when each packet arrived and reports it every [`FEEDBACK_INTERVAL`].
    pub fn enable_transport_cc(&mut self, extension_id: u8) {
        let mut recorder = TwccRecorder::new();
        recorder.set_interval(FEEDBACK_INTERVAL);
        self.twcc = Some(Box::new(PlayerTwcc {
            extension_id,
            recorder,
        }));
    }

    /// Negotiates an RTX stream for its video (SSRC `media_ssrc`): payload type `pt`, SSRC
    /// `ssrc`. Retransmissions on it count as the packets they repair.
    pub fn enable_rtx(&mut self, pt: u8, ssrc: u32, media_ssrc: u32) {
        self.rtx = Some((pt, ssrc, media_ssrc));
    }

    fn produce(&mut self, now: Instant, rtcp: &mut Vec<Vec<u8>>) {
        if let Some(twcc) = self.twcc.as_mut() {
            let media_ssrc = self
                .received
                .iter()
                .rev()
                .find(|r| !r.id.audio)
                .map_or(0, |r| r.ssrc);
            let mut buf = [0u8; 1200];
            while let Ok(Some(n)) =
                twcc.recorder
                    .poll_feedback(now, Ssrc(1), Ssrc(media_ssrc), &mut buf)
            {
                rtcp.push(buf[..n].to_vec());
                self.feedback_sent += 1;
            }
        }
        let due: Vec<(u32, u64)> = self
            .missing
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(key, _)| *key)
            .collect();
        let mut by_ssrc: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
        for key in due {
            let (at, tries) = self.missing.get_mut(&key).unwrap();
            *tries += 1;
            if *tries > NACK_TRIES {
                self.missing.remove(&key);
                continue;
            }
            *at = now + NACK_RETRY;
            by_ssrc.entry(key.0).or_default().push(key.1 as u16);
        }
        for (ssrc, mut lost) in by_ssrc {
            let mut pairs = [NackPair::default(); 64];
            let n = NackPair::pack(&mut lost, &mut pairs);
            let nack = Nack {
                sender_ssrc: Ssrc(1),
                media_ssrc: Ssrc(ssrc),
                pairs: Items::from_slice(&pairs[..n]),
            };
            let mut buf = vec![0u8; nack.encoded_len()];
            nack.write_to(&mut buf).unwrap();
            rtcp.push(buf);
            self.nacks_sent += 1;
        }
    }

    /// Sends a PLI for `ssrc` (the player asks for a keyframe).
    pub fn pli(ssrc: u32) -> Vec<u8> {
        let pli = Pli {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(ssrc),
        };
        let mut buf = vec![0u8; pli.encoded_len()];
        pli.write_to(&mut buf).unwrap();
        buf
    }

    /// Video payloads received, each once, in arrival order.
    pub fn video(&self) -> Vec<&Received> {
        let mut seen = std::collections::BTreeSet::new();
        self.received
            .iter()
            .filter(|r| !r.id.audio && seen.insert((r.id.frame, r.id.index)))
            .collect()
    }
}

/// The 90 kHz timestamp of a capture time.
pub fn video_timestamp(captured_us: u64) -> u32 {
    (captured_us * 90 / 1000) as u32
}

/// The 48 kHz timestamp of a capture time.
pub fn audio_timestamp(captured_us: u64) -> u32 {
    (captured_us * 48 / 1000) as u32
}

/// The NTP time of a capture time: the publisher's clock starts at NTP second 3_900_000_000.
pub fn ntp_at(since_us: u64) -> u64 {
    let secs = 3_900_000_000u64 + since_us / 1_000_000;
    let frac = ((since_us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// What a payload id's bytes look like: a VP8 payload descriptor and header (so the node sees
/// keyframes), the id, then a pattern derived from it.
fn payload(id: &PayloadId) -> Vec<u8> {
    let len = usize::from(id.len);
    let mut p = Vec::with_capacity(len);
    if id.audio {
        p.extend_from_slice(&[0xfc, 0x00, 0x00]);
    } else if id.index == 0 {
        // S=1, partition 0; P=0 for a keyframe, with the start code and 640x360.
        p.push(0x10);
        if id.keyframe {
            p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        } else {
            p.extend_from_slice(&[0x01, 0x00, 0x00]);
        }
    } else {
        p.push(0x00);
    }
    let header_len = p.len() as u8;
    p.push(header_len);
    p.push(u8::from(id.audio) | (u8::from(id.keyframe) << 1));
    p.extend_from_slice(&id.frame.to_be_bytes());
    p.extend_from_slice(&id.index.to_be_bytes());
    p.extend_from_slice(&id.count.to_be_bytes());
    p.extend_from_slice(&id.captured_us.to_be_bytes());
    p.push(id.layer);
    p.extend_from_slice(&id.len.to_be_bytes());
    let seed = id.frame.wrapping_mul(31).wrapping_add(u32::from(id.index));
    while p.len() < len {
        p.push((seed as usize + p.len()) as u8);
    }
    p
}

fn read_payload(p: &[u8]) -> (PayloadId, bool) {
    let broken = PayloadId {
        audio: false,
        frame: u32::MAX,
        index: 0,
        count: 0,
        keyframe: false,
        captured_us: 0,
        layer: 0,
        len: 0,
    };
    let header_len = find_header_len(p);
    if p.get(header_len) != Some(&(header_len as u8)) {
        return (broken, false);
    }
    let at = header_len + 1;
    let Some(fields) = p.get(at..at + 20) else {
        return (broken, false);
    };
    let id = PayloadId {
        audio: fields[0] & 1 != 0,
        keyframe: fields[0] & 2 != 0,
        frame: u32::from_be_bytes(fields[1..5].try_into().unwrap()),
        index: u16::from_be_bytes(fields[5..7].try_into().unwrap()),
        count: u16::from_be_bytes(fields[7..9].try_into().unwrap()),
        captured_us: u64::from_be_bytes(fields[9..17].try_into().unwrap()),
        layer: fields[17],
        len: u16::from_be_bytes(fields[18..20].try_into().unwrap()),
    };
    (id, payload(&id) == p)
}

/// Where the header-length byte is: after the VP8 or audio prefix, which the first byte tells.
fn find_header_len(p: &[u8]) -> usize {
    match p.first() {
        Some(0xfc) => 3,
        Some(0x10) if p.get(1) == Some(&0x00) && p.get(4) == Some(&0x9d) => 11,
        Some(0x10) => 4,
        _ => 1,
    }
}

fn rtp_packet(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    extension: Option<(u8, &[u8])>,
    id: &PayloadId,
) -> Vec<u8> {
    let body = payload(id);
    let elements: Vec<ExtensionElement<'_>> = extension
        .map(|(id, data)| ExtensionElement { id, data })
        .into_iter()
        .collect();
    let mut header = RtpHeaderBuilder::new(Pt::new(pt), seq, ts, Ssrc(ssrc));
    header.marker = marker;
    header.extensions = &elements;
    let mut buf = vec![0u8; header.encoded_len() + body.len()];
    let n = header.write_to(&mut buf).unwrap();
    buf[n..].copy_from_slice(&body);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_say_what_they_are_and_are_checked_whole() {
        for id in [
            PayloadId {
                audio: false,
                frame: 7,
                index: 0,
                count: 15,
                keyframe: true,
                captured_us: 233_331,
                layer: 2,
                len: SIMULCAST[2].1.payload as u16,
            },
            PayloadId {
                audio: false,
                frame: 8,
                index: 0,
                count: 3,
                keyframe: false,
                captured_us: 266_664,
                layer: 0,
                len: VIDEO.payload as u16,
            },
            PayloadId {
                audio: false,
                frame: 8,
                index: 2,
                count: 3,
                keyframe: false,
                captured_us: 266_664,
                layer: 0,
                len: VIDEO.payload as u16,
            },
            PayloadId {
                audio: true,
                frame: 70,
                index: 0,
                count: 1,
                keyframe: false,
                captured_us: 1_400_000,
                layer: 0,
                len: AUDIO_PAYLOAD as u16,
            },
        ] {
            let mut p = payload(&id);
            assert_eq!(read_payload(&p), (id, true));
            let last = p.len() - 1;
            p[last] ^= 1;
            assert_eq!(read_payload(&p), (id, false));
        }
        let key = payload(&PayloadId {
            audio: false,
            frame: 0,
            index: 0,
            count: 12,
            keyframe: true,
            captured_us: 0,
            layer: 0,
            len: VIDEO.payload as u16,
        });
        assert!(rtp::is_keyframe(rtp::VideoCodec::Vp8, &key));
        let delta = payload(&PayloadId {
            audio: false,
            frame: 1,
            index: 0,
            count: 3,
            keyframe: false,
            captured_us: 0,
            layer: 0,
            len: VIDEO.payload as u16,
        });
        assert!(!rtp::is_keyframe(rtp::VideoCodec::Vp8, &delta));
    }
}
