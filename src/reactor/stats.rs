//! The counters a core thread publishes for `/api/stats` and `/metrics`: its media core's totals,
//! its hand-off drops, its allocations and how long datagrams stayed in it, as atomics the
//! signalling thread reads.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::media::MediaCounters;
use crate::reactor::io::{IoStats, ResidenceHistogram, TcpStats, RESIDENCE_BUCKETS};

/// While a core is busy its counters are published with its work, at most this often.
const STATS_INTERVAL: Duration = Duration::from_millis(20);
/// When it goes quiet, what it did since the last publication is published this long after it
/// at the latest (the core wakes for it). Between the two, a steady stream of packets never
/// wakes the core for its statistics, and an idle core never wakes at all.
const STATS_LATEST: Duration = Duration::from_millis(50);

/// When a core publishes its counters (see [`STATS_INTERVAL`], [`STATS_LATEST`]).
#[derive(Debug)]
pub(super) struct StatsSchedule {
    last: Instant,
    /// Something happened since the last publication.
    dirty: bool,
}

impl StatsSchedule {
    /// Counters published at `now`.
    pub(super) fn published_at(now: Instant) -> StatsSchedule {
        StatsSchedule {
            last: now,
            dirty: false,
        }
    }

    /// When the core must wake to publish.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.dirty.then(|| self.last + STATS_LATEST)
    }

    /// After one turn of the core's loop (`active`: it handled anything): whether to publish
    /// now.
    pub(super) fn due(&mut self, now: Instant, active: bool) -> bool {
        self.dirty |= active;
        if self.dirty && now >= self.last + STATS_INTERVAL {
            self.dirty = false;
            self.last = now;
            return true;
        }
        false
    }
}

/// Counters a core publishes for `/api/stats`. Written by the core thread with its work, a
/// little after anything happened (see `StatsSchedule`); `sessions` at once.
#[derive(Debug, Default)]
pub struct CoreStats {
    /// Sessions on this core; the signalling thread places new sessions on the least loaded core.
    pub sessions: AtomicUsize,
    /// Media packets received from publishers and decrypted.
    pub rtp_received: AtomicU64,
    /// The bytes of those packets as they arrived (SRTP; an ingest's RTP).
    pub rtp_received_bytes: AtomicU64,
    /// Media packets sent to players.
    pub rtp_sent: AtomicU64,
    /// The bytes of those packets as sent (SRTP).
    pub rtp_sent_bytes: AtomicU64,
    /// STUN requests that failed ICE checks (bad integrity, unknown user).
    pub stun_rejected: AtomicU64,
    /// SRTP/SRTCP packets that failed authentication or replay checks.
    pub srtp_rejected: AtomicU64,
    /// Decrypted RTP/RTCP that did not parse or used an unknown payload type.
    pub rtp_malformed: AtomicU64,
    /// Datagrams from addresses no session owns.
    pub unknown_source: AtomicU64,
    /// Datagrams that are none of STUN, DTLS, RTP, RTCP.
    pub unclassified: AtomicU64,
    /// Packets dropped because another core's hand-off ring was full.
    pub handoff_dropped: AtomicU64,
    /// UDP datagrams the kernel accepted for sending.
    pub udp_datagrams_sent: AtomicU64,
    /// Sends those datagrams left in (one each, or several with UDP GSO).
    pub udp_sends: AtomicU64,
    /// Of the sends that carried them, those with several datagrams (UDP GSO).
    pub udp_gso_sends: AtomicU64,
    /// Sockets whose GSO send the kernel refused (they send one datagram at a time since).
    pub udp_gso_fallbacks: AtomicU64,
    /// Packets players reported lost that the core sent again from its retransmission cache.
    pub retransmissions_sent: AtomicU64,
    /// Packets players reported lost that the cache did not hold: asked of the publisher.
    pub nacks_forwarded_upstream: AtomicU64,
    /// Packets players asked for again beyond their resend budget: dropped.
    pub retransmissions_throttled: AtomicU64,
    /// Video packets the node found missing from what it receives (from a publisher, or from
    /// the node a relay comes from) and asked for again, each request counted.
    pub upstream_losses_requested: AtomicU64,
    /// Of those, packets that arrived after all.
    pub upstream_losses_recovered: AtomicU64,
    /// Missing packets given up (too many requests, too late).
    pub upstream_losses_abandoned: AtomicU64,
    /// Players (and relays) whose video started on the keyframe the core's cache held.
    pub keyframe_cache_hits: AtomicU64,
    /// Players whose video had to wait for a keyframe requested from the publisher.
    pub keyframe_cache_misses: AtomicU64,
    /// Of `retransmissions_sent`, those sent on the player's retransmission stream (RTX).
    pub rtx_sent: AtomicU64,
    /// Publishers' retransmissions (RFC 4588) dropped without being forwarded: padding-only
    /// bandwidth probes, and copies of packets already received.
    pub rtx_dropped: AtomicU64,
    /// Heap allocations the core thread has made since it started (see [`crate::alloc_count`]);
    /// meaningful only when `counts_allocations` is set.
    pub allocations: AtomicU64,
    /// The part of `allocations` made while handling SRTP/SRTCP from peers and packets from
    /// other cores: the forwarding path, which should make none. The rest is control traffic
    /// (STUN, whose decoder allocates; DTLS handshakes; session setup) and timers.
    pub media_allocations: AtomicU64,
    /// Whether the process counts allocations (the `rtcdn` binary does).
    pub counts_allocations: AtomicBool,
    /// How long received datagrams stayed in the core, kernel stamp to flush of their sends
    /// (cumulative counts per [`ResidenceHistogram`] bucket).
    pub residence: ResidenceCounts,
    /// ICE-TCP: connections and frames, and why connections were closed.
    pub tcp: TcpCounts,
}

/// A published copy of a core's [`TcpStats`].
#[derive(Debug, Default)]
pub struct TcpCounts {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Closed at accept: the core had its maximum open.
    pub rejected_full: AtomicU64,
    /// Closed at accept: its IP address had the most one address may hold.
    pub rejected_per_ip: AtomicU64,
    /// Closed by the peer, or after a failed read or write.
    pub closed_by_peer: AtomicU64,
    /// Closed: no valid ICE check in time.
    pub stun_timeouts: AtomicU64,
    /// Closed: nothing received for too long.
    pub idle_timeouts: AtomicU64,
    /// Closed: a length prefix above the largest datagram.
    pub oversized: AtomicU64,
    /// Closed: the first frame was not STUN.
    pub garbage: AtomicU64,
    /// Frames received and handed to the media core.
    pub rx_frames: AtomicU64,
    /// Frames queued for sending.
    pub tx_frames: AtomicU64,
    /// Frames dropped: the connection's write queue was full (a slow reader).
    pub tx_dropped: AtomicU64,
    /// Frames not sent: their session's connection closed and its id serves another peer.
    pub tx_misdirected: AtomicU64,
    /// Connections the core opened for relays over TCP.
    pub connects: AtomicU64,
    /// Of those, connects that failed.
    pub connect_failures: AtomicU64,
    /// Closed: the relay session that opened it ended.
    pub closed_by_core: AtomicU64,
}

impl TcpCounts {
    fn store(&self, t: &TcpStats) {
        let store = |counter: &AtomicU64, value: u64| counter.store(value, Ordering::Relaxed);
        store(&self.accepted, t.accepted);
        store(&self.open, t.open);
        store(&self.rejected_full, t.rejected_full);
        store(&self.rejected_per_ip, t.rejected_per_ip);
        store(&self.closed_by_peer, t.closed_by_peer);
        store(&self.stun_timeouts, t.stun_timeouts);
        store(&self.idle_timeouts, t.idle_timeouts);
        store(&self.oversized, t.oversized);
        store(&self.garbage, t.garbage);
        store(&self.rx_frames, t.rx_frames);
        store(&self.tx_frames, t.tx_frames);
        store(&self.tx_dropped, t.tx_dropped);
        store(&self.tx_misdirected, t.tx_misdirected);
        store(&self.connects, t.connects);
        store(&self.connect_failures, t.connect_failures);
        store(&self.closed_by_core, t.closed_by_core);
    }

    /// The counters by name, for `/api/stats`.
    pub fn to_json(&self) -> serde_json::Value {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "accepted": load(&self.accepted),
            "open": load(&self.open),
            "rejected_full": load(&self.rejected_full),
            "rejected_per_ip": load(&self.rejected_per_ip),
            "closed_by_peer": load(&self.closed_by_peer),
            "stun_timeouts": load(&self.stun_timeouts),
            "idle_timeouts": load(&self.idle_timeouts),
            "oversized": load(&self.oversized),
            "garbage": load(&self.garbage),
            "rx_frames": load(&self.rx_frames),
            "tx_frames": load(&self.tx_frames),
            "tx_dropped": load(&self.tx_dropped),
            "tx_misdirected": load(&self.tx_misdirected),
            "connects": load(&self.connects),
            "connect_failures": load(&self.connect_failures),
            "closed_by_core": load(&self.closed_by_core),
        })
    }
}

impl CoreStats {
    /// Publishes a core's totals: its media core's `counters`, the items its hand-off rings
    /// dropped, its send queue's `residence` times, its UDP send counters and its ICE-TCP
    /// counters.
    pub(super) fn publish(
        &self,
        c: &MediaCounters,
        handoff_dropped: u64,
        residence: &ResidenceHistogram,
        udp: &IoStats,
        tcp: &TcpStats,
    ) {
        self.tcp.store(tcp);
        let store = |counter: &AtomicU64, value: u64| counter.store(value, Ordering::Relaxed);
        store(&self.rtp_received, c.rtp_received);
        store(&self.rtp_sent, c.rtp_sent);
        store(&self.rtp_received_bytes, c.rtp_received_bytes);
        store(&self.rtp_sent_bytes, c.rtp_sent_bytes);
        store(&self.stun_rejected, c.stun_rejected);
        store(&self.srtp_rejected, c.srtp_rejected);
        store(&self.rtp_malformed, c.rtp_malformed);
        store(&self.unknown_source, c.unknown_source);
        store(&self.unclassified, c.unclassified);
        store(&self.retransmissions_sent, c.retransmissions_sent);
        store(&self.nacks_forwarded_upstream, c.nacks_forwarded_upstream);
        store(&self.retransmissions_throttled, c.retransmissions_throttled);
        store(&self.upstream_losses_requested, c.upstream_losses_requested);
        store(&self.upstream_losses_recovered, c.upstream_losses_recovered);
        store(&self.upstream_losses_abandoned, c.upstream_losses_abandoned);
        store(&self.keyframe_cache_hits, c.keyframe_cache_hits);
        store(&self.keyframe_cache_misses, c.keyframe_cache_misses);
        store(&self.rtx_dropped, c.rtx_dropped);
        store(&self.rtx_sent, c.rtx_sent);
        store(&self.handoff_dropped, handoff_dropped);
        store(&self.udp_datagrams_sent, udp.tx_datagrams);
        store(&self.udp_sends, udp.tx_sends);
        store(&self.udp_gso_sends, udp.tx_gso_sends);
        store(&self.udp_gso_fallbacks, udp.tx_gso_fallbacks);
        if let Some(n) = crate::alloc_count::this_thread() {
            store(&self.allocations, n);
            store(&self.media_allocations, c.media_allocations);
            self.counts_allocations.store(true, Ordering::Relaxed);
        }
        self.residence.store(residence);
    }
}

/// A published copy of a core's [`ResidenceHistogram`].
pub struct ResidenceCounts(Box<[AtomicU64]>);

impl Default for ResidenceCounts {
    fn default() -> Self {
        Self((0..RESIDENCE_BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl fmt::Debug for ResidenceCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ResidenceCounts({} measured)",
            self.nonzero().map(|(_, n)| n).sum::<u64>()
        )
    }
}

impl ResidenceCounts {
    fn store(&self, histogram: &ResidenceHistogram) {
        for (published, &count) in self.0.iter().zip(histogram.counts()) {
            if count != 0 {
                published.store(count, Ordering::Relaxed);
            }
        }
    }

    /// The buckets that hold anything: (index for [`ResidenceHistogram::bucket_range`], count).
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_core_publishes_with_its_work_and_a_quiet_one_wakes_once() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut schedule = StatsSchedule::published_at(start);
        assert_eq!(schedule.poll_timeout(), None, "idle: no wake-up");
        assert!(!schedule.due(ms(5), true), "too soon");
        assert_eq!(schedule.poll_timeout(), Some(ms(50)));
        assert!(
            schedule.due(ms(21), true),
            "with the work, past the interval"
        );
        assert_eq!(schedule.poll_timeout(), None);
        assert!(!schedule.due(ms(30), true));
        assert!(!schedule.due(ms(40), false));
        assert!(schedule.due(ms(71), false), "woken for it");
        assert!(!schedule.due(ms(500), false));
    }
}
