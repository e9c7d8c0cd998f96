//! A player's side of loss repair, sans-IO: injected loss on arrival, and generic NACKs
//! (RFC 4585 §6.2.1) for the gaps in each track's sequence numbers.
//!
//! The bench drops a share of the video datagrams a player receives, before SRTP, as a lossy
//! last hop would, and asks for what is missing as a browser does: at once when a gap opens,
//! again every [`RETRY_INTERVAL`] while no copy arrives, at most [`MAX_REQUESTS`] times, and gives
//! a packet up [`GIVE_UP_AFTER`] after it went missing. A packet that arrives after it was asked
//! for counts as repaired.
//!
//! Only tracks that negotiated `nack` feedback are dropped from and asked about (the bench's
//! video; its Opus, like a browser's, negotiates none, and a node keeps no audio to send again).
//! Time and randomness come from the caller.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;
use rtp::rtcp::{Items, Nack, NackPair, Rtcp};
use rtp::{MissingPacket, MissingSeqs, SeqArrival, Ssrc};

/// How long after asking for a packet it is asked for again: a loopback or LAN round trip with
/// room to spare, without asking again for a copy that is on its way.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Requests per missing packet: the first and a few retries.
pub const MAX_REQUESTS: u8 = 4;
/// How long a missing packet is waited for: later than this no jitter buffer would play it.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(1);
/// Missing packets tracked per track. A wider gap is a discontinuity (a restarted source, an
/// outage), not loss worth asking for packet by packet.
pub const MAX_MISSING: usize = 512;
/// Sequence numbers one NACK carries: what a node reads of one (rtcdn's `MAX_LOST_PACKETS`).
pub const MAX_PER_NACK: usize = 64;

/// What an arriving packet was to its track's [`NackGenerator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Newer than every packet before it (a gap it opened is now missing).
    New,
    /// A missing packet that was asked for: repaired.
    Repaired,
    /// A missing packet that had not been asked for yet: reordered.
    Late,
    /// Neither missing nor new: a duplicate, or older than what is tracked.
    Old,
}

/// What a [`NackGenerator`] (or a player's [`Repair`]) did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NackCounts {
    /// Missing packets asked for at least once.
    pub nacked: u64,
    /// Of those, packets the injected loss had not dropped: reordered on the way (they arrive
    /// after the request and count as repaired), or lost before they reached the player.
    pub nacked_undropped: u64,
    /// Sequence numbers asked for, retries included.
    pub requests: u64,
    /// Packets that arrived after they were asked for.
    pub repaired: u64,
    /// Missing packets given up ([`GIVE_UP_AFTER`], or a discontinuity).
    pub abandoned: u64,
    /// Missing packets neither repaired nor given up yet.
    pub pending: u64,
}

impl NackCounts {
    fn add(&mut self, other: NackCounts) {
        self.nacked += other.nacked;
        self.nacked_undropped += other.nacked_undropped;
        self.requests += other.requests;
        self.repaired += other.repaired;
        self.abandoned += other.abandoned;
        self.pending += other.pending;
    }
}

/// When a missing packet is due to be asked for (again); `None` once it was asked for
/// [`MAX_REQUESTS`] times.
fn due_at(m: &MissingPacket) -> Option<Instant> {
    match m.requested_at {
        _ if m.requests >= MAX_REQUESTS => None,
        Some(at) => Some(at + RETRY_INTERVAL),
        None => Some(m.detected_at),
    }
}

/// One track's sequence numbers and the packets missing from them.
#[derive(Debug)]
pub struct NackGenerator {
    missing: MissingSeqs,
    /// Sequence numbers the injected loss dropped and no copy has repaired yet, oldest first,
    /// at most [`MAX_MISSING`]: what tells a lost packet from a reordered one.
    dropped: VecDeque<u16>,
    counts: NackCounts,
}

impl Default for NackGenerator {
    fn default() -> Self {
        NackGenerator {
            missing: MissingSeqs::new(MAX_MISSING),
            dropped: VecDeque::new(),
            counts: NackCounts::default(),
        }
    }
}

impl NackGenerator {
    /// A packet with sequence number `seq` arrived (authenticated).
    pub fn handle_packet(&mut self, now: Instant, seq: u16) -> Arrival {
        match self.missing.handle_packet(now, seq) {
            SeqArrival::New { dropped, .. } => {
                self.counts.abandoned += dropped as u64;
                Arrival::New
            }
            SeqArrival::Found(found) if found.requests == 0 => Arrival::Late,
            SeqArrival::Found(_) => {
                self.counts.repaired += 1;
                self.dropped.retain(|&s| s != seq);
                Arrival::Repaired
            }
            SeqArrival::Old => Arrival::Old,
        }
    }

    /// The injected loss dropped `seq`. Returns whether that was the packet's first copy (never
    /// received, never dropped before) rather than a retransmission or a duplicate: a first copy
    /// may also come after a newer packet, when the way reordered them.
    pub fn note_dropped(&mut self, seq: u16) -> bool {
        let first = !self.dropped.contains(&seq)
            && (self.missing.is_new(seq) || self.missing.iter().any(|m| m.seq as u16 == seq));
        if first {
            if self.dropped.len() == MAX_MISSING {
                self.dropped.pop_front();
            }
            self.dropped.push_back(seq);
        }
        first
    }

    /// Gives up what waited past [`GIVE_UP_AFTER`], then writes the sequence numbers due to be
    /// asked for now into `out` (oldest first, at most its length) and counts them as asked.
    /// Returns how many.
    pub fn poll_requests(&mut self, now: Instant, out: &mut [u16]) -> usize {
        self.counts.abandoned += self
            .missing
            .give_up_unless(|m| now.saturating_duration_since(m.detected_at) < GIVE_UP_AFTER)
            as u64;
        let mut count = 0;
        for m in self.missing.iter_mut() {
            if count == out.len() {
                break;
            }
            if due_at(m).is_none_or(|due| due > now) {
                continue;
            }
            if m.requests == 0 {
                self.counts.nacked += 1;
                if !self.dropped.contains(&(m.seq as u16)) {
                    self.counts.nacked_undropped += 1;
                }
            }
            m.requests += 1;
            m.requested_at = Some(now);
            out[count] = m.seq as u16;
            count += 1;
        }
        self.counts.requests += count as u64;
        count
    }

    /// When [`NackGenerator::poll_requests`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing
            .iter()
            .map(|m| {
                let give_up = m.detected_at + GIVE_UP_AFTER;
                due_at(m).map_or(give_up, |due| due.min(give_up))
            })
            .min()
    }

    /// What the generator did so far, and what is still missing.
    pub fn counts(&self) -> NackCounts {
        NackCounts {
            pending: self.missing.len() as u64,
            ..self.counts
        }
    }
}

/// What the injected loss dropped, beside what [`NackCounts`] says of the repair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairCounts {
    /// Packets dropped on their first arrival (never received nor dropped before).
    pub lost: u64,
    /// Other copies dropped: retransmissions of missing packets, or duplicates.
    pub lost_again: u64,
    /// NACK packets sent.
    pub nacks_sent: u64,
    /// The NACK generators' counts, summed over tracks.
    pub nack: NackCounts,
}

/// A player's injected loss and NACK generators, one per track that negotiated `nack`.
#[derive(Debug)]
pub struct Repair<R> {
    /// Payload types whose packets are dropped from and asked about.
    nack_pts: Vec<u8>,
    /// Share of those datagrams dropped, 0..=1.
    loss: f64,
    rng: R,
    /// The SSRC the player's NACKs are sent from.
    sender_ssrc: u32,
    tracks: Vec<(u32, NackGenerator)>,
    lost: u64,
    lost_again: u64,
    nacks_sent: u64,
    /// Room for the sequence numbers due, reused between polls.
    due: Vec<u16>,
}

impl<R: Rng> Repair<R> {
    /// Drops `loss_percent` % of the datagrams of payload types `nack_pts` (with `rng`) and asks
    /// for every gap in them, from `sender_ssrc`.
    pub fn new(nack_pts: Vec<u8>, loss_percent: f64, rng: R, sender_ssrc: u32) -> Self {
        let mut repair = Repair {
            nack_pts,
            loss: 0.0,
            rng,
            sender_ssrc,
            tracks: Vec::new(),
            lost: 0,
            lost_again: 0,
            nacks_sent: 0,
            due: Vec::new(),
        };
        repair.set_loss(loss_percent);
        repair
    }

    /// Changes the share of datagrams dropped from now on.
    pub fn set_loss(&mut self, loss_percent: f64) {
        self.loss = (loss_percent / 100.0).clamp(0.0, 1.0);
    }

    /// Whether to drop an arriving RTP datagram, read from its header (in the clear in SRTP).
    /// Nothing is dropped before its track's first packet arrived: a receiver cannot miss what
    /// it never knew of, and no NACK could repair it.
    pub fn should_drop(&mut self, ssrc: u32, seq: u16, pt: u8) -> bool {
        if !self.nack_pts.contains(&pt) || self.loss <= 0.0 {
            return false;
        }
        let Some((_, track)) = self.tracks.iter_mut().find(|(s, _)| *s == ssrc) else {
            return false;
        };
        if !self.rng.gen_bool(self.loss) {
            return false;
        }
        if track.note_dropped(seq) {
            self.lost += 1;
        } else {
            self.lost_again += 1;
        }
        true
    }

    /// An authenticated, decrypted RTP packet arrived.
    pub fn handle_rtp(&mut self, now: Instant, packet: &[u8]) -> Option<Arrival> {
        let header = rtp::RtpHeader::parse(packet).ok()?;
        if !self.nack_pts.contains(&header.payload_type().value()) {
            // TODO(rtx): once the player negotiates rtx (RFC 4588, on the rtx branch), a packet
            // of the RTX payload type carries the original sequence number in its first two
            // payload bytes: hand that to the original SSRC's generator here, so a repair by RTX
            // counts like one on the original SSRC.
            return None;
        }
        let ssrc = header.ssrc().0;
        let at = match self.tracks.iter().position(|(s, _)| *s == ssrc) {
            Some(at) => at,
            None => {
                self.tracks.push((ssrc, NackGenerator::default()));
                self.tracks.len() - 1
            }
        };
        Some(
            self.tracks[at]
                .1
                .handle_packet(now, header.sequence_number()),
        )
    }

    /// The next NACK due now, written into `buf` as a plain RTCP packet; returns its length.
    /// Call until `None`: one NACK per track carries at most [`MAX_PER_NACK`] numbers.
    pub fn poll_nack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        for (ssrc, track) in &mut self.tracks {
            self.due.resize(MAX_PER_NACK, 0);
            let count = track.poll_requests(now, &mut self.due);
            if count == 0 {
                continue;
            }
            // In sending order, so packing keeps it.
            let mut pairs = [NackPair::default(); MAX_PER_NACK];
            let packed = NackPair::pack(&mut self.due[..count], &mut pairs);
            let pairs = &pairs[..packed];
            let nack = Nack {
                sender_ssrc: Ssrc(self.sender_ssrc),
                media_ssrc: Ssrc(*ssrc),
                pairs: Items::from_slice(pairs),
            };
            let len = Rtcp::Nack(nack).write_to(buf).ok()?;
            self.nacks_sent += 1;
            return Some(len);
        }
        None
    }

    /// When [`Repair::poll_nack`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .iter()
            .filter_map(|(_, t)| t.poll_timeout())
            .min()
    }

    /// What was dropped and repaired so far.
    pub fn counts(&self) -> RepairCounts {
        let mut nack = NackCounts::default();
        for (_, track) in &self.tracks {
            nack.add(track.counts());
        }
        RepairCounts {
            lost: self.lost,
            lost_again: self.lost_again,
            nacks_sent: self.nacks_sent,
            nack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn requests(g: &mut NackGenerator, now: Instant) -> Vec<u16> {
        let mut out = [0u16; 64];
        let n = g.poll_requests(now, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn a_gap_is_asked_for_at_once_merged_into_pairs() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        for seq in [100u16, 101] {
            assert_eq!(g.handle_packet(t0, seq), Arrival::New);
        }
        assert_eq!(requests(&mut g, t0), Vec::<u16>::new());
        assert_eq!(g.poll_timeout(), None, "nothing missing, nothing to do");
        g.handle_packet(t0, 104);
        g.handle_packet(t0, 106);
        g.handle_packet(t0, 130);
        let due = requests(&mut g, t0);
        assert_eq!(due, [vec![102, 103, 105], (107..130).collect()].concat());
        // 102 covers the 16 after it (103 and 105 among them, up to 118); 119 the rest.
        let mut pairs = [NackPair::default(); MAX_PER_NACK];
        let packed = NackPair::pack(&mut due.clone(), &mut pairs);
        let pairs = &pairs[..packed];
        assert_eq!(
            pairs,
            [
                NackPair {
                    pid: 102,
                    blp: 0b1111_1111_1111_0101
                },
                NackPair {
                    pid: 119,
                    blp: 0b11_1111_1111
                }
            ]
        );
        let lost: Vec<u16> = pairs.iter().flat_map(|p| p.lost()).collect();
        assert_eq!(lost, due, "the pairs name exactly what is due");
        let counts = g.counts();
        assert_eq!(
            (counts.nacked, counts.requests, counts.pending),
            (26, 26, 26)
        );
    }

    #[test]
    fn a_missing_packet_is_asked_again_a_few_times_then_repaired() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.handle_packet(t0, 65_534);
        g.handle_packet(t0, 1);
        assert_eq!(requests(&mut g, t0), [65_535, 0], "across the wrap");
        assert_eq!(requests(&mut g, t0 + ms(49)), Vec::<u16>::new());
        assert_eq!(g.poll_timeout(), Some(t0 + RETRY_INTERVAL));
        assert_eq!(g.handle_packet(t0 + ms(30), 0), Arrival::Repaired);
        for i in 1..u64::from(MAX_REQUESTS) {
            assert_eq!(requests(&mut g, t0 + RETRY_INTERVAL * i as u32), [65_535]);
        }
        assert_eq!(
            requests(&mut g, t0 + ms(900)),
            Vec::<u16>::new(),
            "no more than MAX_REQUESTS requests"
        );
        assert_eq!(
            g.poll_timeout(),
            Some(t0 + GIVE_UP_AFTER),
            "only the give-up is left"
        );
        assert_eq!(g.handle_packet(t0 + ms(950), 65_535), Arrival::Repaired);
        assert_eq!(g.handle_packet(t0 + ms(960), 65_535), Arrival::Old);
        let counts = g.counts();
        assert_eq!(
            counts,
            NackCounts {
                nacked: 2,
                nacked_undropped: 2,
                requests: 2 + u64::from(MAX_REQUESTS) - 1,
                repaired: 2,
                abandoned: 0,
                pending: 0,
            }
        );
    }

    #[test]
    fn a_packet_is_given_up_after_a_second_and_a_wide_gap_is_no_loss() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.handle_packet(t0, 10);
        g.handle_packet(t0, 12);
        assert_eq!(requests(&mut g, t0), [11]);
        assert_eq!(requests(&mut g, t0 + GIVE_UP_AFTER), Vec::<u16>::new());
        assert_eq!(g.poll_timeout(), None);
        assert_eq!(g.handle_packet(t0 + GIVE_UP_AFTER, 11), Arrival::Old);
        assert_eq!((g.counts().abandoned, g.counts().repaired), (1, 0));
        // A reordered packet that arrives before its request is late, not repaired.
        g.handle_packet(t0, 14);
        assert_eq!(g.handle_packet(t0, 13), Arrival::Late);
        // A jump wider than MAX_MISSING: a new source position, nothing asked.
        g.handle_packet(t0, 16);
        g.handle_packet(t0, 16 + MAX_MISSING as u16 + 2);
        assert_eq!(requests(&mut g, t0), Vec::<u16>::new());
        let counts = g.counts();
        assert_eq!((counts.abandoned, counts.pending, counts.nacked), (2, 0, 1));
    }

    #[test]
    fn injected_loss_drops_video_after_its_first_packet_and_nacks_it() {
        let t0 = Instant::now();
        let mut repair = Repair::new(vec![96], 100.0, StdRng::seed_from_u64(1), 42);
        assert!(
            !repair.should_drop(7, 1, 96),
            "the track's first packet passes"
        );
        assert!(!repair.should_drop(8, 1, 111), "audio negotiated no nack");
        let packet = |seq: u16| {
            let mut p = vec![0u8; 20];
            rtp::RtpHeaderBuilder::new(rtp::Pt::new(96), seq, 0, Ssrc(7))
                .write_to(&mut p)
                .unwrap();
            p
        };
        assert_eq!(repair.handle_rtp(t0, &packet(1)), Some(Arrival::New));
        assert!(repair.should_drop(7, 2, 96));
        assert_eq!(repair.handle_rtp(t0, &packet(3)), Some(Arrival::New));
        assert!(
            repair.should_drop(7, 2, 96),
            "the retransmission is lost too"
        );
        let mut buf = [0u8; 1500];
        let len = repair.poll_nack(t0, &mut buf).expect("a NACK for 2");
        let Ok(Rtcp::Nack(nack)) = rtp::rtcp::RtcpIter::new(&buf[..len]).next().unwrap() else {
            panic!("not a NACK");
        };
        assert_eq!((nack.sender_ssrc, nack.media_ssrc), (Ssrc(42), Ssrc(7)));
        assert_eq!(nack.lost().collect::<Vec<_>>(), [2]);
        assert_eq!(
            repair.poll_nack(t0, &mut buf),
            None,
            "merged: one per round"
        );
        assert_eq!(repair.poll_timeout(), Some(t0 + RETRY_INTERVAL));
        assert_eq!(
            repair.handle_rtp(t0 + ms(60), &packet(2)),
            Some(Arrival::Repaired)
        );
        let counts = repair.counts();
        assert_eq!(
            (counts.lost, counts.lost_again, counts.nacks_sent),
            (1, 1, 1)
        );
        assert_eq!((counts.nack.nacked, counts.nack.repaired), (1, 1));

        // A first copy the way reordered behind a newer packet, then dropped, is lost, not lost
        // again; a packet only reordered is asked for too, but was never dropped.
        assert_eq!(repair.handle_rtp(t0, &packet(6)), Some(Arrival::New));
        assert!(repair.should_drop(7, 4, 96));
        let len = repair.poll_nack(t0, &mut buf).expect("a NACK for 4 and 5");
        let Ok(Rtcp::Nack(nack)) = rtp::rtcp::RtcpIter::new(&buf[..len]).next().unwrap() else {
            panic!("not a NACK");
        };
        assert_eq!(nack.lost().collect::<Vec<_>>(), [4, 5]);
        assert_eq!(
            repair.handle_rtp(t0 + ms(1), &packet(5)),
            Some(Arrival::Repaired),
            "indistinguishable from a repair at the player"
        );
        let counts = repair.counts();
        assert_eq!((counts.lost, counts.lost_again), (2, 1));
        assert_eq!(
            (counts.nack.nacked, counts.nack.nacked_undropped),
            (3, 1),
            "5 was asked for, though never dropped"
        );

        let mut none = Repair::new(vec![96], 0.0, StdRng::seed_from_u64(1), 42);
        none.handle_rtp(t0, &packet(1));
        assert!((0..1000).all(|s| !none.should_drop(7, s, 96)));
    }
}
