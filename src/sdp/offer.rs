//! rtcdn's own client side (bench client, origin→edge relay): the offer it sends. The server's
//! answer is read back with [`parse`](super::parse).

use std::net::{IpAddr, Ipv4Addr};

use super::types::{Codec, Direction, Extmap, Fingerprint, MediaKind, SendTrack, Setup};
use super::write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferParams {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub fingerprint: Fingerprint,
    pub media: Vec<OfferMedia>,
    /// An active TCP candidate of this address (RFC 6544 §4.5: port 9), for a side that will
    /// connect to the answerer's passive TCP candidates (a relay over TCP).
    pub active_tcp: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferMedia {
    pub mid: String,
    pub kind: MediaKind,
    /// `SendOnly` to publish, `RecvOnly` to play.
    pub direction: Direction,
    /// In preference order; each with its `rtx_pt`, fmtp and rtcp-fb as wanted.
    pub codecs: Vec<Codec>,
    /// Header extensions offered (`a=extmap`).
    pub extmaps: Vec<Extmap>,
    pub send: Option<SendTrack>,
    /// Simulcast layers sent: `a=rid:<id> send` each and `a=simulcast:send <list>`.
    pub send_rids: Vec<String>,
}

/// Writes the offer, with CRLF line endings: `a=setup:actpass`, all m-lines in one BUNDLE group,
/// rtcp-mux and rtcp-rsize, `c=IN IP4 0.0.0.0` and port 9, and no candidates (the ICE-lite server
/// learns the client's address from its STUN requests) but the active TCP one of `active_tcp`.
pub fn write_offer(params: &OfferParams) -> String {
    let mut session = write::session(&params.ice_ufrag);
    let mids: Vec<&str> = params.media.iter().map(|m| m.mid.as_str()).collect();
    write::bundle(&mut session, &mids);
    write::msid_semantic(
        &mut session,
        params.media.iter().filter_map(|m| m.send.as_ref()),
    );
    for offered in &params.media {
        let fmt = write::fmt_list(&offered.codecs);
        let mut media = write::media(
            offered.kind.as_str(),
            9,
            write::PROTO,
            fmt,
            Ipv4Addr::UNSPECIFIED.into(),
        );
        write::attr(&mut media, "mid", &offered.mid);
        write::transport(
            &mut media,
            &params.ice_ufrag,
            &params.ice_pwd,
            &params.fingerprint,
            Setup::ActPass,
        );
        write::direction(&mut media, offered.direction);
        write::flag(&mut media, "rtcp-mux");
        write::flag(&mut media, "rtcp-rsize");
        for codec in &offered.codecs {
            write::codec(&mut media, codec);
        }
        write::extmaps(&mut media, &offered.extmaps);
        if let Some(track) = &offered.send {
            write::send_track(&mut media, track);
        }
        if let Some(ip) = params.active_tcp {
            // RFC 6544 §4.2: type preference 90 (below host UDP), direction preference 6
            // (active) in the local preference's top bits.
            let priority = (90u32 << 24) | (((6 << 13) | 8191) << 8) | 255;
            write::attr(
                &mut media,
                "candidate",
                format!("1 1 tcp {priority} {ip} 9 typ host tcptype active"),
            );
        }
        if !offered.send_rids.is_empty() {
            for rid in &offered.send_rids {
                write::attr(&mut media, "rid", format!("{rid} send"));
            }
            let list = offered.send_rids.join(";");
            write::attr(&mut media, "simulcast", format!("send {list}"));
        }
        session.medias.push(media);
    }
    session.to_string()
}
