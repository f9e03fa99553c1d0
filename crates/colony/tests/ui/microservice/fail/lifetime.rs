use colony::{ServiceError, microservice};

#[microservice]
pub async fn echo<'a>(value: std::borrow::Cow<'a, str>) -> Result<String, ServiceError> {
    Ok(value.into_owned())
}

fn main() {}
