use colony::{ServiceError, microservice};

#[microservice]
pub async fn shout(text: &str) -> Result<String, ServiceError> {
    Ok(text.to_uppercase())
}

fn main() {}
