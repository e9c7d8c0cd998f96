//! What a media core counted since it started: totals, read by the reactor into the node's
//! statistics and by tests directly.

/// A core's totals since it started (see `MediaCore::counters`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaCounters {
    /// Media packets received from publishers and decrypted.
    pub rtp_received: u64,
    /// The bytes of those packets as they arrived (SRTP, as on the wire; an ingest's RTP).
    pub rtp_received_bytes: u64,
    /// Media packets sent to players.
    pub rtp_sent: u64,
    /// The bytes of those packets as sent (SRTP, as on the wire).
    pub rtp_sent_bytes: u64,
    /// STUN requests that failed ICE checks (bad integrity, unknown user).
    pub stun_rejected: u64,
    /// SRTP/SRTCP packets that failed authentication or replay checks.
    pub srtp_rejected: u64,
    /// Decrypted RTP/RTCP that did not parse or used an unknown payload type.
    pub rtp_malformed: u64,
    /// Datagrams from addresses no session owns.
    pub unknown_source: u64,
    /// Datagrams that are none of STUN, DTLS, RTP, RTCP.
    pub unclassified: u64,
    /// Packets players reported lost that the core sent again from its retransmission cache.
    pub retransmissions_sent: u64,
    /// Packets players reported lost that the cache did not hold: asked of the publisher.
    pub nacks_forwarded_upstream: u64,
    /// Packets players asked for again beyond their resend budget: dropped.
    pub retransmissions_throttled: u64,
    /// Video packets found missing from what a publisher (or the node a relay comes from)
    /// sends and asked for again, each request counted.
    pub upstream_losses_requested: u64,
    /// Of those, packets that arrived after all.
    pub upstream_losses_recovered: u64,
    /// Missing packets given up (too many requests, too late).
    pub upstream_losses_abandoned: u64,
    /// Players (and relays) whose video started on the keyframe the core's cache held.
    pub keyframe_cache_hits: u64,
    /// Players whose video had to wait for a keyframe requested from the publisher.
    pub keyframe_cache_misses: u64,
    /// Publishers' retransmissions (RFC 4588) dropped without being forwarded: padding-only
    /// bandwidth probes, and copies of packets already received.
    pub rtx_dropped: u64,
    /// Of `retransmissions_sent`, those sent on the player's retransmission stream (RTX).
    pub rtx_sent: u64,
    /// Players' keyframe requests for an ingest publisher (RTMP), which has no way to ask its
    /// encoder: dropped, their players wait for the encoder's next keyframe.
    pub ingest_keyframe_requests: u64,
    /// Heap allocations made while handling SRTP/SRTCP and items from other cores (the
    /// forwarding path, which should make none); counted only in a process that installs
    /// [`crate::alloc_count::CountingAllocator`].
    pub media_allocations: u64,
}
