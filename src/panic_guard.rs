//! Process-wide panic accounting for peer-driven code.
//!
//! Everything a remote peer can drive off the media path (the signalling handlers and the dtls
//! crate's reader, writer and handshake tasks) runs on the tokio runtime whose worker threads are
//! named [`SIGNAL_THREAD`]. Tokio already catches a panicking task, so the default hook's only
//! effect there is to print a message (and, with `RUST_BACKTRACE`, a backtrace) for every
//! datagram or request that triggers it: a cheap way to flood the log and grow the process.
//! [`install`] replaces that hook for those threads with a counter per panic site and a rate
//! limited `tracing::error!`; `/api/stats` shows the counts.
//!
//! Panics on any other thread go to the previous hook unchanged: a media core that panics is
//! gone (nothing catches it), so that must stay loud, and a test harness or fuzzer relies on its
//! own hook. Panics inside [`catch_silent`] are expected by their caller and neither printed nor
//! counted.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

/// Name of the signalling/DTLS runtime's worker threads (set by `Node::start`).
pub const SIGNAL_THREAD: &str = "rtcdn-signal";

/// At most one log line per panic site per this period.
const LOG_PERIOD: Duration = Duration::from_secs(60);

static INSTALL: Once = Once::new();
static TALLY: Mutex<Tally> = Mutex::new(Tally {
    sites: BTreeMap::new(),
});

thread_local! {
    /// Set while [`catch_silent`] runs a closure on this thread.
    static SILENT: Cell<bool> = const { Cell::new(false) };
    /// Where the last silenced panic happened.
    static SILENCED_AT: Cell<Option<Site>> = const { Cell::new(None) };
}

/// A panic site as `file:line`, the key of the counts.
type Site = &'static str;

/// Installs the hook. Idempotent; later calls do nothing.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if SILENT.get() {
                SILENCED_AT.set(Some(site(info)));
                return;
            }
            if std::thread::current().name() == Some(SIGNAL_THREAD) {
                record(info);
                return;
            }
            previous(info);
        }));
    });
}

/// Panics counted on the signalling/DTLS runtime so far, by site (`file:line`).
pub fn counts() -> BTreeMap<String, u64> {
    TALLY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .counts()
}

/// Runs `f`, turning a panic into `Err(site)` without any output. For callers that run code
/// they do not trust not to panic (a dependency's parser on peer input) and handle that.
pub(crate) fn catch_silent<R>(f: impl FnOnce() -> R) -> Result<R, &'static str> {
    // Silence needs our hook in place, wherever this runs (fuzz targets, the bench client).
    install();
    let was_silent = SILENT.replace(true);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    SILENT.set(was_silent);
    result.map_err(|_| SILENCED_AT.take().unwrap_or("unknown"))
}

fn record(info: &PanicHookInfo<'_>) {
    let site = site(info);
    let due = TALLY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(site, Instant::now());
    if let Some(count) = due {
        tracing::error!(
            site,
            count,
            payload = payload(info),
            "a peer-driven task panicked (logged at most once a minute per site)"
        );
    }
}

fn payload<'a>(info: &'a PanicHookInfo<'_>) -> &'a str {
    let p = info.payload();
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

/// `file:line`, with a dependency's path cut to start at its `name-version` folder. Leaked
/// once per distinct site (a binary has finitely many panic sites).
fn site(info: &PanicHookInfo<'_>) -> Site {
    static SITES: Mutex<BTreeSet<Site>> = Mutex::new(BTreeSet::new());
    let Some(location) = info.location() else {
        return "unknown";
    };
    let site = format!("{}:{}", short_path(location.file()), location.line());
    let mut sites = SITES.lock().unwrap_or_else(PoisonError::into_inner);
    match sites.get(site.as_str()) {
        Some(known) => known,
        None => {
            let leaked: Site = Box::leak(site.into_boxed_str());
            sites.insert(leaked);
            leaked
        }
    }
}

/// `…/registry/src/<index>/dtls-0.17.2/src/x.rs` → `dtls-0.17.2/src/x.rs`.
fn short_path(file: &str) -> &str {
    match file.split_once("/registry/src/") {
        Some((_, rest)) => rest.split_once('/').map_or(rest, |(_, path)| path),
        None => file,
    }
}

/// Counts per site and when each was last logged.
#[derive(Default)]
struct Tally {
    sites: BTreeMap<Site, SiteCount>,
}

struct SiteCount {
    count: u64,
    logged_at: Instant,
}

impl Tally {
    /// Counts one panic at `site`; returns the total if it should be logged now.
    fn record(&mut self, site: Site, now: Instant) -> Option<u64> {
        match self.sites.get_mut(site) {
            None => {
                self.sites.insert(
                    site,
                    SiteCount {
                        count: 1,
                        logged_at: now,
                    },
                );
                Some(1)
            }
            Some(entry) => {
                entry.count += 1;
                let due = now.saturating_duration_since(entry.logged_at) >= LOG_PERIOD;
                due.then(|| {
                    entry.logged_at = now;
                    entry.count
                })
            }
        }
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        self.sites
            .iter()
            .map(|(site, c)| ((*site).to_owned(), c.count))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_each_site_at_most_once_a_minute() {
        let mut tally = Tally::default();
        let t0 = Instant::now();
        assert_eq!(tally.record("a.rs:1", t0), Some(1));
        assert_eq!(tally.record("a.rs:1", t0 + Duration::from_secs(1)), None);
        assert_eq!(tally.record("b.rs:2", t0 + Duration::from_secs(2)), Some(1));
        assert_eq!(tally.record("a.rs:1", t0 + Duration::from_secs(59)), None);
        assert_eq!(tally.record("a.rs:1", t0 + LOG_PERIOD), Some(4));
        assert_eq!(tally.record("a.rs:1", t0 + LOG_PERIOD), None);
        let counts = tally.counts();
        assert_eq!(counts["a.rs:1"], 5);
        assert_eq!(counts["b.rs:2"], 1);
    }

    #[test]
    fn counts_panics_of_signalling_tasks() {
        install();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(SIGNAL_THREAD)
            .build()
            .unwrap();
        let line = line!() + 3;
        let panicking = || async {
            if std::hint::black_box(true) {
                panic!("peer input");
            }
        };
        let site = format!("{}:{line}", file!());
        let before = counts().get(&site).copied().unwrap_or(0);
        for _ in 0..3 {
            let task = runtime.spawn(panicking());
            assert!(runtime.block_on(task).unwrap_err().is_panic());
        }
        assert_eq!(counts()[&site], before + 3);
    }

    const EXPECTED_LINE: u32 = line!() + 2;
    fn expected_panic() -> u8 {
        panic!("expected")
    }

    #[test]
    fn silent_catch_is_not_counted() {
        install();
        let site = format!("{}:{EXPECTED_LINE}", file!());
        assert_eq!(catch_silent(expected_panic), Err(site.as_str()));
        assert_eq!(catch_silent(|| 7), Ok(7));
        // Silenced: not counted (and nothing printed), even on the signalling runtime.
        let on_signal_thread = std::thread::Builder::new()
            .name(SIGNAL_THREAD.into())
            .spawn(|| catch_silent(expected_panic))
            .unwrap();
        assert!(on_signal_thread.join().unwrap().is_err());
        assert!(!counts().contains_key(&site));
    }

    #[test]
    fn dependency_paths_are_shortened() {
        assert_eq!(
            short_path("/home/u/.cargo/registry/src/index-abc/dtls-0.17.2/src/lib.rs"),
            "dtls-0.17.2/src/lib.rs"
        );
        assert_eq!(short_path("src/node.rs"), "src/node.rs");
    }
}
