//! One partition task: the drive loop over one input partition, the failure
//! policy (retries with backoff, isolating the failing event, DLQ / skip /
//! stop), and the exactly-once commit of a step's outputs.
//!
//! A task runs on its own OS thread (plugin calls block). It reads batches
//! in offset order from its checkpoint, waits on the log (no polling) when
//! caught up, and checks its stop flag between batches: stopping is always
//! at a batch boundary, after the batch's commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::batch::{Record, RecordBatch};
use crate::log::{EventLog, LogError};
use crate::runtime::{CallError, Plugin};
use crate::store::{CommitSet, PartitionPos};

use super::manifest::{ErrorPolicy, Manifest};
use super::metrics::{LastError, ProcessorMetrics};
use super::shared::{Shared, now_ms};

/// Header names the host writes.
pub mod headers {
    pub const ERROR: &str = "weir-error";
    pub const PLUGIN_VERSION: &str = "weir-plugin-version";
    pub const PLUGIN_SHA256: &str = "weir-plugin-sha256";
    pub const SOURCE_TOPIC: &str = "weir-source-topic";
    pub const SOURCE_PARTITION: &str = "weir-source-partition";
    pub const SOURCE_OFFSET: &str = "weir-source-offset";
    pub const COMMAND_ID: &str = "weir-command-id";
    pub const COMMAND: &str = "weir-command";
    pub const EXPECTED_VERSION: &str = "weir-expected-version";
    pub const REPLY_TOPIC: &str = "weir-reply-topic";
    pub const EVENT: &str = "weir-event";
    pub const VERSION: &str = "weir-version";
    pub const CORRELATION_ID: &str = "weir-correlation-id";
}

/// Why a task stopped processing (it never loses a committed effect).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Error policy `stop` tripped: the processor halts at this event.
    #[error("stopped by error policy: {0}")]
    PolicyStop(String),
    /// The log or store failed; the batch is retried after a pause.
    #[error("{0}")]
    Infra(String),
    /// A test failpoint simulated a crash between append and commit.
    #[error("simulated crash")]
    Crash,
    /// Uncommitted work shared with other tasks was dropped: continue from
    /// the committed checkpoint.
    #[error("rewinding to the committed checkpoint")]
    Rewind,
    /// Cluster mode: another host took the partition over; this task ends
    /// without committing anything more.
    #[error("another host took this partition over")]
    Fenced,
}

impl From<LogError> for TaskError {
    fn from(e: LogError) -> Self {
        TaskError::Infra(format!("log: {e}"))
    }
}

impl From<crate::store::StoreError> for TaskError {
    fn from(e: crate::store::StoreError) -> Self {
        TaskError::Infra(format!("store: {e}"))
    }
}

/// What one task needs to know: where it reads, for whom, with what.
pub struct TaskCtx {
    pub shared: Arc<Shared>,
    pub proc: Arc<super::registry::Processor>,
    pub manifest: Arc<Manifest>,
    pub plugin: Plugin,
    pub version: u32,
    /// Checkpoint owner (`name`, or `name@g<generation>` for a pond).
    pub consumer: String,
    pub topic: String,
    pub partition: u32,
    pub stop: Arc<AtomicBool>,
    /// Set while this task has nothing left to read (for rebuild switching).
    pub caught_up: Arc<AtomicBool>,
    /// Cluster mode: the claimed partition this task commits to (instead
    /// of the store).
    pub cluster: Option<Arc<super::cluster::Slot>>,
}

impl TaskCtx {
    /// The context of `active`'s task over `topic`/`partition` for
    /// `generation`, stopping with `stop` (not caught up, on the store).
    pub fn new(
        shared: &Arc<Shared>,
        proc: &Arc<super::registry::Processor>,
        active: &super::registry::Active,
        generation: u32,
        topic: &str,
        partition: u32,
        stop: &Arc<AtomicBool>,
    ) -> TaskCtx {
        TaskCtx {
            shared: shared.clone(),
            proc: proc.clone(),
            manifest: active.manifest.clone(),
            plugin: active.plugin.clone(),
            version: active.version,
            consumer: proc.consumer(generation),
            topic: topic.to_string(),
            partition,
            stop: stop.clone(),
            caught_up: Arc::new(AtomicBool::new(false)),
            cluster: None,
        }
    }

    pub fn log(&self) -> &dyn EventLog {
        &*self.shared.log
    }

    pub fn metrics(&self) -> &ProcessorMetrics {
        &self.proc.metrics
    }

    pub fn note_error(&self, message: String, offset: Option<u64>) {
        tracing::warn!(processor = %self.proc.name, topic = %self.topic, partition = self.partition, ?offset, "{message}");
        self.metrics().record_error(LastError {
            message,
            at_ms: now_ms(),
            topic: Some(self.topic.clone()),
            partition: Some(self.partition),
            offset,
        });
    }

    /// Sleep up to `d`, waking early when asked to stop. True if stopping.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
        true
    }
}

/// A kind-specific worker driven by [`run`].
pub trait Worker {
    /// Process one non-empty batch and commit its effects (or keep them
    /// pending for [`Worker::flush`]). Returns the next offset to read.
    fn handle(&mut self, ctx: &TaskCtx, batch: &RecordBatch) -> Result<u64, TaskError>;
    /// Commit anything pending (caught up, or stopping).
    fn flush(&mut self, ctx: &TaskCtx) -> Result<(), TaskError>;
    /// Forget in-memory state that may be ahead of the store (after an error).
    fn reset_cache(&mut self) {}
}

/// The drive loop. Returns when the stop flag is set or the processor stops.
pub fn run(ctx: TaskCtx, mut worker: Box<dyn Worker>, mut next: u64) {
    let idle = ctx.shared.config.idle_wait;
    // Live traffic gets small batches (latency); a task that is behind gets
    // large ones (fewer plugin calls and state accesses per event).
    let live = (ctx.manifest.max_batch(), ctx.shared.config.max_batch_bytes);
    let catch_up = (
        ctx.manifest.catch_up_batch().max(live.0),
        ctx.shared.config.catch_up_batch_bytes.max(live.1),
    );
    let mut behind = false;
    let mut infra_backoff = Duration::from_millis(50);
    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            if let Err(e) = worker.flush(&ctx) {
                ctx.note_error(format!("final commit failed: {e}"), Some(next));
            }
            return;
        }
        let (max_records, max_bytes) = if behind { catch_up } else { live };
        let batch = match ctx
            .log()
            .read(&ctx.topic, ctx.partition, next, max_records, max_bytes)
        {
            Ok(b) => {
                // A full read (by count or, roughly, by bytes) means more is waiting.
                behind = b.len() >= max_records || b.keys.len() + b.values.len() >= max_bytes / 2;
                b
            }
            Err(LogError::OffsetOutOfRange { offset, start, end }) => {
                // Retention moved past the checkpoint, or (power loss with
                // fsync never) the log lost records the store had seen.
                let to = if offset < start { start } else { end };
                ctx.note_error(
                    format!("checkpoint {offset} outside {start}..{end}; continuing at {to}"),
                    Some(offset),
                );
                next = to;
                continue;
            }
            Err(e @ (LogError::UnknownTopic(_) | LogError::Closed)) => {
                // The input went away (or the log is shutting down): idle until stopped.
                ctx.note_error(format!("cannot read input: {e}"), Some(next));
                ctx.sleep(idle.max(Duration::from_secs(1)));
                continue;
            }
            Err(e) => {
                ctx.note_error(format!("read failed: {e}"), Some(next));
                ctx.sleep(infra_backoff);
                continue;
            }
        };
        if batch.is_empty() {
            if let Err(e) = worker.flush(&ctx) {
                if recover(&ctx, &mut *worker, e, &mut infra_backoff, &mut next) {
                    return;
                }
                continue;
            }
            ctx.caught_up.store(true, Ordering::Relaxed);
            // Blocks until new data or the timeout; the timeout bounds stop latency.
            let _ = ctx.log().wait_for(&ctx.topic, ctx.partition, next, idle);
            continue;
        }
        ctx.caught_up.store(false, Ordering::Relaxed);
        ProcessorMetrics::add(&ctx.metrics().batches, 1);
        ProcessorMetrics::add(&ctx.metrics().events_in, batch.len() as u64);
        match worker.handle(&ctx, &batch) {
            Ok(n) => {
                next = n;
                infra_backoff = Duration::from_millis(50);
            }
            Err(e) => {
                if recover(&ctx, &mut *worker, e, &mut infra_backoff, &mut next) {
                    return;
                }
            }
        }
    }
}

/// After a failed step: drop in-memory state that may be ahead of the
/// store and continue from the committed checkpoint. True when the task must end.
fn recover(
    ctx: &TaskCtx,
    worker: &mut dyn Worker,
    e: TaskError,
    backoff: &mut Duration,
    next: &mut u64,
) -> bool {
    worker.reset_cache();
    if handle_task_error(ctx, e, backoff) {
        return true;
    }
    loop {
        match committed_position(ctx) {
            Ok(o) => {
                *next = o;
                return false;
            }
            Err(e) => {
                ctx.note_error(format!("cannot read checkpoint: {e}"), None);
                if ctx.sleep(*backoff) {
                    return true;
                }
            }
        }
    }
}

/// React to a failed step. True when the task must end.
fn handle_task_error(ctx: &TaskCtx, e: TaskError, backoff: &mut Duration) -> bool {
    match e {
        TaskError::PolicyStop(reason) => {
            ctx.proc.halt(&ctx.shared, reason);
            true
        }
        TaskError::Crash => {
            ctx.proc.set_crashed(true);
            true
        }
        TaskError::Infra(msg) => {
            ctx.note_error(msg, None);
            ctx.sleep(*backoff);
            *backoff = (*backoff * 2).min(Duration::from_secs(5));
            false
        }
        TaskError::Rewind => false,
        TaskError::Fenced => {
            tracing::info!(processor = %ctx.proc.name, topic = %ctx.topic, partition = ctx.partition, "partition taken over by another host; stopping here");
            true
        }
    }
}

/// Where a task starts: its committed checkpoint (or the input's start).
pub fn committed_position(ctx: &TaskCtx) -> Result<u64, TaskError> {
    let committed = match &ctx.cluster {
        Some(slot) => slot.position(&ctx.topic, ctx.partition)?,
        None => ctx
            .shared
            .store
            .checkpoint(&ctx.consumer, &ctx.topic, ctx.partition)?,
    };
    match committed {
        Some(o) => Ok(o),
        None => Ok(ctx.log().start_offset(&ctx.topic, ctx.partition)?),
    }
}

/// An event the plugin kept failing on.
#[derive(Debug, Clone)]
pub struct FailedEvent {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub record: Record,
    pub error: String,
}

/// The events of `batch` in `range` as a batch of their own.
pub fn slice(batch: &RecordBatch, range: std::ops::Range<usize>) -> RecordBatch {
    let mut out = RecordBatch::default();
    for i in range {
        out.push_parts(
            batch.offsets[i],
            batch.timestamps[i],
            batch.key(i),
            batch.value(i),
            batch.headers(i),
        );
    }
    out
}

/// What [`with_policy`] made of a batch.
pub struct PolicyOutcome<T> {
    /// Results of the (sub-)batches that succeeded, in offset order.
    pub done: Vec<T>,
    /// Events for the dead-letter topic (policy `dlq`).
    pub failed: Vec<FailedEvent>,
    /// Events dropped (policy `skip`), with why.
    pub skipped: Vec<FailedEvent>,
    /// Policy `stop` tripped at this offset (why): everything before it is
    /// in `done`; it and everything after it must not be committed.
    pub stopped: Option<(u64, String)>,
    /// Bytes held in `done` (as `with_policy`'s `weigh` counts them).
    held: usize,
    /// The results reached the step's budget before this offset: everything
    /// before it is in `done`, and it is where the next step starts.
    cut: Option<u64>,
}

impl<T> PolicyOutcome<T> {
    /// The checkpoint to commit: the stop offset, the cut, or past the batch.
    pub fn next(&self, batch_next: u64) -> u64 {
        match (&self.stopped, self.cut) {
            (Some((offset, _)), _) => *offset,
            (None, Some(offset)) => offset,
            (None, None) => batch_next,
        }
    }

    /// After committing: end the task if the policy stopped it.
    pub fn finish(self) -> Result<(), TaskError> {
        match self.stopped {
            Some((_, reason)) => Err(TaskError::PolicyStop(reason)),
            None => Ok(()),
        }
    }
}

/// Run `call` over `batch` with the processor's retry policy. When a batch
/// keeps failing, the failing event is isolated (by the failure's event
/// index, else by halving) and the policy applies to it alone; the rest of
/// the batch is processed. `call` gets each (sub-)batch once per attempt
/// and must leave no effect when it fails.
///
/// Results wait in memory until the step commits, and isolating a failure
/// calls the plugin once per part, so a batch's results are bounded by no
/// single call: once `weigh` puts them at the engine's `commit_max_bytes`,
/// the remaining parts are left for the next step ([`PolicyOutcome::next`]
/// is then where they begin).
pub fn with_policy<T>(
    ctx: &TaskCtx,
    batch: &RecordBatch,
    weigh: fn(&T) -> usize,
    call: &mut dyn FnMut(&RecordBatch) -> Result<T, CallError>,
) -> Result<PolicyOutcome<T>, TaskError> {
    let mut out = PolicyOutcome {
        done: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        stopped: None,
        held: 0,
        cut: None,
    };
    let mut call = Weighed { call, weigh };
    match attempt(ctx, batch, &mut call, ctx.manifest.retries, &mut out) {
        Ok(()) => Ok(out),
        Err(TaskError::PolicyStop(_)) if out.stopped.is_some() => Ok(out),
        Err(e) => Err(e),
    }
}

/// A plugin call and how to weigh what it returns.
struct Weighed<'a, T> {
    call: &'a mut dyn FnMut(&RecordBatch) -> Result<T, CallError>,
    weigh: fn(&T) -> usize,
}

fn attempt<T>(
    ctx: &TaskCtx,
    batch: &RecordBatch,
    call: &mut Weighed<'_, T>,
    retries: u32,
    out: &mut PolicyOutcome<T>,
) -> Result<(), TaskError> {
    let mut tries = 0;
    let error = loop {
        let start = Instant::now();
        let result = (call.call)(batch);
        ctx.metrics().observe_call(start.elapsed());
        match result {
            Ok(t) => {
                out.held += (call.weigh)(&t);
                out.done.push(t);
                return Ok(());
            }
            Err(e) => {
                ctx.note_error(
                    format!("plugin v{}: {e}", ctx.version),
                    batch.offsets.first().copied(),
                );
                if tries >= retries {
                    break e;
                }
                if ctx.sleep(ctx.manifest.backoff(tries)) {
                    // Stopping: leave the batch uncommitted; it is redone later.
                    return Err(TaskError::Infra("stopping during retries".into()));
                }
                tries += 1;
            }
        }
    };
    let n = batch.len();
    if n > 1 {
        // Isolate the culprit; sub-batches get one try, a single event the full policy.
        let parts: Vec<std::ops::Range<usize>> = match &error {
            CallError::Failure {
                event_index: Some(i),
                ..
            } if (*i as usize) < n => {
                let i = *i as usize;
                vec![0..i, i..i + 1, i + 1..n]
            }
            _ => vec![0..n / 2, n / 2..n],
        };
        for r in parts.into_iter().filter(|r| !r.is_empty()) {
            if out.cut.is_some() {
                return Ok(());
            }
            if out.held >= ctx.shared.config.commit_max_bytes {
                out.cut = Some(batch.offsets[r.start]);
                return Ok(());
            }
            let sub = slice(batch, r.clone());
            let sub_retries = if r.len() == 1 {
                ctx.manifest.retries
            } else {
                0
            };
            attempt(ctx, &sub, call, sub_retries, out)?;
        }
        return Ok(());
    }
    let offset = batch.offsets[0];
    let message = error.to_string();
    match ctx.manifest.error_policy {
        ErrorPolicy::Stop => {
            let reason = format!("{}/{} offset {offset}: {message}", ctx.topic, ctx.partition);
            out.stopped = Some((offset, reason.clone()));
            Err(TaskError::PolicyStop(reason))
        }
        ErrorPolicy::Skip | ErrorPolicy::Dlq => {
            let failed = FailedEvent {
                topic: ctx.topic.clone(),
                partition: ctx.partition,
                offset,
                record: batch.record(0),
                error: message,
            };
            if ctx.manifest.error_policy == ErrorPolicy::Skip {
                ProcessorMetrics::add(&ctx.metrics().skipped, 1);
                out.skipped.push(failed);
            } else {
                out.failed.push(failed);
            }
            Ok(())
        }
    }
}

/// The dead-letter record for a failed event: the event itself plus why,
/// which plugin version, and where it came from, in headers.
pub fn dead_letter(ctx: &TaskCtx, failed: &FailedEvent) -> Record {
    let mut record = failed.record.clone();
    let h = &mut record.headers;
    h.push((headers::ERROR.into(), failed.error.clone().into_bytes()));
    h.push((
        headers::PLUGIN_VERSION.into(),
        ctx.version.to_string().into_bytes(),
    ));
    h.push((
        headers::PLUGIN_SHA256.into(),
        ctx.plugin.digest().as_bytes().to_vec(),
    ));
    h.push((
        headers::SOURCE_TOPIC.into(),
        failed.topic.clone().into_bytes(),
    ));
    h.push((
        headers::SOURCE_PARTITION.into(),
        failed.partition.to_string().into_bytes(),
    ));
    h.push((
        headers::SOURCE_OFFSET.into(),
        failed.offset.to_string().into_bytes(),
    ));
    record
}

/// Records to append, by (topic, partition), in order.
pub type Outputs = BTreeMap<(String, u32), Vec<Record>>;

/// Add dead letters for `failed` to `outputs`.
pub fn add_dead_letters(ctx: &TaskCtx, failed: &[FailedEvent], outputs: &mut Outputs) {
    if failed.is_empty() {
        return;
    }
    let dlq = ctx.manifest.dlq_topic();
    let list = outputs.entry((dlq, 0)).or_default();
    for f in failed {
        list.push(dead_letter(ctx, f));
    }
    ProcessorMetrics::add(&ctx.metrics().dead_lettered, failed.len() as u64);
}

/// Append `records` deferred in as many appends as the log's batch limit
/// asks for (halving until each fits), in order; answers the written end.
/// A single record over the limit is refused by `check_output_sizes`
/// before it gets here.
fn append_split(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
    records: &[Record],
) -> Result<u64, TaskError> {
    match log.append_deferred(topic, partition, records) {
        Ok(ack) => Ok(ack.end_offset()),
        Err(LogError::BatchTooLarge { .. }) if records.len() > 1 => {
            let (first, second) = records.split_at(records.len() / 2);
            append_split(log, topic, partition, first)?;
            append_split(log, topic, partition, second)
        }
        Err(e) => Err(e.into()),
    }
}

/// A plugin's output must fit the log record by record: one that does not
/// is the plugin's failure (retried, then isolated and dead-lettered as its
/// error policy says), not an append that fails forever.
pub(crate) fn check_output_sizes<'a>(
    ctx: &TaskCtx,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<(), CallError> {
    let max = ctx.log().max_batch_bytes();
    for record in records {
        let size = crate::log::encoded_size(std::slice::from_ref(record));
        if size > max {
            return Err(CallError::InvalidOutput {
                message: format!(
                    "an output record of {size} bytes exceeds the log's limit of {max} bytes per append"
                ),
            });
        }
    }
    Ok(())
}

/// The exactly-once step: append `outputs` deferred (durable per policy,
/// invisible), commit `set` plus the new output ends in one store
/// transaction, then publish. Serialised per processor, so the processor's
/// output partitions never hold another step's unpublished records. Any
/// failure before the store commit cuts the appended records off again.
/// In cluster mode the step commits to the partition's commit stream
/// instead (see `cluster`).
pub fn commit_step(ctx: &TaskCtx, outputs: &Outputs, set: &mut CommitSet) -> Result<(), TaskError> {
    // A processor writes only what it owns (see `ownership`); anything else
    // is a bug in a worker, refused before a single record is appended.
    if let Some((topic, _)) = outputs
        .keys()
        .find(|(topic, _)| !super::ownership::owns(&ctx.manifest, topic))
    {
        return Err(TaskError::Infra(format!(
            "{} tried to write {topic:?}, which it does not own",
            ctx.proc.name
        )));
    }
    if let Some(slot) = &ctx.cluster {
        slot.commit(ctx, outputs, set)?;
        count_commit(ctx, outputs);
        return Ok(());
    }
    let log = ctx.log();
    let _serial = ctx.proc.commit_lock.lock();
    let mut appended: Vec<(String, u32, u64, u64)> = Vec::new(); // topic, partition, before, after
    let result = (|| -> Result<(), TaskError> {
        for ((topic, partition), records) in outputs {
            if records.is_empty() {
                continue;
            }
            let before = log.written_end(topic, *partition)?;
            // Pushed first, so a failure midway cuts what was appended.
            appended.push((topic.clone(), *partition, before, before));
            let end = append_split(log, topic, *partition, records)?;
            if let Some(last) = appended.last_mut() {
                last.3 = end;
            }
        }
        #[cfg(test)]
        if ctx
            .shared
            .failpoints
            .crash_before_commit
            .load(Ordering::Relaxed)
        {
            return Err(TaskError::Crash);
        }
        for (topic, partition, _, end) in &appended {
            set.output_ends.push(PartitionPos {
                topic: topic.clone(),
                partition: *partition,
                offset: *end,
            });
        }
        ctx.shared.store.commit(set)?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            for (topic, partition, _, end) in &appended {
                // Committed: a failed publish is repaired by recovery on restart.
                if let Err(e) = log.publish(topic, *partition, *end) {
                    ctx.note_error(format!("publish {topic}/{partition} failed: {e}"), None);
                }
            }
            count_commit(ctx, outputs);
            Ok(())
        }
        Err(TaskError::Crash) => Err(TaskError::Crash), // a crash leaves the tail for recovery
        Err(e) => {
            for (topic, partition, before, _) in appended.iter().rev() {
                if let Err(te) = log.truncate(topic, *partition, *before, false) {
                    // The tail stays invisible; recovery cuts it on restart.
                    ctx.note_error(
                        format!("cannot cut uncommitted tail of {topic}/{partition}: {te}"),
                        None,
                    );
                    return Err(TaskError::Crash);
                }
            }
            Err(e)
        }
    }
}

/// Count a committed step and its outputs (dead letters are not outputs).
fn count_commit(ctx: &TaskCtx, outputs: &Outputs) {
    ProcessorMetrics::add(&ctx.metrics().commits, 1);
    let out: usize = outputs
        .iter()
        .filter(|((t, _), _)| *t != ctx.manifest.dlq_topic())
        .map(|(_, r)| r.len())
        .sum();
    ProcessorMetrics::add(&ctx.metrics().events_out, out as u64);
}
