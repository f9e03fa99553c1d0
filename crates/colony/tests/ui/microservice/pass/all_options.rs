use colony::{ServiceError, microservice};

#[microservice(
    exposed,
    http = "PUT /carts/{cart}/items/{sku}",
    min_instances = 0,
    max_instances = 20,
    high_watermark = 0.8,
    low_watermark = 0.2,
    threads = 4,
    blocking,
    timeout = "1.5s"
)]
pub async fn add_item(cart: u64, sku: String, qty: u32) -> Result<u32, ServiceError> {
    let _ = (cart, sku);
    Ok(qty)
}

// Flags may be spelled out; integers are accepted as watermarks.
#[microservice(exposed = false, blocking = false, high_watermark = 2, timeout = "1m")]
async fn quiet() -> Result<(), ServiceError> {
    Ok(())
}

fn find(suffix: &str) -> &'static colony::__private::ServiceEntry {
    colony::__private::SERVICES
        .iter()
        .find(|e| e.name.ends_with(suffix))
        .expect("the service is registered")
}

fn main() {
    let o = find("::add_item").options;
    assert!(o.exposed);
    assert_eq!(o.http, Some("PUT /carts/{cart}/items/{sku}"));
    assert_eq!(o.min_instances, Some(0));
    assert_eq!(o.max_instances, Some(20));
    assert_eq!(o.high_watermark, Some(0.8));
    assert_eq!(o.low_watermark, Some(0.2));
    assert_eq!(o.threads, Some(4));
    assert!(o.blocking);
    assert_eq!(o.timeout_ms, Some(1_500));

    let o = find("::quiet").options;
    assert!(!o.exposed);
    assert!(!o.blocking);
    assert_eq!(o.high_watermark, Some(2.0));
    assert_eq!(o.timeout_ms, Some(60_000));
    assert_eq!(o.http, None);
}
