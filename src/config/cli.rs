//! The command line: `rtcdn [OPTIONS]`, `rtcdn demo` and `rtcdn token ...` parsed into a
//! [`Command`]. A node's options are read over the config file they name (`--config` or
//! `--wcs-config`) and checked like the file's own keys.

use std::path::{Path, PathBuf};

use crate::auth::cli::{parse_token_args, MintRequest};
use crate::config::error::ConfigError;
use crate::config::wcs::load_wcs_dir;
use crate::config::Config;

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Run the node with this configuration.
    Run {
        /// The configuration: defaults, then the file (`--config` or `--wcs-config`), then flags.
        config: Box<Config>,
        /// Whether `--log` set the log level, which then wins over `RUST_LOG`.
        log_from_command_line: bool,
    },
    /// `--print-config`: print this configuration as TOML ([`Config::to_toml`], secrets
    /// redacted) and exit.
    PrintConfig(Box<Config>),
    /// Print usage and exit.
    Help,
    /// Print the version and exit.
    Version,
    /// `rtcdn demo`: run the shipped origin and edge (`config/origin.toml`, `config/edge.toml`)
    /// in one process.
    Demo,
    /// `rtcdn token`: print a client token.
    Token(MintRequest),
    /// `rtcdn token --help`.
    TokenHelp,
}

/// Usage text for `--help`.
pub const USAGE: &str = "\
rtcdn: a real-time WebRTC CDN node (WHIP/WHEP)

USAGE:
    rtcdn [OPTIONS]
    rtcdn demo             run a CDN origin (http://127.0.0.1:8080) and an edge
                           (http://127.0.0.1:8180) in one process
    rtcdn token ...        print a client token (JWT) for a node with a \"token\" policy
                           (rtcdn token --help)

OPTIONS:
    --config FILE          read a TOML config (see config/standalone.toml, origin.toml, edge.toml)
    --wcs-config DIR       read Flashphoner WCS flashphoner.properties and loadbalancing.xml from DIR
    --http ADDR            HTTP listen address (default 127.0.0.1:8080)
    --https ADDR           HTTPS/WSS listen address (default 127.0.0.1:8443; needs --tls-cert/--tls-key)
    --tls-cert FILE        PEM certificate chain for HTTPS/WSS
    --tls-key FILE         PEM private key for HTTPS/WSS
    --rtmp ADDR|off        RTMP ingest listen address (default 127.0.0.1:1935), or off
    --media-bind IP        media bind address (default 127.0.0.1)
    --announce IP          advertise this address in ICE candidates (repeatable)
    --nat-1to1 PUBLIC[/LOCAL]
                           1:1 NAT: advertise PUBLIC before the local address it maps
                           (repeatable; see media.nat_1to1)
    --udp-port-base PORT   UDP port of media thread 0 (default 31000)
    --tcp-port-base PORT   ICE-TCP port of media thread 0 (default: the UDP ports)
    --ice-tcp on|off       passive ICE-TCP beside UDP (default on)
    --media-threads N      media threads, 0 = one per core (default 0)
    --media-backend NAME   auto | io_uring | mmsg (default auto)
    --media-gso on|off     UDP GSO for a frame's packets to one player (default on)
    --log LEVEL            log filter, e.g. info, debug, rtcdn=trace (default info)
    --log-format FORMAT    text (default) or json: one JSON object a line
    --print-config         print the effective config (after the file and the options above)
                           as TOML, secrets redacted, and exit
    -h, --help             print this help
    -V, --version          print the version
";

/// Parses the command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("token") {
        args.next();
        let env_secret = std::env::var("RTCDN_JWT_SECRET").ok();
        return Ok(match parse_token_args(args, env_secret)? {
            Some(request) => Command::Token(request),
            None => Command::TokenHelp,
        });
    }
    if args.peek().map(String::as_str) == Some("demo") {
        args.next();
        return match args.next() {
            None => Ok(Command::Demo),
            Some(flag) if flag == "-h" || flag == "--help" => Ok(Command::Help),
            Some(other) => Err(ConfigError::Argument(format!(
                "demo takes no arguments, got {other:?}"
            ))),
        };
    }
    let mut config: Option<Config> = None;
    let mut config_flag: Option<&'static str> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut print_config = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--print-config" if inline.is_some() => {
                return Err(ConfigError::Argument(
                    "--print-config takes no value".into(),
                ))
            }
            "--print-config" => print_config = true,
            "--config" | "--wcs-config" | "--http" | "--https" | "--tls-cert" | "--tls-key"
            | "--media-bind" | "--announce" | "--nat-1to1" | "--udp-port-base"
            | "--media-threads" | "--tcp-port-base" | "--ice-tcp" | "--media-backend"
            | "--media-gso" | "--log" | "--log-format" | "--rtmp" => {
                let value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .ok_or_else(|| ConfigError::Argument(format!("{flag} needs a value")))?,
                };
                if flag == "--config" || flag == "--wcs-config" {
                    let this = if flag == "--config" {
                        "--config"
                    } else {
                        "--wcs-config"
                    };
                    if let Some(earlier) = config_flag {
                        return Err(ConfigError::Argument(format!(
                            "{this} cannot be used with {earlier}: give one config"
                        )));
                    }
                    config_flag = Some(this);
                    config = Some(if flag == "--config" {
                        Config::load(Path::new(&value))?
                    } else {
                        load_wcs_dir(Path::new(&value))?
                    });
                } else {
                    overrides.push((flag, value));
                }
            }
            other => {
                return Err(ConfigError::Argument(format!(
                    "unknown argument {other:?} (see --help)"
                )))
            }
        }
    }
    let log_from_command_line = overrides.iter().any(|(flag, _)| flag == "--log");
    let mut config = config.unwrap_or_default();
    for (flag, value) in overrides {
        apply_flag(&mut config, &flag, &value)?;
    }
    config.validate()?;
    if print_config {
        return Ok(Command::PrintConfig(Box::new(config)));
    }
    Ok(Command::Run {
        config: Box::new(config),
        log_from_command_line,
    })
}

/// Sets the key `flag` stands for.
fn apply_flag(config: &mut Config, flag: &str, value: &str) -> Result<(), ConfigError> {
    fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        value
            .parse()
            .map_err(|e| ConfigError::Argument(format!("{flag} {value:?}: {e}")))
    }
    match flag {
        "--http" => config.http.listen = parse(flag, value)?,
        "--https" => config.http.tls_listen = parse(flag, value)?,
        "--tls-cert" => config.http.tls_certificate = Some(PathBuf::from(value)),
        "--tls-key" => config.http.tls_private_key = Some(PathBuf::from(value)),
        "--rtmp" if value == "off" => config.rtmp.enabled = false,
        "--rtmp" => {
            config.rtmp.enabled = true;
            config.rtmp.listen = Some(parse(flag, value)?);
        }
        "--media-bind" => config.media.bind = parse(flag, value)?,
        "--announce" => config.media.announce.push(parse(flag, value)?),
        "--nat-1to1" => config.media.nat_1to1.push(parse(flag, value)?),
        "--udp-port-base" => config.media.port_base = parse(flag, value)?,
        "--media-threads" => config.media.threads = parse(flag, value)?,
        "--tcp-port-base" => config.media.tcp_port_base = Some(parse(flag, value)?),
        "--ice-tcp" => {
            config.media.tcp = match value {
                "on" => true,
                "off" => false,
                other => {
                    return Err(ConfigError::Argument(format!(
                        "--ice-tcp {other:?}: expected on or off"
                    )))
                }
            }
        }
        "--media-backend" => config.media.backend = value.to_owned(),
        "--media-gso" => {
            config.media.gso = match value {
                "on" => true,
                "off" => false,
                other => {
                    return Err(ConfigError::Argument(format!(
                        "--media-gso {other:?}: expected on or off"
                    )))
                }
            }
        }
        "--log" => config.log.level = value.to_owned(),
        "--log-format" => {
            config.log.format = match value {
                "text" => crate::config::LogFormat::Text,
                "json" => crate::config::LogFormat::Json,
                other => {
                    return Err(ConfigError::Argument(format!(
                        "--log-format {other:?}: expected text or json"
                    )))
                }
            }
        }
        _ => unreachable!("parse_args only passes known flags"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use super::*;

    fn args(list: &[&str]) -> Result<Command, ConfigError> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn no_arguments_is_the_embedded_default() {
        let Command::Run { config, .. } = args(&[]).unwrap() else {
            panic!("expected Run")
        };
        assert_eq!(
            config.http.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.media.port_base, 31000);
        assert_eq!(config.media.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn flags_override() {
        let Command::Run { config, .. } = args(&[
            "--http",
            "127.0.0.1:9000",
            "--udp-port-base=40000",
            "--media-threads",
            "3",
        ])
        .unwrap() else {
            panic!("expected Run")
        };
        assert_eq!(config.http.listen.port(), 9000);
        assert_eq!(config.media.port_base, 40000);
        assert_eq!(config.media_threads(), 3);
    }

    #[test]
    fn nat_1to1_flag_is_repeatable_and_checked() {
        let Command::Run { config, .. } = args(&[
            "--media-bind",
            "0.0.0.0",
            "--nat-1to1",
            "203.0.113.7",
            "--nat-1to1=2001:db8:ff::1/2001:db8::5",
        ])
        .unwrap() else {
            panic!("expected Run")
        };
        let shown: Vec<String> = config
            .media
            .nat_1to1
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["203.0.113.7", "2001:db8:ff::1/2001:db8::5"]);
        let Err(err) = args(&["--nat-1to1", "public"]) else {
            panic!("accepted a bad address")
        };
        assert!(err.to_string().contains("--nat-1to1"), "{err}");
    }

    #[test]
    fn rtmp_flag_sets_or_turns_off_the_listener() {
        let Command::Run { config, .. } = args(&[]).unwrap() else {
            panic!("expected Run")
        };
        assert!(config.rtmp.enabled);
        assert_eq!(config.rtmp.listen, None, "the default, which may be taken");
        assert_eq!(
            config.rtmp.listen_addr(),
            "127.0.0.1:1935".parse::<SocketAddr>().unwrap()
        );
        let Command::Run { config, .. } = args(&["--rtmp", "127.0.0.1:19350"]).unwrap() else {
            panic!("expected Run")
        };
        assert_eq!(config.rtmp.listen.map(|a| a.port()), Some(19350));
        let Command::Run { config, .. } = args(&["--rtmp=off"]).unwrap() else {
            panic!("expected Run")
        };
        assert!(!config.rtmp.enabled);
        let err = args(&["--rtmp", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("--rtmp"), "{err}");
    }

    #[test]
    fn bad_flags_are_named() {
        let err = args(&["--bogus"]).unwrap_err().to_string();
        assert!(err.contains("--bogus"), "{err}");
        let err = args(&["--udp-port-base", "abc"]).unwrap_err().to_string();
        assert!(err.contains("--udp-port-base"), "{err}");
        let err = args(&["--media-backend", "kqueue"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("media.backend"), "{err}");
        assert!(matches!(args(&["--http"]), Err(ConfigError::Argument(_))));
    }

    #[test]
    fn token_subcommand() {
        let Command::Token(request) = args(&[
            "token",
            "--secret",
            "0123456789abcdef0123456789abcdef",
            "--play",
            "*",
        ])
        .unwrap() else {
            panic!("expected Token")
        };
        assert_eq!(request.grant.play, vec!["*"]);
        assert_eq!(args(&["token", "--help"]).unwrap(), Command::TokenHelp);
    }

    #[test]
    fn demo_and_wcs_config_arguments() {
        assert_eq!(args(&["demo"]).unwrap(), Command::Demo);
        assert_eq!(args(&["demo", "--help"]).unwrap(), Command::Help);
        let err = args(&["demo", "--http", "x"]).unwrap_err().to_string();
        assert!(err.contains("demo"), "{err}");
        let err = args(&["--log", "info", "demo"]).unwrap_err().to_string();
        assert!(err.contains("demo"), "{err}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wcs-example");
        let dir = dir.to_str().unwrap();
        let Command::Run { config, .. } =
            args(&["--wcs-config", dir, "--udp-port-base", "33000"]).unwrap()
        else {
            panic!("expected Run")
        };
        assert!(config.cdn.relays());
        assert_eq!(config.media.port_base, 33000);
        let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/origin.toml");
        let err = args(&["--config", toml.to_str().unwrap(), "--wcs-config", dir])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--wcs-config") && err.contains("--config"),
            "{err}"
        );
        let err = args(&["--wcs-config", "/nonexistent-rtcdn-dir"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("flashphoner.properties"), "{err}");
    }

    #[test]
    fn a_log_flag_is_remembered() {
        for (list, from_command_line) in [
            (&["--log", "debug"][..], true),
            (&["--log=debug"][..], true),
            (&["--http", "127.0.0.1:9000"][..], false),
        ] {
            let Command::Run {
                log_from_command_line,
                ..
            } = args(list).unwrap()
            else {
                panic!("expected Run")
            };
            assert_eq!(log_from_command_line, from_command_line, "{list:?}");
        }
    }

    #[test]
    fn print_config_carries_the_effective_config() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wcs-example");
        let Command::PrintConfig(config) = args(&[
            "--http",
            "127.0.0.1:9000",
            "--print-config",
            "--wcs-config",
            dir.to_str().unwrap(),
        ])
        .unwrap() else {
            panic!("expected PrintConfig")
        };
        assert_eq!(config.http.listen.port(), 9000);
        assert!(config.cdn.relays());
        let err = args(&["--print-config=yes"]).unwrap_err().to_string();
        assert!(err.contains("--print-config"), "{err}");
        // Checked like a config that runs.
        let err = args(&["--print-config", "--media-backend", "kqueue"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("media.backend"), "{err}");
    }
}
