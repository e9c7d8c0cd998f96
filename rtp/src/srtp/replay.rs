//! Per-SSRC SRTP/SRTCP state: highest index and replay window (RFC 3711 §3.3.2).

use crate::{Error, SeqNo};

/// Window size in packets. RFC 3711 §3.3.2 asks for at least 64; 128 tolerates the deeper
/// reordering seen with retransmissions.
const WINDOW: u64 = 128;

/// Sliding replay window over packet indices: bit i of `seen` is index `top - i`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplayWindow {
    top: Option<u64>,
    seen: u128,
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
        let age = top - index;
        if age >= WINDOW || self.seen & (1u128 << age) != 0 {
            return Err(Error::Replayed);
        }
        Ok(())
    }

    /// Marks `index` as received. Call only after the packet authenticated.
    pub fn accept(&mut self, index: u64) {
        match self.top {
            Some(top) if index <= top => {
                let age = top - index;
                if age < WINDOW {
                    self.seen |= 1u128 << age;
                }
            }
            Some(top) => {
                let shift = index - top;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.top = Some(index);
            }
            None => {
                self.seen = 1;
                self.top = Some(index);
            }
        }
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
            w.check(1100 - 128),
            Err(Error::Replayed),
            "left of the window"
        );
        w.accept(5000);
        assert!(w.check(4999).is_ok());
        assert_eq!(w.check(1100), Err(Error::Replayed));
        assert_eq!(w.top(), Some(5000));
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
