//! Fuzz entry points, kept tiny and always compiled so they cannot rot.

use super::{
    choose_publish_codec, match_play_codec, parse, write_answer, AcceptedMedia, AnswerParams,
    Codec, Direction, Fingerprint, MediaAnswer, MediaKind, SendTrack, SessionDescription, Setup,
};

/// Parses `data` as an offer and, if that succeeds, answers it as a publisher and as a player
/// of an opus + VP8 stream and of an opus + H264 stream. Never panics.
pub fn fuzz_offer_answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = parse(text) else {
        return;
    };
    let _ = write_answer(&offer, &publisher_answer(&offer));
    let mut h264 = Codec::new(102, "H264", 90_000, None);
    h264.fmtp =
        Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into());
    for video in [Codec::new(96, "VP8", 90_000, None), h264] {
        let published = [Codec::new(111, "opus", 48_000, Some(2)), video];
        let _ = write_answer(&offer, &player_answer(&offer, &published));
    }
}

/// What a WHIP endpoint answers: the first forwardable codec of each usable m-line, recvonly.
pub fn publisher_answer(offer: &SessionDescription) -> AnswerParams {
    let media = offer.media.iter().map(|m| {
        let codec = if m.port_zero || !m.direction.sends() {
            None
        } else {
            choose_publish_codec(m)
        };
        let accepted = codec.map(|codec| AcceptedMedia {
            direction: Direction::RecvOnly,
            codec,
            extmaps: m.extmaps.clone(),
            send: None,
            recv_rids: Vec::new(),
        });
        MediaAnswer {
            mid: m.mid.clone(),
            accepted,
        }
    });
    params(media.collect())
}

/// What a WHEP endpoint answers when the stream is sent as `published` (one codec per kind).
pub fn player_answer(offer: &SessionDescription, published: &[Codec]) -> AnswerParams {
    let media = offer.media.iter().enumerate().map(|(i, m)| {
        let wanted = published.iter().find(|p| kind_of(p) == m.kind);
        let codec = match wanted {
            Some(wanted) if !m.port_zero && m.direction.receives() => {
                match_play_codec(m, wanted).ok()
            }
            _ => None,
        };
        let ssrc = 0x1000_0000 + u32::try_from(i).unwrap_or(0) * 2;
        let accepted = codec.map(|codec| AcceptedMedia {
            direction: Direction::SendOnly,
            send: Some(SendTrack {
                ssrc,
                rtx_ssrc: codec.rtx_pt.map(|_| ssrc + 1),
                cname: "rtcdn".into(),
                stream_id: "stream".into(),
                track_id: format!("track{i}"),
            }),
            recv_rids: Vec::new(),
            codec,
            extmaps: Vec::new(),
        });
        MediaAnswer {
            mid: m.mid.clone(),
            accepted,
        }
    });
    params(media.collect())
}

fn kind_of(codec: &Codec) -> MediaKind {
    if codec.clock_rate == 90_000 {
        MediaKind::Video
    } else {
        MediaKind::Audio
    }
}

fn params(media: Vec<MediaAnswer>) -> AnswerParams {
    AnswerParams {
        ice_ufrag: "rtcdnUfrg".into(),
        ice_pwd: "rtcdnPasswordOf24Chars00".into(),
        fingerprint: Fingerprint([0xab; 32]),
        setup: Setup::Active,
        candidates: vec!["192.0.2.1:3478".parse().expect("literal address")],
        tcp_candidates: vec!["192.0.2.1:3478".parse().expect("literal address")],
        media,
    }
}
