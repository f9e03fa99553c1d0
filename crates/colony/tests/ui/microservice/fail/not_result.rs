use colony::microservice;

#[microservice]
pub async fn quote(qty: u32) -> u64 {
    u64::from(qty)
}

fn main() {}
