//! Bounded retries with exponential backoff, for connection errors, 5xx and 429.

use std::future::Future;
use std::time::Duration;

use super::error::RegistryError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`--registry-retry-count`).
    pub retries: u32,
    /// Delay before the first retry; doubles each time.
    pub initial: Duration,
    /// Upper bound for one delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or retries run out.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.retries => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn server_error(status: u16) -> RegistryError {
        RegistryError::Server {
            host: "h".into(),
            what: "w".into(),
            status: Some(status),
            detail: "d".into(),
        }
    }

    #[test]
    fn delay_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0), Duration::from_millis(200));
        assert_eq!(p.delay(1), Duration::from_millis(400));
        assert_eq!(p.delay(30), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn retries_retryable_errors_a_bounded_number_of_times() {
        let p = RetryPolicy {
            retries: 3,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = p
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(server_error(503))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = p
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(server_error(404))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "404 is not retried");

        calls.store(0, Ordering::SeqCst);
        let r = p
            .run(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 { Err(server_error(429)) } else { Ok(n) }
            })
            .await;
        assert_eq!(r.unwrap(), 2);
    }
}
