//! The packets sent to one player, by transport-wide sequence number, kept until their feedback
//! comes back.
//!
//! A ring indexed by the sequence number modulo its length: recording a packet is a store into
//! a slot, a lookup is one index, and nothing is allocated after construction. A slot does not
//! hold its sequence number: when the sender skips numbers, the skipped slots are emptied, so a
//! slot inside the window is either the packet with that number or empty.

use std::time::{Duration, Instant};

/// What is known of one sent packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// No packet with this number was sent (or its slot was reused).
    Empty,
    /// Sent; no feedback about it yet.
    Sent,
    /// Feedback said it arrived.
    Received,
    /// Feedback said it did not arrive (yet: a later report may still say it did).
    Lost,
}

/// 16 bytes: the history of a player sending 4,096 packets a window costs 64 KiB.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    /// Send time as microseconds after the history's epoch (its first packet): half the size
    /// of an `Instant`, and no send time a player can report on is 584,000 years old.
    sent_us: u64,
    pub(super) size: u32,
    pub(super) status: Status,
}

const EMPTY: Slot = Slot {
    sent_us: 0,
    size: 0,
    status: Status::Empty,
};

#[derive(Debug)]
pub(super) struct SendHistory {
    slots: Box<[Slot]>,
    /// The first packet's send time; every slot's time counts from it.
    epoch: Option<Instant>,
    /// The newest sequence number recorded.
    highest: Option<u64>,
}

impl SendHistory {
    /// A ring of `len` slots (at least one), allocated here once.
    pub(super) fn new(len: usize) -> Self {
        SendHistory {
            slots: vec![EMPTY; len.max(1)].into_boxed_slice(),
            epoch: None,
            highest: None,
        }
    }

    /// Records a sent packet. Returns false, recording nothing, for a number not above the
    /// newest one (a caller whose numbers go backwards would otherwise overwrite live slots).
    pub(super) fn record(&mut self, now: Instant, seq: u64, size: usize) -> bool {
        if self.highest.is_some_and(|h| seq <= h) {
            return false;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let len = self.slots.len() as u64;
        if let Some(highest) = self.highest {
            // Numbers the sender skipped must not be mistaken for the packets a lap earlier.
            let skipped = (seq - highest - 1).min(len);
            for s in seq - skipped..seq {
                self.slots[(s % len) as usize] = EMPTY;
            }
        }
        self.slots[(seq % len) as usize] = Slot {
            sent_us: now.saturating_duration_since(epoch).as_micros() as u64,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            status: Status::Sent,
        };
        self.highest = Some(seq);
        true
    }

    /// The slot of packet `seq`, if it was sent and is still held.
    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let highest = self.highest?;
        let len = self.slots.len() as u64;
        if seq > highest || highest - seq >= len {
            return None;
        }
        let slot = &mut self.slots[(seq % len) as usize];
        (slot.status != Status::Empty).then_some(slot)
    }

    /// When the packet in `slot` was sent (`None` only before anything was recorded, when no
    /// slot can be had).
    pub(super) fn sent_at(&self, slot: &Slot) -> Option<Instant> {
        Some(self.epoch? + Duration::from_micros(slot.sent_us))
    }

    /// Where the slots live and how many there are: constant after construction.
    #[cfg(test)]
    pub(super) fn footprint(&self) -> (*const Slot, usize) {
        (self.slots.as_ptr(), self.slots.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_sent_and_forgets_what_fell_out() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(8);
        for seq in 0..20 {
            assert!(h.record(t0 + Duration::from_millis(seq), seq, 1000 + seq as usize));
        }
        assert!(h.get_mut(11).is_none(), "overwritten by a newer lap");
        assert!(h.get_mut(20).is_none(), "not sent yet");
        let slot = *h.get_mut(12).unwrap();
        assert_eq!(slot.size, 1012);
        assert_eq!(h.sent_at(&slot).unwrap(), t0 + Duration::from_millis(12));
    }

    #[test]
    fn skipped_numbers_are_not_the_previous_lap() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(8);
        for seq in 0..8 {
            h.record(t0, seq, 100);
        }
        h.record(t0, 13, 100);
        for seq in 8..13 {
            assert!(h.get_mut(seq).is_none(), "{seq} was never sent");
        }
        assert!(h.get_mut(6).is_some() && h.get_mut(7).is_some() && h.get_mut(13).is_some());
        // A jump of more than a lap empties everything.
        h.record(t0, 1_000, 100);
        assert!((993..1_000).all(|s| h.get_mut(s).is_none()));
    }

    #[test]
    fn numbers_going_backwards_are_refused() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(8);
        assert!(h.record(t0, 5, 100));
        assert!(!h.record(t0, 5, 200));
        assert!(!h.record(t0, 4, 200));
        assert_eq!(h.get_mut(5).unwrap().size, 100);
    }
}
