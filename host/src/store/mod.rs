//! The embedded store (redb): everything the host keeps besides the log.
//!
//! It owns
//! - input checkpoints per (consumer, input topic, partition) — the next offset to process;
//! - recorded output end offsets per (consumer, output topic, partition), the
//!   exactly-once protocol's record of which appended output is committed;
//! - pond state, one key space per (pond, generation), readable by key and by
//!   prefix (range scan with start-after and limit);
//! - aggregate snapshots (state bytes + version) per (service, aggregate);
//! - command results per (service, command id) — a command's first answer;
//! - the plugin registry (deployed plugins, versions, manifests, active
//!   version, paused flag), so deployments survive restarts.
//!
//! Promises:
//! - [`Store::commit`] applies one [`CommitSet`] — state delta, checkpoints,
//!   output ends, aggregate snapshots, command results — in one redb write
//!   transaction: all of it or, on any error, none of it.
//! - With [`StoreDurability::Immediate`] a commit is on disk when `commit`
//!   returns (redb fsyncs). With [`StoreDurability::Lazy`] commits are made
//!   with redb's non-durable commits and a durable commit is forced at least
//!   every `sync_every`; a crash of the process *or* a power loss then rolls
//!   the store back to the last durable commit, which is always a consistent
//!   earlier state (checkpoints, output ends and state of the same moment).
//!   The processor's start-up recovery cuts outputs back to those ends and
//!   re-processes from those checkpoints, so a rollback costs redone work,
//!   never a duplicate or a lost effect — as long as the log itself survived
//!   (with the log's fsync `never`, a power loss can also lose log records;
//!   see the processor's recovery notes).
//! - Readers (`pond_get`, `pond_scan`, `checkpoint`, …) see committed data only.

mod pond;
mod registry;

use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

pub use pond::{PondReader, WriteSet, scan_merged};
pub use registry::{PluginRecord, VersionRecord};

/// (consumer, topic, partition) → next input offset to process.
const CHECKPOINTS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("checkpoints");
/// (consumer, topic, partition) → end offset of the committed output.
const OUTPUT_ENDS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("output_ends");
/// (service, aggregate) → encoded [`AggregateSnapshot`].
const AGGREGATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("aggregates");
/// (service, command id) → the command's first result (opaque to the store).
const COMMAND_RESULTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("command_results");
/// plugin name → JSON [`PluginRecord`].
const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");

const POND_TABLE_PREFIX: &str = "pond:";

/// Name of the redb table holding one generation of a pond.
fn pond_table_name(pond: &str, generation: u32) -> String {
    format!("{POND_TABLE_PREFIX}{pond}:g{generation}")
}

fn pond_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Errors of the store. Every one means "nothing of the operation was applied".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Db(#[from] redb::Error),
    #[error("store record {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDurability {
    /// Every commit is fsynced before it returns (host fsync policy `always`).
    Immediate,
    /// Commits are non-durable; a durable one is made at least every
    /// `sync_every` (host fsync policy `interval` / `never`).
    Lazy { sync_every: Duration },
}

/// The position of a consumer (or the end of an output) in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionPos {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// An aggregate's latest state, as of `version` events, produced by the
/// plugin whose component digest is `plugin_sha256` (a different digest
/// means the state must be rebuilt by `evolve`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AggregateSnapshot {
    pub version: u64,
    pub plugin_sha256: String,
    pub state: Vec<u8>,
}

impl AggregateSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let digest = self.plugin_sha256.as_bytes();
        let mut out = Vec::with_capacity(12 + digest.len() + self.state.len());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(digest.len() as u32).to_le_bytes());
        out.extend_from_slice(digest);
        out.extend_from_slice(&self.state);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let version = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
        let digest = bytes.get(12..12 + len)?;
        Some(AggregateSnapshot {
            version,
            plugin_sha256: String::from_utf8(digest.to_vec()).ok()?,
            state: bytes.get(12 + len..)?.to_vec(),
        })
    }
}

/// A pond generation's writes of one or more batches.
#[derive(Debug, Clone, Default)]
pub struct PondDelta {
    pub pond: String,
    pub generation: u32,
    pub writes: WriteSet,
}

/// Everything one processing step commits together.
#[derive(Debug, Clone, Default)]
pub struct CommitSet {
    /// Whose checkpoints these are.
    pub consumer: String,
    /// Whose output ends these are (the processor that owns the outputs;
    /// usually the consumer itself, see [`CommitSet::new`]).
    pub owner: String,
    /// New input positions (next offset to process).
    pub checkpoints: Vec<PartitionPos>,
    /// New committed ends of the consumer's output partitions.
    pub output_ends: Vec<PartitionPos>,
    pub pond: Option<PondDelta>,
    /// (service, aggregate, snapshot)
    pub aggregates: Vec<(String, String, AggregateSnapshot)>,
    /// (service, command id, encoded result); an existing result is kept.
    pub command_results: Vec<(String, String, Vec<u8>)>,
}

impl CommitSet {
    pub fn new(consumer: impl Into<String>) -> Self {
        let consumer = consumer.into();
        CommitSet {
            owner: consumer.clone(),
            consumer,
            ..Default::default()
        }
    }
}

/// The page cache a server gives the store unless told otherwise: it holds
/// state and aggregates being read and commits not yet made durable, and
/// is the largest fixed part of a server's memory.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// The embedded store. Cheap to share behind an `Arc`; all methods are
/// blocking (call them from blocking threads).
pub struct Store {
    db: Database,
    durability: StoreDurability,
    last_durable: Mutex<Instant>,
}

impl Store {
    /// Open (or create) the store file at `path`, keeping at most
    /// `cache_bytes` of its pages in memory.
    pub fn open(
        path: impl AsRef<Path>,
        durability: StoreDurability,
        cache_bytes: usize,
    ) -> Result<Self> {
        if let Some(dir) = path.as_ref().parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path.as_ref())?;
        // Create the fixed tables so readers never meet a missing one.
        let txn = db.begin_write()?;
        txn.open_table(CHECKPOINTS)?;
        txn.open_table(OUTPUT_ENDS)?;
        txn.open_table(AGGREGATES)?;
        txn.open_table(COMMAND_RESULTS)?;
        txn.open_table(PLUGINS)?;
        txn.commit()?;
        Ok(Store {
            db,
            durability,
            last_durable: Mutex::new(Instant::now()),
        })
    }

    pub fn durability(&self) -> StoreDurability {
        self.durability
    }

    /// Begin a write transaction with the durability this commit needs.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        if let StoreDurability::Lazy { sync_every } = self.durability {
            let mut last = self.last_durable.lock();
            if last.elapsed() < sync_every {
                txn.set_durability(Durability::None)?;
            } else {
                *last = Instant::now();
            }
        }
        Ok(txn)
    }

    /// Commit one processing step atomically.
    pub fn commit(&self, set: &CommitSet) -> Result<()> {
        let txn = self.begin_write()?;
        write_commit_set(&txn, set)?;
        txn.commit()?;
        Ok(())
    }

    /// Force everything committed so far to disk (a durable empty commit).
    pub fn sync(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        *self.last_durable.lock() = Instant::now();
        Ok(())
    }

    /// The next offset `consumer` processes in `topic`/`partition`, if any was committed.
    pub fn checkpoint(&self, consumer: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHECKPOINTS)?;
        Ok(table.get((consumer, topic, partition))?.map(|v| v.value()))
    }

    /// All checkpoints of `consumer`.
    pub fn checkpoints(&self, consumer: &str) -> Result<Vec<PartitionPos>> {
        self.positions(CHECKPOINTS, consumer)
    }

    /// All recorded output ends of `consumer`.
    pub fn output_ends(&self, consumer: &str) -> Result<Vec<PartitionPos>> {
        self.positions(OUTPUT_ENDS, consumer)
    }

    fn positions(
        &self,
        def: TableDefinition<(&str, &str, u32), u64>,
        consumer: &str,
    ) -> Result<Vec<PartitionPos>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(def)?;
        let mut out = Vec::new();
        for entry in table.range((consumer, "", 0)..)? {
            let (k, v) = entry?;
            let (c, topic, partition) = k.value();
            if c != consumer {
                break;
            }
            out.push(PartitionPos {
                topic: topic.to_string(),
                partition,
                offset: v.value(),
            });
        }
        Ok(out)
    }

    /// Replace all checkpoints of `consumer` (reset); output ends are kept.
    pub fn set_checkpoints(&self, consumer: &str, checkpoints: &[PartitionPos]) -> Result<()> {
        let txn = self.begin_write()?;
        replace_checkpoints(&txn, consumer, checkpoints)?;
        txn.commit()?;
        Ok(())
    }

    /// Reset a pond: empty the state of `generation` and replace the
    /// checkpoints of `consumer`, in one transaction (a crash leaves either
    /// the old state and positions or the new ones).
    pub fn reset_pond(
        &self,
        pond: &str,
        generation: u32,
        consumer: &str,
        checkpoints: &[PartitionPos],
    ) -> Result<()> {
        let txn = self.begin_write()?;
        txn.delete_table(pond_table(&pond_table_name(pond, generation)))?;
        replace_checkpoints(&txn, consumer, checkpoints)?;
        txn.commit()?;
        Ok(())
    }

    /// Record (insert or replace) output ends of `owner`; other partitions keep theirs.
    pub fn set_output_ends(&self, owner: &str, ends: &[PartitionPos]) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(OUTPUT_ENDS)?;
            for p in ends {
                table.insert((owner, p.topic.as_str(), p.partition), p.offset)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Remove every checkpoint of one consumer (a dropped pond generation).
    pub fn delete_checkpoints(&self, consumer: &str) -> Result<()> {
        self.set_checkpoints(consumer, &[])
    }

    /// A reader over the committed state of one pond generation.
    pub fn pond_reader(&self, pond: &str, generation: u32) -> Result<PondReader> {
        let txn = self.db.begin_read()?;
        let name = pond_table_name(pond, generation);
        match txn.open_table(pond_table(&name)) {
            Ok(table) => Ok(PondReader::new(Some(table))),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(PondReader::new(None)),
            Err(e) => Err(e.into()),
        }
    }

    /// The committed value of `key` in a pond generation.
    pub fn pond_get(&self, pond: &str, generation: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.pond_reader(pond, generation)?.get(key)
    }

    /// Up to `limit` committed entries whose keys start with `prefix`, in key
    /// order, strictly after `start_after` when given.
    pub fn pond_scan(
        &self,
        pond: &str,
        generation: u32,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.pond_reader(pond, generation)?
            .scan(prefix, start_after, limit)
    }

    /// Drop a pond generation's state (after a rebuild replaced it, or on delete).
    /// Write a pond's changes and nothing else (cluster mode keeps pond
    /// state in the commit stream and a copy here; see `processor::pond_copies`).
    pub fn write_pond(&self, delta: &PondDelta) -> Result<()> {
        let txn = self.begin_write()?;
        write_pond_delta(&txn, delta)?;
        txn.commit()?;
        Ok(())
    }

    /// Make a pond generation hold exactly `entries`, in one transaction:
    /// readers see the old content or the new, never a mix.
    pub fn replace_pond<'a>(
        &self,
        pond: &str,
        generation: u32,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<()> {
        let txn = self.begin_write()?;
        let name = pond_table_name(pond, generation);
        txn.delete_table(pond_table(&name))?;
        {
            let mut table = txn.open_table(pond_table(&name))?;
            for (k, v) in entries {
                table.insert(k, v)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn drop_pond(&self, pond: &str, generation: u32) -> Result<()> {
        let txn = self.begin_write()?;
        let name = pond_table_name(pond, generation);
        txn.delete_table(pond_table(&name))?;
        txn.commit()?;
        Ok(())
    }

    /// The latest snapshot of an aggregate.
    pub fn aggregate(&self, service: &str, aggregate: &str) -> Result<Option<AggregateSnapshot>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AGGREGATES)?;
        match table.get((service, aggregate))? {
            None => Ok(None),
            Some(v) => AggregateSnapshot::decode(v.value())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("aggregate {service}/{aggregate}"),
                    detail: "snapshot does not decode".into(),
                }),
        }
    }

    /// The first result recorded for a command.
    pub fn command_result(&self, service: &str, command_id: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COMMAND_RESULTS)?;
        Ok(table
            .get((service, command_id))?
            .map(|v| v.value().to_vec()))
    }

    /// Store (insert or replace) a plugin's registry record.
    pub fn put_plugin(&self, record: &PluginRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            what: format!("plugin {}", record.name),
            detail: e.to_string(),
        })?;
        let txn = self.begin_write()?;
        txn.open_table(PLUGINS)?
            .insert(record.name.as_str(), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn plugin(&self, name: &str) -> Result<Option<PluginRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PLUGINS)?;
        table
            .get(name)?
            .map(|v| registry::decode(name, v.value()))
            .transpose()
    }

    /// Every registered plugin, by name.
    pub fn plugins(&self) -> Result<Vec<PluginRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PLUGINS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(registry::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Remove a plugin and everything the store keeps for it: its registry
    /// record, the checkpoints and output ends of every consumer named
    /// `name` or `name@…`, its pond generations, aggregates and command results.
    pub fn delete_plugin(&self, name: &str) -> Result<()> {
        let txn = self.begin_write()?;
        txn.open_table(PLUGINS)?.remove(name)?;
        for def in [CHECKPOINTS, OUTPUT_ENDS] {
            let mut table = txn.open_table(def)?;
            let consumers: Vec<String> = table
                .iter()?
                .filter_map(|e| e.ok())
                .map(|(k, _)| k.value().0.to_string())
                .filter(|c| is_consumer_of(c, name))
                .collect();
            for c in consumers {
                remove_consumer(&mut table, &c)?;
            }
        }
        for def in [AGGREGATES, COMMAND_RESULTS] {
            let mut table = txn.open_table(def)?;
            let mut keys = Vec::new();
            for entry in table.range((name, "")..)? {
                let (k, _) = entry?;
                let (service, id) = k.value();
                if service != name {
                    break;
                }
                keys.push(id.to_string());
            }
            for id in keys {
                table.remove((name, id.as_str()))?;
            }
        }
        let prefix = format!("{POND_TABLE_PREFIX}{name}:g");
        let ponds: Vec<String> = txn
            .list_tables()?
            .map(|t| t.name().to_string())
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|g| g.parse::<u32>().is_ok())
            })
            .collect();
        for pond in ponds {
            txn.delete_table(pond_table(&pond))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Measure-only helper for tests: write a set and abort instead of committing.
    #[cfg(test)]
    fn write_then_abort(&self, set: &CommitSet) -> Result<()> {
        let txn = self.begin_write()?;
        write_commit_set(&txn, set)?;
        txn.abort()?;
        Ok(())
    }
}

/// `consumer` belongs to plugin `name`: it is `name` or `name@<suffix>`.
fn is_consumer_of(consumer: &str, name: &str) -> bool {
    consumer == name
        || consumer
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('@'))
}

fn remove_consumer(table: &mut redb::Table<(&str, &str, u32), u64>, consumer: &str) -> Result<()> {
    let mut keys = Vec::new();
    for entry in table.range((consumer, "", 0)..)? {
        let (k, _) = entry?;
        let (c, topic, partition) = k.value();
        if c != consumer {
            break;
        }
        keys.push((topic.to_string(), partition));
    }
    for (topic, partition) in keys {
        table.remove((consumer, topic.as_str(), partition))?;
    }
    Ok(())
}

/// Replace every checkpoint of `consumer` with `checkpoints`.
fn replace_checkpoints(
    txn: &redb::WriteTransaction,
    consumer: &str,
    checkpoints: &[PartitionPos],
) -> Result<()> {
    let mut table = txn.open_table(CHECKPOINTS)?;
    remove_consumer(&mut table, consumer)?;
    for p in checkpoints {
        table.insert((consumer, p.topic.as_str(), p.partition), p.offset)?;
    }
    Ok(())
}

fn write_pond_delta(txn: &redb::WriteTransaction, delta: &PondDelta) -> Result<()> {
    let name = pond_table_name(&delta.pond, delta.generation);
    let mut table = txn.open_table(pond_table(&name))?;
    for (k, v) in delta.writes.iter() {
        match v {
            Some(v) => {
                table.insert(k.as_slice(), v.as_slice())?;
            }
            None => {
                table.remove(k.as_slice())?;
            }
        }
    }
    Ok(())
}

fn write_commit_set(txn: &redb::WriteTransaction, set: &CommitSet) -> Result<()> {
    let consumer = set.consumer.as_str();
    let owner = set.owner.as_str();
    if !set.checkpoints.is_empty() {
        let mut table = txn.open_table(CHECKPOINTS)?;
        for p in &set.checkpoints {
            table.insert((consumer, p.topic.as_str(), p.partition), p.offset)?;
        }
    }
    if !set.output_ends.is_empty() {
        let mut table = txn.open_table(OUTPUT_ENDS)?;
        for p in &set.output_ends {
            table.insert((owner, p.topic.as_str(), p.partition), p.offset)?;
        }
    }
    if let Some(delta) = &set.pond {
        write_pond_delta(txn, delta)?;
    }
    if !set.aggregates.is_empty() {
        let mut table = txn.open_table(AGGREGATES)?;
        for (service, aggregate, snap) in &set.aggregates {
            table.insert(
                (service.as_str(), aggregate.as_str()),
                snap.encode().as_slice(),
            )?;
        }
    }
    if !set.command_results.is_empty() {
        let mut table = txn.open_table(COMMAND_RESULTS)?;
        for (service, id, result) in &set.command_results {
            let key = (service.as_str(), id.as_str());
            if table.get(key)?.is_none() {
                table.insert(key, result.as_slice())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
