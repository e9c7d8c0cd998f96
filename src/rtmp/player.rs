//! An RTMP player as the node knows it: the play key read for a name, a token and an ACL key,
//! the policy asked as for a WHEP play, the stream's video checked (RTMP carries H.264), and
//! the player registered as a player session of the stream with an egress tap at its
//! publisher's core (see `crate::media::egress`). Its audio, when the stream has Opus, comes
//! from the stream's shared transcoder ([`super::player_audio`]), not from its own tap.

use tokio::sync::mpsc::UnboundedReceiver;

use crate::auth::{Action, AuthError, Credentials, RefusedKind};
use crate::control::plane::PlayError;
use crate::control::registry::{ClientInfo, StreamTrack};
use crate::control::status::SessionStatus;
use crate::control::{CoreId, EgressSpec, SessionId, StreamId};
use crate::media::{egress_channel, EgressReceiver};
use crate::sdp::MediaKind;
use crate::signalling::media::{authorize, http_stream_fields, new_session_id, HookStanding};
use crate::signalling::{Signalling, Watcher};

/// Packets an egress's ring holds: about two seconds of 3 Mbit/s video, ~0.8 MB.
pub const EGRESS_RING_PACKETS: usize = 512;

/// Why a play was refused: the `onStatus` code and the text the player shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayRefusal {
    pub code: &'static str,
    pub why: String,
}

impl PlayRefusal {
    fn failed(why: impl Into<String>) -> PlayRefusal {
        PlayRefusal {
            code: "NetStream.Play.Failed",
            why: why.into(),
        }
    }

    fn not_found(why: impl Into<String>) -> PlayRefusal {
        PlayRefusal {
            code: "NetStream.Play.StreamNotFound",
            why: why.into(),
        }
    }
}

/// A stream name and the credentials that came with it: `NAME?token=T&aclAuth=K` in the
/// stream key, or the same on the application (the tcUrl).
pub fn parse_key(app: &str, stream_key: &str) -> (String, Credentials) {
    let (name, key_query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
    let app_query = app.split_once('?').map_or("", |(_, q)| q);
    let param = |key| {
        [key_query, app_query]
            .into_iter()
            .find_map(|query| crate::signalling::query_param(query, key))
    };
    let credentials = Credentials {
        acl_key: param("aclAuth"),
        ..Credentials::bearer(param("token"))
    };
    (name.to_owned(), credentials)
}

/// The stream's video as RTMP can carry it: the H.264 payload type and the simulcast layer to
/// take (the highest); refused with the codec it has otherwise.
pub fn h264_video(name: &str, tracks: &[StreamTrack]) -> Result<(u8, u8), PlayRefusal> {
    let video = tracks.iter().find(|t| t.kind == MediaKind::Video);
    let Some(video) = video else {
        return Err(PlayRefusal::failed(format!(
            "RTMP playback needs H.264 video; {name} has no video"
        )));
    };
    if !video.codec.name.eq_ignore_ascii_case("H264") {
        return Err(PlayRefusal::failed(format!(
            "RTMP playback needs H.264 video; {name} is {}",
            video.codec.name.to_uppercase()
        )));
    }
    let layers = video.rids.len().clamp(1, usize::from(u8::MAX));
    Ok((video.codec.pt, (layers - 1) as u8))
}

/// A registered RTMP player.
pub struct Playing {
    pub id: SessionId,
    /// The core of its tap (the stream's publisher's).
    pub core: CoreId,
    /// The H.264 payload type of the stream's packets.
    pub pt: u8,
    /// The stream's video, as its publisher sends it.
    pub receiver: EgressReceiver,
    /// What happens to the session (it ends with its publisher, an administrator's kick).
    pub status: UnboundedReceiver<SessionStatus>,
}

/// Starts playing `name` for a player presenting `credentials`: the node's `[auth]` policy for
/// playing (and its REST hook where it says so), a pull from the cluster when the node is in
/// one and does not have the stream, then the player's registration and its tap.
pub async fn start(
    state: &Signalling,
    name: &str,
    credentials: &Credentials,
    client: ClientInfo,
) -> Result<Playing, PlayRefusal> {
    if state.drain.is_draining() {
        return Err(PlayRefusal::failed(
            "this node is draining (shutting down) and takes no new sessions",
        ));
    }
    let fields = http_stream_fields(name, false);
    authorize(
        state,
        Action::Play,
        name,
        credentials,
        HookStanding::Request,
        &fields,
    )
    .await
    .map_err(|e| PlayRefusal::failed(e.to_string()))?;
    let pulled = crate::signalling::pull::pull_in_cluster(state, name).await;
    let tracks = state.registry().stream(name).map(|s| s.tracks.clone());
    let Some(tracks) = tracks else {
        return Err(PlayRefusal::not_found(match pulled {
            Err(failure) => failure.to_string(),
            Ok(()) => format!("stream {name} is not published here"),
        }));
    };
    let (pt, layer) = h264_video(name, &tracks)?;
    let id = new_session_id();
    let (tap, receiver) = egress_channel(EGRESS_RING_PACKETS);
    let (status_tx, status) = tokio::sync::mpsc::unbounded_channel();
    // Watched before it exists: its end cannot be missed.
    state.watch(id, Watcher::Typed(status_tx));
    let spec = EgressSpec {
        id,
        stream: StreamId(0),
        stream_name: name.to_owned(),
        layer,
        audio: false,
        tap,
    };
    let acl_key = credentials.acl_key.clone();
    let placed = state.control(|plane, now| plane.handle_egress(now, spec, acl_key, client));
    let core = placed.map_err(|e| {
        state.unwatch(id);
        match e {
            PlayError::Registry(e) => PlayRefusal::not_found(e.to_string()),
            PlayError::RestrictedAccess => {
                let refused = AuthError::RestrictedAccess;
                state.auth.count_refusal(RefusedKind::Play, &refused);
                PlayRefusal::failed(refused.to_string())
            }
        }
    })?;
    Ok(Playing {
        id,
        core,
        pt,
        receiver,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Codec;

    fn video(name: &str, rids: usize) -> StreamTrack {
        StreamTrack {
            kind: MediaKind::Video,
            codec: Codec {
                pt: 102,
                name: name.into(),
                clock_rate: 90_000,
                channels: None,
                fmtp: None,
                rtcp_fb: Vec::new(),
                rtx_pt: None,
            },
            extmaps: Vec::new(),
            rids: (0..rids).map(|i| i.to_string()).collect(),
        }
    }

    #[test]
    fn the_name_token_and_acl_key_come_from_the_key_or_the_app() {
        let (name, c) = parse_key("live?token=t", "cam?aclAuth=k");
        assert_eq!(
            (name.as_str(), c.token.as_deref(), c.acl_key.as_deref()),
            ("cam", Some("t"), Some("k"))
        );
        let (name, c) = parse_key("live", "cam");
        assert_eq!((name.as_str(), c.token, c.acl_key), ("cam", None, None));
    }

    #[test]
    fn only_h264_video_plays_and_a_simulcast_stream_gives_its_highest_layer() {
        assert_eq!(h264_video("cam", &[video("H264", 0)]), Ok((102, 0)));
        assert_eq!(h264_video("cam", &[video("h264", 3)]), Ok((102, 2)));
        let refused = h264_video("cam", &[video("VP8", 0)]).unwrap_err();
        assert_eq!(refused.code, "NetStream.Play.Failed");
        assert_eq!(refused.why, "RTMP playback needs H.264 video; cam is VP8");
        assert!(h264_video("cam", &[]).unwrap_err().why.contains("no video"));
    }
}
