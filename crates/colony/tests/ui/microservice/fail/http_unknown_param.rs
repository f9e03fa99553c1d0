use colony::{ServiceError, microservice};

#[microservice(http = "GET /quote/{item}/{qty}")]
pub async fn quote(sku: String, qty: u32) -> Result<u32, ServiceError> {
    let _ = sku;
    Ok(qty)
}

fn main() {}
