//! What one media core hands to another: a publisher's packets for the other core's players, and
//! the players' requests back (keyframes, NACKs, keyframe replays), with the wire format of a
//! NACK's numbers ([`LostPackets`] as big-endian pairs). A [`ForwardSink`] carries them: the
//! reactor's lock-free rings between core threads on a real node, [`ForwardQueue`] in memory for
//! tests and simulations.

use crate::control::{CoreId, StreamId};
use crate::sdp::MediaKind;
use crate::session::{LostPackets, MAX_LOST_PACKETS};

/// The largest RTP packet that crosses cores (decrypted, so no SRTP tag).
pub const FORWARD_MTU: usize = 1500;

/// What crosses from one core to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardKind {
    /// A decrypted RTP packet of the stream, in the payload; `keyframe` when it is part of a
    /// video keyframe; `layer` its simulcast layer (0 without simulcast, and for audio).
    Rtp {
        kind: MediaKind,
        keyframe: bool,
        layer: u8,
    },
    /// The publisher's sender report for one track (and simulcast layer).
    SenderReport {
        kind: MediaKind,
        layer: u8,
        ntp_time: u64,
        rtp_time: u32,
    },
    /// A player on the sending core wants a keyframe of a simulcast layer (0 without
    /// simulcast) from the stream's publisher.
    KeyframeRequest { layer: u8 },
    /// A player on the sending core lost packets of a track's layer: the publisher's sequence
    /// numbers, big-endian, in the payload.
    Nack { kind: MediaKind, layer: u8 },
    /// A new player on the sending core wants its video to start on the keyframe the
    /// publisher's core cached; the payload is `[sending core, layer]`.
    KeyframeStart,
    /// One cached video packet of `layer` from its newest keyframe on, in the payload, for
    /// the players waiting for it (`keyframe` on the first).
    KeyframeReplay { keyframe: bool, layer: u8 },
    /// The end of a replay of `layer`; `replayed` is false when the publisher's core had no
    /// keyframe to replay and asked the publisher for one instead.
    KeyframeReplayEnd { replayed: bool, layer: u8 },
}

/// The payload of a [`ForwardKind::Nack`]: the publisher's sequence numbers as big-endian pairs
/// of bytes, read back into the inline list a session takes, so the trip allocates nothing.
impl LostPackets {
    /// Reads numbers written by [`LostPackets::to_be_bytes`] (an odd last byte is ignored).
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect()
    }

    /// The numbers as big-endian pairs of bytes, for the cross-core hand-off; returns the length.
    pub fn to_be_bytes(&self, out: &mut [u8; 2 * MAX_LOST_PACKETS]) -> usize {
        for (chunk, seq) in out.chunks_exact_mut(2).zip(self.as_slice()) {
            chunk.copy_from_slice(&seq.to_be_bytes());
        }
        2 * self.as_slice().len()
    }
}

/// Carries items to other cores. Items to one core arrive in order; a full queue drops them.
pub trait ForwardSink {
    /// Queues an item for `core` (a payload longer than [`FORWARD_MTU`] is dropped).
    fn forward(&mut self, core: CoreId, stream: StreamId, kind: ForwardKind, payload: &[u8]);

    /// How many more items the queue to `core` takes now.
    fn free_slots(&self, core: CoreId) -> usize;
}

/// One item a [`ForwardQueue`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedItem {
    /// The core it is for.
    pub core: CoreId,
    /// The stream concerned.
    pub stream: StreamId,
    /// What it carries.
    pub kind: ForwardKind,
    /// The packet, sequence numbers or `[core, layer]`, as `kind` says.
    pub payload: Vec<u8>,
}

/// A [`ForwardSink`] that keeps every item in memory, unbounded, until it is drained (and
/// handed to the other core's `MediaCore::handle_forwarded`). Allocates per item.
#[derive(Debug, Default)]
pub struct ForwardQueue {
    items: Vec<ForwardedItem>,
}

impl ForwardQueue {
    /// An empty queue.
    pub fn new() -> ForwardQueue {
        ForwardQueue::default()
    }

    /// Takes the items queued so far, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, ForwardedItem> {
        self.items.drain(..)
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl ForwardSink for ForwardQueue {
    fn forward(&mut self, core: CoreId, stream: StreamId, kind: ForwardKind, payload: &[u8]) {
        if payload.len() <= FORWARD_MTU {
            self.items.push(ForwardedItem {
                core,
                stream,
                kind,
                payload: payload.to_vec(),
            });
        }
    }

    fn free_slots(&self, _core: CoreId) -> usize {
        usize::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nacked_numbers_cross_as_big_endian_pairs() {
        let lost: LostPackets = [1u16, 0x1234, 65535].into_iter().collect();
        let mut bytes = [0u8; 2 * MAX_LOST_PACKETS];
        let len = lost.to_be_bytes(&mut bytes);
        assert_eq!(&bytes[..len], [0, 1, 0x12, 0x34, 0xff, 0xff]);
        assert_eq!(LostPackets::from_be_bytes(&bytes[..len]), lost);
        assert_eq!(LostPackets::from_be_bytes(&[0, 7, 9]).as_slice(), [7]);
        assert!(LostPackets::from_be_bytes(&[]).is_empty());
    }
}
