//! The enricher (river) worker: batch in → plugin `process` → records out.
//! Each emitted record goes to the manifest output it names, to the
//! partition of its key (`partition_for`), stamped with its source event's
//! timestamp; outputs, dead letters and the input checkpoint commit together.

use std::sync::Arc;

use crate::batch::{Record, RecordBatch};
use crate::runtime::{CallError, Emitted, EnricherInstance};
use crate::store::{CommitSet, PartitionPos};

use super::cluster::MAX_STEP_OUTPUTS;
use super::error::EngineError;
use super::shared::PondLookupImpl;
use super::task::{
    Outputs, TaskCtx, TaskError, Worker, add_dead_letters, check_output_sizes, commit_step, slice,
    with_policy,
};

pub struct EnricherWorker {
    instance: EnricherInstance,
}

impl EnricherWorker {
    pub fn new(ctx: &TaskCtx) -> Result<Self, EngineError> {
        let limits = ctx.manifest.limits(&ctx.shared.runtime.default_limits());
        let lookup = Arc::new(PondLookupImpl {
            shared: Arc::downgrade(&ctx.shared),
        });
        let mut instance = ctx
            .plugin
            .enricher(&ctx.proc.name, limits, &ctx.manifest.config_json(), lookup)
            .map_err(|e| EngineError::Plugin(e.to_string()))?;
        instance.set_output_count(ctx.manifest.outputs.len() as u32);
        Ok(EnricherWorker { instance })
    }
}

/// Emitted records of one (sub-)batch as (output index, record).
fn records_of(emitted: &Emitted, batch: &RecordBatch) -> Vec<(u32, Record)> {
    (0..emitted.len())
        .map(|i| {
            let source = emitted.sources[i] as usize;
            let record = Record {
                key: emitted.key(i).to_vec(),
                value: emitted.value(i).to_vec(),
                headers: emitted
                    .headers(i)
                    .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec()))
                    .collect(),
                timestamp: batch.timestamps.get(source).copied().unwrap_or_default(),
            };
            (emitted.outputs[i], record)
        })
        .collect()
}

/// What a call's output holds in memory until the step commits.
fn held_bytes(records: &[(u32, Record)]) -> usize {
    records
        .iter()
        .map(|(_, r)| {
            let headers: usize = r.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
            r.key.len() + r.value.len() + headers
        })
        .sum()
}

impl Worker for EnricherWorker {
    fn handle(&mut self, ctx: &TaskCtx, batch: &RecordBatch) -> Result<u64, TaskError> {
        let next = batch.offsets.last().map_or(0, |o| o + 1);
        let instance = &mut self.instance;
        let mut outcome = with_policy(ctx, batch, |records| held_bytes(records), &mut |sub| {
            let emitted = instance.process(&ctx.topic, ctx.partition, sub)?;
            let records = records_of(&emitted, sub);
            check_output_sizes(ctx, records.iter().map(|(_, r)| r))?;
            if ctx.cluster.is_some() && sub.len() == 1 && records.len() > MAX_STEP_OUTPUTS {
                return Err(CallError::InvalidOutput {
                    message: format!(
                        "one event emitted {} records; in cluster mode a step commits at most {MAX_STEP_OUTPUTS}",
                        records.len()
                    ),
                });
            }
            Ok(records)
        })?;
        let next = outcome.next(next);
        let mut outputs = Outputs::new();
        for (output, record) in std::mem::take(&mut outcome.done).into_iter().flatten() {
            let Some(topic) = ctx.manifest.outputs.get(output as usize) else {
                return Err(TaskError::Infra(format!(
                    "plugin named output {output}, which does not exist"
                )));
            };
            let partition = ctx.log().partition_for(topic, &record.key)?;
            outputs
                .entry((topic.clone(), partition))
                .or_default()
                .push(record);
        }
        add_dead_letters(ctx, &outcome.failed, &mut outputs);
        let count: usize = outputs.values().map(Vec::len).sum();
        if ctx.cluster.is_some() && count > MAX_STEP_OUTPUTS && batch.len() > 1 {
            // One commit holds a bounded number of messages: redo the batch
            // as two steps (nothing of it is committed yet; rivers keep no state).
            let half = batch.len() / 2;
            let first = self.handle(ctx, &slice(batch, 0..half))?;
            if first != batch.offsets[half] {
                return Ok(first); // cut short (a budget or a stop): go on from there
            }
            return self.handle(ctx, &slice(batch, half..batch.len()));
        }
        let mut set = CommitSet::new(ctx.consumer.clone());
        set.checkpoints.push(PartitionPos {
            topic: ctx.topic.clone(),
            partition: ctx.partition,
            offset: next,
        });
        commit_step(ctx, &outputs, &mut set)?;
        outcome.finish()?;
        Ok(next)
    }

    fn flush(&mut self, _ctx: &TaskCtx) -> Result<(), TaskError> {
        Ok(())
    }
}
