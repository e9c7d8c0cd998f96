//! Origin → edge relaying (CDN 1.0 step 2): once a stream is publishing, the origin connects to
//! each edge over the Flashphoner WebSocket protocol as a client, publishes the stream there with
//! an offer of its own, and a relay session on the publisher's core sends the stream's packets.
//! The edge sees an ordinary publisher. A relay that fails or loses its edge is retried with
//! backoff for as long as the stream lives, so an edge restart heals without touching the origin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracing::{info, warn};

use crate::control::registry::StreamTrack;
use crate::control::{
    CoreCommand, PlayedTrack, PlayerLayers, RtxStream, SessionId, SessionRole, SessionSpec,
};
use crate::dtls::DtlsRole;
use crate::sdp::{
    self, Direction, Fingerprint, MediaKind, OfferMedia, OfferParams, SendTrack,
    SessionDescription, Setup,
};
use crate::signalling::{media, Signalling, Watcher};
use crate::wcs_protocol::client::{media_session_id, WsClient};
use crate::wcs_protocol::frames::StreamDescription;

/// How long the edge may take for each signalling step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delays after a failed relay: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A relay that stayed up this long starts the next retry from the first delay again.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// An edge to relay to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    /// The node's id in the CDN config.
    pub node_id: u32,
    /// Its host (name or address).
    pub host: String,
    /// Its WebSocket port.
    pub port: u16,
    /// Whether that port speaks wss:// (TLS).
    pub secure: bool,
}

/// The relay targets of a node list: plain ws:// where a node has it, else wss://.
pub fn targets(nodes: &[crate::cdn::config::CdnNode]) -> Vec<RelayTarget> {
    nodes
        .iter()
        .filter_map(|node| {
            let (port, secure) = match (node.ws, node.wss) {
                (Some(ws), _) => (ws, false),
                (None, Some(wss)) => (wss, true),
                (None, None) => return None,
            };
            Some(RelayTarget {
                node_id: node.id,
                host: node.host.clone(),
                port,
                secure,
            })
        })
        .collect()
}

impl RelayTarget {
    fn url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}:{}/", self.host, self.port)
    }
}

/// How one relay attempt ended.
enum Outcome {
    /// The stream is gone: stop relaying it.
    StreamGone,
    /// The relay failed; try again later.
    Failed(String),
}

/// Starts relaying `stream` to every target, each in its own task.
pub fn spawn_relays(state: &Arc<Signalling>, stream: &str, targets: &[RelayTarget]) {
    for target in targets {
        let state = state.clone();
        let stream = stream.to_owned();
        let target = target.clone();
        tokio::spawn(async move { relay_loop(state, target, stream).await });
    }
}

async fn relay_loop(state: Arc<Signalling>, target: RelayTarget, stream: String) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        if state.registry().stream(&stream).is_none() {
            return;
        }
        let started = Instant::now();
        match relay_once(&state, &target, &stream).await {
            Outcome::StreamGone => {
                info!(stream, edge = target.node_id, "relay ended with the stream");
                return;
            }
            Outcome::Failed(why) => {
                if started.elapsed() > HEALTHY_AFTER {
                    backoff = BACKOFF_FIRST;
                }
                warn!(stream, edge = target.node_id, url = target.url(), retry_in = ?backoff, "relay failed: {why}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Our offer for the edge: the publisher's own codecs and payload types, so packets need no
/// payload type rewriting on the way.
fn relay_offer(
    state: &Signalling,
    stream: &str,
    local_ice: &ice::IceCredentials,
) -> Option<(String, Vec<PlayedTrack>)> {
    let tracks = state.registry().stream(stream)?.tracks.clone();
    let (media, played) = relay_media(stream, &tracks, || rand::random::<u32>() | 1);
    let offer = sdp::write_offer(&OfferParams {
        ice_ufrag: local_ice.ufrag.clone(),
        ice_pwd: local_ice.pwd.clone(),
        fingerprint: Fingerprint(state.certificate.fingerprint()),
        media,
    });
    Some((offer, played))
}

/// The m-lines of the relay's offer (mid = the track's index), and the tracks the relay session
/// sends if the edge accepts all of it. Video offers a retransmission stream (RFC 4588) on a
/// payload type no track uses: the edge's NACKs are then answered the way browsers' are, and an
/// edge that does not take rtx (an older rtcdn) leaves it out of its answer
/// ([`keep_answered_rtx`]).
fn relay_media(
    stream: &str,
    tracks: &[StreamTrack],
    mut next_ssrc: impl FnMut() -> u32,
) -> (Vec<OfferMedia>, Vec<PlayedTrack>) {
    let mut media = Vec::new();
    let mut played = Vec::new();
    let free_pt = (96..=127u8).find(|pt| tracks.iter().all(|t| t.codec.pt != *pt));
    for (index, track) in tracks.iter().enumerate() {
        let ssrc = next_ssrc();
        let kind = match track.kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        let rtx = match (track.kind, free_pt) {
            (MediaKind::Video, Some(pt)) => Some(RtxStream {
                pt,
                ssrc: next_ssrc(),
            }),
            _ => None,
        };
        let mut codec = track.codec.clone();
        codec.rtx_pt = rtx.map(|rtx| rtx.pt);
        media.push(OfferMedia {
            mid: index.to_string(),
            kind: track.kind,
            direction: Direction::SendOnly,
            codecs: vec![codec],
            extmaps: Vec::new(),
            send: Some(SendTrack {
                ssrc,
                cname: format!("rtcdn-relay-{stream}"),
                stream_id: stream.to_owned(),
                track_id: format!("{stream}-{kind}"),
                rtx_ssrc: rtx.map(|rtx| rtx.ssrc),
            }),
            send_rids: Vec::new(),
        });
        played.push(PlayedTrack {
            kind: track.kind,
            pt: track.codec.pt,
            ssrc,
            rtx,
            // The relay offers no transport-wide sequence numbers: between two nodes in one
            // operator's network the link is provisioned, not estimated.
            transport_cc: None,
            // Step 1 of simulcast: an edge is sent the highest layer only, as one stream (its
            // offer has no rids), so its players cannot switch layers yet.
            layers: PlayerLayers::choose(&track.rids, Some("high")).unwrap_or(None),
        });
    }
    (media, played)
}

/// Drops the retransmission stream of every track whose m-line (mid = the track's index) the
/// edge answered without it: that edge takes NACK answers as the packets that first went out.
fn keep_answered_rtx(tracks: &mut [PlayedTrack], answer: &SessionDescription) {
    for (index, track) in tracks.iter_mut().enumerate() {
        let Some(rtx) = track.rtx else {
            continue;
        };
        let answered = answer
            .media_by_mid(&index.to_string())
            .and_then(|m| m.codecs.iter().find(|c| c.pt == track.pt))
            .and_then(|c| c.rtx_pt);
        if answered != Some(rtx.pt) {
            track.rtx = None;
        }
    }
}

async fn relay_once(state: &Arc<Signalling>, target: &RelayTarget, stream: &str) -> Outcome {
    // The edge takes our publish only if we prove the CDN's secret, with a token minted for
    // this connection.
    let custom = state
        .relay_auth
        .as_ref()
        .map(|auth| json!({ "relayToken": auth.mint("origin") }));
    let mut ws = match WsClient::connect_with_tls(
        &target.url(),
        STEP_TIMEOUT,
        state.relay_tls.clone(),
        custom,
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let local_ice = ice::IceCredentials::random(&mut rand::thread_rng());
    let Some((offer, mut tracks)) = relay_offer(state, stream, &local_ice) else {
        return Outcome::StreamGone;
    };
    let id = media_session_id();
    let kinds: Vec<MediaKind> = tracks.iter().map(|t| t.kind).collect();
    let has = |kind| kinds.contains(&kind);
    // Subscribed before the keys are read, so no change falls between the two.
    let mut acl_changes = state.acl_changes.subscribe();
    let Some(acl) = state.registry().stream(stream).map(|s| s.acl.clone()) else {
        return Outcome::StreamGone;
    };
    let request = json!({
        "mediaSessionId": id,
        "name": stream,
        "published": true,
        "hasVideo": has(MediaKind::Video),
        "hasAudio": has(MediaKind::Audio),
        "status": "PENDING",
        "record": false,
        "mediaProvider": "WebRTC",
        "sdp": offer,
        // The stream's access list (WCS CDN 2.2), which the edge enforces too.
        "rtcdnAcl": acl,
    });
    if let Err(e) = ws.send("publishStream", request).await {
        return Outcome::Failed(e.to_string());
    }
    let answer = loop {
        match ws.next_within(STEP_TIMEOUT, "setRemoteSDP").await {
            Ok((message, data))
                if message == "setRemoteSDP"
                    && data.first().and_then(Value::as_str) == Some(&id) =>
            {
                match data.get(1).and_then(Value::as_str) {
                    Some(sdp) => break sdp.to_owned(),
                    None => return Outcome::Failed("setRemoteSDP without an SDP".into()),
                }
            }
            Ok((message, data))
                if message == "notifyStreamStatusEvent"
                    && status_of(&data, &id) == Some("FAILED") =>
            {
                return Outcome::Failed(format!("the edge refused: {}", info_of(&data)));
            }
            Ok(_) => continue,
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    };
    let answer = match sdp::parse(&answer) {
        Ok(answer) => answer,
        Err(e) => return Outcome::Failed(format!("the edge's answer: {e}")),
    };
    let Some(fingerprint) = answer.fingerprint else {
        return Outcome::Failed("the edge's answer has no fingerprint".into());
    };
    keep_answered_rtx(&mut tracks, &answer);
    let remote_candidates: Vec<_> = answer
        .candidates
        .iter()
        .copied()
        .filter(|c| c.is_ipv4())
        .collect();
    if remote_candidates.is_empty() {
        return Outcome::Failed("the edge's answer has no IPv4 host candidate".into());
    }
    // The answerer's setup decides: active means the edge is the DTLS client.
    let dtls_role = if answer.setup == Setup::Passive {
        DtlsRole::Client
    } else {
        DtlsRole::Server
    };
    let session = SessionId(rand::random::<u64>() | 1);
    let (core, stream_id) = {
        let mut registry = state.registry();
        let Some(stream_id) = registry.stream(stream).map(|s| s.id) else {
            return Outcome::StreamGone;
        };
        match registry.add_relay(stream, session) {
            Ok(core) => (core, stream_id),
            Err(_) => return Outcome::StreamGone,
        }
    };
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let description = StreamDescription {
        media_session_id: id.clone(),
        name: stream.to_owned(),
        published: true,
        has_audio: has(MediaKind::Audio),
        has_video: has(MediaKind::Video),
    };
    state.watch(
        session,
        Watcher {
            out: notes_tx,
            description,
            bandwidth: Default::default(),
        },
    );
    let spec = SessionSpec {
        id: session,
        stream: stream_id,
        stream_name: stream.to_owned(),
        role: SessionRole::Relay {
            tracks,
            remote_candidates,
        },
        local_ice,
        remote_ice: ice::IceCredentials {
            ufrag: answer.ice_ufrag.clone(),
            pwd: answer.ice_pwd.clone(),
        },
        remote_fingerprint: fingerprint.0,
        dtls_role,
        publisher_core: Some(core),
    };
    state.cores[core.0].send(CoreCommand::AddSession(Box::new(spec)));
    info!(stream, edge = target.node_id, session = %session, "relay session started");

    let outcome = loop {
        tokio::select! {
            message = ws.next() => match message {
                Some((name, data)) if name == "notifyStreamStatusEvent" => match status_of(&data, &id) {
                    Some("PUBLISHING") => info!(stream, edge = target.node_id, "relaying: the edge is publishing"),
                    Some(status @ ("FAILED" | "UNPUBLISHED")) => {
                        break Outcome::Failed(format!("the edge reported {status}: {}", info_of(&data)));
                    }
                    _ => {}
                },
                Some(_) => {}
                None => break Outcome::Failed("the edge closed the WebSocket".into()),
            },
            change = acl_changes.recv() => {
                let keys = match change {
                    Ok((name, keys)) if name == stream => keys,
                    Ok(_) => continue,
                    // Missed some: send what the list is now.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        match state.registry().stream(stream) {
                            Some(s) => s.acl.clone(),
                            None => continue,
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => continue,
                };
                if let Err(e) = ws.send("rtcdnAcl", json!({ "name": stream, "keys": keys })).await {
                    break Outcome::Failed(format!("passing the access list on: {e}"));
                }
            }
            note = notes.recv() => {
                // Our relay session ended on the core: the publisher left, or ICE/DTLS with the
                // edge failed. The note is a FAILED status frame saying which.
                let info = note
                    .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                    .and_then(|v| v["data"][0]["info"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = ws.send("unPublishStream", json!({ "mediaSessionId": id, "name": stream, "published": true })).await;
                ws.close().await;
                let gone = state.registry().stream(stream).is_none();
                return if gone { Outcome::StreamGone } else { Outcome::Failed(format!("relay session ended: {info}")) };
            }
        }
    };
    // The edge side failed: end our relay session without telling ourselves.
    state.unwatch(session);
    media::end_session(state, session, crate::control::EndReason::Deleted);
    ws.close().await;
    outcome
}

fn status_of<'a>(data: &'a [Value], id: &str) -> Option<&'a str> {
    let object = data.first()?;
    (object.get("mediaSessionId")?.as_str()? == id).then(|| object.get("status")?.as_str())?
}

fn info_of(data: &[Value]) -> String {
    data.first()
        .and_then(|o| o.get("info"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::negotiate::{answer_publisher, LocalParams};
    use crate::sdp::Codec;

    fn stream_tracks() -> Vec<StreamTrack> {
        [
            (MediaKind::Audio, Codec::new(111, "opus", 48_000, Some(2))),
            (MediaKind::Video, Codec::new(96, "VP8", 90_000, None)),
        ]
        .into_iter()
        .map(|(kind, codec)| StreamTrack {
            kind,
            codec,
            extmaps: Vec::new(),
            rids: Vec::new(),
        })
        .collect()
    }

    fn offer(media: Vec<OfferMedia>) -> SessionDescription {
        let text = sdp::write_offer(&OfferParams {
            ice_ufrag: "relayufrag".into(),
            ice_pwd: "relaypassword0123456789abc".into(),
            fingerprint: Fingerprint([9; 32]),
            media,
        });
        sdp::parse(&text).unwrap()
    }

    #[test]
    fn the_relay_offers_video_rtx_and_keeps_it_only_if_the_edge_answers_it() {
        let mut ssrcs = 10u32..;
        let (media, played) = relay_media("s", &stream_tracks(), || ssrcs.next().unwrap());
        let rtx = Some(RtxStream { pt: 97, ssrc: 12 });
        let sent: Vec<_> = played.iter().map(|t| (t.pt, t.ssrc, t.rtx)).collect();
        assert_eq!(sent, [(111, 10, None), (96, 11, rtx)]);
        let offer = offer(media);
        assert_eq!(offer.media[1].codecs[0].rtx_pt, Some(97));
        assert_eq!(offer.media[1].rtx_ssrcs, [(11, 12)]);
        assert!(offer.media[0].rtx_ssrcs.is_empty());

        // An edge of this version takes it as any publisher's rtx.
        let local = LocalParams {
            ice_ufrag: "edgeufrag".into(),
            ice_pwd: "edgepassword0123456789abc".into(),
            fingerprint: [7; 32],
            candidates: vec!["127.0.0.1:31000".parse().unwrap()],
        };
        let edge = answer_publisher(&offer, &local).unwrap();
        assert_eq!(edge.tracks[1].rtx_pt, Some(97));
        assert_eq!(edge.tracks[1].rtx_ssrcs, Some((11, 12)));
        let mut tracks = played.clone();
        keep_answered_rtx(&mut tracks, &sdp::parse(&edge.sdp).unwrap());
        assert_eq!(tracks, played);

        // One that answers without it (an older rtcdn) gets the packets as they went out.
        let older = edge
            .sdp
            .replace("a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n", "")
            .replace(" 96 97\r\n", " 96\r\n");
        let mut tracks = played.clone();
        keep_answered_rtx(&mut tracks, &sdp::parse(&older).unwrap());
        assert_eq!(tracks[1].rtx, None);
        assert_eq!(tracks[1].ssrc, 11);
    }

    #[test]
    fn rtx_takes_a_payload_type_no_track_uses() {
        let mut tracks = stream_tracks();
        tracks[1].codec.pt = 97;
        tracks[0].codec.pt = 96;
        let (_, played) = relay_media("s", &tracks, || 5);
        assert_eq!(played[1].rtx.map(|r| r.pt), Some(98));
    }
}
