//! Who may publish, play and administer. Every entry point (WHIP/WHEP, the WebSocket protocol,
//! the REST and stats endpoints) asks the node's [`Authorizer`], which applies the `[auth]`
//! policy of each action and the edge's relay-only rule (`[cdn]`).
//!
//! Called by the transports (`crate::signalling`), never by the media plane. The policy is
//! sans-IO: the [`config`], token [`grant`]s, [`jwt`] verification and the CDN's [`relay`]
//! tokens; the IO is the REST [`hook`] (an HTTP call to the application's backend) and the
//! `rtcdn token` command ([`cli`]).

pub mod cli;
pub mod config;
pub mod grant;
pub mod hook;
pub mod jwt;
pub mod refusals;
pub mod relay;

use std::fmt;
use std::time::Duration;

use subtle::ConstantTimeEq;

pub use config::{AuthConfig, Policy, Secret};
pub use grant::Grant;
pub use hook::{HookClient, HookError, HookMethod, HookSession};
pub use jwt::{TokenError, TokenVerifier};
pub use refusals::{Refusals, RefusedKind};
pub use relay::RelayAuth;

use crate::config::cdn::CdnRole;
use crate::config::Config;

/// What a client asks to do with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it.
    Publish,
    /// Receive it.
    Play,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Play => "play",
        })
    }
}

/// What a client presented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A bearer token (`Authorization: Bearer`, `?token=`, or `custom.token` of `connection`).
    pub token: Option<String>,
    /// The client is a relay of this CDN (its `connection` proved `cdn.secret`).
    pub relay: bool,
    /// Why a relay token that was presented was refused, for the refusal's text.
    pub relay_refused: Option<TokenError>,
    /// A WCS ACL key (`custom.aclAuth`, `?aclAuth=`), for streams with an access list.
    pub acl_key: Option<String>,
}

impl Credentials {
    /// Credentials with just a bearer token.
    pub fn bearer(token: Option<String>) -> Credentials {
        Credentials {
            token,
            ..Credentials::default()
        }
    }
}

/// How a request was let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorized {
    /// The action is open to anyone.
    Open,
    /// A valid token grants it; `subject` is its `sub`, for logs.
    Token { subject: Option<String> },
    /// A relay of this CDN.
    Relay,
    /// The application's REST hook allowed it.
    Hook,
}

/// What the policy decides without asking anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allowed(Authorized),
    /// The application's REST hook must be asked.
    AskHook,
}

/// Why a request was refused. The text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The action needs a token and none came.
    #[error("a token is required to {0}: send Authorization: Bearer TOKEN, ?token=TOKEN, or custom.token in the connection")]
    MissingToken(Action),
    /// The token is not valid.
    #[error("{0}")]
    InvalidToken(TokenError),
    /// The token is valid but does not grant this.
    #[error("the token does not grant {action} of {name:?}")]
    NotGranted { action: Action, name: String },
    /// An edge takes streams only from its origin's relays.
    #[error("this node is a CDN edge: only its origin's authenticated relays publish here{}", .0.as_ref().map(|e| format!(" (relay token refused: {e})")).unwrap_or_default())]
    EdgeRelayOnly(Option<TokenError>),
    /// An admin endpoint without the admin token.
    #[error("this endpoint needs Authorization: Bearer <auth.admin_token>")]
    AdminTokenRequired,
    /// An admin endpoint while publish or play is protected and no admin token is configured.
    #[error("admin endpoints are disabled: set auth.admin_token")]
    AdminDisabled,
    /// The application's REST hook refused, or could not be asked.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The stream has an access list and the player's key is not on it.
    #[error("Restricted access: the stream's access list does not hold the key presented")]
    RestrictedAccess,
}

impl AuthError {
    /// The HTTP status: 401 when the right credentials could make it work, 403 when not.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::MissingToken(_) | AuthError::InvalidToken(_) => 401,
            AuthError::AdminTokenRequired => 401,
            AuthError::NotGranted { .. }
            | AuthError::EdgeRelayOnly(_)
            | AuthError::AdminDisabled
            | AuthError::RestrictedAccess => 403,
            AuthError::Hook(HookError::Refused { .. } | HookError::UnknownApp(_)) => 403,
            // The backend may answer next time.
            AuthError::Hook(HookError::Failed { .. }) => 503,
        }
    }

    /// The `info` of the FAILED status a Flashphoner SDK client gets.
    pub fn wcs_info(&self) -> String {
        if *self == AuthError::RestrictedAccess {
            // The SDK's RESTRICTED_ACCESS, which WCS pages match on.
            return "Restricted access".into();
        }
        let kind = match self.http_status() {
            401 => "Unauthorized",
            403 => "Forbidden",
            _ => "Failed by error",
        };
        format!("{kind}: {self}")
    }
}

/// Who may use the admin endpoints.
enum AdminAccess {
    /// Anyone: every action is open and no admin token is set (the first-run default).
    Open,
    /// Holders of this token.
    Token(Secret),
    /// Nobody: actions are protected and no admin token is set.
    Closed,
}

/// Why the auth configuration could not be put to use at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// `auth.jwks_file` could not be read.
    #[error("auth.jwks_file {path}: {source}")]
    ReadJwks {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The keys are unusable.
    #[error("auth.jwks_file {path}: {source}")]
    Keys { path: String, source: jwt::KeyError },
    /// The REST hook client could not be made.
    #[error(transparent)]
    Hooks(#[from] hook::HookSetupError),
}

/// The node's access rules.
pub struct Authorizer {
    publish: Policy,
    play: Policy,
    tokens: TokenVerifier,
    admin: AdminAccess,
    /// An edge that takes publishes from relays only.
    relay_only: bool,
    /// `auth.acl_property`.
    acl_property: String,
    /// The REST hooks, when a policy uses them.
    hooks: Option<HookClient>,
    /// What it refused, for `/metrics`.
    refusals: Refusals,
}

impl Authorizer {
    /// The rules of `config`; reads `auth.jwks_file`. `node_id` names this node to REST hooks
    /// (its HTTP address).
    pub fn from_config(config: &Config, node_id: &str) -> Result<Authorizer, AuthSetupError> {
        let auth = &config.auth;
        let jwks =
            match &auth.jwks_file {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                    AuthSetupError::ReadJwks {
                        path: path.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        let tokens = TokenVerifier::new(
            auth.jwt_secret.as_ref().map(Secret::expose),
            jwks.as_deref(),
            Duration::from_secs(auth.leeway_secs),
        )
        .map_err(|source| AuthSetupError::Keys {
            path: auth
                .jwks_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        })?;
        let admin = match (&auth.admin_token, auth.all_open()) {
            (Some(token), _) => AdminAccess::Token(token.clone()),
            (None, true) => AdminAccess::Open,
            (None, false) => AdminAccess::Closed,
        };
        let hooks = if auth.uses_hooks() {
            Some(HookClient::new(auth, node_id.to_owned())?)
        } else {
            None
        };
        Ok(Authorizer {
            publish: auth.publish,
            play: auth.play,
            tokens,
            admin,
            relay_only: config.cdn.role == CdnRole::Edge && !config.cdn.edge_accepts_publish,
            acl_property: auth.acl_property.clone(),
            hooks,
            refusals: Refusals::default(),
        })
    }

    /// Where players present an ACL key (`auth.acl_property`).
    pub fn acl_property(&self) -> &str {
        &self.acl_property
    }

    /// The REST hooks, when a policy uses them.
    pub fn hooks(&self) -> Option<&HookClient> {
        self.hooks.as_ref()
    }

    /// What it refused so far, by kind and reason.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Counts a refusal decided elsewhere: the REST hook's answer, a stream's access list, a
    /// relay token that did not verify.
    pub fn count_refusal(&self, what: RefusedKind, why: &AuthError) {
        self.refusals.count(what, why);
    }

    /// Whether `credentials` may do `action` on the stream `name`, as far as that can be told
    /// without asking the application (see [`Verdict::AskHook`]). A refusal is counted.
    pub fn check(
        &self,
        action: Action,
        name: &str,
        credentials: &Credentials,
    ) -> Result<Verdict, AuthError> {
        self.decide(action, name, credentials)
            .inspect_err(|e| self.refusals.count(action.into(), e))
    }

    /// Whether [`check`](Self::check) would let `credentials` through, without counting a
    /// refusal: for answers that only withhold something (an OPTIONS' TURN credentials).
    pub fn would_allow(&self, action: Action, name: &str, credentials: &Credentials) -> bool {
        self.decide(action, name, credentials).is_ok()
    }

    fn decide(
        &self,
        action: Action,
        name: &str,
        credentials: &Credentials,
    ) -> Result<Verdict, AuthError> {
        if credentials.relay {
            return Ok(Verdict::Allowed(Authorized::Relay));
        }
        if action == Action::Publish && self.relay_only {
            return Err(AuthError::EdgeRelayOnly(credentials.relay_refused.clone()));
        }
        let policy = match action {
            Action::Publish => self.publish,
            Action::Play => self.play,
        };
        match policy {
            Policy::Open => Ok(Verdict::Allowed(Authorized::Open)),
            Policy::Hook => Ok(Verdict::AskHook),
            Policy::Token => {
                let token = credentials
                    .token
                    .as_deref()
                    .ok_or(AuthError::MissingToken(action))?;
                let claims = self.tokens.verify(token).map_err(AuthError::InvalidToken)?;
                if claims.rtcdn.is_some_and(|grant| grant.allows(action, name)) {
                    Ok(Verdict::Allowed(Authorized::Token {
                        subject: claims.sub,
                    }))
                } else {
                    Err(AuthError::NotGranted {
                        action,
                        name: name.to_owned(),
                    })
                }
            }
        }
    }

    /// Whether a request to an admin endpoint with `bearer` may go on. A refusal is counted.
    pub fn admin(&self, bearer: Option<&str>) -> Result<(), AuthError> {
        self.admin_access(bearer)
            .inspect_err(|e| self.refusals.count(RefusedKind::Admin, e))
    }

    fn admin_access(&self, bearer: Option<&str>) -> Result<(), AuthError> {
        match &self.admin {
            AdminAccess::Open => Ok(()),
            AdminAccess::Closed => Err(AuthError::AdminDisabled),
            AdminAccess::Token(expected) => {
                let presented = bearer.unwrap_or("").as_bytes();
                if bool::from(presented.ct_eq(expected.expose().as_bytes())) {
                    Ok(())
                } else {
                    Err(AuthError::AdminTokenRequired)
                }
            }
        }
    }

    /// Whether `bearer` is the configured admin token (which may act on any session).
    pub fn is_admin_token(&self, bearer: Option<&str>) -> bool {
        matches!(self.admin, AdminAccess::Token(_)) && self.admin_access(bearer).is_ok()
    }

    /// Whether anyone may do `action`.
    pub fn is_open(&self, action: Action) -> bool {
        match action {
            Action::Publish => self.publish == Policy::Open && !self.relay_only,
            Action::Play => self.play == Policy::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authorizer(publish: Policy, play: Policy, admin: Option<&str>) -> Authorizer {
        let mut config = Config::default();
        config.auth.publish = publish;
        config.auth.play = play;
        config.auth.jwt_secret = Some(Secret::new(SECRET));
        config.auth.admin_token = admin.map(Secret::new);
        Authorizer::from_config(&config, "node").unwrap()
    }

    fn token(publish: &[&str], play: &[&str]) -> Credentials {
        let grant = Grant {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            play: play.iter().map(|s| s.to_string()).collect(),
        };
        Credentials::bearer(Some(jwt::mint(
            SECRET,
            grant,
            Duration::from_secs(60),
            Some("t".into()),
        )))
    }

    #[test]
    fn policies_per_action() {
        let auth = authorizer(Policy::Token, Policy::Open, None);
        assert_eq!(
            auth.check(Action::Play, "x", &Credentials::default()),
            Ok(Verdict::Allowed(Authorized::Open))
        );
        assert_eq!(
            auth.check(Action::Publish, "x", &Credentials::default()),
            Err(AuthError::MissingToken(Action::Publish))
        );
        assert_eq!(
            auth.check(Action::Publish, "cam1", &token(&["cam*"], &[])),
            Ok(Verdict::Allowed(Authorized::Token {
                subject: Some("t".into())
            }))
        );
        let refused = auth
            .check(Action::Publish, "other", &token(&["cam*"], &["*"]))
            .unwrap_err();
        assert_eq!(refused.http_status(), 403);
        let garbage = Credentials::bearer(Some("garbage".into()));
        let refused = auth.check(Action::Publish, "cam1", &garbage).unwrap_err();
        assert!(matches!(refused, AuthError::InvalidToken(_)));
        assert_eq!(refused.http_status(), 401);
        assert!(refused.wcs_info().starts_with("Unauthorized: "));
    }

    #[test]
    fn admin_access() {
        // All open and no token: the first-run default keeps /api/stats readable.
        assert_eq!(
            authorizer(Policy::Open, Policy::Open, None).admin(None),
            Ok(())
        );
        // Protected actions without an admin token: closed.
        assert_eq!(
            authorizer(Policy::Token, Policy::Open, None).admin(Some("x")),
            Err(AuthError::AdminDisabled)
        );
        let auth = authorizer(Policy::Token, Policy::Token, Some("admin-token-0123456789"));
        assert_eq!(auth.admin(None), Err(AuthError::AdminTokenRequired));
        assert_eq!(
            auth.admin(Some("admin-token-012345678")),
            Err(AuthError::AdminTokenRequired)
        );
        assert_eq!(auth.admin(Some("admin-token-0123456789")), Ok(()));
        assert!(auth.is_admin_token(Some("admin-token-0123456789")));
        assert!(!authorizer(Policy::Open, Policy::Open, None).is_admin_token(None));
    }

    #[test]
    fn edges_take_publishes_from_relays_only() {
        let mut config = Config::default();
        config.cdn.role = CdnRole::Edge;
        let auth = Authorizer::from_config(&config, "node").unwrap();
        let refused = auth
            .check(Action::Publish, "x", &Credentials::default())
            .unwrap_err();
        assert_eq!(refused.http_status(), 403);
        let relay = Credentials {
            relay: true,
            ..Credentials::default()
        };
        assert_eq!(
            auth.check(Action::Publish, "x", &relay),
            Ok(Verdict::Allowed(Authorized::Relay))
        );
        assert_eq!(
            auth.check(Action::Play, "x", &Credentials::default()),
            Ok(Verdict::Allowed(Authorized::Open))
        );
        config.cdn.edge_accepts_publish = true;
        let auth = Authorizer::from_config(&config, "node").unwrap();
        assert_eq!(
            auth.check(Action::Publish, "x", &Credentials::default()),
            Ok(Verdict::Allowed(Authorized::Open))
        );
    }
}
