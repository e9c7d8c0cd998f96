//! Per-SSRC SRTP/SRTCP state: highest index and replay window (RFC 3711 §3.3.2).

use crate::{Error, SeqNo};

/// Window size in packets. RFC 3711 §3.3.2 asks for at least 64; a retransmission on the
/// original SSRC (a sender without RTX) comes back a round trip after the loss, which at a few
/// hundred packets a second and a loaded path is hundreds of packets: libwebrtc uses 1024, and
/// a window narrower than its peers' rejects as replays the very repairs they accept.
const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// Sliding replay window over packet indices: a ring of bits, index `i` at bit `i % WINDOW`,
/// meaningful for the `WINDOW` indices up to `top`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplayWindow {
    top: Option<u64>,
    seen: [u64; WORDS],
}

impl ReplayWindow {
    /// Highest index accepted so far.
    pub fn top(&self) -> Option<u64> {
        self.top
    }

    /// Fails with `Replayed` if `index` was accepted before or is left of the window.
    pub fn check(&self, index: u64) -> Result<(), Error> {
        let Some(top) = self.top else { return Ok(()) };
        if index > top {
            return Ok(());
        }
        if top - index >= WINDOW || self.is_set(index) {
            return Err(Error::Replayed);
        }
        Ok(())
    }

    /// Marks `index` as received. Call only after the packet authenticated.
    pub fn accept(&mut self, index: u64) {
        match self.top {
            Some(top) if index <= top => {
                if top - index < WINDOW {
                    self.set(index);
                }
            }
            Some(top) => {
                // The indices the window slides over were not received (yet): clear them.
                if index - top >= WINDOW {
                    self.seen = [0; WORDS];
                } else {
                    for skipped in top + 1..index {
                        self.clear(skipped);
                    }
                }
                self.set(index);
                self.top = Some(index);
            }
            None => {
                self.seen = [0; WORDS];
                self.set(index);
                self.top = Some(index);
            }
        }
    }

    fn bit(index: u64) -> (usize, u64) {
        let slot = index % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn is_set(&self, index: u64) -> bool {
        let (word, mask) = Self::bit(index);
        self.seen[word] & mask != 0
    }

    fn set(&mut self, index: u64) {
        let (word, mask) = Self::bit(index);
        self.seen[word] |= mask;
    }

    fn clear(&mut self, index: u64) {
        let (word, mask) = Self::bit(index);
        self.seen[word] &= !mask;
    }
}

/// SRTP state of one SSRC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RtpStream {
    pub ssrc: u32,
    pub window: ReplayWindow,
}

impl RtpStream {
    pub fn new(ssrc: u32) -> Self {
        RtpStream {
            ssrc,
            window: ReplayWindow::default(),
        }
    }

    /// The packet index of `seq` (RFC 3711 §3.3.1 and Appendix A): relative to the highest
    /// index seen, or `seq` itself with ROC 0 for the first packet.
    pub fn estimate(&self, seq: u16) -> SeqNo {
        match self.window.top() {
            Some(top) => SeqNo::new(top).extend(seq),
            None => SeqNo::from(seq),
        }
    }
}

/// SRTCP state of one SSRC: the sender's next index, the receiver's window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RtcpStream {
    pub ssrc: u32,
    pub sent: u32,
    pub window: ReplayWindow,
}

impl RtcpStream {
    pub fn new(ssrc: u32) -> Self {
        RtcpStream {
            ssrc,
            sent: 0,
            window: ReplayWindow::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_new_and_late_rejects_replays_and_old() {
        let mut w = ReplayWindow::default();
        assert!(w.check(1000).is_ok());
        w.accept(1000);
        assert_eq!(w.check(1000), Err(Error::Replayed));
        assert!(w.check(999).is_ok());
        w.accept(999);
        assert_eq!(w.check(999), Err(Error::Replayed));
        w.accept(1100);
        assert!(w.check(1000 - 1).is_err(), "999 was seen");
        assert!(w.check(998).is_ok(), "age 102 is inside the window");
        assert_eq!(
            w.check(1100 - WINDOW),
            Err(Error::Replayed),
            "left of the window"
        );
        assert!(
            w.check(1100 - WINDOW + 1).is_ok(),
            "the window's oldest index"
        );
        w.accept(5000);
        assert!(w.check(4999).is_ok());
        assert_eq!(w.check(1100), Err(Error::Replayed));
        assert_eq!(w.top(), Some(5000));
    }

    /// A sender without RTX repairs a loss on its original SSRC a round trip later: hundreds
    /// of packets on, at a video rate, it is still accepted, once.
    #[test]
    fn a_late_repair_is_accepted_once_and_the_ring_forgets_what_it_slid_past() {
        let mut w = ReplayWindow::default();
        for index in (10..1010).filter(|&i| i != 500) {
            assert!(w.check(index).is_ok());
            w.accept(index);
        }
        assert!(w.check(500).is_ok(), "509 packets late, never received");
        w.accept(500);
        assert_eq!(w.check(500), Err(Error::Replayed));
        // Index 500 + WINDOW shares 500's bit: sliding onto it must not read as a replay,
        // and clears the bit for what the window passes over.
        w.accept(500 + WINDOW - 1);
        assert!(w.check(500 + WINDOW).is_ok());
        w.accept(500 + WINDOW);
        assert_eq!(w.check(500), Err(Error::Replayed), "left of the window");
        assert!(w.check(1010 + 10).is_ok(), "slid past unseen, bit cleared");
        // A jump wider than the window forgets everything before it.
        w.accept(100_000);
        assert!(w.check(100_000 - 1).is_ok());
        assert_eq!(w.check(100_000 - WINDOW), Err(Error::Replayed));
    }

    #[test]
    fn stream_estimates_across_wrap() {
        let mut s = RtpStream::new(1);
        assert_eq!(s.estimate(65_535).value(), 65_535);
        s.window.accept(65_535);
        assert_eq!(s.estimate(0).value(), 65_536);
        assert_eq!(s.estimate(65_534).value(), 65_534);
    }
}
