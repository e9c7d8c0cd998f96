//! The CDN's RTMP distribution (`cdn.stream_distribution = "rtmp"`, issue 15): an origin
//! pushes each stream RTMP can carry to its edge's RTMP listener, where WebRTC players get
//! it. ffmpeg publishes H.264 and AAC to the origin over RTMP (the origin makes the AAC
//! Opus); the edge's WHEP player gets H.264 from a keyframe and the Opus packets as the
//! origin had them. A VP9 stream (libvpx's frames, published to the origin as Enhanced RTMP
//! `vp09`) goes over RTMP too, and the edge's player gets the same frames; so does an AV1 one
//! (libaom's temporal units, published as `av01`), and an H.265 one (x265's access units,
//! published as `hvc1`; the origin pushes it as `hvc1` too). A VP8 stream is relayed over WebRTC
//! instead. The access list travels with
//! the push, and a change of it publishes the stream again without ending the edge's players.
//! When the publisher stops, the edge's players end. Everything stays on 127.0.0.1.

use std::time::{Duration, Instant};

use rtcdn::config::cdn::{CdnNode, CdnRole, StreamDistribution};
use rtcdn::control::registry::AclChange;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{
    ClientSession, Mode, AUDIO_PT, AV1_PT, H264_PT, H265_PT, VIDEO_PT, VP9_PT,
};

mod common;
use common::{
    base_url, collect_rtp, ffmpeg_publish, get_json, is_h265_parameter_set, loopback_config,
    nal_types, play_when_live, send, X265Stream, CDN_SECRET,
};

/// An edge with an RTMP listener, on these HTTP and RTMP addresses (port 0: any; a stopped
/// node's ports may take a moment to be free again).
fn rtmp_edge(http: &str, rtmp: &str) -> Node {
    let mut edge_config = loopback_config(2);
    edge_config.http.listen = http.parse().unwrap();
    edge_config.rtmp.listen = Some(rtmp.parse().unwrap());
    edge_config.cdn.role = CdnRole::Edge;
    edge_config.cdn.secret = Some(rtcdn::auth::Secret::new(CDN_SECRET));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Node::start(&edge_config) {
            Ok(edge) => return edge,
            Err(e) if Instant::now() < deadline => {
                eprintln!("edge not started yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("edge starts: {e}"),
        }
    }
}

/// An edge with an RTMP listener, and an origin (with one too, for ffmpeg) that relays to it
/// over RTMP.
fn rtmp_cdn() -> (Node, Node) {
    let edge = rtmp_edge("127.0.0.1:0", "127.0.0.1:0");
    let mut origin_config = loopback_config(2);
    origin_config.rtmp.listen = Some("127.0.0.1:0".parse().unwrap());
    origin_config.cdn.load_balancing_enabled = true;
    origin_config.cdn.stream_distribution = StreamDistribution::Rtmp;
    origin_config.cdn.secret = Some(rtcdn::auth::Secret::new(CDN_SECRET));
    origin_config.cdn.nodes = vec![CdnNode {
        id: 1,
        host: "127.0.0.1".into(),
        ws: Some(edge.http_addr().port()),
        wss: None,
        rtmp: Some(edge.rtmp_addr().expect("the edge listens for RTMP").port()),
    }];
    let origin = Node::start(&origin_config).expect("origin starts");
    (origin, edge)
}

/// The origin's relays to its edge, as `/api/cdn` lists them: (stream, state, transport).
async fn relays(origin: &Node) -> Vec<(String, String, String)> {
    let cdn = get_json(&format!("{}/api/cdn", base_url(origin))).await;
    cdn["edges"][0]["relays"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (field("stream"), field("state"), field("transport"))
        })
        .collect()
}

/// Waits until the origin lists `stream`'s relay as up over `transport`.
async fn wait_for_relay(origin: &Node, stream: &str, transport: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = relays(origin).await;
        if now
            .iter()
            .any(|(s, state, t)| s == stream && state == "up" && t == transport)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {transport} relay of {stream} up: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a player receives in `window`: its H.264 and its audio packets.
async fn receive(player: &mut ClientSession, window: Duration) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    for p in collect_rtp(player, window).await {
        match rtp::RtpHeader::parse(&p).map(|h| h.payload_type().value()) {
            Ok(pt) if pt == H264_PT => video.push(p),
            Ok(pt) if pt == AUDIO_PT => audio.push(p),
            _ => {}
        }
    }
    (video, audio)
}

/// Frames (marker bits) among `video`, and whether the first one starts with SPS, PPS and
/// holds an IDR.
fn frames_from_a_keyframe(video: &[Vec<u8>]) -> (usize, bool) {
    let headers: Vec<_> = video
        .iter()
        .map(|p| rtp::RtpHeader::parse(p).unwrap())
        .collect();
    let frames = headers.iter().filter(|h| h.marker()).count();
    let first_ts = headers.first().map(|h| h.timestamp());
    let first_frame: Vec<Option<u8>> = headers
        .iter()
        .take_while(|h| Some(h.timestamp()) == first_ts)
        .map(|h| nal_types(h.payload()))
        .collect();
    let keyframe = first_frame.first() == Some(&Some(7)) && first_frame.contains(&Some(5));
    (frames, keyframe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_pushes_h264_and_opus_to_its_edge_over_rtmp_and_vp8_over_webrtc() {
    let (origin, edge) = rtmp_cdn();
    let origin_rtmp = origin.rtmp_addr().expect("the origin listens for RTMP");
    let edge_base = base_url(&edge);
    let certificate = DtlsCertificate::generate().unwrap();
    let mut encoder = ffmpeg_publish(&format!("rtmp://{origin_rtmp}/live/relaycam"), 40);

    // The stream reaches the edge over RTMP, and its WHEP player gets it from a keyframe.
    wait_for_relay(&origin, "relaycam", "rtmp").await;
    let mut player = play_when_live(&edge_base, "relaycam", &certificate).await;
    let (video, audio) = receive(&mut player, Duration::from_secs(4)).await;
    let (frames, keyframe) = frames_from_a_keyframe(&video);
    assert!(frames >= 60, "{frames} frames in 4 s");
    assert!(
        keyframe,
        "the first frame is a keyframe with its SPS and PPS"
    );
    // The origin's Opus (made from ffmpeg's AAC) as it was: 20 ms packets, none missing.
    assert!(audio.len() >= 100, "{} Opus packets in 4 s", audio.len());
    let audio: Vec<_> = audio
        .iter()
        .map(|p| rtp::RtpHeader::parse(p).unwrap())
        .collect();
    for pair in audio.windows(2) {
        assert_eq!(
            pair[1].sequence_number(),
            pair[0].sequence_number().wrapping_add(1)
        );
        assert_eq!(pair[1].timestamp().wrapping_sub(pair[0].timestamp()), 960);
    }
    // The edge knows the stream as a relay's copy (an RTMP ingest proving the CDN's secret).
    let cdn = get_json(&format!("{edge_base}/api/cdn")).await;
    assert_eq!(cdn["relays_in"].as_array().map(Vec::len), Some(1), "{cdn}");

    // The origin's access list goes with the push: a change publishes it again, and the edge's
    // player, holding the key, carries on with the new copy.
    let mut keyed = ClientSession::connect(
        &edge_base,
        Mode::Play,
        "relaycam?aclAuth=k1",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("a player with a key");
    origin
        .signalling()
        .change_acl("relaycam", AclChange::Set(vec!["k1".into()]))
        .unwrap();
    // The edge enforces the new list once the new copy is there: another key is refused.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let other = ClientSession::connect(
            &edge_base,
            Mode::Play,
            "relaycam?aclAuth=k9",
            &certificate,
            Duration::from_secs(10),
        )
        .await;
        match other {
            Err(e) if e.to_string().contains("403") => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the edge never took the new list"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for_relay(&origin, "relaycam", "rtmp").await;
    let (video, _) = receive(&mut keyed, Duration::from_secs(3)).await;
    assert!(
        frames_from_a_keyframe(&video).0 >= 30,
        "the keyed player gets the new copy"
    );
    // The player without a key no longer plays.
    assert!(player.wait_ended(Duration::from_secs(5)).await.is_some());

    // A VP8 stream cannot go over RTMP: it is relayed over WebRTC.
    let origin_base = base_url(&origin);
    let mut vp8 = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "vp8cam",
        &certificate,
        Duration::from_secs(10),
    )
    .await
    .expect("publish VP8");
    let start = Instant::now();
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut vp8_player = loop {
        send(&mut vp8, &mut seq, 0, start).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Ok(p) = ClientSession::connect(
            &edge_base,
            Mode::Play,
            "vp8cam",
            &certificate,
            Duration::from_secs(10),
        )
        .await
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the VP8 stream never reached the edge"
        );
    };
    wait_for_relay(&origin, "vp8cam", "udp").await;
    let mut got = false;
    for _ in 0..200 {
        send(&mut vp8, &mut seq, 0, start).await;
        if let Some(p) = vp8_player.recv_rtp(Duration::from_millis(10)).await {
            got |= rtp::RtpHeader::parse(&p).is_ok_and(|h| h.payload_type().value() == VIDEO_PT);
        }
    }
    assert!(got, "the edge's VP8 player gets VP8");

    // The RTMP publisher stops: the origin unpublishes on the edge, whose players end.
    let _ = encoder.kill();
    let _ = encoder.wait();
    assert!(
        keyed.wait_ended(Duration::from_secs(10)).await.is_some(),
        "the edge's player ends with the publisher"
    );
    origin.stop();
    edge.stop();
}

/// An edge that restarts gets the stream pushed again: the origin retries with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_gets_the_rtmp_push_again() {
    let (origin, edge) = rtmp_cdn();
    let origin_rtmp = origin.rtmp_addr().unwrap();
    let (http, rtmp) = (edge.http_addr(), edge.rtmp_addr().unwrap());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut encoder = ffmpeg_publish(&format!("rtmp://{origin_rtmp}/live/restartcam"), 60);
    wait_for_relay(&origin, "restartcam", "rtmp").await;
    let mut player = play_when_live(&base_url(&edge), "restartcam", &certificate).await;
    let (video, _) = receive(&mut player, Duration::from_secs(2)).await;
    assert!(
        frames_from_a_keyframe(&video).0 >= 30,
        "the first edge plays"
    );
    drop(player);

    edge.stop();
    let stopped = Instant::now();
    let edge = rtmp_edge(&http.to_string(), &rtmp.to_string());
    let mut player = play_when_live(&base_url(&edge), "restartcam", &certificate).await;
    let (video, _) = receive(&mut player, Duration::from_secs(2)).await;
    let (frames, keyframe) = frames_from_a_keyframe(&video);
    assert!(
        frames >= 30 && keyframe,
        "the restarted edge plays from a keyframe: {frames} frames, {:?} after the stop",
        stopped.elapsed()
    );
    let _ = encoder.kill();
    let _ = encoder.wait();
    origin.stop();
    edge.stop();
}

/// The edge takes RTMP publishes only from relays proving the CDN's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_refuses_an_rtmp_publish_without_a_relay_token() {
    let (origin, edge) = rtmp_cdn();
    let edge_rtmp = edge.rtmp_addr().unwrap();
    let output = ffmpeg_publish(&format!("rtmp://{edge_rtmp}/live/squat"), 2)
        .wait_with_output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a publish without a relay token is refused"
    );
    let forged = ffmpeg_publish(
        &format!("rtmp://{edge_rtmp}/live/squat?relayToken=forged"),
        2,
    )
    .wait_with_output()
    .unwrap();
    assert!(!forged.status.success(), "a forged relay token is refused");
    let streams = get_json(&format!("{}/api/streams", base_url(&edge))).await;
    assert_eq!(streams, serde_json::json!([]));
    origin.stop();
    edge.stop();
}

/// libvpx's VP9 frames of a test pattern: ffmpeg's IVF output (a 32-byte file header, then
/// each frame after a 12-byte header whose first four bytes are its size).
fn vp9_frames(count: usize) -> Vec<Vec<u8>> {
    let output = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=30"])
        .args(["-frames:v", &count.to_string(), "-pix_fmt", "yuv420p"])
        .args(["-c:v", "libvpx-vp9"])
        .args(["-deadline", "realtime", "-cpu-used", "8", "-g", "30"])
        .args(["-auto-alt-ref", "0", "-lag-in-frames", "0", "-b:v", "300k"])
        .args(["-f", "ivf", "pipe:1"])
        .output()
        .expect("ffmpeg runs (scripts/test.sh installs it)");
    assert!(output.status.success(), "{output:?}");
    let mut rest = &output.stdout[32..];
    let mut frames = Vec::new();
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.push(rest[12..12 + size].to_vec());
        rest = &rest[12 + size..];
    }
    assert_eq!(frames.len(), count);
    frames
}

fn is_vp9_keyframe(frame: &[u8]) -> bool {
    rtp::vp9::Vp9FrameHeader::parse(frame).is_some_and(|h| h.keyframe)
}

/// Publishes `frames` (each with its keyframe flag) to `rtmp_addr` as Enhanced RTMP video of
/// `fourcc` at 30 fps, after a sequence start of `config`, looping, for `seconds`.
async fn publish_enhanced(
    rtmp_addr: std::net::SocketAddr,
    stream: &str,
    fourcc: [u8; 4],
    config: Vec<u8>,
    frames: Vec<(bool, Vec<u8>)>,
    seconds: u64,
) {
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut socket = tokio::net::TcpStream::connect(rtmp_addr).await.unwrap();
    let url = format!("rtmp://{rtmp_addr}/live");
    let mut push = rtcdn::rtmp::push::RtmpPush::new(&url, "live", stream).unwrap();
    let mut buf = vec![0u8; 4096];
    while !push.is_publishing() {
        socket.write_all(push.output()).await.unwrap();
        push.clear_output();
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the origin closed the publish");
        push.handle_input(&buf[..n]).unwrap();
    }
    let tag = |key: bool, packet_type: u8, body: &[u8]| {
        let first = 0x80 | if key { 0x10 } else { 0x20 } | packet_type;
        Bytes::from([&[first][..], &fourcc, body].concat())
    };
    push.send_video(0, tag(true, 0, &config)).unwrap();
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let (key, frame) = &frames[i % frames.len()];
        push.send_video((i as u32) * 33, tag(*key, 1, frame))
            .unwrap();
        socket.write_all(push.output()).await.unwrap();
        push.clear_output();
        i += 1;
        // Acknowledgements and pings from the origin, without waiting for them.
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), socket.read(&mut buf)).await
        {
            if n > 0 {
                let _ = push.handle_input(&buf[..n]);
            }
        }
        tokio::time::sleep_until((started + Duration::from_millis(33 * i as u64)).into()).await;
    }
    let _ = push.finish();
    let _ = socket.write_all(push.output()).await;
}

/// Publishes libvpx's `frames` to `rtmp_addr` as Enhanced RTMP `vp09`.
async fn publish_vp9(
    rtmp_addr: std::net::SocketAddr,
    stream: &str,
    frames: Vec<Vec<u8>>,
    seconds: u64,
) {
    use rtcdn::rtmp::flv::{Vp9Config, FOURCC_VP9};
    let config = Vp9Config {
        profile: 0,
        level: 10,
        bit_depth: 8,
        chroma_subsampling: 1,
        full_range: false,
        colour_primaries: 2,
        transfer_characteristics: 2,
        matrix_coefficients: 2,
    };
    let frames = frames
        .into_iter()
        .map(|f| (is_vp9_keyframe(&f), f))
        .collect();
    publish_enhanced(
        rtmp_addr,
        stream,
        FOURCC_VP9,
        config.write().to_vec(),
        frames,
        seconds,
    )
    .await
}

/// The frames among a player's VP9 packets: each from the packet with B to the one with E, its
/// keyframe flag (P clear) and its bytes.
fn vp9_player_frames(packets: &[Vec<u8>]) -> Vec<(bool, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut current: Option<(bool, Vec<u8>)> = None;
    for packet in packets {
        let header = rtp::RtpHeader::parse(packet).unwrap();
        let payload = header.payload();
        let d = rtp::vp9::Vp9Descriptor::parse(payload).expect("a VP9 payload descriptor");
        if d.begins_frame {
            current = Some((!d.inter_predicted, Vec::new()));
        }
        if let Some((_, bytes)) = current.as_mut() {
            bytes.extend_from_slice(&payload[d.len..]);
        }
        if d.ends_frame {
            frames.extend(current.take());
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_pushes_vp9_to_its_edge_over_enhanced_rtmp() {
    let (origin, edge) = rtmp_cdn();
    let origin_rtmp = origin.rtmp_addr().expect("the origin listens for RTMP");
    let certificate = DtlsCertificate::generate().unwrap();
    let frames = vp9_frames(60);
    let publisher = tokio::spawn(publish_vp9(origin_rtmp, "vp9cam", frames.clone(), 20));

    wait_for_relay(&origin, "vp9cam", "rtmp").await;
    let mut player = play_when_live(&base_url(&edge), "vp9cam", &certificate).await;
    let video: Vec<Vec<u8>> = collect_rtp(&mut player, Duration::from_secs(4))
        .await
        .into_iter()
        .filter(|p| rtp::RtpHeader::parse(p).is_ok_and(|h| h.payload_type().value() == VP9_PT))
        .collect();
    let got = vp9_player_frames(&video);
    assert!(got.len() >= 60, "{} VP9 frames in 4 s", got.len());
    assert!(got[0].0, "the player starts on a keyframe");
    // Every frame is one libvpx made, the keyframes where they were, in order.
    let start = frames
        .iter()
        .position(|f| *f == got[0].1)
        .expect("the first frame is one of the publisher's");
    for (n, (key, bytes)) in got.iter().enumerate() {
        let index = (start + n) % frames.len();
        assert_eq!(bytes, &frames[index], "frame {n}");
        assert_eq!(*key, is_vp9_keyframe(&frames[index]), "frame {n}'s P bit");
    }
    publisher.abort();
}

/// libaom's temporal units of a test pattern (a keyframe every 30, its sequence header in each
/// keyframe), without their temporal delimiters, as an MP4 sample or an `av01` frame holds
/// them: ffmpeg's IVF output, read as [`vp9_frames`] reads it.
fn av1_units(count: usize) -> Vec<Vec<u8>> {
    let output = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-frames:v", &count.to_string(), "-pix_fmt", "yuv420p"])
        .args(["-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime"])
        .args(["-g", "30", "-b:v", "300k", "-f", "ivf", "pipe:1"])
        .output()
        .expect("ffmpeg runs (scripts/test.sh installs it)");
    assert!(output.status.success(), "{output:?}");
    let mut rest = &output.stdout[32..];
    let mut units = Vec::new();
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let mut unit = Vec::new();
        for obu in rtp::av1_obu::ObuIter::new(&rest[12..12 + size]) {
            let obu = obu.expect("libaom's OBUs read");
            if obu.obu_type() == rtp::av1_obu::OBU_TEMPORAL_DELIMITER {
                continue;
            }
            unit.push(obu.header | 0x02);
            unit.extend(obu.extension);
            let mut len = [0; rtp::av1_obu::LEB128_MAX];
            let used = rtp::av1_obu::write_leb128(obu.payload.len(), &mut len);
            unit.extend_from_slice(&len[..used]);
            unit.extend_from_slice(obu.payload);
        }
        units.push(unit);
        rest = &rest[12 + size..];
    }
    assert_eq!(units.len(), count);
    units
}

/// A unit's sequence header OBU (with its size field), when it has one: a keyframe's.
fn av1_sequence_header(unit: &[u8]) -> Option<Vec<u8>> {
    let mut rest = unit;
    for obu in rtp::av1_obu::ObuIter::new(unit) {
        let obu = obu.unwrap();
        let len = 1 + obu.extension.map_or(0, |_| 1) + rtp::av1_obu::leb128_len(obu.payload.len());
        let (this, after) = rest.split_at(len + obu.payload.len());
        if obu.obu_type() == rtp::av1_obu::OBU_SEQUENCE_HEADER {
            return Some(this.to_vec());
        }
        rest = after;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_pushes_av1_to_its_edge_over_enhanced_rtmp() {
    use rtcdn::rtmp::flv::{parse_video, Av1Config, VideoTag, FOURCC_AV1};
    use rtcdn::rtmp::rtp_av1_flv::RtpAv1ToFlv;
    use rtcdn::rtmp::rtp_flv::FlvVideo;

    let (origin, edge) = rtmp_cdn();
    let origin_rtmp = origin.rtmp_addr().expect("the origin listens for RTMP");
    let certificate = DtlsCertificate::generate().unwrap();
    let units = av1_units(60);
    let sequence = av1_sequence_header(&units[0]).expect("the first unit is a keyframe");
    let config = Av1Config {
        seq_profile: 0,
        seq_level_idx_0: 0,
        seq_tier_0: false,
        high_bitdepth: false,
        twelve_bit: false,
        monochrome: false,
        chroma_subsampling_x: true,
        chroma_subsampling_y: true,
        chroma_sample_position: 0,
        initial_presentation_delay_minus_one: None,
        config_obus: &sequence,
    };
    let frames = units
        .iter()
        .map(|u| (av1_sequence_header(u).is_some(), u.clone()))
        .collect();
    let publisher = tokio::spawn(publish_enhanced(
        origin_rtmp,
        "av1cam",
        FOURCC_AV1,
        config.write(),
        frames,
        20,
    ));

    // The origin pushes the stream to the edge over RTMP (as `av01`), not over WebRTC.
    wait_for_relay(&origin, "av1cam", "rtmp").await;
    let mut player = play_when_live(&base_url(&edge), "av1cam", &certificate).await;
    let video: Vec<Vec<u8>> = collect_rtp(&mut player, Duration::from_secs(4))
        .await
        .into_iter()
        .filter(|p| rtp::RtpHeader::parse(p).is_ok_and(|h| h.payload_type().value() == AV1_PT))
        .collect();
    // The player's packets put back together as the origin's push does.
    let mut depacketizer = RtpAv1ToFlv::new(AV1_PT);
    let mut got = Vec::new();
    for packet in &video {
        depacketizer.push(packet, |v| {
            if let FlvVideo::Frame { body, .. } = v {
                let Ok(VideoTag::Av1Frame { keyframe, obus }) = parse_video(&body) else {
                    panic!("{body:?}")
                };
                got.push((keyframe, obus.to_vec()));
            }
        });
    }
    assert!(got.len() >= 60, "{} AV1 temporal units in 4 s", got.len());
    assert!(got[0].0, "the player starts on a keyframe");
    assert_eq!(depacketizer.counters.losses, 0);
    // Every unit is one libaom made, the keyframes where they were, in order.
    let start = units
        .iter()
        .position(|u| *u == got[0].1)
        .expect("the first unit is one of the publisher's");
    for (n, (key, obus)) in got.iter().enumerate() {
        let index = (start + n) % units.len();
        assert_eq!(obus, &units[index], "unit {n}");
        assert_eq!(*key, index.is_multiple_of(30), "unit {n}'s keyframe flag");
    }
    publisher.abort();
    origin.stop();
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_pushes_h265_to_its_edge_over_enhanced_rtmp() {
    use rtcdn::rtmp::flv::{parse_video, VideoTag, FOURCC_HEVC};
    use rtcdn::rtmp::rtp_flv::{FlvVideo, NalCodec, RtpToFlv};

    let (origin, edge) = rtmp_cdn();
    let origin_rtmp = origin.rtmp_addr().expect("the origin listens for RTMP");
    let certificate = DtlsCertificate::generate().unwrap();
    // As an encoder sends H.265 over RTMP: the parameter sets in the hvcC, the access units as
    // CodedFrames of length-prefixed NAL units (composition time 0).
    let x265 = X265Stream::encode(60);
    assert_eq!(x265.keyframes.iter().filter(|k| **k).count(), 2);
    let (sets, published, keyframes) = (&x265.parameter_sets, &x265.units, &x265.keyframes);
    let frames = x265.bodies(|_| true);
    let publisher = tokio::spawn(publish_enhanced(
        origin_rtmp,
        "h265cam",
        FOURCC_HEVC,
        x265.hvcc(),
        frames,
        20,
    ));

    // The origin pushes the stream to the edge over RTMP (as `hvc1`), not over WebRTC.
    wait_for_relay(&origin, "h265cam", "rtmp").await;
    let mut player = play_when_live(&base_url(&edge), "h265cam", &certificate).await;
    let packets = collect_rtp(&mut player, Duration::from_secs(4)).await;
    let video: Vec<&Vec<u8>> = packets
        .iter()
        .filter(|p| rtp::RtpHeader::parse(p).is_ok_and(|h| h.payload_type().value() == H265_PT))
        .collect();
    assert_eq!(video.len(), packets.len(), "H.265 only");
    // The player's packets put back together as the origin's push does: the parameter sets
    // before the first keyframe make its sequence start.
    let mut depacketizer = RtpToFlv::for_codec(NalCodec::H265, H265_PT);
    let (mut got, mut starts) = (Vec::new(), Vec::new());
    for packet in video {
        depacketizer.push(packet, |v| match v {
            FlvVideo::Config { body, size, .. } => {
                let Ok(VideoTag::HevcConfig(record)) = parse_video(&body) else {
                    panic!("{body:?}")
                };
                let sets = [record.vps, record.sps, record.pps].map(<[u8]>::to_vec);
                starts.push((sets, size));
            }
            FlvVideo::Frame { body, .. } => {
                let Ok(VideoTag::HevcFrame {
                    keyframe, nalus, ..
                }) = parse_video(&body)
                else {
                    panic!("{body:?}")
                };
                let nals: Vec<Vec<u8>> = rtcdn::rtmp::flv::nal_units(nalus, 4)
                    .map(<[u8]>::to_vec)
                    .collect();
                got.push((keyframe, nals));
            }
        });
    }
    assert_eq!(depacketizer.counters.losses, 0);
    assert!(got.len() >= 60, "{} H.265 access units in 4 s", got.len());
    assert!(got[0].0, "the player starts on a keyframe");
    // x265's own parameter sets, and its picture size, reach the edge's player.
    assert_eq!(
        starts,
        [(
            [sets[0].clone(), sets[1].clone(), sets[2].clone()],
            Some((320, 240))
        )]
    );
    // Every access unit is one x265 made (its parameter sets aside), the keyframes where they
    // were, in order.
    let slices = |unit: &[Vec<u8>]| -> Vec<Vec<u8>> {
        unit.iter()
            .filter(|nal| !is_h265_parameter_set(nal))
            .cloned()
            .collect()
    };
    let start = published
        .iter()
        .position(|u| slices(u) == got[0].1)
        .expect("the first access unit is one of the publisher's");
    for (n, (key, nals)) in got.iter().enumerate() {
        let index = (start + n) % published.len();
        assert_eq!(*nals, slices(&published[index]), "access unit {n}");
        assert_eq!(*key, keyframes[index], "access unit {n}'s keyframe flag");
    }
    publisher.abort();
    origin.stop();
    edge.stop();
}
