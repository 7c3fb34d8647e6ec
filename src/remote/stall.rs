//! Notices a streamed request body that stops moving.
//!
//! reqwest's `read_timeout` runs from the start of a request until the head
//! of its answer, so it would cut a long upload that is still making
//! progress, and it cannot tell a registry that stopped reading from one
//! that is slow to answer. Here the clock restarts whenever the connection
//! takes another chunk of the body, and again when the body is complete.
//! When the clock runs out, [`Liveness::waiting_on_body`] says which side
//! stopped: the connection (no longer asking for bytes) or the body (asked,
//! with nothing to give, as when it streams from another registry).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

// tokio's clock, so that tests can run it paused.
use tokio::time::Instant;

use futures_util::Stream;

/// When a request body last moved, shared by the body stream and the
/// request that waits on it.
#[derive(Clone)]
pub(crate) struct Liveness(Arc<Inner>);

struct Inner {
    start: Instant,
    /// Milliseconds after `start` of the last chunk taken.
    last_ms: AtomicU64,
    finished: AtomicBool,
    sent: AtomicU64,
    /// The connection asked the body for bytes and is still waiting.
    pulling: AtomicBool,
}

impl Liveness {
    pub(crate) fn new() -> Self {
        Liveness(Arc::new(Inner {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            pulling: AtomicBool::new(false),
        }))
    }

    /// Restarts the clock: something moved (or the request just went out).
    pub(crate) fn touch(&self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed));
        self.0.start.elapsed().saturating_sub(last)
    }

    /// The whole body has been handed to the connection.
    pub(crate) fn finished(&self) -> bool {
        self.0.finished.load(Ordering::Relaxed)
    }

    /// Bytes of the body handed to the connection so far.
    pub(crate) fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// The connection is waiting for the body rather than the other way
    /// round: a stall now is the body's source, not the receiving end.
    pub(crate) fn waiting_on_body(&self) -> bool {
        self.0.pulling.load(Ordering::Relaxed)
    }

    /// `body`, recording each chunk the connection takes, its end, and
    /// whether the connection is waiting on it.
    pub(crate) fn watch<S, B, E>(&self, body: S) -> impl Stream<Item = Result<B, E>>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
    {
        let live = self.clone();
        let mut body = Box::pin(body);
        futures_util::stream::poll_fn(move |cx| {
            live.0.pulling.store(true, Ordering::Relaxed);
            let item = body.as_mut().poll_next(cx);
            if let Poll::Ready(item) = &item {
                live.0.pulling.store(false, Ordering::Relaxed);
                match item {
                    Some(Ok(chunk)) => {
                        let n = chunk.as_ref().len() as u64;
                        live.0.sent.fetch_add(n, Ordering::Relaxed);
                    }
                    Some(Err(_)) => {}
                    None => live.0.finished.store(true, Ordering::Relaxed),
                }
                live.touch();
            }
            item
        })
    }

    /// Resolves once nothing has moved for `limit`.
    pub(crate) async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    /// `n` chunks of 3 bytes, each after `gap`.
    fn slow_body(n: usize, gap: Duration) -> impl Stream<Item = Result<Vec<u8>, ()>> {
        futures_util::stream::iter(vec![Ok(vec![0u8; 3]); n]).then(move |c| async move {
            tokio::time::sleep(gap).await;
            c
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_that_keeps_moving_is_not_a_stall() {
        let live = Liveness::new();
        let body = live.watch(slow_body(4, Duration::from_secs(2)));
        tokio::select! {
            chunks = body.collect::<Vec<_>>() => assert_eq!(chunks.len(), 4),
            _ = live.stalled(Duration::from_secs(3)) => panic!("8 s body with 2 s gaps called stalled"),
        }
        assert!(live.finished());
        assert_eq!(live.sent(), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_longer_than_the_limit_is_a_stall() {
        let live = Liveness::new();
        let started = Instant::now();
        let body = live.watch(slow_body(2, Duration::from_secs(4)));
        tokio::select! {
            _ = body.collect::<Vec<_>>() => panic!("a 4 s gap went unnoticed"),
            _ = live.stalled(Duration::from_secs(3)) => {}
        }
        assert_eq!(started.elapsed().as_secs(), 3);
        assert!(!live.finished());
        assert_eq!(live.sent(), 0);
        assert!(live.waiting_on_body(), "the body had nothing to give");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_nobody_reads_is_not_waited_on() {
        let live = Liveness::new();
        let mut body = Box::pin(live.watch(slow_body(3, Duration::ZERO)));
        assert!(body.next().await.is_some());
        // The reader stops asking: the stall is the reader's.
        live.stalled(Duration::from_secs(3)).await;
        assert!(!live.waiting_on_body());
        assert_eq!(live.sent(), 3);
    }
}
