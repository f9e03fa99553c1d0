use colony::{ServiceError, microservice};

#[microservice(http = "FETCH /quote")]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
