//! A small retry with exponential backoff, for transient registry errors only. Longer waits belong
//! to the controller's per-object backoff: this only rides out a blip within one reconcile.

use std::future::Future;
use std::time::Duration;

use super::error::RegistryError;

/// How often and how patiently to retry a transient error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first one included (1 = no retry).
    pub attempts: u32,
    /// Wait before the second try; each further wait doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four tries, waiting 0.25 s, 0.5 s and 1 s between them.
    fn default() -> Self {
        RetryPolicy { attempts: 4, first_delay: Duration::from_millis(250), max_delay: Duration::from_secs(4) }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub const NONE: RetryPolicy = RetryPolicy { attempts: 1, first_delay: Duration::ZERO, max_delay: Duration::ZERO };

    /// The waits between tries, in order: one fewer than the tries.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let (first, max) = (self.first_delay, self.max_delay);
        (0..self.attempts.saturating_sub(1)).map(move |i| first.saturating_mul(1u32 << i.min(20)).min(max))
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy's tries are used up; returns the
/// last error then. Waits between tries with tokio's timer.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut attempt: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut delays = policy.delays();
    loop {
        match attempt().await {
            Err(error) if error.is_transient() => match delays.next() {
                Some(delay) => {
                    tracing::debug!(%error, ?delay, "transient registry error, retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            },
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::{ErrorKind, Operation};
    use std::cell::Cell;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_and_cap() {
        let policy = RetryPolicy { attempts: 6, first_delay: ms(100), max_delay: ms(500) };
        assert_eq!(policy.delays().collect::<Vec<_>>(), [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(RetryPolicy::default().delays().collect::<Vec<_>>(), [ms(250), ms(500), ms(1000)]);
        assert_eq!(RetryPolicy::NONE.delays().count(), 0);
        assert_eq!(RetryPolicy { attempts: 0, ..RetryPolicy::default() }.delays().count(), 0);
        let many = RetryPolicy { attempts: 100, first_delay: ms(1), max_delay: Duration::from_secs(60) };
        assert_eq!(many.delays().last(), Some(Duration::from_secs(60)));
    }

    fn error(kind: ErrorKind) -> RegistryError {
        RegistryError::new(Operation::GetManifest, "r/x:y", kind, "test")
    }

    const FAST: RetryPolicy = RetryPolicy { attempts: 3, first_delay: Duration::ZERO, max_delay: Duration::ZERO };

    #[tokio::test]
    async fn retries_transient_until_success() {
        let calls = Cell::new(0);
        let result = retry(FAST, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { Err(error(ErrorKind::Unavailable { status: 503 })) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn gives_up_after_attempts_with_last_error() {
        let calls = Cell::new(0);
        let result: Result<(), _> = retry(FAST, || {
            calls.set(calls.get() + 1);
            async { Err(error(ErrorKind::Connect)) }
        })
        .await;
        assert_eq!(result.map_err(|e| e.kind), Err(ErrorKind::Connect));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn never_retries_permanent() {
        let calls = Cell::new(0);
        let result: Result<(), _> = retry(FAST, || {
            calls.set(calls.get() + 1);
            async { Err(error(ErrorKind::Rejected { status: Some(400), codes: vec![] })) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.get(), 1);
    }
}
