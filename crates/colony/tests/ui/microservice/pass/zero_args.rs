use colony::{ServiceError, microservice};

#[microservice]
pub async fn health() -> Result<String, ServiceError> {
    Ok("ok".to_owned())
}

fn main() {
    let entry = colony::__private::SERVICES
        .iter()
        .find(|e| e.name.ends_with("::health"));
    assert_eq!(entry.map(|e| e.arg_names), Some(&[][..]));
}
