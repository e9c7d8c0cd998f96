//! An RTMP stream as the node knows it: the publish key read for a name and a token, the
//! policy asked as for a WHIP publish, the stream registered with an H.264 track (and an Opus
//! track for its transcoded AAC or its Enhanced RTMP Opus) and placed on a media core as an
//! ingest (see
//! `crate::media::ingest`).

use crate::auth::{Action, AuthError, Authorized, Credentials};
use crate::control::registry::{ClientInfo, RegistryError, StreamTrack};
use crate::control::{CoreId, IngestSpec, SessionId, StreamId};
use crate::media::{ingest_channel, IngestSender};
use crate::sdp::{Codec, MediaKind};
use crate::signalling::media::{authorize, http_stream_fields, new_session_id, HookStanding};
use crate::signalling::Signalling;

use super::aac_opus::OPUS_PT;
use super::publisher::H264_PT;

/// Packets an ingest's ring holds: over a second of 3 Mbit/s video, ~1.2 MB.
pub const INGEST_RING_PACKETS: usize = 1024;

/// A stream name and the token that came with it: `NAME?token=T` in the stream key (as OBS and
/// WCS users pass keys), or `?token=T` on the application (the tcUrl).
pub fn parse_key(app: &str, stream_key: &str) -> (String, Option<String>) {
    let (name, key_query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
    let app_query = app.split_once('?').map_or("", |(_, q)| q);
    let token = [key_query, app_query]
        .into_iter()
        .find_map(|query| crate::signalling::query_param(query, "token"));
    (name.to_owned(), token)
}

/// Whether `name` may be published with `token`: the node's `[auth]` policy for publishing,
/// and its REST hook where the policy says so, exactly as for a WHIP publish.
pub async fn authorize_publish(
    state: &Signalling,
    name: &str,
    token: Option<String>,
) -> Result<Authorized, AuthError> {
    let credentials = Credentials::bearer(token);
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

/// Registers `name` as a live stream with an H.264 track of `profile_level_id` (and an Opus
/// track `with_audio`) and starts its ingest on the least loaded core.
pub fn register(
    state: &Signalling,
    name: &str,
    profile_level_id: &str,
    with_audio: bool,
    client: ClientInfo,
) -> Result<Registered, RegistryError> {
    let video = StreamTrack {
        kind: MediaKind::Video,
        codec: Codec {
            pt: H264_PT,
            name: "H264".into(),
            clock_rate: 90_000,
            channels: None,
            fmtp: Some(format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
            )),
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
        let core = plane.registry().least_loaded_core();
        let spec = IngestSpec {
            id,
            stream: StreamId(0),
            stream_name: name.to_owned(),
            feed,
        };
        plane.handle_ingest(now, core, spec, tracks, client)?;
        Ok(core)
    })?;
    Ok(Registered { id, core, sender })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_key_or_the_app() {
        assert_eq!(parse_key("live", "cam"), ("cam".into(), None));
        assert_eq!(
            parse_key("live", "cam?token=abc"),
            ("cam".into(), Some("abc".into()))
        );
        assert_eq!(
            parse_key("live?token=xyz", "cam"),
            ("cam".into(), Some("xyz".into()))
        );
        assert_eq!(
            parse_key("live?token=xyz", "cam?a=1&token=abc"),
            ("cam".into(), Some("abc".into()))
        );
    }
}
