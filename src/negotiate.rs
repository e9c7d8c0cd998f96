//! Offer → answer decisions for publishers and players, shared by every signalling protocol
//! (WHIP/WHEP now, the Flashphoner WebSocket protocol later). Pure functions over parsed SDP.

use std::net::SocketAddr;

use crate::control::registry::StreamTrack;
use crate::control::{PlayedTrack, PlayerLayers, PublishedTrack, RtxStream, SimulcastLayers};
use crate::dtls::DtlsRole;
use crate::sdp::{
    self, AcceptedMedia, AnswerParams, Codec, Direction, Extmap, Fingerprint, MediaAnswer,
    MediaDescription, MediaKind, SendTrack, SessionDescription, Setup,
};

/// Header extensions rtcdn accepts from publishers and passes on to players whose offers map the
/// same id to the same URI. MID is accepted from publishers but never offered onward: a player's
/// mids differ, and Chromium demultiplexes by MID before SSRC.
const PASSED_EXTENSIONS: &[&str] = &[
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "urn:3gpp:video-orientation",
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
];
const MID_EXTENSION: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// RTCP feedback rtcdn honours; transport-cc too, where the transport-wide sequence number
/// extension is negotiated with it (see `transport_cc`).
const FEEDBACK: &[&str] = &["nack pli", "ccm fir", "goog-remb", "nack"];
const TRANSPORT_CC: &str = "transport-cc";

/// Why an offer cannot be answered; shown to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The SDP did not parse or lacks what WebRTC needs.
    #[error("{0}")]
    Sdp(#[from] sdp::SdpError),
    /// A publisher's offer sends no audio or video rtcdn can take.
    #[error("the offer sends no audio or video in a supported codec (opus; VP8, H264 packetization-mode=1, H265, VP9, AV1)")]
    NothingToPublish,
    /// A player's offer receives nothing the stream has.
    #[error("the offer receives no track of this stream: {0}")]
    NothingToPlay(String),
    /// A player asked for a simulcast layer the stream does not have.
    #[error("{0}")]
    UnknownLayer(String),
}

/// Our side of a negotiation: credentials, certificate, and where the chosen core listens.
pub struct LocalParams {
    /// ICE ufrag.
    pub ice_ufrag: String,
    /// ICE password.
    pub ice_pwd: String,
    /// Our DTLS certificate's fingerprint.
    pub fingerprint: [u8; 32],
    /// Host candidates of the chosen core.
    pub candidates: Vec<SocketAddr>,
    /// Its passive ICE-TCP host candidates (none without ICE-TCP).
    pub tcp_candidates: Vec<SocketAddr>,
}

/// Our DTLS role and `a=setup` for an offer. rtcdn prefers to be the DTLS client (`active`): it
/// then never has to parse a browser's ClientHello (DTLS 1.3 ClientHellos from newer Firefox broke
/// pion-derived servers). Only an offerer that insists on being active makes rtcdn the server.
pub fn dtls_setup(offer: &SessionDescription) -> (Setup, DtlsRole) {
    match offer.setup {
        Setup::Active => (Setup::Passive, DtlsRole::Server),
        Setup::ActPass | Setup::Passive => (Setup::Active, DtlsRole::Client),
    }
}

/// A publisher's negotiated session.
pub struct PublishAnswer {
    /// The SDP answer.
    pub sdp: String,
    /// The tracks for the stream registry.
    pub stream_tracks: Vec<StreamTrack>,
    /// The tracks for the media core.
    pub tracks: Vec<PublishedTrack>,
}

/// A player's negotiated session.
pub struct PlayAnswer {
    /// The SDP answer.
    pub sdp: String,
    /// The tracks for the media core.
    pub tracks: Vec<PlayedTrack>,
}

/// A codec as rtcdn forwards it: only the RTCP feedback rtcdn honours, and a retransmission
/// stream (RFC 4588) only for video, when offered. rtcdn answers NACKs for video only (from its
/// cores' caches, or by asking the publisher), and turns a publisher's retransmissions back into
/// media packets.
fn forwarded(mut codec: Codec, kind: MediaKind, transport_cc: bool) -> Codec {
    if kind != MediaKind::Video {
        codec.rtx_pt = None;
    }
    codec
        .rtcp_fb
        .retain(|fb| FEEDBACK.contains(&fb.as_str()) || (transport_cc && fb == TRANSPORT_CC));
    codec
}

/// The section's transport-wide sequence number extension, when it offers transport-cc
/// feedback for `codec` too: rtcdn takes both or neither.
fn transport_cc(m: &MediaDescription, codec: &Codec) -> Option<Extmap> {
    let extmap = m.extmaps.iter().find(|e| e.uri == sdp::EXT_TRANSPORT_CC)?;
    codec
        .rtcp_fb
        .iter()
        .any(|fb| fb == TRANSPORT_CC)
        .then(|| extmap.clone())
}

/// The `(media, rtx)` SSRCs of an offer's FID group for its (first) media SSRC.
fn offered_rtx_ssrcs(m: &MediaDescription) -> Option<(u32, u32)> {
    let media = *m.ssrcs.first()?;
    m.rtx_ssrcs.iter().copied().find(|&(s, _)| s == media)
}

/// The simulcast layers of a video section, when it sends two or more and maps the RTP
/// stream id extension (without it the layers' SSRCs could not be told apart: Chromium
/// announces no SSRCs for simulcast). Otherwise the section is answered without `a=simulcast`,
/// and a browser then sends one layer.
fn simulcast_layers(m: &MediaDescription) -> Option<SimulcastLayers> {
    let ext = |uri: &str| m.extmaps.iter().find(|e| e.uri == uri).map(|e| e.id);
    if m.kind != MediaKind::Video || m.send_rids.len() < 2 {
        return None;
    }
    Some(SimulcastLayers {
        rids: m.send_rids.clone(),
        rid_ext: ext(sdp::EXT_RTP_STREAM_ID)?,
        repaired_rid_ext: ext(sdp::EXT_REPAIRED_RTP_STREAM_ID),
    })
}

fn answer_params(
    offer: &SessionDescription,
    local: &LocalParams,
    media: Vec<MediaAnswer>,
) -> AnswerParams {
    AnswerParams {
        ice_ufrag: local.ice_ufrag.clone(),
        ice_pwd: local.ice_pwd.clone(),
        fingerprint: Fingerprint(local.fingerprint),
        setup: dtls_setup(offer).0,
        candidates: local.candidates.clone(),
        tcp_candidates: local.tcp_candidates.clone(),
        media,
    }
}

/// Answers a publisher's offer: the first supported codec of each of the first audio and video
/// sections that send.
pub fn answer_publisher(
    offer: &SessionDescription,
    local: &LocalParams,
) -> Result<PublishAnswer, NegotiationError> {
    let mut media = Vec::new();
    let mut tracks: Vec<PublishedTrack> = Vec::new();
    let mut stream_tracks = Vec::new();
    for m in &offer.media {
        let sends = matches!(m.direction, Direction::SendOnly | Direction::SendRecv);
        let taken = tracks.iter().any(|t| t.kind == m.kind);
        let codec = if sends && !m.port_zero && !taken {
            sdp::choose_publish_codec(m)
        } else {
            None
        };
        let Some(offered) = codec else {
            media.push(MediaAnswer {
                mid: m.mid.clone(),
                accepted: None,
            });
            continue;
        };
        let twcc = transport_cc(m, &offered);
        let codec = forwarded(offered, m.kind, twcc.is_some());
        let extmaps: Vec<Extmap> = m
            .extmaps
            .iter()
            .filter(|e| e.uri == MID_EXTENSION || PASSED_EXTENSIONS.contains(&e.uri.as_str()))
            .cloned()
            .collect();
        let simulcast = simulcast_layers(m);
        let recv_rids = simulcast.as_ref().map_or_else(Vec::new, |s| s.rids.clone());
        let rid_extmaps = m.extmaps.iter().filter(|e| {
            simulcast.is_some()
                && (e.uri == sdp::EXT_RTP_STREAM_ID || e.uri == sdp::EXT_REPAIRED_RTP_STREAM_ID)
        });
        let answered_extmaps: Vec<Extmap> = extmaps
            .iter()
            .chain(rid_extmaps)
            .cloned()
            .chain(twcc.clone())
            .collect();
        tracks.push(PublishedTrack {
            kind: m.kind,
            pt: codec.pt,
            clock_rate: codec.clock_rate,
            codec: codec.name.clone(),
            rtx_pt: codec.rtx_pt,
            rtx_ssrcs: codec.rtx_pt.and_then(|_| offered_rtx_ssrcs(m)),
            transport_cc: twcc.as_ref().map(|e| e.id),
            simulcast,
        });
        // Players and relays get the media stream: the publisher's retransmissions become its
        // packets on arrival, and each player negotiates rtx (and transport-cc) of its own.
        stream_tracks.push(StreamTrack {
            kind: m.kind,
            codec: Codec {
                rtx_pt: None,
                ..codec.clone()
            },
            extmaps,
            rids: recv_rids.clone(),
        });
        media.push(MediaAnswer {
            mid: m.mid.clone(),
            accepted: Some(AcceptedMedia {
                direction: Direction::RecvOnly,
                codec,
                extmaps: answered_extmaps,
                send: None,
                recv_rids,
            }),
        });
    }
    if tracks.is_empty() {
        return Err(NegotiationError::NothingToPublish);
    }
    let sdp = sdp::write_answer(offer, &answer_params(offer, local, media))?;
    Ok(PublishAnswer {
        sdp,
        stream_tracks,
        tracks,
    })
}

/// Answers a player's offer for a stream: each receiving section gets the stream's track of its
/// kind, in the player's own payload type for the publisher's codec. Of simulcast video it
/// gets one layer: `layer` (a rid, or `low`, `mid`, `high`), else the highest.
pub fn answer_player(
    offer: &SessionDescription,
    stream_name: &str,
    stream_tracks: &[StreamTrack],
    local: &LocalParams,
    layer: Option<&str>,
    mut next_ssrc: impl FnMut() -> u32,
) -> Result<PlayAnswer, NegotiationError> {
    let mut media = Vec::new();
    let mut tracks: Vec<PlayedTrack> = Vec::new();
    let mut codec_errors = Vec::new();
    for m in &offer.media {
        let receives = matches!(m.direction, Direction::RecvOnly | Direction::SendRecv);
        let source = stream_tracks.iter().find(|t| t.kind == m.kind);
        let taken = tracks.iter().any(|t| t.kind == m.kind);
        let (Some(source), true, false, false) = (source, receives, m.port_zero, taken) else {
            media.push(MediaAnswer {
                mid: m.mid.clone(),
                accepted: None,
            });
            continue;
        };
        let codec = match sdp::match_play_codec(m, &source.codec) {
            Ok(codec) => codec,
            Err(e) => {
                codec_errors.push(e.to_string());
                media.push(MediaAnswer {
                    mid: m.mid.clone(),
                    accepted: None,
                });
                continue;
            }
        };
        let twcc = transport_cc(m, &codec);
        let codec = forwarded(codec, m.kind, twcc.is_some());
        let extmaps: Vec<Extmap> = m
            .extmaps
            .iter()
            .filter(|e| PASSED_EXTENSIONS.contains(&e.uri.as_str()) && source.extmaps.contains(e))
            .cloned()
            .chain(twcc.clone())
            .collect();
        let ssrc = next_ssrc();
        let rtx = codec.rtx_pt.map(|pt| RtxStream {
            pt,
            ssrc: next_ssrc(),
        });
        let kind_name = match m.kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        let send = SendTrack {
            ssrc,
            cname: format!("rtcdn-{stream_name}"),
            stream_id: stream_name.to_owned(),
            track_id: format!("{stream_name}-{kind_name}"),
            rtx_ssrc: rtx.map(|rtx| rtx.ssrc),
        };
        let layers =
            PlayerLayers::choose(&source.rids, layer.filter(|_| m.kind == MediaKind::Video))
                .map_err(NegotiationError::UnknownLayer)?;
        tracks.push(PlayedTrack {
            kind: m.kind,
            pt: codec.pt,
            ssrc,
            rtx,
            transport_cc: twcc.map(|e| e.id),
            layers,
        });
        media.push(MediaAnswer {
            mid: m.mid.clone(),
            accepted: Some(AcceptedMedia {
                direction: Direction::SendOnly,
                codec,
                extmaps,
                send: Some(send),
                recv_rids: Vec::new(),
            }),
        });
    }
    if tracks.is_empty() {
        let why = if codec_errors.is_empty() {
            "it has no receiving audio or video section".to_owned()
        } else {
            codec_errors.join("; ")
        };
        return Err(NegotiationError::NothingToPlay(why));
    }
    let sdp = sdp::write_answer(offer, &answer_params(offer, local, media))?;
    Ok(PlayAnswer { sdp, tracks })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISH: &str = include_str!("sdp/testdata/chromium_sendonly.sdp");
    const PLAY: &str = include_str!("sdp/testdata/chromium_recvonly.sdp");
    const SIMULCAST: &str = include_str!("sdp/testdata/chromium_simulcast.sdp");

    fn local() -> LocalParams {
        LocalParams {
            ice_ufrag: "abcd1234".into(),
            ice_pwd: "0123456789abcdefghijklmn".into(),
            fingerprint: [7; 32],
            candidates: vec!["127.0.0.1:31000".parse().unwrap()],
            tcp_candidates: Vec::new(),
        }
    }

    #[test]
    fn a_simulcast_publisher_is_answered_with_its_rids_and_the_rid_extensions() {
        let offer = sdp::parse(SIMULCAST).unwrap();
        let answer = answer_publisher(&offer, &local()).unwrap();
        let video = answer
            .tracks
            .iter()
            .find(|t| t.kind == MediaKind::Video)
            .unwrap();
        let layers = video.simulcast.as_ref().expect("simulcast layers");
        assert_eq!(layers.rids, ["l", "m", "h"]);
        // Chromium's a=extmap:10 rtp-stream-id, 11 repaired-rtp-stream-id.
        assert_eq!((layers.rid_ext, layers.repaired_rid_ext), (10, Some(11)));
        assert_eq!(layers.layer(b"h"), Some(2));
        assert_eq!(layers.layer(b"x"), None);
        let audio = answer.tracks.iter().find(|t| t.kind == MediaKind::Audio);
        assert_eq!(audio.unwrap().simulcast, None);
        let sdp = &answer.sdp;
        assert!(
            sdp.contains(
                "a=rid:l recv\r\na=rid:m recv\r\na=rid:h recv\r\na=simulcast:recv l;m;h\r\n"
            ),
            "{sdp}"
        );
        assert!(sdp.contains("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"));
        assert!(
            sdp.contains("a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n")
        );
        let stream_video = answer
            .stream_tracks
            .iter()
            .find(|t| t.kind == MediaKind::Video);
        assert_eq!(stream_video.unwrap().rids, ["l", "m", "h"]);
        // Players are never offered the rid extensions: their packets are one stream each.
        assert!(stream_video
            .unwrap()
            .extmaps
            .iter()
            .all(|e| e.uri != sdp::EXT_RTP_STREAM_ID));
    }

    #[test]
    fn simulcast_without_the_rid_extension_is_answered_as_one_layer() {
        let text = SIMULCAST.replace(
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\n",
            "",
        );
        assert_ne!(text, SIMULCAST);
        let answer = answer_publisher(&sdp::parse(&text).unwrap(), &local()).unwrap();
        assert!(answer.tracks.iter().all(|t| t.simulcast.is_none()));
        assert!(!answer.sdp.contains("a=simulcast"));
        assert!(!answer.sdp.contains("a=rid"));
    }

    #[test]
    fn publisher_gets_the_first_codec_of_each_kind_and_video_rtx() {
        let offer = sdp::parse(PUBLISH).unwrap();
        let answer = answer_publisher(&offer, &local()).unwrap();
        let kinds: Vec<_> = answer
            .tracks
            .iter()
            .map(|t| (t.kind, t.codec.as_str(), t.pt))
            .collect();
        assert_eq!(
            kinds,
            [
                (MediaKind::Audio, "opus", 111),
                (MediaKind::Video, "VP8", 96)
            ]
        );
        let parsed = sdp::parse(&answer.sdp).unwrap();
        assert!(parsed.ice_lite);
        assert_eq!(parsed.setup, Setup::Active);
        assert_eq!(parsed.candidates, local().candidates);
        // Chromium's VP8 is 96 with rtx 97, its FID group 1943521787 -> 3128855047.
        let rtx: Vec<_> = answer
            .tracks
            .iter()
            .map(|t| (t.rtx_pt, t.rtx_ssrcs))
            .collect();
        assert_eq!(
            rtx,
            [
                (None, None),
                (Some(97), Some((1_943_521_787, 3_128_855_047)))
            ]
        );
        assert!(answer
            .stream_tracks
            .iter()
            .all(|t| t.codec.rtx_pt.is_none()));
        assert!(answer
            .sdp
            .contains("a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"));
        for m in &parsed.media {
            assert_eq!(m.direction, Direction::RecvOnly);
            assert_eq!(m.codecs.len(), 1, "one codec: {:?}", m.codecs);
            let rtx = (m.kind == MediaKind::Video).then_some(97);
            assert_eq!(m.codecs[0].rtx_pt, rtx, "rtx for video only");
            assert!(m.rtx_ssrcs.is_empty(), "the answer sends nothing");
            // Chromium offers transport-cc with its extension (id 3) for both: rtcdn takes it,
            // to send the publisher feedback for its bandwidth estimate.
            assert!(m.codecs[0]
                .rtcp_fb
                .iter()
                .all(|fb| FEEDBACK.contains(&fb.as_str()) || fb == TRANSPORT_CC));
            assert!(m.codecs[0].rtcp_fb.iter().any(|fb| fb == TRANSPORT_CC));
            assert!(m
                .extmaps
                .iter()
                .any(|e| e.uri == sdp::EXT_TRANSPORT_CC && e.id == 3));
        }
        assert!(answer.tracks.iter().all(|t| t.transport_cc == Some(3)));
        // Players get rtcdn's own transport-wide numbers, never the publisher's.
        assert!(answer
            .stream_tracks
            .iter()
            .all(|t| t.extmaps.iter().all(|e| e.uri != sdp::EXT_TRANSPORT_CC)));
        // Without the extension, no transport-cc feedback either.
        let without: String = PUBLISH
            .lines()
            .filter(|l| !l.contains(sdp::EXT_TRANSPORT_CC))
            .map(|l| format!("{l}\r\n"))
            .collect();
        let without = sdp::parse(&without).unwrap();
        let answer = answer_publisher(&without, &local()).unwrap();
        assert!(answer.tracks.iter().all(|t| t.transport_cc.is_none()));
        assert!(!answer.sdp.contains("transport-cc"));
    }

    #[test]
    fn player_gets_the_publishers_codec_in_its_own_payload_type() {
        let offer = sdp::parse(PUBLISH).unwrap();
        let mut published = answer_publisher(&offer, &local()).unwrap().stream_tracks;
        // Pretend the publisher chose H264: the player's payload type for it differs from 96.
        let video = published
            .iter_mut()
            .find(|t| t.kind == MediaKind::Video)
            .unwrap();
        let player_offer = sdp::parse(PLAY).unwrap();
        let h264 = player_offer.media[1]
            .codecs
            .iter()
            .find(|c| c.is("H264") && c.fmtp_param("packetization-mode") == Some("1"))
            .unwrap();
        video.codec = Codec {
            pt: 120,
            ..h264.clone()
        };
        let mut ssrcs = 1000u32..;
        let answer = answer_player(&player_offer, "cam", &published, &local(), None, || {
            ssrcs.next().unwrap()
        })
        .unwrap();
        let played: Vec<_> = answer
            .tracks
            .iter()
            .map(|t| (t.kind, t.pt, t.ssrc))
            .collect();
        assert_eq!(
            played,
            [
                (MediaKind::Audio, 111, 1000),
                (MediaKind::Video, h264.pt, 1001)
            ]
        );
        let parsed = sdp::parse(&answer.sdp).unwrap();
        assert_eq!(parsed.media[1].direction, Direction::SendOnly);
        assert_eq!(parsed.media[1].ssrcs, [1001]);
        assert_eq!(parsed.media[1].msid.as_deref(), Some("cam cam-video"));
        assert!(parsed
            .media
            .iter()
            .all(|m| m.extmaps.iter().all(|e| e.uri != MID_EXTENSION)));
    }

    #[test]
    fn player_gets_rtx_and_its_fid_group_for_video_only_when_it_offers_rtx() {
        let publish = sdp::parse(PUBLISH).unwrap();
        let published = answer_publisher(&publish, &local()).unwrap().stream_tracks;
        let mut offer = sdp::parse(PLAY).unwrap();
        // Opus with rtx too, as no browser offers: audio gets none all the same.
        offer.media[0].codecs[0].rtx_pt = Some(63);
        let mut ssrcs = 1000u32..;
        let answer = answer_player(&offer, "cam", &published, &local(), None, || {
            ssrcs.next().unwrap()
        })
        .unwrap();
        let rtx: Vec<_> = answer.tracks.iter().map(|t| (t.ssrc, t.rtx)).collect();
        let video_rtx = RtxStream { pt: 97, ssrc: 1002 };
        assert_eq!(rtx, [(1000, None), (1001, Some(video_rtx))]);
        let parsed = sdp::parse(&answer.sdp).unwrap();
        assert_eq!(parsed.media[1].codecs[0].rtx_pt, Some(97));
        assert_eq!(parsed.media[1].rtx_ssrcs, [(1001, 1002)]);
        assert_eq!(parsed.media[1].ssrcs, [1001]);
        assert!(answer.sdp.contains("a=ssrc:1002 cname:rtcdn-cam\r\n"));
        assert!(answer.sdp.contains("a=ssrc:1002 msid:cam cam-video\r\n"));
        assert_eq!(parsed.media[0].codecs[0].rtx_pt, None);
        assert!(parsed.media[0].rtx_ssrcs.is_empty());

        // Offered without rtx: answered without, the SSRCs as before.
        for m in &mut offer.media {
            for codec in &mut m.codecs {
                codec.rtx_pt = None;
            }
        }
        let mut ssrcs = 1000u32..;
        let answer = answer_player(&offer, "cam", &published, &local(), None, || {
            ssrcs.next().unwrap()
        })
        .unwrap();
        assert!(answer.tracks.iter().all(|t| t.rtx.is_none()));
        assert_eq!(answer.tracks[1].ssrc, 1001);
        assert!(!answer.sdp.contains("rtx") && !answer.sdp.contains("FID"));
    }

    #[test]
    fn player_without_a_common_codec_gets_a_reason() {
        let offer = sdp::parse(PUBLISH).unwrap();
        let mut published = answer_publisher(&offer, &local()).unwrap().stream_tracks;
        published.retain(|t| t.kind == MediaKind::Video);
        published[0].codec = Codec::new(96, "H265", 90000, None);
        let player_offer = sdp::parse(PLAY).unwrap();
        let err = answer_player(&player_offer, "cam", &published, &local(), None, || 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("H265"), "{err}");
    }

    #[test]
    fn publisher_with_nothing_usable_is_refused() {
        let offer = sdp::parse(&PUBLISH.replace("a=sendonly", "a=recvonly")).unwrap();
        assert!(matches!(
            answer_publisher(&offer, &local()),
            Err(NegotiationError::NothingToPublish)
        ));
    }

    #[test]
    fn an_active_offerer_makes_rtcdn_the_dtls_server() {
        let offer = sdp::parse(&PUBLISH.replace("a=setup:actpass", "a=setup:active")).unwrap();
        assert_eq!(dtls_setup(&offer), (Setup::Passive, DtlsRole::Server));
        let answer = answer_publisher(&offer, &local()).unwrap();
        assert_eq!(sdp::parse(&answer.sdp).unwrap().setup, Setup::Passive);
        let offer = sdp::parse(PUBLISH).unwrap();
        assert_eq!(dtls_setup(&offer), (Setup::Active, DtlsRole::Client));
    }
}
