//! Retries at the outermost scope: the gateway and [`crate::client`] re-run a whole request
//! when the instance serving it died or could not take it.
//!
//! Owns: [`RetryPolicy`] (how many tries, how long to back off) and [`Retrier`] (a policy
//! with its retry budget, shared by every request of one gateway or client). Promises: a
//! request is re-run only after a failure that [`CallError::is_retryable`] allows, only
//! while its deadline leaves room for the back-off, and only while the budget has tokens,
//! so that retries add about [`RetryPolicy::budget_ratio`] of extra load to a sick cluster
//! instead of multiplying it. Must not touch: how a call is routed (the `call` module ejects
//! the endpoint that failed, so the next try picks another instance).
//!
//! Inner calls, made by one service to another, never retry: only the outermost scope
//! does, so that a failure deep in a chain causes one retry, not one per level.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::CallError;

/// How the outermost scope retries a request.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Tries in all, the first one included; 1 disables retries.
    pub max_attempts: u16,
    /// The back-off before the first retry; each further retry doubles it, and the actual
    /// wait is drawn at random below it (full jitter), so that retries spread out.
    pub initial_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
    /// Retry tokens earned by each request: 0.2 lets retries add about 20% to the load.
    pub budget_ratio: f64,
    /// Tokens the budget starts with and never exceeds, so that a quiet client can still
    /// retry its first failures, and a long healthy period does not save up a retry storm.
    pub budget_burst: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            budget_ratio: 0.2,
            budget_burst: 20.0,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The same policy with `attempts` tries in all (at least 1).
    pub fn with_max_attempts(mut self, attempts: u16) -> RetryPolicy {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The same policy with a retry budget of `ratio` tokens earned per request.
    pub fn with_budget_ratio(mut self, ratio: f64) -> RetryPolicy {
        self.budget_ratio = if ratio.is_finite() {
            ratio.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// The upper bound of the back-off before retry number `retry` (1 for the first).
    fn backoff_cap(&self, retry: u16) -> Duration {
        let doublings = u32::from(retry.saturating_sub(1)).min(20);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// A [`RetryPolicy`] with the retry budget of everything that shares it.
///
/// One gateway or one [`crate::client::Client`] holds one `Retrier`; every request it
/// handles earns budget and every retry spends it.
#[derive(Debug)]
pub(crate) struct Retrier {
    policy: RetryPolicy,
    /// Retry tokens: each request adds `budget_ratio`, each retry takes one.
    tokens: Mutex<f64>,
}

impl Retrier {
    /// A retrier with a full budget.
    pub(crate) fn new(policy: RetryPolicy) -> Arc<Retrier> {
        Arc::new(Retrier {
            policy,
            tokens: Mutex::new(policy.budget_burst.max(0.0)),
        })
    }

    /// Begin one request that must finish by `deadline` (if it has one): it earns its share
    /// of the budget, and the returned [`Attempts`] says when to try again.
    pub(crate) fn begin(self: &Arc<Self>, deadline: Option<Instant>) -> Attempts {
        {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            *tokens = (*tokens + self.policy.budget_ratio).min(self.policy.budget_burst);
        }
        Attempts {
            retrier: self.clone(),
            attempt: 0,
            deadline,
        }
    }

    /// Take one token for a retry, if there is one.
    fn withdraw(&self) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Run `attempt(n)` for n = 0, 1, … until it succeeds, fails in a way that is not
    /// retryable, or the tries, the deadline or the budget run out. The last result is
    /// returned either way.
    pub(crate) async fn run<T, F, Fut>(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(u16) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut attempts = self.begin(deadline);
        loop {
            match attempt(attempts.number()).await {
                Err(e) if e.is_retryable() && attempts.retry(&e).await => continue,
                other => return other,
            }
        }
    }
}

/// The tries of one request; see [`Retrier::begin`].
#[derive(Debug)]
pub(crate) struct Attempts {
    retrier: Arc<Retrier>,
    attempt: u16,
    deadline: Option<Instant>,
}

/// Why a request is not tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// It was tried as often as the policy allows.
    Attempts,
    /// The back-off would end past the deadline.
    Deadline,
    /// The retry budget is spent: the cluster is failing more than retries can help.
    Budget,
}

impl Attempts {
    /// The number of the current try: 0 for the first.
    pub(crate) fn number(&self) -> u16 {
        self.attempt
    }

    /// After a retryable failure: wait a jittered back-off and move to the next try, or
    /// say why not. Spends a budget token when it retries.
    pub(crate) async fn next(&mut self) -> Result<(), GiveUp> {
        let policy = self.retrier.policy;
        let next = self.attempt.saturating_add(1);
        if next >= policy.max_attempts {
            return Err(GiveUp::Attempts);
        }
        let cap = policy.backoff_cap(next);
        let wait = cap.mul_f64(fastrand::f64());
        if let Some(deadline) = self.deadline
            && Instant::now() + wait >= deadline
        {
            return Err(GiveUp::Deadline);
        }
        if !self.retrier.withdraw() {
            return Err(GiveUp::Budget);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.attempt = next;
        crate::telemetry::metrics::retry();
        Ok(())
    }

    /// [`Attempts::next`], logging the failure and the decision; true when it retries.
    pub(crate) async fn retry(&mut self, err: &CallError) -> bool {
        match self.next().await {
            Ok(()) => {
                tracing::info!(attempt = self.attempt, error = %err, "retrying on another instance");
                true
            }
            Err(why) => {
                tracing::debug!(attempt = self.attempt, error = %err, ?why, "not retrying");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> CallError {
        CallError::ConnectionLost {
            service: "s".into(),
            reason: "killed".into(),
        }
    }

    fn fast(attempts: u16) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::ZERO,
            ..RetryPolicy::default().with_max_attempts(attempts)
        }
    }

    #[tokio::test]
    async fn retries_retryable_failures_until_success() {
        let retrier = Retrier::new(fast(4));
        let mut seen = Vec::new();
        let result = retrier
            .run(None, |n| {
                seen.push(n);
                async move { if n < 2 { Err(lost()) } else { Ok(n) } }
            })
            .await;
        assert_eq!(result, Ok(2));
        assert_eq!(seen, [0, 1, 2]);
    }

    #[tokio::test]
    async fn never_retries_what_may_not_be_retried() {
        let retrier = Retrier::new(fast(4));
        let mut tries = 0;
        let result: Result<(), _> = retrier
            .run(None, |_| {
                tries += 1;
                async {
                    Err(CallError::DeadlineExceeded {
                        service: "s".into(),
                        budget: Duration::from_secs(1),
                    })
                }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tries, 1);
    }

    #[tokio::test]
    async fn stops_after_max_attempts() {
        let retrier = Retrier::new(fast(3));
        let mut tries = 0;
        let result: Result<(), _> = retrier
            .run(None, |_| {
                tries += 1;
                async { Err(lost()) }
            })
            .await;
        assert_eq!(result, Err(lost()));
        assert_eq!(tries, 3);
    }

    #[tokio::test]
    async fn the_budget_bounds_retries_to_a_share_of_requests() {
        let policy = RetryPolicy {
            budget_burst: 5.0,
            ..fast(2)
        };
        let retrier = Retrier::new(policy);
        let mut retries = 0;
        for _ in 0..100 {
            let mut attempts = retrier.begin(None);
            if attempts.next().await.is_ok() {
                retries += 1;
            }
        }
        // 5 tokens of burst, then 0.2 per request: about 20 extra tries per 100 requests.
        assert!((15..=25).contains(&retries), "retries = {retries}");
    }

    #[tokio::test]
    async fn gives_up_when_the_backoff_would_pass_the_deadline() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let retrier = Retrier::new(policy);
        // Jitter may draw a zero wait; past the deadline, even that is too late.
        let mut attempts = retrier.begin(Some(Instant::now()));
        assert_eq!(attempts.next().await, Err(GiveUp::Deadline));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_cap(1), Duration::from_millis(10));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(20));
        assert_eq!(p.backoff_cap(30), Duration::from_secs(1));
    }

    #[test]
    fn a_service_error_keeps_the_call_it_came_from() {
        use crate::error::{FailedCall, ServiceError};
        let err = ServiceError::from(lost());
        assert_eq!(err.failed_call(), Some(&lost()));
        assert!(err.failed_call().is_some_and(CallError::is_retryable));
        assert_eq!(ServiceError::internal("own").failed_call(), None);
    }
}
