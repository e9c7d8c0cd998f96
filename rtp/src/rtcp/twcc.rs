//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01 §3.1), RTPFB FMT 15: the fixed fields, and [`TransportCc::packets`], which
//! decodes the packet status chunks and receive deltas into one status per reported packet.
//! [`TransportCcBuilder`](super::TransportCcBuilder) writes them.
//!
//! Layout after the fixed fields: `status_count` statuses packed into 16-bit chunks, then one
//! receive delta per received packet (1 byte for a "small" status, 2 for a "large" one), then
//! RTCP padding. A chunk is one of (§3.1.3, §3.1.4):
//!
//! - run length: `0 SS LLLLLLLLLLLLL`, the status `SS` repeated up to 8191 times;
//! - one-bit vector: `1 0` then 14 one-bit statuses, 0 not received, 1 received with a small
//!   delta (libwebrtc's reading; the draft's prose has them the other way round);
//! - two-bit vector: `1 1` then 7 two-bit statuses.

use super::{body_of, out_buf, padded_len, u32_at, write_header, FMT_TWCC, PT_RTPFB};
use crate::{Error, Ssrc};

/// Status symbol "packet not received" (§3.1.1).
pub(super) const NOT_RECEIVED: u8 = 0;
/// Status symbol "packet received, small delta": a 1-byte unsigned delta follows.
pub(super) const SMALL_DELTA: u8 = 1;
/// Status symbol "packet received, large or negative delta": a 2-byte signed delta follows.
pub(super) const LARGE_DELTA: u8 = 2;
/// The fourth symbol is reserved; libwebrtc rejects a packet that uses it.
const RESERVED: u8 = 3;

/// Largest run a run-length chunk holds (13 bits).
pub(super) const MAX_RUN: usize = 0x1FFF;
/// Statuses in a one-bit status vector chunk.
pub(super) const ONE_BIT_CAPACITY: usize = 14;
/// Statuses in a two-bit status vector chunk.
pub(super) const TWO_BIT_CAPACITY: usize = 7;

/// A transport-cc feedback packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransportCc<'a> {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// Media source SSRC (unused by most senders).
    pub media_ssrc: Ssrc,
    /// Transport-wide sequence number of the first packet reported.
    pub base_seq: u16,
    /// Number of packets whose status is reported.
    pub status_count: u16,
    /// Reference time, 24 bits, in multiples of 64 ms.
    pub reference_time: u32,
    /// Feedback packet count, to detect lost feedback.
    pub fb_count: u8,
    /// Packet status chunks and receive deltas, padding removed.
    pub chunks: &'a [u8],
}

impl<'a> TransportCc<'a> {
    /// Microseconds in one unit of [`reference_time`](Self::reference_time) (§3.1: 64 ms).
    pub const REFERENCE_TIME_UNIT_US: i64 = 64_000;
    /// Microseconds after which the 24-bit reference time wraps (2^24 × 64 ms, about 12.4
    /// days). libwebrtc compares the reference times of consecutive feedback packets modulo
    /// this period.
    pub const REFERENCE_TIME_WRAP_US: i64 = (1 << 24) * Self::REFERENCE_TIME_UNIT_US;
    /// Microseconds in one unit of a receive delta (§3.1.5: 250 µs).
    pub const DELTA_UNIT_US: i64 = 250;

    /// Parses one whole transport-cc packet. The status chunks are only split off here;
    /// [`packets`](Self::packets) checks and decodes them.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (_, body) = body_of(packet, PT_RTPFB, Some(FMT_TWCC))?;
        Self::from_body(body)
    }

    pub(crate) fn from_body(body: &'a [u8]) -> Result<Self, Error> {
        let word = u32_at(body, 8)?;
        let time = u32_at(body, 12)?;
        Ok(TransportCc {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            media_ssrc: Ssrc(u32_at(body, 4)?),
            base_seq: (word >> 16) as u16,
            status_count: word as u16,
            reference_time: time >> 8,
            fb_count: time as u8,
            chunks: &body[16..],
        })
    }

    /// The reference time in microseconds: the time base of the first receive delta, on the
    /// feedback sender's clock (only differences between feedback packets mean anything).
    pub fn reference_time_us(&self) -> i64 {
        i64::from(self.reference_time & 0xFF_FFFF) * Self::REFERENCE_TIME_UNIT_US
    }

    /// Decodes the statuses: one `(transport sequence number, status)` for each of the
    /// `status_count` packets from `base_seq` on, in order.
    ///
    /// The whole chunk and delta area is checked before anything is yielded, so a packet is
    /// either used whole or rejected: a chunk or delta missing is `Truncated`, the reserved
    /// status symbol is `Malformed`. Bytes after the last delta are ignored, as libwebrtc
    /// does. The work is bounded by the packet length plus `status_count` (at most 65,535).
    ///
    /// The arrival time of a received packet is the reference time plus the deltas of every
    /// received packet up to and including it:
    ///
    /// ```
    /// # fn demo(fb: &rtp::rtcp::TransportCc<'_>) -> Result<(), rtp::Error> {
    /// use rtp::rtcp::PacketStatus;
    /// let mut arrival_us = fb.reference_time_us();
    /// for (seq, status) in fb.packets()? {
    ///     if let PacketStatus::Received { delta_us } = status {
    ///         arrival_us += delta_us;
    ///         println!("{seq} arrived at {arrival_us} us");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn packets(&self) -> Result<TransportCcPackets<'a>, Error> {
        let (chunk_len, delta_len) = layout(self.chunks, self.status_count)?;
        Ok(TransportCcPackets {
            chunks: &self.chunks[..chunk_len],
            deltas: &self.chunks[chunk_len..chunk_len + delta_len],
            chunk: 0,
            in_chunk: 0,
            chunk_statuses: 0,
            remaining: self.status_count,
            seq: self.base_seq,
        })
    }

    /// Bytes [`write_to`](Self::write_to) writes: padded to 32 bits.
    pub fn encoded_len(&self) -> usize {
        padded_len(16 + self.chunks.len())
    }

    /// Writes the packet into `buf`, returning its length. A body that is not a multiple of
    /// 4 bytes gets RTCP padding (P bit) as libwebrtc sends it.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.reference_time > 0xFF_FFFF {
            return Err(Error::OutOfRange("twcc reference time above 24 bits"));
        }
        let len = self.encoded_len();
        let body_len = 16 + self.chunks.len();
        let out = out_buf(buf, len)?;
        write_header(out, FMT_TWCC, PT_RTPFB, body_len)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.media_ssrc.0.to_be_bytes());
        out[12..14].copy_from_slice(&self.base_seq.to_be_bytes());
        out[14..16].copy_from_slice(&self.status_count.to_be_bytes());
        let time = (self.reference_time << 8) | u32::from(self.fb_count);
        out[16..20].copy_from_slice(&time.to_be_bytes());
        out[20..4 + body_len].copy_from_slice(self.chunks);
        Ok(len)
    }
}

/// What a transport-cc feedback says about one packet.
///
/// Exhaustive: the draft's third status ("received without delta") was dropped before
/// libwebrtc shipped, and its symbol is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketStatus {
    /// The packet had not arrived when the feedback was sent.
    NotReceived,
    /// The packet arrived `delta_us` microseconds (a multiple of 250, possibly negative)
    /// after the previous received packet of the same feedback, or after the reference time
    /// for the first one.
    Received {
        /// Arrival time difference in microseconds.
        delta_us: i64,
    },
}

/// Iterator over the statuses of a [`TransportCc`]; see [`TransportCc::packets`].
#[derive(Debug, Clone)]
pub struct TransportCcPackets<'a> {
    /// Status chunks not read yet.
    chunks: &'a [u8],
    /// Receive deltas not read yet.
    deltas: &'a [u8],
    /// The chunk being read.
    chunk: u16,
    /// Statuses of `chunk` already yielded.
    in_chunk: usize,
    /// Statuses `chunk` contributes (its capacity, cut at `status_count`).
    chunk_statuses: usize,
    /// Statuses still to yield.
    remaining: u16,
    /// Sequence number of the next status.
    seq: u16,
}

impl Iterator for TransportCcPackets<'_> {
    type Item = (u16, PacketStatus);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // Empty run-length chunks are legal and skipped; each costs 2 bytes of input.
        while self.in_chunk == self.chunk_statuses {
            let Some((c, rest)) = self.chunks.split_first_chunk::<2>() else {
                // `packets` checked the layout, so this is unreachable; end rather than panic.
                self.remaining = 0;
                return None;
            };
            self.chunks = rest;
            self.chunk = u16::from_be_bytes(*c);
            self.in_chunk = 0;
            self.chunk_statuses = chunk_capacity(self.chunk).min(usize::from(self.remaining));
        }
        let symbol = chunk_symbol(self.chunk, self.in_chunk);
        self.in_chunk += 1;
        let status = match symbol {
            SMALL_DELTA => {
                let (d, rest) = self.deltas.split_first()?;
                self.deltas = rest;
                PacketStatus::Received {
                    delta_us: i64::from(*d) * TransportCc::DELTA_UNIT_US,
                }
            }
            LARGE_DELTA => {
                let (d, rest) = self.deltas.split_first_chunk::<2>()?;
                self.deltas = rest;
                PacketStatus::Received {
                    delta_us: i64::from(i16::from_be_bytes(*d)) * TransportCc::DELTA_UNIT_US,
                }
            }
            _ => PacketStatus::NotReceived,
        };
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        self.remaining -= 1;
        Some((seq, status))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for TransportCcPackets<'_> {}
impl core::iter::FusedIterator for TransportCcPackets<'_> {}

/// Walks the chunks that carry `status_count` statuses and returns how many bytes the chunks
/// and the receive deltas take, checking both fit in `data` and no status is reserved.
fn layout(data: &[u8], status_count: u16) -> Result<(usize, usize), Error> {
    let mut remaining = usize::from(status_count);
    let mut chunk_len = 0;
    let mut delta_len = 0;
    while remaining > 0 {
        let c = data.get(chunk_len..chunk_len + 2).ok_or(Error::Truncated)?;
        chunk_len += 2;
        let chunk = u16::from_be_bytes([c[0], c[1]]);
        let n = chunk_capacity(chunk).min(remaining);
        if is_run(chunk) {
            // One symbol for the whole run: no per-status loop for 8191-long runs.
            delta_len += n * delta_size(chunk_symbol(chunk, 0), n)?;
        } else {
            for i in 0..n {
                delta_len += delta_size(chunk_symbol(chunk, i), 1)?;
            }
        }
        remaining -= n;
    }
    if chunk_len + delta_len > data.len() {
        return Err(Error::Truncated);
    }
    Ok((chunk_len, delta_len))
}

/// Receive delta bytes a status symbol carries. The reserved symbol is an error when it
/// stands for at least one status (`n`).
fn delta_size(symbol: u8, n: usize) -> Result<usize, Error> {
    match symbol {
        RESERVED if n > 0 => Err(Error::Malformed("twcc reserved packet status symbol")),
        RESERVED => Ok(0),
        s => Ok(usize::from(s)),
    }
}

/// Whether a chunk is a run-length chunk (T bit clear).
fn is_run(chunk: u16) -> bool {
    chunk & 0x8000 == 0
}

/// Statuses a chunk holds.
fn chunk_capacity(chunk: u16) -> usize {
    if is_run(chunk) {
        usize::from(chunk) & MAX_RUN
    } else if chunk & 0x4000 == 0 {
        ONE_BIT_CAPACITY
    } else {
        TWO_BIT_CAPACITY
    }
}

/// The status symbol at index `i` of a chunk (`i` below its capacity).
fn chunk_symbol(chunk: u16, i: usize) -> u8 {
    if is_run(chunk) {
        (chunk >> 13) as u8 & 0b11
    } else if chunk & 0x4000 == 0 {
        (chunk >> (13 - i)) as u8 & 0b1
    } else {
        (chunk >> (12 - 2 * i)) as u8 & 0b11
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn statuses(t: &TransportCc<'_>) -> Vec<(u16, PacketStatus)> {
        t.packets().unwrap().collect()
    }

    fn rx(units: i64) -> PacketStatus {
        PacketStatus::Received {
            delta_us: units * 250,
        }
    }

    const LOST: PacketStatus = PacketStatus::NotReceived;

    #[test]
    fn parses_padded_wire_vector_and_round_trips() {
        // Base seq 153, 1 status, ref time 0x2b6813, fb count 0; one run-length chunk
        // (0x2001) and one 1-byte delta (0x44), then 1 padding octet.
        let wire =
            hex::decode("afcd0005 fa17fa17 422d3ff5 00990001 2b681300 20014401".replace(' ', ""))
                .unwrap();
        let t = TransportCc::parse(&wire).unwrap();
        assert_eq!(
            (t.sender_ssrc, t.media_ssrc),
            (Ssrc(0xfa17_fa17), Ssrc(0x422d_3ff5))
        );
        assert_eq!((t.base_seq, t.status_count), (153, 1));
        assert_eq!((t.reference_time, t.fb_count), (0x2b_6813, 0));
        assert_eq!(t.chunks, &[0x20, 0x01, 0x44]);
        assert_eq!(statuses(&t), vec![(153, rx(0x44))]);
        assert_eq!(t.reference_time_us(), 0x2b_6813 * 64_000);
        let mut out = [0u8; 24];
        assert_eq!(t.write_to(&mut out).unwrap(), 24);
        assert_eq!(&out[..], &wire[..]);
        assert_eq!(TransportCc::parse(&out).unwrap(), t);
    }

    #[test]
    fn rejects_short() {
        let wire = hex::decode("8fcd0003 fa17fa17 422d3ff5 00990001".replace(' ', "")).unwrap();
        assert_eq!(TransportCc::parse(&wire), Err(Error::Truncated));
    }

    /// Chrome's feedback (sender SSRC 0xfa17fa17 is libwebrtc's receive-only RTCP SSRC) with
    /// a one-bit status vector, from mediasoup's tests: 7 received, 3 lost, 3 received.
    pub(crate) const CHROME_ONE_BIT: &str =
        "8fcd0007 fa17fa17 09faff67 0027000d 5fc2f103 bf8e 1000 0000 0000 001c 0400";

    #[test]
    fn decodes_one_bit_vector_from_chrome() {
        let wire = hex(CHROME_ONE_BIT);
        let t = TransportCc::parse(&wire).unwrap();
        assert_eq!((t.base_seq, t.status_count, t.fb_count), (39, 13, 3));
        assert_eq!(t.reference_time, 0x5f_c2f1);
        let mut want: Vec<_> = (39..46).map(|s| (s, rx(0))).collect();
        want[0].1 = rx(0x10);
        want.extend([(46, LOST), (47, LOST), (48, LOST)]);
        want.extend([(49, rx(0x1c)), (50, rx(4)), (51, rx(0))]);
        assert_eq!(statuses(&t), want);
        assert_eq!(t.packets().unwrap().len(), 13);
    }

    /// Chrome's feedback from pion/rtcp's tests: a run of 7 small deltas, 3 padding octets.
    pub(crate) const CHROME_RUN: &str =
        "afcd0007 fa17fa17 193dd8bb 00040007 10636e01 2007 4c2424100c0c10 000003";

    #[test]
    fn decodes_run_length_from_chrome() {
        let wire = hex(CHROME_RUN);
        let t = TransportCc::parse(&wire).unwrap();
        let deltas = [0x4c, 0x24, 0x24, 0x10, 0x0c, 0x0c, 0x10];
        let want: Vec<_> = (4..).zip(deltas.map(rx)).collect();
        assert_eq!(statuses(&t), want);
        assert_eq!((t.reference_time, t.fb_count), (1_074_030, 1));
    }

    #[test]
    fn decodes_two_bit_vector_large_delta_and_a_run_cut_at_the_count() {
        // From pion/rtcp's tests: a two-bit vector (5 small, 1 lost, 1 large), then a run of
        // 48 lost of which only 2 are counted (status count 9), seq 34108 on.
        let wire = hex("afcd0007 9b74f61f 9371dcbc 853c0009 63f916b3 d552 0030 9baa6aaa7b 0109 01");
        let t = TransportCc::parse(&wire).unwrap();
        let mut want: Vec<_> = (34108..)
            .zip([0x9b, 0xaa, 0x6a, 0xaa, 0x7b].map(rx))
            .collect();
        want.extend([
            (34113, LOST),
            (34114, rx(0x109)),
            (34115, LOST),
            (34116, LOST),
        ]);
        assert_eq!(statuses(&t), want);
    }

    #[test]
    fn decodes_negative_deltas_and_wraps_the_sequence() {
        // Base 65534, 3 statuses: run of 3 large deltas: -1, 0x7fff, -32768 units.
        let wire = hex("8fcd0007 00000001 00000002 fffe0003 ffffff07 4003 ffff 7fff 8000 00000000");
        let t = TransportCc::parse(&wire).unwrap();
        assert_eq!(t.reference_time_us(), 0xff_ffff * 64_000);
        assert_eq!(
            statuses(&t),
            vec![(65534, rx(-1)), (65535, rx(0x7fff)), (0, rx(-32768))]
        );
    }

    #[test]
    fn skips_empty_runs_and_ignores_trailing_bytes() {
        // Two empty run chunks, then a one-bit vector whose 4th status is the last counted.
        let wire =
            hex("8fcd0007 00000001 00000002 00050004 00000100 0000 2000 8800 05 060708 0000");
        let t = TransportCc::parse(&wire).unwrap();
        assert_eq!(
            statuses(&t),
            vec![(5, LOST), (6, LOST), (7, rx(5)), (8, LOST)]
        );
    }

    #[test]
    fn empty_feedback_yields_nothing() {
        let wire = hex("8fcd0004 9acb0442 00000000 00000000 00000000");
        let t = TransportCc::parse(&wire).unwrap();
        assert_eq!(t.packets().unwrap().count(), 0);
    }

    #[test]
    fn malformed_chunks_and_deltas_are_errors() {
        // A packet with these chunk and delta bytes, padded the RTCP way (P bit).
        let case = |chunks: &str, count: u16| {
            let mut wire = hex("8fcd0000 00000001 00000002 0001");
            wire.extend(count.to_be_bytes());
            wire.extend(hex("00000000"));
            wire.extend(hex(chunks));
            let pad = (4 - wire.len() % 4) % 4;
            if pad > 0 {
                wire.extend(std::iter::repeat_n(0, pad - 1));
                wire.push(pad as u8);
                wire[0] |= 0x20;
            }
            let words = (wire.len() / 4 - 1) as u16;
            wire[2..4].copy_from_slice(&words.to_be_bytes());
            TransportCc::parse(&wire)
                .unwrap()
                .packets()
                .map(|p| p.count())
        };
        // No chunk at all for one status.
        assert_eq!(case("", 1), Err(Error::Truncated));
        // A run of 3 small deltas with 2 delta bytes (the padding rounds up to a word).
        assert_eq!(case("2003 0101", 3), Err(Error::Truncated));
        // The run covers 2 of 3 statuses: the next chunk is missing.
        assert_eq!(case("2002", 3), Err(Error::Truncated));
        // Large delta with one byte.
        assert_eq!(case("4001 01", 1), Err(Error::Truncated));
        // Reserved symbol, in a run and in a two-bit vector.
        let reserved = Err(Error::Malformed("twcc reserved packet status symbol"));
        assert_eq!(case("6001", 1), reserved);
        assert_eq!(case("f000", 1), reserved);
        // Reserved symbols past the status count do not matter, nor an empty reserved run.
        assert_eq!(case("d3ff 01", 1), Ok(1));
        assert_eq!(case("6000 2001 01", 1), Ok(1));
        // 65,535 lost packets in 9 run chunks, no deltas.
        assert_eq!(
            case("1fff 1fff 1fff 1fff 1fff 1fff 1fff 1fff 0007", 0xffff),
            Ok(0xffff)
        );
    }
}
