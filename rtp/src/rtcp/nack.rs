//! Generic NACK (RFC 4585 §6.2.1).

use super::{body_of, out_buf, u32_at, write_header, Items, WireItem, FMT_NACK, PT_RTPFB};
use crate::{Error, Ssrc};

/// One NACK FCI entry: a lost packet id and a bitmask of the 16 following losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NackPair {
    /// Packet id: the sequence number of a lost packet.
    pub pid: u16,
    /// Bitmask of following lost packets: bit i set means `pid + i + 1` is lost.
    pub blp: u16,
}

impl NackPair {
    /// The lost sequence numbers this entry names, `pid` first.
    pub fn lost(self) -> impl Iterator<Item = u16> {
        let following = (0..16u16)
            .filter(move |i| self.blp & (1 << i) != 0)
            .map(move |i| self.pid.wrapping_add(i + 1));
        core::iter::once(self.pid).chain(following)
    }

    /// Packs lost sequence numbers into as few entries as they fit: each entry covers its
    /// `pid` and the 16 numbers after it. Writes the entries into `out` and returns how many.
    ///
    /// `lost` may come in any order and repeat numbers. It is sorted in place, in wrapping
    /// order around its first number (so 65535 comes before 0 when they are close), which is
    /// what lets the packing work without scratch space. Numbers that would need more entries
    /// than `out` holds are left out.
    pub fn pack(lost: &mut [u16], out: &mut [NackPair]) -> usize {
        let Some(&first) = lost.first() else {
            return 0;
        };
        // Puts `first` in the middle of the sort window: numbers up to half the sequence space
        // behind or ahead of it keep their wrapping order.
        let window_start = first.wrapping_sub(0x8000);
        lost.sort_unstable_by_key(|seq| seq.wrapping_sub(window_start));
        let mut count: usize = 0;
        let mut previous = None;
        for &seq in lost.iter() {
            if previous == Some(seq) {
                continue;
            }
            previous = Some(seq);
            if let Some(last) = out[..count].last_mut() {
                let offset = seq.wrapping_sub(last.pid);
                if (1..=16).contains(&offset) {
                    last.blp |= 1 << (offset - 1);
                    continue;
                }
            }
            if count == out.len() {
                break;
            }
            out[count] = NackPair { pid: seq, blp: 0 };
            count += 1;
        }
        count
    }
}

impl WireItem for NackPair {
    const LEN: usize = 4;

    fn read(b: &[u8]) -> Self {
        NackPair {
            pid: u16::from_be_bytes([b[0], b[1]]),
            blp: u16::from_be_bytes([b[2], b[3]]),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[..2].copy_from_slice(&self.pid.to_be_bytes());
        b[2..4].copy_from_slice(&self.blp.to_be_bytes());
    }
}

/// A generic NACK: the sender of this packet is missing some RTP packets of `media_ssrc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nack<'a> {
    /// SSRC of the packet's sender.
    pub sender_ssrc: Ssrc,
    /// The media source whose packets are missing.
    pub media_ssrc: Ssrc,
    /// The (PID, BLP) entries.
    pub pairs: Items<'a, NackPair>,
}

impl<'a> Nack<'a> {
    /// Parses one whole NACK packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, Error> {
        let (_, body) = body_of(packet, PT_RTPFB, Some(FMT_NACK))?;
        Self::from_body(body)
    }

    pub(crate) fn from_body(body: &'a [u8]) -> Result<Self, Error> {
        Ok(Nack {
            sender_ssrc: Ssrc(u32_at(body, 0)?),
            media_ssrc: Ssrc(u32_at(body, 4)?),
            pairs: Items::from_wire(&body[8..]),
        })
    }

    /// Every lost sequence number, in entry order.
    pub fn lost(&self) -> impl Iterator<Item = u16> + 'a {
        self.pairs.iter().flat_map(NackPair::lost)
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        12 + self.pairs.encoded_len()
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.encoded_len();
        let out = out_buf(buf, len)?;
        write_header(out, FMT_NACK, PT_RTPFB, len - 4)?;
        out[4..8].copy_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.media_ssrc.0.to_be_bytes());
        self.pairs.write(&mut out[12..]);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lists_losses() {
        // pid 65535 with bits 0 and 2: 65535, 0, 2; then pid 10 alone.
        let wire =
            hex::decode("81cd0004 00000001 00000002 ffff0005 000a0000".replace(' ', "")).unwrap();
        let nack = Nack::parse(&wire).unwrap();
        assert_eq!(nack.media_ssrc, Ssrc(2));
        assert_eq!(nack.lost().collect::<Vec<_>>(), vec![65_535, 0, 2, 10]);
        let mut out = [0u8; 20];
        assert_eq!(nack.write_to(&mut out).unwrap(), 20);
        assert_eq!(&out[..], &wire[..]);

        let pairs = [NackPair {
            pid: 1,
            blp: 0x8000,
        }];
        let built = Nack {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(2),
            pairs: Items::from_slice(&pairs),
        };
        let n = built.write_to(&mut out).unwrap();
        assert_eq!(Nack::parse(&out[..n]).unwrap(), built);
        assert_eq!(built.lost().collect::<Vec<_>>(), vec![1, 17]);
    }

    #[test]
    fn packing_covers_every_lost_number_once() {
        let mut lost = [10u16, 12, 26, 27, 11, 10, 65535, 0];
        let mut out = [NackPair::default(); 8];
        let count = NackPair::pack(&mut lost, &mut out);
        let pairs = &out[..count];
        let mut covered: Vec<u16> = pairs.iter().flat_map(|p| p.lost()).collect();
        covered.sort_unstable();
        assert_eq!(covered, [0, 10, 11, 12, 26, 27, 65535]);
        // 65535 covers 0 and 10..=12 (offsets 1, 11, 12, 13) across the wrap; 26 starts a pair.
        assert_eq!(
            pairs,
            [
                NackPair {
                    pid: 65535,
                    blp: 1 | 1 << 10 | 1 << 11 | 1 << 12
                },
                NackPair { pid: 26, blp: 1 },
            ]
        );
    }

    #[test]
    fn packing_nothing_writes_nothing() {
        let mut out = [NackPair::default(); 2];
        assert_eq!(NackPair::pack(&mut [], &mut out), 0);
        assert_eq!(NackPair::pack(&mut [1, 2], &mut []), 0);
    }

    #[test]
    fn packing_stops_when_out_is_full_but_fills_the_last_entry() {
        // Four entries' worth; room for two. The second still takes its following numbers.
        let mut lost = [100u16, 200, 201, 216, 217, 300, 400];
        let mut out = [NackPair::default(); 2];
        assert_eq!(NackPair::pack(&mut lost, &mut out), 2);
        assert_eq!(
            out,
            [
                NackPair { pid: 100, blp: 0 },
                NackPair {
                    pid: 200,
                    blp: 1 | 1 << 15
                },
            ]
        );
    }

    #[test]
    fn packed_entries_round_trip_through_a_nack() {
        // Every number of a 64-packet burst with holes, across the wrap.
        let mut lost: Vec<u16> = (0..64u16)
            .filter(|i| i % 3 != 1)
            .map(|i| 65_500u16.wrapping_add(i * 2))
            .collect();
        let mut expected = lost.clone();
        let mut out = [NackPair::default(); 64];
        let count = NackPair::pack(&mut lost, &mut out);
        let nack = Nack {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(2),
            pairs: Items::from_slice(&out[..count]),
        };
        let mut wire = [0u8; 12 + 4 * 64];
        let n = nack.write_to(&mut wire).unwrap();
        let mut got: Vec<u16> = Nack::parse(&wire[..n]).unwrap().lost().collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected);
    }

    #[test]
    fn rejects_short() {
        assert_eq!(
            Nack::parse(&hex::decode("81cd000100000001").unwrap()),
            Err(Error::Truncated)
        );
    }
}
