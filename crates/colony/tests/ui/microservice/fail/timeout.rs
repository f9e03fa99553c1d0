use colony::{ServiceError, microservice};

#[microservice(timeout = "5w")]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(timeout = "0s")]
pub async fn price(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(timeout = "500")]
pub async fn cost(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(timeout = "0.5ms")]
pub async fn tax(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(timeout = 5)]
pub async fn fee(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
