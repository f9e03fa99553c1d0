//! Calling a service with no Colony runtime set up (as a unit test does) runs its body
//! in-process.
use colony::{ErrorKind, ServiceError, microservice};

#[microservice]
pub async fn divide(a: u32, b: u32) -> Result<u32, ServiceError> {
    a.checked_div(b)
        .ok_or_else(|| ServiceError::new(ErrorKind::InvalidArgument, "division by zero"))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert_eq!(rt.block_on(divide(7, 2)), Ok(3));
    assert!(rt.block_on(divide(1, 0)).is_err());
}
