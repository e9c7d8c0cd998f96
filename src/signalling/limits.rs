//! What keeps one client, or a flood of them, from taking the signalling listener: connection
//! caps (global and per address) counted by RAII slots, a per-address token bucket on session
//! creation, and a budget on the log lines refusals write. Sans-IO: the listener
//! ([`super::listener`]) and the session paths call in, tests drive the clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use tracing::info;

use super::{text, Signalling};
use crate::config::{HttpConfig, IpNet};

/// At most this many addresses have a session bucket; past it the least recently seen half is
/// forgotten (a forgotten address starts again with a full bucket). ~64 bytes each: a few MB.
const MAX_TRACKED_ADDRESSES: usize = 65_536;
/// Refusal log lines per second, and the burst allowed above it.
const LOG_LINES_PER_SEC: f64 = 5.0;
const LOG_BURST: f64 = 20.0;

/// Why a connection or a session was refused. Its text is the one-line reason the client gets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The node holds `http.max_connections` connections.
    #[error("the node is at its connection limit ({limit}); try again later")]
    NodeFull { limit: usize },
    /// The client's address holds `http.max_connections_per_ip` connections.
    #[error("too many connections from your address (at most {limit})")]
    AddressFull { limit: usize },
    /// The client's address started sessions faster than `http.sessions_per_ip_per_sec`.
    #[error("too many sessions started from your address; retry in {retry_after_secs} s")]
    SessionRate { retry_after_secs: u64 },
}

impl Refused {
    /// 503 when the node as a whole is full, 429 when the client is over its own share.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::NodeFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refused::AddressFull { .. } | Refused::SessionRate { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// Seconds a client should wait before trying again (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Refused::SessionRate { retry_after_secs } => *retry_after_secs,
            Refused::NodeFull { .. } | Refused::AddressFull { .. } => 1,
        }
    }

    /// The answer to a request refused after hyper read it.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut response = text(self.status(), format!("{self}\n"));
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(self.retry_after_secs()));
        response
    }

    /// The whole answer, written on a raw socket that hyper never sees (the connection was
    /// refused before any of its bytes were read).
    pub fn raw_response(&self) -> Vec<u8> {
        let status = self.status();
        let body = format!("{self}\n");
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
             retry-after: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
            self.retry_after_secs(),
        )
        .into_bytes()
    }
}

/// The address a client is counted under. IPv4-mapped IPv6 is IPv4; IPv6 counts by /64, the
/// block one host or household is normally given (counting single IPv6 addresses would let one
/// host take 2^64 shares).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay consistent whatever panicked while holding the lock.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Counts open connections, in total and per client address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_address: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection's place in the count, given back when the last clone is dropped:
/// however the connection ends (closed, timed out, its task cancelled, handed to a WebSocket).
#[derive(Debug, Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<SlotInner>);

#[derive(Debug)]
struct SlotInner {
    counts: Arc<Mutex<Counts>>,
    /// `None` for an address exempt from the per-address cap.
    key: Option<IpAddr>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total -= 1;
        if let Some(key) = self.key {
            if let Some(n) = counts.per_address.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    counts.per_address.remove(&key);
                }
            }
        }
    }
}

impl ConnectionLimiter {
    /// A limiter for at most `max_total` connections, `max_per_address` from one address.
    pub fn new(max_total: usize, max_per_address: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            max_total,
            max_per_address,
            counts: Arc::default(),
        }
    }

    /// Takes a slot for a connection from `ip`; `exempt` skips the per-address cap only.
    pub fn admit(&self, ip: IpAddr, exempt: bool) -> Result<ConnectionSlot, Refused> {
        let mut counts = lock(&self.counts);
        if counts.total >= self.max_total {
            return Err(Refused::NodeFull {
                limit: self.max_total,
            });
        }
        let key = (!exempt).then(|| client_key(ip));
        if let Some(key) = key {
            let n = counts.per_address.entry(key).or_insert(0);
            if *n >= self.max_per_address {
                return Err(Refused::AddressFull {
                    limit: self.max_per_address,
                });
            }
            *n += 1;
        }
        counts.total += 1;
        Ok(ConnectionSlot(Arc::new(SlotInner {
            counts: self.counts.clone(),
            key,
        })))
    }

    /// The global cap.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Open connections: in total, and from `ip` (0 when it is exempt).
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let counts = lock(&self.counts);
        let from = counts.per_address.get(&client_key(ip)).copied();
        (counts.total, from.unwrap_or(0))
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
    }
}

/// A token bucket per client address for session creation: `burst` at once, then `rate` a
/// second. Memory is bounded by keeping two generations of buckets: when the current one holds
/// half of [`MAX_TRACKED_ADDRESSES`] it becomes the previous one and the older one is dropped,
/// so the addresses forgotten are those not seen for the longest (an address seen again moves
/// to the current generation), at O(1) per check with no sweep.
#[derive(Debug)]
pub struct SessionRateLimiter {
    rate: f64,
    burst: f64,
    generation_size: usize,
    buckets: Mutex<[HashMap<IpAddr, Bucket>; 2]>,
}

impl SessionRateLimiter {
    /// `rate` sessions a second per address, `burst` at once.
    pub fn new(rate: f64, burst: u32) -> SessionRateLimiter {
        SessionRateLimiter::with_capacity(rate, burst, MAX_TRACKED_ADDRESSES)
    }

    fn with_capacity(rate: f64, burst: u32, capacity: usize) -> SessionRateLimiter {
        SessionRateLimiter {
            rate,
            burst: f64::from(burst),
            generation_size: (capacity / 2).max(1),
            buckets: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    /// Takes one session's token for `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let key = client_key(ip);
        let mut buckets = lock(&self.buckets);
        let [current, previous] = &mut *buckets;
        if !current.contains_key(&key) {
            let bucket = previous.remove(&key).unwrap_or(Bucket {
                tokens: self.burst,
                updated: now,
            });
            if current.len() >= self.generation_size {
                *previous = std::mem::take(current);
            }
            current.insert(key, bucket);
        }
        let bucket = current.get_mut(&key).expect("inserted above");
        bucket.refill(now, self.rate, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.rate;
        Err(Refused::SessionRate {
            retry_after_secs: (wait.ceil() as u64).max(1),
        })
    }

    /// Addresses with a bucket (both generations).
    pub fn tracked(&self) -> usize {
        let buckets = lock(&self.buckets);
        buckets[0].len() + buckets[1].len()
    }
}

/// A budget on refusal log lines, so that a flood of refused clients cannot flood the log:
/// [`LOG_LINES_PER_SEC`] lines a second (after a burst); the rest are only counted, and the
/// listener reports the count periodically.
#[derive(Debug)]
pub struct LogLimiter {
    bucket: Mutex<Bucket>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// A full budget.
    pub fn new(now: Instant) -> LogLimiter {
        LogLimiter {
            bucket: Mutex::new(Bucket {
                tokens: LOG_BURST,
                updated: now,
            }),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a refusal may be logged now; counts it as suppressed if not.
    pub fn allow(&self, now: Instant) -> bool {
        let mut bucket = lock(&self.bucket);
        bucket.refill(now, LOG_LINES_PER_SEC, LOG_BURST);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Refusals not logged since the last call.
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

/// The listener's limits as configured in `[http]`.
#[derive(Debug)]
pub struct Limits {
    /// Connection caps.
    pub connections: ConnectionLimiter,
    /// Session creation rate per address.
    pub sessions: SessionRateLimiter,
    /// Addresses free of the per-address cap and rate (a local reverse proxy, the bench).
    pub exempt: Vec<IpNet>,
    /// The refusal log budget.
    pub log: LogLimiter,
    /// From accept (or the end of the previous response) to a complete request head.
    pub header_read_timeout: Duration,
    /// From a complete request head to the end of its body.
    pub body_read_timeout: Duration,
    /// From a WebSocket upgrade to the client's `connection` message.
    pub websocket_connect_timeout: Duration,
    /// How long a write may stay blocked by a client that does not read.
    pub send_timeout: Duration,
    /// Refused connections being answered now (see `listener::answer_refusal`).
    pub refusals_in_flight: AtomicUsize,
}

impl Limits {
    /// The limits `http` configures.
    pub fn new(http: &HttpConfig) -> Limits {
        Limits {
            connections: ConnectionLimiter::new(http.max_connections, http.max_connections_per_ip),
            sessions: SessionRateLimiter::new(
                http.sessions_per_ip_per_sec,
                http.session_burst_per_ip,
            ),
            exempt: http.per_ip_exempt.clone(),
            log: LogLimiter::new(Instant::now()),
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(http.body_read_timeout_secs),
            websocket_connect_timeout: Duration::from_secs(http.websocket_connect_timeout_secs),
            send_timeout: Duration::from_secs(http.send_timeout_secs),
            refusals_in_flight: AtomicUsize::new(0),
        }
    }

    /// Whether `ip` is free of the per-address limits.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(ip))
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit_connection(&self, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        self.connections.admit(ip, self.is_exempt(ip))
    }

    /// Whether a refusal may be logged now (see [`LogLimiter`]).
    pub fn may_log(&self) -> bool {
        self.log.allow(Instant::now())
    }
}

impl Signalling {
    /// Charges one session creation to `ip`'s rate (`http.sessions_per_ip_per_sec`). Every path
    /// that creates a session calls it first and answers a refusal with its reason (429 and
    /// `Retry-After` over HTTP, FAILED over the WebSocket).
    pub fn admit_session(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.limits.is_exempt(ip) {
            return Ok(());
        }
        let admitted = self.limits.sessions.check(ip, Instant::now());
        if let Err(refused) = &admitted {
            if self.limits.may_log() {
                info!(%ip, reason = %refused, "session refused");
            }
        }
        admitted
    }
}

/// When a request's body must have arrived (`http.body_read_timeout_secs` after its head), in
/// the request's extensions. Only the body read is bounded: handlers also await auth hooks,
/// which have their own timeout.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    at: tokio::time::Instant,
    timeout: Duration,
}

impl BodyDeadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> BodyDeadline {
        BodyDeadline {
            at: tokio::time::Instant::now() + timeout,
            timeout,
        }
    }
}

/// Collects `req`'s body, at most `max` bytes, by its [`BodyDeadline`]. `what` names the body in
/// the 413 reason. A body too slow gets 408 and the connection is closed after it.
pub async fn collect_body(
    req: Request<Incoming>,
    max: usize,
    what: &str,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let deadline = req.extensions().get::<BodyDeadline>().copied();
    let collect = Limited::new(req.into_body(), max).collect();
    let collected = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline.at, collect).await {
            Ok(collected) => collected,
            Err(_) => {
                let mut response = text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s\n",
                        deadline.timeout.as_secs()
                    ),
                );
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                return Err(response);
            }
        },
        None => collect.await,
    };
    collected.map(|body| body.to_bytes()).map_err(|_| {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} exceeds {max} bytes"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn slots_are_given_back_however_they_are_dropped() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a = limiter.admit(ip("10.0.0.1"), false).unwrap();
        let a2 = limiter.admit(ip("10.0.0.1"), false).unwrap();
        assert_eq!(
            limiter.admit(ip("10.0.0.1"), false).unwrap_err(),
            Refused::AddressFull { limit: 2 }
        );
        let b = limiter.admit(ip("10.0.0.2"), false).unwrap();
        assert_eq!(
            limiter.admit(ip("10.0.0.3"), true).unwrap_err(),
            Refused::NodeFull { limit: 3 }
        );
        // A clone (a WebSocket holding its connection's slot) keeps the slot taken.
        let kept = a.clone();
        drop(a);
        assert_eq!(limiter.open(ip("10.0.0.1")), (3, 2));
        drop(kept);
        assert_eq!(limiter.open(ip("10.0.0.1")), (2, 1));
        drop((a2, b));
        assert_eq!(limiter.open(ip("10.0.0.1")), (0, 0));
        assert!(limiter.counts.lock().unwrap().per_address.is_empty());
        // Exempt addresses count towards the total only.
        let exempt: Vec<_> = (0..3)
            .map(|_| limiter.admit(ip("127.0.0.1"), true).unwrap())
            .collect();
        assert_eq!(limiter.open(ip("127.0.0.1")), (3, 0));
        drop(exempt);
        assert_eq!(limiter.open(ip("127.0.0.1")), (0, 0));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let limiter = ConnectionLimiter::new(10, 1);
        let _slot = limiter.admit(ip("2001:db8:1:2::1"), false).unwrap();
        assert!(limiter.admit(ip("2001:db8:1:2:ffff::9"), false).is_err());
        assert!(limiter.admit(ip("2001:db8:1:3::1"), false).is_ok());
        let _v4 = limiter.admit(ip("192.0.2.7"), false).unwrap();
        assert!(limiter.admit(ip("::ffff:192.0.2.7"), false).is_err());
    }

    #[test]
    fn session_bucket_allows_a_burst_then_the_rate() {
        let limiter = SessionRateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        let a = ip("198.51.100.1");
        for _ in 0..3 {
            limiter.check(a, t0).unwrap();
        }
        assert_eq!(
            limiter.check(a, t0).unwrap_err(),
            Refused::SessionRate {
                retry_after_secs: 1
            }
        );
        // Another address has its own bucket.
        limiter.check(ip("198.51.100.2"), t0).unwrap();
        // Two tokens a second: one after 0.5 s, not a second one.
        let t1 = t0 + Duration::from_millis(500);
        limiter.check(a, t1).unwrap();
        assert!(limiter.check(a, t1).is_err());
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.check(a, t2).unwrap();
        }
        assert!(limiter.check(a, t2).is_err());
    }

    #[test]
    fn slow_rates_ask_for_a_longer_wait() {
        let limiter = SessionRateLimiter::new(0.1, 1);
        let now = Instant::now();
        limiter.check(ip("198.51.100.1"), now).unwrap();
        assert_eq!(
            limiter.check(ip("198.51.100.1"), now).unwrap_err(),
            Refused::SessionRate {
                retry_after_secs: 10
            }
        );
    }

    #[test]
    fn session_buckets_are_bounded_and_forget_the_least_recent() {
        let limiter = SessionRateLimiter::with_capacity(1.0, 1, 100);
        let now = Instant::now();
        let addr = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        limiter.check(addr(0), now).unwrap();
        for i in 1..10_000 {
            // Address 0 keeps coming back: it stays tracked, its bucket empty.
            if i % 40 == 0 {
                assert!(limiter.check(addr(0), now).is_err(), "at {i}");
            }
            let _ = limiter.check(addr(i), now);
            assert!(limiter.tracked() <= 100);
        }
        // Address 1 was not seen since: forgotten, it starts with a full bucket.
        limiter.check(addr(1), now).unwrap();
    }

    #[test]
    fn log_budget_counts_what_it_suppresses() {
        let t0 = Instant::now();
        let log = LogLimiter::new(t0);
        let allowed = (0..100).filter(|_| log.allow(t0)).count();
        assert_eq!(allowed, LOG_BURST as usize);
        assert_eq!(log.take_suppressed(), 100 - LOG_BURST as u64);
        assert_eq!(log.take_suppressed(), 0);
        // One second later: the rate's worth of lines again.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| log.allow(t1)).count();
        assert_eq!(allowed, LOG_LINES_PER_SEC as usize);
    }

    #[test]
    fn refusals_answer_with_status_reason_and_retry_after() {
        let full = Refused::NodeFull { limit: 5 };
        let raw = String::from_utf8(full.raw_response()).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{raw}"
        );
        assert!(raw.contains("retry-after: 1\r\n"), "{raw}");
        let body = raw.split("\r\n\r\n").nth(1).unwrap();
        assert!(raw.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(body.contains("connection limit"), "{body}");
        let rate = Refused::SessionRate {
            retry_after_secs: 3,
        };
        let response = rate.response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        let raw = String::from_utf8(Refused::AddressFull { limit: 2 }.raw_response()).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{raw}"
        );
    }
}
