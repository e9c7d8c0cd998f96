//! How many requests the [`Authorizer`](super::Authorizer) refused, by what was asked and why,
//! for `/metrics`: a table of atomics, counted where the refusal is decided (no lock, no
//! allocation) and read at each scrape.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Action, AuthError, HookError};

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedKind {
    /// Publishing a stream (WHIP, the WebSocket protocol, RTMP).
    Publish,
    /// Playing a stream.
    Play,
    /// An admin endpoint (`/api/*`, `/metrics`, the WCS REST calls).
    Admin,
    /// A CDN relay's token (the connection goes on as a client without the relay's rights).
    Relay,
}

impl From<Action> for RefusedKind {
    fn from(action: Action) -> RefusedKind {
        match action {
            Action::Publish => RefusedKind::Publish,
            Action::Play => RefusedKind::Play,
        }
    }
}

impl RefusedKind {
    const ALL: [RefusedKind; 4] = [
        RefusedKind::Publish,
        RefusedKind::Play,
        RefusedKind::Admin,
        RefusedKind::Relay,
    ];

    /// The `kind` label.
    pub fn name(self) -> &'static str {
        match self {
            RefusedKind::Publish => "publish",
            RefusedKind::Play => "play",
            RefusedKind::Admin => "admin",
            RefusedKind::Relay => "relay",
        }
    }
}

/// The `reason` labels, in table order.
const REASONS: [&str; 9] = [
    "missing_token",
    "invalid_token",
    "not_granted",
    "edge_relay_only",
    "admin_token",
    "admin_disabled",
    "hook_refused",
    "hook_failed",
    "restricted_access",
];

fn reason_index(e: &AuthError) -> usize {
    match e {
        AuthError::MissingToken(_) => 0,
        AuthError::InvalidToken(_) => 1,
        AuthError::NotGranted { .. } => 2,
        AuthError::EdgeRelayOnly(_) => 3,
        AuthError::AdminTokenRequired => 4,
        AuthError::AdminDisabled => 5,
        AuthError::Hook(HookError::Refused { .. } | HookError::UnknownApp(_)) => 6,
        AuthError::Hook(HookError::Failed { .. }) => 7,
        AuthError::RestrictedAccess => 8,
    }
}

/// Refusals by what was refused and why.
#[derive(Debug, Default)]
pub struct Refusals([[AtomicU64; REASONS.len()]; RefusedKind::ALL.len()]);

impl Refusals {
    /// Counts one refusal.
    pub fn count(&self, what: RefusedKind, why: &AuthError) {
        self.0[what as usize][reason_index(why)].fetch_add(1, Ordering::Relaxed);
    }

    /// `(kind, reason, count)` for the pairs that happened: most pairs never can (a play
    /// refused for want of the admin token), and 36 series of zeros would only be noise.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for what in RefusedKind::ALL {
            for (i, reason) in REASONS.iter().enumerate() {
                let n = self.0[what as usize][i].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((what.name(), *reason, n));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenError;

    #[test]
    fn refusals_are_counted_by_kind_and_reason() {
        let refusals = Refusals::default();
        refusals.count(
            RefusedKind::Publish,
            &AuthError::MissingToken(Action::Publish),
        );
        refusals.count(
            RefusedKind::Publish,
            &AuthError::MissingToken(Action::Publish),
        );
        refusals.count(RefusedKind::Admin, &AuthError::AdminTokenRequired);
        refusals.count(
            RefusedKind::Relay,
            &AuthError::InvalidToken(TokenError::Expired),
        );
        let snapshot = refusals.snapshot();
        assert_eq!(snapshot.len(), 3, "only what happened: {snapshot:?}");
        let get = |kind: &str, reason: &str| {
            snapshot
                .iter()
                .find(|(k, r, _)| *k == kind && *r == reason)
                .map(|(_, _, n)| *n)
        };
        assert_eq!(get("publish", "missing_token"), Some(2));
        assert_eq!(get("admin", "admin_token"), Some(1));
        assert_eq!(get("relay", "invalid_token"), Some(1));
        assert_eq!(get("play", "missing_token"), None);
    }
}
