//! What a client of `dockless serve` may hold before it is authenticated.
//!
//! Nothing is authenticated until the HMAC over the whole body checks out,
//! so while it sends, every client is a stranger. A separate pool of slots
//! for "authenticated" clients cannot be filled at accept time for that
//! reason; what tells GitHub apart from an attacker then is that GitHub
//! sends a delivery in one burst. So:
//!
//! - a connection keeps its slot only while it sends at `MIN_RATE` or more
//!   (after a `GRACE`), and when every slot is taken the slowest connection
//!   that is still sending (or idle) is dropped to make room for the new one;
//!   a fast sender is never the slowest, so a delivery always gets a slot;
//! - request bodies are buffered out of one byte budget shared by all
//!   connections (plus a per-request cap, `webhook::MAX_BODY`), so any
//!   number of strangers cannot make the server hold more than that;
//! - bodies are only counted and hashed on the way in: nothing parses them
//!   before the signature is verified.

use super::webhook::{SignatureCheck, MAX_BODY};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Bytes a second a client must keep up, over its whole request, once the
/// grace period is over.
pub const MIN_RATE: u64 = 4096;
/// Time a request may take before `MIN_RATE` applies.
pub const GRACE: Duration = Duration::from_secs(2);
/// The longest a client may send nothing in the middle of a request.
pub const STALL: Duration = Duration::from_secs(5);
/// A request younger than this is never evicted: its first bytes may still
/// be on the way.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// Memory all unverified bodies may take together
/// (`DOCKLESS_BODY_BUDGET_BYTES` overrides it).
pub const DEFAULT_BODY_BUDGET: usize = 64 * 1024 * 1024;
/// The first buffer of a body; it doubles from there.
const FIRST_BUFFER: usize = 16 * 1024;

/// Where a connection is in its current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Between requests of a kept-alive connection (hyper's header timeout
    /// bounds it).
    Idle = 0,
    /// Sending request headers; a new connection starts here.
    Head = 1,
    /// Sending a webhook body (the handler times it, to answer 408).
    Body = 2,
    /// Handled by us, past reading: never cut.
    Busy = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Idle,
            1 => Phase::Head,
            2 => Phase::Body,
            _ => Phase::Busy,
        }
    }
}

/// How far one connection's client has got, updated on every socket read.
/// The fields are updated one by one (Relaxed): a reader may see them a
/// read apart, which only shifts a deadline by that read.
pub struct ConnectionProgress {
    base: Instant,
    read: AtomicU64,
    /// Milliseconds since `base` of the last byte read.
    last_ms: AtomicU64,
    /// Milliseconds since `base` when the current request began.
    request_ms: AtomicU64,
    /// `read` when the current request began.
    request_read: AtomicU64,
    phase: AtomicU8,
    cancel: CancellationToken,
}

impl ConnectionProgress {
    fn new() -> ConnectionProgress {
        ConnectionProgress {
            base: Instant::now(),
            read: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            request_ms: AtomicU64::new(0),
            request_read: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Head as u8),
            cancel: CancellationToken::new(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    /// Counts `n` bytes read from the socket; the first of a kept-alive
    /// connection's next request starts that request's clock.
    pub fn on_read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.ms(Instant::now());
        let before = self.read.fetch_add(n as u64, Relaxed);
        self.last_ms.store(now, Relaxed);
        if self.phase() == Phase::Idle {
            self.request_ms.store(now, Relaxed);
            self.request_read.store(before, Relaxed);
            self.set_phase(Phase::Head);
        }
    }

    /// The request is answered; the connection idles until the next one.
    pub fn request_done(&self) {
        self.request_ms.store(self.ms(Instant::now()), Relaxed);
        self.request_read.store(self.read.load(Relaxed), Relaxed);
        self.set_phase(Phase::Idle);
    }

    /// The time by which the client must have sent more of its current
    /// request: `MIN_RATE` over the request after `GRACE`, and never
    /// `STALL` without a byte.
    pub fn deadline(&self) -> Instant {
        let start = self.request_ms.load(Relaxed);
        let sent = self.read.load(Relaxed) - self.request_read.load(Relaxed);
        let by_rate = start + GRACE.as_millis() as u64 + sent.saturating_mul(1000) / MIN_RATE;
        let by_stall = self.last_ms.load(Relaxed).max(start) + STALL.as_millis() as u64;
        self.base + Duration::from_millis(by_rate.min(by_stall))
    }

    /// Bytes a second over the current request, for requests old enough to
    /// be judged and not being handled.
    fn eviction_rate(&self, now: Instant) -> Option<f64> {
        if self.phase() == Phase::Busy || self.cancel.is_cancelled() {
            return None;
        }
        let age = self.ms(now).saturating_sub(self.request_ms.load(Relaxed));
        if age < EVICTABLE_AFTER.as_millis() as u64 {
            return None;
        }
        let sent = self.read.load(Relaxed) - self.request_read.load(Relaxed);
        Some(sent as f64 * 1000.0 / age as f64)
    }

    /// Resolves when the connection is to be dropped.
    pub async fn cut(&self) {
        self.cancel.cancelled().await
    }
}

/// The connection slots, and who holds them.
pub struct Slots {
    free: Arc<Semaphore>,
    held: Mutex<HashMap<u64, Arc<ConnectionProgress>>>,
    next_id: AtomicU64,
    /// Connections dropped for sending request headers too slowly.
    pub cut_slow: AtomicU64,
    /// Connections dropped to make room for a new one.
    pub evicted: AtomicU64,
}

/// One connection's slot; given back on drop.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    _permit: OwnedSemaphorePermit,
    pub progress: Arc<ConnectionProgress>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: Arc::new(Semaphore::new(n)),
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            cut_slow: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionProgress>>> {
        // The map stays consistent whatever panicked while holding it.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection just accepted: a free one, else the slowest
    /// client's, else the first to free up.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            if let Ok(permit) = self.free.clone().try_acquire_owned() {
                return self.register(permit);
            }
            if let Some(victim) = self.slowest() {
                victim.cancel.cancel();
                self.evicted.fetch_add(1, Relaxed);
            }
            // The victim's slot frees once its task sees the cut; without a
            // victim, a request may become old enough to be judged.
            let wait = self.free.clone().acquire_owned();
            if let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_millis(100), wait).await {
                return self.register(permit);
            }
        }
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next_id.fetch_add(1, Relaxed);
        let progress = Arc::new(ConnectionProgress::new());
        self.lock().insert(id, progress.clone());
        Slot {
            slots: self.clone(),
            id,
            _permit: permit,
            progress,
        }
    }

    fn slowest(&self) -> Option<Arc<ConnectionProgress>> {
        self.slowest_at(Instant::now())
    }

    fn slowest_at(&self, now: Instant) -> Option<Arc<ConnectionProgress>> {
        self.lock()
            .values()
            .filter_map(|p| p.eviction_rate(now).map(|rate| (rate, p)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p.clone())
    }

    /// Cuts clients sending their request headers below the minimum rate.
    /// (Bodies are timed by the handler, which answers 408.)
    pub fn sweep(&self) {
        self.sweep_at(Instant::now())
    }

    fn sweep_at(&self, now: Instant) {
        for p in self.lock().values() {
            if p.phase() == Phase::Head && !p.cancel.is_cancelled() && p.deadline() <= now {
                p.cancel.cancel();
                self.cut_slow.fetch_add(1, Relaxed);
            }
        }
    }

    /// `sweep` four times a second, for the life of the server.
    pub async fn sweep_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }
}

/// The memory unverified bodies may take, shared by all connections.
pub struct BodyBudget {
    free: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget {
            free: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }
}

/// Why a body was not read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over `MAX_BODY` (declared or sent).
    TooLarge,
    /// The shared budget is spent.
    NoMemory,
    /// Below the minimum rate, or stalled.
    TooSlow,
    /// Over the whole-body time limit.
    TimedOut,
    /// The connection broke or the framing was bad.
    Broken,
}

/// A body read in full, holding its share of the budget until dropped.
pub struct HeldBody {
    pub bytes: Vec<u8>,
    held: Option<OwnedSemaphorePermit>,
    /// The buffer never grows past this (the declared length, or `MAX_BODY`).
    cap: usize,
}

impl HeldBody {
    fn new(declared: Option<u64>) -> HeldBody {
        let cap = declared.map_or(MAX_BODY, |n| (n as usize).min(MAX_BODY));
        HeldBody {
            bytes: Vec::new(),
            held: None,
            cap,
        }
    }

    /// Appends a chunk, first taking from `budget` whatever the buffer must grow by.
    fn extend(&mut self, budget: &BodyBudget, data: &[u8]) -> Result<(), BodyError> {
        let need = self.bytes.len() + data.len();
        if need > self.bytes.capacity() {
            let target = need
                .max(self.bytes.capacity() * 2)
                .max(FIRST_BUFFER)
                .min(self.cap.max(need));
            let more =
                u32::try_from(target - self.bytes.capacity()).map_err(|_| BodyError::TooLarge)?;
            let permit = budget
                .free
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| BodyError::NoMemory)?;
            match &mut self.held {
                Some(held) => held.merge(permit),
                None => self.held = Some(permit),
            }
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }
}

/// Reads a request body into memory, feeding the signature check as it
/// comes; nothing looks inside it. A body declared or grown over
/// `MAX_BODY` is refused at once, without reading (more of) it.
pub async fn read_body(
    body: &mut Incoming,
    check: &mut SignatureCheck,
    budget: &BodyBudget,
    progress: &ConnectionProgress,
    time_limit: Duration,
) -> Result<HeldBody, BodyError> {
    let hint = body.size_hint();
    if hint.lower() > MAX_BODY as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut held = HeldBody::new(hint.exact());
    let end = Instant::now() + time_limit;
    loop {
        let wait_until = progress.deadline().min(end);
        let frame = match tokio::time::timeout_at(wait_until.into(), body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|_| BodyError::Broken)?,
            Ok(None) => return Ok(held),
            Err(_) => {
                let now = Instant::now();
                if now >= end {
                    return Err(BodyError::TimedOut);
                }
                if progress.deadline() <= now {
                    return Err(BodyError::TooSlow);
                }
                continue;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if held.bytes.len() + data.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        check.update(&data);
        held.extend(budget, &data)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_follows_rate_and_stall() {
        let p = ConnectionProgress::new();
        // Nothing sent: the grace period.
        let d = p.deadline().duration_since(p.base);
        assert_eq!(d, GRACE);
        // MIN_RATE bytes buy a second more.
        p.on_read(MIN_RATE as usize);
        let d = p.deadline().duration_since(p.base);
        assert!(d >= GRACE + Duration::from_secs(1) - Duration::from_millis(1));
        // A burst buys no more than STALL after its last byte.
        p.on_read(100 * 1024 * 1024);
        let d = p.deadline().duration_since(p.base);
        assert!(d <= STALL + Duration::from_millis(50), "{d:?}");
    }

    #[test]
    fn idle_connection_starts_its_clock_on_the_next_byte() {
        let p = ConnectionProgress::new();
        p.on_read(500);
        p.set_phase(Phase::Busy);
        p.request_done();
        assert_eq!(p.phase(), Phase::Idle);
        p.on_read(10);
        assert_eq!(p.phase(), Phase::Head);
        assert_eq!(p.read.load(Relaxed) - p.request_read.load(Relaxed), 10);
    }

    #[tokio::test]
    async fn budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(100 * 1024);
        let mut a = HeldBody::new(Some(60 * 1024));
        a.extend(&budget, &[b'x'; 60 * 1024]).unwrap();
        let mut b = HeldBody::new(None);
        assert_eq!(
            b.extend(&budget, &[b'y'; 50 * 1024]),
            Err(BodyError::NoMemory)
        );
        drop(a);
        b.extend(&budget, &[b'y'; 50 * 1024]).unwrap();
        assert!(b.bytes.capacity() <= 64 * 1024, "{}", b.bytes.capacity());
    }

    #[tokio::test]
    async fn the_slowest_judged_connection_makes_room() {
        let slots = Slots::new(2);
        let (fast, slow) = (slots.admit().await, slots.admit().await);
        fast.progress.on_read(1_000_000);
        slow.progress.on_read(10);
        let now = Instant::now();
        assert!(
            slots.slowest_at(now).is_none(),
            "nothing is judged at first"
        );
        let later = now + Duration::from_secs(3);
        assert!(Arc::ptr_eq(
            &slots.slowest_at(later).unwrap(),
            &slow.progress
        ));
        // A request being handled is never the one dropped.
        slow.progress.set_phase(Phase::Busy);
        assert!(Arc::ptr_eq(
            &slots.slowest_at(later).unwrap(),
            &fast.progress
        ));
        // Full: a new connection waits until one is old enough, then takes its slot.
        slow.progress.set_phase(Phase::Head);
        let admitting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.admit().await }
        });
        slow.progress.cut().await;
        assert!(!fast.progress.cancel.is_cancelled());
        drop(slow);
        let third = admitting.await.unwrap();
        assert_eq!(slots.evicted.load(Relaxed), 1);
        assert_eq!(slots.lock().len(), 2);
        drop((fast, third));
        assert!(slots.lock().is_empty());
    }

    #[test]
    fn sweep_cuts_slow_headers_only() {
        let slots = Slots::new(4);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let head = rt.block_on(slots.admit());
        let body = rt.block_on(slots.admit());
        body.progress.set_phase(Phase::Body);
        slots.sweep_at(Instant::now());
        assert!(!head.progress.cancel.is_cancelled());
        slots.sweep_at(Instant::now() + GRACE + Duration::from_millis(10));
        assert!(head.progress.cancel.is_cancelled());
        assert!(!body.progress.cancel.is_cancelled());
        assert_eq!(slots.cut_slow.load(Relaxed), 1);
    }
}
