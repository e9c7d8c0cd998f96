//! The relay's side of the SDP exchange with an edge: an offer of the publisher's own codecs
//! and payload types (so packets need no payload type rewriting on the way), and what of it the
//! edge's answer keeps.
//!
//! A simulcast publisher's layers are offered as a browser offers them (`a=rid:<id> send`,
//! `a=simulcast:send`, the RTP stream id extensions), each on its own SSRC: the edge's
//! answer takes them like a browser's, and its players choose and pin layers as the origin's
//! do. The offer also announces the highest layer's SSRC, which an edge that takes no
//! simulcast (an older rtcdn) is sent as one stream, as before.

use std::net::IpAddr;

use crate::control::registry::StreamTrack;
use crate::control::{PlayedTrack, PlayerLayers, RelayedLayer, RelayedLayers, RtxStream};
use crate::sdp::{
    self, Direction, Extmap, Fingerprint, MediaKind, OfferMedia, OfferParams, SendTrack,
    SessionDescription,
};
use crate::simulcast::MAX_LAYERS;

/// The RTP stream id extension's id in the relay's offer. Chromium's own (and no browser's
/// transport-wide sequence number id, which an edge's player writes into forwarded packets).
const RID_EXT: u8 = 10;
/// The repaired RTP stream id extension's id in the relay's offer, Chromium's too.
const REPAIRED_RID_EXT: u8 = 11;

/// Our offer for the edge, with our ICE credentials and DTLS fingerprint, the tracks the relay
/// session sends if the edge accepts all of it, and the video's simulcast layers offered (see
/// [`keep_answered_layers`]). `active_tcp`: our address, announced as an active TCP candidate
/// when the relay may connect to the edge over TCP (RFC 6544).
pub(super) fn relay_offer(
    stream: &str,
    tracks: &[StreamTrack],
    local_ice: &ice::IceCredentials,
    fingerprint: [u8; 32],
    active_tcp: Option<IpAddr>,
    next_ssrc: impl FnMut() -> u32,
) -> (String, Vec<PlayedTrack>, Option<RelayedLayers>) {
    let (media, played, layers) = relay_media(stream, tracks, next_ssrc);
    let offer = sdp::write_offer(&OfferParams {
        ice_ufrag: local_ice.ufrag.clone(),
        ice_pwd: local_ice.pwd.clone(),
        fingerprint: Fingerprint(fingerprint),
        media,
        active_tcp,
    });
    (offer, played, layers)
}

/// The m-lines of the relay's offer (mid = the track's index), the tracks the relay session
/// sends if the edge accepts all of it, and a simulcast video's layers. Video offers a
/// retransmission stream (RFC 4588) on a payload type no track uses: the edge's NACKs are then
/// answered the way browsers' are, and an edge that does not take rtx (an older rtcdn) leaves
/// it out of its answer ([`keep_answered_rtx`]).
fn relay_media(
    stream: &str,
    tracks: &[StreamTrack],
    mut next_ssrc: impl FnMut() -> u32,
) -> (Vec<OfferMedia>, Vec<PlayedTrack>, Option<RelayedLayers>) {
    let mut media = Vec::new();
    let mut played = Vec::new();
    let mut offered_layers = None;
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
        let layers = match track.kind {
            MediaKind::Video => simulcast_layers(&track.rids, (ssrc, rtx), &mut next_ssrc),
            MediaKind::Audio => None,
        };
        let (extmaps, send_rids) = match &layers {
            Some(layers) => (
                [
                    Some((RID_EXT, sdp::EXT_RTP_STREAM_ID)),
                    layers
                        .repaired_rid_ext
                        .map(|id| (id, sdp::EXT_REPAIRED_RTP_STREAM_ID)),
                ]
                .into_iter()
                .flatten()
                .map(|(id, uri)| Extmap {
                    id,
                    uri: uri.to_owned(),
                })
                .collect(),
                track.rids.clone(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        offered_layers = offered_layers.or(layers);
        media.push(OfferMedia {
            mid: index.to_string(),
            kind: track.kind,
            direction: Direction::SendOnly,
            codecs: vec![codec],
            extmaps,
            send: Some(SendTrack {
                ssrc,
                cname: format!("rtcdn-relay-{stream}"),
                stream_id: stream.to_owned(),
                track_id: format!("{stream}-{kind}"),
                rtx_ssrc: rtx.map(|rtx| rtx.ssrc),
            }),
            send_rids,
        });
        played.push(PlayedTrack {
            kind: track.kind,
            pt: track.codec.pt,
            ssrc,
            rtx,
            // The relay offers no transport-wide sequence numbers: between two nodes in one
            // operator's network the link is provisioned, not estimated.
            transport_cc: None,
            // Until the edge's answer takes every layer (see keep_answered_layers): its
            // highest, as one stream.
            layers: PlayerLayers::choose(&track.rids, Some("high")).unwrap_or(None),
        });
    }
    (media, played, offered_layers)
}

/// The layers of a simulcast video with `rids` (lowest first) as the relay offers them: the
/// highest on the track's own SSRC and rtx SSRC (`track`), which the offer announces, the
/// others on SSRCs of their own. `None` without simulcast.
fn simulcast_layers(
    rids: &[String],
    (ssrc, rtx): (u32, Option<RtxStream>),
    next_ssrc: &mut impl FnMut() -> u32,
) -> Option<RelayedLayers> {
    if rids.len() < 2 || rids.len() > MAX_LAYERS {
        return None;
    }
    let highest = rids.len() - 1;
    let layers = rids
        .iter()
        .enumerate()
        .map(|(layer, rid)| {
            let (ssrc, rtx_ssrc) = if layer == highest {
                (ssrc, rtx.map(|rtx| rtx.ssrc))
            } else {
                (next_ssrc(), rtx.map(|_| next_ssrc()))
            };
            RelayedLayer {
                rid: rid.clone(),
                ssrc,
                rtx_ssrc,
            }
        })
        .collect();
    Some(RelayedLayers {
        rid_ext: RID_EXT,
        repaired_rid_ext: rtx.map(|_| REPAIRED_RID_EXT),
        layers,
    })
}

/// The video's simulcast layers the relay session sends, each on its own SSRC, when the edge's
/// answer took every one of the `offered` (and maps the RTP stream id extension as offered);
/// the video track then chooses no layer. `None` otherwise, and the video track stays its
/// highest layer as one stream: an edge that answers without simulcast (an older rtcdn) gets
/// what it got before. Layers have retransmission streams only when the edge took rtx
/// ([`keep_answered_rtx`] first) and the repaired RTP stream id extension: a layer's
/// retransmissions could not be told apart without it.
pub(super) fn keep_answered_layers(
    tracks: &mut [PlayedTrack],
    offered: Option<RelayedLayers>,
    answer: &SessionDescription,
) -> Option<RelayedLayers> {
    let mut layers = offered?;
    let (index, video) = tracks
        .iter_mut()
        .enumerate()
        .find(|(_, t)| t.kind == MediaKind::Video)?;
    let m = answer.media_by_mid(&index.to_string())?;
    let maps = |id: u8, uri: &str| m.extmaps.iter().any(|e| e.id == id && e.uri == uri);
    let took_all = m.recv_rids.iter().eq(layers.layers.iter().map(|l| &l.rid));
    if !took_all || !maps(layers.rid_ext, sdp::EXT_RTP_STREAM_ID) {
        return None;
    }
    let repaired = layers
        .repaired_rid_ext
        .filter(|&id| maps(id, sdp::EXT_REPAIRED_RTP_STREAM_ID));
    if video.rtx.is_none() || repaired.is_none() {
        video.rtx = None;
        layers.repaired_rid_ext = None;
        for layer in &mut layers.layers {
            layer.rtx_ssrc = None;
        }
    }
    video.layers = None;
    Some(layers)
}

/// Drops the retransmission stream of every track whose m-line (mid = the track's index) the
/// edge answered without it: that edge takes NACK answers as the packets that first went out.
pub(super) fn keep_answered_rtx(tracks: &mut [PlayedTrack], answer: &SessionDescription) {
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

    fn edge_local() -> LocalParams {
        LocalParams {
            ice_ufrag: "edgeufrag".into(),
            ice_pwd: "edgepassword0123456789abc".into(),
            fingerprint: [7; 32],
            candidates: vec!["127.0.0.1:31000".parse().unwrap()],
            tcp_candidates: Vec::new(),
        }
    }

    fn simulcast_tracks() -> Vec<StreamTrack> {
        let mut tracks = stream_tracks();
        tracks[1].rids = vec!["l".into(), "m".into(), "h".into()];
        tracks
    }

    fn offer(media: Vec<OfferMedia>) -> SessionDescription {
        let text = sdp::write_offer(&OfferParams {
            ice_ufrag: "relayufrag".into(),
            ice_pwd: "relaypassword0123456789abc".into(),
            fingerprint: Fingerprint([9; 32]),
            media,
            active_tcp: None,
        });
        sdp::parse(&text).unwrap()
    }

    #[test]
    fn the_relay_offers_video_rtx_and_keeps_it_only_if_the_edge_answers_it() {
        let mut ssrcs = 10u32..;
        let (media, played, layers) = relay_media("s", &stream_tracks(), || ssrcs.next().unwrap());
        assert_eq!(layers, None);
        let rtx = Some(RtxStream { pt: 97, ssrc: 12 });
        let sent: Vec<_> = played.iter().map(|t| (t.pt, t.ssrc, t.rtx)).collect();
        assert_eq!(sent, [(111, 10, None), (96, 11, rtx)]);
        let offer = offer(media);
        assert_eq!(offer.media[1].codecs[0].rtx_pt, Some(97));
        assert_eq!(offer.media[1].rtx_ssrcs, [(11, 12)]);
        assert!(offer.media[0].rtx_ssrcs.is_empty());

        // An edge of this version takes it as any publisher's rtx.
        let edge = answer_publisher(&offer, &edge_local()).unwrap();
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
    fn a_relay_that_may_go_over_tcp_offers_an_active_tcp_candidate_the_edge_takes() {
        let ice = ice::IceCredentials {
            ufrag: "relayufrag".into(),
            pwd: "relaypassword0123456789abc".into(),
        };
        let ip: IpAddr = "10.77.2.1".parse().unwrap();
        let mut ssrcs = 10u32..;
        let (text, _, _) = relay_offer("s", &stream_tracks(), &ice, [9; 32], Some(ip), || {
            ssrcs.next().unwrap()
        });
        let active = " 1 tcp 1524629503 10.77.2.1 9 typ host tcptype active\r\n";
        assert_eq!(text.matches(active).count(), 2, "one per m-line: {text}");
        let parsed = sdp::parse(&text).unwrap();
        assert!(parsed.candidates.is_empty() && parsed.tcp_candidates.is_empty());
        // The edge answers it as any offer, with its own candidates.
        let edge = answer_publisher(&parsed, &edge_local()).unwrap();
        assert!(edge.sdp.contains("127.0.0.1 31000 typ host"));
        let (text, _, _) = relay_offer("s", &stream_tracks(), &ice, [9; 32], None, || 1);
        assert!(!text.contains("tcptype"), "a UDP relay offers none");
    }

    #[test]
    fn rtx_takes_a_payload_type_no_track_uses() {
        let mut tracks = stream_tracks();
        tracks[1].codec.pt = 97;
        tracks[0].codec.pt = 96;
        let (_, played, _) = relay_media("s", &tracks, || 5);
        assert_eq!(played[1].rtx.map(|r| r.pt), Some(98));
    }

    #[test]
    fn every_layer_is_offered_as_a_browser_offers_it_and_taken_by_an_edge() {
        let mut ssrcs = 10u32..;
        let (media, played, offered) =
            relay_media("s", &simulcast_tracks(), || ssrcs.next().unwrap());
        // Audio 10; video 11 (rtx 12) is the highest layer's, announced; l and m draw theirs.
        let layer = |rid: &str, ssrc, rtx_ssrc| RelayedLayer {
            rid: rid.into(),
            ssrc,
            rtx_ssrc,
        };
        let expected = RelayedLayers {
            rid_ext: RID_EXT,
            repaired_rid_ext: Some(REPAIRED_RID_EXT),
            layers: vec![
                layer("l", 13, Some(14)),
                layer("m", 15, Some(16)),
                layer("h", 11, Some(12)),
            ],
        };
        assert_eq!(offered.as_ref(), Some(&expected));
        let offer = offer(media);
        let video = &offer.media[1];
        assert_eq!(video.send_rids, ["l", "m", "h"]);
        assert_eq!(video.ssrcs, [11]);
        assert_eq!(video.rtx_ssrcs, [(11, 12)]);
        let extmaps: Vec<_> = video
            .extmaps
            .iter()
            .map(|e| (e.id, e.uri.as_str()))
            .collect();
        assert_eq!(
            extmaps,
            [
                (10, sdp::EXT_RTP_STREAM_ID),
                (11, sdp::EXT_REPAIRED_RTP_STREAM_ID)
            ]
        );
        assert!(offer.media[0].send_rids.is_empty() && offer.media[0].extmaps.is_empty());

        // An edge of this version registers the same layers, told apart by the same ids.
        let edge = answer_publisher(&offer, &edge_local()).unwrap();
        let simulcast = edge.tracks[1].simulcast.as_ref().expect("simulcast");
        assert_eq!(simulcast.rids, ["l", "m", "h"]);
        assert_eq!(
            (simulcast.rid_ext, simulcast.repaired_rid_ext),
            (RID_EXT, Some(REPAIRED_RID_EXT))
        );
        assert_eq!(edge.stream_tracks[1].rids, ["l", "m", "h"]);
        let answer = sdp::parse(&edge.sdp).unwrap();
        let mut tracks = played.clone();
        keep_answered_rtx(&mut tracks, &answer);
        let layers = keep_answered_layers(&mut tracks, offered.clone(), &answer);
        assert_eq!(layers, Some(expected.clone()));
        assert_eq!(tracks[1].layers, None, "every layer: none chosen");
        assert_eq!(tracks[1].rtx, played[1].rtx);

        // Without the repaired stream id the layers go without retransmission streams.
        let no_repair = edge.sdp.replace(
            "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n",
            "",
        );
        assert_ne!(no_repair, edge.sdp);
        let mut tracks = played.clone();
        let answer = sdp::parse(&no_repair).unwrap();
        keep_answered_rtx(&mut tracks, &answer);
        let layers = keep_answered_layers(&mut tracks, offered.clone(), &answer).unwrap();
        assert_eq!(layers.repaired_rid_ext, None);
        assert!(layers.layers.iter().all(|l| l.rtx_ssrc.is_none()));
        assert_eq!(tracks[1].rtx, None);
    }

    #[test]
    fn an_edge_that_takes_no_simulcast_gets_the_highest_layer_as_one_stream() {
        let mut ssrcs = 10u32..;
        let (media, played, offered) =
            relay_media("s", &simulcast_tracks(), || ssrcs.next().unwrap());
        let edge = answer_publisher(&offer(media), &edge_local()).unwrap();
        // An rtcdn from before simulcast answers without a=simulcast and the rid extensions.
        let older: String = edge
            .sdp
            .split_inclusive("\r\n")
            .filter(|l| !l.contains("simulcast") && !l.starts_with("a=rid") && !l.contains("-id"))
            .collect();
        assert_ne!(older, edge.sdp);
        let answer = sdp::parse(&older).unwrap();
        let mut tracks = played.clone();
        keep_answered_rtx(&mut tracks, &answer);
        assert_eq!(keep_answered_layers(&mut tracks, offered, &answer), None);
        let highest = PlayerLayers {
            count: 3,
            target: 2,
            pinned: true,
        };
        assert_eq!(tracks[1].layers, Some(highest));
        assert_eq!((tracks[1].ssrc, tracks[1].rtx), (11, played[1].rtx));
        // So does one that took only some layers, or the rids without their extension.
        let partial = edge
            .sdp
            .replace("a=simulcast:recv l;m;h", "a=simulcast:recv l;h");
        let no_rid_ext = edge.sdp.replace(
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n",
            "",
        );
        for sdp_text in [partial, no_rid_ext] {
            assert_ne!(sdp_text, edge.sdp);
            let mut tracks = played.clone();
            let answer = sdp::parse(&sdp_text).unwrap();
            let offered =
                simulcast_layers(&simulcast_tracks()[1].rids, (11, played[1].rtx), &mut || 99);
            assert_eq!(keep_answered_layers(&mut tracks, offered, &answer), None);
            assert_eq!(tracks[1].layers, Some(highest));
        }
    }
}
