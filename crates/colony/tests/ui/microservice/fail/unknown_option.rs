use colony::{ServiceError, microservice};

#[microservice(expose)]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(replicas = 3)]
pub async fn price(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
