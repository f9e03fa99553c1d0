use colony::{ServiceError, microservice};

#[microservice]
pub async fn add((a, b): (u32, u32)) -> Result<u32, ServiceError> {
    Ok(a + b)
}

fn main() {}
