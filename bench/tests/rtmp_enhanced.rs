//! Enhanced RTMP publish -> WebRTC player (issue 15, item 1): a small RTMP client (rml_rtmp's
//! client session over a socket; Debian's ffmpeg 5.1 writes no Enhanced RTMP) publishes FourCC
//! `avc1` video and `Opus` audio, announced by FourCC in `onMetaData`, and a WHEP player gets
//! the H.264 from its keyframe and every Opus packet byte for byte, one RTP packet each, in
//! order, 960 ticks (20 ms) apart. A `vp08` publish is refused with its name in the log line's
//! reason. An `hvc1` publish of x265's access units reaches a WHEP player as H.265 RTP (RFC 7798)
//! whose NAL units are the published ones, from a keyframe on, with the parameter sets before
//! each keyframe, and ffmpeg's HEVC decoder decodes every frame of it. An `av01` publish of libaom's temporal units (ffmpeg's, from IVF) reaches a WHEP player
//! as AV1 RTP whose OBUs are the published ones, from a keyframe on, keyframes (N) where they
//! were. Everything stays on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession as RtmpSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn::rtmp::flv::{
    fourcc_codec_id, AUDIO_PACKET_CODED_FRAMES, AUDIO_PACKET_SEQUENCE_START, FOURCC_AV1,
    FOURCC_AVC, FOURCC_HEVC, FOURCC_OPUS, OPUS_HEAD_MAGIC, SOUND_FORMAT_EX_HEADER, VIDEO_EX_HEADER,
    VIDEO_FRAME_INTER, VIDEO_FRAME_KEY, VIDEO_PACKET_CODED_FRAMES, VIDEO_PACKET_CODED_FRAMES_X,
    VIDEO_PACKET_SEQUENCE_START,
};
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT, AV1_PT, H264_PT, H265_PT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{collect_rtp, get_json, is_h265_parameter_set, loopback_config, X265Stream};

/// x264's baseline SPS and PPS for 320x240.
const SPS: [u8; 23] = [
    0x67, 0x42, 0xC0, 0x0D, 0xDC, 0x14, 0x1F, 0xB0, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00,
    0x03, 0x00, 0x3C, 0x0F, 0x14, 0x2B, 0x80,
];
const PPS: [u8; 5] = [0x68, 0xCE, 0x0F, 0x2C, 0x80];

/// An RTMP publisher: rml_rtmp's client session, its bytes over a TCP socket.
struct Publisher {
    socket: TcpStream,
    session: RtmpSession,
    events: Vec<ClientSessionEvent>,
}

impl Publisher {
    /// Connects to `live` and publishes `name`.
    async fn start(addr: SocketAddr, name: &str) -> Publisher {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut handshake = Handshake::new(PeerType::Client);
        socket
            .write_all(&handshake.generate_outbound_p0_and_p1().unwrap())
            .await
            .unwrap();
        let mut buf = vec![0u8; 8192];
        let remaining = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the node closed the handshake");
            match handshake.process_bytes(&buf[..n]).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket.write_all(&response_bytes).await.unwrap()
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes).await.unwrap();
                    break remaining_bytes;
                }
            }
        };
        let (session, results) = RtmpSession::new(ClientSessionConfig::new()).unwrap();
        let mut publisher = Publisher {
            socket,
            session,
            events: Vec::new(),
        };
        publisher.send(results).await;
        if !remaining.is_empty() {
            let results = publisher.session.handle_input(&remaining).unwrap();
            publisher.send(results).await;
        }
        let connect = publisher.session.request_connection("live".into()).unwrap();
        publisher.send(vec![connect]).await;
        publisher
            .wait_for(&ClientSessionEvent::ConnectionRequestAccepted)
            .await;
        let publish = publisher
            .session
            .request_publishing(name.into(), PublishRequestType::Live)
            .unwrap();
        publisher.send(vec![publish]).await;
        publisher
            .wait_for(&ClientSessionEvent::PublishRequestAccepted)
            .await;
        publisher
    }

    async fn send(&mut self, results: Vec<ClientSessionResult>) {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.socket.write_all(&packet.bytes).await.unwrap()
                }
                ClientSessionResult::RaisedEvent(event) => self.events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// Reads from the node until `event` came.
    async fn wait_for(&mut self, event: &ClientSessionEvent) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 8192];
        while !self.events.contains(event) {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.socket.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {event:?}: {:?}", self.events))
                .unwrap();
            assert!(n > 0, "the node closed the connection: {:?}", self.events);
            let results = self.session.handle_input(&buf[..n]).unwrap();
            self.send(results).await;
        }
    }

    /// Whether the node closed the connection within `limit` (answers read and dropped).
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.socket.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn metadata(&mut self, metadata: &StreamMetadata) {
        let packet = self.session.publish_metadata(metadata).unwrap();
        self.send(vec![packet]).await;
    }

    async fn video(&mut self, ms: u32, body: Vec<u8>) {
        let packet = self
            .session
            .publish_video_data(Bytes::from(body), RtmpTimestamp::new(ms), false)
            .unwrap();
        self.send(vec![packet]).await;
    }

    async fn audio(&mut self, ms: u32, body: Vec<u8>) {
        let packet = self
            .session
            .publish_audio_data(Bytes::from(body), RtmpTimestamp::new(ms), false)
            .unwrap();
        self.send(vec![packet]).await;
    }
}

/// An Enhanced RTMP video message.
fn ex_video(frame_type: u8, packet_type: u8, fourcc: [u8; 4], body: &[u8]) -> Vec<u8> {
    let first = VIDEO_EX_HEADER | frame_type << 4 | packet_type;
    [&[first][..], &fourcc, body].concat()
}

/// An Enhanced RTMP Opus message.
fn ex_opus(packet_type: u8, body: &[u8]) -> Vec<u8> {
    let first = SOUND_FORMAT_EX_HEADER << 4 | packet_type;
    [&[first][..], &FOURCC_OPUS, body].concat()
}

/// The AVCDecoderConfigurationRecord of `SPS` and `PPS`, 4-byte NAL lengths.
fn avc_record() -> Vec<u8> {
    let mut record = vec![1, SPS[1], SPS[2], SPS[3], 0xFF, 0xE1];
    record.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
    record.extend_from_slice(&SPS);
    record.push(1);
    record.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    record.extend_from_slice(&PPS);
    record
}

/// One frame's NAL unit (an IDR or not), length-prefixed, `size` bytes of slice.
fn nal(idr: bool, size: usize) -> Vec<u8> {
    let mut unit = vec![if idr { 0x65 } else { 0x41 }];
    unit.resize(size, 0x5A);
    [&(size as u32).to_be_bytes()[..], &unit].concat()
}

/// The Opus packet sent at `index`: a 20 ms CELT stereo TOC and bytes that say which.
fn opus_packet(index: u32) -> Vec<u8> {
    let mut packet = vec![0xFC];
    packet.extend_from_slice(&index.to_be_bytes());
    packet.resize(60 + (index % 7) as usize, 0xA5);
    packet
}

/// The `/api/streams` row of `name`: its video track's codec and the picture size the node
/// read from its keyframes.
async fn codec_and_size(base: &str, name: &str) -> (String, serde_json::Value, serde_json::Value) {
    let streams = get_json(&format!("{base}/api/streams")).await;
    let row = streams
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["name"] == name))
        .unwrap_or_else(|| panic!("{name} listed: {streams}"))
        .clone();
    let video = row["tracks"]
        .as_array()
        .and_then(|tracks| tracks.iter().find(|t| t["kind"] == "video"))
        .unwrap_or_else(|| panic!("a video track: {row}"));
    let codec = video["codec"].as_str().unwrap_or_default().to_owned();
    (codec, row["width"].clone(), row["height"].clone())
}

/// Publishes `name` as Enhanced RTMP `fourcc` video: `onMetaData` naming it, the sequence start
/// `record`, then at 30 fps for 8 s the frame `bodies` over and over (keyframes as
/// CodedFrames, the others as CodedFramesX), paced as an encoder sends them; the task returns
/// the publisher when done.
async fn publish_enhanced_video(
    rtmp: SocketAddr,
    name: &str,
    fourcc: [u8; 4],
    record: &[u8],
    bodies: Vec<(bool, Vec<u8>)>,
) -> tokio::task::JoinHandle<Publisher> {
    let mut publisher = Publisher::start(rtmp, name).await;
    let mut metadata = StreamMetadata::new();
    metadata.video_codec_id = Some(fourcc_codec_id(fourcc));
    publisher.metadata(&metadata).await;
    let start = ex_video(VIDEO_FRAME_KEY, VIDEO_PACKET_SEQUENCE_START, fourcc, record);
    publisher.video(0, start).await;
    tokio::spawn(async move {
        let started = Instant::now();
        for frame in 0..30 * 8u32 {
            let (keyframe, body) = &bodies[frame as usize % bodies.len()];
            let (frame_type, packet_type) = if *keyframe {
                (VIDEO_FRAME_KEY, VIDEO_PACKET_CODED_FRAMES)
            } else {
                (VIDEO_FRAME_INTER, VIDEO_PACKET_CODED_FRAMES_X)
            };
            let ms = frame * 1000 / 30;
            publisher
                .video(ms, ex_video(frame_type, packet_type, fourcc, body))
                .await;
            let due = Duration::from_millis(u64::from(ms));
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
        publisher
    })
}

/// Plays `name` for 4 s once it is live: its `/api/streams` row must say `codec` at 320x240
/// (read from its keyframes) and every packet must be of payload type `pt`. Returns the player
/// and the packets.
async fn play_video(
    base: &str,
    name: &str,
    certificate: &DtlsCertificate,
    codec: &str,
    pt: u8,
) -> (ClientSession, Vec<Vec<u8>>) {
    let mut player = play_when_live(base, name, certificate).await;
    let packets = collect_rtp(&mut player, Duration::from_secs(4)).await;
    assert_eq!(
        codec_and_size(base, name).await,
        (codec.into(), 320.into(), 240.into())
    );
    let others = packets
        .iter()
        .filter(|p| rtp::RtpHeader::parse(p).expect("RTP").payload_type() != rtp::Pt::new(pt))
        .count();
    assert_eq!(others, 0, "{codec} only");
    (player, packets)
}

/// Plays `stream` once it is live.
async fn play_when_live(base: &str, stream: &str, certificate: &DtlsCertificate) -> ClientSession {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let timeout = Duration::from_secs(10);
        match ClientSession::connect(base, Mode::Play, stream, certificate, timeout).await {
            Ok(player) => return player,
            Err(e) => {
                assert!(Instant::now() < deadline, "never went live: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enhanced_rtmp_publish_of_avc1_and_opus_reaches_a_whep_player_opus_untouched() {
    let mut config = loopback_config(1);
    config.rtmp.listen = Some("127.0.0.1:0".parse().unwrap());
    let node = Node::start(&config).expect("node starts");
    let rtmp = node.rtmp_addr().expect("RTMP listener runs");
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    let mut publisher = Publisher::start(rtmp, "ecam").await;
    let mut metadata = StreamMetadata::new();
    metadata.video_codec_id = Some(fourcc_codec_id(FOURCC_AVC));
    metadata.audio_codec_id = Some(fourcc_codec_id(FOURCC_OPUS));
    publisher.metadata(&metadata).await;
    // The video's sequence start first: the stream goes live at it, with the Opus track
    // because onMetaData named Opus.
    let start = ex_video(
        VIDEO_FRAME_KEY,
        VIDEO_PACKET_SEQUENCE_START,
        FOURCC_AVC,
        &avc_record(),
    );
    publisher.video(0, start).await;
    let mut head = OPUS_HEAD_MAGIC.to_vec();
    head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
    publisher
        .audio(0, ex_opus(AUDIO_PACKET_SEQUENCE_START, &head))
        .await;

    // 30 fps video (a keyframe a second; CodedFrames with a zero composition time, then
    // CodedFramesX) and 20 ms Opus, paced as an encoder sends them, while the player joins.
    let publishing = tokio::spawn(async move {
        let started = Instant::now();
        let (mut frame, mut opus) = (0u32, 0u32);
        while frame < 30 * 8 {
            let (video_ms, audio_ms) = (frame * 1000 / 30, opus * 20);
            if video_ms <= audio_ms {
                let key = frame % 30 == 0;
                let message = if key {
                    let body = [&[0, 0, 0][..], &nal(true, 900)].concat();
                    ex_video(
                        VIDEO_FRAME_KEY,
                        VIDEO_PACKET_CODED_FRAMES,
                        FOURCC_AVC,
                        &body,
                    )
                } else {
                    let body = nal(false, 300);
                    ex_video(
                        VIDEO_FRAME_INTER,
                        VIDEO_PACKET_CODED_FRAMES_X,
                        FOURCC_AVC,
                        &body,
                    )
                };
                publisher.video(video_ms, message).await;
                frame += 1;
            } else {
                let message = ex_opus(AUDIO_PACKET_CODED_FRAMES, &opus_packet(opus));
                publisher.audio(audio_ms, message).await;
                opus += 1;
            }
            let due = Duration::from_millis(u64::from(video_ms.min(audio_ms)));
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
        publisher
    });

    let mut player = play_when_live(&base, "ecam", &certificate).await;
    let packets = collect_rtp(&mut player, Duration::from_secs(4)).await;
    let mut publisher = publishing.await.unwrap();
    let (video, audio): (Vec<_>, Vec<_>) = packets
        .iter()
        .map(|p| rtp::RtpHeader::parse(p).expect("RTP"))
        .partition(|h| h.payload_type() == rtp::Pt::new(H264_PT));
    assert!(
        audio
            .iter()
            .all(|h| h.payload_type() == rtp::Pt::new(AUDIO_PT)),
        "H.264 and Opus only"
    );
    // The Opus packets as sent, one RTP packet each, 20 ms apart on the 48 kHz clock.
    assert!(audio.len() >= 150, "{} Opus packets in 4 s", audio.len());
    let first = u32::from_be_bytes(audio[0].payload()[1..5].try_into().unwrap());
    for (i, h) in audio.iter().enumerate() {
        assert_eq!(h.payload(), opus_packet(first + i as u32), "packet {i}");
    }
    for pair in audio.windows(2) {
        assert_eq!(
            pair[1].sequence_number(),
            pair[0].sequence_number().wrapping_add(1)
        );
        assert_eq!(pair[1].timestamp().wrapping_sub(pair[0].timestamp()), 960);
    }
    // The H.264 from a keyframe: SPS, PPS, the IDR.
    assert!(video.len() > 60, "{} video packets", video.len());
    let types: Vec<u8> = video
        .iter()
        .take(3)
        .map(|h| h.payload()[0] & 0x1F)
        .collect();
    assert_eq!(types, [7, 8, 5], "SPS, PPS, the IDR");
    assert_eq!(video[0].payload(), SPS);

    let stop = publisher.session.stop_publishing().unwrap();
    publisher.send(stop).await;
    assert!(player.wait_ended(Duration::from_secs(10)).await.is_some());

    // VP8 over Enhanced RTMP is refused: the node closes the publish.
    let mut vp8 = Publisher::start(rtmp, "vcam").await;
    let start = ex_video(
        VIDEO_FRAME_KEY,
        VIDEO_PACKET_SEQUENCE_START,
        *b"vp08",
        &[1, 2, 3],
    );
    vp8.video(0, start).await;
    assert!(
        vp8.closed_within(Duration::from_secs(5)).await,
        "a vp08 publish is closed"
    );
    node.stop();
}

/// libaom's AV1 (ffmpeg, realtime, a keyframe a second) for `frames` frames of 320x240 test
/// pattern: the IVF frames, each one temporal unit in the low overhead format.
fn libaom_temporal_units(frames: u32) -> Vec<Vec<u8>> {
    let output = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"])
        .args(["-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime"])
        .args(["-g", "30", "-f", "ivf", "pipe:1"])
        .output()
        .expect("ffmpeg runs (scripts/test.sh installs it)");
    assert!(output.status.success(), "ffmpeg: {:?}", output);
    // A 32-byte file header, then each frame's 4-byte size and 8-byte timestamp.
    let mut rest = &output.stdout[32..];
    let mut units = Vec::new();
    while rest.len() >= 12 {
        let size = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        units.push(rest[12..12 + size].to_vec());
        rest = &rest[12 + size..];
    }
    assert_eq!(units.len(), frames as usize);
    units
}

/// The OBUs of `unit` (low overhead format) but its temporal delimiters, each written again
/// with the shortest size field: what a player's depacketizer gets back.
fn obus_without_tds(unit: &[u8]) -> Vec<u8> {
    use rtp::av1_obu::{ObuIter, OBU_TEMPORAL_DELIMITER};
    let mut out = Vec::new();
    for obu in ObuIter::new(unit) {
        let obu = obu.expect("libaom's OBUs parse");
        if obu.obu_type() != OBU_TEMPORAL_DELIMITER {
            put_obu(&mut out, obu.header, obu.extension, obu.payload);
        }
    }
    out
}

fn put_obu(out: &mut Vec<u8>, header: u8, extension: Option<u8>, payload: &[u8]) {
    out.push(header | 0x02);
    out.extend(extension);
    let mut size = [0u8; 8];
    let len = rtp::av1_obu::write_leb128(payload.len(), &mut size);
    out.extend_from_slice(&size[..len]);
    out.extend_from_slice(payload);
}

/// Whether `unit` carries a sequence header: libaom sends one with each keyframe.
fn has_sequence_header(unit: &[u8]) -> bool {
    rtp::av1_obu::ObuIter::new(unit)
        .any(|obu| obu.unwrap().obu_type() == rtp::av1_obu::OBU_SEQUENCE_HEADER)
}

/// The av1C ffmpeg would write for `sequence_header` (an OBU with its size field): marker and
/// version, profile and level read from it, 4:2:0, then the OBU.
fn av1c(sequence_header: &[u8]) -> Vec<u8> {
    let body = &sequence_header[2..];
    // seq_profile(3) still_picture(1) reduced_still_picture_header(1) timing_info_present(1)
    // initial_display_delay_present(1) operating_points_cnt_minus_1(5)
    // operating_point_idc[0](12) seq_level_idx[0](5): libaom's has no timing info.
    let bits = u32::from_be_bytes(body[..4].try_into().unwrap());
    assert_eq!(
        bits >> 26 & 0x7,
        0,
        "no reduced header, timing info or display delay"
    );
    let (profile, level) = ((bits >> 29) as u8, (bits >> 2 & 0x1F) as u8);
    [&[0x81, profile << 5 | level, 0x0C, 0][..], sequence_header].concat()
}

/// A WHEP player's AV1 RTP as temporal units (OBUs with size fields again), each with whether
/// its first packet had N set; checks Z/Y, W, the marker and the sequence numbers as it goes.
fn depacketize_av1(packets: &[rtp::RtpHeader]) -> Vec<(Vec<u8>, bool)> {
    let mut units = Vec::new();
    let (mut unit, mut fragment) = (Vec::new(), Vec::<u8>::new());
    let mut new_sequence = None;
    let mut pending_y = false;
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 {
            let expected = packets[i - 1].sequence_number().wrapping_add(1);
            assert_eq!(packet.sequence_number(), expected, "no loss on loopback");
        }
        let payload = packet.payload();
        let aggregation = payload[0];
        new_sequence.get_or_insert(aggregation & 0x08 != 0);
        assert_eq!(aggregation & 0x80 != 0, pending_y, "Z after Y, packet {i}");
        let w = usize::from(aggregation >> 4 & 0x03);
        let mut rest = &payload[1..];
        let mut index = 0;
        while !rest.is_empty() {
            index += 1;
            let element = if w == 0 || index < w {
                let (len, used) = rtp::av1_obu::leb128(rest).expect("an element length");
                let element = &rest[used..used + len as usize];
                rest = &rest[used + len as usize..];
                element
            } else {
                std::mem::take(&mut rest)
            };
            fragment.extend_from_slice(element);
            if !(rest.is_empty() && aggregation & 0x40 != 0) {
                let header = fragment[0];
                assert_eq!(header & 0x02, 0, "OBU elements have no size field");
                let extension = (header & 0x04 != 0).then(|| fragment[1]);
                let head = 1 + usize::from(extension.is_some());
                put_obu(&mut unit, header, extension, &fragment[head..]);
                fragment.clear();
            }
        }
        assert!(w == 0 || index == w, "W counts the elements");
        pending_y = aggregation & 0x40 != 0;
        if packet.marker() {
            assert!(!pending_y, "a temporal unit ends with whole OBUs");
            units.push((std::mem::take(&mut unit), new_sequence.take().unwrap()));
        }
    }
    units
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enhanced_rtmp_publish_of_av01_reaches_a_whep_player_obu_for_obu() {
    let units = libaom_temporal_units(90);
    let keyframes: Vec<bool> = units.iter().map(|u| has_sequence_header(u)).collect();
    assert_eq!(
        keyframes.iter().filter(|k| **k).count(),
        3,
        "a keyframe each 30 frames"
    );
    let sequence_header: Vec<u8> = rtp::av1_obu::ObuIter::new(&units[0])
        .map(Result::unwrap)
        .find(|obu| obu.obu_type() == rtp::av1_obu::OBU_SEQUENCE_HEADER)
        .map(|obu| {
            let mut out = Vec::new();
            put_obu(&mut out, obu.header, obu.extension, obu.payload);
            out
        })
        .unwrap();

    let mut config = loopback_config(1);
    config.rtmp.listen = Some("127.0.0.1:0".parse().unwrap());
    let node = Node::start(&config).expect("node starts");
    let rtmp = node.rtmp_addr().expect("RTMP listener runs");
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    // 30 fps for 8 s, the 90 units over again (each round starts with a keyframe); AV1 has no
    // composition time.
    let bodies = keyframes
        .iter()
        .copied()
        .zip(units.iter().cloned())
        .collect();
    let publishing =
        publish_enhanced_video(rtmp, "acam", FOURCC_AV1, &av1c(&sequence_header), bodies).await;

    // The size is read from the sequence header the keyframes carry.
    let (mut player, packets) = play_video(&base, "acam", &certificate, "AV1", AV1_PT).await;
    let mut publisher = publishing.await.unwrap();
    let video: Vec<_> = packets
        .iter()
        .map(|p| rtp::RtpHeader::parse(p).expect("RTP"))
        .collect();
    let received = depacketize_av1(&video);
    assert!(
        received.len() >= 90,
        "{} temporal units in 4 s",
        received.len()
    );
    // The first is a keyframe, N set; then the published units in order, from that one on.
    let expected: Vec<Vec<u8>> = units.iter().map(|u| obus_without_tds(u)).collect();
    let first = expected
        .iter()
        .position(|u| *u == received[0].0)
        .expect("the first temporal unit is one published");
    assert!(
        received[0].1 && has_sequence_header(&units[first]),
        "from a keyframe"
    );
    for (k, (unit, new_sequence)) in received.iter().enumerate() {
        let index = (first + k) % 90;
        assert_eq!(
            *unit, expected[index],
            "temporal unit {k} (published {index})"
        );
        assert_eq!(
            *new_sequence,
            has_sequence_header(&units[index]),
            "N of {k}"
        );
    }
    // One RTP time a unit, 30 fps on the 90 kHz clock.
    let starts: Vec<u32> = video
        .windows(2)
        .filter(|pair| pair[0].marker())
        .map(|pair| pair[1].timestamp().wrapping_sub(pair[0].timestamp()))
        .collect();
    assert!(
        starts.iter().all(|d| (2970..=3060).contains(d)),
        "{starts:?}"
    );

    let stop = publisher.session.stop_publishing().unwrap();
    publisher.send(stop).await;
    assert!(player.wait_ended(Duration::from_secs(10)).await.is_some());
    node.stop();
}

/// A WHEP player's H.265 RTP (RFC 7798: single NAL unit packets, aggregation packets,
/// fragmentation units) as access units of NAL units; checks the sequence numbers and that an
/// access unit's packets share one RTP time.
fn depacketize_h265(packets: &[rtp::RtpHeader]) -> Vec<Vec<Vec<u8>>> {
    let mut units = Vec::new();
    let (mut unit, mut fragment) = (Vec::new(), None::<Vec<u8>>);
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 {
            let previous = &packets[i - 1];
            let expected = previous.sequence_number().wrapping_add(1);
            assert_eq!(packet.sequence_number(), expected, "no loss on loopback");
            if !previous.marker() {
                assert_eq!(packet.timestamp(), previous.timestamp(), "packet {i}");
            }
        }
        let payload = packet.payload();
        match rtp::h265::nal_type(payload[0]) {
            rtp::h265::NAL_AP => {
                unit.extend(rtp::h265::ApNalUnits::new(payload).map(<[u8]>::to_vec))
            }
            rtp::h265::NAL_FU => {
                let fu = payload[2];
                if fu & 0x80 != 0 {
                    let header = [(payload[0] & 0x81) | (fu & 0x3F) << 1, payload[1]];
                    fragment = Some(header.to_vec());
                }
                let nal = fragment.as_mut().expect("an FU starts its unit");
                nal.extend_from_slice(&payload[3..]);
                if fu & 0x40 != 0 {
                    unit.push(fragment.take().unwrap());
                }
            }
            _ => unit.push(payload.to_vec()),
        }
        if packet.marker() {
            assert!(
                fragment.is_none(),
                "an access unit ends with whole NAL units"
            );
            units.push(std::mem::take(&mut unit));
        }
    }
    units
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enhanced_rtmp_publish_of_hvc1_reaches_a_whep_player_and_decodes() {
    // As an encoder sends H.265 over RTMP: the parameter sets in the hvcC, not in frames.
    let x265 = X265Stream::encode(90);
    let (parameter_sets, frames, keyframes) = (&x265.parameter_sets, &x265.units, &x265.keyframes);
    assert_eq!(
        keyframes.iter().filter(|k| **k).count(),
        3,
        "an IDR each 30 frames"
    );

    let mut config = loopback_config(1);
    config.rtmp.listen = Some("127.0.0.1:0".parse().unwrap());
    let node = Node::start(&config).expect("node starts");
    let rtmp = node.rtmp_addr().expect("RTMP listener runs");
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();

    // 30 fps for 8 s, the 90 units over again (each round starts with an IDR); the keyframes
    // as CodedFrames with a zero composition time.
    let bodies = x265.bodies(|keyframe| keyframe);
    let publishing = publish_enhanced_video(rtmp, "hcam", FOURCC_HEVC, &x265.hvcc(), bodies).await;

    // The size is read from the SPS before each keyframe.
    let (mut player, packets) = play_video(&base, "hcam", &certificate, "H265", H265_PT).await;
    let mut publisher = publishing.await.unwrap();
    let video: Vec<_> = packets
        .iter()
        .map(|p| rtp::RtpHeader::parse(p).expect("RTP"))
        .collect();
    let received = depacketize_h265(&video);
    assert!(
        received.len() >= 90,
        "{} access units in 4 s",
        received.len()
    );
    // The published access units in order from a keyframe on, each keyframe after the VPS, SPS
    // and PPS, however the encoder sent them.
    let without_sets: Vec<Vec<u8>> = received[0]
        .iter()
        .filter(|nal| !is_h265_parameter_set(nal))
        .cloned()
        .collect();
    let first = frames
        .iter()
        .position(|u| *u == without_sets)
        .expect("the first access unit is one published");
    assert!(keyframes[first], "from a keyframe");
    for (k, unit) in received.iter().enumerate() {
        let index = (first + k) % 90;
        let mut expected = Vec::new();
        if keyframes[index] {
            expected.extend(parameter_sets.iter().cloned());
        }
        // x265 repeats its parameter sets in each IDR's access unit; they go out once.
        let slices = frames[index]
            .iter()
            .filter(|nal| !is_h265_parameter_set(nal));
        expected.extend(slices.cloned());
        let types = |unit: &[Vec<u8>]| -> Vec<u8> {
            unit.iter().map(|nal| rtp::h265::nal_type(nal[0])).collect()
        };
        assert!(
            *unit == expected,
            "access unit {k} (published {index}): NAL types {:?}, expected {:?}",
            types(unit),
            types(&expected)
        );
    }

    // What the player got decodes: every access unit is a frame of 320x240 to ffmpeg's HEVC
    // decoder, with no error.
    let stream: Vec<u8> = received
        .iter()
        .flatten()
        .flat_map(|nal| [&[0, 0, 0, 1][..], nal].concat())
        .collect();
    let path = std::env::temp_dir().join(format!("rtcdn-hvc1-{}.h265", std::process::id()));
    std::fs::write(&path, &stream).unwrap();
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe runs (ffmpeg's package has it)");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&probe.stderr);
    assert!(
        probe.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        format!("hevc,320,240,{}", received.len())
    );

    let stop = publisher.session.stop_publishing().unwrap();
    publisher.send(stop).await;
    assert!(player.wait_ended(Duration::from_secs(10)).await.is_some());
    node.stop();
}
