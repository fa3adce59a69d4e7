//! Idempotent produce: a request with an `Idempotency-Key` header that was
//! already answered gets the first answer again instead of appending twice.
//!
//! A keyed request is appended partition by partition, one *part* per
//! partition, and the first record of each part carries the key in its
//! [`MARK_HEADER`] (with the request's record count, the number of parts
//! and the part's record count), written in the same append as the part.
//! So the log itself says which parts of a request exist:
//!
//! - Answers ([`Placement`]s: runs of offsets, not JSON) and the parts
//!   written so far are kept in memory for the most recent keys, within a
//!   byte budget (`weir_idempotency_cache_bytes` reports its use); a
//!   concurrent duplicate waits for the first to finish.
//! - Keys belong to one incarnation of a topic: after the topic is deleted
//!   and created again, a key used before is a new key.
//! - A request that failed between parts keeps its written parts: its
//!   retry appends exactly the parts that are missing and answers with the
//!   offsets of the first attempt.
//! - After a restart the first keyed produce to a topic scans the tail of
//!   each of its partitions (the last [`RECOVER_RECORDS`]) and relearns
//!   answers and parts; a retry after a kill -9 therefore appends exactly
//!   the missing parts too.
//!
//! - In cluster mode the hosts agree on keys through the cluster
//!   (`cluster::produce_keys`): before appending, a host claims the key
//!   there (a duplicate through another host waits for it), touches the
//!   claim before each further part, and marks it done with its parts, so a
//!   retry through any host appends exactly the missing parts and answers
//!   the first attempt's offsets. A host taking over a dead writer's
//!   request looks for the parts it appended in the log's marks.
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
use crate::cluster::produce_keys::{Claim, Claimed, KeyError, ProduceKeys, SharedPart};
use crate::log::{EventLog, TopicMeta};

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

/// The parts of one keyed request already in the log, and (in cluster
/// mode) this host's claim on writing the rest.
pub(crate) type Written = Arc<Mutex<Parts>>;

#[derive(Default)]
pub(crate) struct Parts {
    by_partition: BTreeMap<u32, Part>,
    /// Answered already (through another host): nothing may be appended.
    done: bool,
    /// Cluster mode: this host's claim on the request.
    claim: Option<SharedClaim>,
}

struct SharedClaim {
    keys: Arc<ProduceKeys>,
    claim: Claim,
    /// Parts this host appended under the claim.
    appended: usize,
}

impl Parts {
    /// The part written to `partition`, if any.
    pub(crate) fn get(&self, partition: u32) -> Option<Part> {
        self.by_partition.get(&partition).copied()
    }

    /// Check that the parts already written fit a retry placed as
    /// `groups` (partition → its records): same partitions, same counts
    /// (and none more once the request was answered).
    pub(crate) fn check_retry(&self, groups: &BTreeMap<u32, usize>) -> Result<(), ApiError> {
        let reused = |partition: u32, wrote: u64, would: usize| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was used for another request: it wrote {wrote} records to partition {partition}, this one would write {would}"
                ),
            )
        };
        for (partition, part) in &self.by_partition {
            let would = groups.get(partition).copied().unwrap_or(0);
            if would as u64 != part.records {
                return Err(reused(*partition, part.records, would));
            }
        }
        if self.done
            && let Some((partition, would)) = groups
                .iter()
                .find(|(p, _)| !self.by_partition.contains_key(p))
        {
            return Err(reused(*partition, 0, *would));
        }
        Ok(())
    }

    /// Before appending a part: in cluster mode, make sure this host
    /// still writes the request (the claim is touched, recording the parts
    /// so far, before every part after its first).
    pub(crate) fn before_append(&mut self) -> Result<(), ApiError> {
        let parts = self.shared_parts();
        if let Some(shared) = &mut self.claim
            && shared.appended > 0
        {
            shared.keys.touch(&mut shared.claim, parts)?;
        }
        Ok(())
    }

    /// `part` was appended to `partition`.
    pub(crate) fn appended(&mut self, partition: u32, part: Part) {
        self.by_partition.insert(partition, part);
        if let Some(shared) = &mut self.claim {
            shared.appended += 1;
        }
    }

    fn shared_parts(&self) -> Vec<SharedPart> {
        self.by_partition
            .iter()
            .map(|(p, part)| (*p, part.first, part.records))
            .collect()
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Corrupt { .. } => ApiError::internal(e.to_string()),
            KeyError::TakenOver(_) | KeyError::Nats(_) => ApiError::unavailable(e.to_string()),
        }
    }
}

/// Consecutive records of a request in one partition at consecutive offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    partition: u32,
    first: u64,
    records: u64,
}

/// Where a produce request's records went, in request order, as runs of
/// consecutive offsets in one partition: its answer, kept compact (a
/// request of 50,000 records to one partition is one run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// A batch request (`{"records": [...]}`) rather than a single record.
    batch: bool,
    runs: Vec<Run>,
}

impl Placement {
    /// From each record's (partition, offset), in request order.
    pub(crate) fn new(batch: bool, placed: impl IntoIterator<Item = (u32, u64)>) -> Self {
        let mut runs: Vec<Run> = Vec::new();
        for (partition, offset) in placed {
            match runs.last_mut() {
                Some(run) if run.partition == partition && run.first + run.records == offset => {
                    run.records += 1;
                }
                _ => runs.push(Run {
                    partition,
                    first: offset,
                    records: 1,
                }),
            }
        }
        Placement { batch, runs }
    }

    /// `records` records at `partition` from `first`.
    pub(crate) fn contiguous(batch: bool, partition: u32, first: u64, records: u64) -> Self {
        Placement::new(batch, (first..first + records).map(|o| (partition, o)))
    }

    /// The JSON answer of `produce` on `topic`.
    pub(crate) fn answer(&self, topic: &str) -> Value {
        let mut placed = self
            .runs
            .iter()
            .flat_map(|r| (r.first..r.first + r.records).map(move |o| (r.partition, o)));
        if self.batch {
            let records: Vec<Value> = placed
                .map(|(p, o)| json!({"partition": p, "offset": o}))
                .collect();
            json!({"topic": topic, "records": records})
        } else {
            let (partition, offset) = placed.next().unwrap_or_default();
            json!({"topic": topic, "partition": partition, "offset": offset})
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.runs.len() * std::mem::size_of::<Run>()
    }
}

/// What is known about one key of one topic incarnation.
#[derive(Default)]
struct Known {
    answer: Option<Placement>,
    written: Written,
}

type Slot = Arc<tokio::sync::Mutex<Known>>;

/// (topic, incarnation, key).
type Id = (String, String, String);

/// (topic, incarnation).
type Incarnation = (String, String);

/// What an entry costs besides its strings and answer: the map and queue
/// entries, the slot, its mutexes and the parts map.
const ENTRY_OVERHEAD: usize = 256;
/// What one written part costs in the parts map.
const PART_BYTES: usize = 64;

pub(crate) struct IdempotencyCache {
    max_bytes: usize,
    /// Cluster mode: the keys every host checks.
    shared: Option<Arc<ProduceKeys>>,
    inner: Mutex<Inner>,
    /// Topic incarnations whose partitions' tails were scanned for marks
    /// since start.
    recovered: Mutex<HashMap<Incarnation, Arc<OnceCell<()>>>>,
}

struct Entry {
    slot: Slot,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Id, Entry>,
    order: VecDeque<Id>,
    bytes: usize,
}

impl Inner {
    /// Forget the oldest entries until the cache fits `max_bytes`.
    fn evict_to(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&old) {
                self.bytes -= entry.bytes;
            }
        }
    }
}

/// How much the cache holds, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheUse {
    pub keys: usize,
    pub bytes: usize,
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
    Answer(Placement),
    /// One part of a request of several.
    Part(u32, Part),
}

/// `(key, what it says)` for every mark in `batch` of `topic`/`partition`.
fn marks_in(partition: u32, batch: &RecordBatch) -> Vec<(String, Found)> {
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
                Found::Answer(Placement::contiguous(is_batch, partition, offset, records))
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
            found.extend(marks_in(partition, &batch));
            offset = last + 1;
        }
    }
    Ok(found)
}

impl IdempotencyCache {
    /// A cache holding at most about `max_bytes` of keys and answers.
    pub(crate) fn new(max_bytes: usize) -> Self {
        IdempotencyCache {
            max_bytes,
            shared: None,
            inner: Mutex::new(Inner::default()),
            recovered: Mutex::new(HashMap::new()),
        }
    }

    /// The same, agreeing on keys with the other hosts through `keys`.
    pub(crate) fn shared_with(mut self, keys: Option<Arc<ProduceKeys>>) -> Self {
        self.shared = keys;
        self
    }

    pub(crate) fn usage(&self) -> CacheUse {
        let inner = self.inner.lock();
        CacheUse {
            keys: inner.entries.len(),
            bytes: inner.bytes,
        }
    }

    /// Relearn the marked requests of `topic` once per process and
    /// incarnation (before its first keyed produce is answered).
    async fn recover(&self, log: &Arc<dyn EventLog>, topic: &TopicMeta) -> Result<(), ApiError> {
        let once = self
            .recovered
            .lock()
            .entry((topic.name.clone(), topic.incarnation.clone()))
            .or_default()
            .clone();
        once.get_or_try_init(|| async {
            let (log, t) = (log.clone(), topic.name.clone());
            let found = super::blocking(move || scan_marks(&*log, &t)).await?;
            for (key, what) in found {
                let id = (topic.name.clone(), topic.incarnation.clone(), key);
                let slot = self.slot(&id);
                let mut known = slot.lock().await;
                match what {
                    // A later append of the same key cannot exist (it would
                    // have been answered from the first): the first wins.
                    Found::Answer(answer) => {
                        if known.answer.is_none() {
                            self.charge(&id, answer.bytes());
                            known.answer = Some(answer);
                        }
                    }
                    Found::Part(partition, part) => {
                        let mut written = known.written.lock();
                        if written.by_partition.insert(partition, part).is_none() {
                            self.charge(&id, PART_BYTES);
                        }
                    }
                }
            }
            Ok::<(), ApiError>(())
        })
        .await?;
        Ok(())
    }

    /// The slot of `id`, created (and paid for) if it is not cached.
    fn slot(&self, id: &Id) -> Slot {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entries.get(id) {
            return entry.slot.clone();
        }
        let slot = Slot::default();
        let bytes = ENTRY_OVERHEAD + 2 * (id.0.len() + id.1.len() + id.2.len());
        inner.entries.insert(
            id.clone(),
            Entry {
                slot: slot.clone(),
                bytes,
            },
        );
        inner.order.push_back(id.clone());
        inner.bytes += bytes;
        inner.evict_to(self.max_bytes);
        slot
    }

    /// Add `bytes` to what `id` costs (if it is still cached), then forget
    /// the oldest entries beyond the budget.
    fn charge(&self, id: &Id, bytes: usize) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entries.get_mut(id) {
            entry.bytes += bytes;
            inner.bytes += bytes;
        }
        inner.evict_to(self.max_bytes);
    }

    /// Run `produce` once per key of this incarnation of `topic`; later
    /// calls get its answer. `produce` gets the parts already written (by
    /// an earlier attempt that failed, or before a crash), must append only
    /// the missing ones and record each part it appends, holding the lock
    /// on `Written` while it appends (an abandoned attempt may still be
    /// running). It answers whether it appended anything. Returns the
    /// answer and whether it was replayed (nothing appended by this call).
    pub(crate) async fn run<F, Fut>(
        &self,
        log: &Arc<dyn EventLog>,
        topic: &TopicMeta,
        key: &str,
        produce: F,
    ) -> Result<(Placement, bool), ApiError>
    where
        F: FnOnce(Written) -> Fut,
        Fut: Future<Output = Result<(Placement, bool), ApiError>>,
    {
        self.recover(log, topic).await?;
        let id = (
            topic.name.clone(),
            topic.incarnation.clone(),
            key.to_owned(),
        );
        let slot = self.slot(&id);
        let mut known = slot.lock().await;
        if let Some(answer) = &known.answer {
            return Ok((answer.clone(), true));
        }
        if let Some(keys) = &self.shared {
            claim_shared(keys, log, topic, key, &known.written).await?;
        }
        let produced = produce(known.written.clone()).await;
        let (claim, parts) = {
            let mut written = known.written.lock();
            (written.claim.take(), written.shared_parts())
        };
        if let Some(shared) = claim {
            let done = produced.is_ok();
            let finished =
                super::blocking(move || shared.keys.finish(shared.claim, done, parts)).await;
            if let Err(e) = finished {
                // Answered all the same: a retry elsewhere takes the request
                // over after the takeover time and finds its parts in the log.
                tracing::warn!(topic = %topic.name, "cannot mark an idempotent produce finished: {e:?}");
            }
        }
        let (answer, appended) = produced?;
        let parts = known.written.lock().by_partition.len();
        self.charge(&id, answer.bytes() + parts * PART_BYTES);
        known.answer = Some(answer.clone());
        Ok((answer, !appended))
    }
}

/// Claim `key` of `topic` among the hosts of the cluster into `written`:
/// the parts of a request answered through another host (nothing more
/// will be appended), or this host's claim with the parts written so far
/// (also those a writer it took over appended after its last record of
/// them, found by their marks in the log).
async fn claim_shared(
    keys: &Arc<ProduceKeys>,
    log: &Arc<dyn EventLog>,
    topic: &TopicMeta,
    key: &str,
    written: &Written,
) -> Result<(), ApiError> {
    let (claimer, incarnation, k) = (keys.clone(), topic.incarnation.clone(), key.to_owned());
    let claimed = super::blocking(move || claimer.claim(&incarnation, &k)).await?;
    let as_parts = |parts: Vec<SharedPart>| -> BTreeMap<u32, Part> {
        parts
            .into_iter()
            .map(|(p, first, records)| (p, Part { first, records }))
            .collect()
    };
    let claim = match claimed {
        Claimed::Done(parts) => {
            let mut w = written.lock();
            w.by_partition = as_parts(parts);
            w.done = true;
            return Ok(());
        }
        Claimed::Mine(claim) => claim,
    };
    let mut found = as_parts(claim.parts.clone());
    if claim.taken_over {
        let (log, name) = (log.clone(), topic.name.clone());
        let marks = super::blocking(move || scan_marks(&*log, &name)).await?;
        for (mark_key, what) in marks {
            if mark_key != key {
                continue;
            }
            let (partition, part) = match what {
                Found::Part(partition, part) => (partition, part),
                Found::Answer(answer) => match answer.runs.first() {
                    Some(run) => (
                        run.partition,
                        Part {
                            first: run.first,
                            records: run.records,
                        },
                    ),
                    None => continue,
                },
            };
            found.entry(partition).or_insert(part);
        }
    }
    let mut w = written.lock();
    for (partition, part) in found {
        w.by_partition.entry(partition).or_insert(part);
    }
    w.claim = Some(SharedClaim {
        keys: keys.clone(),
        claim,
        appended: 0,
    });
    Ok(())
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

    /// The answer of a single record at partition 0, `offset`.
    fn at(offset: u64) -> Placement {
        Placement::contiguous(false, 0, offset, 1)
    }

    async fn produce_once(
        cache: &IdempotencyCache,
        log: &Arc<dyn EventLog>,
        topic: &str,
        key: &str,
        answer: Placement,
    ) -> (Placement, bool) {
        let topic = log.topic_meta(topic).unwrap();
        cache
            .run(log, &topic, key, |_| async { Ok((answer, true)) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn replays_first_answer_and_retries_failures() {
        let (_dir, r) = log_with(&[("t", 1), ("u", 1)]);
        // What one key with a one-record answer costs here.
        let probe = IdempotencyCache::new(usize::MAX);
        produce_once(&probe, &r, "t", "k", at(1)).await;
        let cache = IdempotencyCache::new(2 * probe.usage().bytes);
        let (a, replayed) = produce_once(&cache, &r, "t", "k", at(1)).await;
        assert_eq!((a, replayed), (at(1), false));
        let (a, replayed) = produce_once(&cache, &r, "t", "k", at(2)).await;
        assert_eq!((a, replayed), (at(1), true));
        // Another topic is another key space.
        let (a, _) = produce_once(&cache, &r, "u", "k", at(3)).await;
        assert_eq!(a, at(3));
        // A failed attempt leaves the key free.
        let t = r.topic_meta("t").unwrap();
        let failed = cache
            .run(&r, &t, "f", |_| async {
                Err(ApiError::bad_request("x", "boom"))
            })
            .await;
        assert!(failed.is_err());
        let (a, replayed) = produce_once(&cache, &r, "t", "f", at(4)).await;
        assert_eq!((a, replayed), (at(4), false));
        // The byte budget bounds memory: the oldest keys are forgotten.
        assert!(cache.usage().bytes <= 2 * probe.usage().bytes);
        let (a, _) = produce_once(&cache, &r, "t", "k", at(5)).await;
        assert_eq!(a, at(5));
    }

    #[test]
    fn answers_are_kept_as_runs_of_offsets() {
        let one_partition = Placement::contiguous(true, 0, 7, 50_000);
        assert!(one_partition.bytes() < 100, "{}", one_partition.bytes());
        let answer = one_partition.answer("t");
        assert_eq!(answer["records"].as_array().unwrap().len(), 50_000);
        assert_eq!(
            answer["records"][49_999],
            json!({"partition": 0, "offset": 50_006})
        );
        let split = Placement::new(true, [(1, 5), (1, 6), (0, 2), (1, 7)]);
        assert_eq!(split.runs.len(), 3);
        assert_eq!(
            split.answer("t")["records"],
            json!([{"partition": 1, "offset": 5}, {"partition": 1, "offset": 6},
                   {"partition": 0, "offset": 2}, {"partition": 1, "offset": 7}])
        );
        assert_eq!(
            at(3).answer("t"),
            json!({"topic": "t", "partition": 0, "offset": 3})
        );
    }

    #[tokio::test]
    async fn big_answers_stay_within_the_byte_budget() {
        let (_dir, r) = log_with(&[("t", 2)]);
        let budget = 4 << 20;
        let cache = IdempotencyCache::new(budget);
        for i in 0..20 {
            // The worst case: records alternate between two partitions.
            let answer = Placement::new(true, (0..50_000u64).map(|o| ((o % 2) as u32, o / 2)));
            produce_once(&cache, &r, "t", &format!("key-{i}"), answer).await;
            assert!(cache.usage().bytes <= budget, "{:?}", cache.usage());
        }
        let (_, replayed) = produce_once(&cache, &r, "t", "key-19", at(0)).await;
        assert!(replayed, "the latest key is still known");
    }

    #[tokio::test]
    async fn keys_belong_to_one_incarnation_of_a_topic() {
        let (_dir, r) = log_with(&[("t", 1)]);
        let cache = IdempotencyCache::new(1 << 20);
        produce_once(&cache, &r, "t", "k", at(0)).await;
        r.delete_topic("t").unwrap();
        r.create_topic("t", TopicConfig::with_partitions(1))
            .unwrap();
        let (a, replayed) = produce_once(&cache, &r, "t", "k", at(0)).await;
        assert_eq!((a, replayed), (at(0), false), "a new topic, a new key");
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
        let cache = IdempotencyCache::new(1 << 20);
        let again = at(99);
        let (a, replayed) = produce_once(&cache, &r, "t", "batch-key", again.clone()).await;
        assert!(replayed);
        assert_eq!(a, Placement::contiguous(true, 1, 1, 2));
        assert_eq!(
            a.answer("t"),
            json!({"topic": "t", "records": [{"partition": 1, "offset": 1}, {"partition": 1, "offset": 2}]})
        );
        let (a, replayed) = produce_once(&cache, &r, "t", "single-key", again.clone()).await;
        assert_eq!(
            (a.answer("t"), replayed),
            (json!({"topic": "t", "partition": 0, "offset": 0}), true)
        );
        let (_, replayed) = produce_once(&cache, &r, "t", "new-key", again).await;
        assert!(!replayed);
    }

    /// `ProduceKeys` of host `id` on the shared test cluster, taking a
    /// stalled request over after a second.
    fn cluster_keys(id: &str) -> Arc<ProduceKeys> {
        Arc::new(
            ProduceKeys::open(crate::nats::connect_shared("idempotency"), id)
                .unwrap()
                .with_takeover(std::time::Duration::from_secs(1)),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_cluster_a_request_taken_over_from_a_dead_host_keeps_the_parts_it_appended() {
        let (_dir, r) = log_with(&[("t", 3)]);
        let topic = r.topic_meta("t").unwrap();
        let (dead, survivor) = (cluster_keys("dead"), cluster_keys("survivor"));
        let cache = IdempotencyCache::new(1 << 20).shared_with(Some(survivor));
        // This host has read the log's marks already (as after its first
        // keyed produce): what the dead host appends next it learns only
        // by taking the request over.
        produce_once(&cache, &r, "t", "warm", at(0)).await;
        let key = format!("k-{}", uuid::Uuid::new_v4());
        let (claimer, incarnation, k) = (dead.clone(), topic.incarnation.clone(), key.clone());
        let claimed = tokio::task::spawn_blocking(move || claimer.claim(&incarnation, &k))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(claimed, Claimed::Mine(_)));
        // The dead host appended the first of two parts, then died.
        let marked = Record {
            key: vec![],
            value: b"a".to_vec(),
            headers: vec![mark(&key, 3, true, 2, 2)],
            timestamp: 0,
        };
        let plain = Record {
            headers: vec![],
            ..marked.clone()
        };
        r.append("t", 2, &[marked, plain]).unwrap();

        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let seen_in = seen.clone();
        let (answer, replayed) = cache
            .run(&r, &topic, &key, |written| async move {
                *seen_in.lock() = written.lock().by_partition.clone();
                Ok((Placement::contiguous(true, 2, 0, 3), true))
            })
            .await
            .unwrap();
        assert_eq!(
            *seen.lock(),
            BTreeMap::from([(
                2,
                Part {
                    first: 0,
                    records: 2
                }
            )])
        );
        assert!(!replayed);
        assert_eq!(answer, Placement::contiguous(true, 2, 0, 3));
        // Done for every host now, with its parts.
        let (claimer, incarnation) = (dead.clone(), topic.incarnation.clone());
        let again = tokio::task::spawn_blocking(move || claimer.claim(&incarnation, &key))
            .await
            .unwrap()
            .unwrap();
        match again {
            Claimed::Done(parts) => assert_eq!(parts, vec![(2, 0, 2)]),
            Claimed::Mine(_) => panic!("taken again"),
        }
    }
}
