use colony::{ServiceError, microservice};

#[microservice]
pub const async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
