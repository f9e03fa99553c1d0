use colony::{ServiceError, microservice};

pub struct Shop;

impl Shop {
    #[microservice]
    pub async fn quote(&self, qty: u32) -> Result<u32, ServiceError> {
        Ok(qty)
    }
}

fn main() {}
