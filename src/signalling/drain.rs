//! A node's drain: from the moment it starts (SIGTERM on a cluster node, or
//! `POST /rest-api/cdn/drain`), the node takes no new publish or play, its cluster lease says
//! DRAINING so no node sends viewers to it, and the sessions it has go on until they end or the
//! drain time is over; then the node exits (`rtcdn`'s main waits for that).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a node drains when it is not in a cluster (which sets `cluster.drain_secs`).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(60);

/// Whether the node drains, and a wake-up for whoever waits for the drain to start.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    started: Notify,
}

impl Drain {
    /// Starts the drain; returns false when it had started already.
    pub fn start(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::SeqCst);
        if first {
            // notify_one keeps the wake-up for a waiter that has not started waiting yet.
            self.started.notify_one();
        }
        first
    }

    /// Whether the node drains.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Returns once the drain has started (at once if it has).
    pub async fn started(&self) {
        while !self.is_draining() {
            self.started.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_starts_once_and_wakes_a_waiter_that_came_before_or_after() {
        let drain = std::sync::Arc::new(Drain::default());
        assert!(!drain.is_draining());
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.started().await }
        });
        tokio::task::yield_now().await;
        assert!(drain.start());
        assert!(!drain.start(), "already draining");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), drain.started())
            .await
            .expect("a late waiter returns at once");
    }
}
