//! Page-aligned, zeroed memory regions for buffers the kernel reads or writes.
//!
//! Regions come from `mmap`, not the heap: they are page aligned (a provided-buffer ring must
//! be) and their address never changes, so raw pointers into them stay valid while the kernel
//! owns parts of them.

use std::io;
use std::ptr::NonNull;

/// An anonymous private mapping, unmapped on drop.
pub(super) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    leaked: bool,
}

impl Region {
    /// Maps `len` zeroed bytes (`len` > 0).
    pub(super) fn new(len: usize) -> io::Result<Self> {
        assert!(len > 0);
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self {
            ptr,
            len,
            leaked: false,
        })
    }

    /// Start of the region.
    pub(super) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Keeps the mapping alive forever (the kernel may still write to it).
    pub(super) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: `ptr`/`len` describe a mapping created in `new` and unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: a Region is plain memory owned by one value; moving it between threads is fine.
unsafe impl Send for Region {}
