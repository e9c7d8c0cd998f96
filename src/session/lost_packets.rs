//! The sequence numbers of one retransmission request, as they cross cores.
//!
//! A player's NACK is answered from its core's retransmission cache; what the cache missed is
//! asked of the publisher, whose session may live on another core. The numbers (already in the
//! publisher's sequence space) then cross the mesh as big-endian pairs of bytes: this is that
//! wire format, and the inline list it is read into, so the trip allocates nothing.

/// The most sequence numbers one retransmission request carries.
pub const MAX_LOST_PACKETS: usize = 64;

/// Sequence numbers a receiver reported lost (at most [`MAX_LOST_PACKETS`]), kept inline so
/// that a NACK travels from player to publisher without a heap allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LostPackets {
    len: u8,
    seqs: [u16; MAX_LOST_PACKETS],
}

/// Keeps the first [`MAX_LOST_PACKETS`] numbers; the rest are left out.
impl FromIterator<u16> for LostPackets {
    fn from_iter<I: IntoIterator<Item = u16>>(seqs: I) -> Self {
        let mut lost = LostPackets {
            len: 0,
            seqs: [0; MAX_LOST_PACKETS],
        };
        for seq in seqs.into_iter().take(MAX_LOST_PACKETS) {
            lost.seqs[usize::from(lost.len)] = seq;
            lost.len += 1;
        }
        lost
    }
}

impl LostPackets {
    /// Reads numbers written by [`LostPackets::to_be_bytes`].
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect()
    }

    /// The numbers as big-endian pairs of bytes, for the cross-core hand-off; returns the length.
    pub fn to_be_bytes(&self, out: &mut [u8; 2 * MAX_LOST_PACKETS]) -> usize {
        for (chunk, seq) in out.chunks_exact_mut(2).zip(self.as_slice()) {
            chunk.copy_from_slice(&seq.to_be_bytes());
        }
        2 * self.as_slice().len()
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.seqs[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for LostPackets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_cross_as_big_endian_pairs() {
        let lost: LostPackets = [1u16, 0x1234, 65535].into_iter().collect();
        let mut bytes = [0u8; 2 * MAX_LOST_PACKETS];
        let len = lost.to_be_bytes(&mut bytes);
        assert_eq!(&bytes[..len], [0, 1, 0x12, 0x34, 0xff, 0xff]);
        assert_eq!(LostPackets::from_be_bytes(&bytes[..len]), lost);
        assert_eq!(format!("{lost:?}"), "[1, 4660, 65535]");
    }

    #[test]
    fn keeps_the_first_max_lost_packets_and_ignores_an_odd_byte() {
        let lost: LostPackets = (0..1000u16).collect();
        assert_eq!(
            lost.as_slice(),
            (0..MAX_LOST_PACKETS as u16).collect::<Vec<_>>()
        );
        assert_eq!(LostPackets::from_be_bytes(&[0, 7, 9]).as_slice(), [7]);
        assert!(LostPackets::from_be_bytes(&[]).is_empty());
    }
}
