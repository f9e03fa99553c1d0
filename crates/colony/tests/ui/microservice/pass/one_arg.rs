use colony::{ServiceError, microservice};

#[microservice]
pub async fn double(n: i64) -> Result<i64, ServiceError> {
    Ok(n * 2)
}

fn main() {
    let entry = colony::__private::SERVICES
        .iter()
        .find(|e| e.name.ends_with("::double"));
    assert_eq!(entry.map(|e| e.arg_names), Some(&["n"][..]));
}
