//! The lock-free hand-off between media cores: one single-producer single-consumer ring per
//! ordered pair of cores. A publisher's packet crosses to another core once, however many players
//! that core serves. Slots are fixed-size and preallocated, so a hand-off allocates nothing.

use rtrb::{Consumer, Producer, RingBuffer};

use crate::control::{CoreId, StreamId};
use crate::reactor::io::Waker;
use crate::sdp::MediaKind;

/// The largest RTP packet that crosses cores (decrypted, so no SRTP tag).
pub const FORWARD_MTU: usize = 1500;
/// Slots per ring: about 100 ms of a 10k packets/s core.
const RING_SLOTS: usize = 1024;

/// What crosses from one core to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardKind {
    /// A decrypted RTP packet of the stream, in `data[..len]`; `keyframe` when it is part of a
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
    /// numbers, big-endian, in `data[..len]`.
    Nack { kind: MediaKind, layer: u8 },
    /// A new player on the sending core wants its video to start on the keyframe the
    /// publisher's core cached; `data[0]` is the sending core, `data[1]` the layer.
    KeyframeStart,
    /// One cached video packet of `layer` from its newest keyframe on, in `data[..len]`, for
    /// the players waiting for it (`keyframe` on the first).
    KeyframeReplay { keyframe: bool, layer: u8 },
    /// The end of a replay of `layer`; `replayed` is false when the publisher's core had no
    /// keyframe to replay and asked the publisher for one instead.
    KeyframeReplayEnd { replayed: bool, layer: u8 },
}

/// One ring slot.
pub struct Forwarded {
    /// The stream concerned.
    pub stream: StreamId,
    /// What it carries.
    pub kind: ForwardKind,
    len: u16,
    data: [u8; FORWARD_MTU],
}

impl Forwarded {
    /// The RTP packet, for [`ForwardKind::Rtp`].
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// One core's ends of the mesh.
pub struct MeshEndpoint {
    to: Vec<Option<Producer<Forwarded>>>,
    from: Vec<Option<Consumer<Forwarded>>>,
    wakers: Vec<Waker>,
    wake_pending: Vec<bool>,
    /// This endpoint's core.
    me: usize,
    /// Slots dropped because a ring was full (the other core is overloaded).
    pub dropped: u64,
}

/// Builds the rings for `wakers.len()` cores; endpoint `i` belongs to core `i`.
pub fn build(wakers: Vec<Waker>) -> Vec<MeshEndpoint> {
    let n = wakers.len();
    let mut endpoints: Vec<MeshEndpoint> = (0..n)
        .map(|me| MeshEndpoint {
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
            wakers: wakers.clone(),
            wake_pending: vec![false; n],
            me,
            dropped: 0,
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (producer, consumer) = RingBuffer::new(RING_SLOTS);
                endpoints[from].to[to] = Some(producer);
                endpoints[to].from[from] = Some(consumer);
            }
        }
    }
    endpoints
}

impl MeshEndpoint {
    /// Queues an item for `core`; the core is woken by [`MeshEndpoint::flush_wakes`].
    pub fn send(&mut self, core: CoreId, stream: StreamId, kind: ForwardKind, payload: &[u8]) {
        let Some(producer) = self.to.get_mut(core.0).and_then(Option::as_mut) else {
            return;
        };
        if payload.len() > FORWARD_MTU {
            self.dropped += 1;
            return;
        }
        match producer.write_chunk_uninit(1) {
            Ok(chunk) => {
                // Writing the slot in place (rather than pushing a value) avoids building a
                // 1.5 KB struct on the stack and copying it again.
                chunk.fill_from_iter(std::iter::once_with(|| {
                    let mut slot = Forwarded {
                        stream,
                        kind,
                        len: payload.len() as u16,
                        data: [0; FORWARD_MTU],
                    };
                    slot.data[..payload.len()].copy_from_slice(payload);
                    slot
                }));
                self.wake_pending[core.0] = true;
            }
            Err(_) => self.dropped += 1,
        }
    }

    /// How many more items the ring to `core` takes now.
    pub fn free_slots(&self, core: CoreId) -> usize {
        self.to
            .get(core.0)
            .and_then(Option::as_ref)
            .map_or(0, Producer::slots)
    }

    /// Wakes every core that got items since the last call. Called once per receive batch, so
    /// a burst costs one wake-up, not one per packet.
    pub fn flush_wakes(&mut self) {
        for (core, pending) in self.wake_pending.iter_mut().enumerate() {
            if std::mem::take(pending) {
                self.wakers[core].wake();
            }
        }
    }

    /// Takes up to `max` waiting items from each other core. If any are left, this core wakes
    /// itself at the next [`flush_wakes`](Self::flush_wakes): a core that only drained until
    /// the rings were empty would never get back to its own socket and timers while an
    /// overloaded sender kept them full (consent checks unanswered, statistics not published).
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&Forwarded)) {
        let mut left = false;
        for consumer in self.from.iter_mut().flatten() {
            for _ in 0..max {
                match consumer.pop() {
                    Ok(item) => f(&item),
                    Err(_) => break,
                }
            }
            left |= !consumer.is_empty();
        }
        if left {
            self.wake_pending[self.me] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::io::{BackendChoice, UdpIo};

    #[test]
    fn drain_takes_a_bounded_batch_and_wakes_itself_for_the_rest() {
        let sockets: Vec<UdpIo> = (0..2)
            .map(|_| UdpIo::bind("127.0.0.1:0".parse().unwrap(), BackendChoice::Mmsg).unwrap())
            .collect();
        let wakers: Vec<Waker> = sockets.iter().map(UdpIo::waker).collect();
        let mut endpoints = build(wakers);
        let mut core1 = endpoints.pop().unwrap();
        let mut core0 = endpoints.pop().unwrap();
        for i in 0..100u8 {
            core0.send(
                CoreId(1),
                StreamId(7),
                ForwardKind::Rtp {
                    kind: MediaKind::Video,
                    keyframe: false,
                    layer: 0,
                },
                &[i; 40],
            );
        }
        let mut seen = Vec::new();
        core1.drain(64, |item| seen.push(item.payload()[0]));
        assert_eq!(seen, (0..64).collect::<Vec<u8>>());
        assert!(core1.wake_pending[1], "items are left: wake again");
        core1.flush_wakes();
        assert!(!core1.wake_pending[1]);
        core1.drain(64, |item| seen.push(item.payload()[0]));
        assert_eq!(seen, (0..100).collect::<Vec<u8>>(), "in order, none lost");
        assert!(!core1.wake_pending[1], "nothing left: no self wake-up");
    }
}
