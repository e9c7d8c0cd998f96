//! `GET /metrics`: the node's counters in the Prometheus text format (0.0.4), encoded by the
//! `prometheus-client` crate from a snapshot taken at each scrape (the counters themselves live
//! where they are counted: the media cores' atomics, the registry with what the cores report
//! of each session once a second, the relay planner, the authorizer's refusals, the cluster
//! membership, the panic tally). The media path never waits for a scrape: the cores' atomics
//! are read without a lock, and the control plane's lock is held only while the registry is
//! copied, never while encoding.
//!
//! Every family is prefixed `rtcdn_`; per-core families carry a `core` label, per-stream ones a
//! `stream` label. The README's table documents each one (a test holds the two together). It
//! is an admin endpoint, like `/api/stats`.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{control_api, Signalling};
use crate::control::registry::{SessionEntry, SessionKind};
use crate::reactor::io::ResidenceHistogram;
use crate::session::Traffic;

/// Upper bounds (seconds) of the residence histogram's buckets, besides `+Inf`: the node's own
/// log-linear buckets are 12.5% wide, too many to export; these cover 50 µs to 1 s.
const RESIDENCE_BOUNDS: [f64; 13] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// What one scrape reports.
#[derive(Debug, Default)]
struct Snapshot {
    cores: Vec<CoreSnapshot>,
    /// (core, role, sessions) for every core and role, from the registry.
    sessions_by_role: Vec<(usize, &'static str, u64)>,
    streams: Vec<StreamSnapshot>,
    /// (kind, reason, refusals).
    auth_refusals: Vec<(&'static str, &'static str, u64)>,
    /// (kind, end reason, sessions) ended since the start.
    sessions_ended: Vec<(&'static str, &'static str, u64)>,
    /// On an origin: (edge id, relay state, streams) for every edge and state.
    relays: Vec<(u32, &'static str, u64)>,
    /// On an edge: the origin's relay sessions bringing it streams, (state, count).
    relays_in: Vec<(&'static str, u64)>,
    /// With `[cluster]`: whether Redis answered the last lease write, and the live nodes.
    cluster: Option<(bool, usize)>,
    /// Unix time (seconds) the node started, and seconds since.
    start_time: f64,
    uptime: f64,
    /// Whether the node drains (takes no new sessions).
    draining: bool,
    panics: Vec<(String, u64)>,
}

#[derive(Debug)]
struct StreamSnapshot {
    name: String,
    players: usize,
    relays: usize,
    media_flowing: bool,
    /// The publisher's received bitrate (bit/s).
    bitrate_bps: Option<u64>,
    /// What the node missed of the publisher over its last receiver report (0 to 1).
    publisher_loss: Option<f64>,
    /// The worst loss a player reported over its last receiver report (0 to 1).
    player_loss: Option<f64>,
    /// What its sessions carried, as their cores last reported (once a second).
    traffic: Traffic,
}

/// The `role` label of a session: `relay_in` is an edge's copy of a stream from its origin,
/// `ingest` an RTMP publisher, `transcoder` the audio transcoder of a stream's RTMP players.
const ROLES: [&str; 6] = [
    "publisher",
    "player",
    "relay",
    "relay_in",
    "ingest",
    "transcoder",
];

/// The index of a session's role in [`ROLES`].
fn role(session: &SessionEntry) -> usize {
    match session.kind {
        SessionKind::Publisher if session.client.ingest => 4,
        SessionKind::Publisher if session.client.relay => 3,
        SessionKind::Publisher => 0,
        SessionKind::Player => 1,
        SessionKind::Relay => 2,
        SessionKind::Transcoder => 5,
    }
}

/// A per-stream counter family: name, help, and its value in a stream's traffic.
type StreamCounter = (&'static str, &'static str, fn(&Traffic) -> u64);

/// The relay planner's states, as `/api/streams` names them.
const RELAY_STATES: [&str; 4] = ["idle", "connecting", "up", "backoff"];

#[derive(Debug, Default)]
struct CoreSnapshot {
    sessions: usize,
    rtp_received: u64,
    rtp_received_bytes: u64,
    rtp_sent: u64,
    rtp_sent_bytes: u64,
    retransmissions_sent: u64,
    nacks_forwarded_upstream: u64,
    retransmissions_throttled: u64,
    upstream_losses_requested: u64,
    upstream_losses_recovered: u64,
    upstream_losses_abandoned: u64,
    keyframe_cache_hits: u64,
    keyframe_cache_misses: u64,
    rtx_dropped: u64,
    rtx_sent: u64,
    /// UDP datagrams the kernel accepted, and the sends they left in (fewer with UDP GSO).
    udp_datagrams_sent: u64,
    udp_sends: u64,
    /// (reason, packets) dropped as bad input.
    dropped: Vec<(&'static str, u64)>,
    /// ICE-TCP connections open, closed by reason, and frames dropped at a full write queue.
    tcp_open: u64,
    tcp_closed: Vec<(&'static str, u64)>,
    tcp_frames_dropped: u64,
    media_allocations: Option<u64>,
    /// Counts in each of [`RESIDENCE_BOUNDS`] (not cumulative: the encoder adds them up), the
    /// total, and an estimated sum (each bucket counted at its middle).
    residence: ([u64; RESIDENCE_BOUNDS.len()], u64, f64),
}

/// The text of a scrape.
pub fn render(state: &Signalling) -> String {
    let snapshot = snapshot(state);
    let mut registry = Registry::with_prefix("rtcdn");
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// The `Content-Type` of [`render`]'s text: the Prometheus text format 0.0.4, which every
/// scraper reads.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

fn snapshot(state: &Signalling) -> Snapshot {
    let cores = state
        .cores
        .iter()
        .map(|core| {
            let s = &core.stats;
            CoreSnapshot {
                sessions: s.sessions.load(Relaxed),
                rtp_received: s.rtp_received.load(Relaxed),
                rtp_received_bytes: s.rtp_received_bytes.load(Relaxed),
                rtp_sent: s.rtp_sent.load(Relaxed),
                rtp_sent_bytes: s.rtp_sent_bytes.load(Relaxed),
                retransmissions_sent: s.retransmissions_sent.load(Relaxed),
                nacks_forwarded_upstream: s.nacks_forwarded_upstream.load(Relaxed),
                retransmissions_throttled: s.retransmissions_throttled.load(Relaxed),
                upstream_losses_requested: s.upstream_losses_requested.load(Relaxed),
                upstream_losses_recovered: s.upstream_losses_recovered.load(Relaxed),
                upstream_losses_abandoned: s.upstream_losses_abandoned.load(Relaxed),
                keyframe_cache_hits: s.keyframe_cache_hits.load(Relaxed),
                keyframe_cache_misses: s.keyframe_cache_misses.load(Relaxed),
                rtx_dropped: s.rtx_dropped.load(Relaxed),
                rtx_sent: s.rtx_sent.load(Relaxed),
                udp_datagrams_sent: s.udp_datagrams_sent.load(Relaxed),
                udp_sends: s.udp_sends.load(Relaxed),
                dropped: vec![
                    ("stun_integrity", s.stun_rejected.load(Relaxed)),
                    ("srtp_authentication", s.srtp_rejected.load(Relaxed)),
                    ("rtp_malformed", s.rtp_malformed.load(Relaxed)),
                    ("unknown_source", s.unknown_source.load(Relaxed)),
                    ("unclassified", s.unclassified.load(Relaxed)),
                    ("handoff_full", s.handoff_dropped.load(Relaxed)),
                ],
                tcp_open: s.tcp.open.load(Relaxed),
                tcp_closed: vec![
                    ("peer", s.tcp.closed_by_peer.load(Relaxed)),
                    ("stun_timeout", s.tcp.stun_timeouts.load(Relaxed)),
                    ("idle", s.tcp.idle_timeouts.load(Relaxed)),
                    ("oversized_frame", s.tcp.oversized.load(Relaxed)),
                    ("garbage", s.tcp.garbage.load(Relaxed)),
                    ("table_full", s.tcp.rejected_full.load(Relaxed)),
                    ("per_ip_limit", s.tcp.rejected_per_ip.load(Relaxed)),
                    ("connect_failed", s.tcp.connect_failures.load(Relaxed)),
                    ("relay_ended", s.tcp.closed_by_core.load(Relaxed)),
                ],
                tcp_frames_dropped: s.tcp.tx_dropped.load(Relaxed),
                media_allocations: s
                    .counts_allocations
                    .load(Relaxed)
                    .then(|| s.media_allocations.load(Relaxed)),
                residence: residence_buckets(s.residence.nonzero()),
            }
        })
        .collect();
    let edges = control_api::edge_ids(state);
    let (sessions_by_role, sessions_ended, streams, relays, relays_in) = {
        // One short hold of the control plane's lock (never the media cores'): the registry
        // and the relay planner are read into the snapshot, and encoded after it is let go.
        let plane = state.lock_control();
        let registry = plane.registry();
        // Rows in (core, role) order: a session's row is found by index, not by search.
        let mut by_role: Vec<(usize, &'static str, u64)> = (0..state.cores.len())
            .flat_map(|core| ROLES.iter().map(move |&role| (core, role, 0)))
            .collect();
        let mut relays_in: Vec<(&'static str, u64)> = vec![("connecting", 0), ("connected", 0)];
        for session in registry.sessions() {
            let role = role(session);
            if let Some(row) = by_role.get_mut(session.core.0 * ROLES.len() + role) {
                row.2 += 1;
            }
            if ROLES[role] == "relay_in" {
                relays_in[usize::from(session.connected)].1 += 1;
            }
        }
        let loss = |fraction: u8| f64::from(fraction) / 256.0;
        let streams = registry
            .streams()
            .map(|s| StreamSnapshot {
                name: s.name.clone(),
                players: s.players.len(),
                relays: s.relays.len(),
                media_flowing: s.media_flowing,
                bitrate_bps: registry.publisher_bitrate(&s.name),
                publisher_loss: registry
                    .session(s.publisher)
                    .and_then(|p| p.loss_fraction)
                    .map(loss),
                player_loss: s
                    .players
                    .iter()
                    .filter_map(|(id, _)| registry.session(*id)?.loss_fraction)
                    .max()
                    .map(loss),
                traffic: registry.stream_traffic(s),
            })
            .collect();
        let mut relays: Vec<(u32, &'static str, u64)> = edges
            .iter()
            .flat_map(|edge| RELAY_STATES.iter().map(move |&state| (edge.0, state, 0)))
            .collect();
        for stream in registry.streams() {
            for (i, &edge) in edges.iter().enumerate() {
                let Some(relay) = plane.relay_state(&stream.name, edge) else {
                    continue;
                };
                let name = control_api::relay_state_name(relay);
                if let Some(state) = RELAY_STATES.iter().position(|&s| s == name) {
                    relays[i * RELAY_STATES.len() + state].2 += 1;
                }
            }
        }
        let ended = registry.sessions_ended().collect();
        (by_role, ended, streams, relays, relays_in)
    };
    let cluster = state
        .cluster
        .as_ref()
        .map(|c| (c.redis_up(), c.view().nodes().len()));
    let (started, started_wall) = state.started;
    let start_time = started_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Snapshot {
        cores,
        sessions_by_role,
        streams,
        auth_refusals: state.auth.refusals().snapshot(),
        sessions_ended,
        relays,
        relays_in,
        cluster,
        start_time,
        uptime: started.elapsed().as_secs_f64(),
        draining: state.drain.is_draining(),
        panics: crate::panic_guard::counts().into_iter().collect(),
    }
}

/// Folds the node's log-linear buckets into [`RESIDENCE_BOUNDS`]: a bucket counts towards the
/// first bound at or above its upper end (so a bound never claims faster packets than it had);
/// what is above the last bound is only in the total (`+Inf`).
fn residence_buckets(
    nonzero: impl Iterator<Item = (usize, u64)>,
) -> ([u64; RESIDENCE_BOUNDS.len()], u64, f64) {
    let mut per_bound = [0u64; RESIDENCE_BOUNDS.len()];
    let (mut total, mut sum) = (0u64, 0f64);
    for (i, n) in nonzero {
        let (low, high) = ResidenceHistogram::bucket_range(i);
        let high_s = high as f64 / 1e9;
        if let Some(b) = RESIDENCE_BOUNDS.iter().position(|&bound| high_s <= bound) {
            per_bound[b] += n;
        }
        total += n;
        sum += n as f64 * (low as f64 + high as f64) / 2e9;
    }
    (per_bound, total, sum)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let version = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", crate::GIT_REVISION),
        ];
        let mut e = encoder.encode_descriptor(
            "build_info",
            "The rtcdn build (always 1)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(e.encode_family(&version)?)?;
        let e = encoder.encode_descriptor(
            "start_time_seconds",
            "When the node started, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.start_time).encode(e)?;
        let e = encoder.encode_descriptor(
            "uptime_seconds",
            "Seconds since the node started",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.uptime).encode(e)?;
        let e = encoder.encode_descriptor(
            "draining",
            "1 while the node drains (takes no new sessions, exits when its sessions end)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.draining)).encode(e)?;

        per_core(
            &mut encoder,
            self,
            "sessions",
            "Sessions on the media core",
            MetricType::Gauge,
            |c| c.sessions as u64,
        )?;
        let mut e = encoder.encode_descriptor(
            "sessions_by_role",
            "Live sessions by role (publisher, player, relay to an edge, relay_in from the origin, RTMP ingest), by the core they run on",
            None,
            MetricType::Gauge,
        )?;
        for (core, role, n) in &self.sessions_by_role {
            let labels = [("core", core.to_string()), ("role", role.to_string())];
            ConstGauge::new(*n as i64).encode(e.encode_family(&labels)?)?;
        }
        per_core(
            &mut encoder,
            self,
            "rtp_received_packets",
            "Media packets received from publishers and decrypted",
            MetricType::Counter,
            |c| c.rtp_received,
        )?;
        per_core(
            &mut encoder,
            self,
            "rtp_sent_packets",
            "Media packets sent to players and relays",
            MetricType::Counter,
            |c| c.rtp_sent,
        )?;
        per_core(
            &mut encoder,
            self,
            "rtp_received_bytes",
            "Bytes of the media packets received (SRTP as on the wire; an RTMP ingest's RTP)",
            MetricType::Counter,
            |c| c.rtp_received_bytes,
        )?;
        per_core(
            &mut encoder,
            self,
            "rtp_sent_bytes",
            "Bytes of the media packets sent to players and relays (SRTP as on the wire)",
            MetricType::Counter,
            |c| c.rtp_sent_bytes,
        )?;
        per_core(
            &mut encoder,
            self,
            "retransmissions_sent_packets",
            "Packets players reported lost that were sent again from the core's cache",
            MetricType::Counter,
            |c| c.retransmissions_sent,
        )?;
        per_core(
            &mut encoder,
            self,
            "nacks_forwarded_upstream_packets",
            "Packets players reported lost that the cache did not hold, asked of the publisher",
            MetricType::Counter,
            |c| c.nacks_forwarded_upstream,
        )?;
        per_core(
            &mut encoder,
            self,
            "retransmissions_throttled_packets",
            "Packets players asked for again beyond their resend budget, dropped",
            MetricType::Counter,
            |c| c.retransmissions_throttled,
        )?;
        per_core(
            &mut encoder,
            self,
            "upstream_losses_requested_packets",
            "Video packets missing from what the node receives, asked for again (each request)",
            MetricType::Counter,
            |c| c.upstream_losses_requested,
        )?;
        per_core(
            &mut encoder,
            self,
            "upstream_losses_recovered_packets",
            "Missing video packets that arrived after the node asked for them",
            MetricType::Counter,
            |c| c.upstream_losses_recovered,
        )?;
        per_core(
            &mut encoder,
            self,
            "upstream_losses_abandoned_packets",
            "Missing video packets given up after too many requests or too long",
            MetricType::Counter,
            |c| c.upstream_losses_abandoned,
        )?;
        per_core(
            &mut encoder,
            self,
            "keyframe_cache_hits",
            "Players whose video started on the keyframe the core had cached",
            MetricType::Counter,
            |c| c.keyframe_cache_hits,
        )?;
        per_core(
            &mut encoder,
            self,
            "keyframe_cache_misses",
            "Players whose video waited for a keyframe requested from the publisher",
            MetricType::Counter,
            |c| c.keyframe_cache_misses,
        )?;
        per_core(
            &mut encoder,
            self,
            "rtx_dropped_packets",
            "Publishers' retransmissions not forwarded: bandwidth probes, packets already received",
            MetricType::Counter,
            |c| c.rtx_dropped,
        )?;
        per_core(
            &mut encoder,
            self,
            "rtx_sent_packets",
            "Of the retransmissions sent, those on the player's RTX stream",
            MetricType::Counter,
            |c| c.rtx_sent,
        )?;
        per_core(
            &mut encoder,
            self,
            "udp_sent_datagrams",
            "UDP datagrams the kernel accepted for sending (media, RTCP, STUN)",
            MetricType::Counter,
            |c| c.udp_datagrams_sent,
        )?;
        per_core(
            &mut encoder,
            self,
            "udp_sends",
            "Sends those datagrams left in: one each, or a player's frame in one with UDP GSO",
            MetricType::Counter,
            |c| c.udp_sends,
        )?;

        let mut e = encoder.encode_descriptor(
            "dropped_packets",
            "Datagrams dropped as bad input, by reason",
            None,
            MetricType::Counter,
        )?;
        for (i, core) in self.cores.iter().enumerate() {
            for (reason, n) in &core.dropped {
                let labels = [("core", i.to_string()), ("reason", reason.to_string())];
                ConstCounter::new(*n).encode(e.encode_family(&labels)?)?;
            }
        }

        per_core(
            &mut encoder,
            self,
            "tcp_connections",
            "ICE-TCP connections open",
            MetricType::Gauge,
            |c| c.tcp_open,
        )?;
        let mut e = encoder.encode_descriptor(
            "tcp_connections_closed",
            "ICE-TCP connections closed, by reason (table_full, per_ip_limit: refused at accept)",
            None,
            MetricType::Counter,
        )?;
        for (i, core) in self.cores.iter().enumerate() {
            for (reason, n) in &core.tcp_closed {
                let labels = [("core", i.to_string()), ("reason", reason.to_string())];
                ConstCounter::new(*n).encode(e.encode_family(&labels)?)?;
            }
        }
        per_core(
            &mut encoder,
            self,
            "tcp_frames_dropped",
            "Frames to ICE-TCP players dropped because their write queue was full (slow readers)",
            MetricType::Counter,
            |c| c.tcp_frames_dropped,
        )?;

        if self.cores.iter().any(|c| c.media_allocations.is_some()) {
            per_core(
                &mut encoder,
                self,
                "media_allocations",
                "Heap allocations on the forwarding path (kept at 0)",
                MetricType::Counter,
                |c| c.media_allocations.unwrap_or(0),
            )?;
        }

        let mut e = encoder.encode_descriptor(
            "residence_seconds",
            "How long received packets stayed in the node, kernel receive to send (sum estimated from bucket middles)",
            None,
            MetricType::Histogram,
        )?;
        for (i, core) in self.cores.iter().enumerate() {
            let (per_bound, total, sum) = core.residence;
            let mut buckets: Vec<(f64, u64)> =
                RESIDENCE_BOUNDS.iter().copied().zip(per_bound).collect();
            buckets.push((f64::INFINITY, total - per_bound.iter().sum::<u64>()));
            let labels = [("core", i.to_string())];
            e.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, total, &buckets, None)?;
        }

        let e = encoder.encode_descriptor(
            "streams",
            "Live streams on this node",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.streams.len() as i64).encode(e)?;
        per_stream(
            &mut encoder,
            self,
            "stream_players",
            "Players of a live stream on this node",
            |s| s.players as i64,
        )?;
        per_stream(
            &mut encoder,
            self,
            "stream_relays",
            "Relays of a live stream to other nodes (an origin's edges)",
            |s| s.relays as i64,
        )?;
        per_stream(
            &mut encoder,
            self,
            "stream_media_flowing",
            "1 once a live stream's publisher sends media",
            |s| i64::from(s.media_flowing),
        )?;
        let stream_counters: [StreamCounter; 8] = [
            (
                "stream_received_packets",
                "Media packets of a live stream received from its publisher (as its core last reported)",
                |t| t.packets_in,
            ),
            (
                "stream_received_bytes",
                "Bytes of those packets, as on the wire",
                |t| t.bytes_in,
            ),
            (
                "stream_sent_packets",
                "Media packets of a live stream sent to its players and relays, repairs included, ended players' too",
                |t| t.packets_out,
            ),
            (
                "stream_sent_bytes",
                "Bytes of those packets, as on the wire",
                |t| t.bytes_out,
            ),
            (
                "stream_nacks_received",
                "NACKs the stream's players (and edges, through relays) sent the node",
                |t| t.nacks_in,
            ),
            (
                "stream_keyframe_requests_received",
                "Keyframe requests (PLI, FIR) the stream's players (and edges) sent the node",
                |t| t.keyframe_requests_in,
            ),
            (
                "stream_nacks_sent",
                "NACKs the node sent the stream's publisher (its own losses and players' the cache could not answer)",
                |t| t.nacks_out,
            ),
            (
                "stream_keyframe_requests_sent",
                "Keyframe requests (PLI) the node sent the stream's publisher",
                |t| t.keyframe_requests_out,
            ),
        ];
        for (name, help, value) in stream_counters {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for stream in &self.streams {
                ConstCounter::new(value(&stream.traffic))
                    .encode(e.encode_family(&[("stream", stream.name.as_str())])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "stream_bitrate_bits_per_second",
            "A live stream's bitrate as its publisher's packets arrive (once it is known)",
            None,
            MetricType::Gauge,
        )?;
        for stream in &self.streams {
            if let Some(bps) = stream.bitrate_bps {
                ConstGauge::new(bps as i64)
                    .encode(e.encode_family(&[("stream", stream.name.as_str())])?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "stream_loss_ratio",
            "Loss over the last receiver report: what the node missed of the publisher (side=publisher), the worst a player reported (side=players)",
            None,
            MetricType::Gauge,
        )?;
        for stream in &self.streams {
            for (side, loss) in [
                ("publisher", stream.publisher_loss),
                ("players", stream.player_loss),
            ] {
                if let Some(loss) = loss {
                    let labels = [("stream", stream.name.as_str()), ("side", side)];
                    ConstGauge::new(loss).encode(e.encode_family(&labels)?)?;
                }
            }
        }

        let mut e = encoder.encode_descriptor(
            "auth_refusals",
            "Requests refused by the access rules, by what was asked (publish, play, admin, relay) and why",
            None,
            MetricType::Counter,
        )?;
        for (kind, reason, n) in &self.auth_refusals {
            let labels = [("kind", *kind), ("reason", *reason)];
            ConstCounter::new(*n).encode(e.encode_family(&labels)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "sessions_ended",
            "Sessions ended since the start, by kind (publisher, player, relay) and reason (deleted, publisher_left, consent_expired, ...)",
            None,
            MetricType::Counter,
        )?;
        for (kind, reason, n) in &self.sessions_ended {
            let labels = [("kind", *kind), ("reason", *reason)];
            ConstCounter::new(*n).encode(e.encode_family(&labels)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "relays",
            "On an origin: streams relayed to each edge, by relay state (idle, connecting, up, backoff)",
            None,
            MetricType::Gauge,
        )?;
        for (edge, state, n) in &self.relays {
            let labels = [("edge", edge.to_string()), ("state", state.to_string())];
            ConstGauge::new(*n as i64).encode(e.encode_family(&labels)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "relays_in",
            "On an edge: the origin's relay sessions bringing it streams, by state (connecting, connected)",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in &self.relays_in {
            ConstGauge::new(*n as i64).encode(e.encode_family(&[("state", *state)])?)?;
        }
        let e = encoder.encode_descriptor(
            "cluster_redis_up",
            "With [cluster]: 1 when Redis answered the node's last lease write",
            None,
            MetricType::Gauge,
        )?;
        if let Some((up, _)) = self.cluster {
            ConstGauge::new(i64::from(up)).encode(e)?;
        }
        let e = encoder.encode_descriptor(
            "cluster_nodes",
            "With [cluster]: the live nodes of the cluster as last read, this one included",
            None,
            MetricType::Gauge,
        )?;
        if let Some((_, nodes)) = self.cluster {
            ConstGauge::new(nodes as i64).encode(e)?;
        }

        let mut e = encoder.encode_descriptor(
            "panics",
            "Panics caught in peer-driven tasks (signalling, DTLS), by source location",
            None,
            MetricType::Counter,
        )?;
        for (site, n) in &self.panics {
            ConstCounter::new(*n).encode(e.encode_family(&[("site", site.as_str())])?)?;
        }
        Ok(())
    }
}

/// One gauge family with a value per live stream.
fn per_stream(
    encoder: &mut DescriptorEncoder,
    snapshot: &Snapshot,
    name: &str,
    help: &str,
    value: impl Fn(&StreamSnapshot) -> i64,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for stream in &snapshot.streams {
        ConstGauge::new(value(stream))
            .encode(e.encode_family(&[("stream", stream.name.as_str())])?)?;
    }
    Ok(())
}

/// One family with a value per core.
fn per_core(
    encoder: &mut DescriptorEncoder,
    snapshot: &Snapshot,
    name: &str,
    help: &str,
    kind: MetricType,
    value: impl Fn(&CoreSnapshot) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, kind)?;
    for (i, core) in snapshot.cores.iter().enumerate() {
        let labels = [("core", i.to_string())];
        let family = e.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value(core)).encode(family)?,
            _ => ConstGauge::new(value(core) as i64).encode(family)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residence_folds_into_the_exported_bounds() {
        // 20 packets at 30 µs, 5 at 2 ms, 1 at 3 s (beyond every bound but +Inf).
        let mut h = ResidenceHistogram::default();
        for _ in 0..20 {
            h.record(30_000);
        }
        for _ in 0..5 {
            h.record(2_000_000);
        }
        h.record(3_000_000_000);
        let nonzero = h
            .counts()
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (i, *n));
        let (per_bound, total, sum) = residence_buckets(nonzero);
        assert_eq!(total, 26);
        assert_eq!(per_bound[0], 20, "<= 50 µs");
        assert_eq!(per_bound[5], 5, "1 to 2.5 ms");
        assert_eq!(
            per_bound.iter().sum::<u64>(),
            25,
            "the 3 s one is beyond every bound: only in +Inf"
        );
        assert!(
            (sum - (20.0 * 30e-6 + 5.0 * 2e-3 + 3.0)).abs() < 0.5,
            "sum {sum}"
        );
    }
}
