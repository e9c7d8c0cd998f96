//! The server's answer: complete (non-trickle) ICE-lite, one BUNDLE transport.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sdp_types::Media;

use super::error::SdpError;
use super::types::{
    Codec, Direction, Extmap, Fingerprint, MediaDescription, OtherMedia, SendTrack,
    SessionDescription, Setup,
};
use super::write;

/// What the server answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerParams {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub fingerprint: Fingerprint,
    /// `Active` normally: the server starts the DTLS handshake.
    pub setup: Setup,
    /// One `a=candidate` host UDP line each, in this order, with descending priorities.
    pub candidates: Vec<SocketAddr>,
    /// One passive ICE-TCP host candidate line each (RFC 6544), after the UDP ones and below
    /// all of them in priority.
    pub tcp_candidates: Vec<SocketAddr>,
    /// One per audio/video m-line of the offer (`offer.media`), same order.
    pub media: Vec<MediaAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaAnswer {
    pub mid: String,
    /// `None`: the m-line is rejected (port 0).
    pub accepted: Option<AcceptedMedia>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedMedia {
    pub direction: Direction,
    /// One of the offer's codecs (its payload type); `rtx_pt` only if offered and wanted.
    pub codec: Codec,
    pub extmaps: Vec<Extmap>,
    pub send: Option<SendTrack>,
    /// Simulcast layers received (the offer's `send_rids`): `a=rid:<id> recv` each and
    /// `a=simulcast:recv <list>` (RFC 8853 §5.3); empty for none.
    pub recv_rids: Vec<String>,
}

/// Writes the answer to `offer`, with CRLF line endings.
///
/// Session level: `a=ice-lite`, the BUNDLE group of the accepted mids, `a=msid-semantic` when
/// the server sends. Each accepted m-line carries the transport attributes, mid, direction,
/// rtcp-mux (and rtcp-rsize if offered), the chosen codec with its rtx, extmaps, the sent
/// track, the candidates and `a=end-of-candidates`. m= port and c= are the first candidate's.
/// Rejected m-lines, and the offer's `other_media`, get port 0.
pub fn write_answer(offer: &SessionDescription, params: &AnswerParams) -> Result<String, SdpError> {
    check(offer, params)?;
    let mut session = write::session(&params.ice_ufrag);
    session
        .attributes
        .push(sdp_types::Attribute::new("ice-lite"));
    let accepted: Vec<&str> = params
        .media
        .iter()
        .filter(|m| m.accepted.is_some())
        .map(|m| m.mid.as_str())
        .collect();
    write::bundle(&mut session, &accepted);
    let tracks = params
        .media
        .iter()
        .filter_map(|m| m.accepted.as_ref()?.send.as_ref());
    write::msid_semantic(&mut session, tracks);

    let mut medias: Vec<Media> = offer
        .media
        .iter()
        .zip(&params.media)
        .map(|(offered, answer)| match &answer.accepted {
            Some(accepted) => accepted_media(offered, accepted, params),
            None => rejected_media(offered),
        })
        .collect();
    for other in &offer.other_media {
        let at = other.index.min(medias.len());
        medias.insert(at, rejected_other(other));
    }
    session.medias = medias;
    Ok(session.to_string())
}

fn check(offer: &SessionDescription, params: &AnswerParams) -> Result<(), SdpError> {
    let mismatch = |text: String| Err(SdpError::AnswerMismatch(text));
    if params.media.len() != offer.media.len() {
        return mismatch(format!(
            "{} answers for {} m-lines",
            params.media.len(),
            offer.media.len()
        ));
    }
    for (offered, answer) in offer.media.iter().zip(&params.media) {
        if offered.mid != answer.mid {
            return mismatch(format!(
                "answer for mid {} where the offer has {}",
                answer.mid, offered.mid
            ));
        }
        let Some(accepted) = &answer.accepted else {
            continue;
        };
        if offered.port_zero {
            return mismatch(format!("mid {} was rejected by the offerer", offered.mid));
        }
        let codec = &accepted.codec;
        let Some(offered_codec) = offered.codecs.iter().find(|c| c.pt == codec.pt) else {
            return mismatch(format!(
                "payload type {} is not offered in mid {}",
                codec.pt, offered.mid
            ));
        };
        if codec.rtx_pt.is_some() && codec.rtx_pt != offered_codec.rtx_pt {
            return mismatch(format!("rtx for payload type {} is not offered", codec.pt));
        }
    }
    Ok(())
}

fn accepted_media(
    offered: &MediaDescription,
    accepted: &AcceptedMedia,
    params: &AnswerParams,
) -> Media {
    let first = params.candidates.first();
    let address = first.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SocketAddr::ip);
    let port = first.map_or(9, SocketAddr::port);
    let fmt = write::fmt_list([&accepted.codec]);
    let mut media = write::media(offered.kind.as_str(), port, &offered.proto, fmt, address);
    write::attr(&mut media, "mid", &offered.mid);
    write::transport(
        &mut media,
        &params.ice_ufrag,
        &params.ice_pwd,
        &params.fingerprint,
        params.setup,
    );
    write::direction(&mut media, accepted.direction);
    write::flag(&mut media, "rtcp-mux");
    if offered.rtcp_rsize {
        write::flag(&mut media, "rtcp-rsize");
    }
    write::extmaps(&mut media, &accepted.extmaps);
    write::codec(&mut media, &accepted.codec);
    if let Some(track) = &accepted.send {
        write::send_track(&mut media, track);
    }
    if !accepted.recv_rids.is_empty() {
        for rid in &accepted.recv_rids {
            write::attr(&mut media, "rid", format!("{rid} recv"));
        }
        write::attr(
            &mut media,
            "simulcast",
            format!("recv {}", accepted.recv_rids.join(";")),
        );
    }
    candidates(&mut media, &params.candidates);
    tcp_candidates(&mut media, &params.tcp_candidates, params.candidates.len());
    write::flag(&mut media, "end-of-candidates");
    media
}

/// RFC 8839 §5.1 host candidates; priority per RFC 8445 §5.1.2.1 with type preference 126 and
/// a local preference that falls with the list position.
fn candidates(media: &mut Media, candidates: &[SocketAddr]) {
    for (i, addr) in candidates.iter().enumerate() {
        let local_preference = 65_535_u32.saturating_sub(u32::try_from(i).unwrap_or(u32::MAX));
        let priority = (126 << 24) | (local_preference << 8) | 255;
        let value = format!(
            "{} 1 udp {priority} {} {} typ host",
            i + 1,
            addr.ip(),
            addr.port()
        );
        write::attr(media, "candidate", value);
    }
}

/// RFC 6544 passive TCP host candidates. Priority (§4.2): type preference 90, below UDP host
/// candidates (126) as browsers rank their own, so a peer that reaches UDP prefers it; local
/// preference with the passive direction preference (4) in its top bits. Foundations follow
/// the `udp` ones (`first` of them): a foundation names one transport.
fn tcp_candidates(media: &mut Media, candidates: &[SocketAddr], first: usize) {
    for (i, addr) in candidates.iter().enumerate() {
        let other = 8191_u32.saturating_sub(u32::try_from(i).unwrap_or(u32::MAX));
        let local_preference = (4 << 13) | other;
        let priority = (90 << 24) | (local_preference << 8) | 255;
        let value = format!(
            "{} 1 tcp {priority} {} {} typ host tcptype passive",
            first + i + 1,
            addr.ip(),
            addr.port()
        );
        write::attr(media, "candidate", value);
    }
}

/// RFC 3264 §6: a rejected stream keeps its media type and a format of the offer, port 0.
fn rejected_media(offered: &MediaDescription) -> Media {
    let fmt = offered
        .codecs
        .first()
        .map_or_else(|| "0".to_owned(), |c| c.pt.to_string());
    let mut media = write::media(
        offered.kind.as_str(),
        0,
        &offered.proto,
        fmt,
        Ipv4Addr::UNSPECIFIED.into(),
    );
    if !offered.mid.is_empty() {
        write::attr(&mut media, "mid", &offered.mid);
    }
    write::direction(&mut media, Direction::Inactive);
    media
}

fn rejected_other(other: &OtherMedia) -> Media {
    let mut media = write::media(
        &other.media_type,
        0,
        &other.proto,
        other.fmt.clone(),
        Ipv4Addr::UNSPECIFIED.into(),
    );
    if let Some(mid) = &other.mid {
        write::attr(&mut media, "mid", mid);
    }
    media
}
