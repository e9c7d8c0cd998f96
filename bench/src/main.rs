//! `rtcdn-bench`: publishes synthetic media to an rtcdn node over WHIP and plays it with many
//! WHEP clients, reporting delivery, loss and one-way latency (sender and receivers share this
//! process's clock).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode, AUDIO_PT, VIDEO_PT};
use rtcdn_bench::media::{read_packet, write_packet, Probe};
use tokio::sync::Mutex;

const USAGE: &str = "\
rtcdn-bench: load an rtcdn node with one WHIP publisher and many WHEP players

USAGE:
    rtcdn-bench [OPTIONS]

OPTIONS:
    --server URL        node base URL (default http://127.0.0.1:8080)
    --stream NAME       stream name (default bench)
    --players N         WHEP players (default 10)
    --seconds S         measured seconds of media (default 5)
    --video-kbps K      synthetic video bitrate, 1200-byte packets (default 2500)
    --json              print the report as JSON
";

struct Options {
    server: String,
    stream: String,
    players: usize,
    seconds: u64,
    video_kbps: u64,
    json: bool,
}

fn parse_args() -> anyhow::Result<Option<Options>> {
    let mut o = Options { server: "http://127.0.0.1:8080".into(), stream: "bench".into(), players: 10, seconds: 5, video_kbps: 2500, json: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--server" => o.server = value("--server")?,
            "--stream" => o.stream = value("--stream")?,
            "--players" => o.players = value("--players")?.parse().context("--players")?,
            "--seconds" => o.seconds = value("--seconds")?.parse().context("--seconds")?,
            "--video-kbps" => o.video_kbps = value("--video-kbps")?.parse().context("--video-kbps")?,
            "--json" => o.json = true,
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if o.video_kbps == 0 || o.seconds == 0 {
        bail!("--video-kbps and --seconds must be positive");
    }
    Ok(Some(o))
}

#[derive(Default)]
struct PlayerReport {
    received: u64,
    corrupted: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(options) = parse_args()? else {
        print!("{USAGE}");
        return Ok(());
    };
    let certificate = DtlsCertificate::generate()?;
    let timeout = Duration::from_secs(15);
    let setup_start = Instant::now();
    let mut publisher = ClientSession::connect(&options.server, Mode::Publish, &options.stream, &certificate, timeout)
        .await
        .context("WHIP publish")?;
    let mut players = Vec::new();
    for i in 0..options.players {
        let player = ClientSession::connect(&options.server, Mode::Play, &options.stream, &certificate, timeout)
            .await
            .with_context(|| format!("WHEP player {i}"))?;
        players.push(player);
    }
    let setup = setup_start.elapsed();

    let clock = Instant::now();
    let reports: Vec<Arc<Mutex<PlayerReport>>> = (0..players.len()).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (mut player, report) in players.into_iter().zip(reports.iter().cloned()) {
        tasks.push(tokio::spawn(async move {
            let mut last: Option<u64> = None;
            while let Some(packet) = player.recv_rtp(Duration::from_secs(2)).await {
                let mut r = report.lock().await;
                match read_packet(&packet) {
                    Ok((probe, _)) if probe.phase == 1 => {
                        r.received += 1;
                        if last.is_some_and(|l| probe.sequence <= l) {
                            r.out_of_order += 1;
                        }
                        last = Some(probe.sequence);
                        let now = clock.elapsed().as_nanos() as u64;
                        r.latencies_us.push(now.saturating_sub(probe.sent_at_ns) / 1000);
                    }
                    Ok(_) => {}
                    Err(_) => r.corrupted += 1,
                }
            }
        }));
    }

    // 1200-byte video packets at the requested bitrate, and 50 audio packets/s.
    let video_pps = (options.video_kbps * 1000 / 8 / 1200).max(1);
    let total_pps = video_pps + 50;
    let interval = Duration::from_nanos(1_000_000_000 / total_pps);
    let mut buf = [0u8; 1500];
    let mut sent = 0u64;
    let mut next = Instant::now();
    // A short warm-up lets every player's keys settle on the server before measuring.
    for phase in [0u32, 1] {
        let count = if phase == 0 { total_pps / 2 } else { total_pps * options.seconds };
        for i in 0..count {
            let audio = i % (total_pps / 50).max(1) == 0;
            let (pt, ssrc, len) = if audio { (AUDIO_PT, publisher.audio_ssrc, 160) } else { (VIDEO_PT, publisher.video_ssrc, 1200) };
            let probe = Probe { sequence: sent, sent_at_ns: clock.elapsed().as_nanos() as u64, phase };
            let n = write_packet(&mut buf, pt, ssrc, sent as u16, (sent as u32).wrapping_mul(90), false, probe, len);
            publisher.send_rtp(&buf[..n]).await?;
            sent += 1;
            next += interval;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
    }
    let measured = total_pps * options.seconds;
    for task in tasks {
        let _ = task.await;
    }
    let _ = publisher.close().await;

    let mut all_latencies = Vec::new();
    let (mut received, mut corrupted, mut out_of_order) = (0u64, 0u64, 0u64);
    for report in &reports {
        let r = report.lock().await;
        received += r.received;
        corrupted += r.corrupted;
        out_of_order += r.out_of_order;
        all_latencies.extend_from_slice(&r.latencies_us);
    }
    all_latencies.sort_unstable();
    let expected = measured * options.players as u64;
    let loss = if expected == 0 { 0.0 } else { 1.0 - received as f64 / expected as f64 };
    let p50 = percentile(&all_latencies, 0.5);
    let p99 = percentile(&all_latencies, 0.99);
    if options.json {
        println!(
            "{}",
            serde_json_like(&[
                ("players", options.players.to_string()),
                ("packets_sent", measured.to_string()),
                ("packets_expected", expected.to_string()),
                ("packets_received", received.to_string()),
                ("corrupted", corrupted.to_string()),
                ("out_of_order", out_of_order.to_string()),
                ("loss", format!("{loss:.6}")),
                ("latency_p50_us", p50.to_string()),
                ("latency_p99_us", p99.to_string()),
                ("setup_ms", setup.as_millis().to_string()),
            ])
        );
    } else {
        println!("players            {}", options.players);
        println!("session setup      {} ms for 1 publisher + {} players", setup.as_millis(), options.players);
        println!("packets sent       {measured} ({total_pps}/s for {} s)", options.seconds);
        println!("packets received   {received} of {expected} (loss {:.3}%)", loss * 100.0);
        println!("corrupted          {corrupted}");
        println!("out of order       {out_of_order}");
        println!("latency            p50 {p50} us, p99 {p99} us (publisher -> node -> player, one process)");
    }
    if corrupted > 0 {
        bail!("{corrupted} corrupted packets");
    }
    Ok(())
}

/// A flat JSON object of numbers (avoids a serde dependency for one line).
fn serde_json_like(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}
