//! Entry points for the fuzz targets in `fuzz/` (each target is a one-line call). Compiled in
//! every build so that they cannot rot.

pub(crate) mod dtls_reader;
mod opus_aac;
mod rtmp_input;
mod rtmp_push_input;
mod rtp_flv;
pub(crate) mod session_input;

pub use opus_aac::fuzz_opus_aac;
pub use rtmp_input::fuzz_rtmp_input;
pub use rtmp_push_input::fuzz_rtmp_push_input;
pub use rtp_flv::fuzz_rtp_flv;

use std::path::Path;

use crate::config::Config;
use crate::wcs_protocol::frames::{self as protocol, StreamDescription};

/// A WebSocket text frame through the Flashphoner frame parser and the status builders.
pub fn fuzz_signalling_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = protocol::parse_frame(text) {
        let id = protocol::str_field(&frame.payload, "mediaSessionId").unwrap_or("");
        let name = protocol::str_field(&frame.payload, "name").unwrap_or("");
        let description = StreamDescription::from_request(&frame.payload, id, name, true);
        let built = description.status_frame("FAILED", Some(name));
        assert!(
            protocol::parse_frame(&built).is_ok(),
            "our own frames parse"
        );
    }
}

/// What a cluster node reads back from Redis (another node's lease, a stream's claim, as any
/// client of that Redis may have written them): parsed or refused, never a panic; what parses
/// shows as `show_nodes` shows it.
pub fn fuzz_cluster_records(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(claim) = crate::cluster::lease::StreamClaim::parse(text) {
        assert_eq!(claim.raw, text);
    }
    if let Ok(lease) = serde_json::from_str::<crate::cluster::lease::NodeLease>(text) {
        let _ = lease.show_node();
    }
}

/// A config file through the TOML loader and validation.
pub fn fuzz_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(text, Path::new("fuzz.toml"));
}

/// WCS files (`flashphoner.properties`, `loadbalancing.xml`) and a node's `/?action=stat` answer.
pub fn fuzz_wcs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::wcs::parse_properties(text);
    let _ = crate::config::wcs::parse_loadbalancing(text, Path::new("fuzz.xml"));
    let _ = crate::cdn::balancer::parse_stat(text);
}

/// A datagram through the post-handshake DTLS record layer (record walking, alert decryption).
pub fn fuzz_dtls_record(data: &[u8]) {
    use crate::dtls::record::EstablishedRecords;
    use crate::dtls::DtlsRole;
    let Some(records) = EstablishedRecords::derive(DtlsRole::Client, &[1; 32], &[2; 32], &[3; 48])
    else {
        return;
    };
    // Nobody but the holder of the server's keys can make a valid alert.
    assert!(
        !records.ends_association(data) || data.len() >= 39,
        "an alert record is at least 39 bytes"
    );
}

/// A received datagram's control data through the receive-timestamp parser (a `cmsghdr` walk).
pub fn fuzz_control_stamp(data: &[u8]) {
    if crate::reactor::io::parse_stamp(data).is_some() {
        assert!(
            data.len() >= 32,
            "a stamp needs a 16-byte header and a 16-byte timespec"
        );
    }
}

/// What clients send to authenticate, through every parser it meets: a bearer token through
/// the JWT verifiers (HS256, a JWKS with an RSA key, a relay audience), a query string, a REST
/// hook answer (`restClientConfig`), an access-list request and a relay's access list.
pub fn fuzz_auth_inputs(data: &[u8]) {
    use std::sync::OnceLock;
    use std::time::Duration;

    use crate::auth::{RelayAuth, TokenVerifier};
    static VERIFIERS: OnceLock<(TokenVerifier, RelayAuth)> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (verifier, relay) = VERIFIERS.get_or_init(|| {
        let jwks = include_str!("../bench/tests/fixtures/jwks-test.json");
        let secret = "fuzz-secret-0123456789abcdef-0123456";
        (
            TokenVerifier::new(Some(secret), Some(jwks), Duration::from_secs(5))
                .expect("the fixture JWKS loads"),
            RelayAuth::new(secret),
        )
    });
    if let Ok(claims) = verifier.verify(text) {
        assert!(claims.aud.is_none(), "client tokens carry no audience");
    }
    let _ = relay.verify(text);
    let _ = crate::signalling::query_param(text, "token");
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = crate::auth::hook::rest_on_error(&value);
        let _ = crate::signalling::flashphoner::relayed_keys(&value);
    }
    for action in ["add", "remove", "delete", "print"] {
        if let Ok((_, Some(crate::control::registry::AclChange::Add(keys)))) =
            crate::signalling::rest::parse_access_list(action, text)
        {
            assert!(keys.iter().all(|k| !k.is_empty() && k.len() <= 256));
        }
    }
}

/// A decrypted packet as a publisher's retransmission (RFC 4588) of a video track, turned back
/// into media in place; and as the original of a retransmission to a player, which must turn
/// back into that original (without its padding).
pub fn fuzz_rtx(data: &[u8]) {
    use crate::control::PublishedTrack;
    use crate::sdp::MediaKind;
    use rtp::srtp::{SrtpContext, SrtpProfile};
    use rtp::{Pt, RtpHeader, Ssrc};

    let Ok(mut srtp) = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &[1; 16], &[2; 12]) else {
        return;
    };
    let tracks = [PublishedTrack {
        kind: MediaKind::Video,
        pt: 96,
        clock_rate: 90_000,
        codec: "VP8".into(),
        rtx_pt: Some(97),
        rtx_ssrcs: Some((0x1111, 0x2222)),
        transport_cc: None,
        simulcast: None,
    }];
    // On the retransmission payload type, so it is taken for RTX.
    if let [first, second, rest @ ..] = data {
        let mut packet = [&[*first, (second & 0x80) | 97], rest].concat();
        let media_ssrc = |_, _: &rtp::RtpHeader<'_>| 0x3333;
        let restored =
            crate::session::rtx::restore_publisher_rtx(&tracks, media_ssrc, &mut srtp, &mut packet);
        if let Ok(len) = restored {
            let header = RtpHeader::parse(&packet[..len]).expect("a restored packet is RTP");
            assert_eq!(header.payload_type(), Pt::new(96));
        }
    }

    let Ok(original) = RtpHeader::parse(data) else {
        return;
    };
    let mut sender = crate::session::rtx::RtxSender::new(Ssrc(0x2222), Pt::new(97), 1);
    let mut out = vec![0; data.len() + 2];
    let len = sender
        .write(data, 0xabcd, 1234, &mut out)
        .expect("an RTP packet fits with two more bytes");
    let back =
        crate::session::rtx::to_media(&mut out[..len], original.payload_type(), original.ssrc());
    match back {
        Ok(len) => {
            let restored = RtpHeader::parse(&out[..len]).expect("RTP again");
            assert_eq!(restored.payload(), original.payload());
            assert_eq!(restored.sequence_number(), 0xabcd);
            assert_eq!(out[2..4], [0xab, 0xcd]);
        }
        // Only what has less than one payload byte to carry.
        Err(e) => assert!(original.payload().is_empty(), "{e}"),
    }
}

/// Datagrams from one peer through a transport's handshake guard and, when it lets them pass,
/// through the dtls crate's reader path and parsers (`fuzzing::dtls_reader`): a panic there is a
/// datagram the guard should have dropped.
///
/// The input is a sequence of `[flags][length: u16 BE][datagram]`; the last datagram may be
/// shorter than its length says. Flag bit 0: the datagram passes the guard but the crate never
/// sees it (its inbound queue was full, or its replay window dropped it).
pub fn fuzz_dtls_handshake(data: &[u8]) {
    let mut guard = crate::dtls::guard::HandshakeGuard::default();
    let mut reader = dtls_reader::CrateReader::default();
    let mut rest = data;
    while let [flags, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        if guard.admit(datagram).is_ok() && flags & 1 == 0 {
            reader.receive(datagram);
        }
    }
}

/// The state machines players and publishers drive with what they send, fed a script of
/// arbitrary steps: a player's transport-cc feedback (and REMB) against the packets it was sent
/// (`PlayerFeedback` and its bandwidth estimator), a publisher's sequence numbers through the
/// loss detector, and the retransmission cache with its keyframe notes. Nothing may panic, and
/// the estimate stays within its bounds.
pub fn fuzz_media_state(data: &[u8]) {
    use std::time::{Duration, Instant};

    use crate::bwe::BweConfig;
    use crate::media::retransmission_cache::RetransmissionCache;
    use crate::session::loss_detector::LossDetector;
    use crate::session::transport_cc::PlayerFeedback;

    let start = Instant::now();
    let mut now = start;
    let config = BweConfig {
        history_len: 256,
        ..BweConfig::DEFAULT
    };
    let Some(mut player) = PlayerFeedback::new(3, start, config) else {
        return;
    };
    let mut loss = LossDetector::new();
    let mut cache = RetransmissionCache::new();
    let mut out = [0u8; 1600];
    let mut seq = 0u16;
    let mut steps = data.chunks(8);
    while let Some(step) = steps.next() {
        let arg = |i: usize| step.get(i).copied().unwrap_or(0);
        let word = |i: usize| u16::from_be_bytes([arg(i), arg(i + 1)]);
        now += Duration::from_micros(u64::from(word(6)) * 16);
        match arg(0) % 6 {
            // Packets to the player: numbered, some of them retransmissions.
            0 => {
                for _ in 0..=arg(1) % 16 {
                    let mut plain = [0u8; 200];
                    let len = usize::from(arg(2)).clamp(12, 200);
                    let header = rtp::RtpHeaderBuilder::new(rtp::Pt::new(96), seq, 0, rtp::Ssrc(1));
                    if header.write_to(&mut plain).is_err() {
                        return;
                    }
                    if let Ok(n) = player.copy_with_room(&plain[..len], &mut out) {
                        let resend = arg(3) & 1 == 1;
                        let _ = player.stamp(now, &mut out[..n], true, resend);
                    }
                    seq = seq.wrapping_add(1);
                }
            }
            // Feedback: the rest of the input as the body of a transport-cc packet.
            1 => {
                let body: Vec<u8> = steps
                    .by_ref()
                    .take(usize::from(arg(1) % 32))
                    .flatten()
                    .copied()
                    .collect();
                let mut packet = vec![0x8f, 205, 0, 0];
                packet.extend_from_slice(&body);
                while packet.len() % 4 != 0 {
                    packet.push(0);
                }
                let words = (packet.len() / 4 - 1) as u16;
                packet[2..4].copy_from_slice(&words.to_be_bytes());
                if let Ok(feedback) = rtp::rtcp::TransportCc::parse(&packet) {
                    player.on_feedback(now, &feedback);
                }
            }
            2 => player.on_remb(now, u64::from(word(1)) * 1000),
            // A publisher's sequence number, and a player's request for one.
            3 => {
                let _ = loss.on_packet(now, u32::from(arg(1) % 3), word(2));
                let _ = loss.should_request(now, word(4));
                let mut seqs = [0u16; 64];
                let _ = loss.poll_requests(now, &mut seqs);
                let _ = loss.poll_timeout();
            }
            // A packet into the cache (maybe a keyframe), and a new player's start.
            4 => {
                let len = usize::from(arg(1)).max(12);
                let mut packet = vec![0u8; len];
                let header = rtp::RtpHeaderBuilder::new(
                    rtp::Pt::new(96),
                    word(2),
                    u32::from(arg(4)),
                    rtp::Ssrc(u32::from(arg(5) % 2)),
                );
                if header.write_to(&mut packet).is_ok()
                    && cache.insert(&packet).is_ok()
                    && arg(3) & 1 == 1
                {
                    cache.note_keyframe(&packet);
                }
                if let Some(packets) = cache.since_keyframe(300) {
                    assert!(packets.count() <= 300);
                }
                let _ = cache.get(word(4));
            }
            _ => {}
        }
        let estimate = player.estimate_bps();
        assert!(
            (config.min_bps..=config.max_bps).contains(&estimate),
            "estimate {estimate} out of bounds"
        );
    }
}

/// Datagrams into media cores whose publisher and player are connected through ICE and keyed:
/// from the two peers and from strangers, sealed with the peers' SRTP keys or not, at advancing
/// virtual times (the input's format is in `fuzzing::session_input`). Nothing may panic, the
/// cores send only datagrams RFC 7983 names, and no core wants its timeout again at once.
pub fn fuzz_session_input(data: &[u8]) {
    session_input::run(data);
}

/// `len` bytes from the xorshift generator whose state is `x`: garbage for the smoke tests of
/// the fuzz entry points and for other bad-input tests, the same on every run.
#[cfg(test)]
pub(crate) fn pseudo_random_bytes(x: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x as u8
        })
        .collect()
}

/// A byte stream through the ICE-TCP deframer (in reads whose sizes the first byte picks) and
/// every frame it yields back through the send queue's framer, whose output must deframe to
/// the same frames.
pub fn fuzz_tcp_framing(data: &[u8]) {
    use crate::reactor::tcp_framing::{Deframer, FrameQueue};
    const MAX: usize = crate::media::MAX_DATAGRAM;
    let Some((&step, mut rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut deframer = Deframer::new(MAX);
    let mut queue = FrameQueue::new(64 * 1024, MAX);
    let mut frames = Vec::new();
    'read: while !rest.is_empty() {
        let spare = deframer.spare();
        assert!(!spare.is_empty(), "a deframer always has room for a read");
        let n = step.min(spare.len()).min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        deframer.filled(n);
        rest = &rest[n..];
        loop {
            match deframer.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX);
                    frames.push(frame.to_vec());
                    let pushed = queue.push_with(|buf| {
                        buf[..frame.len()].copy_from_slice(frame);
                        frame.len()
                    });
                    if !pushed {
                        queue.consume(queue.pending().len() / 2);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
    }
    assert!(deframer.buffered() < 2 + MAX);
    // A fresh queue's output deframes to exactly the frames that went in.
    let mut queue = FrameQueue::new(frames.len() * (2 + MAX) + 2 + MAX, MAX);
    for f in frames.iter().filter(|f| !f.is_empty()) {
        assert!(queue.push_with(|buf| {
            buf[..f.len()].copy_from_slice(f);
            f.len()
        }));
    }
    let mut again = Deframer::new(MAX);
    let mut stream = queue.pending();
    let mut back = Vec::new();
    while !stream.is_empty() {
        let spare = again.spare();
        let n = spare.len().min(stream.len());
        spare[..n].copy_from_slice(&stream[..n]);
        again.filled(n);
        stream = &stream[n..];
        while let Some(frame) = again.next_frame().expect("our own frames deframe") {
            back.push(frame.to_vec());
        }
    }
    let sent: Vec<Vec<u8>> = frames.into_iter().filter(|f| !f.is_empty()).collect();
    assert_eq!(back, sent);
}

#[cfg(test)]
mod tests {
    /// The media-state script runs on a few thousand pseudo-random inputs (the fuzz target
    /// explores further): a smoke test that its steps reach the state machines.
    #[test]
    fn media_state_scripts_run() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000usize {
            let bytes = super::pseudo_random_bytes(&mut x, len % 300);
            super::fuzz_media_state(&bytes);
        }
    }
}
