//! Building blocks shared by `write_answer` and `write_offer`, on sdp-types' data model.

use std::net::{IpAddr, Ipv4Addr};

use sdp_types::{Attribute, Connection, Media, Origin, Session};

use super::types::{Codec, Direction, Extmap, Fingerprint, SendTrack, Setup};

/// The profile for all WebRTC media (RFC 5764 §8, JSEP §5.1.2).
pub(crate) const PROTO: &str = "UDP/TLS/RTP/SAVPF";

/// A session with `o=- <id> 2 IN IP4 127.0.0.1`, `s=-`, `t=0 0` (JSEP §5.2.1).
///
/// The session id is derived from `seed` (an ICE ufrag) so that this module reads no clock and
/// no RNG, yet two sessions get different ids.
pub(crate) fn session(seed: &str) -> Session {
    let origin = Origin::with_ip_addr(session_id(seed), 2, Ipv4Addr::LOCALHOST);
    Session::new(origin, "-")
}

/// FNV-1a of `seed`, kept below 2^63 as JSEP §5.2.1 asks.
fn session_id(seed: &str) -> u64 {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash & 0x7fff_ffff_ffff_ffff
}

pub(crate) fn media(
    media_type: &str,
    port: u16,
    proto: &str,
    fmt: String,
    address: IpAddr,
) -> Media {
    Media {
        media: media_type.to_owned(),
        port,
        num_ports: None,
        proto: proto.to_owned(),
        fmt,
        media_title: None,
        connections: vec![Connection::from_ip_addr(address)],
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    }
}

/// The m-line format list for a codec: its payload type, then its rtx payload type.
pub(crate) fn fmt_list<'a>(codecs: impl IntoIterator<Item = &'a Codec>) -> String {
    let mut pts = Vec::new();
    for codec in codecs {
        pts.push(codec.pt.to_string());
        pts.extend(codec.rtx_pt.map(|pt| pt.to_string()));
    }
    pts.join(" ")
}

pub(crate) fn attr(media: &mut Media, name: &str, value: impl ToString) {
    media.attributes.push(Attribute::with_value(name, value));
}

pub(crate) fn flag(media: &mut Media, name: &str) {
    media.attributes.push(Attribute::new(name));
}

pub(crate) fn transport(
    media: &mut Media,
    ufrag: &str,
    pwd: &str,
    fingerprint: &Fingerprint,
    setup: Setup,
) {
    attr(media, "ice-ufrag", ufrag);
    attr(media, "ice-pwd", pwd);
    attr(media, "fingerprint", format!("sha-256 {fingerprint}"));
    attr(media, "setup", setup);
}

pub(crate) fn direction(media: &mut Media, direction: Direction) {
    flag(media, direction.as_str());
}

pub(crate) fn extmaps(media: &mut Media, extmaps: &[Extmap]) {
    for extmap in extmaps {
        attr(media, "extmap", format!("{} {}", extmap.id, extmap.uri));
    }
}

/// rtpmap, rtcp-fb and fmtp of the codec, then rtpmap and fmtp (`apt=`) of its rtx format.
pub(crate) fn codec(media: &mut Media, codec: &Codec) {
    let channels = codec.channels.map(|c| format!("/{c}")).unwrap_or_default();
    attr(
        media,
        "rtpmap",
        format!("{} {}/{}{channels}", codec.pt, codec.name, codec.clock_rate),
    );
    for fb in &codec.rtcp_fb {
        attr(media, "rtcp-fb", format!("{} {fb}", codec.pt));
    }
    if let Some(fmtp) = &codec.fmtp {
        attr(media, "fmtp", format!("{} {fmtp}", codec.pt));
    }
    if let Some(rtx) = codec.rtx_pt {
        attr(media, "rtpmap", format!("{rtx} rtx/{}", codec.clock_rate));
        attr(media, "fmtp", format!("{rtx} apt={}", codec.pt));
    }
}

/// `a=msid`, `a=ssrc-group:FID` and the `a=ssrc` cname/msid lines of a sent track.
pub(crate) fn send_track(media: &mut Media, track: &SendTrack) {
    let msid = format!("{} {}", track.stream_id, track.track_id);
    attr(media, "msid", &msid);
    if let Some(rtx) = track.rtx_ssrc {
        attr(media, "ssrc-group", format!("FID {} {rtx}", track.ssrc));
    }
    for ssrc in std::iter::once(track.ssrc).chain(track.rtx_ssrc) {
        attr(media, "ssrc", format!("{ssrc} cname:{}", track.cname));
        attr(media, "ssrc", format!("{ssrc} msid:{msid}"));
    }
}

/// `a=msid-semantic: WMS <stream ids>` (Chromium still looks for it; harmless elsewhere).
pub(crate) fn msid_semantic<'a>(
    session: &mut Session,
    tracks: impl Iterator<Item = &'a SendTrack>,
) {
    let mut streams: Vec<&str> = Vec::new();
    for track in tracks {
        if !streams.contains(&track.stream_id.as_str()) {
            streams.push(&track.stream_id);
        }
    }
    if streams.is_empty() {
        return;
    }
    let value = format!(" WMS {}", streams.join(" "));
    session
        .attributes
        .push(Attribute::with_value("msid-semantic", value));
}

pub(crate) fn bundle(session: &mut Session, mids: &[&str]) {
    if mids.is_empty() {
        return;
    }
    session.attributes.push(Attribute::with_value(
        "group",
        format!("BUNDLE {}", mids.join(" ")),
    ));
}
