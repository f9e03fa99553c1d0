//! The fixture services.

pub mod shop;

/// Echo and errors.
pub mod basic {
    use colony::{ErrorKind, ServiceError, microservice};

    /// Returns its input.
    #[microservice(exposed)]
    pub async fn echo(text: String) -> Result<String, ServiceError> {
        Ok(text)
    }

    /// Adds two numbers, one of them optional.
    #[microservice]
    pub async fn add(a: i64, b: Option<i64>) -> Result<i64, ServiceError> {
        Ok(a + b.unwrap_or(0))
    }

    /// Fails with the service's own error.
    #[microservice]
    pub async fn fail(message: String) -> Result<(), ServiceError> {
        Err(ServiceError::new(ErrorKind::NotFound, message))
    }

    /// Panics: the caller must get an error, and the instance must keep serving.
    #[microservice]
    pub async fn explode() -> Result<(), ServiceError> {
        panic!("boom")
    }

    /// The time left before this call's deadline, in milliseconds.
    #[microservice]
    pub async fn remaining_ms() -> Result<Option<u64>, ServiceError> {
        Ok(colony::context::remaining().map(|d| d.as_millis() as u64))
    }

    /// The request id this call is part of.
    #[microservice]
    pub async fn request_id() -> Result<Option<String>, ServiceError> {
        Ok(colony::context::request_id())
    }

    /// Calls `request_id` on another instance: the request id must travel.
    #[microservice]
    pub async fn relay_request_id() -> Result<Option<String>, ServiceError> {
        request_id().await
    }

    /// Calls `remaining_ms` on another instance: the deadline must travel.
    #[microservice(timeout = "5s")]
    pub async fn relay_remaining() -> Result<Option<u64>, ServiceError> {
        remaining_ms().await
    }
}

/// Two services that call each other, `depth` levels deep in all.
pub mod chain {
    use colony::{ServiceError, microservice};

    /// Calls `pong(depth - 1)`; returns the number of levels below it.
    #[microservice(timeout = "60s")]
    pub async fn ping(depth: u32) -> Result<u32, ServiceError> {
        if depth == 0 {
            return Ok(0);
        }
        Ok(pong(depth - 1).await? + 1)
    }

    /// Calls `ping(depth - 1)`.
    #[microservice(timeout = "60s")]
    pub async fn pong(depth: u32) -> Result<u32, ServiceError> {
        if depth == 0 {
            return Ok(0);
        }
        Ok(ping(depth - 1).await? + 1)
    }
}

/// Slow work, for deadlines, load and kills.
pub mod work {
    use std::time::Duration;

    use colony::{ServiceError, microservice};

    /// Sleeps `ms` milliseconds without holding a thread.
    #[microservice]
    pub async fn sleep_ms(ms: u64) -> Result<u64, ServiceError> {
        tracing::info!(ms, "sleep started");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    /// Sleeps `ms` milliseconds holding its thread, on the blocking pool.
    #[microservice(blocking)]
    pub async fn block_ms(ms: u64) -> Result<u64, ServiceError> {
        std::thread::sleep(Duration::from_millis(ms));
        Ok(ms)
    }

    /// Calls `sleep_ms` on its instance: for kills of the callee mid-call.
    #[microservice]
    pub async fn relay_sleep(ms: u64) -> Result<u64, ServiceError> {
        sleep_ms(ms).await
    }

    /// Makes `n` concurrent calls of `sleep_ms(ms)` and returns how many succeeded.
    #[microservice(timeout = "120s")]
    pub async fn fan_out(n: u32, ms: u64) -> Result<u32, ServiceError> {
        let calls = (0..n).map(|_| sleep_ms(ms));
        let results = futures_util::future::join_all(calls).await;
        let mut ok = 0;
        for r in results {
            match r {
                Ok(_) => ok += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(ok)
    }
}

/// A load generator, for the local cluster's autoscaling and fault tests.
pub mod load {
    use std::time::{Duration, Instant};

    use colony::{ServiceError, microservice};
    use serde::{Deserialize, Serialize};

    /// What a load run saw.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Report {
        /// Calls that succeeded.
        pub ok: u64,
        /// Calls that failed.
        pub failed: u64,
        /// The first failure, for the test's message.
        pub first_error: Option<String>,
    }

    /// Keeps `concurrency` calls of `work::sleep_ms(sleep_ms)` in flight for `duration_ms`.
    #[microservice(timeout = "300s")]
    pub async fn drive(
        concurrency: u32,
        duration_ms: u64,
        sleep_ms: u64,
    ) -> Result<Report, ServiceError> {
        let end = Instant::now() + Duration::from_millis(duration_ms);
        let workers = (0..concurrency).map(|_| async move {
            let mut report = Report {
                ok: 0,
                failed: 0,
                first_error: None,
            };
            while Instant::now() < end {
                match super::work::sleep_ms(sleep_ms).await {
                    Ok(_) => report.ok += 1,
                    Err(e) => {
                        report.failed += 1;
                        report.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            report
        });
        let reports = futures_util::future::join_all(workers).await;
        Ok(reports.into_iter().fold(
            Report {
                ok: 0,
                failed: 0,
                first_error: None,
            },
            |mut all, r| {
                all.ok += r.ok;
                all.failed += r.failed;
                if all.first_error.is_none() {
                    all.first_error = r.first_error;
                }
                all
            },
        ))
    }
}

/// A request through three services, each logging a line: for tracing, log collection
/// and metrics (`crates/colony-cli/tests/observability.rs`).
///
/// ```text
///  HTTP ─► gateway ─► first ─► second ─► third      GET /trail/{word}
/// ```
pub mod trail {
    use colony::{ServiceError, microservice};

    /// Logs, then asks `second`.
    #[microservice(exposed, http = "GET /trail/{word}", timeout = "10s")]
    pub async fn first(word: String) -> Result<String, ServiceError> {
        tracing::info!(%word, "first has the word");
        second(word).await
    }

    /// Logs, then asks `third`.
    #[microservice]
    pub async fn second(word: String) -> Result<String, ServiceError> {
        tracing::info!(%word, "second has the word");
        third(word).await
    }

    /// Logs, then answers the word in capitals; refuses the word `refuse` with its own
    /// error (a 400 at the gateway).
    #[microservice]
    pub async fn third(word: String) -> Result<String, ServiceError> {
        tracing::info!(%word, "third has the word");
        if word == "refuse" {
            return Err(ServiceError::invalid_argument("third refuses this word"));
        }
        Ok(word.to_uppercase())
    }
}
