//! The relay's side of the SDP exchange with an edge: an offer of the publisher's own codecs
//! and payload types (so packets need no payload type rewriting on the way), and what of it the
//! edge's answer keeps.

use crate::control::registry::StreamTrack;
use crate::control::{PlayedTrack, PlayerLayers, RtxStream};
use crate::sdp::{
    self, Direction, Fingerprint, MediaKind, OfferMedia, OfferParams, SendTrack, SessionDescription,
};

/// Our offer for the edge, with our ICE credentials and DTLS fingerprint, and the tracks the
/// relay session sends if the edge accepts all of it.
pub(super) fn relay_offer(
    stream: &str,
    tracks: &[StreamTrack],
    local_ice: &ice::IceCredentials,
    fingerprint: [u8; 32],
    next_ssrc: impl FnMut() -> u32,
) -> (String, Vec<PlayedTrack>) {
    let (media, played) = relay_media(stream, tracks, next_ssrc);
    let offer = sdp::write_offer(&OfferParams {
        ice_ufrag: local_ice.ufrag.clone(),
        ice_pwd: local_ice.pwd.clone(),
        fingerprint: Fingerprint(fingerprint),
        media,
    });
    (offer, played)
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
