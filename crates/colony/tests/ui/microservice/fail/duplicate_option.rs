use colony::{ServiceError, microservice};

#[microservice(threads = 2, exposed, threads = 4)]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
