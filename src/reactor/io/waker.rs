//! An eventfd that interrupts a media core's `poll` from other threads.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Wakes a [`UdpIo::poll`](super::UdpIo::poll) blocked on another thread. Cheap to clone.
///
/// Wake-ups coalesce: many `wake` calls before the core polls produce one `on_wake`.
#[derive(Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd: Arc::new(fd) })
    }

    /// Makes the owning core's current or next `poll` return and call `on_wake`.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this value keeps open. EAGAIN
        // (counter saturated) means a wake-up is already pending, so the result is ignored.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Resets the counter so the eventfd stops being readable.
    pub(super) fn reset(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; the eventfd is non-blocking, so EAGAIN
        // (nothing pending) is possible and harmless.
        unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8);
        }
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker")
            .field("eventfd", &self.fd.as_raw_fd())
            .finish()
    }
}
