use colony::{ServiceError, microservice};

#[microservice]
pub fn quote(sku: String) -> Result<u64, ServiceError> {
    Ok(sku.len() as u64)
}

fn main() {}
