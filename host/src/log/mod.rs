//! The embedded partitioned log (the rapids): topics, partitions, segments,
//! indexes, recovery, retention and compaction. It knows nothing of plugins
//! or HTTP.
//!
//! # Using it
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use weir::batch::Record;
//! use weir::log::{EventLog, FsyncPolicy, Log, LogConfig, TopicConfig};
//!
//! let mut cfg = LogConfig::new("/var/lib/weir/log");
//! cfg.default_fsync = FsyncPolicy::Always;
//! let log: Arc<dyn EventLog> = Arc::new(Log::open(cfg)?);
//! log.create_topic("orders", TopicConfig::with_partitions(4))?;
//! let key = b"customer-7";
//! let p = log.partition_for("orders", key)?;
//! let rec = Record { key: key.to_vec(), value: b"{}".to_vec(), headers: vec![], timestamp: 0 };
//! let ack = log.append("orders", p, &[rec])?; // returns once fsynced (policy always)
//! let batch = log.read("orders", p, ack.base_offset, 1000, 1 << 20)?;
//! assert_eq!(batch.offsets[0], ack.base_offset);
//! log.wait_for("orders", p, ack.end_offset(), Duration::from_secs(1))?;
//! # Ok::<(), weir::log::LogError>(())
//! ```
//!
//! # Promises
//!
//! - Offsets of a partition only grow; an acknowledged offset is never
//!   assigned again. (Exception, by design: `truncate` cuts offsets that
//!   were never visible, and they are assigned again.)
//! - Readers never see past the visible end. With `fsync = always` a record
//!   is visible only once fsynced; with `interval`/`never` once written.
//! - Durability: `always` — an ack means fdatasynced (concurrent appends
//!   share one fsync); `interval(d)` — synced within `d`; `never` — synced
//!   only on close: **acknowledged records survive a process crash but not a
//!   power loss or kernel crash**.
//! - On open, a torn tail is cut; corruption before the tail refuses to open
//!   with `LogError::Corrupt { file, position, .. }` unless `LogConfig::repair`.
//! - Reads verify the CRC of every batch: no garbage is ever returned.
//!
//! # Exactly-once support (processors)
//!
//! A processor owning an output partition appends with `append_deferred`
//! (durable per policy, invisible), commits its store transaction recording
//! the written end, then calls `publish(end)`. On restart it calls
//! `truncate(topic, p, recorded_end, false)` to cut an uncommitted tail.
//! After `Log::open` every partition's visible end is its recovered end, so
//! the processor must truncate before anyone reads its outputs. A plain
//! `append` also publishes everything before it (visibility is a prefix).
//!
//! # Reads
//!
//! `read` returns a columnar [`RecordBatch`] built by copying whole columns
//! out of the on-disk frames (see `frame`), at least one record when any is
//! visible even if it exceeds `max_bytes` (payload bytes: keys, values,
//! headers). In compacted topics offsets have gaps; continue from
//! `batch.offsets.last() + 1`.

mod compaction;
mod config;
mod error;
mod frame;
mod index;
pub mod jetstream;
mod partition;
mod partitioner;
mod recovery;
mod retention;
mod segment;
mod topic;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;

pub use self::config::{FsyncPolicy, LogConfig, TopicConfig, validate_topic_name};
pub use self::error::{LogError, Result};
pub use self::partition::AppendAck;
pub use self::partitioner::{murmur2, partition_for_key};
pub use self::topic::{PartitionInfo, TopicInfo, TopicMeta};
pub use crate::batch::{Record, RecordBatch};

/// What `records` encode to as one append (compare with
/// [`EventLog::max_batch_bytes`]).
pub fn encoded_size(records: &[Record]) -> usize {
    frame::records_size(records)
}

use self::error::IoContext;
use self::partition::{Partition, Payload};
use self::topic::Topic;

/// The log's edge: what the rest of weir uses. The embedded [`Log`]
/// implements it; a Kafka-compatible backend can implement it later.
/// All methods block (appends until durable per policy); none busy-polls.
pub trait EventLog: Send + Sync {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo>;
    fn delete_topic(&self, name: &str) -> Result<()>;
    fn topics(&self) -> Vec<TopicInfo>;
    fn topic(&self, name: &str) -> Result<TopicInfo>;
    /// The topic without its offsets (name, incarnation, configuration).
    fn topic_meta(&self, name: &str) -> Result<TopicMeta> {
        self.topic(name).map(|t| t.meta())
    }
    /// Kafka's murmur2 partition for a non-empty key; round-robin for an empty one.
    fn partition_for(&self, topic: &str, key: &[u8]) -> Result<u32>;
    /// Append and publish. Returns once as durable as the topic's policy demands.
    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<AppendAck>;
    /// Append a columnar batch (its `offsets` are ignored) and publish.
    fn append_batch(&self, topic: &str, partition: u32, batch: &RecordBatch) -> Result<AppendAck>;
    /// Append durably (per policy) but keep invisible until [`EventLog::publish`].
    fn append_deferred(&self, topic: &str, partition: u32, records: &[Record])
    -> Result<AppendAck>;
    /// Columnar form of [`EventLog::append_deferred`].
    fn append_batch_deferred(
        &self,
        topic: &str,
        partition: u32,
        batch: &RecordBatch,
    ) -> Result<AppendAck>;
    /// Make every offset below `up_to` visible.
    fn publish(&self, topic: &str, partition: u32, up_to: u64) -> Result<()>;
    /// Cut the log so `to` is the next offset. Refuses to cut visible
    /// records unless `force`. Cut offsets are assigned again.
    fn truncate(&self, topic: &str, partition: u32, to: u64, force: bool) -> Result<()>;
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<RecordBatch>;
    /// First stored offset (rises with retention).
    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64>;
    /// The visible end: the next offset readers will see.
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64>;
    /// `(start_offset, end_offset)` of a partition, learnt together.
    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        Ok((
            self.start_offset(topic, partition)?,
            self.end_offset(topic, partition)?,
        ))
    }
    /// The written end (≥ the visible end; larger after deferred appends).
    fn written_end(&self, topic: &str, partition: u32) -> Result<u64>;
    /// First visible offset whose record's timestamp is ≥ `ts_ms`.
    fn offset_for_timestamp(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<Option<u64>>;
    /// Block until the visible end is beyond `offset` (true) or `timeout` passes (false).
    fn wait_for(&self, topic: &str, partition: u32, offset: u64, timeout: Duration)
    -> Result<bool>;
    /// A watch of the visible end, for async waiting (`changed().await`).
    fn watch_end(&self, topic: &str, partition: u32) -> Result<watch::Receiver<u64>>;
    /// Sync everything written so far.
    fn flush(&self) -> Result<()>;
    /// The most bytes one append may encode to (see [`encoded_size`]).
    fn max_batch_bytes(&self) -> usize;
    /// Whether processors can commit through this log the way the engine does
    /// today: deferred appends that stay invisible until published, and
    /// truncation of an unpublished tail on recovery.
    fn supports_processor_commits(&self) -> bool {
        true
    }
}

struct Inner {
    config: LogConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises topic creation and deletion.
    admin: Mutex<()>,
    closed: AtomicBool,
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

/// The embedded log. Share it as `Arc<Log>` (or `Arc<dyn EventLog>`); a
/// background thread syncs `interval` topics, writes recovery points and
/// applies retention and compaction until [`Log::close`] or drop.
pub struct Log {
    inner: Arc<Inner>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    /// Open (recovering every partition) or create the log in `config.dir`.
    pub fn open(config: LogConfig) -> Result<Log> {
        config.validate()?;
        let root = config.dir.clone();
        fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
        let mut topics = HashMap::new();
        for entry in fs::read_dir(&root).ctx(|| format!("listing {}", root.display()))? {
            let entry = entry.ctx(|| format!("listing {}", root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() {
                continue;
            }
            if name.starts_with('~') {
                // An interrupted create or delete.
                fs::remove_dir_all(entry.path())
                    .ctx(|| format!("removing {}", entry.path().display()))?;
                continue;
            }
            if validate_topic_name(&name).is_err() {
                tracing::warn!(dir = %entry.path().display(), "ignoring a directory that is not a topic");
                continue;
            }
            let topic = Topic::open(&root, &name, &config)?;
            topics.insert(name, Arc::new(topic));
        }
        let inner = Arc::new(Inner {
            config,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            closed: AtomicBool::new(false),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        });
        let worker = inner.clone();
        let handle = std::thread::Builder::new()
            .name("weir-log-maintenance".into())
            .spawn(move || worker.maintenance_loop())
            .ctx(|| "starting the log maintenance thread".into())?;
        Ok(Log {
            inner,
            maintenance: Mutex::new(Some(handle)),
        })
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Stop the background thread, sync everything and write recovery
    /// points. Later calls fail with `LogError::Closed`. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        *self.inner.stop.lock() = true;
        self.inner.stop_cv.notify_all();
        if let Some(h) = self.maintenance.lock().take() {
            let _ = h.join();
        }
        let mut first_err = None;
        for topic in self.inner.topics.read().values() {
            for p in &topic.partitions {
                if let Err(e) = p.close() {
                    tracing::error!(error = %e, "closing a partition");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Apply retention and compaction to every topic now (also done in the
    /// background every `maintenance_interval`).
    pub fn run_maintenance(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.retention_and_compaction()
    }

    /// Roll the active segment of a partition (tests and operators).
    pub fn roll(&self, topic: &str, partition: u32) -> Result<()> {
        self.inner.partition(topic, partition)?.roll()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the log");
        }
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.check_open()?;
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| match validate_topic_name(name) {
                Err(e) => e,
                Ok(()) => LogError::UnknownTopic(name.to_string()),
            })
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(partition).cloned()
    }

    fn all_partitions(&self) -> Vec<(Arc<Topic>, Arc<Partition>)> {
        let topics = self.topics.read();
        topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.clone(), p.clone())))
            .collect()
    }

    fn retention_and_compaction(&self) -> Result<()> {
        let now = now_ms();
        for (topic, p) in self.all_partitions() {
            let c = &topic.config;
            if c.retention_ms.is_some() || c.retention_bytes.is_some() {
                p.apply_retention(c.retention_ms, c.retention_bytes, now)?;
            }
            if c.compaction {
                p.compact(c.delete_retention_ms, now)?;
            }
        }
        Ok(())
    }

    fn maintenance_loop(&self) {
        let mut last_cleanup = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut last_release = Instant::now();
        loop {
            let parts = self.all_partitions();
            let tick = parts
                .iter()
                .filter_map(|(_, p)| match p.settings.fsync {
                    FsyncPolicy::Interval(d) => Some(d),
                    _ => None,
                })
                .min()
                .unwrap_or(Duration::from_millis(500))
                .clamp(Duration::from_millis(2), Duration::from_millis(500));
            {
                let mut stop = self.stop.lock();
                if *stop {
                    return;
                }
                self.stop_cv.wait_for(&mut stop, tick);
                if *stop {
                    return;
                }
            }
            for (_, p) in &parts {
                if let FsyncPolicy::Interval(d) = p.settings.fsync
                    && p.log_end() > p.durable_end()
                    && p.last_sync.lock().elapsed() >= d
                    && let Err(e) = p.flush()
                {
                    tracing::error!(partition = %p.dir.display(), error = %e, "interval fsync failed");
                }
            }
            if last_checkpoint.elapsed() >= Duration::from_secs(1) {
                last_checkpoint = Instant::now();
                for (_, p) in &parts {
                    if p.settings.fsync != FsyncPolicy::Never
                        && let Err(e) = p.checkpoint()
                    {
                        tracing::warn!(partition = %p.dir.display(), error = %e, "writing a recovery point");
                    }
                }
            }
            if last_release.elapsed() >= RELEASE_PAGES_EVERY {
                last_release = Instant::now();
                for (_, p) in &parts {
                    p.release_pages();
                }
            }
            if last_cleanup.elapsed() >= self.config.maintenance_interval {
                last_cleanup = Instant::now();
                if let Err(e) = self.retention_and_compaction() {
                    tracing::error!(error = %e, "log retention / compaction failed");
                }
            }
        }
    }
}

/// How often pages read through segment maps are given back. Readers at
/// the tail touch each new page once anyway; giving pages back this often
/// costs a page fault per re-read page at most and keeps the process's
/// resident log pages to what was read in the last few seconds.
const RELEASE_PAGES_EVERY: Duration = Duration::from_secs(2);

impl EventLog for Log {
    fn max_batch_bytes(&self) -> usize {
        self.inner.config.max_batch_bytes
    }

    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        self.inner.check_open()?;
        validate_topic_name(name)?;
        config.validate()?;
        let _admin = self.inner.admin.lock();
        if self.inner.topics.read().contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let topic = Arc::new(Topic::create(
            &self.inner.config.dir,
            name,
            config,
            &self.inner.config,
        )?);
        let info = topic.info();
        self.inner.topics.write().insert(name.to_string(), topic);
        Ok(info)
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock();
        let topic = self.inner.topic(name)?;
        self.inner.topics.write().remove(name);
        // Wake blocked waiters so they notice (their next call gets UnknownTopic).
        for p in &topic.partitions {
            p.wake_waiters();
        }
        Topic::remove_dir(&self.inner.config.dir, name)
    }

    fn topics(&self) -> Vec<TopicInfo> {
        let mut v: Vec<TopicInfo> = self
            .inner
            .topics
            .read()
            .values()
            .map(|t| t.info())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(self.inner.topic(name)?.info())
    }

    fn topic_meta(&self, name: &str) -> Result<TopicMeta> {
        Ok(self.inner.topic(name)?.meta())
    }

    fn partition_for(&self, topic: &str, key: &[u8]) -> Result<u32> {
        let t = self.inner.topic(topic)?;
        let n = t.partitions.len() as u32;
        Ok(if key.is_empty() {
            t.round_robin.next(n)
        } else {
            partition_for_key(key, n)
        })
    }

    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<AppendAck> {
        self.inner
            .partition(topic, partition)?
            .append(Payload::Records(records), false)
    }

    fn append_batch(&self, topic: &str, partition: u32, batch: &RecordBatch) -> Result<AppendAck> {
        self.inner
            .partition(topic, partition)?
            .append(Payload::Batch(batch), false)
    }

    fn append_deferred(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
    ) -> Result<AppendAck> {
        self.inner
            .partition(topic, partition)?
            .append(Payload::Records(records), true)
    }

    fn append_batch_deferred(
        &self,
        topic: &str,
        partition: u32,
        batch: &RecordBatch,
    ) -> Result<AppendAck> {
        self.inner
            .partition(topic, partition)?
            .append(Payload::Batch(batch), true)
    }

    fn publish(&self, topic: &str, partition: u32, up_to: u64) -> Result<()> {
        self.inner.partition(topic, partition)?.publish(up_to)
    }

    fn truncate(&self, topic: &str, partition: u32, to: u64, force: bool) -> Result<()> {
        self.inner.partition(topic, partition)?.truncate(to, force)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<RecordBatch> {
        self.inner
            .partition(topic, partition)?
            .read(from, max_records, max_bytes)
    }

    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.inner.partition(topic, partition)?.start_offset())
    }

    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.inner.partition(topic, partition)?.visible_end())
    }

    fn written_end(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.inner.partition(topic, partition)?.log_end())
    }

    fn offset_for_timestamp(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<Option<u64>> {
        self.inner
            .partition(topic, partition)?
            .offset_for_timestamp(ts_ms)
    }

    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool> {
        Ok(self
            .inner
            .partition(topic, partition)?
            .wait_for(offset, timeout))
    }

    fn watch_end(&self, topic: &str, partition: u32) -> Result<watch::Receiver<u64>> {
        Ok(self.inner.partition(topic, partition)?.subscribe())
    }

    fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        for (_, p) in self.inner.all_partitions() {
            p.flush()?;
        }
        Ok(())
    }
}
