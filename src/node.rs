//! Starting and stopping a node: media cores, the signalling thread and its runtime. `main.rs`
//! and in-process tests both start nodes through [`Node::start`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

use crate::auth::{Authorizer, Policy};
use crate::cdn::relay::{self, RelayHost, RelaySetup};
use crate::cluster::lease::NodeAddresses;
use crate::cluster::Cluster;
use crate::config::addresses::{host_candidates, loopback_only_warning};
use crate::config::cdn::CdnRole;
use crate::config::Config;
use crate::control::{CoreCommand, CoreId};
use crate::dtls::DtlsCertificate;
use crate::reactor::core::{self, CoreSetup, CoreStats};
use crate::reactor::io::{interface_addresses, BackendChoice, TcpLimits, UdpIo};
use crate::reactor::mesh;
use crate::session::SessionTimeouts;
use crate::signalling::drain::DEFAULT_DRAIN;
use crate::signalling::{self, CoreHandle, Signalling};

/// A consent timeout below this is accepted but warned about.
const MIN_SAFE_CONSENT_TIMEOUT_SECS: u64 = 10;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A media socket could not be bound.
    #[error("cannot bind media socket {addr}: {source}")]
    MediaBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The HTTP listener could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The RTMP listener could not be bound on the address it was given.
    #[error("cannot listen for RTMP on {addr}: {source} (set another with --rtmp ADDR or rtmp.listen, or turn it off with --rtmp off)")]
    RtmpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The HTTPS certificate or key could not be read.
    #[error("TLS certificate for HTTPS/WSS: {0}")]
    Tls(String),
    /// The DTLS certificate could not be made or read.
    #[error("DTLS certificate: {0}")]
    Certificate(String),
    /// Threads or the runtime could not start.
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
    /// No address to advertise.
    #[error("no address to advertise in ICE candidates; set media.announce")]
    NoCandidates,
    /// The configuration breaks a rule (callers that build a `Config` in code skip the checks
    /// that reading a file makes).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The `[auth]` keys could not be loaded.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSetupError),
    /// The cluster's Redis client could not be made (`cluster.redis_url`).
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A running node.
pub struct Node {
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    rtmp_addr: Option<SocketAddr>,
    media_addrs: Vec<SocketAddr>,
    cores: Vec<CoreHandle>,
    core_threads: Vec<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    state: Arc<Signalling>,
    /// How long a drain lasts at most (`cluster.drain_secs`, else [`DEFAULT_DRAIN`]).
    drain_time: Duration,
}

/// How a node's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Its last session ended.
    Drained,
    /// The drain time was over with these sessions left.
    TimeOver { sessions: usize },
}

/// How often a draining node looks whether its sessions have ended.
const DRAIN_POLL: Duration = Duration::from_millis(250);

impl Node {
    /// Starts media cores and signalling as `config` says. Returns once every socket is bound.
    pub fn start(config: &Config) -> Result<Node, StartError> {
        config.validate()?;
        // Bound with std so that starting a node works inside another runtime (tests, the CDN
        // demo); first, because REST hooks name the node by this address.
        let http_bind = |source| StartError::HttpBind {
            addr: config.http.listen,
            source,
        };
        let http_listener = std::net::TcpListener::bind(config.http.listen).map_err(http_bind)?;
        http_listener.set_nonblocking(true).map_err(http_bind)?;
        let http_addr = http_listener.local_addr().map_err(StartError::Runtime)?;
        // TLS files and the HTTPS port are checked before any media socket or thread exists, so
        // a bad path leaves nothing bound behind it.
        let tls = match (&config.http.tls_certificate, &config.http.tls_private_key) {
            (Some(cert), Some(key)) => {
                let acceptor = tls_acceptor(cert, key)?;
                let tls_bind = |source| StartError::HttpBind {
                    addr: config.http.tls_listen,
                    source,
                };
                let listener =
                    std::net::TcpListener::bind(config.http.tls_listen).map_err(tls_bind)?;
                listener.set_nonblocking(true).map_err(tls_bind)?;
                Some((acceptor, listener))
            }
            _ => None,
        };
        let rtmp_listener = bind_rtmp(config)?;
        let authorizer = Authorizer::from_config(config, &http_addr.to_string())?;
        warn_about_open_access(config);
        let certificate = match (&config.dtls.certificate, &config.dtls.private_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p)
                        .map_err(|e| StartError::Certificate(format!("{}: {e}", p.display())))
                };
                DtlsCertificate::from_pem(&read(cert)?, &read(key)?)
                    .map_err(|e| StartError::Certificate(e.to_string()))?
            }
            _ => DtlsCertificate::generate().map_err(|e| StartError::Certificate(e.to_string()))?,
        };
        // Peer-driven tasks panic quietly into a counter instead of printing per datagram.
        crate::panic_guard::install();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(crate::panic_guard::SIGNAL_THREAD)
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let backend = match config.media.backend.as_str() {
            "io_uring" => BackendChoice::IoUring,
            "mmsg" => BackendChoice::Mmsg,
            _ => BackendChoice::Auto,
        };
        let announce = announced_addresses(config)?;
        let threads = config.media_threads();
        raise_fd_limit(config, threads);
        let mut sockets = Vec::with_capacity(threads);
        for i in 0..threads {
            let port = if config.media.port_base == 0 {
                0
            } else {
                config.media.port_base + i as u16
            };
            let addr = SocketAddr::new(config.media.bind, port);
            let mut io = UdpIo::bind(addr, backend)
                .map_err(|source| StartError::MediaBind { addr, source })?;
            io.set_gso(config.media.gso);
            if config.media.tcp {
                let tcp_addr = SocketAddr::new(config.media.bind, config.media.tcp_port(i));
                let limits = TcpLimits {
                    max_connections: config.media.tcp_max_connections,
                    max_per_ip: config.media.tcp_max_connections_per_ip,
                    ..TcpLimits::default()
                };
                io.listen_tcp(tcp_addr, limits)
                    .map_err(|source| StartError::MediaBind {
                        addr: tcp_addr,
                        source,
                    })?;
            }
            sockets.push(io);
        }
        let media_addrs: Vec<SocketAddr> = sockets.iter().map(|io| io.local_addr()).collect();
        let tcp_ports: Vec<Option<u16>> = sockets
            .iter()
            .map(|io| io.tcp_addr().map(|a| a.port()))
            .collect();
        if config.session.consent_timeout_secs < MIN_SAFE_CONSENT_TIMEOUT_SECS {
            // Browsers send a consent check every ~5 s (RFC 7675); one lost check would then
            // drop a healthy session.
            warn!(
                consent_timeout_secs = config.session.consent_timeout_secs,
                "session.consent_timeout_secs below {MIN_SAFE_CONSENT_TIMEOUT_SECS}: sessions whose peers send only consent checks may be dropped while healthy (RFC 7675 suggests 30)"
            );
        }
        let wakers = sockets.iter().map(|io| io.waker()).collect::<Vec<_>>();
        let mut endpoints = mesh::build(wakers.clone());
        let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut cores = Vec::with_capacity(threads);
        let mut core_threads = Vec::with_capacity(threads);
        for (i, io) in sockets.into_iter().enumerate().rev() {
            let (command_tx, command_rx) = std::sync::mpsc::channel();
            let stats = Arc::new(CoreStats::default());
            let port = media_addrs[i].port();
            cores.push(CoreHandle {
                commands: command_tx,
                waker: wakers[i].clone(),
                candidates: announce
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect(),
                tcp_candidates: tcp_ports[i]
                    .map(|tcp_port| {
                        announce
                            .iter()
                            .map(|ip| SocketAddr::new(*ip, tcp_port))
                            .collect()
                    })
                    .unwrap_or_default(),
                stats: stats.clone(),
            });
            let setup = CoreSetup {
                id: CoreId(i),
                io,
                commands: command_rx,
                events: event_tx.clone(),
                runtime: runtime.handle().clone(),
                certificate: certificate.clone(),
                mesh: endpoints.pop().expect("one endpoint per core"),
                stats,
                timeouts: SessionTimeouts {
                    connect: Duration::from_secs(config.session.connect_timeout_secs),
                    consent: Duration::from_secs(config.session.consent_timeout_secs),
                },
            };
            let thread = std::thread::Builder::new()
                .name(format!("rtcdn-media-{i}"))
                .spawn(move || core::run(setup))
                .map_err(StartError::Runtime)?;
            core_threads.push(thread);
        }
        cores.reverse();
        // An origin's relays: the control plane (in signalling) decides, the relay transport
        // carries its orders out and reports back through the plane.
        // A dynamic CDN's node with a secret relays on demand: to the nodes that pull.
        let cluster_secret = config
            .cluster
            .as_ref()
            .and_then(|c| c.secret.as_ref())
            .map(|s| s.expose().to_owned());
        let relays = RelaySetup::from_cdn(&config.cdn, certificate.fingerprint(), &announce)
            .or_else(|| {
                cluster_secret.as_deref().map(|secret| {
                    RelaySetup::for_cluster(
                        secret,
                        &config.cdn,
                        certificate.fingerprint(),
                        &announce,
                    )
                })
            })
            .map(|setup| (relay::channel(), setup));
        let mut signalling = Signalling::new(cores.clone(), certificate, &config.cdn, authorizer)
            .with_http(&config.http)
            .with_bwe(&config.bwe)
            .with_ice(&config.ice);
        if let Some(((handle, _), setup)) = &relays {
            signalling =
                signalling.with_relays(handle.clone(), setup.edges(), setup.policy, rand::random());
        }
        let https_port = tls
            .as_ref()
            .and_then(|(_, listener)| listener.local_addr().ok())
            .map(|addr| addr.port());
        let cluster = match &config.cluster {
            Some(cluster_config) => {
                let addresses = NodeAddresses {
                    host: public_host(config, http_addr, &announce),
                    http_port: Some(http_addr.port()),
                    https_port,
                };
                let _entered = runtime.enter();
                let cluster = Cluster::new(cluster_config, &addresses)
                    .map_err(|e| StartError::Cluster(e.to_string()))?;
                Some(Arc::new(cluster))
            }
            None => None,
        };
        if let Some(cluster) = &cluster {
            signalling = signalling.with_cluster(cluster.clone());
        }
        if let (Some(_), Some(secret), Some(cluster_config)) =
            (&cluster, &cluster_secret, &config.cluster)
        {
            let idle = std::time::Duration::from_secs(cluster_config.idle_pull_secs);
            let hub = signalling::pull::PullHub::new(secret, idle).map_err(StartError::Cluster)?;
            signalling = signalling.with_pulls(hub, secret);
        } else if cluster.is_some() {
            info!("cluster.secret is not set: this node does not pull streams from other nodes, nor relay to them");
        }
        let state = Arc::new(signalling);
        runtime.spawn(signalling::drive_control_timers(Arc::downgrade(&state)));
        if let Some(cluster) = cluster {
            runtime.spawn(crate::cluster::run(cluster, Arc::downgrade(&state)));
        }
        if state.pulls.is_some() {
            runtime.spawn(signalling::pull::run(Arc::downgrade(&state)));
        }
        if let Some(((_, orders), setup)) = relays {
            let host: Arc<dyn RelayHost> = state.clone();
            runtime.spawn(relay::run(orders, setup, host));
        }
        if let Some(balancer) = &state.balancer {
            runtime.spawn(crate::cdn::poll_edge_stats(
                balancer.clone(),
                config.cdn.nodes.clone(),
                config.cdn.stats_poll_secs,
            ));
        }
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(http_listener).map_err(http_bind)?
        };
        runtime.spawn(signalling::serve(listener, state.clone()));
        let https_addr = match tls {
            Some((acceptor, listener)) => {
                let listener = {
                    let _entered = runtime.enter();
                    tokio::net::TcpListener::from_std(listener).map_err(|source| {
                        StartError::HttpBind {
                            addr: config.http.tls_listen,
                            source,
                        }
                    })?
                };
                let addr = listener.local_addr().map_err(StartError::Runtime)?;
                runtime.spawn(signalling::serve_tls(listener, state.clone(), acceptor));
                Some(addr)
            }
            None => None,
        };
        let rtmp_addr = match rtmp_listener {
            Some(listener) => Some(start_rtmp(config, listener, &runtime, &state)?),
            None => None,
        };
        let events_state = state.clone();
        runtime.spawn(async move {
            while let Some(event) = event_rx.recv().await {
                events_state.handle_core_event(event);
            }
        });
        let https = https_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
        let rtmp = rtmp_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
        info!(http = %http_addr, %https, %rtmp, media = ?media_addrs, candidates = ?announce, "rtcdn node started");
        log_summary(config, http_addr, https_addr, &announce);
        Ok(Node {
            http_addr,
            https_addr,
            rtmp_addr,
            media_addrs,
            cores,
            core_threads,
            runtime: Some(runtime),
            state,
            drain_time: config
                .cluster
                .as_ref()
                .map_or(DEFAULT_DRAIN, |c| Duration::from_secs(c.drain_secs)),
        })
    }

    /// Starts the node's drain (see [`crate::signalling::drain`]); false when it had started.
    pub fn drain(&self) -> bool {
        self.state.start_drain()
    }

    /// Returns once a drain has started, whoever started it (`POST /rest-api/cdn/drain`).
    pub async fn drain_started(&self) {
        self.state.drain.started().await
    }

    /// How long a drain lasts at most.
    pub fn drain_time(&self) -> Duration {
        self.drain_time
    }

    /// Waits until the node has no session left, or [`Node::drain_time`] has passed.
    pub async fn drained(&self) -> DrainEnd {
        let deadline = tokio::time::Instant::now() + self.drain_time;
        loop {
            let sessions = self.state.session_count();
            if sessions == 0 {
                return DrainEnd::Drained;
            }
            if tokio::time::Instant::now() >= deadline {
                return DrainEnd::TimeOver { sessions };
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// The HTTP listener's address (useful when the config asked for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTPS/WSS listener's address, when TLS is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The RTMP listener's address, when it runs (`rtmp.enabled` and its port was free).
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp_addr
    }

    /// Each media core's socket address.
    pub fn media_addrs(&self) -> &[SocketAddr] {
        &self.media_addrs
    }

    /// Shared signalling state, for protocols layered on this node.
    pub fn signalling(&self) -> &Arc<Signalling> {
        &self.state
    }

    /// Stops cores and signalling and waits for the core threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for core in &self.cores {
            core.send(CoreCommand::Shutdown);
        }
        for thread in self.core_threads.drain(..) {
            if thread.join().is_err() {
                warn!("a media core panicked");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            // Not shutdown_timeout: that blocks, and a node may be stopped from async code.
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds the RTMP listener (`[rtmp]`), before any media socket or thread exists. An address
/// given (`--rtmp ADDR`, `rtmp.listen`) that cannot be bound stops the start, like HTTP's;
/// the default one leaves the node running without RTMP, with a warning: RTMP is an extra way
/// in, and nodes started side by side (the tests, a second node on a host) find the default
/// port taken by the first.
fn bind_rtmp(config: &Config) -> Result<Option<std::net::TcpListener>, StartError> {
    if !config.rtmp.enabled {
        return Ok(None);
    }
    let listen = config.rtmp.listen_addr();
    let bound = std::net::TcpListener::bind(listen).and_then(|listener| {
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    match bound {
        Ok(listener) => Ok(Some(listener)),
        Err(source) if config.rtmp.listen.is_some() => Err(StartError::RtmpBind {
            addr: listen,
            source,
        }),
        Err(e) => {
            warn!(%listen, error = %e, "RTMP ingest is off: the default RTMP port is taken (set another with --rtmp ADDR or rtmp.listen, or --rtmp off)");
            Ok(None)
        }
    }
}

/// Serves RTMP on the listener [`bind_rtmp`] bound; returns its address.
fn start_rtmp(
    config: &Config,
    listener: std::net::TcpListener,
    runtime: &tokio::runtime::Runtime,
    state: &Arc<Signalling>,
) -> Result<SocketAddr, StartError> {
    let rtmp_bind = |source| StartError::RtmpBind {
        addr: config.rtmp.listen_addr(),
        source,
    };
    let addr = listener.local_addr().map_err(rtmp_bind)?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(rtmp_bind)?
    };
    runtime.spawn(crate::rtmp::listener::serve(
        listener,
        state.clone(),
        config.rtmp.clone(),
    ));
    Ok(addr)
}

/// A TLS acceptor for HTTPS/WSS from PEM files, on ring (no second crypto library).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| StartError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StartError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The host other cluster nodes and players reach this node by: `cluster.public_host`, else
/// the HTTP listener's address when it is a specific one, else the first announced media
/// address.
fn public_host(config: &Config, http_addr: SocketAddr, announce: &[IpAddr]) -> String {
    if let Some(host) = config.cluster.as_ref().and_then(|c| c.public_host.clone()) {
        return host;
    }
    if !http_addr.ip().is_unspecified() {
        return http_addr.ip().to_string();
    }
    announce
        .first()
        .map_or_else(|| http_addr.ip().to_string(), IpAddr::to_string)
}

/// One line an operator reads to know what this node is: its CDN role, where players are sent
/// (an origin balancing over edges), the URLs clients use (with the host other machines reach,
/// not a wildcard bind address) and the ICE candidates media goes to.
fn log_summary(
    config: &Config,
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    announce: &[IpAddr],
) {
    let cdn = &config.cdn;
    let role = match cdn.role {
        _ if config.cluster.is_some() => "cluster",
        CdnRole::Origin if cdn.load_balancing_enabled && !cdn.nodes.is_empty() => "origin",
        CdnRole::Origin => "standalone",
        CdnRole::Edge => "edge",
    };
    let edges: Vec<String> = cdn
        .nodes
        .iter()
        .map(|n| format!("{}#{}", n.host, n.id))
        .collect();
    let balancer = if role == "origin" {
        cdn.mode.as_str()
    } else {
        "off"
    };
    let host = crate::config::addresses::url_host(&public_host(config, http_addr, announce));
    let (scheme, ws, port) = match https_addr {
        Some(tls) => ("https", "wss", tls.port()),
        None => ("http", "ws", http_addr.port()),
    };
    let candidates: Vec<String> = announce.iter().map(IpAddr::to_string).collect();
    info!(
        role,
        balancer,
        edges = %edges.join(", "),
        whip = %format_args!("{scheme}://{host}:{port}/whip/{{stream}}"),
        whep = %format_args!("{scheme}://{host}:{port}/whep/{{stream}}"),
        websocket = %format_args!("{ws}://{host}:{port}/"),
        candidates = %candidates.join(", "),
        "serving"
    );
}

/// The addresses put in ICE host candidates (`config::addresses`: `media.announce`, else the
/// bind address, else every interface's, mapped by `media.nat_1to1`); logs them, and warns when
/// HTTP is reachable from other hosts but they are loopback only.
fn announced_addresses(config: &Config) -> Result<Vec<IpAddr>, StartError> {
    let interfaces = if config.media.bind.is_unspecified() && config.media.announce.is_empty() {
        interface_addresses()
    } else {
        Vec::new()
    };
    let candidates = host_candidates(&config.media, &interfaces, ipv6_takes_ipv4());
    if candidates.addresses.is_empty() {
        return Err(StartError::NoCandidates);
    }
    info!(candidates = %candidates.summary(), "ICE host candidates");
    let mut listens = vec![config.http.listen];
    if config.http.tls_certificate.is_some() {
        listens.push(config.http.tls_listen);
    }
    if let Some(warning) = loopback_only_warning(&listens, &candidates.addresses) {
        warn!("{warning}");
    }
    Ok(candidates.addresses)
}

/// Whether an IPv6 socket bound to `::` also takes IPv4 (Linux's default; the media sockets
/// leave `IPV6_V6ONLY` as the host sets it).
fn ipv6_takes_ipv4() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").map_or(true, |v| v.trim() == "0")
}

/// Raises the open-file limit to what the configured connection caps can use: every ICE-TCP
/// connection and HTTP connection is a descriptor, and a limit below them makes `accept` fail
/// for everyone instead of the caps refusing the surplus.
fn raise_fd_limit(config: &Config, threads: usize) {
    // Sockets, rings, epoll and event fds, logs, certificates: a margin beside the caps.
    const RESERVED: u64 = 256;
    let tcp = if config.media.tcp {
        config.media.tcp_max_connections as u64 * threads as u64
    } else {
        0
    };
    let needed =
        RESERVED + tcp + config.http.max_connections as u64 + config.rtmp.max_connections as u64;
    match crate::reactor::io::raise_open_file_limit(needed) {
        Some(limit) if limit < needed => warn!(
            open_files = limit,
            needed,
            "the open-file limit (ulimit -n, hard) is below what the connection caps can use: accept will fail before they refuse"
        ),
        _ => {}
    }
}

/// Says at start who can publish and play when the HTTP listener is reachable beyond loopback
/// and the policy lets anyone: the first-run default is right on loopback only.
fn warn_about_open_access(config: &Config) {
    let listen = config.http.listen;
    if listen.ip().is_loopback() {
        return;
    }
    let edge_publish_closed = config.cdn.role == CdnRole::Edge && !config.cdn.edge_accepts_publish;
    if config.auth.publish == Policy::Open && !edge_publish_closed {
        warn!(
            %listen,
            "auth.publish = \"open\": anyone who reaches http://{listen} can publish any stream name; set auth.publish = \"token\" (see README, Securing rtcdn)"
        );
    }
    if config.auth.play == Policy::Open {
        warn!(%listen, "auth.play = \"open\": anyone who reaches http://{listen} can play every stream");
    }
    if config.cdn.relays() && config.cdn.secret.is_none() {
        warn!("cdn.secret is not set: this origin's relays cannot prove themselves to rtcdn edges (WCS edges need none)");
    }
}
