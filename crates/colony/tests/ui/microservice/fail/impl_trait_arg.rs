use colony::{ServiceError, microservice};

#[microservice]
pub async fn show(value: impl std::fmt::Display) -> Result<String, ServiceError> {
    Ok(value.to_string())
}

fn main() {}
