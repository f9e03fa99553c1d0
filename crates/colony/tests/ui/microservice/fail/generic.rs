use colony::{ServiceError, microservice};

#[microservice]
pub async fn echo<T: serde::Serialize>(value: T) -> Result<T, ServiceError> {
    Ok(value)
}

fn main() {}
