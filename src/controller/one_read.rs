//! One registry read at a time per key: reconciles that miss a cache together (fifty new builds of
//! one base image) wait for the first read and find what it kept, instead of each reading the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct OneRead(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl OneRead {
    /// Held while `key` is read: the caller looks in its cache again once it has it.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // Keys no one holds or waits for go.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_reader_of_a_key_waits_and_other_keys_do_not() {
        let reads = OneRead::default();
        let first = reads.lock("a").await;
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), reads.lock("a")).await.is_err());
        let _other = reads.lock("b").await;
        drop(first);
        let _again = reads.lock("a").await;
    }
}
