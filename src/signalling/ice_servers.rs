//! The `Link: <turn:…>; rel="ice-server"` headers of WHIP/WHEP answers (RFC 9725 §4.6), built
//! from `[[ice.servers]]`. A server with a `secret` gets credentials minted per session the way
//! coturn's `use-auth-secret` checks them (the "TURN REST API" draft): username
//! `<expiry unix time>:<tag>`, password base64(HMAC-SHA1(secret, username)), so coturn needs no
//! list of users and a leaked password stops working at its expiry.
//!
//! No IO: the caller passes the time and the per-session tag.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::ice::IceServerConfig;

/// The configured ICE servers, ready to be written into answers.
#[derive(Debug, Clone, Default)]
pub struct IceServers {
    servers: Vec<IceServerConfig>,
}

impl IceServers {
    /// The servers of `[[ice.servers]]` (already validated).
    pub fn new(servers: &[IceServerConfig]) -> IceServers {
        IceServers {
            servers: servers.to_vec(),
        }
    }

    /// Whether any server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// One `Link` header value per URL, credentials minted for `tag` (a session's id) at
    /// `now_unix` (seconds since the epoch).
    pub fn links(&self, now_unix: u64, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        for server in &self.servers {
            let credentials = match (&server.secret, &server.username, &server.credential) {
                (Some(secret), _, _) => {
                    let username = format!("{}:{tag}", now_unix.saturating_add(server.ttl_secs));
                    let password = rest_api_password(secret.expose().as_bytes(), &username);
                    Some((username, password))
                }
                (None, Some(username), Some(credential)) => {
                    Some((username.clone(), credential.expose().to_owned()))
                }
                _ => None,
            };
            for url in &server.urls {
                out.push(link(url, credentials.as_ref()));
            }
        }
        out
    }
}

/// coturn's TURN REST API password: base64(HMAC-SHA1(secret, username)).
pub fn rest_api_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// One `Link` header value. The URL and the credentials were checked when the config was read
/// (no `>`, `"` or `\` in them), and a minted username is digits, `:` and the tag.
fn link(url: &str, credentials: Option<&(String, String)>) -> String {
    match credentials {
        Some((username, credential)) => format!(
            "<{url}>; rel=\"ice-server\"; username=\"{username}\"; credential=\"{credential}\"; credential-type=\"password\""
        ),
        None => format!("<{url}>; rel=\"ice-server\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::Secret;

    fn server(urls: &[&str]) -> IceServerConfig {
        IceServerConfig {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            username: None,
            credential: None,
            secret: None,
            ttl_secs: 86_400,
        }
    }

    #[test]
    fn hmac_sha1_known_answer() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?") =
        // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            rest_api_password(b"Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
        // A coturn REST credential, as `turnadmin`-free clients compute it:
        // printf '1700086400:abc' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(
            rest_api_password(b"north", "1700086400:abc"),
            "rdRes6D4AdS5DA7lyYxp56skEtQ="
        );
    }

    #[test]
    fn links_carry_static_minted_or_no_credentials() {
        let stun = server(&["stun:stun.example.net"]);
        let mut fixed = server(&["turns:turn.example.net:5349?transport=tcp"]);
        fixed.username = Some("viewer".into());
        fixed.credential = Some(Secret::new("hunter2"));
        let mut minted = server(&[
            "turn:192.0.2.7:3478?transport=udp",
            "turn:192.0.2.7:3478?transport=tcp",
        ]);
        minted.secret = Some(Secret::new("north"));
        minted.ttl_secs = 86_400;
        let servers = IceServers::new(&[stun, fixed, minted]);
        let links = servers.links(1_700_000_000, "abc");
        assert_eq!(
            links,
            [
                "<stun:stun.example.net>; rel=\"ice-server\"",
                "<turns:turn.example.net:5349?transport=tcp>; rel=\"ice-server\"; username=\"viewer\"; credential=\"hunter2\"; credential-type=\"password\"",
                "<turn:192.0.2.7:3478?transport=udp>; rel=\"ice-server\"; username=\"1700086400:abc\"; credential=\"rdRes6D4AdS5DA7lyYxp56skEtQ=\"; credential-type=\"password\"",
                "<turn:192.0.2.7:3478?transport=tcp>; rel=\"ice-server\"; username=\"1700086400:abc\"; credential=\"rdRes6D4AdS5DA7lyYxp56skEtQ=\"; credential-type=\"password\"",
            ]
        );
        // Another session (tag) or time gets other credentials.
        assert_ne!(servers.links(1_700_000_000, "abd")[2], links[2]);
        assert_ne!(servers.links(1_700_000_001, "abc")[2], links[2]);
        // Every value is a valid header value.
        for link in &links {
            hyper::header::HeaderValue::from_str(link).unwrap();
        }
        assert!(IceServers::default().links(0, "x").is_empty());
    }
}
