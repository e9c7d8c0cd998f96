//! How nodes of one CDN recognise each other: the origin's relay proves it knows `cdn.secret`
//! with a short-lived HS256 token in its `connection` message (`custom.relayToken`), never the
//! secret itself. An edge takes publishes only from relays that prove it (unless
//! `cdn.edge_accepts_publish`).

use std::time::Duration;

use super::jwt::{self, Claims, TokenError, TokenVerifier};

/// The audience of relay tokens, so a relay token is never taken as a client's and a client's
/// never as a relay's.
pub const AUDIENCE: &str = "rtcdn-relay";
/// How long a relay token is good for: it is minted just before it is sent, so this only has to
/// cover the connection set-up and clock differences.
const LIFETIME: Duration = Duration::from_secs(60);

/// Mints and checks relay tokens with a CDN's shared secret.
pub struct RelayAuth {
    secret: String,
    verifier: TokenVerifier,
}

impl RelayAuth {
    /// For `cdn.secret`.
    pub fn new(secret: &str) -> RelayAuth {
        let verifier = TokenVerifier::new(Some(secret), None, Duration::from_secs(5))
            .expect("an HMAC secret alone is always a valid key set")
            .for_audience(AUDIENCE);
        RelayAuth {
            secret: secret.to_owned(),
            verifier,
        }
    }

    /// A fresh token for one relay connection.
    pub fn mint(&self, node: &str) -> String {
        let now = jwt::unix_now();
        jwt::sign_hs256(
            &self.secret,
            &Claims {
                exp: now + LIFETIME.as_secs(),
                nbf: None,
                iat: Some(now),
                sub: Some(node.to_owned()),
                aud: Some(AUDIENCE.to_owned()),
                rtcdn: None,
            },
        )
    }

    /// Whether `token` was minted with the same secret and is current.
    pub fn verify(&self, token: &str) -> Result<(), TokenError> {
        self.verifier.verify(token).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_tokens_need_the_same_secret_and_audience() {
        let a = RelayAuth::new("0123456789abcdef0123456789abcdef");
        let b = RelayAuth::new("fedcba9876543210fedcba9876543210");
        let token = a.mint("origin");
        assert_eq!(a.verify(&token), Ok(()));
        assert_eq!(b.verify(&token), Err(TokenError::BadSignature));
        // A client token signed with the same secret is no relay token.
        let client = jwt::mint(
            "0123456789abcdef0123456789abcdef",
            Default::default(),
            Duration::from_secs(60),
            None,
        );
        assert!(matches!(
            a.verify(&client),
            Err(TokenError::Malformed(m)) if m.contains("aud")
        ));
    }
}
