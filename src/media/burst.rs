//! A burst of one stream's video packets, held plain so that the router can fan it out player by
//! player (see `Router::fan_out`).
//!
//! With UDP GSO a player's packets of a frame leave in one send, so they are held until the
//! frame's last packet (the RTP marker bit) in any case. Holding them sealed, one copy per
//! player in the send queue, meant a frame's whole fan-out (~1.2 MB at 100 players) sat in
//! memory until the marker and had left the cache when the kernel copied it; and the first
//! player's copy of a keyframe waited for every other player's. Held plain, a burst is a few
//! kilobytes; at its end each player's copies are sealed back to back and handed to the kernel
//! a few players at a time, while they are still in the cache.
//!
//! The buffer is allocated once, when burst order is turned on: holding a packet copies it into
//! the buffer and allocates nothing.

use std::time::Instant;

use crate::control::StreamId;
use crate::media::tx::MAX_DATAGRAM;
use crate::session::ReceivedMedia;

/// The most packets a burst holds: a GSO send's segments (a keyframe needs more sends anyway).
const BURST_PACKETS: usize = 64;
/// The most bytes a burst holds: a keyframe of this node's streams (~60 packets of ~1,200
/// bytes), so that it is fanned out once, not in pieces.
const BURST_BYTES: usize = 96 * 1024;

/// One held packet: when it arrived, what it is, and where its bytes are in the buffer.
#[derive(Clone, Copy)]
struct Held {
    now: Instant,
    media: ReceivedMedia,
    start: usize,
    len: usize,
}

/// The packets of the burst being held (at most one stream's at a time).
pub(super) struct Burst {
    stream: Option<StreamId>,
    bytes: Box<[u8]>,
    used: usize,
    packets: Vec<Held>,
}

impl Burst {
    /// An empty burst; allocates its buffer.
    pub(super) fn new() -> Burst {
        Burst {
            stream: None,
            bytes: vec![0; BURST_BYTES].into_boxed_slice(),
            used: 0,
            packets: Vec::with_capacity(BURST_PACKETS),
        }
    }

    /// The stream whose packets are held, if any are.
    pub(super) fn stream(&self) -> Option<StreamId> {
        self.stream
    }

    /// Whether `stream`'s packet of `len` bytes may join the burst: the burst is empty, or of
    /// the same stream and has room for it.
    pub(super) fn fits(&self, stream: StreamId, len: usize) -> bool {
        len <= MAX_DATAGRAM
            && self.stream.is_none_or(|s| s == stream)
            && self.packets.len() < BURST_PACKETS
            && self.used + len <= self.bytes.len()
    }

    /// Holds a copy of `plain`, which [`fits`](Self::fits).
    pub(super) fn hold(
        &mut self,
        stream: StreamId,
        now: Instant,
        media: ReceivedMedia,
        plain: &[u8],
    ) {
        debug_assert!(self.fits(stream, plain.len()));
        let start = self.used;
        self.bytes[start..start + plain.len()].copy_from_slice(plain);
        self.used += plain.len();
        self.stream = Some(stream);
        self.packets.push(Held {
            now,
            media,
            start,
            len: plain.len(),
        });
    }

    /// When the oldest held packet arrived, if any is held.
    pub(super) fn held_since(&self) -> Option<Instant> {
        self.packets.first().map(|p| p.now)
    }

    /// The held packets in the order they arrived: each with its arrival time.
    pub(super) fn packets(&self) -> impl Iterator<Item = (Instant, ReceivedMedia, &[u8])> {
        self.packets
            .iter()
            .map(|p| (p.now, p.media, &self.bytes[p.start..p.start + p.len]))
    }

    /// Forgets the held packets (keeps the buffer).
    pub(super) fn clear(&mut self) {
        self.stream = None;
        self.used = 0;
        self.packets.clear();
    }
}

/// Whether a plain RTP packet has the marker bit set: the last packet of a video frame.
pub(super) fn ends_frame(plain: &[u8]) -> bool {
    plain.len() >= 12 && plain[1] & 0x80 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::MediaKind;

    fn video(len: usize) -> ReceivedMedia {
        ReceivedMedia {
            kind: MediaKind::Video,
            len,
            keyframe: false,
            layer: 0,
        }
    }

    #[test]
    fn holds_one_streams_packets_in_order_up_to_its_bounds() {
        let mut burst = Burst::new();
        let now = Instant::now();
        let (a, b) = (StreamId(1), StreamId(2));
        assert!(burst.fits(a, 100) && burst.fits(b, 100));
        burst.hold(a, now, video(3), &[1, 2, 3]);
        burst.hold(a, now, video(2), &[4, 5]);
        assert_eq!(burst.stream(), Some(a));
        assert!(!burst.fits(b, 1), "one stream at a time");
        let held: Vec<Vec<u8>> = burst.packets().map(|(_, _, p)| p.to_vec()).collect();
        assert_eq!(held, [vec![1, 2, 3], vec![4, 5]]);
        burst.clear();
        assert_eq!(burst.stream(), None);
        assert_eq!(burst.packets().count(), 0);

        let packet = [0u8; 1200];
        let mut n = 0;
        while burst.fits(a, packet.len()) {
            burst.hold(a, now, video(packet.len()), &packet);
            n += 1;
        }
        assert_eq!(n, BURST_PACKETS.min(BURST_BYTES / packet.len()));
        assert!(!burst.fits(a, MAX_DATAGRAM + 1));
    }

    #[test]
    fn the_marker_bit_ends_a_frame() {
        let mut packet = [0x80u8; 12];
        packet[1] = 96;
        assert!(!ends_frame(&packet));
        packet[1] = 0x80 | 96;
        assert!(ends_frame(&packet));
        assert!(!ends_frame(&packet[..11]));
    }
}
