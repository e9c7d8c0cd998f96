//! RFC 4571 framing for ICE-TCP (RFC 6544): every STUN message, DTLS record and SRTP/SRTCP
//! packet on a TCP connection is preceded by its length as two big-endian bytes.
//!
//! Sans-IO and safe, so that the io layer (`io/tcp.rs`, which owns the sockets) stays a thin
//! driver and the fuzz target (`tcp_framing`) can feed it anything. Both halves work in one
//! buffer allocated when the connection is accepted, never per packet:
//!
//! - [`Deframer`]: bytes read from the stream go into [`Deframer::spare`]; complete frames come
//!   out of [`Deframer::next_frame`] as mutable slices (SRTP decrypts in place, as for a
//!   datagram). A length above the limit is an error: the connection is closed, since nothing
//!   after a bad prefix can be trusted and buffering it would be unbounded.
//! - [`FrameQueue`]: frames to send are written straight into the queue (after room for their
//!   prefix), as the UDP send queue lets writers fill its slots; when the queue has no room for
//!   another frame of the largest size, the frame is refused, so a slow reader costs drops,
//!   never memory or a blocked core.

use thiserror::Error;

/// Bytes of the RFC 4571 length prefix.
pub const PREFIX: usize = 2;

/// A stream that cannot be deframed any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FramingError {
    /// A length prefix announced more than the connection accepts.
    #[error("frame of {len} bytes announced, at most {max} accepted")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Cuts a byte stream into RFC 4571 frames of at most `max` bytes (see the module docs).
#[derive(Debug)]
pub struct Deframer {
    buf: Box<[u8]>,
    /// `buf[start..end]` holds bytes read and not yet returned as frames.
    start: usize,
    end: usize,
    max: usize,
}

impl Deframer {
    /// A deframer for frames of at most `max` bytes; its buffer holds two of them, so one read
    /// can bring in more than one frame.
    pub fn new(max: usize) -> Deframer {
        Deframer {
            buf: vec![0; 2 * (PREFIX + max)].into_boxed_slice(),
            start: 0,
            end: 0,
            max,
        }
    }

    /// Where the next read goes: never empty after [`next_frame`](Self::next_frame) returned
    /// `Ok(None)` (a partial frame is at most `PREFIX + max - 1` bytes).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            // The partial frame moves to the front, at most one frame's worth of copying.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written at the start of [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete frame, if one is buffered. An empty frame (length 0) is returned as
    /// an empty slice.
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, FramingError> {
        let have = &self.buf[self.start..self.end];
        if have.len() < PREFIX {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([have[0], have[1]]));
        if len > self.max {
            return Err(FramingError::TooLong { len, max: self.max });
        }
        if have.len() < PREFIX + len {
            return Ok(None);
        }
        let begin = self.start + PREFIX;
        self.start = begin + len;
        if self.start == self.end {
            // Everything was consumed: the next read starts at the front without copying.
            let frame = begin..begin + len;
            self.start = 0;
            self.end = 0;
            return Ok(Some(&mut self.buf[frame]));
        }
        Ok(Some(&mut self.buf[begin..begin + len]))
    }

    /// Bytes buffered that are not yet a complete frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }
}

/// Frames waiting to be written to a TCP connection, bounded (see the module docs).
#[derive(Debug)]
pub struct FrameQueue {
    buf: Box<[u8]>,
    /// `buf[start..end]` is waiting to be written.
    start: usize,
    end: usize,
    /// The largest frame; a push needs `PREFIX + max` bytes of room.
    max: usize,
    /// The kernel is reading `pending` (an io_uring SEND in flight): the bytes must not move.
    pinned: bool,
}

impl FrameQueue {
    /// A queue of `capacity` bytes (at least one frame of `max` bytes).
    pub fn new(capacity: usize, max: usize) -> FrameQueue {
        FrameQueue {
            buf: vec![0; capacity.max(PREFIX + max)].into_boxed_slice(),
            start: 0,
            end: 0,
            max,
            pinned: false,
        }
    }

    /// Whether a frame of the largest size fits (after moving what waits to the front, unless
    /// the queue is pinned).
    pub fn has_room(&self) -> bool {
        let free = if self.pinned {
            self.buf.len() - self.end
        } else {
            self.buf.len() - (self.end - self.start)
        };
        free >= PREFIX + self.max
    }

    /// Pins (or unpins) what is pending where it is: while the kernel reads it asynchronously
    /// (an io_uring SEND), pushes append after it and never move it to the front, so they may
    /// be refused sooner.
    pub fn set_pinned(&mut self, pinned: bool) {
        self.pinned = pinned;
    }

    /// Queues one frame written by `fill` into a buffer of `max` bytes (`fill` returns its
    /// length, 0 for nothing). Returns false, without calling `fill`, if the queue has no room
    /// for a frame of `max` bytes.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let room = PREFIX + self.max;
        if self.buf.len() - self.end < room {
            if self.pinned || self.buf.len() - (self.end - self.start) < room {
                return false;
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let at = self.end;
        let len = fill(&mut self.buf[at + PREFIX..at + room]).min(self.max);
        if len == 0 {
            return true;
        }
        // `max` fits in the prefix: checked where the queue is made (MAX_DATAGRAM < 65536).
        self.buf[at..at + PREFIX].copy_from_slice(&(len as u16).to_be_bytes());
        self.end = at + PREFIX + len;
        true
    }

    /// The bytes waiting to be written, oldest first.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// `n` bytes of [`pending`](Self::pending) were written.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end && !self.pinned {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Feeds `stream` in pieces of `step` bytes; returns the frames or the error.
    fn deframe(
        stream: &[u8],
        step: usize,
        max: usize,
    ) -> Result<(Vec<Vec<u8>>, usize), FramingError> {
        let mut d = Deframer::new(max);
        let mut out = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let spare = d.spare();
            assert!(!spare.is_empty());
            let n = step.min(spare.len()).min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            d.filled(n);
            rest = &rest[n..];
            while let Some(f) = d.next_frame()? {
                out.push(f.to_vec());
            }
        }
        Ok((out, d.buffered()))
    }

    #[test]
    fn frames_come_out_whole_whatever_the_read_sizes() {
        let payloads: Vec<Vec<u8>> = (0..50)
            .map(|i| (0..(i * 41) % 2049).map(|k| (i + k) as u8).collect())
            .collect();
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        for step in [1, 2, 3, 7, 100, 1500, 4096, 100_000] {
            let (got, left) = deframe(&stream, step, 2048).unwrap();
            assert_eq!(got, payloads, "step {step}");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn a_partial_frame_waits() {
        let mut stream = frame(b"one");
        stream.extend_from_slice(&frame(b"two")[..3]);
        let (got, left) = deframe(&stream, 1000, 2048).unwrap();
        assert_eq!(got, vec![b"one".to_vec()]);
        assert_eq!(left, 3);
    }

    #[test]
    fn an_oversized_prefix_is_an_error_at_once() {
        // 65535 announced: refused before a byte of it is buffered.
        let err = deframe(&[0xff, 0xff, 1, 2, 3], 5, 2048).unwrap_err();
        assert_eq!(
            err,
            FramingError::TooLong {
                len: 65535,
                max: 2048
            }
        );
        let mut stream = frame(b"fine");
        stream.extend_from_slice(&[0x08, 0x01]);
        assert!(deframe(&stream, 1, 2048).is_err());
        assert!(deframe(&frame(&[7; 2048]), 9, 2048).is_ok());
    }

    #[test]
    fn empty_frames_are_returned_empty() {
        let (got, _) = deframe(&[0, 0, 0, 1, 9, 0, 0], 7, 2048).unwrap();
        assert_eq!(got, vec![vec![], vec![9], vec![]]);
    }

    #[test]
    fn queue_frames_and_drains_in_order() {
        let mut q = FrameQueue::new(10_000, 2048);
        assert!(q.is_empty());
        assert!(q.push_with(|b| {
            b[..3].copy_from_slice(b"abc");
            3
        }));
        assert!(q.push_with(|_| 0), "nothing to send is no refusal");
        assert!(q.push_with(|b| {
            b[0] = 1;
            1
        }));
        assert_eq!(q.pending(), &[0, 3, b'a', b'b', b'c', 0, 1, 1]);
        q.consume(4);
        assert_eq!(q.pending(), &[b'c', 0, 1, 1]);
        q.consume(100);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_refuses_and_recovers_after_writes() {
        let mut q = FrameQueue::new(3 * 2050, 2048);
        let mut accepted = 0;
        while q.push_with(|b| {
            b[..1000].fill(accepted as u8);
            1000
        }) {
            accepted += 1;
            assert!(accepted < 100, "unbounded");
        }
        // Room for the largest frame is needed: 6150 - 2050 = 4100 bytes of frames fit.
        assert_eq!(accepted, 5);
        assert_eq!(q.pending().len(), 5 * 1002);
        let mut called = false;
        assert!(!q.push_with(|_| {
            called = true;
            1
        }));
        assert!(!called);
        // A partial write frees room; what is left moves to the front on the next push.
        q.consume(2500);
        assert!(q.push_with(|b| {
            b[..10].fill(0xee);
            10
        }));
        let mut expected: Vec<u8> = (0..5).flat_map(|i| frame(&[i as u8; 1000])).collect();
        expected.extend_from_slice(&frame(&[0xee; 10]));
        assert_eq!(q.pending(), &expected[2500..]);
        // The stream still deframes.
        let (got, left) = deframe(&expected[2004..], 13, 2048).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(left, 0);
    }

    #[test]
    fn a_pinned_queue_never_moves_what_is_pending() {
        let mut q = FrameQueue::new(3 * 2050, 2048);
        for _ in 0..3 {
            assert!(q.push_with(|b| {
                b[..1000].fill(1);
                1000
            }));
        }
        q.consume(2004);
        // Unpinned, the rest would move to the front to make room; pinned (a SEND reads it),
        // it stays where the kernel reads it and the push is refused instead.
        q.set_pinned(true);
        let at = q.pending().as_ptr();
        for _ in 0..2 {
            assert!(q.push_with(|b| {
                b[..1000].fill(2);
                1000
            }));
        }
        assert!(!q.has_room());
        assert!(!q.push_with(|_| 1));
        assert_eq!(q.pending().as_ptr(), at);
        q.set_pinned(false);
        assert!(q.has_room());
        assert!(q.push_with(|_| 1));
        assert_eq!(q.pending().len(), 3 * 1002 + 3);
    }

    #[test]
    fn fill_longer_than_max_is_cut() {
        let mut q = FrameQueue::new(8192, 100);
        assert!(q.push_with(|b| b.len() + 50));
        assert_eq!(&q.pending()[..2], &100u16.to_be_bytes());
        assert_eq!(q.pending().len(), 102);
    }

    #[test]
    fn fuzz_body_runs_on_its_seeds() {
        crate::fuzzing::fuzz_tcp_framing(b"\x07\x00\x03abc\x00\x00\x00\x01z");
        crate::fuzzing::fuzz_tcp_framing(b"\x01\xff\xff\x00");
        let many: Vec<u8> = std::iter::once(200)
            .chain((0..300).flat_map(|i| frame(&vec![i as u8; i * 7 % 2049])))
            .collect();
        crate::fuzzing::fuzz_tcp_framing(&many);
    }
}
