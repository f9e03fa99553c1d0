use colony::{CallError, microservice};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum QuoteError {
    UnknownSku(String),
    Unavailable(String),
}

impl From<CallError> for QuoteError {
    fn from(err: CallError) -> Self {
        QuoteError::Unavailable(err.to_string())
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub cents: u64,
}

type Result<T, E> = std::result::Result<T, E>;

/// A user error type and a user `Result` alias with both parameters.
#[microservice]
pub async fn quote(sku: String) -> Result<Quote, QuoteError> {
    match sku.as_str() {
        "a1" => Ok(Quote { cents: 250 }),
        _ => Err(QuoteError::UnknownSku(sku)),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    assert_eq!(rt.block_on(quote("a1".into())), Ok(Quote { cents: 250 }));
    assert_eq!(
        rt.block_on(quote("zz".into())),
        Err(QuoteError::UnknownSku("zz".into()))
    );
}
