//! The deadlines of a core's sessions: a min-heap of `(deadline, session)` with lazy
//! invalidation, so a core wakes when the earliest session wants it and visits only the sessions
//! whose deadline passed.
//!
//! Each session remembers the one entry that counts for it (its `armed` deadline). An entry is
//! pushed only when a session's deadline moves earlier than its armed one; a deadline that moves
//! later (ICE consent renewed by every packet) leaves the earlier entry in place, which then wakes
//! the core once for nothing and is armed again. Entries that no longer count are skipped when
//! popped, and dropped all at once when the heap is full, so the heap never outgrows the room
//! [`SessionTimers::reserve_for`] made: arming allocates nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::control::SessionId;

/// The sessions' deadlines (see the module docs).
#[derive(Debug, Default)]
pub(super) struct SessionTimers {
    heap: BinaryHeap<Reverse<(Instant, SessionId)>>,
}

/// The deadline to push for a session armed at `armed` whose next deadline is `next`: `None`
/// when an entry at or before `next` is already in the heap (or there is no deadline).
pub(super) fn entry_to_push(armed: Option<Instant>, next: Option<Instant>) -> Option<Instant> {
    match (armed, next) {
        (Some(armed), Some(next)) if armed <= next => None,
        (_, next) => next,
    }
}

impl SessionTimers {
    /// Makes room for the entries of `sessions` sessions: twice as many, so that dropping the
    /// stale ones from a full heap always frees at least half of it.
    pub(super) fn reserve_for(&mut self, sessions: usize) {
        let wanted = 2 * sessions + 16;
        if self.heap.capacity() < wanted {
            self.heap.reserve(wanted - self.heap.len());
        }
    }

    /// Pushes `id`'s entry at `at`. A full heap first keeps only the entries `counts` accepts
    /// (in place, without allocating).
    pub(super) fn push(
        &mut self,
        at: Instant,
        id: SessionId,
        mut counts: impl FnMut(Instant, SessionId) -> bool,
    ) {
        if self.heap.len() == self.heap.capacity() {
            self.heap.retain(|Reverse((at, id))| counts(*at, *id));
        }
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest entry (possibly one that no longer counts: the core then wakes for nothing).
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, SessionId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    /// Entries in the heap, stale ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_an_earlier_deadline_is_pushed() {
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        assert_eq!(entry_to_push(None, Some(t)), Some(t));
        assert_eq!(entry_to_push(None, None), None);
        assert_eq!(
            entry_to_push(Some(t), Some(later)),
            None,
            "the earlier entry re-arms"
        );
        assert_eq!(entry_to_push(Some(t), Some(t)), None);
        assert_eq!(entry_to_push(Some(later), Some(t)), Some(t));
        assert_eq!(entry_to_push(Some(t), None), None);
    }

    #[test]
    fn due_entries_come_out_earliest_first() {
        let t = Instant::now();
        let mut timers = SessionTimers::default();
        timers.reserve_for(4);
        for (ms, id) in [(30, 3), (10, 1), (20, 2)] {
            timers.push(t + Duration::from_millis(ms), SessionId(id), |_, _| true);
        }
        assert_eq!(timers.next(), Some(t + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t), None);
        let due = t + Duration::from_millis(20);
        assert_eq!(timers.pop_due(due).map(|e| e.1), Some(SessionId(1)));
        assert_eq!(timers.pop_due(due).map(|e| e.1), Some(SessionId(2)));
        assert_eq!(timers.pop_due(due), None);
        assert_eq!(timers.next(), Some(t + Duration::from_millis(30)));
    }

    #[test]
    fn a_full_heap_drops_stale_entries_instead_of_growing() {
        let t = Instant::now();
        let mut timers = SessionTimers::default();
        timers.reserve_for(2);
        let capacity = timers.heap.capacity();
        // Two sessions whose deadline keeps moving earlier: each move leaves a stale entry.
        let mut armed: HashMap<SessionId, Instant> = HashMap::new();
        for step in 0..10 * capacity as u64 {
            let id = SessionId(step % 2);
            let at = t + Duration::from_secs(1_000_000 - step);
            armed.insert(id, at);
            timers.push(at, id, |at, id| armed.get(&id) == Some(&at));
        }
        assert_eq!(timers.heap.capacity(), capacity, "never grew");
        assert!(timers.len() <= capacity);
    }
}
