//! A player's side of a session: what rtcdn sends it and what it asks for.
//!
//! Each of its tracks rewrites forwarded packets into its own SSRC, payload type, sequence
//! and timestamp space; packets it reports lost are sent again from the node's cache (on its
//! RTX stream when negotiated), within a budget; with simulcast it switches layers at
//! keyframes; its transport-cc feedback and REMB drive a bandwidth estimate; and the
//! publisher's sender reports are translated into its timestamps.

use std::time::{Duration, Instant};

use rtp::rtcp::{Items, Nack, Rtcp, SenderReport};
use rtp::{Pt, RtpHeader, RtpRewriter, Ssrc};

use super::rtx::RtxSender;
use super::transport_cc::PlayerFeedback;
use super::{LostPackets, RoleState, Session, SessionEvent, SplitMix64};
use crate::bwe::BweConfig;
use crate::control::PlayedTrack;
use crate::sdp::MediaKind;
use crate::simulcast::{LayerDecision, LayerSwitch, MAX_LAYERS};

/// A player's bandwidth estimator: the defaults, with a send history of 1,024 packets (16 KiB a
/// player; 1.2 s at 7 Mbit/s, longer than feedback ever takes).
const PLAYER_BWE: BweConfig = BweConfig {
    history_len: 1024,
    ..BweConfig::DEFAULT
};

/// One track a player is sent, in its own SSRC, payload type and numbering.
struct PlayerTrack {
    track: PlayedTrack,
    rewriter: RtpRewriter,
    /// Where the packets the player reports lost go again, when it negotiated rtx.
    rtx: Option<RtxSender>,
    packets_sent: u32,
    octets_sent: u32,
}

/// What a session keeps of its player (or of the relay it sends a stream through).
pub(super) struct PlayerState {
    tracks: [Option<PlayerTrack>; 2],
    /// How many packets the node may still send this player again from its cache.
    resends: ResendBudget,
    /// Transport-wide numbers and the bandwidth estimate, when transport-cc is negotiated.
    /// Boxed: most of a player's state, allocated once with the session.
    transport_cc: Option<Box<PlayerFeedback>>,
    /// The simulcast layer of its video, when the stream has several.
    layers: Option<LayerSwitch>,
}

/// Packets a player may have sent again per second, and in one burst: far above what real loss
/// asks for (10% of a 8 Mbit/s stream is ~80 a second), low enough that a player that NACKs in
/// a loop cannot make its core spend its time, or its uplink, on it.
pub const RESEND_RATE_PER_SEC: u64 = 200;
/// See [`RESEND_RATE_PER_SEC`].
pub const RESEND_BURST: u64 = 400;

/// A token bucket of resends, refilled with time.
#[derive(Debug)]
struct ResendBudget {
    tokens: u64,
    /// When the last whole token was added.
    refilled_at: Option<Instant>,
}

impl ResendBudget {
    fn full() -> ResendBudget {
        ResendBudget {
            tokens: RESEND_BURST,
            refilled_at: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let since = self.refilled_at.get_or_insert(now);
        let earned =
            now.saturating_duration_since(*since).as_millis() as u64 * RESEND_RATE_PER_SEC / 1000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(RESEND_BURST);
            // Keep the fraction of a token that was not added yet.
            *since += Duration::from_millis(earned * 1000 / RESEND_RATE_PER_SEC);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// A player's track slot: audio, then video.
fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

impl PlayerState {
    /// The state of a player of `tracks`: its sequence and timestamp bases (and its RTX
    /// streams') drawn from `random`, track by track.
    pub(super) fn new(
        tracks: Vec<PlayedTrack>,
        now: Instant,
        random: &mut SplitMix64,
    ) -> PlayerState {
        let transport_cc = tracks
            .iter()
            .find_map(|t| t.transport_cc)
            .and_then(|id| PlayerFeedback::new(id, now, PLAYER_BWE))
            .map(Box::new);
        let layers = tracks
            .iter()
            .find_map(|t| t.layers)
            .map(|l| LayerSwitch::new(l.target, l.pinned));
        let mut slots: [Option<PlayerTrack>; 2] = [None, None];
        for track in tracks {
            let rewriter = RtpRewriter::new(
                Ssrc(track.ssrc),
                Pt::new(track.pt),
                random.next() as u16,
                random.next() as u32,
            );
            let rtx = track
                .rtx
                .map(|rtx| RtxSender::new(Ssrc(rtx.ssrc), Pt::new(rtx.pt), random.next() as u16));
            let slot = kind_index(track.kind);
            slots[slot] = Some(PlayerTrack {
                track,
                rewriter,
                rtx,
                packets_sent: 0,
                octets_sent: 0,
            });
        }
        PlayerState {
            tracks: slots,
            resends: ResendBudget::full(),
            transport_cc,
            layers,
        }
    }

    /// Whether it plays a track of this kind.
    pub(super) fn plays(&self, kind: MediaKind) -> bool {
        self.tracks[kind_index(kind)].is_some()
    }

    /// Whether it negotiated a retransmission stream (RTX) for its track of this kind.
    pub(super) fn plays_rtx(&self, kind: MediaKind) -> bool {
        self.tracks[kind_index(kind)]
            .as_ref()
            .is_some_and(|t| t.track.rtx.is_some())
    }

    /// How many simulcast layers its stream has (1 without simulcast); 0 without video.
    pub(super) fn video_layer_count(&self) -> usize {
        if !self.plays(MediaKind::Video) {
            return 0;
        }
        self.tracks
            .iter()
            .flatten()
            .find_map(|t| t.track.layers)
            .map_or(1, |l| usize::from(l.count).clamp(1, MAX_LAYERS))
    }
}

/// The player's side of [`Session`]. Called on a publisher, these do nothing: nothing is
/// written, `take_layer` forwards every packet and no resend is granted.
impl Session {
    /// Its bandwidth estimator, when it negotiated transport-cc.
    pub(super) fn player_feedback(&mut self) -> Option<&mut PlayerFeedback> {
        match &mut self.role {
            RoleState::Player(player) => player.transport_cc.as_deref_mut(),
            RoleState::Publisher(_) => None,
        }
    }

    /// A player's available bandwidth as estimated from its transport-cc feedback; `None`
    /// without transport-cc (or for a publisher).
    pub fn bandwidth_estimate(&self) -> Option<u64> {
        match &self.role {
            RoleState::Player(player) => player
                .transport_cc
                .as_deref()
                .map(PlayerFeedback::estimate_bps),
            RoleState::Publisher(_) => None,
        }
    }

    /// A player's NACK names packets in its own sequence space; the publisher knows them by its
    /// own numbers.
    pub(super) fn handle_nack(&mut self, nack: &Nack<'_>) {
        let RoleState::Player(player) = &self.role else {
            return;
        };
        let Some(track) = player
            .tracks
            .iter()
            .flatten()
            .find(|t| t.track.ssrc == nack.media_ssrc.0)
        else {
            return;
        };
        let seqs: LostPackets = nack
            .lost()
            .filter_map(|seq| track.rewriter.source_sequence(seq))
            .collect();
        if !seqs.is_empty() {
            self.events
                .push_back(SessionEvent::RetransmissionRequested {
                    kind: track.track.kind,
                    seqs,
                });
        }
    }

    /// Writes a forwarded packet for this player into `out`: copied from `plain`, rewritten to the
    /// player's SSRC, payload type, sequence and timestamp, and encrypted. Returns the datagram
    /// length, or 0 when this player does not take the packet (not connected, no such track).
    pub fn write_rtp(
        &mut self,
        now: Instant,
        kind: MediaKind,
        plain: &[u8],
        out: &mut [u8],
    ) -> usize {
        let n = self.write_player_rtp(now, kind, plain, out, false);
        self.count_sent(n);
        n
    }

    /// Writes a packet this player reported lost again, from the node's cache. With rtx
    /// negotiated, as a retransmission (RFC 4588) on the player's RTX stream: the number the
    /// player asked for in front of the payload, the timestamp it first went out with. Without,
    /// rewritten and encrypted exactly as [`Session::write_rtp`] first wrote it, so it carries
    /// the number the player asked for and an SRTP index it never received. Returns 0, writing
    /// nothing, unless the player's current mapping wrote that packet: a packet from before the
    /// player joined or from an earlier source would carry a number that belonged to other
    /// contents (and, resent as it went out, reuse an SRTP index, so a GCM nonce).
    pub fn write_retransmission(
        &mut self,
        now: Instant,
        kind: MediaKind,
        plain: &[u8],
        out: &mut [u8],
    ) -> usize {
        let n = self.write_player_rtp(now, kind, plain, out, true);
        self.count_sent(n);
        n
    }

    fn count_sent(&mut self, written: usize) {
        if written > 0 {
            self.traffic.packets_out += 1;
            self.traffic.bytes_out += written as u64;
        }
    }

    /// Whether this player takes a video packet of simulcast `layer` (`keyframe` when it starts
    /// a keyframe), moving it to its target layer at the target's keyframe (see
    /// [`LayerSwitch`]). Every packet, without simulcast.
    pub fn take_layer(&mut self, layer: u8, keyframe: bool) -> LayerDecision {
        match &mut self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => layers.on_packet(layer, keyframe),
            _ => LayerDecision::Forward,
        }
    }

    /// Moves a simulcast player's target layer (the layers it can get changed); false when
    /// it pinned its layer, has none, or already targets `layer`.
    pub fn retarget_layer(&mut self, layer: u8) -> bool {
        match &mut self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => layers.retarget(layer),
            _ => false,
        }
    }

    /// A simulcast player's layer choice: `(count, target)`, when the core may move it (to
    /// another layer the publisher sends); `None` without simulcast or when it pinned one.
    pub fn layer_choice(&self) -> Option<(u8, u8)> {
        match &self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                tracks,
                ..
            }) if !layers.pinned() => {
                let count = tracks.iter().flatten().find_map(|t| t.track.layers)?.count;
                Some((count, layers.target()))
            }
            _ => None,
        }
    }

    /// A simulcast player's layers: `(current, target)`; `None` without simulcast.
    pub fn video_layers(&self) -> Option<(Option<u8>, u8)> {
        match &self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => Some((layers.current(), layers.target())),
            _ => None,
        }
    }

    /// The layer whose keyframe this player waits for, when one is due to be asked for again
    /// (see [`LayerSwitch::poll_keyframe_request`]).
    pub fn poll_layer_keyframe_request(&mut self, now: Instant) -> Option<u8> {
        match &mut self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => layers.poll_keyframe_request(now),
            _ => None,
        }
    }

    /// Whether this player may have one more packet sent again now ([`RESEND_RATE_PER_SEC`]);
    /// takes it from its budget if so. Never for a publisher.
    pub fn may_resend(&mut self, now: Instant) -> bool {
        match &mut self.role {
            RoleState::Player(player) => player.resends.take(now),
            RoleState::Publisher(_) => false,
        }
    }

    fn write_player_rtp(
        &mut self,
        now: Instant,
        kind: MediaKind,
        plain: &[u8],
        out: &mut [u8],
        only_if_written: bool,
    ) -> usize {
        let (RoleState::Player(player), Some(srtp)) = (&mut self.role, self.srtp_tx.as_mut())
        else {
            return 0;
        };
        let Some(track) = player.tracks[kind_index(kind)].as_mut() else {
            return 0;
        };
        let len = plain.len();
        if len + 32 > out.len() {
            return 0;
        }
        if only_if_written {
            let Ok(header) = RtpHeader::parse(plain) else {
                return 0;
            };
            let Some(osn) = track
                .rewriter
                .written_sequence(header.ssrc(), header.sequence_number())
            else {
                return 0;
            };
            if let Some(rtx) = track.rtx.as_mut() {
                // Under the mapping that wrote it: the timestamp it went out with.
                let Some(timestamp) = track.rewriter.output_timestamp(header.timestamp()) else {
                    return 0;
                };
                // Not counted in the sender report's packets: those are the media SSRC's.
                let Ok(len) = rtx.write(plain, osn, timestamp, out) else {
                    return 0;
                };
                if let Some(feedback) = player.transport_cc.as_mut() {
                    // A new packet on the transport: a number of its own, when the copied
                    // header has the element (else the player's feedback just never sees it).
                    feedback.stamp_new(now, &mut out[..len]);
                }
                return srtp.protect_rtp(out, len).unwrap_or(0);
            }
        }
        // With transport-cc the element gets room now and its number once the packet is
        // rewritten; a packet whose extensions cannot take it goes out without one (the same
        // way every time, so a retransmission is still the same bytes).
        let stamped = player
            .transport_cc
            .as_ref()
            .and_then(|f| f.copy_with_room(plain, out).ok());
        let len = match stamped {
            Some(len) => len,
            None => {
                out[..len].copy_from_slice(plain);
                len
            }
        };
        if track.rewriter.rewrite(&mut out[..len]).is_err() {
            return 0;
        }
        if let (Some(feedback), Some(_)) = (player.transport_cc.as_mut(), stamped) {
            let video = kind == MediaKind::Video;
            if feedback
                .stamp(now, &mut out[..len], video, only_if_written)
                .is_err()
            {
                return 0;
            }
        }
        match srtp.protect_rtp(out, len) {
            Ok(n) => {
                track.packets_sent = track.packets_sent.wrapping_add(1);
                track.octets_sent = track.octets_sent.wrapping_add(len as u32);
                n
            }
            Err(_) => 0,
        }
    }

    /// The publisher sent a sender report: send this player the same NTP↔RTP mapping in its own
    /// SSRC and timestamp space, so its browser keeps audio and video in sync.
    /// With simulcast, only the report of the video layer it is sent applies: each layer has
    /// its own timestamp base.
    pub fn handle_publisher_sender_report(
        &mut self,
        kind: MediaKind,
        layer: u8,
        ntp_time: u64,
        rtp_time: u32,
    ) {
        let RoleState::Player(player) = &mut self.role else {
            return;
        };
        if let (MediaKind::Video, Some(layers)) = (kind, &player.layers) {
            if layers.current() != Some(layer) {
                return;
            }
        }
        let Some(track) = player.tracks[kind_index(kind)].as_mut() else {
            return;
        };
        let Some(rtp_time) = track.rewriter.output_timestamp(rtp_time) else {
            return;
        };
        let sr = SenderReport {
            sender_ssrc: Ssrc(track.track.ssrc),
            ntp_time,
            rtp_time,
            packet_count: track.packets_sent,
            octet_count: track.octets_sent,
            reports: Items::default(),
        };
        self.send_rtcp(&[Rtcp::SenderReport(sr)]);
    }
}

#[cfg(test)]
mod tests {
    use rtp::rtcp::NackPair;

    use super::*;
    use crate::control::{RtxStream, SessionRole};
    use crate::session::test_support::{
        connected_with_test_keys, layer_packet, peer_context, publisher_spec, source_packet,
    };

    /// A connected player of one video track (SSRC 0x5eed, PT 96), with fixed SRTP keys.
    fn connected_player() -> Session {
        connected_player_with(None)
    }

    /// [`connected_player`] with `rtx` negotiated.
    fn connected_player_with(rtx: Option<RtxStream>) -> Session {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Player {
            tracks: vec![PlayedTrack {
                kind: MediaKind::Video,
                pt: 96,
                ssrc: 0x5eed,
                rtx,
                transport_cc: None,
                layers: None,
            }],
        };
        let now = Instant::now();
        let session = connected_with_test_keys(spec, now);
        assert!(session.is_connected());
        session
    }

    /// A NACK of `media_ssrc` for packet `seq`, with room for the SRTCP overhead after it.
    fn nack_for(media_ssrc: u32, seq: u16) -> Vec<u8> {
        let pairs = [NackPair { pid: seq, blp: 0 }];
        let nack = Rtcp::Nack(Nack {
            sender_ssrc: Ssrc(9),
            media_ssrc: Ssrc(media_ssrc),
            pairs: Items::from_slice(&pairs),
        });
        let mut buf = vec![0u8; nack.encoded_len() + 20];
        nack.write_to(&mut buf).unwrap();
        buf
    }

    #[test]
    fn a_retransmission_is_the_original_datagram_and_only_for_packets_the_player_was_sent() {
        let mut player = connected_player();
        let mut sent = Vec::new();
        for seq in 100..105u16 {
            let mut out = [0u8; 1500];
            let n = player.write_rtp(
                Instant::now(),
                MediaKind::Video,
                &source_packet(1, seq),
                &mut out,
            );
            assert!(n > 0);
            sent.push(out[..n].to_vec());
        }
        // The same number, timestamp and SRTP index: byte for byte the first datagram.
        let mut out = [0u8; 1500];
        let n = player.write_retransmission(
            Instant::now(),
            MediaKind::Video,
            &source_packet(1, 102),
            &mut out,
        );
        assert_eq!(&out[..n], sent[2].as_slice());
        // Not sent to this player (before it joined, not yet, another source): nothing.
        for (ssrc, seq) in [(1, 99), (1, 105), (2, 102)] {
            let n = player.write_retransmission(
                Instant::now(),
                MediaKind::Video,
                &source_packet(ssrc, seq),
                &mut out,
            );
            assert_eq!(n, 0, "ssrc {ssrc} seq {seq}");
        }
        assert_eq!(
            player.write_retransmission(
                Instant::now(),
                MediaKind::Audio,
                &source_packet(1, 102),
                &mut out
            ),
            0
        );
        // The mapping is untouched: the next packet follows on.
        let n = player.write_rtp(
            Instant::now(),
            MediaKind::Video,
            &source_packet(1, 105),
            &mut out,
        );
        let header = RtpHeader::parse(&out[..n]).unwrap();
        let first = RtpHeader::parse(&sent[0]).unwrap();
        assert_eq!(
            header.sequence_number(),
            first.sequence_number().wrapping_add(5)
        );
        assert!(player.plays(MediaKind::Video) && !player.plays(MediaKind::Audio));
    }

    #[test]
    fn a_player_with_rtx_gets_what_it_lost_on_its_rtx_stream() {
        let rtx = RtxStream {
            pt: 97,
            ssrc: 0x7e57,
        };
        let mut player = connected_player_with(Some(rtx));
        let mut rx = peer_context(true);
        let mut sent = Vec::new();
        for seq in 100..105u16 {
            let mut out = [0u8; 1500];
            let n = player.write_rtp(
                Instant::now(),
                MediaKind::Video,
                &source_packet(1, seq),
                &mut out,
            );
            let n = rx.unprotect_rtp(&mut out[..n]).unwrap();
            sent.push(out[..n].to_vec());
        }
        let mut rtx_seq = None;
        for (lost, original) in [(102u16, &sent[2]), (100, &sent[0])] {
            let mut out = [0u8; 1500];
            let n = player.write_retransmission(
                Instant::now(),
                MediaKind::Video,
                &source_packet(1, lost),
                &mut out,
            );
            let n = rx
                .unprotect_rtp(&mut out[..n])
                .expect("decrypts as the player would");
            let header = RtpHeader::parse(&out[..n]).unwrap();
            let original = RtpHeader::parse(original).unwrap();
            assert_eq!(header.ssrc(), Ssrc(0x7e57));
            assert_eq!(header.payload_type(), Pt::new(97));
            assert_eq!(header.timestamp(), original.timestamp());
            let osn = u16::from_be_bytes([header.payload()[0], header.payload()[1]]);
            assert_eq!(
                osn,
                original.sequence_number(),
                "the number the player lost"
            );
            assert_eq!(&header.payload()[2..], original.payload());
            // Its own numbers, one after the other.
            let expected = rtx_seq.map_or(header.sequence_number(), |s: u16| s.wrapping_add(1));
            assert_eq!(header.sequence_number(), expected);
            rtx_seq = Some(header.sequence_number());
        }
        // Still only what the current mapping wrote.
        let mut out = [0u8; 1500];
        for (ssrc, seq) in [(1, 99), (1, 105), (2, 102)] {
            let n = player.write_retransmission(
                Instant::now(),
                MediaKind::Video,
                &source_packet(ssrc, seq),
                &mut out,
            );
            assert_eq!(n, 0, "ssrc {ssrc} seq {seq}");
        }
        // A NACK naming the RTX stream asks for nothing; one naming the media stream does.
        let mut tx = peer_context(false);
        for (ssrc, asks) in [(0x7e57, false), (0x5eed, true)] {
            let lost = RtpHeader::parse(&sent[1]).unwrap().sequence_number();
            let mut buf = nack_for(ssrc, lost);
            let len = buf.len() - 20;
            let n = tx.protect_rtcp(&mut buf, len).unwrap();
            player
                .handle_srtcp(
                    Instant::now(),
                    "127.0.0.1:5000".parse().unwrap(),
                    &mut buf[..n],
                )
                .unwrap();
            let asked = std::iter::from_fn(|| player.poll_event())
                .any(|e| matches!(e, SessionEvent::RetransmissionRequested { .. }));
            assert_eq!(asked, asks, "NACK for {ssrc:#x}");
        }
    }

    #[test]
    fn resends_are_budgeted_per_player() {
        let mut budget = ResendBudget::full();
        let start = Instant::now();
        let granted = (0..1000).filter(|_| budget.take(start)).count() as u64;
        assert_eq!(granted, RESEND_BURST, "a burst takes the bucket, no more");
        // Refilled at the rate, with no fraction lost between calls.
        let mut more = 0;
        for ms in 1..=1000u64 {
            while budget.take(start + Duration::from_millis(ms)) {
                more += 1;
            }
        }
        assert_eq!(more, RESEND_RATE_PER_SEC, "one second earns the rate");
    }

    #[test]
    fn a_switching_player_changes_layer_at_the_targets_keyframe_with_continuous_numbers() {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Player {
            tracks: vec![PlayedTrack {
                kind: MediaKind::Video,
                pt: 96,
                ssrc: 0x5eed,
                rtx: None,
                transport_cc: None,
                layers: Some(crate::control::PlayerLayers {
                    count: 2,
                    target: 1,
                    pinned: false,
                }),
            }],
        };
        let now = Instant::now();
        let mut player = connected_with_test_keys(spec, now);
        let mut rx = peer_context(true);
        // Layer 0 is SSRC 7 (seq from 100), layer 1 SSRC 9 (seq from 5000).
        let mut sent = Vec::new();
        let mut offer = |player: &mut Session, layer: u8, seq: u16, key: bool| {
            let ssrc = if layer == 0 { 7 } else { 9 };
            let plain = layer_packet(100, ssrc, seq, None, key);
            if player.take_layer(layer, key) == LayerDecision::Drop {
                return;
            }
            let mut out = [0u8; 1500];
            let n = player.write_rtp(now, MediaKind::Video, &plain, &mut out);
            assert!(n > 0);
            let n = rx.unprotect_rtp(&mut out[..n]).unwrap();
            let header = RtpHeader::parse(&out[..n]).unwrap();
            sent.push((
                header.sequence_number(),
                plain == out[..n].to_vec(),
                key,
                layer,
            ));
        };
        offer(&mut player, 0, 100, true);
        offer(&mut player, 1, 5000, false);
        offer(&mut player, 1, 5001, true);
        offer(&mut player, 0, 101, false);
        offer(&mut player, 1, 5002, false);
        assert!(player.retarget_layer(0));
        offer(&mut player, 1, 5003, false);
        offer(&mut player, 0, 102, false);
        offer(&mut player, 0, 103, true);
        offer(&mut player, 1, 5004, true);
        offer(&mut player, 0, 104, false);
        let layers: Vec<(bool, u8)> = sent
            .iter()
            .map(|&(_, _, key, layer)| (key, layer))
            .collect();
        // Started at layer 1's keyframe; back to 0 at layer 0's keyframe only.
        assert_eq!(
            layers,
            [(true, 1), (false, 1), (false, 1), (true, 0), (false, 0)]
        );
        let seqs: Vec<u16> = sent.iter().map(|s| s.0).collect();
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1), "{seqs:?}");
        }
    }

    #[test]
    fn a_players_traffic_counts_what_was_sent_first_and_again() {
        let mut player = connected_player();
        let now = Instant::now();
        let mut total = 0;
        for seq in 10..13u16 {
            let mut out = [0u8; 1500];
            total += player.write_rtp(now, MediaKind::Video, &source_packet(1, seq), &mut out);
        }
        let mut out = [0u8; 1500];
        total +=
            player.write_retransmission(now, MediaKind::Video, &source_packet(1, 11), &mut out);
        // Not a packet this player was sent: nothing written, nothing counted.
        let none =
            player.write_retransmission(now, MediaKind::Video, &source_packet(1, 99), &mut out);
        assert_eq!(none, 0);
        let traffic = player.traffic();
        assert_eq!((traffic.packets_out, traffic.bytes_out), (4, total as u64));
        assert_eq!((traffic.packets_in, traffic.bytes_in), (0, 0));
    }
}
