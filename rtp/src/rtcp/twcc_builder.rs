//! Writes transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1)
//! the way libwebrtc's `rtcp::TransportFeedback` does, so that a receiver built on it sends
//! byte for byte what Chrome would: the same chunk choice, delta rounding and size limits.

use super::twcc::{
    LARGE_DELTA, MAX_RUN, NOT_RECEIVED, ONE_BIT_CAPACITY, SMALL_DELTA, TWO_BIT_CAPACITY,
};
use super::{out_buf, padded_len, write_header, TransportCc, FMT_TWCC, MAX_PACKET_LEN, PT_RTPFB};
use crate::{Error, Ssrc};

/// Header, SSRCs, base sequence number, status count, reference time and feedback count.
const FIXED_LEN: usize = 20;

/// The smallest packet that holds any one status: the fixed part, one chunk for up to 8191
/// lost packets before it, one for the packet and its 2-byte delta, padded (28 bytes).
pub(crate) const MIN_FEEDBACK_LEN: usize = (FIXED_LEN + 2 + 2 + 2).div_ceil(4) * 4;

/// Builds transport-cc feedback packets from packet arrivals in transport sequence order.
///
/// [`start`](Self::start) fixes the base sequence number, the reference time, the feedback
/// count and the largest packet wanted; [`push`](Self::push) adds one packet after another
/// (gaps are reported as not received); [`write_to`](Self::write_to) writes the packet. When
/// `push` says a packet does not fit, write what is there and start the next feedback packet
/// at that packet. One builder is meant to be reused: its buffers keep their capacity, which
/// never exceeds what the largest packet asked for needs.
///
/// Chunks are chosen as libwebrtc chooses them: statuses collect in a pending chunk that stays
/// a run-length chunk while they are all the same, a one-bit vector for 14 statuses without a
/// large delta, and a two-bit vector of 7 otherwise.
#[derive(Debug, Clone)]
pub struct TransportCcBuilder {
    /// Chunks already complete.
    chunks: Vec<u16>,
    /// Receive deltas, as written.
    deltas: Vec<u8>,
    /// The chunk statuses are being added to.
    last: LastChunk,
    base_seq: u16,
    /// Statuses added so far (at most 65,535).
    count: usize,
    /// Reference time as written: 24 bits, 64 ms units.
    reference_time: u32,
    fb_count: u8,
    /// The arrival time the feedback's reader reconstructs for the last received packet (the
    /// reference time before the first): deltas are taken from it so that rounding errors do
    /// not add up along the packet.
    last_us: i64,
    /// Largest packet, padding included.
    max_len: usize,
}

impl Default for TransportCcBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TransportCcBuilder {
    /// A builder with room for a 1200-byte packet, to be [`start`](Self::start)ed.
    pub fn new() -> Self {
        TransportCcBuilder {
            chunks: Vec::with_capacity(600),
            deltas: Vec::with_capacity(1200),
            last: LastChunk::EMPTY,
            base_seq: 0,
            count: 0,
            reference_time: 0,
            fb_count: 0,
            last_us: 0,
            max_len: MIN_FEEDBACK_LEN,
        }
    }

    /// Starts a new feedback packet, dropping whatever the builder held.
    ///
    /// `base_seq` is the transport sequence number of the first status. The reference time
    /// is `reference_us` rounded down to 64 ms (usually the arrival time of the first packet
    /// that will be pushed, on the caller's microsecond clock), written modulo 2^24 units.
    /// `max_len` caps the whole packet, header and padding included; it is raised to 28 bytes,
    /// the smallest packet that always takes a first status, and lowered to the RTCP maximum.
    pub fn start(&mut self, base_seq: u16, reference_us: i64, fb_count: u8, max_len: usize) {
        let ticks = reference_us.div_euclid(TransportCc::REFERENCE_TIME_UNIT_US);
        self.chunks.clear();
        self.deltas.clear();
        self.last = LastChunk::EMPTY;
        self.base_seq = base_seq;
        self.count = 0;
        // rem_euclid by 2^24 fits 24 bits.
        self.reference_time = ticks.rem_euclid(1 << 24) as u32;
        self.fb_count = fb_count;
        self.last_us = ticks.saturating_mul(TransportCc::REFERENCE_TIME_UNIT_US);
        self.max_len = max_len.clamp(MIN_FEEDBACK_LEN, MAX_PACKET_LEN);
    }

    /// Adds the status of packet `seq`: received at `arrival_us` (same clock as the reference
    /// time) or not received (`None`). Packets between the last one added (or the base) and
    /// `seq` are added as not received.
    ///
    /// Returns `Ok(false)`, leaving the packet as it was, when `seq` does not fit: the packet
    /// would exceed its size limit or 65,535 statuses, or the delta from the previous
    /// received packet does not fit 16 bits of 250 µs (about ±8.2 s). Then write this packet
    /// and report `seq` in the next one. `seq` before the base or not after the last packet
    /// added (more than 32,767 ahead counts as behind) is an `OutOfRange` error.
    pub fn push(&mut self, seq: u16, arrival_us: Option<i64>) -> Result<bool, Error> {
        let next = self.base_seq.wrapping_add(self.count as u16);
        let gap = usize::from(seq.wrapping_sub(next));
        if gap >= 0x8000 {
            return Err(Error::OutOfRange(
                "twcc sequence number not after the last one",
            ));
        }
        if self.count + gap + 1 > usize::from(u16::MAX) {
            return Ok(false);
        }
        let delta = match arrival_us {
            Some(t) => match delta_units(t.saturating_sub(self.last_us)) {
                Some(d) => Some(d),
                None => return Ok(false),
            },
            None => None,
        };
        let symbol = match delta {
            None => NOT_RECEIVED,
            Some(0..=0xFF) => SMALL_DELTA,
            Some(_) => LARGE_DELTA,
        };
        // Adding may complete chunks; undo that if the packet turns out too long.
        let (chunks_before, last_before) = (self.chunks.len(), self.last);
        for _ in 0..gap {
            self.add_symbol(NOT_RECEIVED);
        }
        self.add_symbol(symbol);
        let delta_bytes = usize::from(symbol);
        if self.len_with(self.deltas.len() + delta_bytes) > self.max_len {
            self.chunks.truncate(chunks_before);
            self.last = last_before;
            return Ok(false);
        }
        self.count += gap + 1;
        if let Some(d) = delta {
            match symbol {
                SMALL_DELTA => self.deltas.push(d as u8),
                _ => self.deltas.extend_from_slice(&d.to_be_bytes()),
            }
            self.last_us = self
                .last_us
                .saturating_add(i64::from(d) * TransportCc::DELTA_UNIT_US);
        }
        Ok(true)
    }

    /// Number of statuses added.
    pub fn status_count(&self) -> u16 {
        // `push` keeps the count at most 65,535.
        self.count as u16
    }

    /// Whether no status was added since [`start`](Self::start).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Transport sequence number the next status would have.
    pub fn next_seq(&self) -> u16 {
        self.base_seq.wrapping_add(self.count as u16)
    }

    /// Bytes [`write_to`](Self::write_to) writes, padding included.
    pub fn encoded_len(&self) -> usize {
        self.len_with(self.deltas.len())
    }

    /// Writes the feedback packet into `buf` and returns its length. A packet without any
    /// status is an `OutOfRange` error: libwebrtc drops empty feedback.
    pub fn write_to(
        &self,
        sender_ssrc: Ssrc,
        media_ssrc: Ssrc,
        buf: &mut [u8],
    ) -> Result<usize, Error> {
        if self.count == 0 {
            return Err(Error::OutOfRange("twcc feedback without packets"));
        }
        let len = self.encoded_len();
        let chunk_bytes = 2 * (self.chunks.len() + 1);
        let body_len = 16 + chunk_bytes + self.deltas.len();
        let out = out_buf(buf, len)?;
        write_header(out, FMT_TWCC, PT_RTPFB, body_len)?;
        out[4..8].copy_from_slice(&sender_ssrc.0.to_be_bytes());
        out[8..12].copy_from_slice(&media_ssrc.0.to_be_bytes());
        out[12..14].copy_from_slice(&self.base_seq.to_be_bytes());
        out[14..16].copy_from_slice(&self.status_count().to_be_bytes());
        let time = (self.reference_time << 8) | u32::from(self.fb_count);
        out[16..20].copy_from_slice(&time.to_be_bytes());
        let last = self.last.encode_last();
        let chunks = self.chunks.iter().chain(core::iter::once(&last));
        for (slot, c) in out[FIXED_LEN..].chunks_exact_mut(2).zip(chunks) {
            slot.copy_from_slice(&c.to_be_bytes());
        }
        let deltas_at = FIXED_LEN + chunk_bytes;
        out[deltas_at..deltas_at + self.deltas.len()].copy_from_slice(&self.deltas);
        Ok(len)
    }

    /// Adds one symbol to the pending chunk, completing it first if it cannot take it.
    fn add_symbol(&mut self, symbol: u8) {
        if !self.last.can_add(symbol) {
            self.chunks.push(self.last.emit());
        }
        self.last.add(symbol);
    }

    /// Packet length, padded, with the current chunks and `delta_len` delta bytes.
    fn len_with(&self, delta_len: usize) -> usize {
        let chunk_bytes = 2 * (self.chunks.len() + usize::from(!self.last.is_empty()));
        padded_len(16 + chunk_bytes + delta_len)
    }
}

/// `delta_us` in 250 µs units, rounded half away from zero as libwebrtc rounds, if it fits
/// the 16-bit signed field.
fn delta_units(delta_us: i64) -> Option<i16> {
    let half = TransportCc::DELTA_UNIT_US / 2;
    let rounded = if delta_us < 0 {
        delta_us.saturating_sub(half)
    } else {
        delta_us.saturating_add(half)
    };
    i16::try_from(rounded / TransportCc::DELTA_UNIT_US).ok()
}

/// The chunk being filled: libwebrtc's `LastChunk`. It keeps the first 14 symbols (all a
/// vector chunk can hold); past 14 it can only be a run, whose symbols are all the first.
#[derive(Debug, Clone, Copy)]
struct LastChunk {
    symbols: [u8; ONE_BIT_CAPACITY],
    len: usize,
    all_same: bool,
    has_large: bool,
}

impl LastChunk {
    const EMPTY: LastChunk = LastChunk {
        symbols: [NOT_RECEIVED; ONE_BIT_CAPACITY],
        len: 0,
        all_same: true,
        has_large: false,
    };

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `symbol` still fits one chunk with the symbols already here: anything fits a
    /// two-bit vector of 7, small deltas and losses fit a one-bit vector of 14, and equal
    /// symbols fit a run of 8191.
    fn can_add(&self, symbol: u8) -> bool {
        self.len < TWO_BIT_CAPACITY
            || (self.len < ONE_BIT_CAPACITY && !self.has_large && symbol != LARGE_DELTA)
            || (self.len < MAX_RUN && self.all_same && self.symbols[0] == symbol)
    }

    fn add(&mut self, symbol: u8) {
        if self.len < ONE_BIT_CAPACITY {
            self.symbols[self.len] = symbol;
        }
        self.len += 1;
        self.all_same &= symbol == self.symbols[0];
        self.has_large |= symbol == LARGE_DELTA;
    }

    /// The chunk for as many symbols as one chunk takes when the next symbol does not fit:
    /// all of them for a run or a full one-bit vector; otherwise the first 7 as a two-bit
    /// vector, keeping the rest here.
    fn emit(&mut self) -> u16 {
        if self.all_same {
            let chunk = self.run_length();
            *self = Self::EMPTY;
            return chunk;
        }
        if self.len == ONE_BIT_CAPACITY {
            let chunk = self.one_bit();
            *self = Self::EMPTY;
            return chunk;
        }
        // Mixed symbols, not a full one-bit vector: 7 to 13 of them (`can_add` takes any
        // below 7 and mixed ones only up to 14), of which the first 7 leave.
        let chunk = self.two_bit(TWO_BIT_CAPACITY);
        let mut kept = Self::EMPTY;
        for s in self.symbols.iter().take(self.len).skip(TWO_BIT_CAPACITY) {
            kept.add(*s);
        }
        *self = kept;
        chunk
    }

    /// The chunk that ends a packet: a run if all symbols are equal, else the smallest
    /// vector that holds them.
    fn encode_last(&self) -> u16 {
        if self.all_same {
            self.run_length()
        } else if self.len <= TWO_BIT_CAPACITY {
            self.two_bit(self.len)
        } else {
            self.one_bit()
        }
    }

    fn run_length(&self) -> u16 {
        (u16::from(self.symbols[0]) << 13) | self.len as u16
    }

    fn one_bit(&self) -> u16 {
        let mut chunk = 0x8000;
        for (i, s) in self.symbols.iter().take(self.len).enumerate() {
            chunk |= u16::from(*s) << (ONE_BIT_CAPACITY - 1 - i);
        }
        chunk
    }

    fn two_bit(&self, n: usize) -> u16 {
        let mut chunk = 0xC000;
        for (i, s) in self
            .symbols
            .iter()
            .take(n.min(TWO_BIT_CAPACITY))
            .enumerate()
        {
            chunk |= u16::from(*s) << (2 * (TWO_BIT_CAPACITY - 1 - i));
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::twcc::tests::{CHROME_ONE_BIT, CHROME_RUN};
    use crate::rtcp::PacketStatus;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// (seq, arrival in µs) for each status of a feedback packet, from its reference time.
    fn arrivals(wire: &[u8]) -> Vec<(u16, Option<i64>)> {
        let t = TransportCc::parse(wire).unwrap();
        let mut at = t.reference_time_us();
        t.packets()
            .unwrap()
            .map(|(seq, status)| match status {
                PacketStatus::NotReceived => (seq, None),
                PacketStatus::Received { delta_us } => {
                    at += delta_us;
                    (seq, Some(at))
                }
            })
            .collect()
    }

    /// Encodes `packets` into as many feedback packets of at most `max_len` bytes as needed,
    /// each with the reference time of its first received packet, as a receiver does.
    fn encode(packets: &[(u16, Option<i64>)], max_len: usize) -> Vec<Vec<u8>> {
        let mut b = TransportCcBuilder::new();
        let mut out = Vec::new();
        let mut i = 0;
        while i < packets.len() {
            let reference = packets[i..].iter().find_map(|p| p.1).unwrap_or(0);
            b.start(packets[i].0, reference, out.len() as u8, max_len);
            while i < packets.len() && b.push(packets[i].0, packets[i].1).unwrap() {
                i += 1;
            }
            assert!(!b.is_empty(), "a fresh packet takes at least one status");
            let mut buf = vec![0u8; b.encoded_len()];
            let n = b.write_to(Ssrc(1), Ssrc(2), &mut buf).unwrap();
            assert_eq!(n, buf.len());
            assert!(n <= max_len.max(MIN_FEEDBACK_LEN), "{n} > {max_len}");
            out.push(buf);
        }
        out
    }

    /// Encodes, decodes and checks every status and every arrival time to half a delta unit;
    /// returns the packets.
    fn round_trip(packets: &[(u16, Option<i64>)], max_len: usize) -> Vec<Vec<u8>> {
        let wires = encode(packets, max_len);
        let decoded: Vec<_> = wires.iter().flat_map(|w| arrivals(w)).collect();
        assert_eq!(decoded.len(), packets.len());
        for ((seq, want), (got_seq, got)) in packets.iter().zip(&decoded) {
            assert_eq!(seq, got_seq);
            match (want, got) {
                (Some(w), Some(g)) => {
                    // The reference time is taken modulo its 24 bits.
                    let d = (w - g).rem_euclid(TransportCc::REFERENCE_TIME_WRAP_US);
                    let near = d <= 125 || d >= TransportCc::REFERENCE_TIME_WRAP_US - 125;
                    assert!(near, "{seq}: sent {w}, got {g}");
                }
                (None, None) => {}
                _ => panic!("{seq}: sent {want:?}, got {got:?}"),
            }
        }
        wires
    }

    /// The statuses and arrivals of a real packet, re-encoded, must give its bytes back.
    fn reencodes_exactly(wire: &[u8]) {
        let t = TransportCc::parse(wire).unwrap();
        let mut b = TransportCcBuilder::new();
        b.start(t.base_seq, t.reference_time_us(), t.fb_count, 1200);
        for (seq, at) in arrivals(wire) {
            assert!(b.push(seq, at).unwrap());
        }
        let mut out = vec![0u8; b.encoded_len()];
        b.write_to(t.sender_ssrc, t.media_ssrc, &mut out).unwrap();
        assert_eq!(hex::encode(out), hex::encode(wire));
    }

    #[test]
    fn reencodes_chrome_packets_byte_for_byte() {
        reencodes_exactly(&hex(CHROME_ONE_BIT));
        reencodes_exactly(&hex(CHROME_RUN));
        reencodes_exactly(&hex(
            "afcd0005 fa17fa17 422d3ff5 00990001 2b681300 20014401",
        ));
    }

    #[test]
    fn one_received_packet() {
        let wires = round_trip(&[(7, Some(1_000_000))], 1200);
        // 1 s = 15 × 64 ms + 40 ms: reference 15, delta 160 units; run of 1 small.
        assert_eq!(
            hex::encode(&wires[0]),
            "afcd0005000000010000000200070001 00000f00 2001a001".replace(' ', "")
        );
    }

    #[test]
    fn wraps_the_sequence_number() {
        let packets: Vec<_> = (0..10u16)
            .map(|i| {
                (
                    65_530u16.wrapping_add(i),
                    Some(5_000 + i64::from(i) * 1_000),
                )
            })
            .collect();
        let wires = round_trip(&packets, 1200);
        assert_eq!(wires.len(), 1);
        let t = TransportCc::parse(&wires[0]).unwrap();
        assert_eq!((t.base_seq, t.status_count), (65_530, 10));
    }

    #[test]
    fn all_lost() {
        let packets: Vec<_> = (100..200u16).map(|s| (s, None)).collect();
        let wires = round_trip(&packets, 1200);
        // One run-length chunk of 100 not received, no deltas.
        assert_eq!(&wires[0][20..22], &[0x00, 100]);
        assert_eq!(wires[0].len(), 24);
    }

    #[test]
    fn gaps_are_filled_as_lost() {
        let mut b = TransportCcBuilder::new();
        b.start(10, 0, 0, 1200);
        assert!(b.push(12, Some(1_000)).unwrap());
        assert!(b.push(15, Some(2_000)).unwrap());
        assert_eq!((b.status_count(), b.next_seq()), (6, 16));
        let mut buf = [0u8; 64];
        let n = b.write_to(Ssrc(1), Ssrc(2), &mut buf).unwrap();
        assert_eq!(
            arrivals(&buf[..n]),
            vec![
                (10, None),
                (11, None),
                (12, Some(1_000)),
                (13, None),
                (14, None),
                (15, Some(2_000))
            ]
        );
        // Two-bit vector of 6 (libwebrtc uses the two-bit form up to 7 mixed statuses).
        assert_eq!(&buf[20..22], &[0xc1, 0x04]);
        // Behind the last one, a duplicate, or before the base: errors.
        let behind = Err(Error::OutOfRange(
            "twcc sequence number not after the last one",
        ));
        assert_eq!(b.push(15, None), behind);
        assert_eq!(b.push(3, None), behind);
        b.start(10, 0, 0, 1200);
        assert_eq!(b.push(9, None), behind);
        assert_eq!(
            b.write_to(Ssrc(1), Ssrc(2), &mut buf),
            Err(Error::OutOfRange("twcc feedback without packets"))
        );
    }

    #[test]
    fn large_and_negative_deltas() {
        // 100 ms (400 units, large), then 5 s back (-20000 units), then +255 units (small).
        let packets = [
            (1, Some(6_000_000)),
            (2, Some(6_100_000)),
            (3, Some(1_100_000)),
            (4, Some(1_163_750)),
        ];
        let wires = round_trip(&packets, 1200);
        assert_eq!(wires.len(), 1);
        // 6 s = 93 × 64 ms + 48 ms: first delta 192 units (small); then large, large, small:
        // 0b11 + 01 10 10 01 00 00 00.
        let w = &wires[0];
        assert_eq!(&w[20..22], &[0xda, 0x40]);
        assert_eq!(&w[22..28], &hex("c0 0190 b1e0 ff"));
    }

    #[test]
    fn a_delta_beyond_16_bits_starts_the_next_packet() {
        let packets = [(1, Some(0)), (2, Some(8_000_000)), (3, Some(16_500_000))];
        let wires = round_trip(&packets, 1200);
        assert_eq!(wires.len(), 2);
        assert_eq!(TransportCc::parse(&wires[1]).unwrap().base_seq, 3);
        // The rejected push left the first packet as it was.
        let mut b = TransportCcBuilder::new();
        b.start(1, 0, 0, 1200);
        assert!(b.push(1, Some(0)).unwrap());
        let before = b.encoded_len();
        assert!(!b.push(2, Some(-8_200_000)).unwrap());
        assert_eq!((b.status_count(), b.encoded_len()), (1, before));
    }

    #[test]
    fn long_runs_split_into_run_length_chunks() {
        // 20,000 packets 1 ms apart (4 units each): one long run of small deltas.
        let packets: Vec<_> = (0..20_000u16)
            .map(|i| (i, Some(i64::from(i) * 1_000)))
            .collect();
        let wires = round_trip(&packets, MAX_PACKET_LEN);
        assert_eq!(wires.len(), 1);
        let w = &wires[0];
        // 8191 + 8191 + 3618 small deltas.
        assert_eq!(&w[20..26], &hex("3fff 3fff 2e22"));
        assert_eq!(w.len(), padded_len(16 + 6 + 20_000));

        // 20,000 lost, then one received: 8191 + 8191 + 3618 lost, a run of 1 received.
        let mut packets: Vec<_> = (0..20_000u16).map(|i| (i, None)).collect();
        packets.push((20_000, Some(10)));
        let wires = round_trip(&packets, 1200);
        assert_eq!(&wires[0][20..28], &hex("1fff 1fff 0e22 2001"));
    }

    #[test]
    fn at_most_65535_statuses() {
        let mut b = TransportCcBuilder::new();
        b.start(0, 0, 0, MAX_PACKET_LEN);
        // One push reaches at most 32,767 ahead.
        assert!(b.push(30_000, None).unwrap());
        assert!(b.push(60_000, None).unwrap());
        assert!(b.push(65_534, None).unwrap());
        assert_eq!(b.status_count(), 65_535);
        assert!(!b.push(65_535, None).unwrap());
    }

    #[test]
    fn splits_to_the_size_limit() {
        // 3,000 packets, every 5th lost, 2 ms apart: several 1200-byte packets.
        let packets: Vec<_> = (0..3_000u16)
            .map(|i| (i, (i % 5 != 0).then_some(i64::from(i) * 2_000)))
            .collect();
        let wires = round_trip(&packets, 1200);
        assert!(wires.len() >= 3, "{}", wires.len());
        assert!(wires.iter().all(|w| w.len() <= 1200));
        // Only the last packet is short: the others were cut because the next status did not
        // fit.
        assert!(wires[..wires.len() - 1].iter().all(|w| w.len() > 1150));
    }

    #[test]
    fn mixed_statuses_choose_chunks_like_libwebrtc() {
        // 14 small/lost (one-bit vector), then a large among 7 (two-bit vector), then a run.
        let mut packets = Vec::new();
        let mut t = 0;
        for i in 0..14u16 {
            t += 1_000;
            packets.push((i, (i % 3 != 0).then_some(t)));
        }
        for i in 14..21u16 {
            t += if i == 16 { 100_000 } else { 1_000 };
            packets.push((i, (i != 18).then_some(t)));
        }
        for i in 21..40u16 {
            t += 1_000;
            packets.push((i, Some(t)));
        }
        let wires = round_trip(&packets, 1200);
        let w = &wires[0];
        // 0b10 + 01101101101101 ; 0b11 + 01 01 10 01 00 01 01 ; run of 19 small.
        assert_eq!(&w[20..26], &hex("9b6d d645 2013"));
    }

    #[test]
    fn random_mixes_round_trip() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..50 {
            let mut t: i64 = (next() % 1_000_000_000) as i64;
            let mut seq = next() as u16;
            let mut packets = Vec::new();
            for _ in 0..(next() % 3000) {
                let r = next();
                t += match r % 10 {
                    0 => -(((r >> 8) % 20_000_000) as i64),
                    1 => ((r >> 8) % 20_000_000) as i64,
                    _ => ((r >> 8) % 70_000) as i64,
                };
                let lost = r % 7 == 3;
                packets.push((seq, (!lost).then_some(t)));
                seq = seq.wrapping_add(1);
            }
            if packets.is_empty() {
                continue;
            }
            let max_len = [28, 100, 1200, MAX_PACKET_LEN][round % 4];
            round_trip(&packets, max_len);
        }
    }
}
