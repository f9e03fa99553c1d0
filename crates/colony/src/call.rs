//! placeholder
use crate::service::Service;

/// Call service `S`.
pub async fn invoke<S: Service>(args: S::Args) -> Result<S::Ok, S::Err> {
    S::run(args).await
}
