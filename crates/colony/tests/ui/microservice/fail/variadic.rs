use colony::{ServiceError, microservice};

#[microservice]
pub async fn quote(qty: u32, ...) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
