use colony::{ServiceError, microservice};

// `mut` belongs to the body: callers see `fn(items: Vec<u32>)`.
#[microservice]
pub async fn sorted(mut items: Vec<u32>, r#type: String) -> Result<Vec<u32>, ServiceError> {
    items.sort_unstable();
    let _ = r#type;
    Ok(items)
}

fn main() {
    let entry = colony::__private::SERVICES
        .iter()
        .find(|e| e.name.ends_with("::sorted"));
    // Raw identifiers are sent by their plain name.
    assert_eq!(entry.map(|e| e.arg_names), Some(&["items", "type"][..]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let items = rt.block_on(sorted(vec![3, 1, 2], String::new()));
    assert_eq!(items, Ok(vec![1, 2, 3]));
}
