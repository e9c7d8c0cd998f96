//! Typed messages between the control plane and the media cores. Threads share no session
//! state: a core owns its sessions outright, and everything else crosses through these messages.

use std::fmt;

use crate::dtls::DtlsRole;
use crate::sdp::MediaKind;

/// A session (one WebRTC peer connection), unique within the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// A published stream, unique within the node for its lifetime (a name can be reused later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// A media core (thread), `0..threads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub usize);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A track a publisher sends, identified on the wire by its payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// Audio or video.
    pub kind: MediaKind,
    /// Payload type the publisher uses for it.
    pub pt: u8,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Codec name as in rtpmap ("VP8", "H264", "opus", ...).
    pub codec: String,
    /// Payload type of the track's retransmission stream (RFC 4588), when negotiated: its
    /// packets are turned back into media packets on arrival.
    pub rtx_pt: Option<u8>,
    /// `(media, rtx)` SSRCs of the offer's `a=ssrc-group:FID`, when rtx is negotiated and the
    /// offer announced them.
    pub rtx_ssrcs: Option<(u32, u32)>,
    /// Header extension id of the transport-wide sequence number, when transport-cc is
    /// negotiated: rtcdn then sends the publisher transport-cc feedback for its bandwidth
    /// estimate (one sequence space for every track of the transport).
    pub transport_cc: Option<u8>,
    /// The simulcast layers of a video track, when the publisher sends several.
    pub simulcast: Option<SimulcastLayers>,
}

/// A publisher's simulcast layers (RFC 8853) of one video track: several SSRCs on the same
/// payload type, told apart by the RTP stream id extension (RFC 8852) their packets carry.
///
/// The layers are numbered by their position in the offer's `a=simulcast:send` list, and the
/// last is taken as the highest. That is the order Chromium writes for `sendEncodings` and
/// the one its own examples (and LiveKit's, and the WHIP pages rtcdn ships) use: smallest
/// first, `scaleResolutionDownBy` 4, 2, 1. Measuring the layers' bitrates would not depend on
/// the page's order, but it would make the order change when a layer pauses or its bitrate
/// dips, and a player pinned to `low` must stay on the same rid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastLayers {
    /// The rids, layer 0 first.
    pub rids: Vec<String>,
    /// The RTP stream id extension's id: the first packets of each layer's SSRC carry it.
    pub rid_ext: u8,
    /// The repaired RTP stream id extension's id: the first packets of each layer's RTX SSRC
    /// carry it.
    pub repaired_rid_ext: Option<u8>,
}

impl SimulcastLayers {
    /// The layer whose rid is `rid`.
    pub fn layer(&self, rid: &[u8]) -> Option<u8> {
        let index = self.rids.iter().position(|r| r.as_bytes() == rid)?;
        u8::try_from(index).ok()
    }
}

/// A track sent to a player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayedTrack {
    /// Audio or video.
    pub kind: MediaKind,
    /// Payload type negotiated with this player.
    pub pt: u8,
    /// SSRC announced to this player in the answer.
    pub ssrc: u32,
    /// The retransmission stream negotiated with this player: the packets it reports lost are
    /// sent again on it. Without one they are sent again as they first went out.
    pub rtx: Option<RtxStream>,
    /// Header extension id of the transport-wide sequence number, when transport-cc is
    /// negotiated: every packet to the player carries rtcdn's own number, and the player's
    /// feedback drives its bandwidth estimate (see [`crate::bwe`]).
    pub transport_cc: Option<u8>,
    /// The layer to send, when the stream's video is simulcast: the player gets one layer.
    pub layers: Option<PlayerLayers>,
}

/// Which simulcast layer a player gets (see [`crate::simulcast::LayerSwitch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerLayers {
    /// How many layers the stream has.
    pub count: u8,
    /// The layer to start on: the one the player asked for, else the highest.
    pub target: u8,
    /// The player asked for `target` (`?layer=`): its bandwidth estimate does not move it.
    pub pinned: bool,
}

impl PlayerLayers {
    /// The layers of a stream whose video has simulcast layers `rids` (lowest first), for a
    /// player that asked for `wanted`: a rid, or `low`, `mid` (the middle of three, else the
    /// lower) or `high`. `None` without simulcast; `Err` names what was not understood.
    pub fn choose(rids: &[String], wanted: Option<&str>) -> Result<Option<PlayerLayers>, String> {
        let count = match u8::try_from(rids.len()) {
            Ok(count) if count >= 2 => count,
            _ => return Ok(None),
        };
        let highest = count - 1;
        let target = match wanted {
            None => highest,
            Some(rid) if rids.iter().any(|r| r == rid) => {
                // Found just above, and at most u8::MAX layers exist.
                rids.iter().position(|r| r == rid).unwrap_or(0) as u8
            }
            Some("low") => 0,
            Some("mid") => (count - 1) / 2,
            Some("high") => highest,
            Some(other) => {
                return Err(format!(
                    "no layer \"{other}\": the stream's layers are {} (or low, mid, high)",
                    rids.join(", ")
                ))
            }
        };
        Ok(Some(PlayerLayers {
            count,
            target,
            pinned: wanted.is_some(),
        }))
    }
}

/// A retransmission stream (RFC 4588) sent to a player: announced in the answer with
/// `a=ssrc-group:FID <media> <rtx>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxStream {
    /// Its payload type (`apt` = the track's).
    pub pt: u8,
    /// Its SSRC.
    pub ssrc: u32,
}

/// What the session does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRole {
    /// Sends a stream to the node.
    Publisher { tracks: Vec<PublishedTrack> },
    /// Receives a stream from the node.
    Player { tracks: Vec<PlayedTrack> },
    /// Sends a stream published here on to another node (origin → edge), which treats it as an
    /// ordinary publisher. Media-wise a player; ICE-wise the controlling side, checking
    /// `remote_candidates` from the other node's answer.
    Relay {
        tracks: Vec<PlayedTrack>,
        remote_candidates: Vec<std::net::SocketAddr>,
        /// Over what the core reaches `remote_candidates`: a UDP socket of the relay's own, or
        /// a TCP connection it opens to the first of them (RFC 6544, the active side).
        path: RelayPath,
        /// Every simulcast layer of the video, each on its own SSRC, when the other node took
        /// them; `None`: the video as `tracks` says (one layer, or a stream without simulcast).
        layers: Option<RelayedLayers>,
    },
}

/// The transport of one relay session (`cdn.relay_transport` chooses; "auto" tries both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RelayPath {
    /// The edge's UDP host candidates, from a UDP socket of the relay's own.
    #[default]
    Udp,
    /// A TCP connection to the edge's passive ICE-TCP candidate, RFC 4571 framed.
    Tcp,
    /// Not WebRTC: an RTMP publish to the edge's RTMP listener (`cdn.stream_distribution`).
    Rtmp,
}

impl RelayPath {
    /// As logs and `/api/cdn` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayPath::Udp => "udp",
            RelayPath::Tcp => "tcp",
            RelayPath::Rtmp => "rtmp",
        }
    }
}

impl std::fmt::Display for RelayPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A relay's simulcast video when the other node took every layer (RFC 8853): each layer is
/// its own stream, and its packets name its rid in the RTP stream id extension (RFC 8852), so
/// the other node tells the layers apart as it does a browser's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedLayers {
    /// The RTP stream id extension's id: every packet of a layer carries it, as its only
    /// header extension.
    pub rid_ext: u8,
    /// The repaired RTP stream id extension's id: every retransmission (RFC 4588) of a layer
    /// carries it. `None` when the other node did not take it: the layers then have no
    /// retransmission streams.
    pub repaired_rid_ext: Option<u8>,
    /// The layers, lowest first, as the publisher numbers them.
    pub layers: Vec<RelayedLayer>,
}

/// One simulcast layer a relay sends (see [`RelayedLayers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedLayer {
    /// The publisher's rid of it: the other node's players pin layers by it.
    pub rid: String,
    /// The SSRC it is sent on.
    pub ssrc: u32,
    /// Its retransmission stream's SSRC (on the video track's rtx payload type), when there is
    /// one.
    pub rtx_ssrc: Option<u32>,
}

/// Everything a core needs to run one session. Negotiated by signalling.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The session.
    pub id: SessionId,
    /// The stream it publishes or plays.
    pub stream: StreamId,
    /// The stream's name, for logs.
    pub stream_name: String,
    /// Publisher or player, with its tracks.
    pub role: SessionRole,
    /// Our ICE credentials (in our answer).
    pub local_ice: ice::IceCredentials,
    /// The peer's ICE credentials (from its offer).
    pub remote_ice: ice::IceCredentials,
    /// SHA-256 fingerprint of the peer's DTLS certificate, from its offer.
    pub remote_fingerprint: [u8; 32],
    /// Our DTLS role (client when we answered `a=setup:active`).
    pub dtls_role: DtlsRole,
    /// The core the stream's publisher runs on (players ask it for keyframes).
    pub publisher_core: Option<CoreId>,
}

/// Signalling → core.
#[derive(Debug)]
pub enum CoreCommand {
    /// Start a session; its peer's first STUN request will find it by ICE ufrag.
    AddSession(Box<SessionSpec>),
    /// End a session.
    RemoveSession { id: SessionId, reason: EndReason },
    /// Forward a stream published on this core to another core, once per packet for all of that
    /// core's players.
    AttachCore { stream: StreamId, core: CoreId },
    /// Stop forwarding a stream to another core.
    DetachCore { stream: StreamId, core: CoreId },
    /// Ask a publisher (REMB) to send at most this many bit/s, or lift the limit (`None`).
    LimitPublisher {
        id: SessionId,
        bitrate_bps: Option<u64>,
    },
    /// A simulcast player's client chose its layer: pin it to `Some(layer)`, or let its
    /// bandwidth estimate choose again (`None`). It switches at that layer's next keyframe.
    PinLayer { id: SessionId, layer: Option<u8> },
    /// Start an ingest: a publisher that is not a WebRTC peer (RTMP), whose plain RTP comes
    /// through a ring (see [`crate::media::ingest`]). It ends with `RemoveSession` like a
    /// session, or when its ring's sender is dropped.
    AddIngest(Box<IngestSpec>),
    /// Start an egress: a player that is not a WebRTC peer (RTMP), tapping the stream's plain
    /// video at the publisher's core through a ring (see [`crate::media::egress`]). It ends
    /// with `RemoveSession` like a session.
    AddEgress(Box<EgressSpec>),
    /// An egress lost packets (its player waits for a keyframe): ask its stream's publisher
    /// for one of its layer, as a player's PLI would.
    RequestKeyframe { id: SessionId },
    /// Stop the core thread.
    Shutdown,
}

/// An ingest publisher for a core (see [`CoreCommand::AddIngest`]).
#[derive(Debug)]
pub struct IngestSpec {
    /// Its id: signalling knows it as the stream's publisher session.
    pub id: SessionId,
    /// The stream it publishes.
    pub stream: StreamId,
    /// The stream's name, for logs.
    pub stream_name: String,
    /// Where its packets come from.
    pub feed: crate::media::IngestFeed,
    /// Its video's codec, for the picture size its keyframes announce.
    pub video_codec: rtp::VideoCodec,
}

/// An egress for a core (see [`crate::control::CoreCommand::AddEgress`]).
#[derive(Debug)]
pub struct EgressSpec {
    /// Its id: signalling knows it as a player session of the stream.
    pub id: SessionId,
    /// The stream it taps (set by the control plane).
    pub stream: StreamId,
    /// The stream's name, for logs.
    pub stream_name: String,
    /// The simulcast layer it takes (0 without simulcast).
    pub layer: u8,
    /// Whether it takes the stream's audio too.
    pub audio: bool,
    /// Where the packets go.
    pub tap: crate::media::EgressTap,
}

/// Core → signalling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// ICE and DTLS are up; media can flow.
    SessionConnected { id: SessionId },
    /// A publisher's first media packet was decrypted.
    MediaStarted { id: SessionId },
    /// The session is gone; signalling forgets it (and ends a publisher's players).
    SessionEnded { id: SessionId, reason: EndReason },
    /// Once a second: a player's estimated bandwidth (with transport-cc), a publisher's
    /// received bitrate, a simulcast player's layer, the loss over the last receiver report
    /// (in 256ths), the picture size a publisher's keyframes announce, and the media and
    /// repair requests the session carried so far.
    Bitrates {
        id: SessionId,
        estimate_bps: Option<u64>,
        received_bps: Option<u64>,
        layer: Option<PlayerLayer>,
        loss_fraction: Option<u8>,
        video_size: Option<(u16, u16)>,
        traffic: crate::session::Traffic,
    },
}

/// A simulcast player's video layer as its core reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerLayer {
    /// The layer it is sent; `None` until it started on a keyframe.
    pub current: Option<u8>,
    /// The layer it should get (it switches at that layer's next keyframe).
    pub target: u8,
    /// Its client chose the layer; the estimate does not move it.
    pub pinned: bool,
}

/// Why a session ended; logged and reported to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client deleted its WHIP/WHEP resource.
    Deleted,
    /// An administrator ended it (admin token).
    Terminated,
    /// Its ACL key was revoked from the stream's access list.
    RestrictedAccess,
    /// The peer stopped ICE consent checks (RFC 7675).
    ConsentExpired,
    /// No ICE check arrived after the answer.
    NeverConnected,
    /// ICE and DTLS did not complete within `session.connect_timeout_secs`; `ice` tells whether
    /// ICE did.
    ConnectTimeout { ice: bool },
    /// A publisher that had not connected yet gave its stream name up to an authorized one (a
    /// relay of this CDN, or a token holder).
    Superseded,
    /// The peer closed DTLS.
    DtlsClosed,
    /// The DTLS handshake failed.
    DtlsFailed(String),
    /// The stream's publisher left.
    PublisherLeft,
    /// The ICE-TCP connection its media used closed, and no other path was known.
    TransportClosed,
    /// The node is shutting down.
    Shutdown,
    /// A relay's signalling connection closed without unpublishing: its node died or the
    /// link broke. The stream's players wait for another copy a while
    /// ([`crate::control::registry::ORPHAN_GRACE`]).
    SourceLost,
}

impl EndReason {
    /// Whether a relayed publisher that ended for this reason lost its source without it
    /// leaving: its players are kept for the next copy of the stream to take over. A copy
    /// superseded before it connected (two copies arriving at once), or one that never
    /// connected, hands them on too.
    pub fn loses_source(&self) -> bool {
        matches!(
            self,
            EndReason::SourceLost
                | EndReason::ConsentExpired
                | EndReason::TransportClosed
                | EndReason::DtlsClosed
                | EndReason::Superseded
                | EndReason::NeverConnected
                | EndReason::ConnectTimeout { .. }
        )
    }

    /// A short stable name, for clients that explain the end in their own words (the
    /// built-in page): `deleted`, `terminated`, `publisher_left`, ...
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Terminated => "terminated",
            EndReason::RestrictedAccess => "restricted_access",
            EndReason::ConsentExpired => "consent_expired",
            EndReason::NeverConnected => "never_connected",
            EndReason::ConnectTimeout { .. } => "connect_timeout",
            EndReason::Superseded => "superseded",
            EndReason::DtlsClosed => "dtls_closed",
            EndReason::DtlsFailed(_) => "dtls_failed",
            EndReason::PublisherLeft => "publisher_left",
            EndReason::TransportClosed => "transport_closed",
            EndReason::Shutdown => "shutdown",
            EndReason::SourceLost => "source_lost",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Deleted => f.write_str("deleted by the client"),
            EndReason::Terminated => f.write_str("terminated by an administrator"),
            EndReason::RestrictedAccess => f.write_str("its ACL key was revoked"),
            EndReason::ConsentExpired => f.write_str("ICE consent expired"),
            EndReason::NeverConnected => f.write_str("no ICE connectivity check arrived"),
            EndReason::ConnectTimeout { ice: false } => {
                f.write_str("ICE did not complete within the connect timeout")
            }
            EndReason::ConnectTimeout { ice: true } => {
                f.write_str("DTLS did not complete within the connect timeout")
            }
            EndReason::Superseded => {
                f.write_str("replaced by an authorized publisher before it connected")
            }
            EndReason::DtlsClosed => f.write_str("DTLS closed by the peer"),
            EndReason::DtlsFailed(why) => write!(f, "DTLS handshake failed: {why}"),
            EndReason::PublisherLeft => f.write_str("stopped by publisher stop"),
            EndReason::TransportClosed => f.write_str("its ICE-TCP connection closed"),
            EndReason::Shutdown => f.write_str("node shutting down"),
            EndReason::SourceLost => f.write_str("the relay's connection closed unannounced"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_player_layer_is_a_rid_or_low_mid_high_and_the_highest_by_default() {
        let rids: Vec<String> = ["l", "m", "h"].map(String::from).to_vec();
        let layer =
            |wanted| PlayerLayers::choose(&rids, wanted).map(|l| l.map(|l| (l.target, l.pinned)));
        assert_eq!(layer(None), Ok(Some((2, false))));
        assert_eq!(layer(Some("l")), Ok(Some((0, true))));
        assert_eq!(layer(Some("m")), Ok(Some((1, true))));
        assert_eq!(layer(Some("low")), Ok(Some((0, true))));
        assert_eq!(layer(Some("mid")), Ok(Some((1, true))));
        assert_eq!(layer(Some("high")), Ok(Some((2, true))));
        assert!(layer(Some("x")).is_err());
        assert_eq!(PlayerLayers::choose(&rids[..1], Some("x")), Ok(None));
    }
}
