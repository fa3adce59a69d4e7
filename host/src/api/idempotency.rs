//! Idempotent produce: a request with an `Idempotency-Key` header that was
//! already answered gets the first answer again instead of appending twice.
//!
//! Answers are kept in memory, bounded to the most recent keys (per topic);
//! a concurrent duplicate waits for the first to finish, and a key whose
//! first attempt failed may be retried. A request whose records all go to
//! one partition also writes its key into its first record's
//! [`MARK_HEADER`], in the same append as the records, so the key survives
//! a crash: the first keyed produce to a topic after a restart scans the
//! tail of each of its partitions (the last [`RECOVER_RECORDS`]) and
//! relearns the answers. A request spread over several partitions is
//! appended partition by partition, so it is not marked; its key lives in
//! memory only.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::ApiError;
use super::backend::Rapids;
use crate::batch::{Record, RecordBatch};

/// Record header holding `{"key": …, "records": n, "batch": bool}` on the
/// first record of a marked request.
pub(crate) const MARK_HEADER: &str = "weir-idempotency";

/// How far back a restarted server looks for marked requests, per partition.
pub(crate) const RECOVER_RECORDS: u64 = 100_000;

type Slot = Arc<OnceCell<Value>>;

pub(crate) struct IdempotencyCache {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Topics whose partitions' tails were scanned for marks since start.
    recovered: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<(String, String), Slot>,
    order: VecDeque<(String, String)>,
}

/// The mark for a request of `records` records with idempotency key `key`.
pub(crate) fn mark(key: &str, records: usize, batch: bool) -> (String, Vec<u8>) {
    let value = json!({"key": key, "records": records, "batch": batch});
    (MARK_HEADER.to_owned(), value.to_string().into_bytes())
}

/// The answer a marked request got: what `produce` returns for `records`
/// records at `partition` from `offset`.
pub(crate) fn answer(topic: &str, partition: u32, offset: u64, records: u64, batch: bool) -> Value {
    if batch {
        let placed: Vec<Value> = (offset..offset + records)
            .map(|o| json!({"partition": partition, "offset": o}))
            .collect();
        json!({"topic": topic, "records": placed})
    } else {
        json!({"topic": topic, "partition": partition, "offset": offset})
    }
}

/// Whether `record` carries the reserved mark header (clients may not set it).
pub(crate) fn carries_mark(record: &Record) -> bool {
    record
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(MARK_HEADER))
}

/// `(key, answer)` for every marked request in `batch` of `topic`/`partition`.
fn marks_in(topic: &str, partition: u32, batch: &RecordBatch) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for i in 0..batch.len() {
        for (name, value) in batch.headers(i) {
            if name != MARK_HEADER.as_bytes() {
                continue;
            }
            let Ok(mark) = serde_json::from_slice::<Value>(value) else {
                continue;
            };
            if let (Some(key), Some(records), Some(is_batch)) = (
                mark["key"].as_str(),
                mark["records"].as_u64(),
                mark["batch"].as_bool(),
            ) {
                let offset = batch.offsets[i];
                found.push((
                    key.to_owned(),
                    answer(topic, partition, offset, records, is_batch),
                ));
            }
        }
    }
    found
}

/// Every marked request in the last [`RECOVER_RECORDS`] of each partition of `topic`.
fn scan_marks(rapids: &dyn Rapids, topic: &str) -> Result<Vec<(String, Value)>, ApiError> {
    let view = rapids.topic(topic)?;
    let mut found = Vec::new();
    for (partition, p) in view.partitions.iter().enumerate() {
        let partition = partition as u32;
        let mut offset = p
            .end_offset
            .saturating_sub(RECOVER_RECORDS)
            .max(p.start_offset);
        while offset < p.end_offset {
            let batch = match rapids.read(topic, partition, offset, 10_000, 8 << 20) {
                Ok(b) => b,
                // Retention moved the start meanwhile: start again from it.
                Err(_) => {
                    let start = rapids.topic(topic)?.partitions[partition as usize].start_offset;
                    if start <= offset {
                        break;
                    }
                    offset = start;
                    continue;
                }
            };
            let Some(last) = batch.offsets.last() else {
                break;
            };
            found.extend(marks_in(topic, partition, &batch));
            offset = last + 1;
        }
    }
    Ok(found)
}

impl IdempotencyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        IdempotencyCache {
            capacity,
            inner: Mutex::new(Inner::default()),
            recovered: Mutex::new(HashMap::new()),
        }
    }

    /// Relearn the marked requests of `topic` once per process (before its
    /// first keyed produce is answered).
    async fn recover(&self, rapids: &Arc<dyn Rapids>, topic: &str) -> Result<(), ApiError> {
        let once = self
            .recovered
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .clone();
        once.get_or_try_init(|| async {
            let (rapids, t) = (rapids.clone(), topic.to_owned());
            let found = super::blocking(move || scan_marks(&*rapids, &t)).await?;
            for (key, answer) in found {
                // A later append of the same key cannot exist (it would have
                // been answered from the first), so the first found wins.
                let _ = self.slot(topic, &key).set(answer);
            }
            Ok::<(), ApiError>(())
        })
        .await?;
        Ok(())
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
    pub(crate) async fn run<F>(
        &self,
        rapids: &Arc<dyn Rapids>,
        topic: &str,
        key: &str,
        produce: F,
    ) -> Result<(Value, bool), ApiError>
    where
        F: Future<Output = Result<Value, ApiError>>,
    {
        self.recover(rapids, topic).await?;
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
    use crate::api::backend::TopicSpec;
    use crate::api::testing::MemoryRapids;

    fn rapids(topics: &[(&str, u32)]) -> Arc<dyn Rapids> {
        let rapids = MemoryRapids::default();
        for (name, partitions) in topics {
            rapids
                .create_topic(&TopicSpec {
                    name: (*name).to_owned(),
                    partitions: *partitions,
                    retention_ms: None,
                    retention_bytes: None,
                    compact: false,
                })
                .unwrap();
        }
        Arc::new(rapids)
    }

    #[tokio::test]
    async fn replays_first_answer_and_retries_failures() {
        let r = rapids(&[("t", 1), ("u", 1)]);
        let cache = IdempotencyCache::new(2);
        let (a, replayed) = cache
            .run(&r, "t", "k", async { Ok(json!(1)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (json!(1), false));
        let (a, replayed) = cache
            .run(&r, "t", "k", async { Ok(json!(2)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (json!(1), true));
        // Another topic is another key space.
        let (a, _) = cache
            .run(&r, "u", "k", async { Ok(json!(3)) })
            .await
            .unwrap();
        assert_eq!(a, json!(3));
        // A failed attempt leaves the key free.
        let failed = cache
            .run(&r, "t", "f", async {
                Err(ApiError::bad_request("x", "boom"))
            })
            .await;
        assert!(failed.is_err());
        let (a, replayed) = cache
            .run(&r, "t", "f", async { Ok(json!(4)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (json!(4), false));
        // Capacity bounds memory: the oldest keys are forgotten.
        let (a, _) = cache
            .run(&r, "t", "k", async { Ok(json!(5)) })
            .await
            .unwrap();
        assert_eq!(a, json!(5));
    }

    #[tokio::test]
    async fn a_new_process_relearns_marked_answers_from_the_log() {
        let r = rapids(&[("t", 2)]);
        let record = |v: &str, mark: Option<(String, Vec<u8>)>| Record {
            key: vec![],
            value: v.as_bytes().to_vec(),
            headers: mark.into_iter().collect(),
            timestamp: 0,
        };
        r.append("t", 1, &[record("x", None)]).unwrap();
        // A batch of two marked at partition 1 offset 1, a single at partition 0.
        r.append(
            "t",
            1,
            &[
                record("a", Some(mark("batch-key", 2, true))),
                record("b", None),
            ],
        )
        .unwrap();
        r.append("t", 0, &[record("c", Some(mark("single-key", 1, false)))])
            .unwrap();
        // A forged mark that is not JSON is ignored.
        r.append(
            "t",
            0,
            &[record("d", Some((MARK_HEADER.into(), b"junk".to_vec())))],
        )
        .unwrap();
        let cache = IdempotencyCache::new(100);
        let (a, replayed) = cache
            .run(&r, "t", "batch-key", async { Ok(json!("appended again")) })
            .await
            .unwrap();
        assert!(replayed);
        assert_eq!(a, answer("t", 1, 1, 2, true));
        assert_eq!(
            a,
            json!({"topic": "t", "records": [{"partition": 1, "offset": 1}, {"partition": 1, "offset": 2}]})
        );
        let (a, replayed) = cache
            .run(&r, "t", "single-key", async { Ok(json!("appended again")) })
            .await
            .unwrap();
        assert_eq!(
            (a, replayed),
            (json!({"topic": "t", "partition": 0, "offset": 0}), true)
        );
        let (_, replayed) = cache
            .run(&r, "t", "new-key", async { Ok(json!("appended")) })
            .await
            .unwrap();
        assert!(!replayed);
    }
}
