//! The `rtcdn` server binary: parse arguments, start a node, run until SIGINT or SIGTERM.

use std::process::ExitCode;

use rtcdn::config::{Command, Config, USAGE};
use rtcdn::node::Node;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("rtcdn {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rtcdn: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("rtcdn: invalid config: log.level {filter:?}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let node = match Node::start(&config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("rtcdn: {e}");
            return ExitCode::from(1);
        }
    };
    println!("rtcdn listening on http://{} (open it in a browser to publish and play)", node.http_addr());
    wait_for_signal();
    tracing::info!("shutting down");
    node.stop();
    ExitCode::SUCCESS
}

fn wait_for_signal() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a signal runtime");
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}
