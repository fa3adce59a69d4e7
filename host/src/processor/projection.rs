//! The projection (pond) worker: batch in → plugin `apply` against the
//! pond's state → the batch's writes commit with its checkpoint.
//!
//! All partition tasks of one pond generation share a [`PondPending`]: the
//! uncommitted writes of recent batches plus their checkpoints. A batch is
//! applied under its lock, reading its own writes, then pending writes,
//! then committed state — so partitions of one pond never lose each other's
//! updates to a shared key. Pending writes are committed together with the
//! checkpoints when they grow past a bound, after `commit_interval`, when a
//! task catches up, and at every stop: replay commits rarely (fast), live
//! traffic promptly. A crash loses only uncommitted work, which the
//! checkpoints make the tasks redo.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::batch::RecordBatch;
use crate::runtime::{ProjectionInstance, StateAccess};
use crate::store::{CommitSet, PartitionPos, PondDelta, PondReader, WriteSet, scan_merged};

use super::EngineError;
use super::task::{
    FailedEvent, Outputs, TaskCtx, TaskError, Worker, add_dead_letters, commit_step, with_policy,
};

/// Uncommitted work of one pond generation, shared by its partition tasks.
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
}

impl PondPending {
    pub fn new() -> Arc<Mutex<PondPending>> {
        Arc::new(Mutex::new(PondPending {
            writes: WriteSet::new(),
            checkpoints: BTreeMap::new(),
            failed: Vec::new(),
            since: None,
            known: HashMap::new(),
            epoch: 0,
        }))
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
}

/// The state a projection sees while applying one batch: its own writes
/// over the pond's pending writes over the committed state.
pub struct LayeredState<'a> {
    pub committed: &'a PondReader,
    pub known: Option<&'a mut HashMap<Vec<u8>, Option<Vec<u8>>>>,
    pub pending: &'a WriteSet,
    pub writes: WriteSet,
    /// A store read failed: the batch must not commit.
    pub read_error: Option<String>,
}

impl LayeredState<'_> {
    fn committed_get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.known.as_ref().and_then(|k| k.get(key)) {
            return v.clone();
        }
        match self.committed.get(key) {
            Ok(v) => {
                if let Some(known) = self.known.as_mut() {
                    known.insert(key.to_vec(), v.clone());
                }
                v
            }
            Err(e) => {
                self.read_error = Some(e.to_string());
                None
            }
        }
    }
}

impl StateAccess for LayeredState<'_> {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.writes.get(key) {
            return v.map(<[u8]>::to_vec);
        }
        if let Some(v) = self.pending.get(key) {
            return v.map(<[u8]>::to_vec);
        }
        self.committed_get(key)
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
        let mut overlay = WriteSet::new();
        for layer in [self.pending, &self.writes] {
            for (k, v) in layer.range(prefix, start_after) {
                match v {
                    Some(v) => overlay.put(k.to_vec(), v.to_vec()),
                    None => overlay.delete(k.to_vec()),
                }
            }
        }
        match scan_merged(
            self.committed,
            &overlay,
            prefix,
            start_after,
            limit as usize,
        ) {
            Ok(v) => v,
            Err(e) => {
                self.read_error = Some(e.to_string());
                Vec::new()
            }
        }
    }
}

pub struct ProjectionWorker {
    instance: ProjectionInstance,
    pending: Arc<Mutex<PondPending>>,
    generation: u32,
    /// The pending epoch this task's position is based on.
    epoch: u64,
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
}

impl Worker for ProjectionWorker {
    fn handle(&mut self, ctx: &TaskCtx, batch: &RecordBatch) -> Result<u64, TaskError> {
        let next = batch.offsets.last().map_or(0, |o| o + 1);
        let pending_lock = self.pending.clone();
        let mut pending = pending_lock.lock();
        if pending.epoch != self.epoch {
            self.epoch = pending.epoch;
            return Err(TaskError::Rewind);
        }
        let committed = ctx
            .shared
            .store
            .pond_reader(&ctx.proc.name, self.generation)?;
        let instance = &mut self.instance;
        let mut read_error = None;
        let outcome = {
            let pending_ref = &mut *pending;
            with_policy(ctx, batch, &mut |sub| {
                let mut state = LayeredState {
                    committed: &committed,
                    known: Some(&mut pending_ref.known),
                    pending: &pending_ref.writes,
                    writes: WriteSet::new(),
                    read_error: None,
                };
                instance.apply(&ctx.topic, ctx.partition, sub, &mut state)?;
                if let Some(e) = state.read_error {
                    read_error = Some(e);
                }
                let writes = state.writes;
                pending_ref.writes.merge(writes);
                Ok(())
            })
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // Part of this batch may be in the pending writes without its
                // checkpoint: drop all pending work so nothing is applied twice.
                pending.abandon();
                self.epoch = pending.epoch;
                return Err(e);
            }
        };
        if let Some(e) = read_error {
            pending.abandon();
            self.epoch = pending.epoch;
            return Err(TaskError::Infra(format!("pond read failed: {e}")));
        }
        let next = outcome.next(next);
        let stopping = outcome.stopped.is_some();
        pending.failed.extend(outcome.failed.iter().cloned());
        pending
            .checkpoints
            .insert((ctx.topic.clone(), ctx.partition), next);
        let since = *pending.since.get_or_insert_with(Instant::now);
        let cfg = &ctx.shared.config;
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
    let empty = WriteSet::new();
    let mut state = LayeredState {
        committed,
        known: None,
        pending: &empty,
        writes: WriteSet::new(),
        read_error: None,
    };
    instance.query(request, &mut state)
}
