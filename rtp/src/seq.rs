//! Extended RTP sequence numbers (RFC 3550 §A.1, RFC 3711 Appendix A).

/// A 64-bit extended sequence number: the 16-bit wire value plus a rollover count in the
/// upper bits. SRTP calls the low 48 bits the packet index (RFC 3711 §3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeqNo(u64);

impl SeqNo {
    /// An extended sequence number from its full value.
    pub const fn new(v: u64) -> Self {
        SeqNo(v)
    }

    /// The full extended value.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// The 16-bit value as carried on the wire.
    pub const fn seq16(self) -> u16 {
        self.0 as u16
    }

    /// The rollover count: how many times the 16-bit value wrapped.
    pub const fn roc(self) -> u64 {
        self.0 >> 16
    }

    /// Extends a received 16-bit `seq`, taking `self` as the highest value seen so far.
    ///
    /// This is the index guess of RFC 3711 Appendix A: the result is the candidate in the
    /// previous, current or next rollover period closest to `self`. A guess before the first
    /// period (a packet that would precede index 0) stays in period 0, as libsrtp and
    /// webrtc-srtp do.
    pub fn extend(self, seq: u16) -> SeqNo {
        let roc = self.roc();
        let s_l = self.seq16();
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.saturating_sub(1)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        SeqNo((v << 16) | u64::from(seq))
    }

    /// Whether `self` comes after `other`.
    pub fn is_after(self, other: SeqNo) -> bool {
        self.0 > other.0
    }
}

impl From<u16> for SeqNo {
    fn from(v: u16) -> Self {
        SeqNo(u64::from(v))
    }
}

impl From<SeqNo> for u64 {
    fn from(v: SeqNo) -> u64 {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_forward_across_a_wrap() {
        let mut hi = SeqNo::from(65_530);
        for _ in 0..10 {
            let next = hi.extend(hi.seq16().wrapping_add(1));
            assert_eq!(next.value(), hi.value() + 1);
            hi = next;
        }
        assert_eq!(hi.roc(), 1);
        assert_eq!(hi.seq16(), 4);
    }

    #[test]
    fn late_packets_stay_in_the_previous_period() {
        let hi = SeqNo::new((1 << 16) | 3);
        assert_eq!(hi.extend(65_534), SeqNo::new(65_534));
        assert_eq!(hi.extend(2), SeqNo::new((1 << 16) | 2));
        // A jump of less than half the space forward is forward.
        assert_eq!(hi.extend(30_000), SeqNo::new((1 << 16) | 30_000));
    }

    #[test]
    fn never_goes_below_zero() {
        assert_eq!(SeqNo::from(10).extend(60_000), SeqNo::new(60_000));
    }

    #[test]
    fn extends_receive_statistics_forward_and_back() {
        // What RFC 3550 A.1 receive statistics see: ahead, across a wrap, late from the
        // previous cycle, late in the current one.
        assert_eq!(SeqNo::new(10).extend(11), SeqNo::new(11));
        assert_eq!(SeqNo::new(0xfff0).extend(0x0005), SeqNo::new(0x1_0005));
        assert_eq!(SeqNo::new(0x1_0005).extend(0xfff0), SeqNo::new(0xfff0));
        assert_eq!(SeqNo::new(0x1_0005).extend(0x0003), SeqNo::new(0x1_0003));
    }

    #[test]
    fn wraps_from_high_half() {
        let hi = SeqNo::new(40_000);
        assert_eq!(hi.extend(100), SeqNo::new(65_536 + 100));
        assert_eq!(hi.extend(10_000), SeqNo::new(10_000));
    }
}
