//! `rtcdn token`: mints a client token, so trying a protected node needs no other tool.

use std::path::Path;
use std::time::Duration;

use super::config::{Secret, MIN_SECRET_LEN};
use super::grant::Grant;
use crate::config::{Config, ConfigError};

/// Usage of `rtcdn token`.
pub const TOKEN_USAGE: &str = "\
rtcdn token: print a JSON Web Token (HS256) for clients of a node with a \"token\" policy

USAGE:
    rtcdn token (--secret S | --config FILE) [--publish PATTERN]... [--play PATTERN]...
                [--ttl DURATION] [--sub NAME]

OPTIONS:
    --secret S        the node's auth.jwt_secret (or RTCDN_JWT_SECRET in the environment)
    --config FILE     read auth.jwt_secret from the node's config file
    --publish PATTERN a stream name it may publish: NAME, PREFIX* or *; repeatable or a,b
    --play PATTERN    a stream name it may play, likewise
    --ttl DURATION    how long it is valid: 90s, 30m, 12h, 7d (default 1h)
    --sub NAME        its subject, shown in the node's log
";

/// What `rtcdn token` was asked to mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// The signing secret.
    pub secret: Secret,
    /// What the token allows.
    pub grant: Grant,
    /// How long it is valid.
    pub ttl: Duration,
    /// Its `sub`.
    pub subject: Option<String>,
}

impl MintRequest {
    /// The token.
    pub fn mint(&self) -> String {
        super::jwt::mint(
            self.secret.expose(),
            self.grant.clone(),
            self.ttl,
            self.subject.clone(),
        )
    }
}

/// Parses `90s`, `30m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(unit_secs)
        .filter(|&secs| secs > 0)
        .map(Duration::from_secs)
}

/// Parses the arguments after `token`; `env_secret` is `RTCDN_JWT_SECRET`.
pub fn parse_token_args(
    args: impl IntoIterator<Item = String>,
    env_secret: Option<String>,
) -> Result<Option<MintRequest>, ConfigError> {
    let argument = |m: String| ConfigError::Argument(format!("token: {m}"));
    let mut secret: Option<Secret> = None;
    let mut grant = Grant::default();
    let mut ttl = Duration::from_secs(3600);
    let mut subject = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(argument(format!("{flag} needs a value"))),
        };
        match flag.as_str() {
            "--secret" => secret = Some(Secret::new(value)),
            "--config" => {
                let config = Config::load(Path::new(&value))?;
                secret = Some(
                    config
                        .auth
                        .jwt_secret
                        .ok_or_else(|| argument(format!("{value} has no auth.jwt_secret")))?,
                );
            }
            "--publish" | "--play" => {
                let list = if flag == "--publish" {
                    &mut grant.publish
                } else {
                    &mut grant.play
                };
                list.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                );
            }
            "--ttl" => {
                ttl = parse_duration(&value).ok_or_else(|| {
                    argument(format!("--ttl {value:?}: use e.g. 90s, 30m, 12h, 7d"))
                })?
            }
            "--sub" => subject = Some(value),
            other => {
                return Err(argument(format!(
                    "unknown argument {other:?} (see rtcdn token --help)"
                )))
            }
        }
    }
    let secret = secret
        .or_else(|| env_secret.map(Secret::new))
        .ok_or_else(|| argument("give --secret, --config or RTCDN_JWT_SECRET".into()))?;
    if secret.expose().len() < MIN_SECRET_LEN {
        return Err(argument(format!(
            "the secret must have at least {MIN_SECRET_LEN} characters, as auth.jwt_secret"
        )));
    }
    if grant.publish.is_empty() && grant.play.is_empty() {
        return Err(argument("grant something: --publish and/or --play".into()));
    }
    Ok(Some(MintRequest {
        secret,
        grant,
        ttl,
        subject,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenVerifier;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Result<Option<MintRequest>, ConfigError> {
        parse_token_args(args.iter().map(|s| s.to_string()), None)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604800)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        for bad in ["", "h", "0s", "1w", "-1h", "1.5h", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn minted_tokens_carry_what_was_asked() {
        let request = parse(&[
            "--secret",
            SECRET,
            "--publish",
            "cam*,studio",
            "--play=*",
            "--ttl",
            "2h",
            "--sub",
            "alice",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(request.grant.publish, vec!["cam*", "studio"]);
        let verifier = TokenVerifier::new(Some(SECRET), None, Duration::ZERO).unwrap();
        let claims = verifier.verify(&request.mint()).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("alice"));
        assert_eq!(claims.rtcdn.unwrap().play, vec!["*"]);
        assert!(claims.exp >= crate::auth::jwt::unix_now() + 7190);
    }

    #[test]
    fn mistakes_are_named() {
        for (args, fragment) in [
            (&["--publish", "a"][..], "--secret"),
            (&["--secret", "short", "--play", "a"][..], "at least 32"),
            (&["--secret", SECRET][..], "grant something"),
            (
                &["--secret", SECRET, "--play", "a", "--ttl", "soon"][..],
                "--ttl",
            ),
            (&["--secret", SECRET, "--bogus", "x"][..], "--bogus"),
            (&["--secret"][..], "needs a value"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(fragment), "{args:?} → {err}");
        }
        assert_eq!(parse(&["--help"]).unwrap(), None);
        let from_env =
            parse_token_args(["--play".to_string(), "x".to_string()], Some(SECRET.into()));
        assert!(from_env.unwrap().is_some());
    }
}
