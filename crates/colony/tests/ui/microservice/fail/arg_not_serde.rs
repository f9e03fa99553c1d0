use colony::{ServiceError, microservice};

pub struct Cart {
    pub items: Vec<String>,
}

#[microservice]
pub async fn checkout(user: String, cart: Cart) -> Result<u64, ServiceError> {
    let _ = user;
    Ok(cart.items.len() as u64)
}

fn main() {}
