//! The last packets of one video track as a core forwarded them, so a player's NACK can be
//! answered by the node instead of the publisher, sans-IO.
//!
//! The publisher's retransmission reuses the original SRTP index, which the node already
//! accepted: its replay window rejects it, so only losses between publisher and node could be
//! repaired. A cache on every core that plays the stream repairs the node→player hop too, on the
//! player's own core, without crossing cores.
//!
//! The ring also remembers where the newest keyframe began, so a new player can start on it at
//! once ([`RetransmissionCache::since_keyframe`]) instead of waiting for its keyframe request to
//! reach the publisher and a keyframe to come back.
//!
//! Memory: [`CACHE_SLOTS`] slots of [`CACHE_SLOT_BYTES`] plus 16 bytes of bookkeeping each,
//! about 758 KiB per (video track, core with players of it), allocated once when the track gets
//! its first player on the core and freed with its last. 512 slots hold about one second of a
//! 4–5 Mbit/s video track (1100–1200-byte packets), longer at lower rates: longer than a
//! browser keeps asking for one packet (it gives up after a few round trips).

use rtp::SeqNo;

use crate::media::forward::FORWARD_MTU;

/// Packets kept per track. A power of two that divides 2^16, so a slot is the sequence number's
/// low bits.
pub const CACHE_SLOTS: usize = 512;
/// The largest packet kept: anything that may cross cores (decrypted RTP, no SRTP tag).
pub const CACHE_SLOT_BYTES: usize = FORWARD_MTU;

/// Why a packet was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotCached {
    /// Shorter than an RTP header.
    #[error("not an RTP packet")]
    NotRtp,
    /// Longer than a slot.
    #[error("{0} bytes is longer than a cache slot")]
    TooLong(usize),
    /// A late packet older than everything the ring holds.
    #[error("older than the cache")]
    TooOld,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Extended sequence number of the packet held; meaningless when `len` is 0.
    seq: u64,
    /// Length of the packet held; 0 for an empty slot.
    len: u16,
}

/// A ring of the last [`CACHE_SLOTS`] packets of one track, indexed by the publisher's extended
/// sequence number and holding the plaintext RTP exactly as forwarded to players.
pub struct RetransmissionCache {
    /// The SSRC the packets carry. Another SSRC (a new source) empties the ring: its sequence
    /// numbers are unrelated to the old one's.
    ssrc: Option<u32>,
    /// The newest extended sequence number kept.
    highest: SeqNo,
    slots: Box<[Slot]>,
    bytes: Box<[u8]>,
    /// The newest keyframe: the extended sequence number of its first packet, and its RTP
    /// timestamp (which all its packets share).
    keyframe: Option<(u64, u32)>,
}

impl Default for RetransmissionCache {
    fn default() -> Self {
        Self::new()
    }
}

impl RetransmissionCache {
    /// An empty cache; the only allocation it makes (zeroed, so the pages become resident as
    /// slots are first written).
    pub fn new() -> Self {
        RetransmissionCache {
            ssrc: None,
            highest: SeqNo::new(0),
            slots: vec![Slot::default(); CACHE_SLOTS].into_boxed_slice(),
            bytes: vec![0; CACHE_SLOTS * CACHE_SLOT_BYTES].into_boxed_slice(),
            keyframe: None,
        }
    }

    /// Keeps a copy of a forwarded plaintext RTP packet, replacing the one [`CACHE_SLOTS`]
    /// sequence numbers older. Copies into a slot; never allocates.
    pub fn insert(&mut self, packet: &[u8]) -> Result<(), NotCached> {
        if packet.len() < 12 {
            return Err(NotCached::NotRtp);
        }
        if packet.len() > CACHE_SLOT_BYTES {
            return Err(NotCached::TooLong(packet.len()));
        }
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let extended = if self.ssrc == Some(ssrc) {
            let extended = self.highest.extend(seq);
            if extended.is_after(self.highest) {
                self.highest = extended;
            } else if self.highest.value() - extended.value() >= CACHE_SLOTS as u64 {
                // Its slot holds a newer packet now.
                return Err(NotCached::TooOld);
            }
            extended
        } else {
            self.slots.fill(Slot::default());
            self.keyframe = None;
            self.ssrc = Some(ssrc);
            // Far enough from zero that packets just before the first one still extend.
            self.highest = SeqNo::new(0x1_0000 | u64::from(seq));
            self.highest
        };
        let index = slot_index(extended);
        let at = index * CACHE_SLOT_BYTES;
        self.bytes[at..at + packet.len()].copy_from_slice(packet);
        self.slots[index] = Slot {
            seq: extended.value(),
            len: packet.len() as u16,
        };
        Ok(())
    }

    /// The packet with the publisher's sequence number `seq`, if the ring still holds it. Older
    /// than the ring, or not received, is a miss.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        self.ssrc?;
        let extended = self.highest.extend(seq);
        if extended.is_after(self.highest)
            || self.highest.value() - extended.value() >= CACHE_SLOTS as u64
        {
            return None;
        }
        self.get_extended(extended.value())
    }
}

impl RetransmissionCache {
    /// Notes that `packet`, just inserted, belongs to a keyframe (the publisher's codec said so:
    /// see [`rtp::is_keyframe`]). The earliest packet of the newest keyframe is where
    /// [`RetransmissionCache::since_keyframe`] starts.
    pub fn note_keyframe(&mut self, packet: &[u8]) {
        let Ok(header) = rtp::RtpHeader::parse(packet) else {
            return;
        };
        if self.ssrc != Some(header.ssrc().0) {
            return;
        }
        let seq = self.highest.extend(header.sequence_number()).value();
        let ts = header.timestamp();
        match self.keyframe {
            // Another packet of the same keyframe, arrived out of order.
            Some((start, at)) if at == ts => self.keyframe = Some((start.min(seq), ts)),
            // A late packet of an older keyframe.
            Some((start, _)) if seq < start => {}
            _ => self.keyframe = Some((seq, ts)),
        }
    }

    /// The packets from the newest keyframe's first to the newest, in order (a packet that
    /// never arrived is skipped: the player asks for it like for any loss), when the ring still
    /// holds that keyframe and they are at most `max_packets`; else `None`.
    pub fn since_keyframe(&self, max_packets: usize) -> Option<impl Iterator<Item = &[u8]> + '_> {
        let (start, _) = self.keyframe?;
        let highest = self.highest.value();
        let count = highest.checked_sub(start)? + 1;
        if count > CACHE_SLOTS as u64 || count > max_packets as u64 {
            return None;
        }
        self.get_extended(start)?;
        Some((start..=highest).filter_map(|seq| self.get_extended(seq)))
    }

    fn get_extended(&self, seq: u64) -> Option<&[u8]> {
        let index = slot_index(SeqNo::new(seq));
        let slot = self.slots[index];
        (slot.len > 0 && slot.seq == seq).then(|| {
            let at = index * CACHE_SLOT_BYTES;
            &self.bytes[at..at + usize::from(slot.len)]
        })
    }
}

fn slot_index(seq: SeqNo) -> usize {
    (seq.value() % CACHE_SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet whose payload names its sequence number, `len` bytes long.
    fn packet(ssrc: u32, seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x80;
        p[1] = 96;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        for (i, b) in p[12..].iter_mut().enumerate() {
            *b = (i as u16 ^ seq) as u8;
        }
        p
    }

    #[test]
    fn a_hit_returns_the_exact_bytes() {
        let mut cache = RetransmissionCache::new();
        let sent: Vec<Vec<u8>> = (100..110)
            .map(|s| packet(7, s, 200 + usize::from(s)))
            .collect();
        for p in &sent {
            cache.insert(p).unwrap();
        }
        for (seq, p) in (100..110).zip(&sent) {
            assert_eq!(cache.get(seq), Some(p.as_slice()));
        }
        assert_eq!(cache.get(110), None, "not received yet");
        assert_eq!(cache.get(99), None, "never received");
    }

    #[test]
    fn the_sequence_number_wraps() {
        let mut cache = RetransmissionCache::new();
        for seq in (65_500..=65_535).chain(0..40) {
            cache.insert(&packet(7, seq, 100)).unwrap();
        }
        assert_eq!(cache.get(65_500), Some(packet(7, 65_500, 100).as_slice()));
        assert_eq!(cache.get(65_535), Some(packet(7, 65_535, 100).as_slice()));
        assert_eq!(cache.get(0), Some(packet(7, 0, 100).as_slice()));
        assert_eq!(cache.get(39), Some(packet(7, 39, 100).as_slice()));
        assert_eq!(cache.get(40), None);
        // A late packet from before the wrap still lands in its own slot.
        cache.insert(&packet(7, 65_499, 100)).unwrap();
        assert_eq!(cache.get(65_499), Some(packet(7, 65_499, 100).as_slice()));
        assert_eq!(cache.get(39), Some(packet(7, 39, 100).as_slice()));
    }

    #[test]
    fn the_ring_evicts_the_oldest_when_it_wraps() {
        let mut cache = RetransmissionCache::new();
        let first = 1000u16;
        let last = first + CACHE_SLOTS as u16; // one more than the ring holds
        for seq in first..=last {
            cache.insert(&packet(7, seq, 100)).unwrap();
        }
        // `last` took `first`'s slot.
        assert_eq!(cache.get(first), None);
        assert_eq!(
            cache.get(first + 1),
            Some(packet(7, first + 1, 100).as_slice())
        );
        assert_eq!(cache.get(last), Some(packet(7, last, 100).as_slice()));
    }

    #[test]
    fn a_packet_older_than_the_ring_misses_even_if_its_slot_was_never_reused() {
        let mut cache = RetransmissionCache::new();
        cache.insert(&packet(7, 10, 100)).unwrap();
        // Every packet that would have reused slot 10 was lost upstream.
        let newer = 10 + CACHE_SLOTS as u16 + 1;
        cache.insert(&packet(7, newer, 100)).unwrap();
        assert_eq!(cache.get(10), None);
        // 65536 numbers later the 16-bit number is 10 again; the slot still holds the old 10
        // (steps of 1001 never land on slot 10), but the extended number tells them apart.
        for k in 1..=65u64 {
            cache
                .insert(&packet(7, (10 + 1001 * k) as u16, 100))
                .unwrap();
        }
        cache
            .insert(&packet(7, (65_536 + 110) as u16, 100))
            .unwrap();
        assert_eq!(cache.get(10), None);
        // A late packet older than the ring is refused.
        let mut cache = RetransmissionCache::new();
        cache.insert(&packet(7, 5000, 100)).unwrap();
        assert_eq!(
            cache.insert(&packet(7, 5000 - CACHE_SLOTS as u16, 100)),
            Err(NotCached::TooOld)
        );
        assert_eq!(cache.get(5000 - CACHE_SLOTS as u16), None);
    }

    #[test]
    fn a_new_ssrc_empties_the_cache() {
        let mut cache = RetransmissionCache::new();
        cache.insert(&packet(7, 300, 100)).unwrap();
        cache.insert(&packet(8, 5, 100)).unwrap();
        assert_eq!(cache.get(300), None);
        assert_eq!(cache.get(5), Some(packet(8, 5, 100).as_slice()));
    }

    fn with_timestamp(mut p: Vec<u8>, ts: u32) -> Vec<u8> {
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p
    }

    fn replay(cache: &RetransmissionCache, max: usize) -> Option<Vec<u16>> {
        cache
            .since_keyframe(max)
            .map(|packets| packets.map(|p| u16::from_be_bytes([p[2], p[3]])).collect())
    }

    #[test]
    fn a_new_player_starts_on_the_newest_keyframe_the_ring_holds() {
        let mut cache = RetransmissionCache::new();
        for seq in 100..110u16 {
            cache.insert(&packet(7, seq, 100)).unwrap();
        }
        assert_eq!(replay(&cache, 64), None, "no keyframe yet");
        // A keyframe of four packets (112 after 113), then deltas, one of them lost (116).
        for seq in [110u16, 111, 113, 112, 114, 115, 117] {
            let ts = if seq <= 113 { 9000 } else { 12_000 };
            let p = with_timestamp(packet(7, seq, 100), ts);
            cache.insert(&p).unwrap();
            if ts == 9000 {
                cache.note_keyframe(&p);
            }
        }
        assert_eq!(
            replay(&cache, 64),
            Some(vec![110, 111, 112, 113, 114, 115, 117])
        );
        // More numbers since the keyframe (lost ones too) than the caller allows: no replay.
        assert!(replay(&cache, 8).is_some());
        assert_eq!(replay(&cache, 7), None);
        // A later keyframe replaces it; a late packet of the older one does not move it back.
        let p = with_timestamp(packet(7, 118, 100), 15_000);
        cache.insert(&p).unwrap();
        cache.note_keyframe(&p);
        let late = with_timestamp(packet(7, 109, 100), 6000);
        cache.insert(&late).unwrap();
        cache.note_keyframe(&late);
        assert_eq!(replay(&cache, 64), Some(vec![118]));
        // Once the ring no longer holds the keyframe, nothing is replayed.
        for seq in 119..119 + CACHE_SLOTS as u16 {
            cache.insert(&packet(7, seq, 100)).unwrap();
        }
        assert_eq!(replay(&cache, usize::MAX), None);
        // Nor after the source changed.
        let p = with_timestamp(packet(8, 1, 100), 0);
        cache.insert(&p).unwrap();
        assert_eq!(replay(&cache, 64), None);
    }

    #[test]
    fn packets_that_do_not_fit_are_refused() {
        let mut cache = RetransmissionCache::new();
        assert_eq!(cache.insert(&[0x80; 11]), Err(NotCached::NotRtp));
        assert_eq!(
            cache.insert(&packet(7, 1, CACHE_SLOT_BYTES + 1)),
            Err(NotCached::TooLong(CACHE_SLOT_BYTES + 1))
        );
        cache.insert(&packet(7, 2, CACHE_SLOT_BYTES)).unwrap();
        assert_eq!(cache.get(2).map(<[u8]>::len), Some(CACHE_SLOT_BYTES));
        assert_eq!(cache.get(1), None);
    }
}
