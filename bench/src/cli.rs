//! Command-line parsing for `rtcdn-bench`.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::limit::LimitOptions;
use crate::link::Transport;
use crate::run::{Publish, RunOptions, Signalling};

/// Usage text.
pub const USAGE: &str = "\
rtcdn-bench: load generator and baseline for rtcdn

USAGE:
    rtcdn-bench [run] [OPTIONS]     publish N streams, play each with M players, report
    rtcdn-bench limit [OPTIONS]     this machine's raw forwarding limit on one core

RUN OPTIONS:
    --server URL            node (or CDN origin) base URL (default http://127.0.0.1:8080)
    --signalling whip|ws    WHIP/WHEP, or the Flashphoner WebSocket protocol (default whip)
    --ws-url URL            WebSocket URL for --signalling ws (default ws://<server host:port>/)
    --lb                    CDN: each player asks GET <server>/lb for an edge and plays there
    --streams N             published streams (default 1)
    --players M             players per stream (default 10)
    --stream NAME           stream name prefix; streams are NAME-0, NAME-1, ... (default bench)
    --seconds S             measured seconds (default 5)
    --video-kbps K          video bitrate (default 2500)
    --fps F                 video frames per second (default 30)
    --keyframe-interval S   seconds between keyframe bursts, 0 for none (default 2)
    --keyframe-factor X     keyframe size / delta frame size (default 8)
    --packet-size B         video packet size, RTP header included (default 1200)
    --audio-pps N           Opus-sized (160 B) audio packets per second (default 50)
    --concurrency C         session setups in flight during the ramp (default 16)
    --rate R                session setups started per second, 0 = unpaced (default 0)
    --ramp-delay S          start the players S seconds after the publishers (default 0); a
                            keyframe interval lets them start on the node's cached keyframe
    --setup-timeout S       per session, retries included (default 15)
    --warmup-timeout S      for every player to receive its first packet (default 15)
    --server-pid PID[,PID]  node process(es): report server CPU-ns per forwarded packet
    --stats-server URL[,URL]  more nodes (a CDN's edges) whose packet residence to report;
                            the --server's is always reported
    --player-loss P         each player drops P% of its video datagrams at random on arrival
                            (before SRTP) and asks for them again with NACKs; the report adds
                            lost / NACKed / repaired / unrepaired (default 0: no loss, no NACKs)
    --transport udp|tcp     how publishers and players reach the node's media ports: UDP, or
                            ICE-TCP to its passive TCP candidates (default udp); the node
                            keeps media.tcp_max_connections_per_ip (64) from one address:
                            set it to 0 there for more sessions from this host
    --rtp-publish HOST:PORT publish as plain RTP instead: stream i's video to PORT+4i and its
                            audio to PORT+4i+2 (a peer's RTP input, e.g. Janus's streaming
                            plugin); players still play over --signalling from --server
    --play-only             publish nothing: play streams something else publishes; packets
                            that arrive within the window count as measured, loss is not known
    --transport-cc          players offer transport-cc: the node numbers every packet it sends
                            them (they send no feedback), to measure what that costs
    --baseline              measure the raw limit first (fan-out = --players), quote the ratio
    --repeat N              run N times, report each and the medians (default 1)
    --json                  print the report as JSON on stdout
    --quiet                 no live progress on stderr
    --strict                exit with code 1 unless every player got every packet intact
                            (with --player-loss: repaired ones count, and every lost packet
                            must have been repaired)

LIMIT OPTIONS:
    --fanout M              destinations per ingress packet (default 100)
    --seconds S             measured seconds per run (default 3)
    --packet-size B         ingress packet size (default 1200)
    --batch N               packets per sendmmsg (default 32)
    --core N                pin the forwarder to core N, or 'none' (default 0)
    --crypto gcm|none       seal each copy with AES-128-GCM, or copy only (default gcm)
    --gso                   send each destination's copies of a frame as one UDP GSO send
                            (UDP_SEGMENT), as rtcdn does with media.gso
    --frame-packets N       packets per frame, the last one marked (default 8)
    --ingress-pps N         send the ingress at N packets/s, a frame at a time, as a stream
                            does (default: as fast as the forwarder takes it)
    --repeat N              runs; the median is reported (default 1)
    --json                  print the report as JSON on stdout
";

/// A parsed command line.
#[derive(Debug, Clone)]
pub enum Command {
    /// Print the usage.
    Help,
    /// The load run.
    Run {
        options: Box<RunOptions>,
        repeat: usize,
        json: bool,
        strict: bool,
    },
    /// The raw limit.
    Limit {
        options: LimitOptions,
        repeat: usize,
        json: bool,
    },
}

/// The number option `name` was given; its range is the caller's to check.
fn number(text: &str, name: &str) -> anyhow::Result<f64> {
    text.parse()
        .with_context(|| format!("{name}: not a number: {text:?}"))
}

fn seconds(text: &str, name: &str) -> anyhow::Result<f64> {
    let s = number(text, name)?;
    if !(s.is_finite() && s > 0.0) {
        bail!("{name} must be positive");
    }
    Ok(s)
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Command> {
    let mut args: Vec<String> = args.into_iter().collect();
    let limit = match args.first().map(String::as_str) {
        Some("limit") => {
            args.remove(0);
            true
        }
        Some("run") => {
            args.remove(0);
            false
        }
        _ => false,
    };
    let mut run = RunOptions {
        progress: true,
        ..RunOptions::default()
    };
    let mut lim = LimitOptions::default();
    let (mut repeat, mut json, mut strict) = (1usize, false, false);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().with_context(|| format!("{name} needs a value")),
            }
        };
        let int = |v: String, n: &str| -> anyhow::Result<usize> {
            v.parse()
                .with_context(|| format!("{n}: not a whole number: {v:?}"))
        };
        match (limit, name.as_str()) {
            (_, "-h" | "--help") => return Ok(Command::Help),
            (_, "--json") => json = true,
            (_, "--repeat") => repeat = int(value()?, "--repeat")?.max(1),
            (_, "--seconds") => {
                let s = seconds(&value()?, "--seconds")?;
                run.seconds = s;
                lim.seconds = s;
            }
            (_, "--packet-size") => {
                let b = int(value()?, "--packet-size")?;
                if !(64..=1400).contains(&b) {
                    bail!("--packet-size must be 64..=1400");
                }
                run.shape.video_packet = b;
                lim.packet_size = b;
            }
            (false, "--server") => run.server = value()?,
            (false, "--signalling") => {
                run.signalling = match value()?.as_str() {
                    "whip" | "whep" | "http" => Signalling::Whip,
                    "ws" | "websocket" | "flashphoner" => Signalling::Ws,
                    other => bail!("--signalling: {other:?} is not whip or ws"),
                }
            }
            (false, "--ws-url") => run.ws_url = Some(value()?),
            (false, "--lb") => run.lb = true,
            (false, "--streams") => run.streams = int(value()?, "--streams")?,
            (false, "--players") => run.players = int(value()?, "--players")?,
            (false, "--stream") => run.stream = value()?,
            (false, "--video-kbps") => run.shape.video_kbps = int(value()?, "--video-kbps")? as u64,
            (false, "--fps") => run.shape.fps = int(value()?, "--fps")?.max(1) as u32,
            (false, "--keyframe-interval") => {
                run.shape.keyframe_interval_s = int(value()?, "--keyframe-interval")? as u32
            }
            (false, "--keyframe-factor") => {
                run.shape.keyframe_factor = int(value()?, "--keyframe-factor")?.max(1) as u32
            }
            (false, "--audio-pps") => run.shape.audio_pps = int(value()?, "--audio-pps")? as u32,
            (false, "--concurrency") => run.concurrency = int(value()?, "--concurrency")?.max(1),
            (false, "--rate") => run.rate = value()?.parse().context("--rate")?,
            (false, "--setup-timeout") => {
                run.setup_timeout = Duration::from_secs_f64(seconds(&value()?, "--setup-timeout")?)
            }
            (false, "--ramp-delay") => {
                let s = number(&value()?, "--ramp-delay")?;
                if !(s.is_finite() && s >= 0.0) {
                    bail!("--ramp-delay must be 0 or more");
                }
                run.ramp_delay = Duration::from_secs_f64(s);
            }
            (false, "--player-loss") => {
                let p = number(&value()?, "--player-loss")?;
                if !(0.0..100.0).contains(&p) {
                    bail!("--player-loss is a percentage, 0 or more and below 100");
                }
                run.player_loss_percent = p;
            }
            (false, "--transport-cc") => run.transport_cc = true,
            (false, "--rtp-publish") => {
                let v = value()?;
                let addr = v.parse().with_context(|| {
                    format!("--rtp-publish: not an address like 10.0.0.1:5000: {v:?}")
                })?;
                run.publish = Publish::Rtp(addr);
            }
            (false, "--play-only") => run.publish = Publish::Elsewhere,
            (false, "--transport") => {
                run.transport = match value()?.as_str() {
                    "udp" => Transport::Udp,
                    "tcp" | "ice-tcp" => Transport::Tcp,
                    other => bail!("--transport: {other:?} is not udp or tcp"),
                }
            }
            (false, "--warmup-timeout") => {
                run.warmup_timeout =
                    Duration::from_secs_f64(seconds(&value()?, "--warmup-timeout")?)
            }
            (false, "--server-pid") => {
                for pid in value()?.split(',').filter(|p| !p.is_empty()) {
                    let pid: u32 = pid
                        .trim()
                        .parse()
                        .with_context(|| format!("--server-pid: {pid:?}"))?;
                    if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
                        bail!("--server-pid: no process {pid}");
                    }
                    run.server_pids.push(pid);
                }
            }
            (false, "--stats-server") => {
                for url in value()?.split(',').filter(|u| !u.is_empty()) {
                    if !url.starts_with("http://") {
                        bail!("--stats-server: not an http:// URL: {url:?}");
                    }
                    run.stats_servers.push(url.trim_end_matches('/').to_owned());
                }
            }
            (false, "--baseline") => run.baseline = true,
            (false, "--quiet") => run.progress = false,
            (false, "--strict") => strict = true,
            (true, "--fanout") => lim.fanout = int(value()?, "--fanout")?,
            (true, "--batch") => lim.batch = int(value()?, "--batch")?,
            (true, "--gso") => lim.gso = true,
            (true, "--frame-packets") => lim.frame_packets = int(value()?, "--frame-packets")?,
            (true, "--ingress-pps") => {
                let pps = number(&value()?, "--ingress-pps")?;
                if !(pps.is_finite() && pps >= 1.0) {
                    bail!("--ingress-pps must be at least 1");
                }
                lim.ingress_pps = Some(pps);
            }
            (true, "--core") => {
                let v = value()?;
                lim.core = if v == "none" {
                    None
                } else {
                    Some(int(v, "--core")?)
                };
            }
            (true, "--crypto") => {
                lim.crypto = match value()?.as_str() {
                    "gcm" | "aes-128-gcm" => true,
                    "none" => false,
                    other => bail!("--crypto: {other:?} is not gcm or none"),
                }
            }
            _ => bail!(
                "unknown argument {arg:?} for {} (see --help)",
                if limit { "limit" } else { "run" }
            ),
        }
    }
    if limit {
        if lim.fanout == 0 || lim.batch == 0 || lim.frame_packets == 0 {
            bail!("--fanout, --batch and --frame-packets must be positive");
        }
        return Ok(Command::Limit {
            options: lim,
            repeat,
            json,
        });
    }
    if run.streams == 0 || run.players == 0 {
        bail!("--streams and --players must be positive");
    }
    if run.shape.video_kbps == 0 && run.shape.audio_pps == 0 {
        bail!("nothing to send: --video-kbps and --audio-pps are both 0");
    }
    if json {
        // Progress goes to stderr, so JSON on stdout stays clean; keep it unless --quiet.
    }
    Ok(Command::Run {
        options: Box::new(run),
        repeat,
        json,
        strict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> anyhow::Result<Command> {
        parse(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn commands_parse() {
        let Command::Run { options, repeat, json, strict } =
            parse_str("--players 20 --streams=2 --signalling ws --lb --server-pid 1 --seconds 2.5 --repeat 3 --json --strict").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                options.players,
                options.streams,
                options.signalling,
                options.lb
            ),
            (20, 2, Signalling::Ws, true)
        );
        assert_eq!(
            (
                options.server_pids.clone(),
                options.seconds,
                repeat,
                json,
                strict
            ),
            (vec![1], 2.5, 3, true, true)
        );
        assert_eq!(options.publish, Publish::Signalled);
        let Command::Run { options, .. } = parse_str("--rtp-publish 10.0.0.1:5000").unwrap() else {
            panic!()
        };
        assert_eq!(
            options.publish,
            Publish::Rtp("10.0.0.1:5000".parse().unwrap())
        );
        let Command::Run { options, .. } = parse_str("--play-only").unwrap() else {
            panic!()
        };
        assert_eq!(options.publish, Publish::Elsewhere);
        assert!(parse_str("--rtp-publish 5000").is_err());
        let Command::Limit {
            options, repeat, ..
        } = parse_str("limit --fanout 50 --core none --crypto none --repeat 3").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (options.fanout, options.core, options.crypto, repeat),
            (50, None, false, 3)
        );
        assert!(!options.gso);
        let Command::Limit { options, .. } = parse_str("limit --gso --frame-packets 12").unwrap()
        else {
            panic!()
        };
        assert_eq!((options.gso, options.frame_packets), (true, 12));
        assert!(parse_str("limit --frame-packets 0").is_err());
        let Command::Limit { options, .. } = parse_str("limit --ingress-pps 305").unwrap() else {
            panic!("limit")
        };
        assert_eq!(options.ingress_pps, Some(305.0));
        assert_eq!(
            parse_str("limit")
                .map(|c| match c {
                    Command::Limit { options, .. } => options.ingress_pps,
                    _ => Some(0.0),
                })
                .unwrap(),
            None
        );
        for bad in ["0", "-5", "nan", "x"] {
            assert!(
                parse_str(&format!("limit --ingress-pps {bad}")).is_err(),
                "{bad}"
            );
        }
        assert!(matches!(parse_str("run --help").unwrap(), Command::Help));
        let Command::Run { options, .. } = parse_str("--transport tcp --transport-cc").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (options.transport, options.transport_cc),
            (Transport::Tcp, true)
        );
        assert!(parse_str("--transport sctp").is_err());
        assert!(
            parse_str("--fanout 3").is_err(),
            "a limit flag is refused for run"
        );
        assert!(parse_str("--players").is_err());
        assert!(parse_str("--signalling sip").is_err());
        assert!(parse_str("--seconds 0").is_err());
        let Command::Run { options, .. } =
            parse_str("--stats-server http://127.0.0.1:1/,http://127.0.0.1:2").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            options.stats_servers,
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert!(parse_str("--stats-server 127.0.0.1:1").is_err());
        let Command::Run { options, .. } = parse_str("--player-loss 2.5 --ramp-delay=2").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (options.player_loss_percent, options.ramp_delay),
            (2.5, Duration::from_secs(2))
        );
        for bad in ["--player-loss 100", "--player-loss -1", "--player-loss x"] {
            assert!(parse_str(bad).is_err(), "{bad}");
        }
        assert!(parse_str("--ramp-delay -1").is_err());
    }
}
