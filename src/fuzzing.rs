//! Entry points for the fuzz targets in `fuzz/` (each target is a one-line call). Compiled in
//! every build so that they cannot rot.

pub(crate) mod dtls_reader;

use std::path::Path;

use crate::config::Config;
use crate::signalling::flashphoner::protocol::{self, StreamDescription};

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
    let _ = crate::cdn::wcs::parse_properties(text);
    let _ = crate::cdn::wcs::parse_loadbalancing(text, Path::new("fuzz.xml"));
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
        if let Ok((_, Some(crate::registry::AclChange::Add(keys)))) =
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
            crate::rtx::restore_publisher_rtx(&tracks, media_ssrc, &mut srtp, &mut packet);
        if let Ok(len) = restored {
            let header = RtpHeader::parse(&packet[..len]).expect("a restored packet is RTP");
            assert_eq!(header.payload_type(), Pt::new(96));
        }
    }

    let Ok(original) = RtpHeader::parse(data) else {
        return;
    };
    let mut sender = crate::rtx::RtxSender::new(Ssrc(0x2222), Pt::new(97), 1);
    let mut out = vec![0; data.len() + 2];
    let len = sender
        .write(data, 0xabcd, 1234, &mut out)
        .expect("an RTP packet fits with two more bytes");
    let back = crate::rtx::to_media(&mut out[..len], original.payload_type(), original.ssrc());
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
