//! Values of the wrong kind get a message with an example of the right one.
use colony::{ServiceError, microservice};

#[microservice(exposed = "yes")]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(http = 404)]
pub async fn price(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(threads = 2.5)]
pub async fn cost(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(max_instances = 5000000000)]
pub async fn tax(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
