//! The Flashphoner WCS WebSocket protocol's frames, as the official Web SDK reads and writes them
//! (see `shared/protocol/flashphoner-websocket.md`). Every frame is a text frame holding
//! `{"message": NAME, "data": [ARG, ...]}`; the SDK reads `data[0]` of every server message, so
//! every frame built here carries a `data` array.

use serde_json::{json, Map, Value};

use crate::control::status::SessionStatus;
use crate::control::EndReason;

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// The `message` name.
    pub message: String,
    /// `data[0]`, or `Null` when absent.
    pub payload: Value,
}

/// Why a client frame was refused before its message was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// JSON, but not `{"message": "...", "data": [...]}`.
    #[error("a frame must be {{\"message\": NAME, \"data\": [...]}}: {0}")]
    Envelope(&'static str),
}

/// Parses a client frame.
pub fn parse_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(FrameError::Envelope("not an object"));
    };
    let Some(Value::String(message)) = object.remove("message") else {
        return Err(FrameError::Envelope("no message name"));
    };
    let payload = match object.remove("data") {
        Some(Value::Array(mut data)) if !data.is_empty() => data.swap_remove(0),
        Some(Value::Array(_)) | None | Some(Value::Null) => Value::Null,
        // Some clients send the argument bare; accept it.
        Some(other) => other,
    };
    Ok(ClientFrame { message, payload })
}

/// A server frame.
pub fn frame(message: &str, data: Vec<Value>) -> String {
    json!({ "message": message, "data": data }).to_string()
}

/// A string field of a payload object.
pub fn str_field<'a>(payload: &'a Value, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str)
}

/// What the status events say about a stream of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// The client's id for the stream (a UUID the SDK made).
    pub media_session_id: String,
    /// The stream name.
    pub name: String,
    /// Publishing (true) or playing.
    pub published: bool,
    /// From the client's request.
    pub has_audio: bool,
    /// From the client's request.
    pub has_video: bool,
}

impl StreamDescription {
    /// Reads the description from a `publishStream`/`playStream` payload.
    pub fn from_request(
        payload: &Value,
        media_session_id: &str,
        name: &str,
        published: bool,
    ) -> Self {
        StreamDescription {
            media_session_id: media_session_id.to_owned(),
            name: name.to_owned(),
            published,
            has_audio: payload
                .get("hasAudio")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            has_video: payload
                .get("hasVideo")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }
    }

    /// The stream object of `notifyStreamStatusEvent` (§8 of the protocol notes): the fields the
    /// SDK reads, plus those WCS users' pages commonly show.
    pub fn status_object(&self, status: &str, info: Option<&str>) -> Value {
        let mut object = Map::new();
        object.insert("mediaSessionId".into(), json!(self.media_session_id));
        object.insert("name".into(), json!(self.name));
        object.insert("published".into(), json!(self.published));
        object.insert("hasVideo".into(), json!(self.has_video));
        object.insert("hasAudio".into(), json!(self.has_audio));
        object.insert("status".into(), json!(status));
        if let Some(info) = info.filter(|i| !i.is_empty()) {
            object.insert("info".into(), json!(info));
        }
        object.insert("record".into(), json!(false));
        for key in [
            "width",
            "height",
            "bitrate",
            "minBitrate",
            "maxBitrate",
            "quality",
        ] {
            object.insert(key.into(), json!(0));
        }
        object.insert("mediaProvider".into(), json!("WebRTC"));
        object.insert("audioState".into(), json!({ "muted": false }));
        object.insert("videoState".into(), json!({ "muted": false }));
        Value::Object(object)
    }

    /// A `notifyStreamEvent` frame (the SDK's `STREAM_EVENT`): `type` and its `payload`.
    pub fn stream_event_frame(&self, kind: &str, payload: Value) -> String {
        frame(
            "notifyStreamEvent",
            vec![json!({
                "mediaSessionId": self.media_session_id,
                "name": self.name,
                "type": kind,
                "payload": payload,
            })],
        )
    }

    /// A `notifyStreamStatusEvent` frame.
    pub fn status_frame(&self, status: &str, info: Option<&str>) -> String {
        frame(
            "notifyStreamStatusEvent",
            vec![self.status_object(status, info)],
        )
    }

    /// The `notifyStreamStatusEvent` a client expects for a change of its session's status, if
    /// it expects one: PLAYING once a player connected, PUBLISHING once a publisher's media
    /// flows, FAILED with the reason's `info` when the node ended the session.
    pub fn session_status_frame(&self, status: &SessionStatus) -> Option<String> {
        match status {
            SessionStatus::Connected if !self.published => Some(self.status_frame("PLAYING", None)),
            SessionStatus::MediaFlowing if self.published => {
                Some(self.status_frame("PUBLISHING", None))
            }
            SessionStatus::Ended(reason) => {
                Some(self.status_frame("FAILED", Some(&end_info(reason))))
            }
            SessionStatus::Connected | SessionStatus::MediaFlowing => None,
        }
    }
}

/// The `status` and `info` of a server's `notifyStreamStatusEvent` about the stream
/// `media_session_id` (its `data`), as a client reads it; `None` when it is about another.
pub fn stream_status<'a>(data: &'a [Value], media_session_id: &str) -> Option<(&'a str, &'a str)> {
    let object = data.first()?;
    if str_field(object, "mediaSessionId")? != media_session_id {
        return None;
    }
    let status = str_field(object, "status")?;
    Some((status, str_field(object, "info").unwrap_or("")))
}

/// A FAILED status for a request that names a stream we know nothing else about.
pub fn failed_frame(media_session_id: &str, name: &str, published: bool, info: &str) -> String {
    let description = StreamDescription {
        media_session_id: media_session_id.to_owned(),
        name: name.to_owned(),
        published,
        has_audio: true,
        has_video: true,
    };
    description.status_frame("FAILED", Some(info))
}

/// A `fail` frame: for errors no stream can carry. The SDK passes it to its WARN callback.
pub fn fail_frame(api_method: &str, info: &str) -> String {
    frame(
        "fail",
        vec![json!({ "apiMethod": api_method, "status": "FAILED", "info": info })],
    )
}

/// The `info` text WCS pages expect when a session ends for `reason` (the SDK's
/// `STREAM_STATUS_INFO` strings where one fits).
pub fn end_info(reason: &EndReason) -> String {
    match reason {
        EndReason::PublisherLeft => "Stopped by publisher stop".into(),
        // The SDK knows no transport of its own: a closed ICE-TCP connection is a lost path.
        EndReason::ConsentExpired | EndReason::TransportClosed => "Failed by ICE keep alive".into(),
        EndReason::SourceLost => "Failed to connect to origin stream".into(),
        EndReason::NeverConnected | EndReason::ConnectTimeout { ice: false } => {
            "Failed by ICE timeout".into()
        }
        EndReason::ConnectTimeout { ice: true } => "Failed by DTLS error".into(),
        EndReason::Superseded => format!("Failed by error: {reason}"),
        EndReason::DtlsFailed(why) if why.contains("fingerprint") => {
            "Failed by DTLS fingerprint error".into()
        }
        EndReason::DtlsFailed(_) | EndReason::DtlsClosed => "Failed by DTLS error".into(),
        EndReason::Deleted => "Stopped by user".into(),
        EndReason::Terminated => "Terminated by an administrator".into(),
        EndReason::RestrictedAccess => "Restricted access".into(),
        EndReason::Shutdown => "Stopped by session disconnect".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_leniently_and_refuse_garbage() {
        let f = parse_frame(r#"{"message":"pong","data":[null]}"#).unwrap();
        assert_eq!((f.message.as_str(), &f.payload), ("pong", &Value::Null));
        let f = parse_frame(r#"{"message":"publishStream","data":[{"name":"a"}]}"#).unwrap();
        assert_eq!(str_field(&f.payload, "name"), Some("a"));
        assert_eq!(
            parse_frame(r#"{"message":"x"}"#).unwrap().payload,
            Value::Null
        );
        assert!(matches!(parse_frame("not json"), Err(FrameError::Json(_))));
        assert!(matches!(parse_frame("[1]"), Err(FrameError::Envelope(_))));
        assert!(matches!(
            parse_frame(r#"{"data":[]}"#),
            Err(FrameError::Envelope(_))
        ));
        assert!(matches!(
            parse_frame(r#"{"message":5,"data":[]}"#),
            Err(FrameError::Envelope(_))
        ));
    }

    #[test]
    fn status_objects_carry_what_the_sdk_reads() {
        let d = StreamDescription::from_request(&json!({"hasAudio": false}), "m1", "cam", true);
        let frame: Value =
            serde_json::from_str(&d.status_frame("FAILED", Some("Stream not found"))).unwrap();
        assert_eq!(frame["message"], "notifyStreamStatusEvent");
        let object = &frame["data"][0];
        assert_eq!(object["mediaSessionId"], "m1");
        assert_eq!(object["status"], "FAILED");
        assert_eq!(object["info"], "Stream not found");
        assert_eq!(object["hasAudio"], false);
        assert_eq!(object["hasVideo"], true);
        assert_eq!(object["audioState"]["muted"], false);
        let object = d.status_object("PUBLISHING", None);
        assert!(object.get("info").is_none());
    }

    #[test]
    fn session_statuses_become_the_frames_the_sdk_waits_for() {
        let player = StreamDescription::from_request(&Value::Null, "p1", "cam", false);
        let publisher = StreamDescription::from_request(&Value::Null, "m1", "cam", true);
        let status_of = |frame: Option<String>| {
            let frame: Value = serde_json::from_str(&frame?).unwrap();
            let object = &frame["data"][0];
            Some((
                object["status"].as_str()?.to_owned(),
                object["info"].as_str().map(str::to_owned),
            ))
        };
        let playing = player.session_status_frame(&SessionStatus::Connected);
        assert_eq!(status_of(playing), Some(("PLAYING".into(), None)));
        assert_eq!(
            player.session_status_frame(&SessionStatus::MediaFlowing),
            None
        );
        assert_eq!(
            publisher.session_status_frame(&SessionStatus::Connected),
            None
        );
        let publishing = publisher.session_status_frame(&SessionStatus::MediaFlowing);
        assert_eq!(status_of(publishing), Some(("PUBLISHING".into(), None)));
        let ended = player.session_status_frame(&SessionStatus::Ended(EndReason::PublisherLeft));
        assert_eq!(
            status_of(ended),
            Some(("FAILED".into(), Some("Stopped by publisher stop".into())))
        );
    }

    #[test]
    fn a_client_reads_the_status_of_its_own_stream() {
        let edge = StreamDescription::from_request(&Value::Null, "m1", "cam", true);
        let frame: Value =
            serde_json::from_str(&edge.status_frame("FAILED", Some("Restricted access"))).unwrap();
        let data = frame["data"].as_array().unwrap();
        assert_eq!(
            stream_status(data, "m1"),
            Some(("FAILED", "Restricted access"))
        );
        assert_eq!(stream_status(data, "m2"), None);
        let published: Value =
            serde_json::from_str(&edge.status_frame("PUBLISHING", None)).unwrap();
        assert_eq!(
            stream_status(published["data"].as_array().unwrap(), "m1"),
            Some(("PUBLISHING", ""))
        );
        assert_eq!(stream_status(&[], "m1"), None);
    }

    #[test]
    fn end_reasons_map_to_sdk_info_strings() {
        assert_eq!(
            end_info(&EndReason::PublisherLeft),
            "Stopped by publisher stop"
        );
        assert_eq!(
            end_info(&EndReason::DtlsFailed("fingerprint mismatch".into())),
            "Failed by DTLS fingerprint error"
        );
        assert_eq!(
            end_info(&EndReason::ConsentExpired),
            "Failed by ICE keep alive"
        );
    }
}
