//! [`RtmpPush`]: the client side of an RTMP publish, sans-IO — how an origin pushes a stream
//! to an edge when `cdn.stream_distribution = "rtmp"`. Bytes from the server go in
//! ([`RtmpPush::handle_input`]); bytes for it ([`RtmpPush::output`]) and whether the publish
//! is on ([`RtmpPush::is_publishing`]) come out; FLV tag bodies go in once it is.
//!
//! The handshake and the chunk stream are `rml_rtmp`'s `Handshake` and `ClientSession`, as the
//! server side ([`super::connection`]) uses its `ServerSession`, with the same [`ChunkGuard`]
//! in front: a server is as untrusted as a client. The sequence is the one every encoder
//! follows: handshake, `connect` to the application, `createStream`, `publish` (live).

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use super::chunk_guard::{ChunkGuard, ChunkLimits};
use super::connection::RtmpError;

enum Phase {
    Handshake(Box<Handshake>),
    Session {
        session: Box<ClientSession>,
        guard: ChunkGuard,
    },
}

/// One push (see the module docs).
pub struct RtmpPush {
    phase: Phase,
    tc_url: String,
    app: String,
    stream_key: String,
    out: Vec<u8>,
    publishing: bool,
}

impl RtmpPush {
    /// A push of `stream_key` (the name, with any `?query`) to the application `app` of the
    /// server at `tc_url` (`rtmp://host:port/app`). The handshake's first bytes are in
    /// [`RtmpPush::output`] at once.
    pub fn new(tc_url: &str, app: &str, stream_key: &str) -> Result<RtmpPush, RtmpError> {
        let mut handshake = Box::new(Handshake::new(PeerType::Client));
        let c0c1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| RtmpError::Handshake(e.to_string()))?;
        Ok(RtmpPush {
            phase: Phase::Handshake(handshake),
            tc_url: tc_url.to_owned(),
            app: app.to_owned(),
            stream_key: stream_key.to_owned(),
            out: c0c1,
            publishing: false,
        })
    }

    /// Bytes to send to the server (then [`RtmpPush::clear_output`]).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The output was sent.
    pub fn clear_output(&mut self) {
        self.out.clear();
    }

    /// Whether the server accepted the publish: media may go.
    pub fn is_publishing(&self) -> bool {
        self.publishing
    }

    /// Bytes from the server. After an error the push is over.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        let rest = match &mut self.phase {
            Phase::Handshake(handshake) => match handshake
                .process_bytes(bytes)
                .map_err(|e| RtmpError::Handshake(e.to_string()))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.out.extend_from_slice(&response_bytes);
                    return Ok(());
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.out.extend_from_slice(&response_bytes);
                    let mut config = ClientSessionConfig::new();
                    config.flash_version = concat!("rtcdn/", env!("CARGO_PKG_VERSION")).into();
                    config.tc_url = Some(self.tc_url.clone());
                    let (mut session, results) =
                        ClientSession::new(config).map_err(RtmpError::protocol)?;
                    let connect = session
                        .request_connection(self.app.clone())
                        .map_err(RtmpError::protocol)?;
                    self.phase = Phase::Session {
                        session: Box::new(session),
                        guard: ChunkGuard::new(ChunkLimits::default()),
                    };
                    self.handle_results(results)?;
                    self.handle_results(vec![connect])?;
                    remaining_bytes
                }
            },
            Phase::Session { .. } => return self.handle_chunks(bytes),
        };
        self.handle_chunks(&rest)
    }

    fn handle_chunks(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Phase::Session { session, guard } = &mut self.phase else {
            return Ok(());
        };
        guard.check(bytes)?;
        let results = session.handle_input(bytes).map_err(RtmpError::protocol)?;
        self.handle_results(results)
    }

    fn session(&mut self) -> Result<&mut ClientSession, RtmpError> {
        match &mut self.phase {
            Phase::Session { session, .. } => Ok(session),
            Phase::Handshake(_) => Err(RtmpError::Protocol("no session yet".into())),
        }
    }

    fn handle_results(&mut self, results: Vec<ClientSessionResult>) -> Result<(), RtmpError> {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes)
                }
                ClientSessionResult::RaisedEvent(event) => self.handle_event(event)?,
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn handle_event(&mut self, event: ClientSessionEvent) -> Result<(), RtmpError> {
        match event {
            ClientSessionEvent::ConnectionRequestAccepted => {
                let key = self.stream_key.clone();
                let publish = self
                    .session()?
                    .request_publishing(key, PublishRequestType::Live)
                    .map_err(RtmpError::protocol)?;
                self.handle_results(vec![publish])
            }
            ClientSessionEvent::ConnectionRequestRejected { description } => {
                Err(RtmpError::Refused(description))
            }
            ClientSessionEvent::PublishRequestAccepted => {
                self.publishing = true;
                Ok(())
            }
            // `NetStream.Publish.BadName`, `_error`'s codes: the server said no.
            ClientSessionEvent::UnhandleableOnStatusCode { code }
                if code.contains("Failed")
                    || code.contains("BadName")
                    || code.contains("Rejected") =>
            {
                self.publishing = false;
                Err(RtmpError::Refused(code))
            }
            // A refused publish is an `_error` for transaction 0, which the crate does not
            // match to its request.
            ClientSessionEvent::UnknownTransactionResultReceived {
                additional_values, ..
            } => match error_status(&additional_values) {
                Some(why) => {
                    self.publishing = false;
                    Err(RtmpError::Refused(why))
                }
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// `onMetaData` for the server: video of `video_codec_id` (7: H.264; Enhanced RTMP a
    /// FourCC as a number) and `size`, and Opus audio when `with_audio` (its FourCC likewise).
    pub fn send_metadata(
        &mut self,
        video_codec_id: u32,
        size: Option<(u16, u16)>,
        with_audio: bool,
    ) -> Result<(), RtmpError> {
        let mut metadata = StreamMetadata::new();
        metadata.video_codec_id = Some(video_codec_id);
        metadata.video_width = size.map(|(w, _)| u32::from(w));
        metadata.video_height = size.map(|(_, h)| u32::from(h));
        if with_audio {
            metadata.audio_codec_id = Some(u32::from_be_bytes(*b"Opus"));
            metadata.audio_sample_rate = Some(48_000);
            metadata.audio_channels = Some(2);
        }
        metadata.encoder = Some("rtcdn".into());
        let result = self
            .publishing_session()?
            .publish_metadata(&metadata)
            .map_err(RtmpError::protocol)?;
        self.handle_results(vec![result])
    }

    /// One video tag body at `timestamp_ms`.
    pub fn send_video(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), RtmpError> {
        let result = self
            .publishing_session()?
            .publish_video_data(data, RtmpTimestamp::new(timestamp_ms), false)
            .map_err(RtmpError::protocol)?;
        self.handle_results(vec![result])
    }

    /// One audio tag body at `timestamp_ms`.
    pub fn send_audio(&mut self, timestamp_ms: u32, data: Bytes) -> Result<(), RtmpError> {
        let result = self
            .publishing_session()?
            .publish_audio_data(data, RtmpTimestamp::new(timestamp_ms), false)
            .map_err(RtmpError::protocol)?;
        self.handle_results(vec![result])
    }

    /// The stream ended: `FCUnpublish` and `deleteStream` for the server, whose players then
    /// hear that the publisher stopped.
    pub fn finish(&mut self) -> Result<(), RtmpError> {
        if !std::mem::take(&mut self.publishing) {
            return Ok(());
        }
        let results = self
            .session()?
            .stop_publishing()
            .map_err(RtmpError::protocol)?;
        self.handle_results(results)
    }

    fn publishing_session(&mut self) -> Result<&mut ClientSession, RtmpError> {
        if !self.publishing {
            return Err(RtmpError::Protocol("not publishing".into()));
        }
        self.session()
    }
}

/// "CODE: description" of an error status object (`level` "error" or "_error").
fn error_status(values: &[Amf0Value]) -> Option<String> {
    let Some(Amf0Value::Object(status)) = values.first() else {
        return None;
    };
    let text = |key: &str| match status.get(key) {
        Some(Amf0Value::Utf8String(value)) => value.as_str(),
        _ => "",
    };
    if !text("level")
        .trim_start_matches('_')
        .eq_ignore_ascii_case("error")
    {
        return None;
    }
    Some(format!("{}: {}", text("code"), text("description")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::{RtmpConnection, RtmpEvent};

    /// Passes bytes both ways until neither side has any; returns the server's events.
    fn pump(push: &mut RtmpPush, server: &mut RtmpConnection) -> Result<Vec<RtmpEvent>, RtmpError> {
        let mut events = Vec::new();
        for _ in 0..32 {
            let to_server = push.output().to_vec();
            push.clear_output();
            if !to_server.is_empty() {
                server
                    .handle_input(&to_server)
                    .expect("the server takes it");
            }
            while let Some(event) = server.poll_event() {
                events.push(event);
            }
            let to_push = server.output().to_vec();
            server.clear_output();
            if to_server.is_empty() && to_push.is_empty() {
                return Ok(events);
            }
            if !to_push.is_empty() {
                push.handle_input(&to_push)?;
            }
        }
        panic!("the exchange did not settle");
    }

    fn live_server() -> RtmpConnection {
        RtmpConnection::new(vec!["live".into()], ChunkLimits::default())
    }

    #[test]
    fn a_push_publishes_its_key_and_sends_what_the_server_reads_back() {
        let mut server = live_server();
        let mut push = RtmpPush::new("rtmp://edge/live", "live", "cam?relayToken=t").unwrap();
        let events = pump(&mut push, &mut server).unwrap();
        assert_eq!(
            events,
            vec![RtmpEvent::PublishRequested {
                app: "live".into(),
                stream_key: "cam?relayToken=t".into()
            }]
        );
        assert!(!push.is_publishing());
        assert!(push.send_video(0, Bytes::from_static(b"x")).is_err());
        server.accept_publish().unwrap();
        pump(&mut push, &mut server).unwrap();
        assert!(push.is_publishing());
        push.send_metadata(7, Some((640, 360)), true).unwrap();
        push.send_video(40, Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]))
            .unwrap();
        push.send_audio(45, Bytes::from_static(&[0x91, b'O', b'p', b'u', b's', 7]))
            .unwrap();
        let events = pump(&mut push, &mut server).unwrap();
        assert_eq!(
            events,
            vec![
                RtmpEvent::Metadata {
                    audio_codec_id: Some(u32::from_be_bytes(*b"Opus")),
                    width: Some(640),
                    height: Some(360),
                },
                RtmpEvent::Video {
                    timestamp_ms: 40,
                    data: Bytes::from_static(&[0x17, 1, 0, 0, 0, 9])
                },
                RtmpEvent::Audio {
                    timestamp_ms: 45,
                    data: Bytes::from_static(&[0x91, b'O', b'p', b'u', b's', 7])
                },
            ]
        );
        push.finish().unwrap();
        let events = pump(&mut push, &mut server).unwrap();
        assert!(events.contains(&RtmpEvent::PublishFinished), "{events:?}");
        assert!(!push.is_publishing());
    }

    #[test]
    fn a_refused_publish_or_application_ends_the_push_with_the_reason() {
        let mut server = live_server();
        let mut push = RtmpPush::new("rtmp://edge/live", "live", "cam").unwrap();
        pump(&mut push, &mut server).unwrap();
        server.refuse_publish("stream cam is live already").unwrap();
        let err = pump(&mut push, &mut server).unwrap_err();
        assert_eq!(
            err,
            RtmpError::Refused("NetStream.Publish.BadName: stream cam is live already".into())
        );

        let mut server = live_server();
        let mut push = RtmpPush::new("rtmp://edge/vod", "vod", "cam").unwrap();
        let to_server = push.output().to_vec();
        push.clear_output();
        server.handle_input(&to_server).unwrap();
        let mut result = Ok(());
        for _ in 0..8 {
            let to_push = server.output().to_vec();
            server.clear_output();
            result = push.handle_input(&to_push);
            if result.is_err() {
                break;
            }
            let to_server = push.output().to_vec();
            push.clear_output();
            // The server ends the connection after its refusal.
            if server.handle_input(&to_server).is_err() {
                let to_push = server.output().to_vec();
                result = push.handle_input(&to_push);
                break;
            }
        }
        assert!(
            matches!(&result, Err(RtmpError::Refused(why)) if why.contains("not served")),
            "{result:?}"
        );
    }

    #[test]
    fn garbage_from_the_server_is_an_error_not_a_panic() {
        let mut push = RtmpPush::new("rtmp://edge/live", "live", "cam").unwrap();
        assert!(push.handle_input(&[0xFF; 3073]).is_err());
    }
}
