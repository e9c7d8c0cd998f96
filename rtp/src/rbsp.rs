//! Bit reading over a NAL unit's raw byte sequence payload, shared by the H.264 and H.265
//! parameter set parsers.

/// Reads the bits of an RBSP from a NAL unit's bytes, dropping emulation prevention bytes
/// (a 0x03 after two zero bytes, H.264 §7.4.1) as it goes, without copying.
pub(crate) struct RbspBits<'a> {
    data: &'a [u8],
    pos: usize,
    zeros: usize,
    byte: u8,
    bits_left: u8,
}

impl<'a> RbspBits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> RbspBits<'a> {
        RbspBits {
            data,
            pos: 0,
            zeros: 0,
            byte: 0,
            bits_left: 0,
        }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        if self.bits_left == 0 {
            let mut b = *self.data.get(self.pos)?;
            self.pos += 1;
            if self.zeros >= 2 && b == 0x03 {
                self.zeros = 0;
                b = *self.data.get(self.pos)?;
                self.pos += 1;
            }
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
            self.byte = b;
            self.bits_left = 8;
        }
        self.bits_left -= 1;
        Some(u32::from(self.byte >> self.bits_left) & 1)
    }

    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some(v << 1 | self.bit()?))
    }

    /// Skips `n` bits, as many as a field wider than 32 bits has.
    pub(crate) fn skip(&mut self, n: u32) -> Option<()> {
        (0..n).try_for_each(|_| self.bit().map(|_| ()))
    }

    /// ue(v), Exp-Golomb (§9.1); longer than 32 bits is malformed here.
    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    /// se(v): only skipped here.
    pub(crate) fn skip_se(&mut self) -> Option<()> {
        self.ue().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_prevention_bytes_are_dropped() {
        // 00 00 03 01: the 03 is not data; 00 00 03 03 keeps the second 03.
        let mut r = RbspBits::new(&[0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x03]);
        assert_eq!(r.bits(24), Some(0x00_0001));
        assert_eq!(r.bits(24), Some(0x00_0003));
        assert_eq!(r.bit(), None);
        // A trailing 03 with nothing after it ends the data.
        let mut r = RbspBits::new(&[0x00, 0x00, 0x03]);
        assert_eq!(r.bits(16), Some(0));
        assert_eq!(r.bit(), None);
    }

    #[test]
    fn exp_golomb_codes() {
        // 1 | 010 | 011 | 00100 | 0001000 | then padding: 0, 1, 2, 3, 7.
        let mut r = RbspBits::new(&[0b1010_0110, 0b0100_0001, 0b0000_0000]);
        assert_eq!(
            [r.ue(), r.ue(), r.ue(), r.ue()],
            [Some(0), Some(1), Some(2), Some(3)]
        );
        assert_eq!(r.ue(), Some(7));
        // 31 zeros then 32 bits: the largest code read; 32 zeros: malformed.
        let mut r = RbspBits::new(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(r.ue(), Some(u32::MAX - 1));
        let mut r = RbspBits::new(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.ue(), None);
        let mut r = RbspBits::new(&[0xff]);
        assert_eq!(r.skip(8), Some(()));
        assert_eq!(r.skip(1), None);
    }
}
