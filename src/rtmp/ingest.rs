//! An RTMP stream as the node knows it: the publish key read for a name and a token (or an
//! origin's relay token and access list: `cdn.stream_distribution = "rtmp"`), the policy asked
//! as for a WHIP publish, the stream registered with an H.264, VP9 or AV1 track (and an Opus
//! track for its transcoded AAC or its Enhanced RTMP Opus) and placed on a media core as an
//! ingest (see `crate::media::ingest`).

use crate::auth::{Action, AuthError, Authorized, Credentials};
use crate::control::registry::{ClientInfo, RegistryError, StreamTrack};
use crate::control::{CoreId, IngestSpec, SessionId, StreamId};
use crate::media::{ingest_channel, IngestSender};
use crate::sdp::{Codec, MediaKind};
use crate::signalling::media::{authorize, http_stream_fields, new_session_id, HookStanding};
use crate::signalling::Signalling;

use super::aac_opus::OPUS_PT;
use super::publisher::RtmpVideoCodec;

/// Packets an ingest's ring holds: over a second of 3 Mbit/s video, ~1.2 MB.
pub const INGEST_RING_PACKETS: usize = 1024;

/// What a publish's stream key and application say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishKey {
    pub name: String,
    /// A client's token: `NAME?token=T` in the stream key (as OBS and WCS users pass keys), or
    /// `?token=T` on the application (the tcUrl).
    pub token: Option<String>,
    /// An origin's relay token (`?relayToken=`), proving `cdn.secret`.
    pub relay_token: Option<String>,
    /// The access list an origin's relay brings (`?rtcdnAcl=`, a JSON array of keys).
    pub acl: Option<Vec<String>>,
}

/// Reads a publish's stream key and application (see [`PublishKey`]).
pub fn parse_key(app: &str, stream_key: &str) -> PublishKey {
    let (name, key_query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
    let app_query = app.split_once('?').map_or("", |(_, q)| q);
    let param = |key| {
        [key_query, app_query]
            .into_iter()
            .find_map(|query| crate::signalling::query_param(query, key))
    };
    PublishKey {
        name: name.to_owned(),
        token: param("token"),
        relay_token: param("relayToken"),
        acl: param("rtcdnAcl").and_then(|json| serde_json::from_str(&json).ok()),
    }
}

/// Whether `key.name` may be published by the holder of `key`'s tokens: a relay of this CDN,
/// or the node's `[auth]` policy for publishing and its REST hook where the policy says so,
/// exactly as for a WHIP publish.
pub async fn authorize_publish(
    state: &Signalling,
    key: &PublishKey,
) -> Result<Authorized, AuthError> {
    let name = key.name.as_str();
    let mut credentials = Credentials::bearer(key.token.clone());
    if let Some(token) = &key.relay_token {
        crate::signalling::check_relay_token(state, token, &mut credentials);
    }
    let fields = http_stream_fields(name, true);
    authorize(
        state,
        Action::Publish,
        name,
        &credentials,
        HookStanding::Request,
        &fields,
    )
    .await
}

/// A registered RTMP stream: its publisher's id and core, and the ring to that core.
pub struct Registered {
    pub id: SessionId,
    pub core: CoreId,
    pub sender: IngestSender,
}

/// Registers `name` as a live stream with a video track of `codec` (and an Opus track
/// `with_audio`) and starts its ingest on the least loaded core (a relay's copy taking
/// over an orphaned stream: on that stream's core).
pub fn register(
    state: &Signalling,
    name: &str,
    codec: &RtmpVideoCodec,
    with_audio: bool,
    client: ClientInfo,
) -> Result<Registered, RegistryError> {
    let (pt, codec_name, fmtp) = codec.sdp();
    let video = StreamTrack {
        kind: MediaKind::Video,
        codec: Codec {
            pt,
            name: codec_name.into(),
            clock_rate: 90_000,
            channels: None,
            fmtp: Some(fmtp),
            rtcp_fb: ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"]
                .map(String::from)
                .to_vec(),
            rtx_pt: None,
        },
        extmaps: Vec::new(),
        rids: Vec::new(),
    };
    let audio = StreamTrack {
        kind: MediaKind::Audio,
        codec: Codec {
            pt: OPUS_PT,
            name: "opus".into(),
            clock_rate: 48_000,
            channels: Some(2),
            fmtp: Some("minptime=10;useinbandfec=1;stereo=1".into()),
            rtcp_fb: vec!["transport-cc".into()],
            rtx_pt: None,
        },
        extmaps: Vec::new(),
        rids: Vec::new(),
    };
    let tracks = if with_audio {
        vec![audio, video]
    } else {
        vec![video]
    };
    let id = new_session_id();
    let (sender, feed) = ingest_channel(INGEST_RING_PACKETS);
    let core = state.control(|plane, now| -> Result<_, RegistryError> {
        let core = plane.registry().core_for_publisher(name);
        let spec = IngestSpec {
            id,
            stream: StreamId(0),
            stream_name: name.to_owned(),
            feed,
            video_codec: codec.video_codec(),
        };
        plane.handle_ingest(now, core, spec, tracks, client)?;
        Ok(core)
    })?;
    Ok(Registered { id, core, sender })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_and_token(key: PublishKey) -> (String, Option<String>) {
        (key.name, key.token)
    }

    #[test]
    fn the_token_comes_from_the_key_or_the_app() {
        assert_eq!(
            name_and_token(parse_key("live", "cam")),
            ("cam".into(), None)
        );
        assert_eq!(
            name_and_token(parse_key("live", "cam?token=abc")),
            ("cam".into(), Some("abc".into()))
        );
        assert_eq!(
            name_and_token(parse_key("live?token=xyz", "cam")),
            ("cam".into(), Some("xyz".into()))
        );
        assert_eq!(
            name_and_token(parse_key("live?token=xyz", "cam?a=1&token=abc")),
            ("cam".into(), Some("abc".into()))
        );
    }

    #[test]
    fn a_relays_token_and_access_list_come_as_an_origin_writes_them() {
        let written = crate::cdn::relay::rtmp_stream_key("cam", Some("t.k"), &["a,b".into()]);
        let key = parse_key("live", &written);
        assert_eq!(
            key,
            PublishKey {
                name: "cam".into(),
                token: None,
                relay_token: Some("t.k".into()),
                acl: Some(vec!["a,b".into()]),
            }
        );
        // A list that is not a JSON array of strings is no list.
        assert_eq!(parse_key("live", "cam?rtcdnAcl=%5B1%5D").acl, None);
    }
}
