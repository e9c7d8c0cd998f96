//! `rtcdn-bench`: publishes synthetic media to an rtcdn node (or a CDN origin) and plays it
//! with many clients, reporting the session ramp, delivery, loss, one-way latency and server CPU
//! per forwarded packet; `rtcdn-bench limit` measures this machine's raw forwarding limit.

use rtcdn_bench::cli::{self, Command};
use rtcdn_bench::{limit, run};

fn main() -> anyhow::Result<()> {
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("rtcdn-bench: {e:#}");
            std::process::exit(2);
        }
    };
    match command {
        Command::Help => print!("{}", cli::USAGE),
        Command::Limit {
            options,
            repeat,
            json,
        } => {
            let (runs, median) = limit::measure_repeated(&options, repeat)?;
            if json {
                let value = serde_json::json!({
                    "command": "limit",
                    "runs": runs.iter().map(limit::LimitReport::to_json).collect::<Vec<_>>(),
                    "median": median.to_json(),
                });
                println!("{value}");
            } else {
                for (i, r) in runs.iter().enumerate() {
                    println!("run {}: {}", i + 1, limit::describe(r));
                }
                if runs.len() > 1 {
                    println!("median: {}", limit::describe(&median));
                }
            }
        }
        Command::Run {
            options,
            repeat,
            json,
            strict,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let (reports, median) = runtime.block_on(run::run_repeated(&options, repeat))?;
            if json {
                let value = serde_json::json!({
                    "command": "run",
                    "runs": reports.iter().map(run::RunReport::to_json).collect::<Vec<_>>(),
                    "median": median,
                });
                println!("{value}");
            } else {
                for (i, r) in reports.iter().enumerate() {
                    if reports.len() > 1 {
                        println!("--- run {} ---", i + 1);
                    }
                    print!("{}", run::describe(r));
                }
                if reports.len() > 1 {
                    println!("--- median of {} runs ---", reports.len());
                    println!("{}", serde_json::to_string_pretty(&median)?);
                }
            }
            if strict && !reports.iter().all(run::RunReport::clean) {
                eprintln!(
                    "rtcdn-bench: --strict: some players missed packets, got them damaged, or \
                     (with --player-loss) lost packets that were never repaired"
                );
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
