use colony::microservice;

#[microservice]
pub async fn quote(qty: u32) -> colony::Result<u64> {
    Ok(u64::from(qty))
}

fn main() {}
