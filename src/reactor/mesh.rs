//! The lock-free hand-off between media cores: one single-producer single-consumer ring per
//! ordered pair of cores. A publisher's packet crosses to another core once, however many players
//! that core serves. Slots are fixed-size and preallocated, so a hand-off allocates nothing. The
//! rings a core writes are its media core's [`ForwardSink`]; the reactor drains the ones it reads.

use rtrb::{Consumer, Producer, RingBuffer};

use crate::control::{CoreId, StreamId};
use crate::media::ForwardSink;
pub use crate::media::{ForwardKind, FORWARD_MTU};
use crate::reactor::io::Waker;

/// Slots per ring: about 100 ms of a 10k packets/s core.
const RING_SLOTS: usize = 1024;

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
    /// The packet, sequence numbers or `[core, layer]`, as `kind` says.
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// One core's ends of the mesh: the rings it writes to other cores (its media core's
/// [`ForwardSink`]) and the rings it reads from them (drained by the reactor).
pub struct MeshEndpoint {
    /// Rings to the other cores.
    pub outbox: MeshOutbox,
    /// Rings from the other cores.
    pub inbox: MeshInbox,
}

/// The rings a core writes to the other cores.
pub struct MeshOutbox {
    to: Vec<Option<Producer<Forwarded>>>,
    wakers: Vec<Waker>,
    wake_pending: Vec<bool>,
    /// This endpoint's core.
    me: usize,
    /// Slots dropped because a ring was full (the other core is overloaded).
    pub dropped: u64,
}

/// The rings a core reads from the other cores.
pub struct MeshInbox {
    from: Vec<Option<Consumer<Forwarded>>>,
}

/// Builds the rings for `wakers.len()` cores; endpoint `i` belongs to core `i`.
pub fn build(wakers: Vec<Waker>) -> Vec<MeshEndpoint> {
    let n = wakers.len();
    let mut endpoints: Vec<MeshEndpoint> = (0..n)
        .map(|me| MeshEndpoint {
            outbox: MeshOutbox {
                to: (0..n).map(|_| None).collect(),
                wakers: wakers.clone(),
                wake_pending: vec![false; n],
                me,
                dropped: 0,
            },
            inbox: MeshInbox {
                from: (0..n).map(|_| None).collect(),
            },
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (producer, consumer) = RingBuffer::new(RING_SLOTS);
                endpoints[from].outbox.to[to] = Some(producer);
                endpoints[to].inbox.from[from] = Some(consumer);
            }
        }
    }
    endpoints
}

impl MeshOutbox {
    /// Queues an item for `core`; the core is woken by [`MeshOutbox::flush_wakes`].
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

    /// Makes this core's own next poll return at once (its inbox has items left).
    pub fn wake_self(&mut self) {
        self.wake_pending[self.me] = true;
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
}

impl ForwardSink for MeshOutbox {
    fn forward(&mut self, core: CoreId, stream: StreamId, kind: ForwardKind, payload: &[u8]) {
        self.send(core, stream, kind, payload);
    }

    fn free_slots(&self, core: CoreId) -> usize {
        MeshOutbox::free_slots(self, core)
    }
}

impl MeshInbox {
    /// Takes up to `max` waiting items from each other core; returns whether any are left.
    /// The caller then wakes its core again ([`MeshOutbox::wake_self`]): a core that only
    /// drained until the rings were empty would never get back to its own socket and timers
    /// while an overloaded sender kept them full (consent checks unanswered, statistics not
    /// published).
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&Forwarded)) -> bool {
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
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::io::{BackendChoice, UdpIo};
    use crate::sdp::MediaKind;

    #[test]
    fn drain_takes_a_bounded_batch_and_says_when_items_are_left() {
        let sockets: Vec<UdpIo> = (0..2)
            .map(|_| UdpIo::bind("127.0.0.1:0".parse().unwrap(), BackendChoice::Mmsg).unwrap())
            .collect();
        let wakers: Vec<Waker> = sockets.iter().map(UdpIo::waker).collect();
        let mut endpoints = build(wakers);
        let mut core1 = endpoints.pop().unwrap().inbox;
        let mut core0 = endpoints.pop().unwrap().outbox;
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
        let left = core1.drain(64, |item| seen.push(item.payload()[0]));
        assert_eq!(seen, (0..64).collect::<Vec<u8>>());
        assert!(left, "items are left: wake again");
        let left = core1.drain(64, |item| seen.push(item.payload()[0]));
        assert_eq!(seen, (0..100).collect::<Vec<u8>>(), "in order, none lost");
        assert!(!left, "nothing left: no self wake-up");
    }
}
