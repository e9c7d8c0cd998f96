//! `[rtmp]`: the RTMP ingest listener (publishing from ffmpeg, OBS and hardware encoders), its
//! applications and its limits.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[rtmp]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Whether the RTMP listener runs.
    pub enabled: bool,
    /// Its address, when set (`--rtmp ADDR` or `rtmp.listen`): a node that cannot listen on
    /// it does not start. Unset, [`DEFAULT_RTMP_LISTEN`], which a node started beside another
    /// may find taken: it then runs without RTMP, with a warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The application names publishers may connect to (`rtmp://host/APP/NAME`).
    pub apps: Vec<String>,
    /// Open RTMP connections at most; past it new ones are closed at once.
    pub max_connections: usize,
    /// Seconds a new connection has for the RTMP handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds without a byte from a connection before it is closed; for a player, without
    /// video from the stream or with a write to it stuck.
    pub idle_timeout_secs: u64,
    /// The longest RTMP message accepted (a keyframe is one message), in bytes.
    pub max_message_bytes: u32,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            enabled: true,
            listen: None,
            apps: vec!["live".to_owned()],
            max_connections: 256,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 30,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Where the RTMP listener listens unless told: loopback, like HTTP; 1935 is RTMP's port.
pub const DEFAULT_RTMP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 1935);

impl RtmpConfig {
    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or(DEFAULT_RTMP_LISTEN)
    }

    /// Checks ranges serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.apps.is_empty() || self.apps.iter().any(|a| !valid_app(a)) {
            return invalid(
                "rtmp.apps",
                "at least one name of 1 to 64 of A-Z a-z 0-9 . _ ~ -",
            );
        }
        if self.max_connections == 0 {
            return invalid("rtmp.max_connections", "must be at least 1");
        }
        if !(1..=300).contains(&self.handshake_timeout_secs) {
            return invalid("rtmp.handshake_timeout_secs", "must be 1 to 300");
        }
        if !(1..=3600).contains(&self.idle_timeout_secs) {
            return invalid("rtmp.idle_timeout_secs", "must be 1 to 3600");
        }
        if !(64 * 1024..=16 * 1024 * 1024).contains(&self.max_message_bytes) {
            return invalid("rtmp.max_message_bytes", "must be 65536 to 16777216");
        }
        Ok(())
    }
}

fn valid_app(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_named() {
        for (change, key) in [
            (
                RtmpConfig {
                    apps: vec![],
                    ..Default::default()
                },
                "rtmp.apps",
            ),
            (
                RtmpConfig {
                    apps: vec!["a/b".into()],
                    ..Default::default()
                },
                "rtmp.apps",
            ),
            (
                RtmpConfig {
                    max_connections: 0,
                    ..Default::default()
                },
                "rtmp.max_connections",
            ),
            (
                RtmpConfig {
                    handshake_timeout_secs: 0,
                    ..Default::default()
                },
                "rtmp.handshake_timeout_secs",
            ),
            (
                RtmpConfig {
                    idle_timeout_secs: 0,
                    ..Default::default()
                },
                "rtmp.idle_timeout_secs",
            ),
            (
                RtmpConfig {
                    max_message_bytes: 10,
                    ..Default::default()
                },
                "rtmp.max_message_bytes",
            ),
        ] {
            match change.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(RtmpConfig::default().validate().is_ok());
    }
}
