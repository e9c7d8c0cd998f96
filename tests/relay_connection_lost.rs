//! A relay over TCP whose connection fails, or that its edge closes, ends at once: the reactor
//! hands the lost connection to the media core, which ends the relay session that opened it
//! (as one whose edge never came, or went away) and asks for its socket to be closed, instead
//! of letting it wait out its connect or consent timeout. A lost connection that is not a
//! relay's own ends nothing.

use std::time::{Duration, Instant};

use ice::IceCredentials;
use rtcdn::control::{
    CoreCommand, CoreEvent, CoreId, EndReason, RelayPath, SessionId, SessionRole, StreamId,
};
use rtcdn::media::test_support::{core_config, core_session_spec};
use rtcdn::media::{ForwardQueue, MediaCore, MemorySink, NoDtls, SocketId, SocketRequest};

const STREAM: StreamId = StreamId(7);
const RELAY: SessionId = SessionId(5);
const PLAYER: SessionId = SessionId(6);

fn credentials(ufrag: &str) -> IceCredentials {
    IceCredentials {
        ufrag: ufrag.into(),
        pwd: "password-0123456789012345".into(),
    }
}

fn ended(core: &mut MediaCore<NoDtls, ForwardQueue>) -> Vec<(SessionId, EndReason)> {
    let mut out = Vec::new();
    while let Some(event) = core.poll_event() {
        if let CoreEvent::SessionEnded { id, reason } = event {
            out.push((id, reason));
        }
    }
    out
}

#[test]
fn a_lost_relay_connection_ends_its_relay_session_and_nothing_else() {
    let now = Instant::now();
    let config = core_config(CoreId(0), 42);
    let mut core = MediaCore::new(config, NoDtls, ForwardQueue::new(), now);
    let mut sink = MemorySink::new();
    let relay = core_session_spec(
        RELAY,
        STREAM,
        "cam",
        SessionRole::Relay {
            tracks: Vec::new(),
            remote_candidates: vec!["10.0.0.2:5000".parse().unwrap()],
            path: RelayPath::Tcp,
            layers: None,
        },
        credentials("rel1"),
        credentials("edg1"),
    );
    core.handle_command(now, CoreCommand::AddSession(Box::new(relay)), &mut sink);
    let Some(SocketRequest::Open(spec)) = core.poll_socket_request() else {
        panic!("a relay asks for a socket of its own");
    };
    let socket = SocketId::tcp(3);
    core.handle_socket_opened(now, *spec, socket, &mut sink);
    let player = core_session_spec(
        PLAYER,
        STREAM,
        "cam",
        SessionRole::Player { tracks: Vec::new() },
        credentials("ply1"),
        credentials("brw1"),
    );
    core.handle_command(now, CoreCommand::AddSession(Box::new(player)), &mut sink);

    // Another connection (an accepted one, or an unknown id): nothing ends.
    let later = now + Duration::from_millis(100);
    core.handle_socket_lost(later, SocketId::tcp(4), &mut sink);
    core.handle_socket_lost(later, SocketId::MAIN, &mut sink);
    assert!(ended(&mut core).is_empty());
    assert!(core.session(RELAY).is_some() && core.session(PLAYER).is_some());

    // The relay's own, before it connected: it never came.
    core.handle_socket_lost(later, socket, &mut sink);
    assert_eq!(ended(&mut core), [(RELAY, EndReason::NeverConnected)]);
    assert!(core.session(RELAY).is_none());
    assert!(core.session(PLAYER).is_some());
    assert!(matches!(
        core.poll_socket_request(),
        Some(SocketRequest::Close(closed)) if closed == socket
    ));
    assert!(core.poll_socket_request().is_none());
}
