//! Services that call each other in a cycle still have finite future types: each body
//! runs as a boxed future.
use colony::{ServiceError, microservice};

/// Counts down, alternating between `ping` and `pong`.
#[microservice]
pub async fn ping(n: u32) -> Result<u32, ServiceError> {
    if n == 0 {
        Ok(0)
    } else {
        Ok(pong(n - 1).await? + 1)
    }
}

#[microservice]
pub async fn pong(n: u32) -> Result<u32, ServiceError> {
    if n == 0 {
        Ok(0)
    } else {
        Ok(ping(n - 1).await? + 1)
    }
}

/// A service may also call itself.
#[microservice]
pub async fn factorial(n: u64) -> Result<u64, ServiceError> {
    if n <= 1 {
        Ok(1)
    } else {
        Ok(n * factorial(n - 1).await?)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    assert_eq!(rt.block_on(ping(5)), Ok(5));
    assert_eq!(rt.block_on(factorial(5)), Ok(120));
}
