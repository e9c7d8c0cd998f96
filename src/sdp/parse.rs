//! Offer (and answer) parsing: sdp-types splits the text into lines and m-sections, this file
//! reads the attributes WebRTC needs.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use sdp_types::{Attribute, Media, Session};

use super::error::SdpError;
use super::types::{
    clip, Codec, Direction, Extmap, Fingerprint, MediaDescription, MediaKind, OtherMedia,
    SessionDescription, Setup,
};

/// Larger offers are refused before parsing. Chromium's biggest real offers are about 10 KiB.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// More m-lines than this are refused.
pub const MAX_MEDIA: usize = 64;
/// More simulcast layers than this are refused (browsers send at most three).
pub const MAX_SIMULCAST_LAYERS: usize = 3;

/// Parses an offer (or an answer, on rtcdn's client side).
///
/// ICE credentials, the fingerprint and `a=setup` are taken from the first bundled m-line (the
/// BUNDLE tag), else the session level, else any m-line. They are required unless every
/// audio/video m-line is rejected. Every usable audio/video m-line must have `a=mid` and
/// `a=rtcp-mux`, and must be in the BUNDLE group when there are several.
pub fn parse(sdp: &str) -> Result<SessionDescription, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge {
            len: sdp.len(),
            max: MAX_SDP_LEN,
        });
    }
    let session = Session::parse(sdp.as_bytes()).map_err(|e| SdpError::Syntax(e.to_string()))?;
    if session.medias.len() > MAX_MEDIA {
        return Err(SdpError::Syntax(format!("more than {MAX_MEDIA} m-lines")));
    }
    let bundle_mids = bundle_group(&session.attributes);
    let session_direction = direction(&session.attributes);

    let mut media = Vec::new();
    let mut other_media = Vec::new();
    for (index, m) in session.medias.iter().enumerate() {
        let kind = match m.media.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => {
                other_media.push(other(index, m)?);
                continue;
            }
        };
        media.push(parse_media(index, kind, m, session_direction)?);
    }
    if media.is_empty() {
        return Err(SdpError::NoMedia);
    }
    check_mids(&media, &other_media)?;
    check_transport(&media, &bundle_mids)?;

    let tagged = tagged_media(&session, &bundle_mids);
    let all_rejected = media.iter().all(|m| m.port_zero);
    let ufrag = transport_attr(&session, tagged, "ice-ufrag");
    let pwd = transport_attr(&session, tagged, "ice-pwd");
    let (ice_ufrag, ice_pwd) = match (ufrag, pwd) {
        (Some(ufrag), Some(pwd)) => (
            ice_credential(ufrag, 4, "ufrag")?,
            ice_credential(pwd, 22, "pwd")?,
        ),
        _ if all_rejected => (String::new(), String::new()),
        _ => return Err(SdpError::MissingIceCredentials),
    };
    let fingerprint = match fingerprint(&session, tagged) {
        Err(SdpError::MissingFingerprint) if all_rejected => None,
        other => Some(other?),
    };
    let setup = match transport_attr(&session, tagged, "setup") {
        Some(value) => setup(value)?,
        None => Setup::Active,
    };

    Ok(SessionDescription {
        ice_ufrag,
        ice_pwd,
        fingerprint,
        setup,
        ice_lite: has(&session.attributes, "ice-lite"),
        candidates: candidates(&session, host_udp_candidate),
        tcp_candidates: candidates(&session, host_passive_tcp_candidate),
        media,
        other_media,
        bundle_mids,
    })
}

fn parse_media(
    index: usize,
    kind: MediaKind,
    m: &Media,
    session_direction: Option<Direction>,
) -> Result<MediaDescription, SdpError> {
    let port_zero = m.port == 0 && !has(&m.attributes, "bundle-only");
    let mid = match mid(m)? {
        Some(mid) => mid,
        None if port_zero => String::new(),
        None => return Err(SdpError::MissingMid { kind, index }),
    };
    let ssrcs = Ssrcs::parse(&m.attributes)?;
    let msid = first(&m.attributes, "msid")
        .map(str::to_owned)
        .or(ssrcs.msid);
    Ok(MediaDescription {
        mid,
        kind,
        direction: direction(&m.attributes)
            .or(session_direction)
            .unwrap_or(Direction::SendRecv),
        port_zero,
        rtcp_mux: has(&m.attributes, "rtcp-mux"),
        rtcp_rsize: has(&m.attributes, "rtcp-rsize"),
        proto: m.proto.clone(),
        codecs: codecs(m)?,
        extmaps: extmaps(&m.attributes)?,
        ssrcs: ssrcs.primary,
        rtx_ssrcs: ssrcs.rtx,
        cname: ssrcs.cname,
        msid,
        send_rids: simulcast_rids(&m.attributes, "send")?,
        recv_rids: simulcast_rids(&m.attributes, "recv")?,
    })
}

/// The layers of `a=simulcast:<direction> <list>` (RFC 8853 §5.1) that have an
/// `a=rid:<id> <direction>` line (RFC 8851 §4), in the list's order: `send` in an offer (the
/// layers its author sends), `recv` in an answer (the layers its author takes). Of a group of
/// alternatives (`a,b`) the first is taken, and a paused one (`~a`) counts: a publisher may
/// resume it any time. The other direction's part is ignored.
fn simulcast_rids(attributes: &[Attribute], wanted: &str) -> Result<Vec<String>, SdpError> {
    let mut declared = Vec::new();
    for value in values(attributes, "rid") {
        let mut fields = value.split_ascii_whitespace();
        let (Some(id), Some(direction)) = (fields.next(), fields.next()) else {
            return Err(SdpError::Syntax(format!("invalid a=rid:{}", clip(value))));
        };
        if !is_rid(id) {
            return Err(SdpError::Syntax(format!("invalid rid \"{}\"", clip(id))));
        }
        if direction == wanted {
            declared.push(id);
        }
    }
    let Some(simulcast) = first(attributes, "simulcast") else {
        return Ok(Vec::new());
    };
    let mut fields = simulcast.split_ascii_whitespace();
    let mut rids = Vec::new();
    while let (Some(direction), Some(list)) = (fields.next(), fields.next()) {
        if direction != wanted {
            continue;
        }
        for group in list.split(';') {
            let Some(first) = group.split(',').next() else {
                continue;
            };
            let rid = first.strip_prefix('~').unwrap_or(first);
            if declared.contains(&rid) && !rids.iter().any(|r: &String| r == rid) {
                rids.push(rid.to_owned());
            }
        }
    }
    if rids.len() > MAX_SIMULCAST_LAYERS {
        return Err(SdpError::Syntax(format!(
            "more than {MAX_SIMULCAST_LAYERS} simulcast layers"
        )));
    }
    Ok(rids)
}

/// RFC 8851 §10: `rid-id = 1*(alpha-numeric / "-" / "_")`; bounded by what fits the
/// extension element (16 bytes).
fn is_rid(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn other(index: usize, m: &Media) -> Result<OtherMedia, SdpError> {
    Ok(OtherMedia {
        index,
        media_type: m.media.clone(),
        proto: m.proto.clone(),
        fmt: m.fmt.clone(),
        mid: mid(m)?,
    })
}

fn mid(m: &Media) -> Result<Option<String>, SdpError> {
    let Some(mid) = first(&m.attributes, "mid") else {
        return Ok(None);
    };
    let mid = mid.trim();
    // RFC 5888 §4: identification-tag = token. We also bound its length.
    let valid = !mid.is_empty()
        && mid.len() <= 64
        && mid
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b));
    if !valid {
        return Err(SdpError::Syntax(format!("invalid a=mid:{}", clip(mid))));
    }
    Ok(Some(mid.to_owned()))
}

fn check_mids(media: &[MediaDescription], other: &[OtherMedia]) -> Result<(), SdpError> {
    let mut seen = HashSet::new();
    let mids = media
        .iter()
        .map(|m| m.mid.as_str())
        .chain(other.iter().filter_map(|o| o.mid.as_deref()));
    for mid in mids.filter(|mid| !mid.is_empty()) {
        if !seen.insert(mid) {
            return Err(SdpError::DuplicateMid(mid.to_owned()));
        }
    }
    Ok(())
}

/// rtcdn runs one ICE/DTLS transport per peer, so usable m-lines must be muxed and bundled.
fn check_transport(media: &[MediaDescription], bundle_mids: &[String]) -> Result<(), SdpError> {
    let usable: Vec<&MediaDescription> = media.iter().filter(|m| !m.port_zero).collect();
    for m in &usable {
        if !m.rtcp_mux {
            return Err(SdpError::RtcpMuxRequired { mid: m.mid.clone() });
        }
        if usable.len() > 1 && !bundle_mids.contains(&m.mid) {
            return Err(SdpError::NotBundled { mid: m.mid.clone() });
        }
    }
    Ok(())
}

fn bundle_group(attributes: &[Attribute]) -> Vec<String> {
    for value in values(attributes, "group") {
        let mut tokens = value.split_ascii_whitespace();
        if tokens
            .next()
            .is_some_and(|semantics| semantics.eq_ignore_ascii_case("BUNDLE"))
        {
            return tokens.map(str::to_owned).collect();
        }
    }
    Vec::new()
}

/// The m-line whose transport attributes apply to the BUNDLE group (RFC 8843 §7.2.1).
fn tagged_media<'a>(session: &'a Session, bundle_mids: &[String]) -> Option<&'a Media> {
    let tag = bundle_mids.first();
    let by_tag = tag.and_then(|tag| {
        session
            .medias
            .iter()
            .find(|m| first(&m.attributes, "mid").map(str::trim) == Some(tag))
    });
    by_tag.or_else(|| session.medias.iter().find(|m| m.port != 0))
}

fn transport_attr<'a>(
    session: &'a Session,
    tagged: Option<&'a Media>,
    name: &'a str,
) -> Option<&'a str> {
    tagged
        .and_then(|m| first(&m.attributes, name))
        .or_else(|| first(&session.attributes, name))
        .or_else(|| {
            session
                .medias
                .iter()
                .find_map(|m| first(&m.attributes, name))
        })
        .map(str::trim)
}

/// RFC 8839 §5.4: `ice-char = ALPHA / DIGIT / "+" / "/"`, 4 (ufrag) or 22 (pwd) to 256 chars.
fn ice_credential(value: &str, min: usize, what: &str) -> Result<String, SdpError> {
    let chars_ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !chars_ok || value.len() < min || value.len() > 256 {
        return Err(SdpError::InvalidIceCredentials(format!(
            "a=ice-{what} must be {min} to 256 characters of A-Z, a-z, 0-9, + or /"
        )));
    }
    Ok(value.to_owned())
}

fn fingerprint(session: &Session, tagged: Option<&Media>) -> Result<Fingerprint, SdpError> {
    let mut found: Vec<&str> = tagged
        .map(|m| values(&m.attributes, "fingerprint").collect())
        .unwrap_or_default();
    if found.is_empty() {
        found = values(&session.attributes, "fingerprint").collect();
    }
    if found.is_empty() {
        found = session
            .medias
            .iter()
            .flat_map(|m| values(&m.attributes, "fingerprint"))
            .collect();
    }
    let mut unsupported = None;
    for value in found {
        let (hash, hex) = value.trim().split_once(' ').unwrap_or((value, ""));
        if hash.eq_ignore_ascii_case("sha-256") {
            return Fingerprint::from_str(hex);
        }
        unsupported.get_or_insert(hash);
    }
    match unsupported {
        Some(hash) => Err(SdpError::UnsupportedFingerprint(clip(hash))),
        None => Err(SdpError::MissingFingerprint),
    }
}

fn setup(value: &str) -> Result<Setup, SdpError> {
    match value {
        "active" => Ok(Setup::Active),
        "passive" => Ok(Setup::Passive),
        "actpass" => Ok(Setup::ActPass),
        other => Err(SdpError::UnsupportedSetup(clip(other))),
    }
}

fn direction(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| match a.attribute.as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

/// The candidates `pick` takes, from all levels, deduplicated.
fn candidates(session: &Session, pick: fn(&str) -> Option<SocketAddr>) -> Vec<SocketAddr> {
    let all = session
        .attributes
        .iter()
        .chain(session.medias.iter().flat_map(|m| m.attributes.iter()));
    let mut found = Vec::new();
    for attr in all.filter(|a| a.attribute == "candidate") {
        if let Some(addr) = attr.value.as_deref().and_then(pick) {
            if !found.contains(&addr) {
                found.push(addr);
            }
        }
    }
    found
}

/// `<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`
fn host_udp_candidate(value: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = value.split_ascii_whitespace().take(8).collect();
    let [_, component, transport, _, address, port, "typ", "host"] = fields[..] else {
        return None;
    };
    if component != "1" || !transport.eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip = IpAddr::from_str(address).ok()?;
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

/// A passive TCP host candidate of component 1 with a literal address (RFC 6544 §4.5:
/// `... tcp <priority> <address> <port> typ host tcptype passive`).
fn host_passive_tcp_candidate(value: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = value.split_ascii_whitespace().take(10).collect();
    let [_, component, transport, _, address, port, "typ", "host", "tcptype", "passive"] =
        fields[..]
    else {
        return None;
    };
    if component != "1" || !transport.eq_ignore_ascii_case("tcp") {
        return None;
    }
    let ip = IpAddr::from_str(address).ok()?;
    let port: u16 = port.parse().ok()?;
    // Port 9 is an active candidate's placeholder; 0 is no port at all.
    (port != 0 && port != 9).then(|| SocketAddr::new(ip, port))
}

fn codecs(m: &Media) -> Result<Vec<Codec>, SdpError> {
    let mut codecs = Vec::new();
    for token in m.fmt.split_ascii_whitespace() {
        let pt = payload_type(token)?;
        if codecs.iter().any(|c: &Codec| c.pt == pt) {
            continue;
        }
        if let Some(codec) = codec(pt, &m.attributes)? {
            codecs.push(codec);
        }
    }
    Ok(fold_rtx(codecs))
}

fn codec(pt: u8, attributes: &[Attribute]) -> Result<Option<Codec>, SdpError> {
    let mut rtpmap = None;
    for value in values(attributes, "rtpmap") {
        let parsed = parse_rtpmap(value)?;
        if parsed.pt == pt {
            rtpmap = Some(parsed);
            break;
        }
    }
    let Some(mut codec) = rtpmap.or_else(|| static_codec(pt)) else {
        return Ok(None);
    };
    codec.fmtp = per_pt(attributes, "fmtp", pt)?.next().map(str::to_owned);
    codec.rtcp_fb = per_pt(attributes, "rtcp-fb", pt)?
        .map(str::to_owned)
        .collect();
    Ok(Some(codec))
}

/// `<pt> <name>/<clock rate>[/<channels>]`
fn parse_rtpmap(value: &str) -> Result<Codec, SdpError> {
    let invalid = || SdpError::Syntax(format!("invalid a=rtpmap:{}", clip(value)));
    let (pt, encoding) = value.trim().split_once(' ').ok_or_else(invalid)?;
    let pt = payload_type(pt)?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().filter(|n| is_token(n)).ok_or_else(invalid)?;
    let clock_rate: u32 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
        .ok_or_else(invalid)?;
    let channels = match parts.next() {
        Some(c) => Some(
            c.parse::<u16>()
                .ok()
                .filter(|&c| c > 0)
                .ok_or_else(invalid)?,
        ),
        None => None,
    };
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(Codec::new(pt, name, clock_rate, channels))
}

/// RFC 3551 static payload types that browsers still offer without an rtpmap.
fn static_codec(pt: u8) -> Option<Codec> {
    match pt {
        0 => Some(Codec::new(0, "PCMU", 8000, Some(1))),
        8 => Some(Codec::new(8, "PCMA", 8000, Some(1))),
        9 => Some(Codec::new(9, "G722", 8000, Some(1))),
        _ => None,
    }
}

fn payload_type(token: &str) -> Result<u8, SdpError> {
    token
        .parse::<u8>()
        .ok()
        .filter(|&pt| pt <= 127)
        .ok_or_else(|| SdpError::Syntax(format!("invalid RTP payload type \"{}\"", clip(token))))
}

/// The values of `a=<name>:<pt> <rest>` attributes for this payload type (and for `*`).
fn per_pt<'a>(
    attributes: &'a [Attribute],
    name: &'a str,
    pt: u8,
) -> Result<impl Iterator<Item = &'a str> + 'a, SdpError> {
    // Validate every line once so malformed ones are errors, not silently skipped.
    for value in values(attributes, name) {
        let (target, _) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if target != "*" {
            payload_type(target)?;
        }
    }
    Ok(values(attributes, name).filter_map(move |value| {
        let (target, rest) = value.trim().split_once(' ')?;
        let applies = target == "*" || target.parse::<u8>() == Ok(pt);
        let rest = rest.trim();
        (applies && !rest.is_empty()).then_some(rest)
    }))
}

/// Moves each rtx format (RFC 4588) into `rtx_pt` of the codec its `apt` names.
fn fold_rtx(codecs: Vec<Codec>) -> Vec<Codec> {
    let (rtx, mut primary): (Vec<Codec>, Vec<Codec>) =
        codecs.into_iter().partition(|c| c.is("rtx"));
    for r in rtx {
        let Some(apt) = r.fmtp_param("apt").and_then(|apt| apt.parse::<u8>().ok()) else {
            continue;
        };
        if let Some(codec) = primary
            .iter_mut()
            .find(|c| c.pt == apt && c.rtx_pt.is_none())
        {
            codec.rtx_pt = Some(r.pt);
        }
    }
    primary
}

/// `a=extmap:<id>[/<direction>] <uri> [<attributes>]`
fn extmaps(attributes: &[Attribute]) -> Result<Vec<Extmap>, SdpError> {
    let mut found = Vec::new();
    for value in values(attributes, "extmap") {
        let invalid = || SdpError::Syntax(format!("invalid a=extmap:{}", clip(value)));
        let mut fields = value.split_ascii_whitespace();
        let id = fields.next().ok_or_else(invalid)?;
        let id = id.split_once('/').map_or(id, |(id, _)| id);
        let id = id
            .parse::<u8>()
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(invalid)?;
        let uri = fields.next().ok_or_else(invalid)?;
        found.push(Extmap {
            id,
            uri: uri.to_owned(),
        });
    }
    Ok(found)
}

#[derive(Default)]
struct Ssrcs {
    primary: Vec<u32>,
    rtx: Vec<(u32, u32)>,
    cname: Option<String>,
    msid: Option<String>,
}

impl Ssrcs {
    fn parse(attributes: &[Attribute]) -> Result<Self, SdpError> {
        let mut ssrcs = Self::default();
        let mut all = Vec::new();
        let mut secondary = Vec::new();
        for value in values(attributes, "ssrc") {
            let (id, attr) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
            let id = ssrc(id)?;
            if !all.contains(&id) {
                all.push(id);
            }
            match attr.split_once(':') {
                Some(("cname", cname)) if ssrcs.cname.is_none() => {
                    ssrcs.cname = Some(cname.to_owned())
                }
                Some(("msid", msid)) if ssrcs.msid.is_none() => ssrcs.msid = Some(msid.to_owned()),
                _ => {}
            }
        }
        for value in values(attributes, "ssrc-group") {
            let mut fields = value.split_ascii_whitespace();
            let semantics = fields.next().unwrap_or_default();
            let ids = fields.map(ssrc).collect::<Result<Vec<u32>, _>>()?;
            match (semantics, &ids[..]) {
                ("FID", &[media, rtx]) => {
                    ssrcs.rtx.push((media, rtx));
                    secondary.push(rtx);
                }
                ("FEC-FR", &[_, fec]) => secondary.push(fec),
                _ => {}
            }
        }
        ssrcs.primary = all
            .into_iter()
            .filter(|id| !secondary.contains(id))
            .collect();
        Ok(ssrcs)
    }
}

fn ssrc(token: &str) -> Result<u32, SdpError> {
    token
        .parse()
        .map_err(|_| SdpError::Syntax(format!("invalid SSRC \"{}\"", clip(token))))
}

/// RFC 8866 §9 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b))
}

fn has(attributes: &[Attribute], name: &str) -> bool {
    attributes.iter().any(|a| a.attribute == name)
}

fn first<'a>(attributes: &'a [Attribute], name: &'a str) -> Option<&'a str> {
    values(attributes, name).next()
}

fn values<'a>(attributes: &'a [Attribute], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    attributes
        .iter()
        .filter(move |a| a.attribute == name)
        .filter_map(|a| a.value.as_deref())
}
