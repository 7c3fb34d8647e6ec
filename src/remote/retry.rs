//! How idempotent steps are retried: capped exponential backoff with
//! jitter, and a registry's `Retry-After`.

use std::time::Duration;

use tracing::warn;

use super::error::{retryable_status, Result};
use super::options::Options;

/// Longest `Retry-After` honoured; a registry asking for more gets it capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How idempotent steps are retried.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    pub(super) attempts: u32,
    pub(super) base: Duration,
    pub(super) cap: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(opts: &Options) -> Self {
        RetryPolicy {
            attempts: opts.max_attempts.max(1),
            base: opts.retry_delay,
            cap: opts.max_retry_delay.max(opts.retry_delay),
        }
    }

    /// Run `op` until it succeeds, fails for good, or the attempts run out;
    /// the last result is returned as it is. `host` and `what` name the step
    /// in logs (never a URL's query, which may carry upload state).
    pub(crate) async fn run<F, Fut>(
        &self,
        host: &str,
        what: &str,
        mut op: F,
    ) -> Result<reqwest::Response>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::Response>>,
    {
        let mut attempt = 1;
        loop {
            let res = op().await;
            let hint = match &res {
                Ok(r) if retryable_status(r.status()) => retry_after(r),
                Err(e) if e.is_transient() => None,
                _ => return res,
            };
            let reason = match &res {
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.to_string(),
            };
            if !self.wait(attempt, hint, host, what, &reason).await {
                return res;
            }
            attempt += 1;
        }
    }

    /// After try `attempt` failed for `reason`: waits out the backoff and
    /// returns true, or returns false when the tries are spent.
    pub(crate) async fn wait(
        &self,
        attempt: u32,
        hint: Option<Duration>,
        host: &str,
        what: &str,
        reason: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        if attempt >= self.attempts {
            return false;
        }
        let wait = self.delay(attempt, hint);
        warn!(%host, %what, %reason, attempt, ?wait, "retrying");
        tokio::time::sleep(wait).await;
        true
    }

    /// Wait before try `attempt + 1`. A server's `Retry-After` wins (capped);
    /// otherwise capped exponential backoff with jitter, so parallel blob
    /// uploads that failed together do not come back together.
    pub(super) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(MAX_RETRY_AFTER);
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.cap);
        d / 2 + (d / 2).mul_f64(jitter())
    }
}

/// A number in [0, 1) that differs per call (RandomState is seeded per
/// instance, so no RNG dependency is needed).
fn jitter() -> f64 {
    use std::hash::BuildHasher as _;
    let x = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (the HTTP-date form falls back to backoff).
pub(super) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
