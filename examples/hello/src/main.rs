//! # hello — two services that call each other
//!
//! ```text
//!   caller ──> hello::greeter::greet ──> hello::names::normalize
//!                                   └──> hello::names::count_letters
//! ```
//!
//! Run every service in one process and call one from a script:
//!
//! ```sh
//! cargo run -p hello -- call hello::greeter::greet '{"name": "ada lovelace"}'
//! ```
//!
//! Or as two processes, each hosting some of the services:
//!
//! ```sh
//! cargo build -p hello
//! target/debug/hello serve --service hello::names::normalize,hello::names::count_letters --listen 127.0.0.1:7001 &
//! target/debug/hello serve --service hello::greeter::greet --listen 127.0.0.1:7000 --peer 'hello::names::*=127.0.0.1:7001' &
//! target/debug/hello call hello::greeter::greet '{"name": "ada lovelace"}' --peer hello::greeter::greet=127.0.0.1:7000
//! ```

// Services are `pub`, as they would be in a library crate.
#![allow(unreachable_pub)]

/// The front service.
pub mod greeter {
    use colony::{ServiceError, microservice};

    /// Greets `name`, spelled properly, with the number of letters in it.
    #[microservice(exposed, http = "GET /hello/{name}")]
    pub async fn greet(name: String) -> Result<String, ServiceError> {
        // Two calls to another service: plain function calls, wherever it runs.
        let proper = crate::names::normalize(name).await?;
        let letters = crate::names::count_letters(proper.clone()).await?;
        Ok(format!("Hello, {proper}! ({letters} letters)"))
    }
}

/// Services about names.
pub mod names {
    use colony::{ServiceError, microservice};

    /// Capitalizes each word and collapses runs of spaces: `"ada  lovelace"` → `"Ada Lovelace"`.
    #[microservice]
    pub async fn normalize(name: String) -> Result<String, ServiceError> {
        let words: Vec<String> = name
            .split_whitespace()
            .map(|w| {
                let mut chars = w.chars();
                match chars.next() {
                    Some(first) => first
                        .to_uppercase()
                        .chain(chars.flat_map(char::to_lowercase))
                        .collect(),
                    None => String::new(),
                }
            })
            .collect();
        if words.is_empty() {
            return Err(ServiceError::invalid_argument("the name is empty"));
        }
        Ok(words.join(" "))
    }

    /// Counts the letters in `name`.
    #[microservice]
    pub async fn count_letters(name: String) -> Result<u32, ServiceError> {
        Ok(name.chars().filter(|c| c.is_alphabetic()).count() as u32)
    }
}

fn main() -> colony::Result<()> {
    colony::main()
}

#[cfg(test)]
mod tests {
    /// With no runtime set up, a service is a plain async function.
    #[tokio::test]
    async fn greets_in_process() {
        let greeting = crate::greeter::greet("ada  LOVELACE".into()).await;
        assert_eq!(greeting.as_deref(), Ok("Hello, Ada Lovelace! (11 letters)"));
    }
}
