//! A player's side of a session: what rtcdn sends it and what it asks for.
//!
//! Each of its tracks rewrites forwarded packets into its own SSRC, payload type, sequence
//! and timestamp space; packets it reports lost are sent again from the node's cache (on its
//! RTX stream when negotiated), within a budget; with simulcast it switches layers at
//! keyframes; its transport-cc feedback and REMB drive a bandwidth estimate; and the
//! publisher's sender reports are translated into its timestamps.
//!
//! A relay is a player to the node it sends to. When that node took every simulcast layer,
//! each layer is a track of its own (its SSRC, numbering, retransmission stream and sender
//! reports), its packets naming the layer's rid (see [`super::layer_rid`]).

use std::time::{Duration, Instant};

use rtp::rtcp::{Items, Nack, Rtcp, SenderReport};
use rtp::{Pt, RtpHeader, RtpRewriter, Ssrc};

use super::layer_rid::LayerRid;
use super::rtx::RtxSender;
use super::transport_cc::PlayerFeedback;
use super::{LostPackets, RoleState, Session, SessionEvent, SplitMix64};
use crate::bwe::BweConfig;
use crate::control::{PlayedTrack, PlayerLayer, RelayedLayers, RtxStream};
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
    /// A relayed simulcast layer's rid, which each of its packets carries.
    rid: Option<LayerRid>,
}

/// What a session keeps of its player (or of the relay it sends a stream through).
pub(super) struct PlayerState {
    tracks: [Option<PlayerTrack>; 2],
    /// A relay's video layers when it sends every one on its own SSRC, lowest first (the
    /// video track above then only describes them); empty otherwise.
    relayed: Vec<PlayerTrack>,
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

impl PlayerTrack {
    /// A track of its own numbering, drawn from `random`.
    fn new(track: PlayedTrack, rid: Option<LayerRid>, random: &mut SplitMix64) -> PlayerTrack {
        let rewriter = RtpRewriter::new(
            Ssrc(track.ssrc),
            Pt::new(track.pt),
            random.next() as u16,
            random.next() as u32,
        );
        let rtx = track
            .rtx
            .map(|rtx| RtxSender::new(Ssrc(rtx.ssrc), Pt::new(rtx.pt), random.next() as u16));
        PlayerTrack {
            track,
            rewriter,
            rtx,
            packets_sent: 0,
            octets_sent: 0,
            rid,
        }
    }
}

impl PlayerState {
    /// The state of a player of `tracks` (a relay's, with the video's `relayed` layers): its
    /// sequence and timestamp bases (and its RTX streams') drawn from `random`, track by
    /// track, then layer by layer.
    pub(super) fn new(
        tracks: Vec<PlayedTrack>,
        relayed: Option<RelayedLayers>,
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
            let slot = kind_index(track.kind);
            slots[slot] = Some(PlayerTrack::new(track, None, random));
        }
        let video = slots[kind_index(MediaKind::Video)].as_ref();
        let relayed = match (relayed, video) {
            (Some(relayed), Some(video)) => relayed_tracks(&relayed, &video.track, random),
            _ => Vec::new(),
        };
        PlayerState {
            tracks: slots,
            relayed,
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
        if !self.relayed.is_empty() {
            return self.relayed.len();
        }
        self.tracks
            .iter()
            .flatten()
            .find_map(|t| t.track.layers)
            .map_or(1, |l| usize::from(l.count).clamp(1, MAX_LAYERS))
    }

    /// The track whose packets are numbered as the peer knows `ssrc`, and the layer its
    /// numbers belong to: a relayed layer's, else the layer the player is sent now.
    fn output_by_ssrc(&self, ssrc: u32) -> Option<(&PlayerTrack, u8)> {
        let relayed = self
            .relayed
            .iter()
            .zip(0u8..)
            .find(|(t, _)| t.track.ssrc == ssrc);
        // The relayed layers first: the video track describing them has the highest one's SSRC.
        relayed.or_else(|| {
            let track = self
                .tracks
                .iter()
                .flatten()
                .find(|t| t.track.ssrc == ssrc)?;
            let layer = match track.track.kind {
                MediaKind::Video => self.layers.and_then(|l| l.current()).unwrap_or(0),
                MediaKind::Audio => 0,
            };
            Some((track, layer))
        })
    }
}

/// The track of `tracks` (or a relay's `relayed` layers) a packet of `kind` and simulcast
/// `layer` is written to. Over the fields, not the state: the caller goes on using the others.
fn output<'a>(
    tracks: &'a mut [Option<PlayerTrack>; 2],
    relayed: &'a mut [PlayerTrack],
    (kind, layer): (MediaKind, u8),
) -> Option<&'a mut PlayerTrack> {
    match kind {
        MediaKind::Video if !relayed.is_empty() => relayed.get_mut(usize::from(layer)),
        _ => tracks[kind_index(kind)].as_mut(),
    }
}

/// A relay's video layers, each a track of its own as `relayed` says, cut from the `video`
/// track: its payload type, and its retransmission payload type when the layers have
/// retransmission streams. No layers when a rid cannot be written (the relay's offer never
/// makes such).
fn relayed_tracks(
    relayed: &RelayedLayers,
    video: &PlayedTrack,
    random: &mut SplitMix64,
) -> Vec<PlayerTrack> {
    let rids: Option<Vec<LayerRid>> = relayed
        .layers
        .iter()
        .take(MAX_LAYERS)
        .map(|layer| LayerRid::new(&layer.rid, relayed.rid_ext, relayed.repaired_rid_ext))
        .collect();
    let Some(rids) = rids else {
        return Vec::new();
    };
    let rtx_pt = video.rtx.map(|rtx| rtx.pt);
    relayed
        .layers
        .iter()
        .zip(rids)
        .map(|(layer, rid)| {
            let rtx = match (rtx_pt, layer.rtx_ssrc, relayed.repaired_rid_ext) {
                (Some(pt), Some(ssrc), Some(_)) => Some(RtxStream { pt, ssrc }),
                _ => None,
            };
            let track = PlayedTrack {
                ssrc: layer.ssrc,
                rtx,
                layers: None,
                ..video.clone()
            };
            PlayerTrack::new(track, Some(rid), random)
        })
        .collect()
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

    /// A player's bandwidth estimate once its estimator has measured what the player
    /// acknowledges (see [`PlayerFeedback::measured_estimate_bps`]): what its simulcast layer is
    /// chosen by. `None` before that, without transport-cc, and for a publisher.
    pub fn measured_bandwidth_estimate(&self) -> Option<u64> {
        match &self.role {
            RoleState::Player(player) => player
                .transport_cc
                .as_deref()
                .and_then(PlayerFeedback::measured_estimate_bps),
            RoleState::Publisher(_) => None,
        }
    }

    /// Whether a player's transport-cc feedback shows its link overloaded now (see
    /// [`PlayerFeedback::congested`]); false without transport-cc.
    pub fn bandwidth_congested(&self) -> bool {
        match &self.role {
            RoleState::Player(player) => player
                .transport_cc
                .as_deref()
                .is_some_and(PlayerFeedback::congested),
            RoleState::Publisher(_) => false,
        }
    }

    /// A player's NACK names packets in its own sequence space; the publisher knows them by its
    /// own numbers.
    pub(super) fn handle_nack(&mut self, nack: &Nack<'_>) {
        let RoleState::Player(player) = &self.role else {
            return;
        };
        let Some((track, layer)) = player.output_by_ssrc(nack.media_ssrc.0) else {
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
                    layer,
                    seqs,
                });
        }
    }

    /// A player asked for a keyframe (PLI, FIR) of the streams `media_ssrcs`: of its target
    /// layer, or a relay of every layer of the layers those name.
    pub(super) fn handle_keyframe_request(&mut self, media_ssrcs: impl IntoIterator<Item = Ssrc>) {
        let RoleState::Player(player) = &self.role else {
            return;
        };
        if player.relayed.is_empty() {
            let layer = player.layers.map_or(0, |l| l.target());
            self.events
                .push_back(SessionEvent::KeyframeRequested { layer });
            return;
        }
        for ssrc in media_ssrcs {
            let named = player.relayed.iter().position(|t| t.track.ssrc == ssrc.0);
            if let Some(layer) = named.and_then(|l| u8::try_from(l).ok()) {
                self.events
                    .push_back(SessionEvent::KeyframeRequested { layer });
            }
        }
    }

    /// Writes a forwarded packet of `kind` (and simulcast `layer`, 0 without simulcast) for
    /// this player into `out`: copied from `plain`, rewritten to the player's SSRC, payload
    /// type, sequence and timestamp, and encrypted. Returns the datagram length, or 0 when this
    /// player does not take the packet (not connected, no such track).
    pub fn write_rtp(
        &mut self,
        now: Instant,
        (kind, layer): (MediaKind, u8),
        plain: &[u8],
        out: &mut [u8],
    ) -> usize {
        let n = self.write_player_rtp(now, (kind, layer), plain, out, false);
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
        (kind, layer): (MediaKind, u8),
        plain: &[u8],
        out: &mut [u8],
    ) -> usize {
        let n = self.write_player_rtp(now, (kind, layer), plain, out, true);
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

    /// The player's client chose its simulcast layer: pinned to `Some(layer)` (one of the
    /// stream's layers), or `None` to let its bandwidth estimate choose again. Returns whether
    /// the target changed (its keyframe is to be asked for); false without simulcast or for a
    /// layer the stream does not have.
    pub fn pin_layer(&mut self, layer: Option<u8>) -> bool {
        let count = self.video_layer_count();
        match &mut self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) if layer.is_none_or(|l| usize::from(l) < count) => layers.pin(layer),
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

    /// A simulcast player's layer as it is reported to signalling; `None` without simulcast.
    pub fn player_layer(&self) -> Option<PlayerLayer> {
        match &self.role {
            RoleState::Player(PlayerState {
                layers: Some(layers),
                ..
            }) => Some(PlayerLayer {
                current: layers.current(),
                target: layers.target(),
                pinned: layers.pinned(),
            }),
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

    /// How many simulcast layers a relay sends each on its own SSRC; 0 for a player, or a
    /// relay of one video stream.
    pub fn relayed_layers(&self) -> u8 {
        match &self.role {
            RoleState::Player(player) => player.relayed.len() as u8,
            RoleState::Publisher(_) => 0,
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
        (kind, layer): (MediaKind, u8),
        plain: &[u8],
        out: &mut [u8],
        only_if_written: bool,
    ) -> usize {
        let (RoleState::Player(player), Some(srtp)) = (&mut self.role, self.srtp_tx.as_mut())
        else {
            return 0;
        };
        let Some(track) = output(&mut player.tracks, &mut player.relayed, (kind, layer)) else {
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
                let len = match track.rid {
                    Some(rid) => match rid.write_repair(out, len) {
                        Ok(len) => len,
                        Err(_) => return 0,
                    },
                    None => len,
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
        // A relayed layer: the same element every time, so a retransmission is the same bytes.
        // (A relay negotiates no transport-cc, whose element this would drop.)
        let len = match track.rid {
            Some(rid) => match rid.write_media(out, len) {
                Ok(len) => len,
                Err(_) => return 0,
            },
            None => len,
        };
        if track.rewriter.rewrite_at(now, &mut out[..len]).is_err() {
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
    /// its own timestamp base (a relay of every layer sends each layer's).
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
        // A relay of every layer reports each on its own SSRC.
        let Some(track) = output(&mut player.tracks, &mut player.relayed, (kind, layer)) else {
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
    use crate::control::{PlayerLayers, RtxStream, SessionRole};
    use crate::session::test_support::{
        connected_with_test_keys, extension_elements as elements, layer_packet, peer_context,
        publisher_spec, source_packet,
    };

    /// A connected player of one video track (SSRC 0x5eed, PT 96), with fixed SRTP keys.
    fn connected_player() -> Session {
        connected_player_with(None)
    }

    /// [`connected_player`] with `rtx` negotiated.
    fn connected_player_with(rtx: Option<RtxStream>) -> Session {
        let session = connected_video_player(rtx, None, None);
        assert!(session.is_connected());
        session
    }

    /// A connected player of one video track (SSRC 0x5eed, PT 96) with `rtx`, transport-cc
    /// (its extension id) and simulcast `layers` as given, and fixed SRTP keys.
    fn connected_video_player(
        rtx: Option<RtxStream>,
        transport_cc: Option<u8>,
        layers: Option<PlayerLayers>,
    ) -> Session {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Player {
            tracks: vec![PlayedTrack {
                kind: MediaKind::Video,
                pt: 96,
                ssrc: 0x5eed,
                rtx,
                transport_cc,
                layers,
            }],
        };
        connected_with_test_keys(spec, Instant::now())
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
                (MediaKind::Video, 0),
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
            (MediaKind::Video, 0),
            &source_packet(1, 102),
            &mut out,
        );
        assert_eq!(&out[..n], sent[2].as_slice());
        // Not sent to this player (before it joined, not yet, another source): nothing.
        for (ssrc, seq) in [(1, 99), (1, 105), (2, 102)] {
            let n = player.write_retransmission(
                Instant::now(),
                (MediaKind::Video, 0),
                &source_packet(ssrc, seq),
                &mut out,
            );
            assert_eq!(n, 0, "ssrc {ssrc} seq {seq}");
        }
        assert_eq!(
            player.write_retransmission(
                Instant::now(),
                (MediaKind::Audio, 0),
                &source_packet(1, 102),
                &mut out
            ),
            0
        );
        // The mapping is untouched: the next packet follows on.
        let n = player.write_rtp(
            Instant::now(),
            (MediaKind::Video, 0),
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
                (MediaKind::Video, 0),
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
                (MediaKind::Video, 0),
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
                (MediaKind::Video, 0),
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
        // Both NACKs came from the player, whether they named anything or not.
        assert_eq!(player.traffic().nacks_in, 2);
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
    fn a_player_pins_only_a_layer_its_stream_has_and_reports_its_layer() {
        let layers = PlayerLayers {
            count: 3,
            target: 2,
            pinned: false,
        };
        let mut player = connected_video_player(None, Some(3), Some(layers));
        let layer = |current, target, pinned| {
            Some(PlayerLayer {
                current,
                target,
                pinned,
            })
        };
        assert_eq!(player.player_layer(), layer(None, 2, false));
        assert!(!player.pin_layer(Some(3)), "the stream has layers 0 to 2");
        assert!(player.pin_layer(Some(0)));
        assert_eq!(player.player_layer(), layer(None, 0, true));
        assert_eq!(
            player.layer_choice(),
            None,
            "pinned: the estimate does not move it"
        );
        assert!(!player.pin_layer(None));
        assert_eq!(player.layer_choice(), Some((3, 0)));
        // Transport-cc is negotiated, but nothing measured yet: no estimate to choose by.
        assert_eq!(player.measured_bandwidth_estimate(), None);
        assert!(player.bandwidth_estimate().is_some());
    }

    #[test]
    fn a_switching_player_changes_layer_at_the_targets_keyframe_with_continuous_numbers() {
        let layers = PlayerLayers {
            count: 2,
            target: 1,
            pinned: false,
        };
        let now = Instant::now();
        let mut player = connected_video_player(None, None, Some(layers));
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
            let n = player.write_rtp(now, (MediaKind::Video, 0), &plain, &mut out);
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
            total += player.write_rtp(now, (MediaKind::Video, 0), &source_packet(1, seq), &mut out);
        }
        let mut out = [0u8; 1500];
        total += player.write_retransmission(
            now,
            (MediaKind::Video, 0),
            &source_packet(1, 11),
            &mut out,
        );
        // Not a packet this player was sent: nothing written, nothing counted.
        let none = player.write_retransmission(
            now,
            (MediaKind::Video, 0),
            &source_packet(1, 99),
            &mut out,
        );
        assert_eq!(none, 0);
        let traffic = player.traffic();
        assert_eq!((traffic.packets_out, traffic.bytes_out), (4, total as u64));
        assert_eq!((traffic.packets_in, traffic.bytes_in), (0, 0));
    }

    /// A connected relay of two simulcast layers, `l` (SSRC 0x1000, rtx 0x1001) and `h` (the
    /// video track's 0x3000, rtx 0x3001), on PT 96 (rtx 97), the rid in extension 10, the
    /// repaired one in 11; its edge at 127.0.0.1:5000.
    fn relay_of_two_layers() -> Session {
        let layer = |rid: &str, ssrc| crate::control::RelayedLayer {
            rid: rid.into(),
            ssrc,
            rtx_ssrc: Some(ssrc + 1),
        };
        let mut spec = publisher_spec();
        spec.role = SessionRole::Relay {
            tracks: vec![PlayedTrack {
                kind: MediaKind::Video,
                pt: 96,
                ssrc: 0x3000,
                rtx: Some(RtxStream {
                    pt: 97,
                    ssrc: 0x3001,
                }),
                transport_cc: None,
                layers: None,
            }],
            remote_candidates: vec!["127.0.0.1:5000".parse().unwrap()],
            path: crate::control::RelayPath::Udp,
            layers: Some(crate::control::RelayedLayers {
                rid_ext: 10,
                repaired_rid_ext: Some(11),
                layers: vec![layer("l", 0x1000), layer("h", 0x3000)],
            }),
        };
        let mut relay = connected_with_test_keys(spec, Instant::now());
        relay.remote = Some("127.0.0.1:5000".parse().unwrap());
        assert_eq!(relay.poll_event(), Some(SessionEvent::Connected));
        relay
    }

    /// Hands a player (or relay) RTCP from its peer; returns the events it made.
    fn rtcp_in(
        session: &mut Session,
        tx: &mut rtp::srtp::SrtpContext,
        rtcp: Rtcp<'_>,
    ) -> Vec<SessionEvent> {
        let mut buf = vec![0u8; rtcp.encoded_len() + 32];
        let len = rtcp.write_to(&mut buf).unwrap();
        let n = tx.protect_rtcp(&mut buf, len).unwrap();
        let from = "127.0.0.1:5000".parse().unwrap();
        session
            .handle_srtcp(Instant::now(), from, &mut buf[..n])
            .unwrap();
        std::iter::from_fn(|| session.poll_event()).collect()
    }

    #[test]
    fn a_relay_of_every_layer_sends_each_on_its_own_ssrc_naming_its_rid() {
        let mut relay = relay_of_two_layers();
        let now = Instant::now();
        assert_eq!(relay.relayed_layers(), 2);
        assert_eq!(relay.video_layer_count(), 2);
        assert_eq!(relay.video_layers(), None, "no layer is chosen");
        let mut rx = peer_context(true);
        // Layer 0 from the publisher's SSRC 7, layer 1 from 9 (with the publisher's own rid
        // element, which gives way): every packet goes, mid-GOP too.
        let mut sent = Vec::new();
        let mut offer = |relay: &mut Session, layer: u8, seq: u16| {
            let (ssrc, rid) = if layer == 0 {
                (7, None)
            } else {
                (9, Some((3, &b"hi"[..])))
            };
            let plain = layer_packet(100, ssrc, seq, rid, false);
            assert_eq!(relay.take_layer(layer, false), LayerDecision::Forward);
            let mut out = [0u8; 1500];
            let n = relay.write_rtp(now, (MediaKind::Video, layer), &plain, &mut out);
            let n = rx.unprotect_rtp(&mut out[..n]).unwrap();
            let header = RtpHeader::parse(&out[..n]).unwrap();
            let source = RtpHeader::parse(&plain).unwrap();
            assert_eq!(header.payload(), source.payload());
            assert_eq!(header.payload_type(), Pt::new(96));
            sent.push((
                header.ssrc().0,
                header.sequence_number(),
                elements(&header),
                header.timestamp(),
            ));
        };
        for (layer, seq) in [
            (0, 100),
            (1, 5000),
            (0, 101),
            (1, 5001),
            (1, 5002),
            (0, 102),
        ] {
            offer(&mut relay, layer, seq);
        }
        for (ssrc, rid) in [(0x1000, b"l"), (0x3000, b"h")] {
            let seqs: Vec<u16> = sent
                .iter()
                .filter(|s| s.0 == ssrc)
                .inspect(|s| assert_eq!(s.2, [(10, rid.to_vec())], "only the layer's rid"))
                .map(|s| s.1)
                .collect();
            assert_eq!(seqs.len(), 3);
            for pair in seqs.windows(2) {
                assert_eq!(pair[1], pair[0].wrapping_add(1), "{ssrc:#x}: {seqs:?}");
            }
        }

        // The edge's NACK names a layer's SSRC: its numbers are that layer's.
        let mut tx = peer_context(false);
        let lost_l = sent[2].1;
        let pairs = [NackPair {
            pid: lost_l,
            blp: 0,
        }];
        let nack = |media_ssrc| {
            Rtcp::Nack(Nack {
                sender_ssrc: Ssrc(9),
                media_ssrc: Ssrc(media_ssrc),
                pairs: Items::from_slice(&pairs),
            })
        };
        let events = rtcp_in(&mut relay, &mut tx, nack(0x1000));
        assert_eq!(
            events,
            [SessionEvent::RetransmissionRequested {
                kind: MediaKind::Video,
                layer: 0,
                seqs: [101].into_iter().collect(),
            }]
        );
        // Answered on the layer's own retransmission stream, repairing its rid.
        let mut out = [0u8; 1500];
        let plain = layer_packet(100, 7, 101, None, false);
        let n = relay.write_retransmission(now, (MediaKind::Video, 0), &plain, &mut out);
        let n = rx.unprotect_rtp(&mut out[..n]).unwrap();
        let header = RtpHeader::parse(&out[..n]).unwrap();
        assert_eq!(
            (header.ssrc(), header.payload_type()),
            (Ssrc(0x1001), Pt::new(97))
        );
        assert_eq!(elements(&header), [(11, b"l".to_vec())]);
        assert_eq!(&header.payload()[..2], &lost_l.to_be_bytes());
        // Layer 1's source never wrote it: nothing.
        let n = relay.write_retransmission(now, (MediaKind::Video, 1), &plain, &mut out);
        assert_eq!(n, 0);

        // Keyframe requests name a layer's SSRC too.
        let pli = |media_ssrc| {
            Rtcp::Pli(rtp::rtcp::Pli {
                sender_ssrc: Ssrc(9),
                media_ssrc: Ssrc(media_ssrc),
            })
        };
        let keyframe = |layer| SessionEvent::KeyframeRequested { layer };
        assert_eq!(rtcp_in(&mut relay, &mut tx, pli(0x3000)), [keyframe(1)]);
        assert!(rtcp_in(&mut relay, &mut tx, pli(0x1001)).is_empty());
        let entries = [0x1000, 0x3000].map(|ssrc| rtp::rtcp::FirEntry {
            ssrc: Ssrc(ssrc),
            seq_nr: 1,
        });
        let fir = Rtcp::Fir(rtp::rtcp::Fir {
            sender_ssrc: Ssrc(9),
            entries: Items::from_slice(&entries),
        });
        assert_eq!(
            rtcp_in(&mut relay, &mut tx, fir),
            [keyframe(0), keyframe(1)]
        );

        // Each layer's sender report goes out on its SSRC, in its timestamps.
        relay.handle_publisher_sender_report(MediaKind::Video, 0, 1 << 40, 102 * 3000);
        let mut t = relay.poll_transmit().expect("a sender report");
        let n = rx.unprotect_rtcp(&mut t.contents).unwrap();
        let reports: Vec<_> = rtp::rtcp::RtcpIter::new(&t.contents[..n])
            .flatten()
            .filter_map(|p| match p {
                Rtcp::SenderReport(sr) => Some((sr.sender_ssrc, sr.rtp_time, sr.packet_count)),
                _ => None,
            })
            .collect();
        // Packet 102 (source timestamp 102 * 3000) went out last on layer 0.
        assert_eq!(sent[5].0, 0x1000);
        assert_eq!(reports, [(Ssrc(0x1000), sent[5].3, 3)]);
    }

    #[test]
    fn a_player_asks_for_its_target_layers_keyframe_whatever_the_request_names() {
        let layers = PlayerLayers {
            count: 3,
            target: 1,
            pinned: true,
        };
        let mut player = connected_video_player(None, None, Some(layers));
        assert_eq!(player.poll_event(), Some(SessionEvent::Connected));
        let mut tx = peer_context(false);
        let pli = Rtcp::Pli(rtp::rtcp::Pli {
            sender_ssrc: Ssrc(9),
            media_ssrc: Ssrc(0x1234),
        });
        assert_eq!(
            rtcp_in(&mut player, &mut tx, pli),
            [SessionEvent::KeyframeRequested { layer: 1 }]
        );
        assert_eq!(player.traffic().keyframe_requests_in, 1);
    }
}
