//! Idempotent produce: a request with an `Idempotency-Key` header that was
//! already answered gets the first answer again instead of appending twice.
//!
//! A keyed request is appended partition by partition, one *part* per
//! partition, and the first record of each part carries the key in its
//! [`MARK_HEADER`] (with the request's record count, the number of parts
//! and the part's record count), written in the same append as the part.
//! So the log itself says which parts of a request exist:
//!
//! - Answers and the parts written so far are kept in memory, bounded to
//!   the most recent keys; a concurrent duplicate waits for the first to
//!   finish.
//! - A request that failed between parts keeps its written parts: its
//!   retry appends exactly the parts that are missing and answers with the
//!   offsets of the first attempt.
//! - After a restart the first keyed produce to a topic scans the tail of
//!   each of its partitions (the last [`RECOVER_RECORDS`]) and relearns
//!   answers and parts; a retry after a kill -9 therefore appends exactly
//!   the missing parts too.
//!
//! Placement must be the same on a retry, so in a keyed request the records
//! without a key (and without a forced partition) all go to one partition
//! chosen by the idempotency key, instead of round-robin. A retry whose
//! records do not fit the parts found (another body under the same key) is
//! refused with `idempotency_key_reused` and appends nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::ApiError;
use crate::batch::{Record, RecordBatch};
use crate::log::EventLog;

/// Record header holding `{"key", "records", "batch", "parts", "part_records"}`
/// on the first record of each part of a keyed request.
pub(crate) const MARK_HEADER: &str = "weir-idempotency";

/// How far back a restarted server looks for marked requests, per partition.
pub(crate) const RECOVER_RECORDS: u64 = 100_000;

/// One partition's part of a keyed request, as written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub first: u64,
    pub records: u64,
}

/// The parts of one keyed request already in the log, by partition.
pub(crate) type Written = Arc<Mutex<BTreeMap<u32, Part>>>;

/// What is known about one (topic, key).
#[derive(Default)]
struct Known {
    answer: Option<Value>,
    written: Written,
}

type Slot = Arc<tokio::sync::Mutex<Known>>;

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

/// The mark for one part (of `part_records` records) of a request of
/// `records` records in `parts` parts, under idempotency key `key`.
pub(crate) fn mark(
    key: &str,
    records: usize,
    batch: bool,
    parts: usize,
    part_records: usize,
) -> (String, Vec<u8>) {
    let value = json!({"key": key, "records": records, "batch": batch,
                       "parts": parts, "part_records": part_records});
    (MARK_HEADER.to_owned(), value.to_string().into_bytes())
}

/// The answer a request of one part got: what `produce` returns for
/// `records` records at `partition` from `offset`.
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

/// What a mark found in the log says.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    /// A request of one part: its whole answer.
    Answer(Value),
    /// One part of a request of several.
    Part(u32, Part),
}

/// `(key, what it says)` for every mark in `batch` of `topic`/`partition`.
fn marks_in(topic: &str, partition: u32, batch: &RecordBatch) -> Vec<(String, Found)> {
    let mut found = Vec::new();
    for i in 0..batch.len() {
        for (name, value) in batch.headers(i) {
            if name != MARK_HEADER.as_bytes() {
                continue;
            }
            let Ok(mark) = serde_json::from_slice::<Value>(value) else {
                continue;
            };
            let (Some(key), Some(records), Some(is_batch)) = (
                mark["key"].as_str(),
                mark["records"].as_u64(),
                mark["batch"].as_bool(),
            ) else {
                continue;
            };
            let offset = batch.offsets[i];
            // Marks written before requests had parts have one part.
            let parts = mark["parts"].as_u64().unwrap_or(1);
            let what = if parts <= 1 {
                Found::Answer(answer(topic, partition, offset, records, is_batch))
            } else {
                let Some(part_records) = mark["part_records"].as_u64() else {
                    continue;
                };
                Found::Part(
                    partition,
                    Part {
                        first: offset,
                        records: part_records,
                    },
                )
            };
            found.push((key.to_owned(), what));
        }
    }
    found
}

/// Every mark in the last [`RECOVER_RECORDS`] of each partition of `topic`.
fn scan_marks(log: &dyn EventLog, topic: &str) -> Result<Vec<(String, Found)>, ApiError> {
    let view = log.topic(topic)?;
    let mut found = Vec::new();
    for (partition, p) in view.partitions.iter().enumerate() {
        let partition = partition as u32;
        let mut offset = p
            .end_offset
            .saturating_sub(RECOVER_RECORDS)
            .max(p.start_offset);
        while offset < p.end_offset {
            let batch = match log.read(topic, partition, offset, 10_000, 8 << 20) {
                Ok(b) => b,
                // Retention moved the start meanwhile: start again from it.
                Err(_) => {
                    let start = log.start_offset(topic, partition)?;
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

/// Check that the parts already `written` fit a retry placed as
/// `groups` (partition → its records): same partitions, same counts.
pub(crate) fn check_retry(
    written: &BTreeMap<u32, Part>,
    groups: &BTreeMap<u32, usize>,
) -> Result<(), ApiError> {
    for (partition, part) in written {
        if groups.get(partition).copied() != Some(part.records as usize) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was used for another request: it wrote {} records to partition {partition}, this one would write {}",
                    part.records,
                    groups.get(partition).copied().unwrap_or(0)
                ),
            ));
        }
    }
    Ok(())
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
    async fn recover(&self, log: &Arc<dyn EventLog>, topic: &str) -> Result<(), ApiError> {
        let once = self
            .recovered
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .clone();
        once.get_or_try_init(|| async {
            let (log, t) = (log.clone(), topic.to_owned());
            let found = super::blocking(move || scan_marks(&*log, &t)).await?;
            for (key, what) in found {
                let slot = self.slot(topic, &key);
                let mut known = slot.lock().await;
                match what {
                    // A later append of the same key cannot exist (it would
                    // have been answered from the first): the first wins.
                    Found::Answer(answer) => {
                        known.answer.get_or_insert(answer);
                    }
                    Found::Part(partition, part) => {
                        known.written.lock().entry(partition).or_insert(part);
                    }
                }
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
    /// `produce` gets the parts already written (by an earlier attempt that
    /// failed, or before a crash), must append only the missing ones and
    /// record each part it appends, holding the lock on `Written` while it
    /// appends (an abandoned attempt may still be running). It answers
    /// whether it appended anything. Returns the answer and whether it was
    /// replayed (nothing appended by this call).
    pub(crate) async fn run<F, Fut>(
        &self,
        log: &Arc<dyn EventLog>,
        topic: &str,
        key: &str,
        produce: F,
    ) -> Result<(Value, bool), ApiError>
    where
        F: FnOnce(Written) -> Fut,
        Fut: Future<Output = Result<(Value, bool), ApiError>>,
    {
        self.recover(log, topic).await?;
        let slot = self.slot(topic, key);
        let mut known = slot.lock().await;
        if let Some(answer) = &known.answer {
            return Ok((answer.clone(), true));
        }
        let (answer, appended) = produce(known.written.clone()).await?;
        known.answer = Some(answer.clone());
        Ok((answer, !appended))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::log::{Log, LogConfig, TopicConfig};

    /// A real log on a temp dir (kept alive with it) with these topics.
    fn log_with(topics: &[(&str, u32)]) -> (tempfile::TempDir, Arc<dyn EventLog>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(LogConfig::new(dir.path().join("log"))).unwrap();
        for (name, partitions) in topics {
            log.create_topic(name, TopicConfig::with_partitions(*partitions))
                .unwrap();
        }
        (dir, Arc::new(log))
    }

    #[tokio::test]
    async fn replays_first_answer_and_retries_failures() {
        let (_dir, r) = log_with(&[("t", 1), ("u", 1)]);
        let cache = IdempotencyCache::new(2);
        let (a, replayed) = cache
            .run(&r, "t", "k", |_| async { Ok((json!(1), true)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (json!(1), false));
        let (a, replayed) = cache
            .run(&r, "t", "k", |_| async { Ok((json!(2), true)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (json!(1), true));
        // Another topic is another key space.
        let (a, _) = cache
            .run(&r, "u", "k", |_| async { Ok((json!(3), true)) })
            .await
            .unwrap();
        assert_eq!(a, json!(3));
        // A failed attempt leaves the key free.
        let failed = cache
            .run(&r, "t", "f", |_| async {
                Err(ApiError::bad_request("x", "boom"))
            })
            .await;
        assert!(failed.is_err());
        let (a, replayed) = cache
            .run(&r, "t", "f", |_| async { Ok((json!(4), true)) })
            .await
            .unwrap();
        assert_eq!((a, replayed), (json!(4), false));
        // Capacity bounds memory: the oldest keys are forgotten.
        let (a, _) = cache
            .run(&r, "t", "k", |_| async { Ok((json!(5), true)) })
            .await
            .unwrap();
        assert_eq!(a, json!(5));
    }

    #[tokio::test]
    async fn a_new_process_relearns_marked_answers_from_the_log() {
        let (_dir, r) = log_with(&[("t", 2)]);
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
                record("a", Some(mark("batch-key", 2, true, 1, 2))),
                record("b", None),
            ],
        )
        .unwrap();
        r.append(
            "t",
            0,
            &[record("c", Some(mark("single-key", 1, false, 1, 1)))],
        )
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
            .run(&r, "t", "batch-key", |_| async {
                Ok((json!("appended again"), true))
            })
            .await
            .unwrap();
        assert!(replayed);
        assert_eq!(a, answer("t", 1, 1, 2, true));
        assert_eq!(
            a,
            json!({"topic": "t", "records": [{"partition": 1, "offset": 1}, {"partition": 1, "offset": 2}]})
        );
        let (a, replayed) = cache
            .run(&r, "t", "single-key", |_| async {
                Ok((json!("appended again"), true))
            })
            .await
            .unwrap();
        assert_eq!(
            (a, replayed),
            (json!({"topic": "t", "partition": 0, "offset": 0}), true)
        );
        let (_, replayed) = cache
            .run(&r, "t", "new-key", |_| async {
                Ok((json!("appended"), true))
            })
            .await
            .unwrap();
        assert!(!replayed);
    }
}
