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
    /// A decrypted RTP packet of the stream, in `data[..len]`.
    Rtp(MediaKind),
    /// The publisher's sender report for one track.
    SenderReport {
        kind: MediaKind,
        ntp_time: u64,
        rtp_time: u32,
    },
    /// A player on the sending core wants a keyframe from the stream's publisher.
    KeyframeRequest,
    /// A player on the sending core lost packets of a track: the publisher's sequence numbers,
    /// big-endian, in `data[..len]`.
    Nack { kind: MediaKind },
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
    /// Slots dropped because a ring was full (the other core is overloaded).
    pub dropped: u64,
}

/// Builds the rings for `wakers.len()` cores; endpoint `i` belongs to core `i`.
pub fn build(wakers: Vec<Waker>) -> Vec<MeshEndpoint> {
    let n = wakers.len();
    let mut endpoints: Vec<MeshEndpoint> = (0..n)
        .map(|_| MeshEndpoint {
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
            wakers: wakers.clone(),
            wake_pending: vec![false; n],
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

    /// Wakes every core that got items since the last call. Called once per receive batch, so
    /// a burst costs one wake-up, not one per packet.
    pub fn flush_wakes(&mut self) {
        for (core, pending) in self.wake_pending.iter_mut().enumerate() {
            if std::mem::take(pending) {
                self.wakers[core].wake();
            }
        }
    }

    /// Takes every waiting item from every other core.
    pub fn drain(&mut self, mut f: impl FnMut(&Forwarded)) {
        for consumer in self.from.iter_mut().flatten() {
            while let Ok(item) = consumer.pop() {
                f(&item);
            }
        }
    }
}
