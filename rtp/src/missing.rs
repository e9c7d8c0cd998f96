//! The packets missing from one received RTP stream: the gaps its sequence numbers open, kept
//! oldest first up to a bound, each with when it went missing and how often it was asked for.
//!
//! When to ask for a missing packet (again), and when to give it up, is the caller's policy: a
//! node asking upstream once per measured round trip and a test client asking like a browser
//! share this bookkeeping and differ there. A wider gap than the bound is a discontinuity (a
//! restarted source, an outage), not loss worth asking for packet by packet: it forgets what
//! was missing and opens no gap.

use std::collections::VecDeque;
use std::time::Instant;

use crate::SeqNo;

/// A packet found missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingPacket {
    /// Its extended sequence number.
    pub seq: u64,
    /// When the packet after the gap it is in arrived.
    pub detected_at: Instant,
    /// When it was last asked for; `None` until the first request.
    pub requested_at: Option<Instant>,
    /// How often it was asked for.
    pub requests: u8,
}

/// What an arriving packet was to a [`MissingSeqs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqArrival {
    /// Newer than every packet before it. `opened` packets before it are now missing (none
    /// after a discontinuity); `dropped` missing ones were forgotten to stay in the bound (the
    /// oldest first, or all of them at a discontinuity).
    New {
        /// Packets the gap before it holds, now missing.
        opened: u64,
        /// Missing packets forgotten.
        dropped: usize,
    },
    /// A missing packet, no longer missing: as it was tracked.
    Found(MissingPacket),
    /// Neither new nor missing: a duplicate, or older than what is tracked.
    Old,
}

/// One stream's highest sequence number and the packets missing below it, oldest first.
#[derive(Debug)]
pub struct MissingSeqs {
    highest: Option<SeqNo>,
    /// Allocated once with room for `max_missing`; never grows past it.
    missing: VecDeque<MissingPacket>,
    max_missing: usize,
}

impl MissingSeqs {
    /// Tracks at most `max_missing` missing packets at once (room for them is allocated now).
    pub fn new(max_missing: usize) -> Self {
        MissingSeqs {
            highest: None,
            missing: VecDeque::with_capacity(max_missing),
            max_missing,
        }
    }

    /// The highest sequence number so far; `None` before the first packet.
    pub fn highest(&self) -> Option<SeqNo> {
        self.highest
    }

    /// Starts over with `highest` as the highest packet so far, forgetting what was missing;
    /// returns how many that was.
    pub fn restart(&mut self, highest: SeqNo) -> usize {
        let dropped = self.missing.len();
        self.missing.clear();
        self.highest = Some(highest);
        dropped
    }

    /// A packet with sequence number `seq` arrived at `now`. The first packet is new and opens
    /// no gap; it is taken as far enough from zero that packets just before it still extend.
    pub fn handle_packet(&mut self, now: Instant, seq: u16) -> SeqArrival {
        let Some(highest) = self.highest else {
            self.highest = Some(SeqNo::new(0x1_0000 | u64::from(seq)));
            return SeqArrival::New {
                opened: 0,
                dropped: 0,
            };
        };
        let extended = highest.extend(seq);
        if extended.is_after(highest) {
            self.highest = Some(extended);
            let gap = extended.value() - highest.value() - 1;
            if gap as usize > self.max_missing {
                let dropped = self.missing.len();
                self.missing.clear();
                return SeqArrival::New { opened: 0, dropped };
            }
            let mut dropped = 0;
            for seq in highest.value() + 1..extended.value() {
                if self.missing.len() == self.max_missing {
                    // Keep the newest: the oldest are the least likely still to be useful.
                    self.missing.pop_front();
                    dropped += 1;
                }
                self.missing.push_back(MissingPacket {
                    seq,
                    detected_at: now,
                    requested_at: None,
                    requests: 0,
                });
            }
            return SeqArrival::New {
                opened: gap,
                dropped,
            };
        }
        match self.missing.iter().position(|m| m.seq == extended.value()) {
            Some(at) => SeqArrival::Found(self.missing.remove(at).expect("a position in it")),
            None => SeqArrival::Old,
        }
    }

    /// Whether `seq` would be newer than every packet so far. Before the first packet, every
    /// number is.
    pub fn is_new(&self, seq: u16) -> bool {
        self.highest
            .is_none_or(|highest| highest.extend(seq).is_after(highest))
    }

    /// The missing packet `seq` (16-bit, extended against the highest so far), if it is one.
    pub fn get_mut(&mut self, seq: u16) -> Option<&mut MissingPacket> {
        let extended = self.highest?.extend(seq).value();
        self.missing.iter_mut().find(|m| m.seq == extended)
    }

    /// Forgets the missing packets `keep` says no to; returns how many.
    pub fn give_up_unless(&mut self, keep: impl FnMut(&MissingPacket) -> bool) -> usize {
        let before = self.missing.len();
        self.missing.retain(keep);
        before - self.missing.len()
    }

    /// The missing packets, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &MissingPacket> {
        self.missing.iter()
    }

    /// The missing packets, oldest first, to mark as asked for.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut MissingPacket> {
        self.missing.iter_mut()
    }

    /// How many packets are missing.
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    /// Room allocated for missing packets: at least the bound, and it does not grow.
    pub fn capacity(&self) -> usize {
        self.missing.capacity()
    }

    /// Whether no packet is missing.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(opened: u64, dropped: usize) -> SeqArrival {
        SeqArrival::New { opened, dropped }
    }

    fn missing(m: &MissingSeqs) -> Vec<u16> {
        m.iter().map(|p| p.seq as u16).collect()
    }

    #[test]
    fn gaps_open_missing_packets_that_a_late_arrival_closes() {
        let t0 = Instant::now();
        let mut m = MissingSeqs::new(8);
        assert_eq!(m.handle_packet(t0, 100), new(0, 0));
        assert_eq!(m.handle_packet(t0, 101), new(0, 0));
        assert_eq!(m.handle_packet(t0, 104), new(2, 0));
        assert_eq!(missing(&m), [102, 103]);
        let found = m.handle_packet(t0, 103);
        assert!(matches!(found, SeqArrival::Found(p) if p.seq as u16 == 103 && p.requests == 0));
        assert_eq!(m.handle_packet(t0, 103), SeqArrival::Old, "a duplicate");
        assert_eq!(
            m.handle_packet(t0, 90),
            SeqArrival::Old,
            "older than tracked"
        );
        assert_eq!(missing(&m), [102]);
        assert!(m.is_new(105) && !m.is_new(102));
        m.get_mut(102).expect("missing").requests = 2;
        assert!(matches!(m.handle_packet(t0, 102), SeqArrival::Found(p) if p.requests == 2));
        assert!(m.is_empty());
    }

    #[test]
    fn the_first_packet_leaves_room_below_it_and_numbers_extend_across_the_wrap() {
        let t0 = Instant::now();
        let mut m = MissingSeqs::new(8);
        assert_eq!(m.handle_packet(t0, 1), new(0, 0));
        assert_eq!(
            m.handle_packet(t0, 65_535),
            SeqArrival::Old,
            "just before the first"
        );
        assert_eq!(m.handle_packet(t0, 4), new(2, 0));
        let mut m = MissingSeqs::new(8);
        m.handle_packet(t0, 65_534);
        assert_eq!(m.handle_packet(t0, 1), new(2, 0));
        assert_eq!(missing(&m), [65_535, 0]);
    }

    #[test]
    fn the_bound_keeps_the_newest_and_a_wider_jump_forgets_everything() {
        let t0 = Instant::now();
        let mut m = MissingSeqs::new(4);
        m.handle_packet(t0, 10);
        assert_eq!(m.handle_packet(t0, 13), new(2, 0));
        let capacity = m.capacity();
        assert_eq!(m.handle_packet(t0, 17), new(3, 1));
        assert_eq!(missing(&m), [12, 14, 15, 16]);
        assert_eq!(m.capacity(), capacity, "no room was added");
        assert_eq!(m.handle_packet(t0, 22), new(4, 4), "4 more: the bound");
        assert_eq!(m.handle_packet(t0, 28), new(0, 4), "5: a discontinuity");
        assert!(m.is_empty());
        assert_eq!(m.handle_packet(t0, 30), new(1, 0));
        assert_eq!(m.give_up_unless(|p| p.seq as u16 != 29), 1);
        assert_eq!(m.restart(SeqNo::new(7)), 0);
        assert_eq!(m.highest(), Some(SeqNo::new(7)));
        assert_eq!(m.handle_packet(t0, 9), new(1, 0));
    }
}
