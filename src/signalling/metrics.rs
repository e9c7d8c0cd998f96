//! `GET /metrics`: the node's counters in the Prometheus text format (0.0.4), encoded by the
//! `prometheus-client` crate from a snapshot taken at each scrape (the counters themselves live
//! where they are counted: the media cores' atomics, the registry, the panic tally).
//!
//! Every family is prefixed `rtcdn_`; per-core families carry a `core` label, per-stream ones a
//! `stream` label. It is an admin endpoint, like `/api/stats`.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Signalling;
use crate::reactor::io::ResidenceHistogram;

/// Upper bounds (seconds) of the residence histogram's buckets, besides `+Inf`: the node's own
/// log-linear buckets are 12.5% wide, too many to export; these cover 50 µs to 1 s.
const RESIDENCE_BOUNDS: [f64; 13] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// What one scrape reports.
#[derive(Debug, Default)]
struct Snapshot {
    cores: Vec<CoreSnapshot>,
    streams: Vec<StreamSnapshot>,
    panics: Vec<(String, u64)>,
}

#[derive(Debug)]
struct StreamSnapshot {
    name: String,
    players: usize,
    relays: usize,
    media_flowing: bool,
}

#[derive(Debug, Default)]
struct CoreSnapshot {
    sessions: usize,
    rtp_received: u64,
    rtp_sent: u64,
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
                rtp_sent: s.rtp_sent.load(Relaxed),
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
    let streams = state
        .registry()
        .streams()
        .map(|s| StreamSnapshot {
            name: s.name.clone(),
            players: s.players.len(),
            relays: s.relays.len(),
            media_flowing: s.media_flowing,
        })
        .collect();
    Snapshot {
        cores,
        streams,
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

        per_core(
            &mut encoder,
            self,
            "sessions",
            "Sessions on the media core",
            MetricType::Gauge,
            |c| c.sessions as u64,
        )?;
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
