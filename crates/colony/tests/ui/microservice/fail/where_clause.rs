use colony::{ServiceError, microservice};

#[microservice]
pub async fn echo(value: String) -> Result<String, ServiceError>
where
    String: Clone,
{
    Ok(value)
}

fn main() {}
