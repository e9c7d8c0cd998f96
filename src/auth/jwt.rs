//! JSON Web Tokens (RFC 7519), checked and minted with the `jsonwebtoken` crate: HS256 with a
//! shared secret, RS256/ES256/ES384/EdDSA with the public keys of a JWKS document (RFC 7517).
//!
//! A token must carry `exp`; `nbf` is honoured when present; both with a small leeway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::grant::Grant;

/// The longest token looked at: a header, a few claims and an RSA-4096 signature fit in 2 KiB.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a token was not accepted. Shown to the client, so it names the problem, never a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT, or its header or claims are not what they must be.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is still to come.
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// Signed with an algorithm no configured key has.
    #[error("token algorithm {0} is not accepted here")]
    Algorithm(String),
    /// Names a key (`kid`) the JWKS does not have.
    #[error("token key id {0:?} is not in the JWKS")]
    UnknownKey(String),
    /// Has an audience (`aud`) that is not this one: e.g. a relay token used as a client's.
    #[error("token is meant for another audience")]
    Audience,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::Algorithm("(header)".into())
            }
            ErrorKind::MissingRequiredClaim(claim) => {
                TokenError::Malformed(format!("no {claim} claim"))
            }
            _ => TokenError::Malformed(e.to_string()),
        }
    }
}

/// Why the key configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The JWKS document is not a JWKS.
    #[error("not a JWKS document: {0}")]
    Jwks(String),
    /// A key of the JWKS cannot verify any algorithm rtcdn accepts.
    #[error("JWKS key {index}{kid}: {why}")]
    Key {
        index: usize,
        kid: String,
        why: String,
    },
}

/// The claims rtcdn reads; others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Who the token is for (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience: client tokens carry none; relay tokens carry [`super::relay::AUDIENCE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// What the token allows. A token without it allows nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcdn: Option<Grant>,
}

/// One verification key.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks tokens against the configured keys.
pub struct TokenVerifier {
    keys: Vec<Key>,
    leeway: u64,
    audience: Option<&'static str>,
}

impl TokenVerifier {
    /// A verifier for HS256 tokens signed with `secret` and for tokens signed with a key of the
    /// JWKS document `jwks` (its text).
    pub fn new(
        secret: Option<&str>,
        jwks: Option<&str>,
        leeway: Duration,
    ) -> Result<TokenVerifier, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            keys.push(Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(text) = jwks {
            keys.extend(jwks_keys(text)?);
        }
        Ok(TokenVerifier {
            keys,
            leeway: leeway.as_secs(),
            audience: None,
        })
    }

    /// Accepts only tokens whose `aud` is `audience` (and refuses those without one).
    pub fn for_audience(mut self, audience: &'static str) -> TokenVerifier {
        self.audience = Some(audience);
        self
    }

    /// The token's claims, if it is well-formed, signed by a configured key, and current.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let header = jsonwebtoken::decode_header(token)?;
        let mut candidates = self.keys.iter().filter(|k| k.algorithm == header.alg);
        let key = match &header.kid {
            // An HMAC secret has no id: a kid only selects among JWKS keys.
            Some(kid) if header.alg != Algorithm::HS256 => candidates
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?,
            _ => candidates
                .next()
                .ok_or_else(|| TokenError::Algorithm(format!("{:?}", header.alg)))?,
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(audience) = self.audience {
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&["exp", "aud"]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)?;
        Ok(data.claims)
    }
}

/// The verification keys of a JWKS document.
fn jwks_keys(text: &str) -> Result<Vec<Key>, KeyError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| KeyError::Jwks(e.to_string()))?;
    let mut keys = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let fail = |why: String| KeyError::Key {
            index,
            kid: kid
                .as_deref()
                .map(|k| format!(" (kid {k:?})"))
                .unwrap_or_default(),
            why,
        };
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (_, AlgorithmParameters::OctetKey(_)) => {
                return Err(fail(
                    "a symmetric key; put an HS256 secret in auth.jwt_secret".into(),
                ))
            }
            (Some(named), _) => named
                .to_string()
                .parse::<Algorithm>()
                .map_err(|_| fail(format!("algorithm {named:?} is not supported")))?,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                ref other => return Err(fail(format!("curve {other:?} is not supported"))),
            },
            (None, AlgorithmParameters::OctetKeyPair(p)) => match p.curve {
                EllipticCurve::Ed25519 => Algorithm::EdDSA,
                ref other => return Err(fail(format!("curve {other:?} is not supported"))),
            },
        };
        if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(fail(
                "an HMAC algorithm; put an HS256 secret in auth.jwt_secret".into(),
            ));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(e.to_string()))?;
        keys.push(Key {
            kid,
            algorithm,
            key,
        });
    }
    Ok(keys)
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// A client token granting `grant` for `ttl` from now, signed with `secret` (what
/// `rtcdn token` prints).
pub fn mint(secret: &str, grant: Grant, ttl: Duration, subject: Option<String>) -> String {
    let now = unix_now();
    sign_hs256(
        secret,
        &Claims {
            exp: now + ttl.as_secs(),
            nbf: None,
            iat: Some(now),
            sub: subject,
            aud: None,
            rtcdn: Some(grant),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(Some(SECRET), None, Duration::from_secs(5)).unwrap()
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            exp,
            nbf: None,
            iat: None,
            sub: Some("alice".into()),
            aud: None,
            rtcdn: Some(Grant {
                publish: vec!["cam*".into()],
                play: vec![],
            }),
        }
    }

    #[test]
    fn minted_tokens_verify_and_carry_the_grant() {
        let token = mint(
            SECRET,
            Grant {
                publish: vec!["a".into()],
                play: vec!["*".into()],
            },
            Duration::from_secs(60),
            None,
        );
        let claims = verifier().verify(&token).unwrap();
        assert_eq!(claims.rtcdn.unwrap().play, vec!["*".to_string()]);
    }

    #[test]
    fn bad_tokens_are_named() {
        let now = unix_now();
        let v = verifier();
        assert_eq!(
            v.verify(&sign_hs256(SECRET, &claims(now - 60))),
            Err(TokenError::Expired)
        );
        // Within the leeway it still counts.
        assert!(v.verify(&sign_hs256(SECRET, &claims(now - 2))).is_ok());
        let mut early = claims(now + 60);
        early.nbf = Some(now + 30);
        assert_eq!(
            v.verify(&sign_hs256(SECRET, &early)),
            Err(TokenError::NotYetValid)
        );
        let other = "fedcba9876543210fedcba9876543210";
        assert_eq!(
            v.verify(&sign_hs256(other, &claims(now + 60))),
            Err(TokenError::BadSignature)
        );
        let mut relay = claims(now + 60);
        relay.aud = Some("rtcdn-relay".into());
        assert_eq!(
            v.verify(&sign_hs256(SECRET, &relay)),
            Err(TokenError::Audience)
        );
        assert!(matches!(v.verify("x.y.z"), Err(TokenError::Malformed(_))));
        assert!(matches!(v.verify(""), Err(TokenError::Malformed(_))));
        assert_eq!(v.verify(&"a".repeat(5000)), Err(TokenError::TooLong));
        // No exp at all.
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"rtcdn": {"play": ["*"]}}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(v.verify(&no_exp), Err(TokenError::Malformed(m)) if m.contains("exp")));
        // alg none / an algorithm without a key.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"exp":{}}}"#, now + 60))
        );
        assert!(v.verify(&none).is_err());
        let rs = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","typ":"JWT"}"#),
            b64(&format!(r#"{{"exp":{}}}"#, now + 60))
        );
        assert!(matches!(v.verify(&rs), Err(TokenError::Algorithm(_))));
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn jwks_documents_are_checked() {
        assert!(matches!(
            TokenVerifier::new(None, Some("not json"), Duration::ZERO),
            Err(KeyError::Jwks(_))
        ));
        let symmetric = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#;
        let err = TokenVerifier::new(None, Some(symmetric), Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("auth.jwt_secret") && err.contains("\"s\""),
            "{err}"
        );
        let empty = TokenVerifier::new(None, Some(r#"{"keys":[]}"#), Duration::ZERO).unwrap();
        assert!(matches!(
            empty.verify(&sign_hs256(SECRET, &claims(unix_now() + 60))),
            Err(TokenError::Algorithm(_))
        ));
    }
}
