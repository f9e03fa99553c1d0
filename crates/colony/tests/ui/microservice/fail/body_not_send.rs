use colony::{ServiceError, microservice};
use std::rc::Rc;

#[microservice]
pub async fn count(n: u32) -> Result<u32, ServiceError> {
    let shared = Rc::new(n);
    tokio::task::yield_now().await;
    Ok(*shared)
}

fn main() {}
