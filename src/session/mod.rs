//! One WebRTC peer on a media core, sans-IO: ICE-lite, SRTP, and the RTCP a server must speak.
//!
//! The core feeds it datagrams and the time (`handle_*`) and drains what it wants to send and
//! what happened (`poll_transmit`, `poll_event`, `poll_timeout`). DTLS runs in its own task (see
//! [`crate::dtls`]); the core passes records there and hands the exported keys back here with
//! [`Session::handle_dtls_connected`]. Media packets are decrypted and encrypted in place in the
//! caller's buffers; only control packets (STUN, RTCP) are allocated.
//!
//! This file is the state machine every session shares (phases, deadlines, the `poll_*` queues,
//! RTCP out). The rest is by role: [`publisher`] (receive statistics, loss detection, what a
//! publisher is told), [`player`] (rewriting, retransmission, layers, bandwidth estimate),
//! `layer_rid` (the rid a relay names its layers by), [`ice`] (the agent and consent), and
//! [`lost_packets`] (the numbers a player's NACK names).
//! The protocol parts they use, each sans-IO and tested on its own: [`loss_detector`] (a
//! publisher's gaps turned into NACKs), [`rtx`] (RFC 4588 both ways) and [`transport_cc`]
//! (feedback to publishers, bandwidth estimates of players).
//!
//! A room below `crate::media`, which owns the sessions of a core and routes what they
//! decrypt: nothing here knows other sessions, cores or sockets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

// `::ice` is the crate; `ice` alone is the module below.
use ::ice::{IceEvent, Transmit};
use rtp::rtcp::{Rtcp, RtcpIter};
use rtp::srtp::SrtpContext;

use crate::control::{EndReason, SessionId, SessionRole, SessionSpec, StreamId};
use crate::dtls::{DtlsRole, SrtpKeyingMaterial};
use crate::sdp::MediaKind;

mod ice;
mod layer_rid;
pub mod loss_detector;
mod lost_packets;
mod player;
mod publisher;
pub mod rtx;
#[cfg(test)]
mod test_support;
pub mod transport_cc;

use self::ice::IceAgent;
use self::loss_detector::RepairCounts;
pub use self::lost_packets::{LostPackets, MAX_LOST_PACKETS};
use self::player::PlayerState;
pub use self::player::{RESEND_BURST, RESEND_RATE_PER_SEC};
use self::publisher::PublisherState;
pub use self::publisher::ReceivedMedia;
use self::rtx::RtxError;

/// Why the session refused a datagram. Counted and logged by the core, never fatal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// STUN that failed ICE checks.
    #[error("ICE: {0}")]
    Ice(#[from] ::ice::IceError),
    /// SRTP/SRTCP that failed authentication, replay checks or parsing.
    #[error("SRTP: {0}")]
    Srtp(rtp::Error),
    /// Plaintext RTP/RTCP that did not parse.
    #[error("RTP: {0}")]
    Rtp(rtp::Error),
    /// Media before the DTLS handshake finished.
    #[error("media before DTLS keys")]
    NotKeyed,
    /// Media from a payload type that was not negotiated.
    #[error("unnegotiated payload type {0}")]
    UnknownPayloadType(u8),
    /// Simulcast video from an SSRC that never carried a rid of the offer's layers.
    #[error("simulcast video from SSRC {0:#x} of no known layer")]
    UnknownLayer(u32),
    /// A player sent RTP (players only receive).
    #[error("unexpected RTP from a player")]
    UnexpectedRtp,
    /// A publisher's retransmission (RFC 4588) that carries no media to forward, or is bad.
    #[error("RTX: {0}")]
    Rtx(#[from] RtxError),
}

/// Something the core must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// ICE nominated this address: start DTLS towards it.
    IceConnected { remote: SocketAddr },
    /// The peer moved to another address (ICE re-nomination).
    RemoteChanged { remote: SocketAddr },
    /// SRTP keys are installed: media flows.
    Connected,
    /// A publisher's first media packet arrived.
    MediaStarted,
    /// A player asked for a keyframe (PLI or FIR) of a simulcast layer (0 without simulcast):
    /// the one it waits for or is sent, or the layer a relay's edge named. Forward to the
    /// stream's publisher.
    KeyframeRequested { layer: u8 },
    /// A player (or an edge, through a relay) lost these packets of a track, numbered as the
    /// publisher numbers them (in the simulcast layer it is sent, or the one the edge named):
    /// answer from the core's retransmission cache, and ask the publisher to send the rest
    /// again.
    RetransmissionRequested {
        kind: MediaKind,
        layer: u8,
        seqs: LostPackets,
    },
    /// A publisher's sender report: players get a translated one. Each simulcast layer has
    /// its own (its own SSRC and RTP timestamp base).
    SenderReport {
        kind: MediaKind,
        layer: u8,
        ntp_time: u64,
        rtp_time: u32,
    },
    /// What the publisher's loss detector asked for and got back since the last report.
    UpstreamRepair(RepairCounts),
    /// The session is over; the core removes it.
    Ended(EndReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    AwaitingIce,
    AwaitingDtls,
    Connected,
    Ended,
}

/// What a session keeps of its role.
enum RoleState {
    Publisher(PublisherState),
    Player(PlayerState),
}

/// How long a session may take: to connect, and between consent checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// From creation until ICE and DTLS are both done.
    pub connect: Duration,
    /// ICE consent (RFC 7675).
    pub consent: Duration,
}

/// One WebRTC peer: a publisher, a player, or a relay to another node.
pub struct Session {
    id: SessionId,
    stream: StreamId,
    stream_name: String,
    ice: IceAgent,
    dtls_role: DtlsRole,
    remote_fingerprint: [u8; 32],
    phase: Phase,
    /// Until ICE and DTLS are done: when the session gives up (and frees its stream name).
    connect_deadline: Option<Instant>,
    remote: Option<SocketAddr>,
    srtp_rx: Option<SrtpContext>,
    srtp_tx: Option<SrtpContext>,
    rtcp_ssrc: u32,
    role: RoleState,
    events: VecDeque<SessionEvent>,
    transmits: VecDeque<Transmit>,
    /// Buffers of sent control packets, handed back by [`Session::recycle`]: RTCP is written
    /// into them, so a session's steady state allocates nothing.
    spare_buffers: Vec<Vec<u8>>,
    /// When the session was created, for the duration its end is logged with.
    started_at: Instant,
    traffic: Traffic,
    /// The fraction of packets lost (RFC 3550 `fraction lost`, in 256ths) over the last
    /// receiver report: the node's own for a publisher, the worst of its peer's for a player.
    loss_fraction: Option<u8>,
}

/// The media a session carried, as SRTP on the wire: what a publisher sent the node (accepted
/// packets), what the node sent a player (first sends and repairs). RTCP and STUN not counted,
/// except the repair requests: NACKs and keyframe requests (PLI, FIR) a player sent the node
/// (`_in`), and those the node sent a publisher (`_out`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub nacks_in: u64,
    pub keyframe_requests_in: u64,
    pub nacks_out: u64,
    pub keyframe_requests_out: u64,
}

impl Traffic {
    /// Adds `other`'s counts to these (a stream's total over its sessions).
    pub fn add(&mut self, other: &Traffic) {
        self.packets_in += other.packets_in;
        self.bytes_in += other.bytes_in;
        self.packets_out += other.packets_out;
        self.bytes_out += other.bytes_out;
        self.nacks_in += other.nacks_in;
        self.keyframe_requests_in += other.keyframe_requests_in;
        self.nacks_out += other.nacks_out;
        self.keyframe_requests_out += other.keyframe_requests_out;
    }
}

impl Session {
    /// Creates a session from what signalling negotiated. `seed` gives the session its random
    /// values (RTCP SSRC, RTP sequence/timestamp bases) without reading a global RNG.
    pub fn new(spec: SessionSpec, now: Instant, timeouts: SessionTimeouts, seed: u64) -> Session {
        let mut random = SplitMix64(seed);
        let ice = IceAgent::new(
            &spec.role,
            spec.local_ice,
            spec.remote_ice,
            timeouts.consent,
            &mut random,
            now,
        );
        let role = match spec.role {
            SessionRole::Publisher { tracks } => RoleState::Publisher(PublisherState::new(tracks)),
            SessionRole::Player { tracks } => {
                RoleState::Player(PlayerState::new(tracks, None, now, &mut random))
            }
            SessionRole::Relay { tracks, layers, .. } => {
                RoleState::Player(PlayerState::new(tracks, layers, now, &mut random))
            }
        };
        Session {
            id: spec.id,
            stream: spec.stream,
            stream_name: spec.stream_name,
            ice,
            dtls_role: spec.dtls_role,
            remote_fingerprint: spec.remote_fingerprint,
            phase: Phase::AwaitingIce,
            connect_deadline: Some(now + timeouts.connect),
            remote: None,
            srtp_rx: None,
            srtp_tx: None,
            rtcp_ssrc: random.next() as u32 | 1,
            role,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            spare_buffers: Vec::new(),
            started_at: now,
            traffic: Traffic::default(),
            loss_fraction: None,
        }
    }

    /// When the session was created.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The media it carried so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// The share of packets lost over the last receiver report period, in 256ths: what the
    /// node missed of a publisher, or the worst a player reported of what it was sent. `None`
    /// before the first report.
    pub fn loss_fraction(&self) -> Option<u8> {
        self.loss_fraction
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// The stream it publishes or plays.
    pub fn stream(&self) -> StreamId {
        self.stream
    }
    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }
    /// Whether it publishes.
    pub fn is_publisher(&self) -> bool {
        matches!(self.role, RoleState::Publisher(_))
    }
    /// The peer's nominated address.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }
    /// Our DTLS role.
    pub fn dtls_role(&self) -> DtlsRole {
        self.dtls_role
    }
    /// The fingerprint the peer's DTLS certificate must have.
    pub fn remote_fingerprint(&self) -> [u8; 32] {
        self.remote_fingerprint
    }
    /// Whether it plays a track of this kind (a publisher plays none).
    pub fn plays(&self, kind: MediaKind) -> bool {
        matches!(&self.role, RoleState::Player(p) if p.plays(kind))
    }
    /// Whether it negotiated a retransmission stream (RTX) for its track of this kind.
    pub fn plays_rtx(&self, kind: MediaKind) -> bool {
        matches!(&self.role, RoleState::Player(p) if p.plays_rtx(kind))
    }
    /// Whether it publishes a track of this kind.
    pub fn publishes(&self, kind: MediaKind) -> bool {
        matches!(&self.role, RoleState::Publisher(p) if p.publishes(kind))
    }
    /// Whether SRTP keys are installed.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// A STUN datagram from `from`.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let result = self.ice.handle_packet(now, from, data);
        self.drain_ice();
        result.map_err(SessionError::from)
    }

    /// The DTLS handshake finished: install SRTP contexts.
    pub fn handle_dtls_connected(&mut self, keys: SrtpKeyingMaterial, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        let rx = SrtpContext::new(keys.profile, &keys.remote_key, &keys.remote_salt);
        let tx = SrtpContext::new(keys.profile, &keys.local_key, &keys.local_salt);
        match (rx, tx) {
            (Ok(rx), Ok(tx)) => {
                self.srtp_rx = Some(rx);
                self.srtp_tx = Some(tx);
                self.phase = Phase::Connected;
                self.connect_deadline = None;
                self.events.push_back(SessionEvent::Connected);
                if let RoleState::Publisher(publisher) = &mut self.role {
                    publisher.on_connected(now);
                }
            }
            (Err(e), _) | (_, Err(e)) => self.end(EndReason::DtlsFailed(format!("SRTP keys: {e}"))),
        }
    }

    /// Ends the session (once); the core removes it after draining events.
    pub fn end(&mut self, reason: EndReason) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ended;
            self.events.push_back(SessionEvent::Ended(reason));
        }
    }

    /// An SRTCP packet from the peer.
    pub fn handle_srtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Result<(), SessionError> {
        let srtp = self.srtp_rx.as_mut().ok_or(SessionError::NotKeyed)?;
        let len = srtp.unprotect_rtcp(data).map_err(SessionError::Srtp)?;
        self.ice.renew_consent(now, from);
        for packet in RtcpIter::new(&data[..len]) {
            match packet.map_err(SessionError::Rtp)? {
                Rtcp::SenderReport(sr) => self.handle_sender_report(now, &sr),
                Rtcp::ReceiverReport(rr) => {
                    if let Some(worst) = rr.reports.iter().map(|b| b.fraction_lost).max() {
                        self.loss_fraction = Some(worst);
                    }
                }
                Rtcp::Pli(pli) => {
                    self.traffic.keyframe_requests_in += 1;
                    self.handle_keyframe_request([pli.media_ssrc])
                }
                Rtcp::Fir(fir) => {
                    self.traffic.keyframe_requests_in += 1;
                    self.handle_keyframe_request(fir.entries.iter().map(|entry| entry.ssrc))
                }
                Rtcp::Nack(nack) => {
                    self.traffic.nacks_in += 1;
                    self.handle_nack(&nack)
                }
                Rtcp::TransportCc(feedback) => {
                    if let Some(f) = self.player_feedback() {
                        f.on_feedback(now, &feedback);
                    }
                }
                Rtcp::Remb(remb) => {
                    if let Some(f) = self.player_feedback() {
                        f.on_remb(now, remb.bitrate_bps);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How many simulcast layers a publisher sends (1 without simulcast), or a player's stream
    /// has; 0 without video.
    pub fn video_layer_count(&self) -> usize {
        match &self.role {
            RoleState::Publisher(p) => p.video_layer_count(),
            RoleState::Player(p) => p.video_layer_count(),
        }
    }

    fn send_rtcp(&mut self, packets: &[Rtcp<'_>]) {
        if self.remote.is_none() || self.srtp_tx.is_none() {
            return;
        }
        let len: usize = packets.iter().map(|p| p.encoded_len()).sum();
        let mut buf = self.spare_buffers.pop().unwrap_or_default();
        buf.clear();
        // Room for the SRTCP index and tag.
        buf.resize(len + 64, 0);
        let mut at = 0;
        for packet in packets {
            match packet.write_to(&mut buf[at..]) {
                Ok(n) => at += n,
                Err(_) => {
                    self.spare_buffers.push(buf);
                    return;
                }
            }
        }
        self.queue_srtcp(buf, at);
    }

    /// Protects the RTCP in `buf[..len]` (which has room for SRTCP's index and tag) and queues
    /// it to the peer.
    fn queue_srtcp(&mut self, mut buf: Vec<u8>, len: usize) {
        let (Some(remote), Some(srtp)) = (self.remote, self.srtp_tx.as_mut()) else {
            self.spare_buffers.push(buf);
            return;
        };
        match srtp.protect_rtcp(&mut buf, len) {
            Ok(n) => {
                buf.truncate(n);
                self.transmits.push_back(Transmit {
                    destination: remote,
                    contents: buf,
                });
            }
            Err(_) => self.spare_buffers.push(buf),
        }
    }

    /// Gives back the buffer of a sent [`Transmit`] for the next control packet.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        // A few are enough: a session queues at most a handful of control packets at a time.
        if self.spare_buffers.len() < 4 && buffer.capacity() <= 2048 {
            self.spare_buffers.push(buffer);
        }
    }

    /// Time passed: ICE consent, merged keyframe requests, receiver reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.connect_deadline.is_some_and(|at| at <= now) {
            self.connect_deadline = None;
            if matches!(self.phase, Phase::AwaitingIce | Phase::AwaitingDtls) {
                let ice = self.phase == Phase::AwaitingDtls;
                self.end(EndReason::ConnectTimeout { ice });
            }
        }
        self.ice.handle_timeout(now);
        self.drain_ice();
        self.handle_publisher_timeout(now);
    }

    /// When [`Session::handle_timeout`] wants to run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let publisher = match &self.role {
            RoleState::Publisher(p) => p.poll_timeout(),
            RoleState::Player(_) => None,
        };
        [self.ice.poll_timeout(), self.connect_deadline, publisher]
            .into_iter()
            .flatten()
            .min()
    }

    /// A control datagram to send (STUN, RTCP).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Something that happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    fn drain_ice(&mut self) {
        while let Some(transmit) = self.ice.poll_transmit() {
            self.transmits.push_back(transmit);
        }
        while let Some(event) = self.ice.poll_event() {
            match event {
                IceEvent::Connected { remote } => {
                    self.remote = Some(remote);
                    if self.phase == Phase::AwaitingIce {
                        self.phase = Phase::AwaitingDtls;
                    }
                    self.events.push_back(SessionEvent::IceConnected { remote });
                }
                IceEvent::RemoteChanged { remote } => {
                    self.remote = Some(remote);
                    self.events
                        .push_back(SessionEvent::RemoteChanged { remote });
                }
                IceEvent::Disconnected { reason } => self.end(ice::end_reason(reason)),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }
}

/// A tiny deterministic generator for per-session random values (SSRCs, sequence bases), so the
/// session needs no global RNG.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::publisher_spec;
    use super::*;

    fn ended(session: &mut Session) -> Option<EndReason> {
        while let Some(event) = session.poll_event() {
            if let SessionEvent::Ended(reason) = event {
                return Some(reason);
            }
        }
        None
    }

    #[test]
    fn a_session_that_never_connects_ends_at_the_connect_timeout() {
        let start = Instant::now();
        let timeouts = SessionTimeouts {
            connect: Duration::from_secs(10),
            consent: Duration::from_secs(30),
        };
        let mut session = Session::new(publisher_spec(), start, timeouts, 7);
        // The connect deadline comes before anything the ICE agent waits for.
        assert_eq!(
            session.poll_timeout(),
            Some(start + Duration::from_secs(10))
        );
        session.handle_timeout(start + Duration::from_secs(9));
        assert_eq!(ended(&mut session), None);
        session.handle_timeout(start + Duration::from_secs(10));
        assert_eq!(
            ended(&mut session),
            Some(EndReason::ConnectTimeout { ice: false })
        );
    }
}
