use colony::{ServiceError, microservice};

#[microservice(high_watermark = 0.5, low_watermark = 0.7)]
pub async fn quote(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(high_watermark = 0.0)]
pub async fn price(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(low_watermark = "low")]
pub async fn cost(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

#[microservice(low_watermark = -0.5)]
pub async fn fee(qty: u32) -> Result<u32, ServiceError> {
    Ok(qty)
}

fn main() {}
