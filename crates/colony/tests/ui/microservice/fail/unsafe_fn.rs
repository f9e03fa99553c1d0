use colony::{ServiceError, microservice};

#[microservice]
pub async unsafe fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
