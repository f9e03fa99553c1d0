use colony::{ServiceError, microservice};

#[microservice(http = "GET quote")]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(http = "/quote")]
pub async fn price(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(http = "GET /quote/{qty")]
pub async fn cost(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
