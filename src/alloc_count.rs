//! Per-thread heap allocation counts, so a media core can report how many allocations its
//! packet path makes (the target is none per forwarded packet).
//!
//! The `rtcdn` binary installs [`CountingAllocator`] around mimalloc. Each thread counts into
//! its own const-initialised thread local: no atomics shared between threads, no destructor,
//! so counting is a plain increment and is safe even while a thread is being torn down.
//! A program that does not install the wrapper reports `None` from [`this_thread`].

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Set by the first counted allocation: tells a reader that the counts mean something.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A global allocator that counts allocations (`alloc`, `alloc_zeroed`, `realloc`) per thread
/// and leaves the work to `A`.
pub struct CountingAllocator<A>(pub A);

#[inline]
fn count() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    // `try_with` cannot fail for a const thread local without a destructor, but a failure
    // must never turn into a panic inside the allocator.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `A` with the same arguments; counting touches only a
// thread-local integer and never allocates.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        self.0.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        self.0.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        self.0.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.0.dealloc(ptr, layout)
    }
}

/// Allocations made so far by the calling thread, or `None` when the process does not count.
pub fn this_thread() -> Option<u64> {
    let n = ALLOCATIONS.try_with(Cell::get).unwrap_or(0);
    INSTALLED.load(Ordering::Relaxed).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Unit tests run under the default allocator: the wrapper is exercised directly.
    #[test]
    fn counts_allocations_of_the_calling_thread_only() {
        let a = CountingAllocator(std::alloc::System);
        let layout = Layout::from_size_align(64, 8).unwrap();
        let before = ALLOCATIONS.with(Cell::get);
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            let p = a.realloc(p, layout, 128);
            a.dealloc(p, Layout::from_size_align(128, 8).unwrap());
        }
        assert_eq!(ALLOCATIONS.with(Cell::get) - before, 2);
        assert!(this_thread().is_some());
        let other = std::thread::spawn(|| ALLOCATIONS.with(Cell::get))
            .join()
            .unwrap();
        assert_eq!(other, 0, "another thread's count is its own");
    }
}
