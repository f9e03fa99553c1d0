use colony::{ServiceError, microservice};

#[microservice]
pub async fn ignore(_: u32) -> Result<(), ServiceError> {
    Ok(())
}

fn main() {}
