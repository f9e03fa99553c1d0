use colony::{ServiceError, microservice};

#[microservice(threads = 0)]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
