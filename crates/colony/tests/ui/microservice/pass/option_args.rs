use colony::{ServiceError, microservice};

#[microservice]
pub async fn greet(
    name: Option<String>,
    times: Option<u8>,
) -> Result<Option<String>, ServiceError> {
    Ok(name.map(|n| n.repeat(usize::from(times.unwrap_or(1)))))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    assert_eq!(
        rt.block_on(greet(Some("hi".into()), Some(2))),
        Ok(Some("hihi".into()))
    );
    assert_eq!(rt.block_on(greet(None, None)), Ok(None));
}
