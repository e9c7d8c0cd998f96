//! Ingests: publishers that are not WebRTC peers. An ingest (an RTMP publisher, see
//! `crate::rtmp`) makes plain RTP packets on the signalling runtime and hands them to the
//! media core of its stream through a single-producer ring of fixed-size slots; the core
//! routes them like a WebRTC publisher's decrypted packets, so fan-out, the keyframe cache,
//! NACK repair from the cache, other cores and relays are the router's as for any stream.
//!
//! Nothing is allocated per packet on either side: the producer copies a packet into a slot,
//! the core copies it out onto its stack and routes it from there.

use rtrb::{Consumer, Producer, RingBuffer};

use crate::sdp::MediaKind;

/// The longest packet an ingest hands over (what browsers send, leaving room for SRTP and the
/// header extensions players' packets get).
pub const INGEST_MTU: usize = 1200;

/// One packet in the ring.
#[derive(Clone, Copy)]
pub struct IngestPacket {
    kind: MediaKind,
    keyframe: bool,
    len: u16,
    data: [u8; INGEST_MTU],
}

impl IngestPacket {
    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Whether the packet is part of a video keyframe.
    pub fn keyframe(&self) -> bool {
        self.keyframe
    }

    /// The RTP packet.
    pub fn packet(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// The packet did not go into the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IngestPushError {
    /// The core has not taken the packets before it yet.
    #[error("the media core's ingest ring is full")]
    Full,
    /// Longer than [`INGEST_MTU`].
    #[error("packet longer than {INGEST_MTU} bytes")]
    TooLong,
}

/// The ingest's end: it pushes packets (and then wakes the core).
pub struct IngestSender {
    producer: Producer<IngestPacket>,
}

/// The core's end (in [`crate::control::IngestSpec`]).
pub struct IngestFeed {
    consumer: Consumer<IngestPacket>,
}

impl std::fmt::Debug for IngestFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IngestFeed({} queued)", self.consumer.slots())
    }
}

/// A ring of `capacity` packets between an ingest and its core.
pub fn ingest_channel(capacity: usize) -> (IngestSender, IngestFeed) {
    let (producer, consumer) = RingBuffer::new(capacity);
    (IngestSender { producer }, IngestFeed { consumer })
}

impl IngestSender {
    /// Free slots: how many packets can be pushed now.
    pub fn free(&self) -> usize {
        self.producer.slots()
    }

    /// Queues one RTP packet for the core.
    pub fn push(
        &mut self,
        kind: MediaKind,
        keyframe: bool,
        packet: &[u8],
    ) -> Result<(), IngestPushError> {
        if packet.len() > INGEST_MTU {
            return Err(IngestPushError::TooLong);
        }
        let mut slot = IngestPacket {
            kind,
            keyframe,
            len: packet.len() as u16,
            data: [0; INGEST_MTU],
        };
        slot.data[..packet.len()].copy_from_slice(packet);
        self.producer.push(slot).map_err(|_| IngestPushError::Full)
    }
}

impl IngestFeed {
    /// The next packet, if any.
    pub fn pop(&mut self) -> Option<IngestPacket> {
        self.consumer.pop().ok()
    }

    /// Whether packets wait in the ring.
    pub fn has_queued(&self) -> bool {
        !self.consumer.is_empty()
    }

    /// The ingest dropped its end and everything it queued was taken.
    pub fn is_finished(&self) -> bool {
        self.consumer.is_abandoned() && self.consumer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_cross_in_order_until_the_ring_is_full() {
        let (mut tx, mut rx) = ingest_channel(2);
        tx.push(MediaKind::Video, true, &[1, 2, 3]).unwrap();
        tx.push(MediaKind::Video, false, &[4]).unwrap();
        assert_eq!(
            tx.push(MediaKind::Video, false, &[5]),
            Err(IngestPushError::Full)
        );
        assert_eq!(
            tx.push(MediaKind::Video, false, &[0; INGEST_MTU + 1]),
            Err(IngestPushError::TooLong)
        );
        let first = rx.pop().unwrap();
        assert_eq!((first.packet(), first.keyframe()), (&[1, 2, 3][..], true));
        assert_eq!(rx.pop().unwrap().packet(), [4]);
        assert!(rx.pop().is_none());
        assert!(!rx.is_finished());
        drop(tx);
        assert!(rx.is_finished());
    }
}
