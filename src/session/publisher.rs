//! A publisher's side of a session: what it receives and what rtcdn tells it back.
//!
//! Its media is decrypted, unwrapped from RTX and sorted into tracks and simulcast layers;
//! per SSRC it keeps receive statistics (RFC 3550 A.3) for receiver reports and the REMB that
//! caps its bitrate; per video layer a loss detector asks for gaps again at once; it answers
//! transport-cc, merges keyframe requests, and turns its sender reports into events players
//! translate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtp::rtcp::{
    Items, Nack, NackPair, Pli, ReceiverReport, Remb, ReportBlock, Rtcp, SenderReport,
};
use rtp::srtp::SrtpContext;
use rtp::{is_keyframe, keyframe_size, RtpHeader, SeqNo, Ssrc, VideoCodec};

use super::loss_detector::{LossDetector, RepairCounts};
use super::rtx::{self, RtxError};
use super::transport_cc::{PublisherFeedback, MAX_FEEDBACK_LEN};
use super::{RoleState, Session, SessionError, SessionEvent, MAX_LOST_PACKETS};
use crate::control::PublishedTrack;
use crate::sdp::MediaKind;
use crate::simulcast::{LayerMap, MAX_LAYERS};

/// Keyframe requests toward a publisher are merged: at most one PLI per this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// How often a publisher gets a receiver report (and REMB).
const RECEIVER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest period a publisher's bitrate is measured over.
const MIN_BITRATE_WINDOW: Duration = Duration::from_millis(500);
/// The bitrate announced to publishers in REMB, so a browser ramps up to a useful rate instead of
/// staying at its cautious start estimate. rtcdn does no congestion control of its own (yet).
const REMB_BITRATE_BPS: u64 = 5_000_000;

/// Receive statistics of one publisher SSRC, for receiver reports (RFC 3550 A.3).
#[derive(Debug, Default, Clone)]
struct ReceiveStats {
    ssrc: u32,
    base_seq: u64,
    highest_seq: Option<u64>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    last_sr_ntp_middle: u32,
    last_sr_at: Option<Instant>,
}

impl ReceiveStats {
    fn record(&mut self, ssrc: u32, seq: u16) {
        if self.ssrc != ssrc || self.highest_seq.is_none() {
            *self = ReceiveStats {
                ssrc,
                base_seq: u64::from(seq),
                highest_seq: Some(u64::from(seq)),
                ..Default::default()
            };
        }
        let highest = self.highest_seq.unwrap_or_default();
        let extended = SeqNo::new(highest).extend(seq).value();
        if extended > highest {
            self.highest_seq = Some(extended);
        }
        self.received += 1;
    }

    fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let highest = self.highest_seq?;
        let expected = highest - self.base_seq + 1;
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .unwrap_or(0)
            .min(255) as u8;
        let delay_since_last_sr = self
            .last_sr_at
            .map(|at| (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32)
            .unwrap_or(0);
        Some(ReportBlock {
            ssrc: Ssrc(self.ssrc),
            fraction_lost,
            cumulative_lost: lost.min(0x7f_ffff) as i32,
            extended_highest_seq: highest as u32,
            jitter: 0,
            last_sr: self.last_sr_ntp_middle,
            delay_since_last_sr,
        })
    }
}

/// When the first of a publisher's per-layer loss detectors wants to run.
fn earliest_loss_timeout(detectors: &[Option<LossDetector>; MAX_LAYERS]) -> Option<Instant> {
    detectors
        .iter()
        .flatten()
        .filter_map(LossDetector::poll_timeout)
        .min()
}

/// Receive statistics slots of a publisher: audio, then one per video layer.
const STATS_SLOTS: usize = 1 + MAX_LAYERS;

/// A publisher's statistics slot of a track's layer (audio has one layer, 0).
fn stats_slot(kind: MediaKind, layer: u8) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1 + usize::from(layer).min(MAX_LAYERS - 1),
    }
}

/// What a session keeps of its publisher.
pub(super) struct PublisherState {
    tracks: Vec<PublishedTrack>,
    /// One per SSRC the publisher sends: see [`stats_slot`]. Boxed like `video_loss`.
    stats: Box<[ReceiveStats; STATS_SLOTS]>,
    /// The video's simulcast layers, when it sends several.
    layers: Option<LayerMap>,
    media_started: bool,
    /// Per video layer: each layer's keyframes are requested (and throttled) on their own.
    last_keyframe_request: [Option<Instant>; MAX_LAYERS],
    pending_keyframe_request: [Option<Instant>; MAX_LAYERS],
    next_receiver_report: Option<Instant>,
    /// Gaps in the video, per layer, asked for again at once (see [`super::loss_detector`]);
    /// `None` without a video track or beyond its layers. Boxed, with the session: a player's
    /// state is much smaller, and most sessions are players.
    video_loss: Box<[Option<LossDetector>; MAX_LAYERS]>,
    /// The video codec, when rtcdn can tell its keyframes.
    video_codec: Option<VideoCodec>,
    /// Per video layer: the picture size its last keyframe announced (VP8, H.264; see
    /// [`rtp::keyframe_size`]).
    video_size: [Option<(u16, u16)>; MAX_LAYERS],
    /// Transport-cc feedback for the publisher's bandwidth estimate, when negotiated.
    transport_cc: Option<Box<PublisherFeedback>>,
    /// Bytes received since `bitrate_since`, and the bitrate measured over the last period.
    received_bytes: u64,
    bitrate_since: Option<Instant>,
    bitrate_bps: u64,
    /// The bitrate announced in REMB: [`REMB_BITRATE_BPS`], or what `bwe.limit_publisher`
    /// allows (its weakest player's bandwidth).
    remb_bps: u64,
}

/// A publisher's media packet, decrypted in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedMedia {
    /// The track it belongs to.
    pub kind: MediaKind,
    /// The plaintext RTP length.
    pub len: usize,
    /// Whether it is part of a video keyframe.
    pub keyframe: bool,
    /// The simulcast layer (0 without simulcast, and for audio).
    pub layer: u8,
}

/// The codec behind an rtpmap name, for keyframe detection.
fn video_codec(name: &str) -> Option<VideoCodec> {
    match name.to_ascii_uppercase().as_str() {
        "VP8" => Some(VideoCodec::Vp8),
        "VP9" => Some(VideoCodec::Vp9),
        "H264" => Some(VideoCodec::H264),
        "H265" => Some(VideoCodec::H265),
        "AV1" | "AV1X" => Some(VideoCodec::Av1),
        _ => None,
    }
}

impl PublisherState {
    /// The state of a publisher of `tracks`, before it connects.
    pub(super) fn new(tracks: Vec<PublishedTrack>) -> PublisherState {
        PublisherState {
            video_loss: {
                let video = tracks.iter().find(|t| t.kind == MediaKind::Video);
                let layers = video.map_or(0, |t| {
                    t.simulcast
                        .as_ref()
                        .map_or(1, |s| s.rids.len().clamp(1, MAX_LAYERS))
                });
                Box::new(std::array::from_fn(|layer| {
                    (layer < layers).then(LossDetector::new)
                }))
            },
            layers: tracks
                .iter()
                .find_map(|t| t.simulcast.clone())
                .map(LayerMap::new),
            video_codec: tracks
                .iter()
                .find(|t| t.kind == MediaKind::Video)
                .and_then(|t| video_codec(&t.codec)),
            video_size: [None; MAX_LAYERS],
            transport_cc: tracks
                .iter()
                .find_map(|t| t.transport_cc)
                .map(|id| Box::new(PublisherFeedback::new(id))),
            received_bytes: 0,
            bitrate_since: None,
            bitrate_bps: 0,
            remb_bps: REMB_BITRATE_BPS,
            tracks,
            stats: Default::default(),
            media_started: false,
            last_keyframe_request: [None; MAX_LAYERS],
            pending_keyframe_request: [None; MAX_LAYERS],
            next_receiver_report: None,
        }
    }

    /// SRTP keys are installed: receiver reports start a period from now.
    pub(super) fn on_connected(&mut self, now: Instant) {
        self.next_receiver_report = Some(now + RECEIVER_REPORT_INTERVAL);
    }

    /// Whether it publishes a track of this kind.
    pub(super) fn publishes(&self, kind: MediaKind) -> bool {
        self.tracks.iter().any(|t| t.kind == kind)
    }

    /// How many simulcast layers it sends (1 without simulcast); 0 without video.
    pub(super) fn video_layer_count(&self) -> usize {
        self.video_loss.iter().flatten().count()
    }

    /// When [`Session::handle_publisher_timeout`] wants to run next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let loss = earliest_loss_timeout(&self.video_loss);
        let feedback = self.transport_cc.as_ref().and_then(|f| f.poll_timeout());
        [self.next_receiver_report, loss, feedback]
            .into_iter()
            .chain(self.pending_keyframe_request)
            .flatten()
            .min()
    }

    /// Turns a retransmission (RFC 4588) in `packet` back into the media packet it carries,
    /// in place; other packets are left alone. Returns the length of what to handle as media.
    fn restore_rtx(
        &mut self,
        srtp: &mut SrtpContext,
        packet: &mut [u8],
    ) -> Result<usize, RtxError> {
        let (stats, layers) = (&self.stats, &mut self.layers);
        // A simulcast layer's RTX SSRC repairs that layer's media SSRC (both learned from
        // their rids); without simulcast, the track's one media SSRC.
        let media_ssrc = |kind, header: &RtpHeader<'_>| match (kind, layers.as_mut()) {
            (MediaKind::Video, Some(layers)) => layers
                .rtx_layer(header)
                .map_or(0, |layer| layers.media_ssrc(layer)),
            _ => stats[stats_slot(kind, 0)].ssrc,
        };
        rtx::restore_publisher_rtx(&self.tracks, media_ssrc, srtp, packet)
    }

    /// The layer of a video packet: 0 without simulcast.
    fn video_layer(&mut self, header: &RtpHeader<'_>) -> Result<u8, SessionError> {
        match self.layers.as_mut() {
            Some(layers) => layers
                .media_layer(header)
                .ok_or(SessionError::UnknownLayer(header.ssrc().0)),
            None => Ok(0),
        }
    }
}

/// The publisher's side of [`Session`]. Called on a player, these do nothing (or answer
/// `None`), and `handle_srtp` refuses its RTP.
impl Session {
    /// A publisher's SRTP packet: authenticated and decrypted in place, to be forwarded to
    /// players.
    pub fn handle_srtp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Result<ReceivedMedia, SessionError> {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return Err(SessionError::UnexpectedRtp);
        };
        let srtp = self.srtp_rx.as_mut().ok_or(SessionError::NotKeyed)?;
        let wire_len = data.len() as u64;
        let len = srtp.unprotect_rtp(data).map_err(SessionError::Srtp)?;
        self.traffic.packets_in += 1;
        self.traffic.bytes_in += wire_len;
        self.ice.renew_consent(now, from);
        if let Some(feedback) = publisher.transport_cc.as_mut() {
            // Every packet the publisher's estimate counts, probes and repeats too: recorded
            // before a retransmission is unwrapped or dropped.
            if let Ok(header) = RtpHeader::parse(&data[..len]) {
                feedback.on_packet(now, &header);
            }
        }
        let len = publisher.restore_rtx(srtp, &mut data[..len])?;
        // Media only: padding probes would make the publisher look faster than its players
        // need to be (the NOT_ENOUGH_BANDWIDTH comparison).
        publisher.received_bytes += len as u64;
        let header = RtpHeader::parse(&data[..len]).map_err(SessionError::Rtp)?;
        let pt = header.payload_type().value();
        let track = publisher
            .tracks
            .iter()
            .find(|t| t.pt == pt)
            .ok_or(SessionError::UnknownPayloadType(pt))?;
        let kind = track.kind;
        let layer = match kind {
            MediaKind::Video => publisher.video_layer(&header)?,
            MediaKind::Audio => 0,
        };
        let (ssrc, seq) = (header.ssrc().0, header.sequence_number());
        publisher.stats[stats_slot(kind, layer)].record(ssrc, seq);
        let loss = publisher.video_loss.get_mut(usize::from(layer));
        let gap = match (kind, loss.and_then(Option::as_mut)) {
            (MediaKind::Video, Some(loss)) => loss.on_packet(now, ssrc, seq),
            _ => false,
        };
        let keyframe = match (kind, publisher.video_codec) {
            (MediaKind::Video, Some(codec)) => is_keyframe(codec, header.payload()),
            _ => false,
        };
        if keyframe {
            if let (Some(codec), Some(size)) = (
                publisher.video_codec,
                publisher.video_size.get_mut(usize::from(layer)),
            ) {
                if let Some(announced) = keyframe_size(codec, header.payload()) {
                    *size = Some(announced);
                }
            }
            // The keyframe answers every request made since the last PLI went out: a merged
            // request still pending would only cost the publisher a second keyframe.
            if let Some(pending) = publisher
                .pending_keyframe_request
                .get_mut(usize::from(layer))
            {
                *pending = None;
            }
        }
        if !publisher.media_started {
            publisher.media_started = true;
            self.events.push_back(SessionEvent::MediaStarted);
        }
        if gap {
            self.request_lost_video(now);
        }
        Ok(ReceivedMedia {
            kind,
            len,
            keyframe,
            layer,
        })
    }

    /// Asks a publisher to send at most `bitrate_bps` (REMB, which Chromium's estimate is
    /// capped by, transport-cc or not), or lifts the limit; a change goes out at once.
    pub fn limit_bitrate(&mut self, now: Instant, bitrate_bps: Option<u64>) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let remb = bitrate_bps.map_or(REMB_BITRATE_BPS, |b| b.min(REMB_BITRATE_BPS));
        if remb != publisher.remb_bps {
            publisher.remb_bps = remb;
            if self.srtp_tx.is_some() {
                self.send_receiver_report(now);
            }
        }
    }

    /// A publisher's bitrate over the last receiver report period (about a second).
    pub fn received_bitrate(&self) -> Option<u64> {
        match &self.role {
            RoleState::Publisher(p) => Some(p.bitrate_bps),
            RoleState::Player(_) => None,
        }
    }

    /// The largest picture size a publisher's keyframes announced (of its simulcast layers);
    /// `None` until one did, and where the codec keeps it elsewhere (see
    /// [`rtp::keyframe_size`]).
    pub fn video_size(&self) -> Option<(u16, u16)> {
        match &self.role {
            RoleState::Publisher(p) => p
                .video_size
                .iter()
                .flatten()
                .copied()
                .max_by_key(|&(w, h)| u32::from(w) * u32::from(h)),
            RoleState::Player(_) => None,
        }
    }

    /// Asks a publisher to send packets of a track again (generic NACK, RFC 4585 §6.2.1), for
    /// what no core's retransmission cache held: the publisher's copy is forwarded again, and
    /// receivers that already have it drop the duplicate. Video packets this node already asked
    /// for less than a round trip ago are left out (see [`LossDetector::should_request`]).
    pub fn request_retransmission(
        &mut self,
        now: Instant,
        kind: MediaKind,
        layer: u8,
        seqs: &[u16],
    ) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let mut wanted = [0u16; MAX_LOST_PACKETS];
        let mut count = 0;
        for &seq in seqs.iter().take(MAX_LOST_PACKETS) {
            let loss = publisher.video_loss.get_mut(usize::from(layer));
            let merged = match (kind, loss.and_then(Option::as_mut)) {
                (MediaKind::Video, Some(loss)) => !loss.should_request(now, seq),
                _ => false,
            };
            if !merged {
                wanted[count] = seq;
                count += 1;
            }
        }
        self.send_nack(kind, layer, &mut wanted[..count]);
    }

    /// Asks for the video packets the loss detector found missing (or still misses a round
    /// trip after asking), and reports what it did.
    fn request_lost_video(&mut self, now: Instant) {
        for layer in 0..MAX_LAYERS as u8 {
            let RoleState::Publisher(publisher) = &mut self.role else {
                return;
            };
            let Some(loss) = publisher.video_loss[usize::from(layer)].as_mut() else {
                continue;
            };
            let mut seqs = [0u16; MAX_LOST_PACKETS];
            let count = loss.poll_requests(now, &mut seqs);
            let counts = loss.take_counts();
            // A NACK carries at most MAX_LOST_PACKETS; what is left is due at once, and goes
            // out when the core next visits the session.
            self.send_nack(MediaKind::Video, layer, &mut seqs[..count]);
            if counts != RepairCounts::default() {
                self.events.push_back(SessionEvent::UpstreamRepair(counts));
            }
        }
    }

    /// Sends a NACK for `seqs` (the first [`MAX_LOST_PACKETS`]), which it sorts while packing.
    fn send_nack(&mut self, kind: MediaKind, layer: u8, seqs: &mut [u16]) {
        let RoleState::Publisher(publisher) = &self.role else {
            return;
        };
        let media_ssrc = publisher.stats[stats_slot(kind, layer)].ssrc;
        if media_ssrc == 0 || seqs.is_empty() {
            return;
        }
        let mut pairs = [NackPair::default(); MAX_LOST_PACKETS];
        let n = seqs.len().min(MAX_LOST_PACKETS);
        let count = NackPair::pack(&mut seqs[..n], &mut pairs);
        let nack = Nack {
            sender_ssrc: Ssrc(self.rtcp_ssrc),
            media_ssrc: Ssrc(media_ssrc),
            pairs: Items::from_slice(&pairs[..count]),
        };
        self.traffic.nacks_out += 1;
        self.send_rtcp(&[Rtcp::Nack(nack)]);
    }

    /// Notes when the publisher's sender report came, for the next receiver report's delay,
    /// and passes its NTP↔RTP mapping on to the stream's players.
    pub(super) fn handle_sender_report(&mut self, now: Instant, sr: &SenderReport) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let Some(index) = publisher
            .stats
            .iter()
            .position(|s| s.ssrc == sr.sender_ssrc.0 && s.highest_seq.is_some())
        else {
            return;
        };
        let stats = &mut publisher.stats[index];
        stats.last_sr_ntp_middle = (sr.ntp_time >> 16) as u32;
        stats.last_sr_at = Some(now);
        let (kind, layer) = match index {
            0 => (MediaKind::Audio, 0),
            video => (MediaKind::Video, (video - 1) as u8),
        };
        self.events.push_back(SessionEvent::SenderReport {
            kind,
            layer,
            ntp_time: sr.ntp_time,
            rtp_time: sr.rtp_time,
        });
    }

    /// Asks a publisher for a keyframe; requests closer together than the throttle interval are
    /// merged into one PLI sent when the interval ends, unless a keyframe arrives first (it
    /// answers them all).
    /// `layer` is the simulcast layer whose SSRC the PLI names (0 without simulcast).
    pub fn request_keyframe(&mut self, now: Instant, layer: u8) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        let index = usize::from(layer).min(MAX_LAYERS - 1);
        let due = publisher.last_keyframe_request[index].map(|at| at + KEYFRAME_REQUEST_INTERVAL);
        match due {
            Some(due) if due > now => {
                publisher.pending_keyframe_request[index].get_or_insert(due);
            }
            _ => self.send_keyframe_request(now, index),
        }
    }

    fn send_keyframe_request(&mut self, now: Instant, layer: usize) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        publisher.pending_keyframe_request[layer] = None;
        let video_ssrc = publisher.stats[stats_slot(MediaKind::Video, layer as u8)].ssrc;
        if video_ssrc == 0 || self.srtp_tx.is_none() {
            // Nothing to ask yet: the first keyframe is on its way anyway.
            return;
        }
        publisher.last_keyframe_request[layer] = Some(now);
        let pli = Pli {
            sender_ssrc: Ssrc(self.rtcp_ssrc),
            media_ssrc: Ssrc(video_ssrc),
        };
        self.traffic.keyframe_requests_out += 1;
        self.send_rtcp(&[Rtcp::Pli(pli)]);
    }

    /// Time passed: transport-cc feedback, the loss detectors' requests, merged keyframe
    /// requests and receiver reports, whichever are due.
    pub(super) fn handle_publisher_timeout(&mut self, now: Instant) {
        let RoleState::Publisher(p) = &self.role else {
            return;
        };
        let (pending, report, loss, feedback) = (
            p.pending_keyframe_request,
            p.next_receiver_report,
            earliest_loss_timeout(&p.video_loss),
            p.transport_cc.as_ref().and_then(|f| f.poll_timeout()),
        );
        if feedback.is_some_and(|at| at <= now) {
            self.send_transport_feedback(now);
        }
        if loss.is_some_and(|at| at <= now) {
            self.request_lost_video(now);
        }
        for (layer, at) in pending.into_iter().enumerate() {
            if at.is_some_and(|at| at <= now) {
                self.send_keyframe_request(now, layer);
            }
        }
        if report.is_some_and(|at| at <= now) {
            self.send_receiver_report(now);
        }
    }

    fn send_receiver_report(&mut self, now: Instant) {
        let RoleState::Publisher(publisher) = &mut self.role else {
            return;
        };
        publisher.next_receiver_report = Some(now + RECEIVER_REPORT_INTERVAL);
        // Reports also go out of turn (a REMB change): the bitrate window only ends once it is
        // long enough to say something, else a limit that moves often reads as silence.
        let window = publisher
            .bitrate_since
            .map(|since| now.saturating_duration_since(since));
        match window {
            Some(window) if window < MIN_BITRATE_WINDOW => {}
            Some(window) => {
                publisher.bitrate_bps =
                    (publisher.received_bytes as f64 * 8.0 / window.as_secs_f64()) as u64;
                if let Some(feedback) = publisher.transport_cc.as_mut() {
                    feedback.set_bitrate(publisher.bitrate_bps);
                }
                publisher.received_bytes = 0;
                publisher.bitrate_since = Some(now);
            }
            None => {
                publisher.received_bytes = 0;
                publisher.bitrate_since = Some(now);
            }
        }
        // Recoveries since the last request are reported here at the latest.
        for counts in publisher
            .video_loss
            .iter_mut()
            .flatten()
            .map(LossDetector::take_counts)
            .filter(|c| *c != RepairCounts::default())
        {
            self.events.push_back(SessionEvent::UpstreamRepair(counts));
        }
        let mut reports = [ReportBlock::default(); STATS_SLOTS];
        let mut ssrcs = [Ssrc(0); STATS_SLOTS];
        let mut count = 0;
        for block in publisher
            .stats
            .iter_mut()
            .filter_map(|s| s.report_block(now))
        {
            reports[count] = block;
            ssrcs[count] = block.ssrc;
            count += 1;
        }
        if count == 0 {
            return;
        }
        self.loss_fraction = reports[..count].iter().map(|b| b.fraction_lost).max();
        let sender_ssrc = Ssrc(self.rtcp_ssrc);
        let rr = Rtcp::ReceiverReport(ReceiverReport {
            sender_ssrc,
            reports: Items::from_slice(&reports[..count]),
        });
        let remb = Rtcp::Remb(Remb {
            sender_ssrc,
            bitrate_bps: publisher.remb_bps,
            ssrcs: Items::from_slice(&ssrcs[..count]),
        });
        self.send_rtcp(&[rr, remb]);
    }

    /// Sends the publisher the transport-cc feedback that is due.
    fn send_transport_feedback(&mut self, now: Instant) {
        loop {
            let RoleState::Publisher(publisher) = &mut self.role else {
                return;
            };
            let media_ssrc = publisher
                .stats
                .iter()
                .rev()
                .map(|s| s.ssrc)
                .find(|&s| s != 0)
                .unwrap_or(0);
            let Some(feedback) = publisher.transport_cc.as_mut() else {
                return;
            };
            let mut buf = self.spare_buffers.pop().unwrap_or_default();
            buf.clear();
            buf.resize(MAX_FEEDBACK_LEN + 64, 0);
            let written = feedback.poll_feedback(
                now,
                self.rtcp_ssrc,
                media_ssrc,
                &mut buf[..MAX_FEEDBACK_LEN],
            );
            match written {
                Some(len) => self.queue_srtcp(buf, len),
                None => {
                    self.spare_buffers.push(buf);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rtp::rtcp::RtcpIter;

    use super::*;
    use crate::control::SessionRole;
    use crate::media::test_support::vp8_track;
    use crate::session::test_support::{
        connected_with_test_keys, layer_packet, peer_context, publisher_spec, source_packet,
        srtp_datagram,
    };

    #[test]
    fn receive_stats_count_loss() {
        let mut stats = ReceiveStats::default();
        for seq in [100u16, 101, 103, 104] {
            stats.record(7, seq);
        }
        let block = stats.report_block(Instant::now()).unwrap();
        assert_eq!(block.ssrc, Ssrc(7));
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.extended_highest_seq, 104);
        assert_eq!(block.fraction_lost, (256 / 5) as u8);
    }

    #[test]
    fn a_limited_publisher_is_sent_the_limit_in_remb_at_once_and_in_every_report() {
        let now = Instant::now();
        let (mut publisher, from, mut tx, mut rx) = publisher_with_peer(now);
        for seq in 1..=5u16 {
            let mut datagram = srtp_datagram(&mut tx, &source_packet(1, seq));
            publisher.handle_srtp(now, from, &mut datagram).unwrap();
        }
        let traffic = publisher.traffic();
        assert_eq!(traffic.packets_in, 5);
        // 200-byte packets and the GCM tag, as they came.
        assert_eq!(traffic.bytes_in, 5 * (200 + 16));
        let mut remb_sent = |publisher: &mut Session| {
            let mut rembs = Vec::new();
            while let Some(mut t) = publisher.poll_transmit() {
                let n = rx.unprotect_rtcp(&mut t.contents).unwrap();
                for packet in RtcpIter::new(&t.contents[..n]).flatten() {
                    if let Rtcp::Remb(remb) = packet {
                        rembs.push(remb.bitrate_bps);
                    }
                }
            }
            rembs
        };
        publisher.handle_timeout(now + RECEIVER_REPORT_INTERVAL);
        assert_eq!(remb_sent(&mut publisher), [REMB_BITRATE_BPS]);
        publisher.limit_bitrate(now + Duration::from_millis(1100), Some(300_000));
        assert_eq!(remb_sent(&mut publisher), [300_000], "at once");
        publisher.handle_timeout(now + Duration::from_millis(2200));
        assert_eq!(remb_sent(&mut publisher), [300_000], "in the next report");
        publisher.limit_bitrate(now + Duration::from_millis(2300), None);
        assert_eq!(remb_sent(&mut publisher), [REMB_BITRATE_BPS], "lifted");
    }

    #[test]
    fn a_remb_sent_out_of_turn_does_not_cut_the_bitrate_window_short() {
        // A REMB change goes out at once in a receiver report; the bitrate is still measured
        // over about a second, or a limit that moves often reads the publisher as silent.
        let now = Instant::now();
        let (mut publisher, from, mut tx, _rx) = publisher_with_peer(now);
        let mut seq = 0u16;
        let mut receive_for = |publisher: &mut Session, from_ms: u64, to_ms: u64| {
            // A 200-byte packet every 10 ms: 172.8 kbit/s with the GCM tag.
            for ms in (from_ms..to_ms).step_by(10) {
                seq += 1;
                let mut datagram = srtp_datagram(&mut tx, &source_packet(1, seq));
                let at = now + Duration::from_millis(ms);
                publisher.handle_srtp(at, from, &mut datagram).unwrap();
            }
        };
        // The first report starts the first window.
        publisher.handle_timeout(now + RECEIVER_REPORT_INTERVAL);
        receive_for(&mut publisher, 1000, 2000);
        publisher.handle_timeout(now + 2 * RECEIVER_REPORT_INTERVAL);
        let settled = publisher.received_bitrate().unwrap();
        assert!((150_000..200_000).contains(&settled), "{settled}");
        while publisher.poll_transmit().is_some() {}
        // The limit changes just after the report, before the next packet.
        publisher.limit_bitrate(now + Duration::from_millis(2001), Some(300_000));
        let read = publisher.received_bitrate().unwrap();
        assert!((150_000..200_000).contains(&read), "{read}");
        receive_for(&mut publisher, 2005, 2300);
        publisher.limit_bitrate(now + Duration::from_millis(2301), Some(250_000));
        let read = publisher.received_bitrate().unwrap();
        assert!((150_000..200_000).contains(&read), "{read}");
        receive_for(&mut publisher, 2305, 3301);
        publisher.handle_timeout(now + Duration::from_millis(3301));
        let read = publisher.received_bitrate().unwrap();
        assert!((150_000..200_000).contains(&read), "{read}");
    }

    /// A connected publisher of one VP8 track (PT 100), with rtx `(pt, (media, rtx SSRCs))`
    /// if given, and fixed SRTP keys (the peer's are [`peer_context`]'s).
    fn connected_publisher(rtx: Option<(u8, (u32, u32))>, now: Instant) -> Session {
        let track = PublishedTrack {
            rtx_pt: rtx.map(|(pt, _)| pt),
            rtx_ssrcs: rtx.map(|(_, ssrcs)| ssrcs),
            ..vp8_track(100)
        };
        let mut spec = publisher_spec();
        spec.role = SessionRole::Publisher {
            tracks: vec![track],
        };
        connected_with_test_keys(spec, now)
    }

    /// A [`connected_publisher`] without rtx whose peer is at 127.0.0.1:5000: the session,
    /// that address, and the peer's contexts to send to it with (`tx`) and receive from it
    /// with (`rx`).
    fn publisher_with_peer(now: Instant) -> (Session, SocketAddr, SrtpContext, SrtpContext) {
        let mut publisher = connected_publisher(None, now);
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        publisher.remote = Some(from);
        (publisher, from, peer_context(false), peer_context(true))
    }

    #[test]
    fn a_publisher_is_asked_again_in_one_nack_of_packed_entries() {
        let now = Instant::now();
        let (mut publisher, from, mut tx, mut rx) = publisher_with_peer(now);
        // Nothing to name before its media came: the NACK needs the media SSRC.
        publisher.request_retransmission(now, MediaKind::Video, 0, &[7]);
        assert!(publisher.poll_transmit().is_none());
        let mut datagram = srtp_datagram(&mut tx, &source_packet(1, 40));
        publisher.handle_srtp(now, from, &mut datagram).unwrap();

        publisher.request_retransmission(now, MediaKind::Video, 0, &[30, 10, 12, 11, 10, 65535]);
        let mut t = publisher.poll_transmit().expect("a NACK");
        assert!(publisher.poll_transmit().is_none(), "one packet");
        let n = rx.unprotect_rtcp(&mut t.contents).unwrap();
        let nacks: Vec<_> = RtcpIter::new(&t.contents[..n])
            .flatten()
            .filter_map(|packet| match packet {
                Rtcp::Nack(nack) => Some((nack.media_ssrc, nack.pairs.iter().collect::<Vec<_>>())),
                _ => None,
            })
            .collect();
        // 65535 comes first across the wrap and covers 10..=12; 30 is too far for its mask.
        let pairs = vec![
            NackPair {
                pid: 65535,
                blp: 1 << 10 | 1 << 11 | 1 << 12,
            },
            NackPair { pid: 30, blp: 0 },
        ];
        assert_eq!(nacks, [(Ssrc(1), pairs)]);
        // The one sent, not the one that had no SSRC to name.
        assert_eq!(publisher.traffic().nacks_out, 1);
    }

    #[test]
    fn a_publishers_rtx_packet_is_handled_as_the_media_packet_it_carries() {
        let now = Instant::now();
        let mut publisher = connected_publisher(Some((101, (1, 2))), now);
        let mut tx = peer_context(false);
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut receive = |plain: &[u8]| {
            let mut datagram = srtp_datagram(&mut tx, plain);
            publisher
                .handle_srtp(now, from, &mut datagram)
                .map(|m| (m.kind, datagram[..m.len].to_vec()))
        };
        for seq in [10u16, 11, 13] {
            assert_eq!(
                receive(&source_packet(1, seq)).unwrap(),
                (MediaKind::Video, source_packet(1, seq))
            );
        }
        // 12 was lost and comes on the RTX stream: OSN, then the payload.
        let rtx = |rtx_seq: u16, osn: u16| {
            let original = source_packet(1, osn);
            let mut p = original[..12].to_vec();
            p[1] = 101;
            p[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
            p[8..12].copy_from_slice(&2u32.to_be_bytes());
            p.extend_from_slice(&osn.to_be_bytes());
            p.extend_from_slice(&original[12..]);
            p
        };
        assert_eq!(
            receive(&rtx(500, 12)).unwrap(),
            (MediaKind::Video, source_packet(1, 12))
        );
        // Again, or for a packet that came: not forwarded twice.
        for (rtx_seq, osn) in [(501, 12), (502, 11)] {
            assert!(matches!(
                receive(&rtx(rtx_seq, osn)),
                Err(SessionError::Rtx(RtxError::AlreadyReceived))
            ));
        }
        // A padding-only probe.
        let mut probe = rtx(503, 14)[..12].to_vec();
        probe[0] |= 0x20;
        probe.extend_from_slice(&[0, 0, 0, 4]);
        assert!(matches!(
            receive(&probe),
            Err(SessionError::Rtx(RtxError::Empty))
        ));
        // Receive statistics count the repaired packet as received.
        let RoleState::Publisher(state) = &mut publisher.role else {
            unreachable!()
        };
        let block = state.stats[stats_slot(MediaKind::Video, 0)]
            .report_block(now)
            .unwrap();
        assert_eq!((block.ssrc, block.cumulative_lost), (Ssrc(1), 0));
        assert_eq!(block.extended_highest_seq, 13);
    }

    /// A connected publisher of simulcast VP8 (PT 100, RTX 101) with layers `l`, `h`: the
    /// RTP stream id in extension 10, the repaired one in 11.
    fn simulcast_publisher() -> Session {
        let mut spec = publisher_spec();
        spec.role = SessionRole::Publisher {
            tracks: vec![PublishedTrack {
                rtx_pt: Some(101),
                simulcast: Some(crate::control::SimulcastLayers {
                    rids: vec!["l".into(), "h".into()],
                    rid_ext: 10,
                    repaired_rid_ext: Some(11),
                }),
                ..vp8_track(100)
            }],
        };
        let now = Instant::now();
        let mut publisher = connected_with_test_keys(spec, now);
        publisher.remote = Some("127.0.0.1:5000".parse().unwrap());
        publisher
    }

    #[test]
    fn a_simulcast_publishers_layers_are_told_apart_by_rid_and_each_reported_and_asked_on_its_own()
    {
        let mut publisher = simulcast_publisher();
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (mut tx, mut rx) = (peer_context(false), peer_context(true));
        let mut receive = |publisher: &mut Session, plain: &[u8]| {
            let mut datagram = srtp_datagram(&mut tx, plain);
            publisher
                .handle_srtp(now, from, &mut datagram)
                .map(|m| (m.layer, m.keyframe, datagram[..m.len].to_vec()))
        };
        // Unknown until an SSRC carried a rid.
        assert!(matches!(
            receive(&mut publisher, &layer_packet(100, 5, 1, None, true)),
            Err(SessionError::UnknownLayer(5))
        ));
        let first_h = layer_packet(100, 9, 50, Some((10, b"h")), true);
        assert_eq!(
            receive(&mut publisher, &first_h).unwrap(),
            (1, true, first_h.clone())
        );
        assert_eq!(
            receive(
                &mut publisher,
                &layer_packet(100, 7, 1, Some((10, b"l")), false)
            )
            .unwrap()
            .0,
            0
        );
        for seq in [2u16, 4] {
            assert_eq!(
                receive(&mut publisher, &layer_packet(100, 7, seq, None, false))
                    .unwrap()
                    .0,
                0
            );
        }
        assert_eq!(
            receive(&mut publisher, &layer_packet(100, 9, 51, None, false))
                .unwrap()
                .0,
            1
        );
        // Layer l's packet 3 comes on its RTX SSRC, known by the repaired rid.
        let original = layer_packet(100, 7, 3, None, false);
        let mut repair = layer_packet(101, 70, 900, Some((11, b"l")), false);
        let header_len = RtpHeader::parse(&repair).unwrap().payload_offset();
        repair.truncate(header_len);
        repair.extend_from_slice(&3u16.to_be_bytes());
        repair.extend_from_slice(&original[12..]);
        let (layer, _, restored) = receive(&mut publisher, &repair).unwrap();
        assert_eq!(layer, 0);
        let restored = RtpHeader::parse(&restored).unwrap();
        assert_eq!((restored.ssrc(), restored.sequence_number()), (Ssrc(7), 3));

        // One report block per layer SSRC.
        publisher.handle_timeout(now + RECEIVER_REPORT_INTERVAL);
        let mut blocks = Vec::new();
        let mut plis = Vec::new();
        let mut drain =
            |publisher: &mut Session, blocks: &mut Vec<(u32, u32)>, plis: &mut Vec<u32>| {
                while let Some(mut t) = publisher.poll_transmit() {
                    let n = rx.unprotect_rtcp(&mut t.contents).unwrap();
                    for packet in RtcpIter::new(&t.contents[..n]).flatten() {
                        match packet {
                            Rtcp::ReceiverReport(rr) => blocks.extend(
                                rr.reports
                                    .iter()
                                    .map(|b| (b.ssrc.0, b.extended_highest_seq)),
                            ),
                            Rtcp::Pli(pli) => plis.push(pli.media_ssrc.0),
                            _ => {}
                        }
                    }
                }
            };
        drain(&mut publisher, &mut blocks, &mut plis);
        blocks.sort_unstable();
        assert_eq!(blocks, [(7, 4), (9, 51)]);
        // Keyframe requests name the layer's SSRC, and are throttled per layer.
        publisher.request_keyframe(now, 1);
        publisher.request_keyframe(now, 0);
        publisher.request_keyframe(now, 1);
        drain(&mut publisher, &mut blocks, &mut plis);
        assert_eq!(plis, [9, 7]);
    }

    #[test]
    fn a_keyframe_answers_the_requests_merged_while_it_was_on_its_way() {
        let start = Instant::now();
        let plis_after = |keyframe_arrives: bool| {
            let (mut publisher, from, mut tx, mut rx) = publisher_with_peer(start);
            let mut send = |publisher: &mut Session, seq: u16, key: bool, now: Instant| {
                let mut datagram = srtp_datagram(&mut tx, &layer_packet(100, 7, seq, None, key));
                publisher.handle_srtp(now, from, &mut datagram).unwrap();
            };
            send(&mut publisher, 1, true, start);
            // Three players ask at once: one PLI now, the others merged.
            for _ in 0..3 {
                publisher.request_keyframe(start + Duration::from_millis(100), 0);
            }
            if keyframe_arrives {
                send(&mut publisher, 2, true, start + Duration::from_millis(150));
            }
            publisher.handle_timeout(start + Duration::from_secs(1));
            let mut plis = 0;
            while let Some(mut t) = publisher.poll_transmit() {
                let n = rx.unprotect_rtcp(&mut t.contents).unwrap();
                plis += RtcpIter::new(&t.contents[..n])
                    .flatten()
                    .filter(|p| matches!(p, Rtcp::Pli(_)))
                    .count();
            }
            assert_eq!(publisher.traffic().keyframe_requests_out, plis as u64);
            plis
        };
        assert_eq!(plis_after(true), 1);
        // No keyframe came: the merged requests go out when the interval ends.
        assert_eq!(plis_after(false), 2);
    }
}
