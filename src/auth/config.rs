//! `[auth]`: who may publish, play and administer.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::error::ConfigError;

/// The shortest HMAC secret accepted (`auth.jwt_secret`, `cdn.secret`): HS256 keys shorter than
/// the hash are guessable offline from one token.
pub const MIN_SECRET_LEN: usize = 32;
/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A configured secret. Neither its `Debug` nor its `Serialize` shows the value (both write
/// `<redacted>`), so a logged or printed config (`rtcdn --print-config`) leaks nothing.
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

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// What a [`Secret`] shows instead of its value.
pub const REDACTED: &str = "<redacted>";

/// `auth.publish` / `auth.play`: what a client must show to do that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Anyone may.
    #[default]
    Open,
    /// A JWT (signed with `auth.jwt_secret` or a key of `auth.jwks_file`) whose `rtcdn` claim
    /// grants the action for the stream name.
    Token,
    /// The application's WCS REST hooks (`auth.rest_hook_url`, `[[auth.apps]]`) decide.
    Hook,
}

/// `[[auth.apps]]`: the REST hook URL of a Flashphoner `appKey`, as WCS's `add app`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HookApp {
    /// The `appKey` clients send (`Flashphoner.createSession({appKey})`).
    pub key: String,
    /// Its app URL: hooks go to `{url}/connect`, `{url}/publishStream`, `{url}/playStream`.
    pub url: String,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
    /// The WCS app URL of clients whose appKey has no `[[auth.apps]]` entry (WHIP/WHEP clients
    /// count as `defaultApp`).
    pub rest_hook_url: Option<String>,
    /// Seconds a hook may take to answer.
    pub rest_hook_timeout_secs: u64,
    /// App URLs by appKey.
    pub apps: Vec<HookApp>,
    /// Where players present a WCS ACL key: `custom.{acl_property}` of `connection`, or
    /// `?{acl_property}=` on WHEP (WCS's `client_acl_property_name`).
    pub acl_property: String,
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
            rest_hook_url: None,
            rest_hook_timeout_secs: 15,
            apps: Vec::new(),
            acl_property: "aclAuth".into(),
        }
    }
}

impl AuthConfig {
    /// Whether any action is decided by REST hooks.
    pub fn uses_hooks(&self) -> bool {
        self.publish == Policy::Hook || self.play == Policy::Hook
    }

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
        if self.uses_hooks() && self.rest_hook_url.is_none() && self.apps.is_empty() {
            return invalid(
                "auth.rest_hook_url",
                "a \"hook\" policy needs auth.rest_hook_url or [[auth.apps]]".into(),
            );
        }
        let urls = self.rest_hook_url.iter().map(|u| ("auth.rest_hook_url", u));
        let apps = self.apps.iter().map(|a| ("auth.apps.url", &a.url));
        for (key, url) in urls.chain(apps) {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.parse::<hyper::Uri>().is_err()
            {
                return invalid(key, format!("{url:?} is not an http:// or https:// URL"));
            }
        }
        if let Some((i, app)) = self
            .apps
            .iter()
            .enumerate()
            .find(|(i, a)| self.apps[..*i].iter().any(|b| b.key == a.key))
        {
            return invalid(
                "auth.apps.key",
                format!("{:?} appears twice (entry {i})", app.key),
            );
        }
        if !(1..=120).contains(&self.rest_hook_timeout_secs) {
            return invalid("auth.rest_hook_timeout_secs", "must be 1 to 120".into());
        }
        let property_ok = !self.acl_property.is_empty()
            && self.acl_property.len() <= 64
            && self
                .acl_property
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !property_ok {
            return invalid(
                "auth.acl_property",
                format!("{:?}: use 1 to 64 of A-Z a-z 0-9 _ -", self.acl_property),
            );
        }
        if self.leeway_secs > 300 {
            return invalid("auth.leeway_secs", "at most 300".into());
        }
        Ok(())
    }
}
