//! The projection (pond) worker: batch in → plugin `apply` against the
//! pond's state → the batch's writes commit with its checkpoint.
//!
//! All partition tasks of one pond generation share a [`PondPending`]: the
//! uncommitted writes of recent batches plus their checkpoints. Partitions
//! apply their batches in parallel, optimistically: a batch reads its own
//! writes, then pending writes, then committed state, and remembers which
//! keys it read. When it is merged into the pending writes, a batch that
//! read a key another partition's batch wrote in the meantime is applied
//! again under the pond's lock (serially, so it always makes progress) —
//! the result is as if the batches had been applied one after another, and
//! partitions never lose each other's updates to a shared key. Partitions
//! whose keys do not overlap (the usual case: input keyed like the state)
//! never wait for each other.
//!
//! Pending writes are committed together with the checkpoints when they
//! grow past a bound, after `commit_interval`, when a task catches up, and
//! at every stop: replay commits rarely (fast), live traffic promptly. A
//! crash loses only uncommitted work, which the checkpoints make the tasks
//! redo.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::batch::RecordBatch;
use crate::runtime::{ProjectionInstance, StateAccess};
use crate::store::{CommitSet, PartitionPos, PondDelta, PondReader, Store, WriteSet, scan_merged};

use super::cluster::MAX_STEP_OUTPUTS;
use super::error::EngineError;
use super::metrics::ProcessorMetrics;
use super::task::{
    FailedEvent, Outputs, PolicyOutcome, TaskCtx, TaskError, Worker, add_dead_letters, commit_step,
    slice, with_policy,
};

/// Uncommitted work of one pond generation, shared by its partition tasks.
#[derive(Default)]
pub struct PondPending {
    pub writes: WriteSet,
    pub checkpoints: BTreeMap<(String, u32), u64>,
    pub failed: Vec<FailedEvent>,
    pub since: Option<Instant>,
    /// Committed values this generation's tasks already know (written by
    /// their own commits or read before; `None` = absent), so a replay does
    /// not go back to the store for every key after every commit. Only
    /// these tasks write the generation, so it never goes stale.
    pub known: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Bumped whenever pending work is dropped after a failure: every task
    /// that saw an older epoch must rewind to its committed checkpoint.
    pub epoch: u64,
    /// Batches merged so far. A batch applied without the lock remembers
    /// this number when it starts, to find what was merged meanwhile.
    merged: u64,
    /// Merge number that last wrote each key (since `floor`).
    written: HashMap<Vec<u8>, u64>,
    /// `written` holds no record of merges up to this number (it was
    /// cleared to bound its size): a batch started before it conflicts.
    floor: u64,
    /// Successful commits so far: a reader of committed state opened before
    /// the latest commit is stale.
    commits: u64,
}

/// Keys a batch read from outside its own writes.
#[derive(Default)]
struct ReadSet {
    keys: HashSet<Vec<u8>>,
    /// A scan reads a range: it conflicts with any write merged meanwhile.
    scanned: bool,
}

impl PondPending {
    pub fn new() -> Arc<Mutex<PondPending>> {
        Arc::new(Mutex::new(PondPending::default()))
    }

    fn is_empty(&self) -> bool {
        self.checkpoints.is_empty()
    }

    fn clear(&mut self) {
        self.writes.clear();
        self.checkpoints.clear();
        self.failed.clear();
        self.since = None;
    }

    /// Drop pending work after a failure; every task rewinds.
    fn abandon(&mut self) {
        self.clear();
        self.epoch += 1;
    }

    /// Whether a batch that started at merge number `start` and read
    /// `reads` may have seen state that a batch merged since then changed.
    fn conflicts(&self, start: u64, reads: &ReadSet) -> bool {
        if self.merged == start {
            return false;
        }
        if reads.scanned || start < self.floor {
            return true;
        }
        reads
            .keys
            .iter()
            .any(|k| self.written.get(k).is_some_and(|&at| at > start))
    }

    /// Add one batch's writes to the pending writes, remembering which keys
    /// it wrote (at most `limit` keys are remembered).
    fn merge(&mut self, writes: WriteSet, limit: usize) {
        self.merged += 1;
        if self.written.len() + writes.len() > limit {
            self.written.clear();
            self.floor = self.merged;
        }
        for (key, _) in writes.iter() {
            match self.written.get_mut(key.as_slice()) {
                Some(at) => *at = self.merged,
                None => {
                    self.written.insert(key.clone(), self.merged);
                }
            }
        }
        self.writes.merge(writes);
    }

    /// The value of `key` in pending writes over committed state.
    fn get(
        &mut self,
        committed: &mut CommittedReader<'_>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.map(<[u8]>::to_vec));
        }
        if let Some(v) = self.known.get(key) {
            return Ok(v.clone());
        }
        let v = committed
            .current(self.commits)?
            .get(key)
            .map_err(|e| e.to_string())?;
        self.known.insert(key.to_vec(), v.clone());
        Ok(v)
    }
}

/// Committed state of one pond generation, reopened after each commit so
/// it never lags the pending writes it sits under.
enum CommittedReader<'a> {
    /// Queries: one read transaction.
    Fixed(&'a PondReader),
    Live {
        store: &'a Store,
        pond: &'a str,
        generation: u32,
        /// The commit count `reader` was opened after.
        commits: u64,
        reader: Option<PondReader>,
    },
}

impl CommittedReader<'_> {
    fn current(&mut self, commits_now: u64) -> Result<&PondReader, String> {
        match self {
            CommittedReader::Fixed(reader) => Ok(reader),
            CommittedReader::Live {
                store,
                pond,
                generation,
                commits,
                reader,
            } => {
                if reader.is_none() || *commits != commits_now {
                    let opened = store
                        .pond_reader(pond, *generation)
                        .map_err(|e| e.to_string())?;
                    *commits = commits_now;
                    *reader = Some(opened);
                }
                reader.as_ref().ok_or_else(|| "no pond reader".to_string())
            }
        }
    }
}

/// How a batch reaches the pond's pending work.
enum PendingAccess<'a> {
    /// The caller holds the lock (a serial re-apply, or a query).
    Locked(&'a mut PondPending),
    /// Lock per access (an optimistic apply beside other partitions).
    Shared(&'a Mutex<PondPending>),
}

impl PendingAccess<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut PondPending) -> R) -> R {
        match self {
            PendingAccess::Locked(p) => f(p),
            PendingAccess::Shared(m) => f(&mut m.lock()),
        }
    }
}

/// The state a projection sees while applying one (sub-)batch: its own
/// writes over its batch's earlier sub-batches' writes over the pond's
/// pending writes over the committed state.
struct BatchState<'s, 'p, 'c> {
    pending: &'s mut PendingAccess<'p>,
    committed: &'s mut CommittedReader<'c>,
    earlier: &'s WriteSet,
    writes: WriteSet,
    reads: &'s mut ReadSet,
    /// A store read failed: the batch must not commit.
    read_error: Option<String>,
}

impl StateAccess for BatchState<'_, '_, '_> {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.writes.get(key).or_else(|| self.earlier.get(key)) {
            return v.map(<[u8]>::to_vec);
        }
        if !self.reads.keys.contains(key) {
            self.reads.keys.insert(key.to_vec());
        }
        let committed = &mut *self.committed;
        match self.pending.with(|p| p.get(committed, key)) {
            Ok(v) => v,
            Err(e) => {
                self.read_error = Some(e);
                None
            }
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.writes.put(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        self.writes.delete(key.to_vec());
    }

    fn scan(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.reads.scanned = true;
        let (own, earlier, committed) = (&self.writes, self.earlier, &mut *self.committed);
        let result = self.pending.with(|p| {
            let mut overlay = WriteSet::new();
            for layer in [&p.writes, earlier, own] {
                for (k, v) in layer.range(prefix, start_after) {
                    match v {
                        Some(v) => overlay.put(k.to_vec(), v.to_vec()),
                        None => overlay.delete(k.to_vec()),
                    }
                }
            }
            let reader = committed.current(p.commits)?;
            scan_merged(reader, &overlay, prefix, start_after, limit as usize)
                .map_err(|e| e.to_string())
        });
        result.unwrap_or_else(|e| {
            self.read_error = Some(e);
            Vec::new()
        })
    }
}

pub struct ProjectionWorker {
    instance: ProjectionInstance,
    pending: Arc<Mutex<PondPending>>,
    generation: u32,
    /// The pending epoch this task's position is based on.
    epoch: u64,
}

/// What applying one batch produced, not yet merged into the pending work.
struct Applied {
    outcome: PolicyOutcome<()>,
    writes: WriteSet,
    reads: ReadSet,
    read_error: Option<String>,
}

impl ProjectionWorker {
    pub fn new(
        ctx: &TaskCtx,
        pending: Arc<Mutex<PondPending>>,
        generation: u32,
    ) -> Result<Self, EngineError> {
        let limits = ctx.manifest.limits(&ctx.shared.runtime.default_limits());
        let instance = ctx
            .plugin
            .projection(&ctx.proc.name, limits, &ctx.manifest.config_json())
            .map_err(|e| EngineError::Plugin(e.to_string()))?;
        let epoch = pending.lock().epoch;
        Ok(ProjectionWorker {
            instance,
            pending,
            generation,
            epoch,
        })
    }

    /// Run the plugin over `batch` (with the failure policy), collecting
    /// its writes and the keys it read.
    fn apply(
        &mut self,
        ctx: &TaskCtx,
        batch: &RecordBatch,
        mut pending: PendingAccess<'_>,
    ) -> Result<Applied, TaskError> {
        let mut committed = CommittedReader::Live {
            store: &ctx.shared.store,
            pond: &ctx.proc.name,
            generation: self.generation,
            commits: 0,
            reader: None,
        };
        let instance = &mut self.instance;
        let mut writes = WriteSet::new();
        let mut reads = ReadSet::default();
        let mut read_error = None;
        // Writes are merged into `writes`, which the commit thresholds bound.
        let outcome = with_policy(ctx, batch, |_| 0, &mut |sub| {
            let mut state = BatchState {
                pending: &mut pending,
                committed: &mut committed,
                earlier: &writes,
                writes: WriteSet::new(),
                reads: &mut reads,
                read_error: None,
            };
            instance.apply(&ctx.topic, ctx.partition, sub, &mut state)?;
            if let Some(e) = state.read_error {
                read_error = Some(e);
            }
            let sub_writes = state.writes;
            writes.merge(sub_writes);
            Ok(())
        })?;
        Ok(Applied {
            outcome,
            writes,
            reads,
            read_error,
        })
    }

    fn commit(&self, ctx: &TaskCtx, pending: &mut PondPending) -> Result<(), TaskError> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut set = CommitSet::new(ctx.consumer.clone());
        set.owner = ctx.proc.name.clone();
        for ((topic, partition), offset) in &pending.checkpoints {
            set.checkpoints.push(PartitionPos {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            });
        }
        set.pond = Some(PondDelta {
            pond: ctx.proc.name.clone(),
            generation: self.generation,
            writes: std::mem::take(&mut pending.writes),
        });
        let mut outputs = Outputs::new();
        add_dead_letters(ctx, &pending.failed, &mut outputs);
        let result = commit_step(ctx, &outputs, &mut set);
        match result {
            Ok(()) => {
                pending.clear();
                pending.commits += 1;
                // What was just committed is known committed state.
                let limit = ctx.shared.config.commit_max_writes;
                if let Some(delta) = set.pond {
                    if pending.known.len() + delta.writes.len() > limit {
                        pending.known.clear();
                    }
                    pending.known.extend(delta.writes.into_entries());
                }
            }
            // The work is gone: every task redoes it from the committed checkpoints.
            Err(_) => pending.abandon(),
        }
        result
    }

    /// Drop all pending work (every task rewinds) and fail with `e`.
    fn abandon(&mut self, pending: &mut PondPending, e: TaskError) -> TaskError {
        pending.abandon();
        self.epoch = pending.epoch;
        e
    }
}

impl Worker for ProjectionWorker {
    fn handle(&mut self, ctx: &TaskCtx, batch: &RecordBatch) -> Result<u64, TaskError> {
        let next = batch.offsets.last().map_or(0, |o| o + 1);
        let pending_lock = self.pending.clone();
        let start = {
            let pending = pending_lock.lock();
            if pending.epoch != self.epoch {
                self.epoch = pending.epoch;
                return Err(TaskError::Rewind);
            }
            pending.merged
        };
        // Beside the other partitions, without the lock.
        let applied = self.apply(ctx, batch, PendingAccess::Shared(&pending_lock));
        let mut pending = pending_lock.lock();
        if pending.epoch != self.epoch {
            // Another task dropped the pending work this batch was applied on.
            self.epoch = pending.epoch;
            return Err(TaskError::Rewind);
        }
        let applied = match applied {
            Ok(a) if pending.conflicts(start, &a.reads) => {
                // It read what another partition changed meanwhile: again, serially.
                ProcessorMetrics::add(&ctx.metrics().reapplied, 1);
                self.apply(ctx, batch, PendingAccess::Locked(&mut pending))
            }
            other => other,
        };
        // On failure part of this task's earlier batches may be pending
        // without a commit: drop all pending work so nothing is applied twice.
        let applied = match applied {
            Ok(a) => a,
            Err(e) => return Err(self.abandon(&mut pending, e)),
        };
        if let Some(e) = applied.read_error {
            let e = TaskError::Infra(format!("pond read failed: {e}"));
            return Err(self.abandon(&mut pending, e));
        }
        if ctx.cluster.is_some() {
            // In cluster mode one commit holds a bounded number of messages.
            let size = applied.writes.len() + applied.outcome.failed.len();
            if size > MAX_STEP_OUTPUTS {
                if batch.len() == 1 {
                    return Err(TaskError::Infra(format!(
                        "one event wrote {size} keys and dead letters; in cluster mode a commit holds at most {MAX_STEP_OUTPUTS}"
                    )));
                }
                // Nothing of this batch is merged: apply it again as two.
                drop(pending);
                let half = batch.len() / 2;
                let first = self.handle(ctx, &slice(batch, 0..half))?;
                if first != batch.offsets[half] {
                    return Ok(first); // cut short (a budget or a stop): go on from there
                }
                return self.handle(ctx, &slice(batch, half..batch.len()));
            }
            if pending.writes.len() + pending.failed.len() + size > MAX_STEP_OUTPUTS
                && let Err(e) = self.commit(ctx, &mut pending)
            {
                self.epoch = pending.epoch;
                return Err(e);
            }
        }
        let cfg = &ctx.shared.config;
        pending.merge(applied.writes, cfg.commit_max_writes);
        let outcome = applied.outcome;
        let next = outcome.next(next);
        let stopping = outcome.stopped.is_some();
        pending.failed.extend(outcome.failed.iter().cloned());
        pending
            .checkpoints
            .insert((ctx.topic.clone(), ctx.partition), next);
        let since = *pending.since.get_or_insert_with(Instant::now);
        let due = pending.writes.len() >= cfg.commit_max_writes
            || pending.writes.approx_bytes() >= cfg.commit_max_bytes
            || since.elapsed() >= cfg.commit_interval
            || !pending.failed.is_empty()
            || stopping;
        if due && let Err(e) = self.commit(ctx, &mut pending) {
            self.epoch = pending.epoch;
            return Err(e);
        }
        outcome.finish()?;
        Ok(next)
    }

    fn flush(&mut self, ctx: &TaskCtx) -> Result<(), TaskError> {
        let pending_lock = self.pending.clone();
        let mut pending = pending_lock.lock();
        if pending.epoch != self.epoch {
            self.epoch = pending.epoch;
            return Err(TaskError::Rewind);
        }
        let result = self.commit(ctx, &mut pending);
        self.epoch = pending.epoch;
        result
    }
}

/// Run a read-only query against a pond's committed state.
pub fn query(
    instance: &mut ProjectionInstance,
    committed: &PondReader,
    request: &[u8],
) -> Result<Result<Vec<u8>, String>, crate::runtime::CallError> {
    let mut nothing_pending = PondPending::default();
    let mut state = BatchState {
        pending: &mut PendingAccess::Locked(&mut nothing_pending),
        committed: &mut CommittedReader::Fixed(committed),
        earlier: &WriteSet::new(),
        writes: WriteSet::new(),
        reads: &mut ReadSet::default(),
        read_error: None,
    };
    instance.query(request, &mut state)
}
