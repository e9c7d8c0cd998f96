//! Egresses: players that are not WebRTC peers, the mirror of [`crate::media::ingest`]. An
//! egress (an RTMP player, see `crate::rtmp`) is a tap on a stream at its publisher's core:
//! the core copies each plain video packet of the stream (decrypted, not rewritten for any
//! player: the publisher's own sequence numbers and timestamps), and its audio packets when
//! the egress asked for them (an RTMP push to an edge; only those for an audio-only egress, the
//! transcoder of a stream's RTMP players' audio), into the tap's single-producer ring of
//! fixed-size slots, and a task on the signalling runtime takes them out and repackages them.
//!
//! Nothing is allocated per packet: the core copies a packet into a slot, and wakes the
//! consumer through a [`Notify`] once per video frame (at a packet with the RTP marker bit: a
//! frame's packets are only of use together) or audio packet, which stores a permit without
//! allocating. A
//! full ring drops the packet and counts it: the consumer sees the gap in the sequence
//! numbers and waits for the next keyframe.
//!
//! The tap ends when the core drops it (the egress's session was removed: the stream ended,
//! an administrator kicked it) or when its consumer drops its end (the player left; the core
//! then stops copying to it until the control plane removes it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};
use tokio::sync::Notify;

use crate::control::{EgressSpec, SessionId, StreamId};

/// The layer of an audio-only egress (`audio: true`): no video has it, so the core copies
/// only the stream's audio into its tap (the shared transcoder of a stream's RTMP players,
/// `crate::rtmp::player_audio`).
pub const AUDIO_ONLY_LAYER: u8 = u8::MAX;

/// The longest packet a tap carries (a publisher's packet is at most a datagram).
pub const EGRESS_MTU: usize = 1500;

/// One packet in the ring.
#[derive(Clone, Copy)]
pub struct EgressPacket {
    keyframe: bool,
    audio: bool,
    len: u16,
    data: [u8; EGRESS_MTU],
}

impl EgressPacket {
    /// Whether the publisher marked the packet as part of a keyframe.
    pub fn keyframe(&self) -> bool {
        self.keyframe
    }

    /// Whether it is an audio packet (else video).
    pub fn audio(&self) -> bool {
        self.audio
    }

    /// The plain RTP packet.
    pub fn packet(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// What both ends share: the wake-up and the count of dropped packets.
#[derive(Default)]
struct Shared {
    notify: Notify,
    dropped: AtomicU64,
}

/// The core's end: the stream's packets go in.
pub struct EgressTap {
    producer: Producer<EgressPacket>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EgressTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EgressTap({} free)", self.producer.slots())
    }
}

/// The consumer's end (an RTMP player's task).
pub struct EgressReceiver {
    consumer: Consumer<EgressPacket>,
    shared: Arc<Shared>,
}

/// A ring of `capacity` packets between a core and an egress.
pub fn egress_channel(capacity: usize) -> (EgressTap, EgressReceiver) {
    let (producer, consumer) = RingBuffer::new(capacity);
    let shared = Arc::new(Shared::default());
    (
        EgressTap {
            producer,
            shared: shared.clone(),
        },
        EgressReceiver { consumer, shared },
    )
}

impl EgressTap {
    /// Copies one plain video RTP packet in; a full ring (or a packet too long) drops it,
    /// counted. At the end of a frame (the marker bit) the consumer is woken.
    pub fn push(&mut self, keyframe: bool, packet: &[u8]) {
        let marker = packet.get(1).is_some_and(|b| b & 0x80 != 0);
        self.copy_in(keyframe, false, packet);
        if marker {
            self.wake();
        }
    }

    /// Copies one plain audio RTP packet in, and wakes the consumer: each is a frame.
    pub fn push_audio(&mut self, packet: &[u8]) {
        self.copy_in(false, true, packet);
        self.wake();
    }

    fn copy_in(&mut self, keyframe: bool, audio: bool, packet: &[u8]) {
        if packet.len() > EGRESS_MTU || self.producer.is_full() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut slot = EgressPacket {
                keyframe,
                audio,
                len: packet.len() as u16,
                data: [0; EGRESS_MTU],
            };
            slot.data[..packet.len()].copy_from_slice(packet);
            // Not full (checked above), and this is the only producer.
            let _ = self.producer.push(slot);
        }
    }

    /// Wakes the consumer.
    pub fn wake(&self) {
        self.shared.notify.notify_one();
    }

    /// The consumer dropped its end.
    pub fn is_abandoned(&self) -> bool {
        self.producer.is_abandoned()
    }
}

impl Drop for EgressTap {
    fn drop(&mut self) {
        // The consumer learns at once that no more packets come.
        self.shared.notify.notify_one();
    }
}

impl EgressReceiver {
    /// The next packet, if any.
    pub fn pop(&mut self) -> Option<EgressPacket> {
        self.consumer.pop().ok()
    }

    /// The core dropped the tap and everything it queued was taken.
    pub fn is_finished(&self) -> bool {
        self.consumer.is_abandoned() && self.consumer.is_empty()
    }

    /// Packets the core dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until the core queued a frame (or dropped the tap). Returns at once when it did
    /// so since the last call.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Owns its handle: the ring's consumer is not `Sync`, a future borrowing it not `Send`.
        let shared = self.shared.clone();
        async move { shared.notify.notified().await }
    }
}

/// One egress on a core.
struct Egress {
    id: SessionId,
    stream: StreamId,
    layer: u8,
    audio: bool,
    tap: EgressTap,
}

/// The egresses of one core, by stream (see the module docs).
#[derive(Default)]
pub(super) struct Egresses {
    taps: Vec<Egress>,
}

impl Egresses {
    /// Starts an egress.
    pub(super) fn add(&mut self, spec: EgressSpec) {
        self.taps.push(Egress {
            id: spec.id,
            stream: spec.stream,
            layer: spec.layer,
            audio: spec.audio,
            tap: spec.tap,
        });
    }

    /// Removes egress `id`; false when it is not on this core.
    pub(super) fn remove(&mut self, id: SessionId) -> bool {
        let before = self.taps.len();
        self.taps.retain(|e| e.id != id);
        self.taps.len() != before
    }

    /// Whether `id` is an egress of this core.
    pub(super) fn contains(&self, id: SessionId) -> bool {
        self.taps.iter().any(|e| e.id == id)
    }

    /// Ends every egress.
    pub(super) fn clear(&mut self) {
        self.taps.clear();
    }

    /// The tap of egress `id`, with its stream and layer, to start it on a keyframe.
    pub(super) fn tap_mut(&mut self, id: SessionId) -> Option<(StreamId, u8, &mut EgressTap)> {
        self.taps
            .iter_mut()
            .find(|e| e.id == id)
            .map(|e| (e.stream, e.layer, &mut e.tap))
    }

    /// A publisher's plain packet of `stream`: copied to its taps (video of their layer, and
    /// audio to those that take it).
    pub(super) fn feed(
        &mut self,
        stream: StreamId,
        kind: crate::sdp::MediaKind,
        (keyframe, layer): (bool, u8),
        plain: &[u8],
    ) {
        if self.taps.is_empty() {
            return;
        }
        let audio = kind == crate::sdp::MediaKind::Audio;
        for egress in &mut self.taps {
            if egress.stream != stream || egress.tap.is_abandoned() {
                continue;
            }
            if audio && egress.audio {
                egress.tap.push_audio(plain);
            } else if !audio && egress.layer == layer {
                egress.tap.push(keyframe, plain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::MediaKind;

    fn rtp(seq: u8, marker: bool) -> [u8; 13] {
        let mut p = [0u8; 13];
        p[0] = 0x80;
        p[1] = if marker { 0x80 | 102 } else { 102 };
        p[3] = seq;
        p
    }

    #[test]
    fn a_streams_video_of_the_tapped_layer_crosses_and_a_full_ring_drops_and_counts() {
        let (tap, mut rx) = egress_channel(2);
        let mut egresses = Egresses::default();
        let stream = StreamId(1);
        egresses.add(EgressSpec {
            id: SessionId(9),
            stream,
            stream_name: "s".into(),
            layer: 0,
            audio: false,
            tap,
        });
        egresses.feed(stream, MediaKind::Audio, (false, 0), &rtp(0, false));
        egresses.feed(StreamId(2), MediaKind::Video, (false, 0), &rtp(0, false));
        egresses.feed(stream, MediaKind::Video, (false, 1), &rtp(0, false));
        egresses.feed(stream, MediaKind::Video, (true, 0), &rtp(1, false));
        egresses.feed(stream, MediaKind::Video, (true, 0), &rtp(2, true));
        egresses.feed(stream, MediaKind::Video, (false, 0), &rtp(3, true));
        assert_eq!(rx.dropped(), 1);
        let first = rx.pop().unwrap();
        assert_eq!((first.packet()[3], first.keyframe()), (1, true));
        assert_eq!(rx.pop().unwrap().packet()[3], 2);
        assert!(rx.pop().is_none());
        assert!(!rx.is_finished());
        assert!(egresses.remove(SessionId(9)));
        assert!(rx.is_finished());
    }

    #[test]
    fn the_consumer_is_woken_at_a_frames_end_and_when_the_tap_ends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut tap, rx) = egress_channel(8);
            tap.push(false, &rtp(0, false));
            let quick = std::time::Duration::from_millis(20);
            assert!(tokio::time::timeout(quick, rx.wait()).await.is_err());
            tap.push(false, &rtp(1, true));
            assert!(tokio::time::timeout(quick, rx.wait()).await.is_ok());
            drop(tap);
            assert!(tokio::time::timeout(quick, rx.wait()).await.is_ok());
        });
    }

    #[test]
    fn a_dropped_receiver_abandons_the_tap() {
        let (tap, rx) = egress_channel(2);
        assert!(!tap.is_abandoned());
        drop(rx);
        assert!(tap.is_abandoned());
    }

    #[test]
    fn audio_crosses_only_to_a_tap_that_takes_it_and_wakes_per_packet() {
        let (video_only, mut video_rx) = egress_channel(4);
        let (with_audio, mut audio_rx) = egress_channel(4);
        let mut egresses = Egresses::default();
        let stream = StreamId(1);
        for (id, audio, tap) in [(1, false, video_only), (2, true, with_audio)] {
            egresses.add(EgressSpec {
                id: SessionId(id),
                stream,
                stream_name: "s".into(),
                layer: 0,
                audio,
                tap,
            });
        }
        egresses.feed(stream, MediaKind::Audio, (false, 0), &rtp(7, false));
        egresses.feed(stream, MediaKind::Video, (true, 0), &rtp(8, true));
        assert_eq!(video_rx.pop().unwrap().packet()[3], 8);
        assert!(video_rx.pop().is_none());
        let audio = audio_rx.pop().unwrap();
        assert!(audio.audio() && !audio.keyframe());
        assert_eq!(audio.packet()[3], 7);
        let video = audio_rx.pop().unwrap();
        assert!(!video.audio() && video.keyframe());
        // The audio packet (no marker bit) woke the consumer by itself: a permit is stored.
        use std::future::Future;
        let waker = std::task::Waker::noop();
        let mut wait = Box::pin(audio_rx.wait());
        assert!(wait
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready());
    }

    #[test]
    fn an_audio_only_tap_takes_no_video_of_any_layer() {
        let (tap, mut rx) = egress_channel(4);
        let mut egresses = Egresses::default();
        let stream = StreamId(1);
        egresses.add(EgressSpec {
            id: SessionId(3),
            stream,
            stream_name: "s".into(),
            layer: AUDIO_ONLY_LAYER,
            audio: true,
            tap,
        });
        for layer in [0, 1, 2] {
            egresses.feed(stream, MediaKind::Video, (true, layer), &rtp(layer, true));
        }
        egresses.feed(stream, MediaKind::Audio, (false, 0), &rtp(9, false));
        let audio = rx.pop().unwrap();
        assert!(audio.audio());
        assert_eq!(audio.packet()[3], 9);
        assert!(rx.pop().is_none());
    }
}
