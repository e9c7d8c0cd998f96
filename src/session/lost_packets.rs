//! The sequence numbers one retransmission request names, kept inline.
//!
//! A player's NACK is read into a [`LostPackets`] and answered from its core's retransmission
//! cache; what the cache missed is asked of the publisher, whose session may live on another
//! core. A publisher's session takes the same list. Nothing on that way allocates: the list is
//! a fixed array, and its wire format across cores (big-endian pairs of bytes) lives with the
//! other forwarded items, in `crate::media`'s `forward.rs`.

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
    /// The numbers, in the order they were named.
    pub fn as_slice(&self) -> &[u16] {
        &self.seqs[..usize::from(self.len)]
    }

    /// Whether it names none.
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
    fn keeps_the_first_max_lost_packets_in_order() {
        let lost: LostPackets = (0..1000u16).collect();
        assert_eq!(
            lost.as_slice(),
            (0..MAX_LOST_PACKETS as u16).collect::<Vec<_>>()
        );
        assert_eq!(
            format!("{:?}", [1u16, 0x1234].into_iter().collect::<LostPackets>()),
            "[1, 4660]"
        );
        assert!(std::iter::empty().collect::<LostPackets>().is_empty());
    }
}
