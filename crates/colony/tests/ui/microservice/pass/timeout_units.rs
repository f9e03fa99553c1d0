use colony::{ServiceError, microservice};

// `timeout` is read by Colony's one duration grammar: hours, days and compounds too.
#[microservice(timeout = "1h")]
async fn hourly() -> Result<(), ServiceError> {
    Ok(())
}

#[microservice(timeout = "1d")]
async fn daily() -> Result<(), ServiceError> {
    Ok(())
}

#[microservice(timeout = "1m30s")]
async fn compound() -> Result<(), ServiceError> {
    Ok(())
}

fn timeout_ms(suffix: &str) -> Option<u64> {
    colony::__private::SERVICES
        .iter()
        .find(|e| e.name.ends_with(suffix))
        .expect("the service is registered")
        .options
        .timeout_ms
}

fn main() {
    assert_eq!(timeout_ms("::hourly"), Some(3_600_000));
    assert_eq!(timeout_ms("::daily"), Some(86_400_000));
    assert_eq!(timeout_ms("::compound"), Some(90_000));
}
