//! A session's status as its watcher hears it, typed: a WebSocket client's transport turns it
//! into the protocol's status frames, a relay link reads it as it is. Nobody parses a frame
//! written for someone else to learn how a session is doing.

use super::{CoreEvent, EndReason, SessionId};

/// What happened to a session, for whoever watches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// ICE and DTLS are up.
    Connected,
    /// A publisher's first media arrived.
    MediaFlowing,
    /// The node ended the session (its client did not ask for it).
    Ended(EndReason),
}

impl SessionStatus {
    /// The status a core's event reports, and for which session; `None` for events that are
    /// not a status change (bitrate reports).
    pub fn of_core_event(event: &CoreEvent) -> Option<(SessionId, SessionStatus)> {
        match event {
            CoreEvent::SessionConnected { id } => Some((*id, SessionStatus::Connected)),
            CoreEvent::MediaStarted { id } => Some((*id, SessionStatus::MediaFlowing)),
            CoreEvent::SessionEnded { id, reason } => {
                Some((*id, SessionStatus::Ended(reason.clone())))
            }
            CoreEvent::Bitrates { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_events_map_to_statuses_and_bitrates_to_none() {
        let id = SessionId(7);
        assert_eq!(
            SessionStatus::of_core_event(&CoreEvent::SessionConnected { id }),
            Some((id, SessionStatus::Connected))
        );
        assert_eq!(
            SessionStatus::of_core_event(&CoreEvent::MediaStarted { id }),
            Some((id, SessionStatus::MediaFlowing))
        );
        let reason = EndReason::ConsentExpired;
        assert_eq!(
            SessionStatus::of_core_event(&CoreEvent::SessionEnded {
                id,
                reason: reason.clone()
            }),
            Some((id, SessionStatus::Ended(reason)))
        );
        let bitrates = CoreEvent::Bitrates {
            id,
            estimate_bps: None,
            received_bps: Some(1),
            layer: None,
            loss_fraction: None,
            video_size: None,
            traffic: Default::default(),
        };
        assert_eq!(SessionStatus::of_core_event(&bitrates), None);
    }
}
