//! # guestbook — state that survives any instance's death
//!
//! ```text
//!   HTTP ──> guestbook::book::sign ────┐
//!   HTTP ──> guestbook::book::entries ─┴──> colony::store::serve (the store: one instance, on disk)
//! ```
//!
//! The `store` feature of `colony` adds the built-in store service; `colony up` runs it as
//! one more instance, with its file in the app's `.colony/`, and `colony deploy k8s` makes
//! it a StatefulSet with a volume.
//!
//! ```sh
//! colony up examples/guestbook
//! curl -d '{"name": "ada", "message": "hello"}' localhost:8080/sign
//! curl localhost:8080/entries?limit=10
//! ```

// Services are `pub`, as they would be in a library crate.
#![allow(unreachable_pub)]

/// The guestbook's services.
pub mod book {
    use colony::store::{Store, Table};
    use colony::{ServiceError, microservice};
    use serde::{Deserialize, Serialize};

    /// One signature.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Entry {
        /// Its place in the book, from 1.
        pub number: u64,
        /// Who signed.
        pub name: String,
        /// What they wrote.
        pub message: String,
    }

    /// The number of entries so far, under the key `()`.
    fn count() -> Table<(), u64> {
        Store::app().table("count")
    }

    /// The entries, by number. An entry never changes once written, so reading it through
    /// the cache tier is always right.
    fn entries_table() -> Table<u64, Entry> {
        Store::app().table("entries")
    }

    /// Signs the book: the entry gets the next number, which no other signature gets even
    /// when many sign at once (the count is updated with compare-and-swap).
    #[microservice(exposed, http = "POST /sign")]
    pub async fn sign(name: String, message: String) -> Result<Entry, ServiceError> {
        if name.trim().is_empty() {
            return Err(ServiceError::invalid_argument(
                "`name` is empty: say who signs",
            ));
        }
        if message.len() > 1000 {
            return Err(ServiceError::invalid_argument(
                "`message` is over 1000 bytes: keep it shorter",
            ));
        }
        let number = count()
            .update(&(), |n| n.copied().unwrap_or(0) + 1)
            .await?
            .value;
        let entry = Entry {
            number,
            name,
            message,
        };
        entries_table().insert(&number, &entry).await?;
        Ok(entry)
    }

    /// The latest entries, newest first (`limit`: 20 unless given, at most 100).
    #[microservice(exposed, http = "GET /entries")]
    pub async fn entries(limit: Option<u32>) -> Result<Vec<Entry>, ServiceError> {
        let limit = u64::from(limit.unwrap_or(20).min(100));
        let last = count().get(&()).await?.map_or(0, |c| c.value);
        let mut found = Vec::new();
        for number in (1..=last).rev().take(limit as usize) {
            // A number counted but not yet written (its signer is still at it, or died
            // between the two writes) is skipped.
            if let Some(entry) = entries_table().get_cached(&number).await? {
                found.push(entry.value);
            }
        }
        Ok(found)
    }
}

fn main() -> colony::Result<()> {
    colony::main()
}

#[cfg(test)]
mod tests {
    use crate::book::{entries, sign};

    /// In one process, with the store in memory, the services are plain async functions.
    #[tokio::test]
    async fn signatures_are_numbered_and_listed_newest_first() {
        assert!(colony::testing::store_in_memory());
        let first = sign("ada".into(), "hello".into()).await.expect("signs");
        let second = sign("grace".into(), "hi".into()).await.expect("signs");
        assert_eq!((first.number, second.number), (1, 2));
        let listed = entries(None).await.expect("lists");
        assert_eq!(listed, vec![second, first]);
        assert!(sign(" ".into(), "x".into()).await.is_err());
    }
}
