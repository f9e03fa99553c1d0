use colony::{ServiceError, microservice};

#[microservice(min_instances = 5, max_instances = 2)]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(max_instances = 0)]
pub async fn price(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(min_instances = -1)]
pub async fn cost(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
