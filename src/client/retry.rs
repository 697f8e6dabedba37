//! When a failed request is worth another attempt, and how long to wait first: one policy for
//! the control plane and the CDN, built on `FetchError::is_transient`, so a read has the same
//! retry bound whichever part of the origin is down.
//!
//! The bound holds only if retries do not nest: a step that runs inside another request's
//! attempts (storage-resolve and its token, inside a CDN fetch) makes one attempt and leaves
//! retrying to the loop around it. `GaveUp` is never retried for the same reason.

use super::error::FetchError;
use super::stats::Stats;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    /// Set while a caller runs requests whose failures it reports itself, once (a refresh
    /// revalidating thousands of tracks): their retries are logged at debug level only.
    static QUIET: ();
}

/// Runs `request` with its retries logged quietly, even on the control plane: for callers
/// that sum up many requests' failures in one line of their own.
pub async fn quietly<F: Future>(request: F) -> F::Output {
    QUIET.scope((), request).await
}

fn is_quiet() -> bool {
    QUIET.try_with(|_| ()).is_ok()
}

/// Attempts per request before it fails (a read, with EIO); `--retries` changes it.
pub const DEFAULT_ATTEMPTS: u32 = 6;

/// The longest `Retry-After` obeyed: a server asking for an hour must not hang a read.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The wait before retry `n` (1, 2, …): 100–200 ms, doubling up to 1–2 s, with jitter so that
/// readers failing together do not come back together. The five retries of the default six
/// attempts wait 2.5–5 s in all: longer than an origin takes to restart, and no longer than
/// the README's bound.
pub fn backoff(retry: u32) -> Duration {
    let base = 200u64
        .saturating_mul(1 << retry.saturating_sub(1).min(4))
        .min(2000);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

/// The wait before retry `n` after `error`: the server's `Retry-After` when it gave one
/// (bounded), none the first time a CDN URL went stale (a fresh one is resolved first),
/// otherwise backoff.
fn delay(error: &FetchError, retry: u32) -> Duration {
    match error {
        FetchError::Status {
            retry_after: Some(wait),
            ..
        } => (*wait).min(MAX_RETRY_AFTER),
        e if e.wants_new_url() && retry == 1 => Duration::ZERO,
        _ => backoff(retry),
    }
}

/// The attempts of one request: after each failure, `after` says whether to try again.
pub struct Retry<'a> {
    what: String,
    attempts: u32,
    failures: u32,
    stats: &'a Stats,
    loud: bool,
}

impl<'a> Retry<'a> {
    /// `what` names the request in logs and in `GaveUp`.
    pub fn new(what: impl Into<String>, attempts: u32, stats: &'a Stats) -> Self {
        Retry {
            what: what.into(),
            attempts: attempts.max(1),
            failures: 0,
            stats,
            loud: false,
        }
    }

    /// Logs each retry as a warning: on the control plane a user may be waiting on a silent
    /// origin (up to a timeout per attempt) and should hear why at once. Not within
    /// [`quietly`].
    pub fn loud(mut self) -> Self {
        self.loud = true;
        self
    }

    /// After a failed attempt: `Ok` once it is time for the next one, or the error to fail
    /// with: `error` itself when it is not worth retrying, `GaveUp` when the attempts are spent.
    pub async fn after(&mut self, error: FetchError) -> Result<(), FetchError> {
        self.failures += 1;
        if !error.is_transient() {
            return Err(error);
        }
        if self.failures >= self.attempts {
            return Err(FetchError::GaveUp {
                what: std::mem::take(&mut self.what),
                attempts: self.attempts,
                last: Box::new(error),
            });
        }
        let wait = delay(&error, self.failures);
        let (what, next) = (&self.what, self.failures + 1);
        if self.loud && !is_quiet() {
            tracing::warn!(
                "{what}: {error}; trying again ({next} of {})",
                self.attempts
            );
        } else {
            tracing::debug!(%what, %error, ?wait, next, "request failed; trying again");
        }
        self.stats.retries.incr();
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> FetchError {
        FetchError::Status {
            url: "http://cdn/a".into(),
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn five_retries_wait_between_two_and_a_half_and_five_seconds() {
        for _ in 0..100 {
            let waits: Vec<Duration> = (1..=5).map(backoff).collect();
            assert!(
                waits[0] >= Duration::from_millis(100) && waits[0] <= Duration::from_millis(200)
            );
            let total: Duration = waits.iter().sum();
            assert!(total >= Duration::from_millis(2500), "{total:?}");
            assert!(total <= Duration::from_secs(5), "{total:?}");
        }
        assert!(backoff(30) <= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_is_obeyed_within_a_bound_and_a_stale_url_is_retried_at_once() {
        assert_eq!(delay(&status(429, Some(1)), 3), Duration::from_secs(1));
        assert_eq!(delay(&status(503, Some(3600)), 1), MAX_RETRY_AFTER);
        assert_eq!(delay(&status(403, None), 1), Duration::ZERO);
        assert!(delay(&status(403, None), 2) > Duration::ZERO);
    }

    #[tokio::test]
    async fn quietly_holds_for_the_request_it_wraps_only() {
        assert!(!is_quiet());
        assert!(quietly(async { is_quiet() }).await);
        assert!(!is_quiet());
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_attempts_are_spent_and_others_never() {
        let stats = Stats::default();
        let mut retry = Retry::new("a thing", 3, &stats);
        retry.after(status(429, Some(0))).await.unwrap();
        retry.after(status(500, Some(0))).await.unwrap();
        match retry.after(status(502, Some(0))).await {
            Err(FetchError::GaveUp {
                what,
                attempts,
                last,
            }) => {
                assert_eq!((what.as_str(), attempts), ("a thing", 3));
                assert!(matches!(*last, FetchError::Status { status: 502, .. }));
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert_eq!(stats.retries.get(), 2);
        let mut retry = Retry::new("a thing", 3, &stats);
        let final_answer = FetchError::NotFound {
            url: "http://origin/x".into(),
        };
        assert!(matches!(
            retry.after(final_answer).await,
            Err(FetchError::NotFound { .. })
        ));
        assert_eq!(stats.retries.get(), 2, "no retry of a final answer");
    }
}
