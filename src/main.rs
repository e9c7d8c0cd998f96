//! The `rtcdn` server binary: parse arguments, start a node, run until SIGINT or SIGTERM.

use std::process::ExitCode;

use rtcdn::config::cli::{parse_args, Command, USAGE};
use rtcdn::config::{Config, LogConfig, LogFormat};
use rtcdn::node::Node;

// Counting is a thread-local increment; it lets `/api/stats` show each media core's
// allocations, which the packet path is meant to keep at zero.
#[global_allocator]
static GLOBAL: rtcdn::alloc_count::CountingAllocator<mimalloc::MiMalloc> =
    rtcdn::alloc_count::CountingAllocator(mimalloc::MiMalloc);

fn main() -> ExitCode {
    // Logging is set up from the config, so warnings while reading it (unused WCS keys) go to
    // stderr through a scoped subscriber.
    let early = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let parsed = tracing::subscriber::with_default(early, || parse_args(std::env::args().skip(1)));
    match parsed {
        Ok(Command::Run {
            config,
            log_from_command_line,
        }) => run(&config, log_from_command_line),
        Ok(Command::Demo) => demo(),
        Ok(Command::PrintConfig(config)) => print(&config.to_toml()),
        Ok(Command::Token(request)) => print(&format!("{}\n", request.mint())),
        Ok(Command::TokenHelp) => print(rtcdn::auth::cli::TOKEN_USAGE),
        Ok(Command::Help) => print(USAGE),
        Ok(Command::Version) => print(&format!(
            "rtcdn {} ({})\n",
            env!("CARGO_PKG_VERSION"),
            rtcdn::GIT_REVISION
        )),
        Err(e) => {
            eprintln!("rtcdn: {e}");
            ExitCode::from(2)
        }
    }
}

/// A command that only prints: `text` on stdout, exit code 0.
fn print(text: &str) -> ExitCode {
    print!("{text}");
    ExitCode::SUCCESS
}

/// Runs one node until SIGINT or SIGTERM (in a cluster, SIGTERM drains it first).
fn run(config: &Config, log_from_command_line: bool) -> ExitCode {
    if let Err(code) = init_logging(&config.log, log_from_command_line) {
        return code;
    }
    let node = match Node::start(config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("rtcdn: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "rtcdn listening on http://{} (open it in a browser to publish and play)",
        node.http_addr()
    );
    wait_for_stop(&node, config.cluster.is_some());
    tracing::info!("shutting down");
    node.stop();
    ExitCode::SUCCESS
}

/// Waits until the node is to stop: at once on SIGINT, and on SIGTERM unless the node is in a
/// cluster; after a drain (see `rtcdn::signalling::drain`) on SIGTERM in a cluster, where other
/// nodes take the viewers, or when `POST /rest-api/cdn/drain` asked for one. A signal during
/// the drain ends it at once.
fn wait_for_stop(node: &Node, drain_on_sigterm: bool) {
    use rtcdn::node::DrainEnd;
    with_signals(|mut term| async move {
        let drain = tokio::select! {
            _ = tokio::signal::ctrl_c() => false,
            _ = term.recv() => drain_on_sigterm,
            () = node.drain_started() => true,
        };
        if !drain {
            return;
        }
        node.drain();
        let drain_secs = node.drain_time().as_secs();
        tokio::select! {
            end = node.drained() => match end {
                DrainEnd::Drained => tracing::info!("drained: no session left"),
                DrainEnd::TimeOver { sessions } => {
                    tracing::info!(sessions, drain_secs, "drain time over: ending the sessions left");
                }
            },
            _ = tokio::signal::ctrl_c() => tracing::info!("stopping during the drain (SIGINT)"),
            _ = term.recv() => tracing::info!("stopping during the drain (SIGTERM)"),
        }
    });
}

/// Sets up logging from `log`'s level, or RUST_LOG unless the level came from `--log`, in its
/// format; an invalid filter is exit code 2.
fn init_logging(log: &LogConfig, from_command_line: bool) -> Result<(), ExitCode> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !from_command_line => env,
        _ => log.level.clone(),
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("rtcdn: invalid config: log.level {filter:?}: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match log.format {
        // Colour only where a person reads it: escapes in a file or a journal are noise.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// `rtcdn demo`: the shipped origin and edge configs, both nodes in this process.
fn demo() -> ExitCode {
    let (origin_config, edge_config) = match rtcdn::config::demo_configs() {
        Ok(configs) => configs,
        Err(e) => {
            eprintln!("rtcdn: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(code) = init_logging(&origin_config.log, false) {
        return code;
    }
    // The edge first, so that the origin's relays find it listening.
    let edge = match Node::start(&edge_config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("rtcdn: edge: {e}");
            return ExitCode::from(1);
        }
    };
    let origin = match Node::start(&origin_config) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("rtcdn: origin: {e}");
            edge.stop();
            return ExitCode::from(1);
        }
    };
    println!("rtcdn demo: a CDN origin and one edge in this process");
    println!("  publish on the origin:  http://{}/", origin.http_addr());
    println!("  play on the edge:       http://{}/", edge.http_addr());
    println!("  origin's balancer:      http://{}/lb", origin.http_addr());
    wait_for_signal();
    tracing::info!("shutting down");
    origin.stop();
    edge.stop();
    ExitCode::SUCCESS
}

fn wait_for_signal() {
    with_signals(|mut term| async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}

/// Runs `body` on a small runtime of its own, given the SIGTERM stream (SIGINT is `ctrl_c`).
fn with_signals<F: std::future::Future>(
    body: impl FnOnce(tokio::signal::unix::Signal) -> F,
) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a signal runtime");
    runtime.block_on(async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        body(term).await
    })
}
