//! Tests on real-world offers (Chromium, Firefox, GStreamer webrtcbin) in `testdata/`.

use std::net::SocketAddr;

use super::fuzzing::{fuzz_offer_answer, player_answer, publisher_answer};
use super::*;

const CHROMIUM_SENDONLY: &str = include_str!("testdata/chromium_sendonly.sdp");
const CHROMIUM_RECVONLY: &str = include_str!("testdata/chromium_recvonly.sdp");
const FIREFOX: &str = include_str!("testdata/firefox_sendrecv.sdp");
const GSTREAMER: &str = include_str!("testdata/gstreamer_whip.sdp");
/// Chromium 156 publishing with `sendEncodings` `l`, `m`, `h` (scaleResolutionDownBy 4, 2, 1).
const CHROMIUM_SIMULCAST: &str = include_str!("testdata/chromium_simulcast.sdp");
const FIXTURES: [&str; 5] = [
    CHROMIUM_SENDONLY,
    CHROMIUM_RECVONLY,
    FIREFOX,
    GSTREAMER,
    CHROMIUM_SIMULCAST,
];

fn crlf(sdp: &str) -> String {
    sdp.replace('\n', "\r\n")
}

fn codec_pts(media: &MediaDescription) -> Vec<u8> {
    media.codecs.iter().map(|c| c.pt).collect()
}

fn find(media: &MediaDescription, pt: u8) -> &Codec {
    media
        .codecs
        .iter()
        .find(|c| c.pt == pt)
        .expect("codec in fixture")
}

fn h264(pt: u8, fmtp: &str) -> Codec {
    let mut codec = Codec::new(pt, "H264", 90_000, None);
    codec.fmtp = Some(fmtp.to_owned());
    codec
}

fn video_media(codecs: Vec<Codec>) -> MediaDescription {
    let mut offer = parse(CHROMIUM_RECVONLY).expect("fixture parses");
    let mut media = offer.media.remove(1);
    media.codecs = codecs;
    media
}

// ---- parsing the fixtures ----

#[test]
fn parses_chromium_sendonly() {
    let offer = parse(&crlf(CHROMIUM_SENDONLY)).expect("parses");
    assert_eq!(offer.ice_ufrag, "Kd3J");
    assert_eq!(offer.ice_pwd, "hQ9vN2xP7mL4kR8sT1wY6zBc");
    let fingerprint = offer.fingerprint.expect("fingerprint");
    assert_eq!(fingerprint.0[0], 0x7b);
    assert_eq!(fingerprint.0[31], 0xf0);
    assert_eq!(offer.setup, Setup::ActPass);
    assert!(!offer.ice_lite);
    assert!(offer.candidates.is_empty());
    assert_eq!(offer.bundle_mids, ["0", "1"]);
    assert!(offer.other_media.is_empty());

    let [audio, video] = &offer.media[..] else {
        panic!("two m-lines")
    };
    assert_eq!((audio.mid.as_str(), audio.kind), ("0", MediaKind::Audio));
    assert_eq!(audio.direction, Direction::SendOnly);
    assert!(audio.rtcp_mux && audio.rtcp_rsize && !audio.port_zero);
    assert_eq!(audio.proto, "UDP/TLS/RTP/SAVPF");
    assert_eq!(codec_pts(audio), [111, 63, 9, 0, 8, 13, 110, 126]);
    let opus = &audio.codecs[0];
    assert_eq!(
        (opus.name.as_str(), opus.clock_rate, opus.channels),
        ("opus", 48_000, Some(2))
    );
    assert_eq!(opus.fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
    assert_eq!(opus.rtcp_fb, ["transport-cc"]);
    assert_eq!(find(audio, 63).name, "red");
    assert_eq!(find(audio, 63).fmtp.as_deref(), Some("111/111"));
    assert_eq!(audio.extmaps.len(), 4);
    assert_eq!(
        audio.extmaps[3],
        Extmap {
            id: 4,
            uri: EXT_MID.into()
        }
    );
    assert_eq!(audio.ssrcs, [2_840_176_381]);
    assert_eq!(audio.cname.as_deref(), Some("qX3pZ8vK1mN5bR7t"));
    assert!(audio
        .msid
        .as_deref()
        .is_some_and(|m| m.ends_with(" 0a4e2f7c-61d8-4b9a-8e3f-7c5d1b2a9e40")));

    assert_eq!(video.kind, MediaKind::Video);
    // 25 payload types, 12 of them rtx folded into their primaries.
    assert_eq!(
        codec_pts(video),
        [96, 102, 104, 106, 108, 127, 39, 45, 98, 100, 112, 116, 118]
    );
    let vp8 = &video.codecs[0];
    assert_eq!((vp8.name.as_str(), vp8.rtx_pt), ("VP8", Some(97)));
    assert_eq!(
        vp8.rtcp_fb,
        ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    );
    assert_eq!(find(video, 45).name, "AV1");
    assert_eq!(find(video, 100).fmtp_param("profile-id"), Some("2"));
    assert_eq!(find(video, 116).rtx_pt, Some(117));
    assert_eq!(find(video, 118).name, "ulpfec");
    assert_eq!(find(video, 118).rtx_pt, None);
    assert_eq!(video.extmaps.len(), 11);
    assert_eq!(video.ssrcs, [1_943_521_787]);
    assert_eq!(video.rtx_ssrcs, [(1_943_521_787, 3_128_855_047)]);
}

#[test]
fn parses_chromium_recvonly_with_candidates() {
    let offer = parse(CHROMIUM_RECVONLY).expect("parses");
    assert!(offer
        .media
        .iter()
        .all(|m| m.direction == Direction::RecvOnly));
    assert!(offer
        .media
        .iter()
        .all(|m| m.ssrcs.is_empty() && m.msid.is_none()));
    // mDNS, srflx and TCP candidates are skipped; duplicates across m-lines removed.
    let expected: Vec<SocketAddr> = vec![
        "192.168.1.20:56143".parse().unwrap(),
        "[fd00:1:2::20]:56144".parse().unwrap(),
    ];
    assert_eq!(offer.candidates, expected);
    // An active TCP candidate (port 9) is nowhere to connect to.
    assert!(offer.tcp_candidates.is_empty());
}

#[test]
fn parses_firefox() {
    let offer = parse(&crlf(FIREFOX)).expect("parses");
    assert_eq!(offer.ice_ufrag, "e91b4c7d");
    assert_eq!(
        offer.fingerprint.expect("session-level fingerprint").0[0],
        0x3d
    );
    assert_eq!(
        offer.candidates,
        ["10.0.0.7:52311".parse::<SocketAddr>().unwrap()]
    );
    let [audio, video] = &offer.media[..] else {
        panic!("two m-lines")
    };
    assert_eq!(audio.direction, Direction::SendRecv);
    assert!(!audio.rtcp_rsize);
    assert_eq!(codec_pts(audio), [109, 9, 0, 8, 101]);
    assert_eq!(find(audio, 9).channels, Some(1));
    assert_eq!(
        audio.extmaps[1],
        Extmap {
            id: 2,
            uri: "urn:ietf:params:rtp-hdrext:csrc-audio-level".into()
        }
    );
    assert_eq!(audio.ssrcs, [1_729_384_756]);
    assert_eq!(codec_pts(video), [120, 121, 126, 97, 105, 103, 123, 122]);
    assert_eq!(find(video, 120).rtx_pt, Some(124));
    assert_eq!(find(video, 122).rtx_pt, Some(119));
    assert_eq!(find(video, 97).fmtp_param("packetization-mode"), None);
    assert_eq!(video.ssrcs, [2_468_013_579]);
    assert_eq!(video.rtx_ssrcs, [(2_468_013_579, 3_581_470_926)]);
    assert!(video
        .msid
        .as_deref()
        .is_some_and(|m| m.starts_with("{4f1c9e2a")));
}

#[test]
fn parses_gstreamer_bundle_only() {
    let offer = parse(GSTREAMER).expect("parses");
    assert_eq!(offer.bundle_mids, ["video0", "audio1"]);
    assert_eq!(offer.ice_ufrag.len(), 32);
    assert_eq!(
        offer.candidates,
        ["192.168.10.4:46713".parse::<SocketAddr>().unwrap()]
    );
    let [video, audio] = &offer.media[..] else {
        panic!("two m-lines")
    };
    assert_eq!(video.mid, "video0");
    // port 0 with a=bundle-only is not a rejection.
    assert!(!audio.port_zero);
    assert_eq!(choose_publish_codec(audio).expect("OPUS").pt, 98);
    assert_eq!(choose_publish_codec(video).expect("H264").rtx_pt, Some(97));
    assert_eq!(video.ssrcs, [3_484_078_951]);
    assert_eq!(video.cname.as_deref(), Some("user2117476624@host-a4b1c2d3"));
    assert_eq!(
        video.msid.as_deref(),
        Some("user2117476624@host-a4b1c2d3 webrtctransceiver0")
    );
}

// ---- answers ----

#[test]
fn publisher_answers_round_trip() {
    for fixture in [CHROMIUM_SENDONLY, FIREFOX, GSTREAMER] {
        let offer = parse(fixture).expect("fixture parses");
        let params = publisher_answer(&offer);
        let text = write_answer(&offer, &params).expect("answer");
        assert!(
            text.ends_with("\r\n") && !text.replace("\r\n", "").contains('\n'),
            "CRLF only"
        );
        assert!(text.contains("\r\na=ice-lite\r\n") && text.contains("a=end-of-candidates"));
        let answer = parse(&text).expect("answer parses");
        assert!(answer.ice_lite);
        assert_eq!(answer.ice_ufrag, params.ice_ufrag);
        assert_eq!(answer.ice_pwd, params.ice_pwd);
        assert_eq!(answer.fingerprint, Some(params.fingerprint));
        assert_eq!(answer.setup, Setup::Active);
        assert_eq!(answer.candidates, params.candidates);
        // A relay reads the passive TCP candidates back (an origin connects to them).
        assert_eq!(answer.tcp_candidates, params.tcp_candidates);
        assert_eq!(
            answer.bundle_mids,
            offer
                .media
                .iter()
                .map(|m| m.mid.clone())
                .collect::<Vec<_>>()
        );
        for ((answered, offered), wanted) in
            answer.media.iter().zip(&offer.media).zip(&params.media)
        {
            let accepted = wanted
                .accepted
                .as_ref()
                .expect("every fixture m-line is accepted");
            assert_eq!(answered.mid, offered.mid);
            assert_eq!(answered.direction, Direction::RecvOnly);
            assert_eq!(answered.codecs, std::slice::from_ref(&accepted.codec));
            assert_eq!(answered.extmaps, offered.extmaps);
            assert_eq!(answered.rtcp_rsize, offered.rtcp_rsize);
        }
    }
}

#[test]
fn chromium_publisher_answer_picks_vp8_with_rtx() {
    let offer = parse(CHROMIUM_SENDONLY).expect("parses");
    let text = write_answer(&offer, &publisher_answer(&offer)).expect("answer");
    assert!(
        text.contains("m=video 3478 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 192.0.2.1\r\n"),
        "{text}"
    );
    assert!(text.contains("a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"));
    assert!(text.contains("a=group:BUNDLE 0 1\r\n"));
    assert!(text.contains("a=candidate:1 1 udp 2130706431 192.0.2.1 3478 typ host\r\n"));
    assert!(text.contains("a=fingerprint:sha-256 AB:AB:"));
    // The session id is derived, not random: the same input gives the same answer.
    assert_eq!(
        text,
        write_answer(&offer, &publisher_answer(&offer)).expect("answer")
    );
}

#[test]
fn player_answer_round_trip() {
    let offer = parse(CHROMIUM_RECVONLY).expect("parses");
    let mut vp8 = Codec::new(100, "VP8", 90_000, None);
    vp8.rtx_pt = Some(101);
    let published = [Codec::new(111, "opus", 48_000, Some(2)), vp8];
    let params = player_answer(&offer, &published);
    let text = write_answer(&offer, &params).expect("answer");
    assert!(text.contains("a=msid-semantic: WMS stream\r\n"));
    let answer = parse(&text).expect("answer parses");
    let [audio, video] = &answer.media[..] else {
        panic!("two m-lines")
    };
    assert_eq!(audio.direction, Direction::SendOnly);
    assert_eq!(audio.codecs[0].pt, 111);
    assert_eq!(audio.ssrcs, [0x1000_0000]);
    assert_eq!(audio.cname.as_deref(), Some("rtcdn"));
    assert_eq!(audio.msid.as_deref(), Some("stream track0"));
    // The player's payload types are used, with the player's rtx.
    assert_eq!((video.codecs[0].pt, video.codecs[0].rtx_pt), (96, Some(97)));
    assert_eq!(video.ssrcs, [0x1000_0002]);
    assert_eq!(video.rtx_ssrcs, [(0x1000_0002, 0x1000_0003)]);
}

#[test]
fn rejected_and_unsupported_m_lines_get_port_zero() {
    let datachannel = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nc=IN IP4 0.0.0.0\n\
                       a=mid:2\na=sctp-port:5000\n";
    let offer_text = CHROMIUM_SENDONLY.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2");
    let (head, video) = offer_text.split_at(offer_text.find("m=video").expect("video"));
    let offer_text = format!("{head}{datachannel}{video}");
    let offer = parse(&offer_text).expect("parses");
    assert_eq!(offer.media.len(), 2);
    assert_eq!(offer.other_media[0].index, 1);
    assert_eq!(offer.other_media[0].mid.as_deref(), Some("2"));

    let mut params = publisher_answer(&offer);
    params.media[0].accepted = None; // reject the audio
    let text = write_answer(&offer, &params).expect("answer");
    let m_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        m_lines,
        [
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
            "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
            "m=video 3478 UDP/TLS/RTP/SAVPF 96 97",
        ]
    );
    assert!(text.contains("a=group:BUNDLE 1\r\n"));
    let answer = parse(&text).expect("answer parses");
    assert!(answer.media[0].port_zero);
    assert!(!answer.media[1].port_zero);
    assert_eq!(answer.other_media[0].index, 1);
}

#[test]
fn offer_with_rejected_m_line_is_answered_rejected() {
    let text = GSTREAMER.replace("a=bundle-only\n", "");
    let offer = parse(&text).expect("a rejected m-line needs no BUNDLE membership");
    assert!(offer.media[1].port_zero);
    let params = publisher_answer(&offer);
    assert!(params.media[1].accepted.is_none());
    let answer = parse(&write_answer(&offer, &params).expect("answer")).expect("parses");
    assert!(answer.media[1].port_zero);
}

#[test]
fn answer_mismatch_is_an_error() {
    let offer = parse(CHROMIUM_SENDONLY).expect("parses");
    let mut params = publisher_answer(&offer);
    params.media.pop();
    assert!(matches!(
        write_answer(&offer, &params),
        Err(SdpError::AnswerMismatch(_))
    ));

    let mut params = publisher_answer(&offer);
    params.media[1].accepted.as_mut().expect("video").codec.pt = 55;
    assert!(matches!(
        write_answer(&offer, &params),
        Err(SdpError::AnswerMismatch(_))
    ));

    let mut params = publisher_answer(&offer);
    params.media[1].mid = "x".into();
    assert!(matches!(
        write_answer(&offer, &params),
        Err(SdpError::AnswerMismatch(_))
    ));
}

// ---- rtcdn's own offer ----

#[test]
fn own_offer_round_trip_and_answer() {
    let mut vp8 = Codec::new(96, "VP8", 90_000, None);
    vp8.rtx_pt = Some(97);
    vp8.rtcp_fb = vec!["nack".into(), "nack pli".into()];
    let mut opus = Codec::new(111, "opus", 48_000, Some(2));
    opus.fmtp = Some("minptime=10;useinbandfec=1".into());
    let track = |ssrc, rtx_ssrc, track_id: &str| SendTrack {
        ssrc,
        rtx_ssrc,
        cname: "relay".into(),
        stream_id: "live".into(),
        track_id: track_id.into(),
    };
    let params = OfferParams {
        ice_ufrag: "relayUfrag".into(),
        ice_pwd: "relayPasswordOf24Chars0".into(),
        fingerprint: Fingerprint([0x5a; 32]),
        media: vec![
            OfferMedia {
                mid: "a".into(),
                kind: MediaKind::Audio,
                direction: Direction::SendOnly,
                codecs: vec![opus.clone()],
                extmaps: Vec::new(),
                send: Some(track(11, None, "mic")),
                send_rids: Vec::new(),
            },
            OfferMedia {
                mid: "v".into(),
                kind: MediaKind::Video,
                direction: Direction::SendOnly,
                codecs: vec![vp8.clone()],
                extmaps: Vec::new(),
                send: Some(track(21, Some(22), "cam")),
                send_rids: Vec::new(),
            },
        ],
        active_tcp: None,
    };
    let text = write_offer(&params);
    assert!(
        text.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\n"),
        "{text}"
    );
    assert!(!text.contains("a=candidate"));
    let offer = parse(&text).expect("own offer parses");
    assert_eq!(offer.setup, Setup::ActPass);
    assert_eq!(offer.fingerprint, Some(params.fingerprint));
    assert_eq!(offer.bundle_mids, ["a", "v"]);
    assert_eq!(offer.media[0].codecs, [opus]);
    assert_eq!(offer.media[1].codecs, [vp8]);
    assert_eq!(offer.media[1].ssrcs, [21]);
    assert_eq!(offer.media[1].rtx_ssrcs, [(21, 22)]);
    assert_eq!(offer.media[1].msid.as_deref(), Some("live cam"));

    // The server answers it, and the client side reads the server's candidate back.
    let answer =
        parse(&write_answer(&offer, &publisher_answer(&offer)).expect("answer")).expect("parses");
    assert!(answer.ice_lite);
    assert_eq!(
        answer.candidates,
        ["192.0.2.1:3478".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(answer.media[1].codecs[0].rtx_pt, Some(97));
}

// ---- codec selection ----

#[test]
fn publish_codec_follows_offer_order() {
    let offer = parse(CHROMIUM_SENDONLY).expect("parses");
    assert_eq!(choose_publish_codec(&offer.media[0]).expect("opus").pt, 111);
    assert_eq!(choose_publish_codec(&offer.media[1]).expect("VP8").pt, 96);

    // Without VP8: the first H264 with packetization-mode=1 (102), not mode 0.
    let mut video = offer.media[1].clone();
    video.codecs.retain(|c| !c.is("VP8"));
    assert_eq!(choose_publish_codec(&video).expect("H264").pt, 102);

    // Only packetization-mode=0 H264, red and ulpfec: nothing forwardable.
    video
        .codecs
        .retain(|c| c.pt == 104 || c.pt == 116 || c.pt == 118);
    assert_eq!(choose_publish_codec(&video), None);

    let firefox = parse(FIREFOX).expect("parses");
    assert_eq!(
        choose_publish_codec(&firefox.media[0]).expect("opus").pt,
        109
    );
    assert_eq!(
        choose_publish_codec(&firefox.media[1]).expect("VP8").pt,
        120
    );
}

#[test]
fn h264_exact_profile_is_preferred() {
    let media = video_media(vec![
        h264(102, "packetization-mode=1;profile-level-id=42001f"),
        h264(106, "packetization-mode=1;profile-level-id=42e01f"),
    ]);
    let published = h264(96, "packetization-mode=1;profile-level-id=42e01f");
    assert_eq!(match_play_codec(&media, &published).expect("match").pt, 106);
}

#[test]
fn h264_same_profile_other_level_matches() {
    let media = video_media(vec![
        h264(104, "packetization-mode=0;profile-level-id=42e01f"),
        h264(106, "packetization-mode=1;profile-level-id=42e01f"),
    ]);
    // Level 5.2 published, 3.1 offered: still constrained baseline.
    let published = h264(96, "packetization-mode=1;profile-level-id=42e034");
    assert_eq!(match_play_codec(&media, &published).expect("match").pt, 106);
    // GStreamer's constrained baseline spelling (constraint_set0 off) is the same profile.
    let gstreamer = h264(
        96,
        "packetization-mode=1;profile-level-id=42c01f;level-asymmetry-allowed=1",
    );
    assert_eq!(match_play_codec(&media, &gstreamer).expect("match").pt, 106);
}

#[test]
fn h264_mismatches_are_rejected() {
    let media = video_media(vec![
        h264(102, "packetization-mode=1;profile-level-id=42001f"),
        h264(112, "packetization-mode=1;profile-level-id=64001f"),
    ]);
    // Packetization mode differs.
    let mode0 = h264(96, "packetization-mode=0;profile-level-id=42001f");
    assert!(matches!(
        match_play_codec(&media, &mode0),
        Err(SdpError::NoCommonCodec { .. })
    ));
    // Constrained high is not high; main is not baseline.
    for plid in ["640c1f", "4d001f", "zzzzzz", "42e0"] {
        let published = h264(96, &format!("packetization-mode=1;profile-level-id={plid}"));
        assert!(match_play_codec(&media, &published).is_err(), "{plid}");
    }
    // Baseline with another level matches baseline.
    let baseline = h264(96, "packetization-mode=1;profile-level-id=420029");
    assert_eq!(match_play_codec(&media, &baseline).expect("match").pt, 102);
    // No profile-level-id means 42000a (baseline 1.0).
    let default = h264(96, "packetization-mode=1");
    assert_eq!(match_play_codec(&media, &default).expect("match").pt, 102);
}

#[test]
fn vp9_profile_and_opus_matching() {
    let offer = parse(CHROMIUM_RECVONLY).expect("parses");
    let mut vp9 = Codec::new(98, "vp9", 90_000, None);
    assert_eq!(
        match_play_codec(&offer.media[1], &vp9)
            .expect("profile 0")
            .pt,
        98
    );
    vp9.fmtp = Some("profile-id=2".into());
    assert_eq!(
        match_play_codec(&offer.media[1], &vp9)
            .expect("profile 2")
            .pt,
        100
    );
    vp9.fmtp = Some("profile-id=1".into());
    assert!(match_play_codec(&offer.media[1], &vp9).is_err());
    let opus = Codec::new(98, "OPUS", 48_000, Some(2));
    assert_eq!(
        match_play_codec(&offer.media[0], &opus).expect("opus").pt,
        111
    );
    let mono = Codec::new(98, "opus", 48_000, None);
    assert!(match_play_codec(&offer.media[0], &mono).is_err());
}

fn h265(pt: u8, fmtp: &str) -> Codec {
    let mut codec = Codec::new(pt, "H265", 90_000, None);
    codec.fmtp = (!fmtp.is_empty()).then(|| fmtp.to_owned());
    codec
}

#[test]
fn h265_is_published_in_one_stream_without_don_and_played_at_its_profile_tier_and_level() {
    // Chrome's offer with a hardware codec; Safari's default (no fmtp).
    let chrome = "level-id=180;profile-id=1;tier-flag=0;tx-mode=SRST";
    assert!(choose_publish_codec(&video_media(vec![h265(49, chrome)])).is_some());
    assert!(choose_publish_codec(&video_media(vec![h265(49, "")])).is_some());
    for refused in ["tx-mode=MRST", "sprop-max-don-diff=2"] {
        let media = video_media(vec![h265(49, refused)]);
        assert_eq!(choose_publish_codec(&media), None, "{refused}");
    }
    let media = video_media(vec![
        h265(49, "level-id=93;profile-id=2;tier-flag=0;tx-mode=SRST"),
        h265(51, chrome),
        h265(53, "level-id=123;profile-id=1;tier-flag=0;tx-mode=SRST"),
    ]);
    // An RTMP encoder's Main at level 2: Chrome's Main offer at level 6 plays it; the exact
    // level is preferred when offered.
    let level_2 = h265(49, "level-id=60;profile-id=1;tier-flag=0;tx-mode=SRST");
    assert_eq!(match_play_codec(&media, &level_2).expect("match").pt, 51);
    let level_4_1 = h265(49, "level-id=123;profile-id=1;tier-flag=0");
    assert_eq!(match_play_codec(&media, &level_4_1).expect("match").pt, 53);
    // Main 10 needs profile-id 2; the default (Main, level 3.1) plays on Main offers.
    let main_10 = h265(49, "profile-id=2");
    assert_eq!(match_play_codec(&media, &main_10).expect("match").pt, 49);
    assert_eq!(
        match_play_codec(&media, &h265(49, "")).expect("match").pt,
        51
    );
    // Above every offered level, the high tier, or a level that does not parse: no match, and
    // the error says what was published.
    for fmtp in ["level-id=183", "tier-flag=1", "level-id=x"] {
        let err = match_play_codec(&media, &h265(49, fmtp)).expect_err(fmtp);
        assert!(err.to_string().contains("H265"), "{err}");
    }
    let err = match_play_codec(&media, &h265(49, "level-id=183")).unwrap_err();
    assert!(err.to_string().contains("level-id=183"), "{err}");
}

#[test]
fn no_common_codec_names_the_codec() {
    let media = video_media(vec![Codec::new(96, "VP8", 90_000, None)]);
    let published = h264(102, "packetization-mode=1;profile-level-id=42e01f");
    let err = match_play_codec(&media, &published).expect_err("no H264 offered");
    assert!(matches!(
        &err,
        SdpError::NoCommonCodec {
            kind: MediaKind::Video,
            ..
        }
    ));
    let text = err.to_string();
    assert!(
        text.contains("video") && text.contains("H264") && text.contains("42e01f"),
        "{text}"
    );
}

#[test]
fn extmaps_are_selected_by_uri() {
    let offer = parse(CHROMIUM_SENDONLY).expect("parses");
    let selected = select_extmaps(
        &offer.media[1],
        &[EXT_MID, EXT_TRANSPORT_CC, EXT_AUDIO_LEVEL],
    );
    assert_eq!(
        selected,
        [
            Extmap {
                id: 3,
                uri: EXT_TRANSPORT_CC.into()
            },
            Extmap {
                id: 4,
                uri: EXT_MID.into()
            }
        ]
    );
}

// ---- malformed input ----

fn parse_err(sdp: &str) -> SdpError {
    parse(sdp).expect_err("must be rejected")
}

#[test]
fn malformed_offers_are_errors() {
    assert!(matches!(parse_err(""), SdpError::Syntax(_)));
    assert!(matches!(parse_err("hello world"), SdpError::Syntax(_)));
    assert!(matches!(
        parse_err("v=0\no=- 1 2 IN IP4 127.0.0.1\ns=-\nt=0 0\n"),
        SdpError::NoMedia
    ));
    assert!(matches!(
        parse_err(&CHROMIUM_SENDONLY.replace("v=0", "v=1")),
        SdpError::Syntax(_)
    ));
    assert!(matches!(
        parse_err(&CHROMIUM_SENDONLY.replace("a=ice-ufrag:Kd3J\n", "")),
        SdpError::MissingIceCredentials
    ));
    assert!(matches!(
        parse_err(&FIREFOX.replace("a=ice-pwd:", "a=x-ice-pwd:")),
        SdpError::MissingIceCredentials
    ));
    assert!(matches!(
        parse_err(&CHROMIUM_SENDONLY.replace("a=ice-ufrag:Kd3J", "a=ice-ufrag:K d3J")),
        SdpError::InvalidIceCredentials(_)
    ));
    let no_fingerprint: String = FIREFOX
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(matches!(
        parse_err(&no_fingerprint),
        SdpError::MissingFingerprint
    ));
    let sha1 = no_fingerprint.replace(
        "t=0 0\n",
        "t=0 0\na=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB\n",
    );
    let err = parse_err(&sha1);
    assert_eq!(err, SdpError::UnsupportedFingerprint("sha-1".into()));
    assert!(err.to_string().contains("only sha-256"));
    let short = FIREFOX.replace("3D:A1:7F:", "3D:A1:");
    assert!(matches!(parse_err(&short), SdpError::Syntax(_)));
    assert!(matches!(
        parse_err(&FIREFOX.replace("a=setup:actpass", "a=setup:holdconn")),
        SdpError::UnsupportedSetup(_)
    ));
}

#[test]
fn bad_attributes_are_errors() {
    let cases = [
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8"),
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8/abc"),
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:300 VP8/90000"),
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8/99999999999"),
        ("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus/48000/99999"),
        ("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP 8/90000"),
        ("a=fmtp:97 apt=96", "a=fmtp:9999 apt=96"),
        ("a=rtcp-fb:96 nack pli", "a=rtcp-fb:abc nack pli"),
        ("a=extmap:14 urn", "a=extmap:4096 urn"),
        ("a=extmap:14 urn", "a=extmap:0 urn"),
        (
            "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
            "a=extmap:14",
        ),
        ("a=ssrc:1943521787 cname", "a=ssrc:99999999999 cname"),
        (
            "a=ssrc-group:FID 1943521787",
            "a=ssrc-group:FID 99999999999",
        ),
        (
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 9 UDP/TLS/RTP/SAVPF 1000",
        ),
        (
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 99999 UDP/TLS/RTP/SAVPF 96",
        ),
        (
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video 9 UDP/TLS/RTP/SAVPF -1",
        ),
        ("a=mid:1", "a=mid:a b"),
        ("a=mid:1", "a=mid:0"),
    ];
    for (from, to) in cases {
        assert!(CHROMIUM_SENDONLY.contains(from), "fixture lacks {from}");
        let text = CHROMIUM_SENDONLY.replacen(from, to, 1);
        let err = parse_err(&text);
        assert!(
            matches!(err, SdpError::Syntax(_) | SdpError::DuplicateMid(_)),
            "{to}: {err:?}"
        );
    }
}

#[test]
fn transport_requirements_are_errors() {
    let no_mux = GSTREAMER.replacen("a=rtcp-mux\n", "", 1);
    assert_eq!(
        parse_err(&no_mux),
        SdpError::RtcpMuxRequired {
            mid: "video0".into()
        }
    );
    let unbundled = GSTREAMER.replace("a=group:BUNDLE video0 audio1", "a=group:BUNDLE video0");
    assert_eq!(
        parse_err(&unbundled),
        SdpError::NotBundled {
            mid: "audio1".into()
        }
    );
    let no_mid = GSTREAMER.replace("a=mid:video0\n", "");
    assert!(matches!(
        parse_err(&no_mid),
        SdpError::MissingMid {
            kind: MediaKind::Video,
            index: 0
        }
    ));
    let huge = format!(
        "{CHROMIUM_SENDONLY}{}",
        "a=x-padding\n".repeat(MAX_SDP_LEN / 10)
    );
    assert!(matches!(parse_err(&huge), SdpError::TooLarge { .. }));
    let many = format!(
        "{GSTREAMER}{}",
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\n".repeat(MAX_MEDIA)
    );
    assert!(matches!(parse_err(&many), SdpError::Syntax(_)));
}

#[test]
fn fingerprint_text_round_trip() {
    let text = "7B:8E:21:4C:D0:93:5A:F6:12:AB:3C:E8:49:07:BD:65:F2:1E:84:C9:3A:70:5D:B6:0F:E2:97:48:AC:13:6D:F0";
    let fingerprint: Fingerprint = text.parse().expect("valid");
    assert_eq!(fingerprint.to_string(), text);
    assert_eq!(
        text.to_lowercase()
            .parse::<Fingerprint>()
            .expect("lowercase"),
        fingerprint
    );
    for bad in [
        "",
        "7B",
        &format!("{text}:00"),
        &text.replace("7B:", "7B8E:"),
        &text.replace("7B", "+B"),
        "é",
    ] {
        assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
    }
}

// ---- never panics ----

/// A deterministic stand-in for a fuzzer: every fixture truncated at many points, and with
/// bytes replaced, deleted or duplicated by a seeded generator.
#[test]
fn fuzz_smoke() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let interesting = b"0123456789:/ =\n\r-aAmv*";
    let mut parsed = 0;
    for fixture in FIXTURES {
        let bytes = fixture.as_bytes();
        for end in (0..bytes.len()).step_by(13) {
            fuzz_offer_answer(&bytes[..end]);
            parsed += usize::from(answers_reparse(&bytes[..end]));
        }
        for _ in 0..300 {
            let mut data = bytes.to_vec();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() as usize) % data.len();
                match next() % 3 {
                    0 => data[at] = interesting[(next() as usize) % interesting.len()],
                    1 => {
                        data.remove(at);
                    }
                    _ => data.insert(at, data[at]),
                }
            }
            fuzz_offer_answer(&data);
            parsed += usize::from(answers_reparse(&data));
        }
    }
    // Most mutants still parse, so the answer paths are exercised too.
    assert!(parsed > 400, "only {parsed} inputs parsed");
}

/// Whatever offer parses, the answers written to it parse too.
fn answers_reparse(data: &[u8]) -> bool {
    let Some(offer) = std::str::from_utf8(data)
        .ok()
        .and_then(|text| parse(text).ok())
    else {
        return false;
    };
    let published = [
        Codec::new(111, "opus", 48_000, Some(2)),
        Codec::new(96, "VP8", 90_000, None),
    ];
    for params in [publisher_answer(&offer), player_answer(&offer, &published)] {
        let text = write_answer(&offer, &params).expect("answerable");
        if let Err(err) = parse(&text) {
            panic!(
                "answer does not parse: {err}\n{text}\noffer:\n{}",
                String::from_utf8_lossy(data)
            );
        }
    }
    true
}

#[test]
fn chromium_simulcast_layers_are_read_in_the_simulcast_order() {
    let offer = parse(CHROMIUM_SIMULCAST).unwrap();
    let video = offer
        .media
        .iter()
        .find(|m| m.kind == MediaKind::Video)
        .unwrap();
    assert_eq!(video.send_rids, ["l", "m", "h"]);
    // Chromium announces no SSRCs for simulcast: the layers are known by their rid only.
    assert!(video.ssrcs.is_empty());
    let audio = offer
        .media
        .iter()
        .find(|m| m.kind == MediaKind::Audio)
        .unwrap();
    assert!(audio.send_rids.is_empty());
}

fn with_simulcast(lines: &str) -> String {
    CHROMIUM_SIMULCAST.replace(
        "a=rid:l send\na=rid:m send\na=rid:h send\na=simulcast:send l;m;h\n",
        lines,
    )
}

#[test]
fn simulcast_alternatives_and_paused_layers_take_the_first_and_unpaused_rid() {
    let sdp = with_simulcast(
        "a=rid:a send\na=rid:b send\na=rid:c send\na=rid:x recv\na=simulcast:send a,x;~b;c;undeclared\n",
    );
    assert_ne!(sdp, CHROMIUM_SIMULCAST);
    let offer = parse(&sdp).unwrap();
    assert_eq!(offer.media[1].send_rids, ["a", "b", "c"]);
}

#[test]
fn simulcast_without_send_rids_or_with_bad_ones() {
    let recv_only = with_simulcast("a=rid:a recv\na=simulcast:recv a\n");
    assert!(parse(&recv_only).unwrap().media[1].send_rids.is_empty());
    assert_eq!(parse(&recv_only).unwrap().media[1].recv_rids, ["a"]);
    let bad = with_simulcast("a=rid:a/b send\na=simulcast:send a/b\n");
    assert!(matches!(parse(&bad), Err(SdpError::Syntax(_))));
    let four = with_simulcast(
        "a=rid:a send\na=rid:b send\na=rid:c send\na=rid:d send\na=simulcast:send a;b;c;d\n",
    );
    assert!(matches!(parse(&four), Err(SdpError::Syntax(_))));
}

#[test]
fn an_answers_recv_rids_are_the_layers_it_took() {
    let answer = with_simulcast(
        "a=rid:l recv\na=rid:h recv\na=rid:m send\na=simulcast:recv l;~h;m send m\n",
    );
    let video = &parse(&answer).unwrap().media[1];
    assert_eq!(video.recv_rids, ["l", "h"]);
    assert_eq!(video.send_rids, ["m"]);
    assert!(parse(CHROMIUM_SIMULCAST).unwrap().media[1]
        .recv_rids
        .is_empty());
}

#[test]
fn an_offer_with_send_rids_writes_rid_and_simulcast_lines() {
    let mut offer = parse(CHROMIUM_SIMULCAST).unwrap();
    let video = offer.media.remove(1);
    let params = OfferParams {
        ice_ufrag: "simUfrag".into(),
        ice_pwd: "simPasswordOf24Chars000".into(),
        fingerprint: Fingerprint([0x5a; 32]),
        media: vec![OfferMedia {
            mid: "v".into(),
            kind: MediaKind::Video,
            direction: Direction::SendOnly,
            codecs: video.codecs[..1].to_vec(),
            extmaps: video.extmaps.clone(),
            send: None,
            send_rids: vec!["q".into(), "f".into()],
        }],
        active_tcp: None,
    };
    let text = write_offer(&params);
    assert!(
        text.contains("a=rid:q send\r\na=rid:f send\r\na=simulcast:send q;f\r\n"),
        "{text}"
    );
    assert_eq!(parse(&text).unwrap().media[0].send_rids, ["q", "f"]);
}
