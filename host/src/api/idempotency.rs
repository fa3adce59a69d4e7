//! Idempotent produce: a request with an `Idempotency-Key` header that was
//! already answered gets the first answer again instead of appending twice.
//!
//! The window is this process's memory, bounded to the most recent keys
//! (per topic); a concurrent duplicate waits for the first to finish. A key
//! whose first attempt failed may be retried.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

type Slot = Arc<OnceCell<serde_json::Value>>;

pub(crate) struct IdempotencyCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<(String, String), Slot>,
    order: VecDeque<(String, String)>,
}

impl IdempotencyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        IdempotencyCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn slot(&self, topic: &str, key: &str) -> Slot {
        let mut inner = self.inner.lock();
        let id = (topic.to_owned(), key.to_owned());
        if let Some(slot) = inner.slots.get(&id) {
            return slot.clone();
        }
        let slot = Slot::default();
        inner.slots.insert(id.clone(), slot.clone());
        inner.order.push_back(id);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.slots.remove(&old);
            }
        }
        slot
    }

    /// Run `produce` once per (topic, key); later calls get its answer.
    /// Returns the answer and whether it was replayed.
    pub(crate) async fn run<F, E>(
        &self,
        topic: &str,
        key: &str,
        produce: F,
    ) -> Result<(serde_json::Value, bool), E>
    where
        F: Future<Output = Result<serde_json::Value, E>>,
    {
        let slot = self.slot(topic, key);
        let mut ran = false;
        let answer = slot
            .get_or_try_init(|| {
                ran = true;
                produce
            })
            .await?;
        Ok((answer.clone(), !ran))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replays_first_answer_and_retries_failures() {
        let cache = IdempotencyCache::new(2);
        let (a, replayed) = cache
            .run::<_, ()>("t", "k", async { Ok(serde_json::json!(1)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (serde_json::json!(1), false));
        let (a, replayed) = cache
            .run::<_, ()>("t", "k", async { Ok(serde_json::json!(2)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (serde_json::json!(1), true));
        // Another topic is another key space.
        let (a, _) = cache
            .run::<_, ()>("u", "k", async { Ok(serde_json::json!(3)) })
            .await
            .unwrap();
        assert_eq!(a, serde_json::json!(3));
        // A failed attempt leaves the key free.
        assert!(
            cache
                .run("t", "f", async { Err::<serde_json::Value, _>("boom") })
                .await
                .is_err()
        );
        let (a, replayed) = cache
            .run::<_, ()>("t", "f", async { Ok(serde_json::json!(4)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (serde_json::json!(4), false));
        // Capacity bounds memory: the oldest keys are forgotten.
        let (a, _) = cache
            .run::<_, ()>("t", "k", async { Ok(serde_json::json!(5)) })
            .await
            .unwrap();
        assert_eq!(a, serde_json::json!(5));
    }
}
