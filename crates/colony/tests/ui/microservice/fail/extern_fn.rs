use colony::{ServiceError, microservice};

#[microservice]
pub async extern "C" fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
