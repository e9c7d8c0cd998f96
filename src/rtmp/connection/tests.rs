//! An `rml_rtmp` client session against [`RtmpConnection`], bytes passed by hand.

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

use super::*;

/// A client and a server connection, past the handshake.
struct Pair {
    client: ClientSession,
    server: RtmpConnection,
    client_events: Vec<ClientSessionEvent>,
}

impl Pair {
    fn new(apps: &[&str]) -> Pair {
        let mut server = RtmpConnection::new(
            apps.iter().map(|a| a.to_string()).collect(),
            ChunkLimits::default(),
        );
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake.generate_outbound_p0_and_p1().unwrap();
        server.handle_input(&c0c1).unwrap();
        let s0s1s2 = server.output().to_vec();
        server.clear_output();
        let HandshakeProcessResult::Completed { response_bytes, .. } =
            handshake.process_bytes(&s0s1s2).unwrap()
        else {
            panic!("client handshake not complete")
        };
        server.handle_input(&response_bytes).unwrap();
        assert!(server.handshake_done());
        let (client, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut pair = Pair {
            client,
            server,
            client_events: Vec::new(),
        };
        pair.deliver(results).unwrap();
        pair
    }

    /// Sends the client's packets to the server and the server's answers back.
    fn deliver(&mut self, results: Vec<ClientSessionResult>) -> Result<(), RtmpError> {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.server.handle_input(&packet.bytes)?;
                    let answer = self.server.output().to_vec();
                    self.server.clear_output();
                    let back = self.client.handle_input(&answer).unwrap();
                    self.deliver(back)?;
                }
                ClientSessionResult::RaisedEvent(event) => self.client_events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn events(&mut self) -> Vec<RtmpEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn connect(&mut self, app: &str) -> Result<(), RtmpError> {
        let request = self.client.request_connection(app.into()).unwrap();
        self.deliver(vec![request])
    }

    fn publish(&mut self, key: &str) {
        let request = self
            .client
            .request_publishing(key.into(), PublishRequestType::Live)
            .unwrap();
        self.deliver(vec![request]).unwrap();
    }
}

#[test]
fn connect_publish_and_media_reach_the_node() {
    let mut pair = Pair::new(&["live"]);
    pair.connect("live").unwrap();
    assert!(pair
        .client_events
        .contains(&ClientSessionEvent::ConnectionRequestAccepted));
    pair.publish("cam?token=abc");
    assert_eq!(
        pair.events(),
        [RtmpEvent::PublishRequested {
            app: "live".into(),
            stream_key: "cam?token=abc".into()
        }]
    );
    pair.server.accept_publish().unwrap();
    let answer = pair.server.output().to_vec();
    pair.server.clear_output();
    let results = pair.client.handle_input(&answer).unwrap();
    pair.deliver(results).unwrap();
    assert!(pair
        .client_events
        .contains(&ClientSessionEvent::PublishRequestAccepted));
    let frame = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
    let video = pair
        .client
        .publish_video_data(frame.clone(), RtmpTimestamp::new(40), false)
        .unwrap();
    pair.deliver(vec![video]).unwrap();
    assert_eq!(
        pair.events(),
        [RtmpEvent::Video {
            timestamp_ms: 40,
            data: frame
        }]
    );
    let stop = pair.client.stop_publishing().unwrap();
    pair.deliver(stop).unwrap();
    assert_eq!(pair.events(), [RtmpEvent::PublishFinished]);
}

#[test]
fn an_unknown_app_is_refused_with_an_answer() {
    let mut pair = Pair::new(&["live"]);
    let err = pair.connect("other").unwrap_err();
    assert_eq!(err, RtmpError::UnknownApp("other".into()));
}

#[test]
fn a_refused_publish_tells_the_client_why() {
    let mut pair = Pair::new(&["live"]);
    pair.connect("live").unwrap();
    pair.publish("cam");
    pair.events();
    pair.server
        .refuse_publish("stream name is already in use: cam")
        .unwrap();
    let answer = pair.server.output().to_vec();
    assert!(
        answer
            .windows(b"already in use".len())
            .any(|w| w == b"already in use"),
        "the refusal carries the reason"
    );
}

#[test]
fn garbage_and_hostile_chunks_end_the_connection_without_panic() {
    // Not an RTMP handshake: version byte 0x47 ('G' of "GET /").
    let mut server = RtmpConnection::new(vec!["live".into()], ChunkLimits::default());
    let garbage: Vec<u8> = b"GET / HTTP/1.1\r\n"
        .iter()
        .cycle()
        .take(4000)
        .copied()
        .collect();
    let _ = server.handle_input(&garbage);
    // A chunk size of 2^31 after a valid handshake.
    let mut pair = Pair::new(&["live"]);
    let mut chunk = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    chunk.extend_from_slice(&(1u32 << 31).to_be_bytes());
    let err = pair.server.handle_input(&chunk).unwrap_err();
    assert_eq!(err, RtmpError::Chunk(ChunkError::BadChunkSize(1 << 31)));
    // An AMF0 object nested 100,000 deep is refused by length before it is parsed.
    let mut pair = Pair::new(&["live"]);
    let mut amf = vec![0x02, 0, 7];
    amf.extend_from_slice(b"connect");
    for _ in 0..100_000 {
        amf.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    let mut message = vec![0x03, 0, 0, 0];
    message.extend_from_slice(&(amf.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(&[20, 0, 0, 0, 0]);
    message.extend_from_slice(&amf[..128]);
    let err = pair.server.handle_input(&message).unwrap_err();
    assert!(matches!(
        err,
        RtmpError::Chunk(ChunkError::MessageTooLong { type_id: 20, .. })
    ));
}

#[test]
fn a_play_is_asked_of_the_node_and_once_accepted_gets_metadata_video_and_audio() {
    let mut pair = Pair::new(&["live"]);
    pair.connect("live").unwrap();
    let request = pair.client.request_playback("cam?token=t".into()).unwrap();
    pair.deliver(vec![request]).unwrap();
    assert_eq!(
        pair.events(),
        [RtmpEvent::PlayRequested {
            app: "live".into(),
            stream_key: "cam?token=t".into()
        }]
    );
    pair.server.accept_play().unwrap();
    assert!(pair.server.is_playing());
    pair.server
        .send_metadata(Some((640, 360)), Some(2))
        .unwrap();
    let frame = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
    pair.server.send_video(40, frame.clone()).unwrap();
    let aac = Bytes::from_static(&[0xAF, 1, 0x21, 0x10]);
    pair.server.send_audio(43, aac.clone()).unwrap();
    pair.server.finish_play().unwrap();
    let answer = pair.server.output().to_vec();
    pair.server.clear_output();
    let results = pair.client.handle_input(&answer).unwrap();
    pair.deliver(results).unwrap();
    let events = &pair.client_events;
    assert!(events.contains(&ClientSessionEvent::PlaybackRequestAccepted));
    assert!(events.iter().any(|e| matches!(e,
        ClientSessionEvent::StreamMetadataReceived { metadata }
            if metadata.video_width == Some(640) && metadata.video_codec_id == Some(7)
                && metadata.audio_codec_id == Some(10) && metadata.audio_channels == Some(2))));
    assert!(events.iter().any(|e| matches!(e,
        ClientSessionEvent::AudioDataReceived { data, timestamp, .. }
            if *data == aac && timestamp.value == 43)));
    assert!(events.iter().any(|e| matches!(e,
        ClientSessionEvent::VideoDataReceived { data, timestamp, .. }
            if *data == frame && timestamp.value == 40)));
    assert!(!pair.server.is_playing());
}

#[test]
fn a_refused_play_tells_the_client_why_and_a_second_request_is_refused() {
    let mut pair = Pair::new(&["live"]);
    pair.connect("live").unwrap();
    let request = pair.client.request_playback("vp8cam".into()).unwrap();
    pair.deliver(vec![request]).unwrap();
    pair.events();
    pair.server
        .refuse_play(
            "NetStream.Play.Failed",
            "RTMP playback needs H.264 video; vp8cam is VP8",
        )
        .unwrap();
    let answer = pair.server.output().to_vec();
    assert!(
        answer.windows(b"is VP8".len()).any(|w| w == b"is VP8"),
        "the refusal carries the reason"
    );
    assert!(!pair.server.is_playing());
}

#[test]
fn an_enhanced_rtmp_connect_with_its_fourcc_list_and_capabilities_is_accepted() {
    use std::collections::HashMap;

    use rml_amf0::Amf0Value;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::RtmpMessage;

    let mut pair = Pair::new(&["live"]);
    // The default chunk size: the client session sets its own only when it connects.
    let mut serializer = ChunkSerializer::new();
    let fourccs = ["avc1", "hvc1", "av01", "Opus", "mp4a"]
        .map(|f| Amf0Value::Utf8String(f.into()))
        .to_vec();
    let mut opus_info = HashMap::new();
    opus_info.insert("Opus".to_string(), Amf0Value::Number(0x06 as f64));
    let mut properties = HashMap::new();
    properties.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
    properties.insert("fourCcList".to_string(), Amf0Value::StrictArray(fourccs));
    properties.insert("capsEx".to_string(), Amf0Value::Number(1.0));
    properties.insert(
        "audioFourCcInfoMap".to_string(),
        Amf0Value::Object(opus_info),
    );
    let connect = RtmpMessage::Amf0Command {
        command_name: "connect".into(),
        transaction_id: 1.0,
        command_object: Amf0Value::Object(properties),
        additional_arguments: Vec::new(),
    };
    let payload = connect
        .into_message_payload(RtmpTimestamp::new(0), 0)
        .unwrap();
    let packet = serializer.serialize(&payload, false, false).unwrap();
    pair.server.handle_input(&packet.bytes).unwrap();
    let answer = pair.server.output();
    let success = b"NetConnection.Connect.Success";
    assert!(
        answer.windows(success.len()).any(|w| w == success),
        "the connect is answered with success"
    );
}
