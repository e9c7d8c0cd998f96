//! One relay attempt over RTMP (`cdn.stream_distribution = "rtmp"`, the seed's other relay
//! mode): a TCP connection to the edge's RTMP listener that publishes one stream there as an
//! encoder would, fed by a tap on the stream at its publisher's core. The edge sees an RTMP
//! ingest, and serves it to its players like any stream.
//!
//! The stream goes as it came, nothing transcoded: H.264 video as classic FLV, H.265 video as
//! Enhanced RTMP `hvc1` (length-prefixed NAL units, as MP4 samples hold them), VP9 video as
//! Enhanced RTMP `vp09`, AV1 video as Enhanced RTMP `av01` (temporal units of OBUs, as MP4
//! samples hold them), Opus audio as Enhanced RTMP, all on one clock ([`RtpToRtmp`]).
//! [`carries`] says which streams RTMP can take; the driver relays the others (VP8, other
//! codecs, and simulcast, whose layers one RTMP stream cannot keep) over WebRTC. Whether a VP9
//! or AV1 stream has spatial layers (SVC) shows only in its packets: RTMP carries one picture
//! per frame, so the edge would get the base layer alone; the push then ends, telling the
//! driver ([`LinkEvent::NotCarried`]) to relay the stream over WebRTC from then on.
//!
//! The stream key proves the CDN's secret (`?relayToken=`, minted for this connection) and
//! carries the stream's access list (`&rtcdnAcl=`, a JSON array), which the edge enforces
//! too. RTMP has no message to change it later, so a change of the list ends the connection
//! without unpublishing: the edge keeps its players waiting for the stream's next copy, and
//! the driver's next attempt publishes it with the new list.

use std::time::{Duration, Instant};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{debug, info};

use super::link::{Job, LinkCommand, LinkEvent, LinkReport, LinkSetup};
use super::RelayTap;
use crate::control::registry::StreamTrack;
use crate::control::relay_planner::{RelayEnd, RelayFailure};
use crate::control::status::SessionStatus;
use crate::control::{EndReason, RelayPath};
use crate::rtmp::push::RtmpPush;
pub use crate::rtmp::rtp_rtmp::CarriedVideo;
use crate::rtmp::rtp_rtmp::{RtmpMessage, RtpToRtmp, CLOCK_BASE_MS};
use crate::sdp::MediaKind;

/// How long the edge may take to connect and take the publish, and to take what we write.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The application rtcdn serves RTMP streams on (WCS's).
const APP: &str = "live";
/// How often the publisher is asked for a keyframe while the push waits for one.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// What of a stream an RTMP push carries: the video codec, payload type and simulcast layer,
/// and the Opus payload type and channels when it has audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub video: CarriedVideo,
    pub video_pt: u8,
    pub layer: u8,
    pub audio: Option<(u8, u8)>,
}

/// What an RTMP push of `tracks` carries, or why it cannot: RTMP between rtcdn nodes takes
/// H.264, H.265, VP9 and AV1 video and Opus audio as they are.
pub fn carries(name: &str, tracks: &[StreamTrack]) -> Result<Carried, String> {
    let video = tracks.iter().find(|t| t.kind == MediaKind::Video);
    // One RTMP stream is one picture: a WebRTC relay keeps every layer for the edge's players.
    if let Some(layers) = video.map(|v| v.rids.len()).filter(|&n| n > 1) {
        return Err(format!(
            "RTMP relays carry one picture; {name} is simulcast with {layers} layers"
        ));
    }
    let (video, video_pt, layer) = match video {
        Some(track) if track.codec.name.eq_ignore_ascii_case("H264") => {
            let (pt, layer) = crate::rtmp::player::h264_video(name, tracks).map_err(|r| r.why)?;
            (CarriedVideo::H264, pt, layer)
        }
        Some(track) if track.codec.name.eq_ignore_ascii_case("H265") => {
            (CarriedVideo::H265, track.codec.pt, 0)
        }
        Some(track) if track.codec.name.eq_ignore_ascii_case("VP9") => {
            (CarriedVideo::Vp9, track.codec.pt, 0)
        }
        Some(track) if track.codec.name.eq_ignore_ascii_case("AV1") => {
            (CarriedVideo::Av1, track.codec.pt, 0)
        }
        Some(track) => {
            return Err(format!(
                "RTMP relays carry H.264, H.265, VP9 and AV1 video; {name}'s is {}",
                track.codec.name.to_uppercase()
            ))
        }
        None => {
            return Err(format!(
                "RTMP relays carry H.264, H.265, VP9 or AV1 video; {name} has none"
            ))
        }
    };
    let audio = match tracks.iter().find(|t| t.kind == MediaKind::Audio) {
        None => None,
        Some(track) if track.codec.name.eq_ignore_ascii_case("opus") => Some((
            track.codec.pt,
            track.codec.channels.unwrap_or(2).clamp(1, 2) as u8,
        )),
        Some(track) => {
            return Err(format!(
                "RTMP relays carry Opus audio; {name}'s is {}",
                track.codec.name.to_uppercase()
            ))
        }
    };
    Ok(Carried {
        video,
        video_pt,
        layer,
        audio,
    })
}

/// The stream key for `name`: the relay token and the access list as query parameters.
pub fn stream_key(name: &str, relay_token: Option<&str>, acl: &[String]) -> String {
    let mut key = name.to_owned();
    let mut sep = '?';
    if let Some(token) = relay_token {
        key.push(sep);
        key.push_str("relayToken=");
        key.extend(utf8_percent_encode(token, NON_ALPHANUMERIC));
        sep = '&';
    }
    let acl = serde_json::to_string(acl).unwrap_or_else(|_| "[]".into());
    key.push(sep);
    key.push_str("rtcdnAcl=");
    key.extend(utf8_percent_encode(&acl, NON_ALPHANUMERIC));
    key
}

/// Starts `job` over RTMP in a task of its own.
pub(super) fn spawn(
    job: Job,
    carried: Carried,
    setup: std::sync::Arc<LinkSetup>,
    reports: UnboundedSender<LinkReport>,
) -> super::link::Link {
    let (link, commands) = super::link::Link::new(&job);
    tokio::spawn(async move {
        let end = relay(&job, carried, &setup, commands, &reports).await;
        let _ = reports.send(LinkReport {
            attempt: job.attempt,
            event: LinkEvent::Ended(end),
        });
    });
    link
}

/// The push's connection and what it turns the tap's packets into.
struct Pusher {
    socket: TcpStream,
    push: RtmpPush,
    media: RtpToRtmp,
    /// The push's clock (see [`RtpToRtmp`]).
    started: Instant,
    dropped: u64,
    keyframe_asked: Option<Instant>,
    with_audio: bool,
    /// Reused for each batch.
    messages: Vec<RtmpMessage>,
}

impl Pusher {
    /// Writes what the push has for the edge, within [`STEP_TIMEOUT`].
    async fn flush(&mut self) -> Result<(), RelayFailure> {
        if self.push.output().is_empty() {
            return Ok(());
        }
        let written = tokio::time::timeout(STEP_TIMEOUT, self.socket.write_all(self.push.output()));
        match written.await {
            Ok(Ok(())) => {
                self.push.clear_output();
                Ok(())
            }
            Ok(Err(e)) => Err(RelayFailure::Link(format!("writing to the edge: {e}"))),
            Err(_) => Err(RelayFailure::Link(
                "the edge took nothing we sent for 10 s".into(),
            )),
        }
    }

    /// What the tap queued, as RTMP messages for the edge.
    fn take_packets(&mut self, tap: &mut RelayTap) -> Result<(), RelayFailure> {
        let dropped = tap.receiver.dropped();
        if dropped > self.dropped {
            debug!(
                packets = dropped - self.dropped,
                "RTMP push behind: packets dropped, waiting for the next keyframe"
            );
            self.dropped = dropped;
            self.media.resync();
        }
        let now_ms = CLOCK_BASE_MS + self.started.elapsed().as_millis() as u32;
        let mut packets = Vec::new();
        while let Some(packet) = tap.receiver.pop() {
            packets.push(packet);
        }
        let batch = packets.iter().map(|p| (p.audio(), p.packet()));
        self.media.push(batch, now_ms, &mut self.messages);
        let protocol = |e: crate::rtmp::RtmpError| RelayFailure::Link(e.to_string());
        for message in self.messages.drain(..) {
            match message {
                RtmpMessage::Metadata { size } => {
                    let codec = self.media.codec_id();
                    self.push.send_metadata(codec, size, self.with_audio)
                }
                RtmpMessage::Video { timestamp_ms, body } => {
                    self.push.send_video(timestamp_ms, Bytes::from(body))
                }
                RtmpMessage::Audio { timestamp_ms, body } => {
                    self.push.send_audio(timestamp_ms, Bytes::from(body))
                }
            }
            .map_err(protocol)?;
        }
        Ok(())
    }

    /// Whether the publisher should be asked for a keyframe now: the push waits for one (its
    /// start, or a loss), and the last ask was long enough ago.
    fn wants_keyframe(&mut self) -> bool {
        let due = self
            .keyframe_asked
            .is_none_or(|at| at.elapsed() >= KEYFRAME_REQUEST_INTERVAL);
        if self.media.waits_for_keyframe() && due {
            self.keyframe_asked = Some(Instant::now());
            return true;
        }
        false
    }
}

async fn relay(
    job: &Job,
    carried: Carried,
    setup: &LinkSetup,
    mut commands: UnboundedReceiver<LinkCommand>,
    reports: &UnboundedSender<LinkReport>,
) -> RelayEnd {
    let (stream, edge) = (job.stream.as_str(), job.target.node_id);
    // Connecting and publishing, unless the driver stops the attempt first (dropping the
    // socket ends whatever the edge started for it). A new access list goes with the next
    // attempt.
    let connecting = connect(job, carried, setup);
    tokio::pin!(connecting);
    let mut acl_changed = false;
    let pusher = loop {
        tokio::select! {
            result = &mut connecting => break result,
            command = commands.recv() => match command {
                Some(LinkCommand::PassAcl(_)) => acl_changed = true,
                Some(LinkCommand::Stop) | None => return RelayEnd::Stopped,
            },
        }
    };
    let mut pusher = match pusher {
        Ok(pusher) => pusher,
        Err(failure) => return RelayEnd::Failed(failure),
    };
    if acl_changed {
        return RelayEnd::Failed(acl_change());
    }
    let (status_tx, mut statuses) = mpsc::unbounded_channel();
    let Some(mut tap) = setup.host.open_relay_tap(
        stream,
        job.relayed.id,
        carried.layer,
        carried.audio.is_some(),
        status_tx,
    ) else {
        finish(&mut pusher).await;
        return RelayEnd::StreamGone;
    };
    // The core asks the publisher for a keyframe at the start when it has none cached.
    pusher.keyframe_asked = Some(Instant::now());
    info!(stream, edge, session = %tap.id, url = rtmp_url(job), audio = carried.audio.is_some(), "relay: publishing over RTMP");
    let _ = reports.send(LinkReport {
        attempt: job.attempt,
        event: LinkEvent::Up(RelayPath::Rtmp),
    });
    let mut buf = vec![0u8; 4096];
    let failure = loop {
        tokio::select! {
            () = tap.receiver.wait() => {
                if let Err(failure) = pusher.take_packets(&mut tap) {
                    break failure;
                }
                if let Some(why) = pusher.media.not_carried() {
                    let _ = reports.send(LinkReport {
                        attempt: job.attempt,
                        event: LinkEvent::NotCarried(why),
                    });
                    break RelayFailure::Link(format!("not over RTMP: {why}"));
                }
                if pusher.wants_keyframe() {
                    setup.host.request_keyframe(&tap);
                }
                if let Err(failure) = pusher.flush().await {
                    break failure;
                }
                if tap.receiver.is_finished() {
                    // The core dropped the tap: the stream ended (its status says how).
                    let reason = match statuses.try_recv() {
                        Ok(SessionStatus::Ended(reason)) => reason,
                        _ => EndReason::PublisherLeft,
                    };
                    finish(&mut pusher).await;
                    return RelayEnd::Failed(RelayFailure::Session(reason));
                }
            }
            read = pusher.socket.read(&mut buf) => match read {
                Ok(0) => break RelayFailure::Link("the edge closed the RTMP connection".into()),
                Ok(n) => {
                    // Acknowledgements, pings; a late refusal (the edge ended the stream).
                    let handled = pusher.push.handle_input(&buf[..n]);
                    if let Err(e) = handled {
                        break RelayFailure::EdgeEnded { status: "FAILED".into(), info: e.to_string() };
                    }
                    if let Err(failure) = pusher.flush().await {
                        break failure;
                    }
                }
                Err(e) => break RelayFailure::Link(format!("reading from the edge: {e}")),
            },
            status = statuses.recv() => match status {
                Some(SessionStatus::Ended(reason)) => {
                    // What the tap still holds goes first: the stream's last frames.
                    let _ = pusher.take_packets(&mut tap);
                    finish(&mut pusher).await;
                    return RelayEnd::Failed(RelayFailure::Session(reason));
                }
                Some(_) => {}
                None => {
                    finish(&mut pusher).await;
                    return RelayEnd::StreamGone;
                }
            },
            command = commands.recv() => match command {
                Some(LinkCommand::PassAcl(_)) => {
                    // Closed without unpublishing: see the module docs.
                    setup.host.close_relay_session(tap.id);
                    return RelayEnd::Failed(acl_change());
                }
                Some(LinkCommand::Stop) | None => {
                    setup.host.close_relay_session(tap.id);
                    finish(&mut pusher).await;
                    return RelayEnd::Stopped;
                }
            },
        }
    };
    setup.host.close_relay_session(tap.id);
    RelayEnd::Failed(failure)
}

fn acl_change() -> RelayFailure {
    RelayFailure::Link("the stream's access list changed: published again with the new one".into())
}

fn rtmp_url(job: &Job) -> String {
    let host = crate::config::addresses::url_host(&job.target.host);
    format!("rtmp://{host}:{}/{APP}", job.target.rtmp_port)
}

/// Connects to the edge's RTMP listener and publishes the stream there.
async fn connect(job: &Job, carried: Carried, setup: &LinkSetup) -> Result<Pusher, RelayFailure> {
    let link = |what: &str, e: &dyn std::fmt::Display| {
        RelayFailure::Link(format!("{what} {}: {e}", rtmp_url(job)))
    };
    let address = (job.target.host.as_str(), job.target.rtmp_port);
    let socket = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| link("connecting to", &"timed out"))?
        .map_err(|e| link("connecting to", &e))?;
    let _ = socket.set_nodelay(true);
    let token = setup.auth.as_ref().map(|auth| auth.mint("origin"));
    let key = stream_key(&job.stream, token.as_deref(), &job.relayed.acl);
    let push = RtmpPush::new(&rtmp_url(job), APP, &key).map_err(|e| link("starting", &e))?;
    let mut pusher = Pusher {
        socket,
        push,
        media: RtpToRtmp::new(carried.video, carried.video_pt, carried.audio),
        started: Instant::now(),
        dropped: 0,
        keyframe_asked: None,
        with_audio: carried.audio.is_some(),
        messages: Vec::new(),
    };
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !pusher.push.is_publishing() {
        pusher.flush().await?;
        let read = tokio::time::timeout_at(deadline, pusher.socket.read(&mut buf))
            .await
            .map_err(|_| link("publishing to", &"no answer within 10 s"))?
            .map_err(|e| link("reading from", &e))?;
        if read == 0 {
            return Err(link("publishing to", &"the edge closed the connection"));
        }
        pusher
            .push
            .handle_input(&buf[..read])
            .map_err(|e| match e {
                crate::rtmp::RtmpError::Refused(why) => RelayFailure::Refused(why),
                other => link("publishing to", &other),
            })?;
    }
    // The metadata first, as encoders send it: the edge registers the stream's audio track
    // from it, whichever of the audio and video sequence starts comes first.
    let codec = pusher.media.codec_id();
    pusher
        .push
        .send_metadata(codec, None, pusher.with_audio)
        .map_err(|e| link("publishing to", &e))?;
    pusher.flush().await?;
    Ok(pusher)
}

/// Unpublishes on the edge (its players hear that the publisher stopped) and closes.
async fn finish(pusher: &mut Pusher) {
    if pusher.push.finish().is_ok() {
        let _ = pusher.flush().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), pusher.socket.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Codec;

    fn track(kind: MediaKind, name: &str, pt: u8) -> StreamTrack {
        StreamTrack {
            kind,
            codec: Codec {
                pt,
                name: name.into(),
                clock_rate: 90_000,
                channels: (kind == MediaKind::Audio).then_some(2),
                fmtp: None,
                rtcp_fb: Vec::new(),
                rtx_pt: None,
            },
            extmaps: Vec::new(),
            rids: Vec::new(),
        }
    }

    #[test]
    fn rtmp_carries_h264_h265_vp9_and_av1_with_opus_or_no_audio_and_says_why_not_otherwise() {
        let h264 = track(MediaKind::Video, "H264", 102);
        let opus = track(MediaKind::Audio, "opus", 111);
        assert_eq!(
            carries("cam", &[opus.clone(), h264.clone()]),
            Ok(Carried {
                video: CarriedVideo::H264,
                video_pt: 102,
                layer: 0,
                audio: Some((111, 2))
            })
        );
        assert_eq!(
            carries("cam", std::slice::from_ref(&h264)).unwrap().audio,
            None
        );
        let vp8 = track(MediaKind::Video, "VP8", 96);
        let why = carries("cam", &[opus.clone(), vp8]).unwrap_err();
        assert!(
            why.contains("H.264, H.265, VP9 and AV1") && why.contains("VP8"),
            "{why}"
        );
        let h265 = track(MediaKind::Video, "H265", 49);
        assert_eq!(
            carries("cam", &[opus.clone(), h265.clone()]),
            Ok(Carried {
                video: CarriedVideo::H265,
                video_pt: 49,
                layer: 0,
                audio: Some((111, 2))
            })
        );
        let mut simulcast_h265 = h265;
        simulcast_h265.rids = vec!["l".into(), "h".into()];
        let why = carries("cam", &[simulcast_h265]).unwrap_err();
        assert!(why.contains("simulcast with 2 layers"), "{why}");
        let why = carries("cam", std::slice::from_ref(&opus)).unwrap_err();
        assert!(why.contains("H.265") && why.contains("has none"), "{why}");
        let mut vp9 = track(MediaKind::Video, "VP9", 98);
        assert_eq!(
            carries("cam", &[opus, vp9.clone()]),
            Ok(Carried {
                video: CarriedVideo::Vp9,
                video_pt: 98,
                layer: 0,
                audio: Some((111, 2))
            })
        );
        // Simulcast keeps its layers over WebRTC.
        vp9.rids = vec!["l".into(), "h".into()];
        let why = carries("cam", &[vp9]).unwrap_err();
        assert!(why.contains("simulcast with 2 layers"), "{why}");
        let mut av1 = track(MediaKind::Video, "AV1", 45);
        assert_eq!(
            carries("cam", std::slice::from_ref(&av1)),
            Ok(Carried {
                video: CarriedVideo::Av1,
                video_pt: 45,
                layer: 0,
                audio: None
            })
        );
        av1.rids = vec!["l".into(), "m".into(), "h".into()];
        let why = carries("cam", &[av1]).unwrap_err();
        assert!(why.contains("simulcast with 3 layers"), "{why}");
        let pcmu = track(MediaKind::Audio, "PCMU", 0);
        let why = carries("cam", &[pcmu, h264]).unwrap_err();
        assert!(why.contains("Opus") && why.contains("PCMU"), "{why}");
    }

    #[test]
    fn the_stream_key_carries_the_token_and_the_access_list_encoded() {
        assert_eq!(stream_key("cam", None, &[]), "cam?rtcdnAcl=%5B%5D");
        let key = stream_key("cam", Some("a.b-c"), &["k 1".into(), "k&2".into()]);
        let (name, query) = key.split_once('?').unwrap();
        assert_eq!(name, "cam");
        assert_eq!(
            crate::signalling::query_param(query, "relayToken").as_deref(),
            Some("a.b-c")
        );
        let acl = crate::signalling::query_param(query, "rtcdnAcl").unwrap();
        let keys: Vec<String> = serde_json::from_str(&acl).unwrap();
        assert_eq!(keys, ["k 1", "k&2"]);
    }
}
