use colony::{ServiceError, microservice};

pub struct Receipt {
    pub total: u64,
}

#[microservice]
pub async fn checkout(total: u64) -> Result<Receipt, ServiceError> {
    Ok(Receipt { total })
}

fn main() {}
