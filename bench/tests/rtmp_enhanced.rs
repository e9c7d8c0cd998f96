//! Enhanced RTMP publish -> WebRTC player (issue 15, item 1): a small RTMP client (rml_rtmp's
//! client session over a socket; Debian's ffmpeg 5.1 writes no Enhanced RTMP) publishes FourCC
//! `avc1` video and `Opus` audio, announced by FourCC in `onMetaData`, and a WHEP player gets
//! the H.264 from its keyframe and every Opus packet byte for byte, one RTP packet each, in
//! order, 960 ticks (20 ms) apart. An `hvc1` publish is refused with its name in the log line's
//! reason. Everything stays on 127.0.0.1.

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
    fourcc_codec_id, AUDIO_PACKET_CODED_FRAMES, AUDIO_PACKET_SEQUENCE_START, FOURCC_AVC,
    FOURCC_HEVC, FOURCC_OPUS, OPUS_HEAD_MAGIC, SOUND_FORMAT_EX_HEADER, VIDEO_EX_HEADER,
    VIDEO_FRAME_INTER, VIDEO_FRAME_KEY, VIDEO_PACKET_CODED_FRAMES, VIDEO_PACKET_CODED_FRAMES_X,
    VIDEO_PACKET_SEQUENCE_START,
};
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT, H264_PT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{collect_rtp, loopback_config};

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

    // HEVC over Enhanced RTMP is refused: the node closes the publish.
    let mut hevc = Publisher::start(rtmp, "hcam").await;
    let start = ex_video(
        VIDEO_FRAME_KEY,
        VIDEO_PACKET_SEQUENCE_START,
        FOURCC_HEVC,
        &[1, 2, 3],
    );
    hevc.video(0, start).await;
    assert!(
        hevc.closed_within(Duration::from_secs(5)).await,
        "an hvc1 publish is closed"
    );
    node.stop();
}
