//! `[auth]`: who may publish, play and administer.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;

/// The shortest HMAC secret accepted (`auth.jwt_secret`, `cdn.secret`): HS256 keys shorter than
/// the hash are guessable offline from one token.
pub const MIN_SECRET_LEN: usize = 32;
/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A configured secret. Its `Debug` never shows the value, so a logged config leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// `auth.publish` / `auth.play`: what a client must show to do that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Anyone may.
    #[default]
    Open,
    /// A JWT (signed with `auth.jwt_secret` or a key of `auth.jwks_file`) whose `rtcdn` claim
    /// grants the action for the stream name.
    Token,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Who may publish.
    pub publish: Policy,
    /// Who may play.
    pub play: Policy,
    /// HS256 secret tokens are signed with.
    pub jwt_secret: Option<Secret>,
    /// A JWKS document with the public keys (RS256, ES256, EdDSA) tokens may be signed with.
    pub jwks_file: Option<PathBuf>,
    /// Seconds of clock difference allowed when checking `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Bearer token of the admin endpoints (`/api/stats`, `/rest-api/...`). Required for them
    /// whenever `publish` or `play` is not open.
    pub admin_token: Option<Secret>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            publish: Policy::Open,
            play: Policy::Open,
            jwt_secret: None,
            jwks_file: None,
            leeway_secs: 5,
            admin_token: None,
        }
    }
}

impl AuthConfig {
    /// Whether every action is open (the first-run default).
    pub fn all_open(&self) -> bool {
        self.publish == Policy::Open && self.play == Policy::Open
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        let token_policy = self.publish == Policy::Token || self.play == Policy::Token;
        if token_policy && self.jwt_secret.is_none() && self.jwks_file.is_none() {
            return invalid(
                "auth.jwt_secret",
                "a \"token\" policy needs auth.jwt_secret or auth.jwks_file to check tokens with"
                    .into(),
            );
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.expose().len() < MIN_SECRET_LEN {
                return invalid(
                    "auth.jwt_secret",
                    format!("at least {MIN_SECRET_LEN} characters (it signs HS256 tokens)"),
                );
            }
        }
        if let Some(token) = &self.admin_token {
            if token.expose().len() < MIN_ADMIN_TOKEN_LEN {
                return invalid(
                    "auth.admin_token",
                    format!("at least {MIN_ADMIN_TOKEN_LEN} characters"),
                );
            }
        }
        if self.leeway_secs > 300 {
            return invalid("auth.leeway_secs", "at most 300".into());
        }
        Ok(())
    }
}
