use colony::microservice;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct MyError(String);

#[microservice]
pub async fn quote(qty: u32) -> Result<u64, MyError> {
    Ok(u64::from(qty))
}

fn main() {}
