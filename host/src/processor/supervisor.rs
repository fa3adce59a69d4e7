//! The task threads: starting one per input partition of a runnable
//! processor, what a task thread runs (build the worker, find the
//! committed position, run), and the watcher that switches a pond's reads
//! to a rebuilt generation once it has caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::runtime::PluginKind;

use super::error::Result;
use super::metrics::LastError;
use super::projection::PondPending;
use super::registry::Processor;
use super::registry::{Active, TaskSet};
use super::shared::{Shared, now_ms};
use super::task::{self, TaskCtx};
use super::{command, enricher, projection};

pub(crate) fn start_if_runnable(shared: &Arc<Shared>, proc: &Arc<Processor>) {
    let (paused, stopped, generation, rebuilding) = {
        let r = proc.record.lock();
        (
            r.paused,
            r.stopped.is_some(),
            r.read_generation,
            r.rebuilding_generation,
        )
    };
    if paused || stopped || proc.crashed() {
        return;
    }
    if shared.cluster.is_some() {
        return; // the lease loop starts the partitions this host owns
    }
    let Some(active) = proc.active() else { return };
    let set = spawn_tasks(shared, proc, &active, generation, false);
    proc.state.lock().main = Some(set);
    if let Some(g) = rebuilding {
        let set = spawn_tasks(shared, proc, &active, g, true);
        proc.state.lock().rebuild = Some(set);
    }
}

/// Start one task per input partition for `generation`.
pub(crate) fn spawn_tasks(
    shared: &Arc<Shared>,
    proc: &Arc<Processor>,
    active: &Active,
    generation: u32,
    rebuild: bool,
) -> TaskSet {
    let stop = Arc::new(AtomicBool::new(false));
    let pending = PondPending::new();
    let mut handles = Vec::new();
    let mut caught_up = Vec::new();
    for topic in &active.manifest.inputs {
        let partitions = match shared.log.topic(topic) {
            Ok(info) => info.partitions.len() as u32,
            Err(e) => {
                proc.metrics.record_error(LastError {
                    message: format!("input topic {topic}: {e}"),
                    at_ms: now_ms(),
                    topic: Some(topic.clone()),
                    partition: None,
                    offset: None,
                });
                continue;
            }
        };
        for partition in 0..partitions {
            let ctx = TaskCtx::new(shared, proc, active, generation, topic, partition, &stop);
            caught_up.push(ctx.caught_up.clone());
            let pending = pending.clone();
            let name = format!("weir-{}-{partition}", proc.name);
            let spawned = std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn(move || task_main(ctx, pending, generation));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    tracing::error!(processor = %proc.name, "cannot start a task thread: {e}")
                }
            }
        }
    }
    if rebuild {
        // Switches reads to this generation once every partition caught up.
        let (shared, proc, stop) = (Arc::downgrade(shared), proc.clone(), stop.clone());
        let watcher = std::thread::Builder::new()
            .name("weir-rebuild".into())
            .spawn(move || watch_rebuild(shared, proc, generation, stop));
        if let Err(e) = watcher {
            tracing::error!("cannot start the rebuild watcher: {e}");
        }
    }
    TaskSet {
        generation,
        stop,
        handles,
        caught_up,
    }
}

/// Body of a task thread: build the worker (retrying a failing `init`),
/// find the committed position, run.
pub(crate) fn task_main(ctx: TaskCtx, pending: Arc<Mutex<PondPending>>, generation: u32) {
    let mut backoff = Duration::from_millis(100);
    let worker: Box<dyn task::Worker> = loop {
        let made: Result<Box<dyn task::Worker>> = match ctx.proc.kind {
            PluginKind::Enricher => enricher::EnricherWorker::new(&ctx).map(|w| Box::new(w) as _),
            PluginKind::Projection => {
                projection::ProjectionWorker::new(&ctx, pending.clone(), generation)
                    .map(|w| Box::new(w) as _)
            }
            PluginKind::CommandHandler => {
                command::CommandWorker::new(&ctx).map(|w| Box::new(w) as _)
            }
        };
        match made {
            Ok(w) => break w,
            Err(e) => {
                ctx.note_error(format!("cannot start plugin v{}: {e}", ctx.version), None);
                if ctx.sleep(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    let next = loop {
        match task::committed_position(&ctx) {
            Ok(n) => break n,
            Err(e) => {
                ctx.note_error(format!("cannot read checkpoint: {e}"), None);
                if ctx.sleep(Duration::from_secs(1)) {
                    return;
                }
            }
        }
    };
    let proc = ctx.proc.clone();
    let (topic, partition) = (ctx.topic.clone(), ctx.partition);
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        task::run(ctx, worker, next)
    }));
    if let Err(panic) = ran {
        // A bug, not a plugin failure (those are caught): make it visible
        // instead of leaving a silent, stalled partition.
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(processor = %proc.name, %topic, partition, "task panicked: {message}");
        proc.set_crashed(true);
        proc.metrics.record_error(LastError {
            message: format!("task panicked: {message}"),
            at_ms: now_ms(),
            topic: Some(topic),
            partition: Some(partition),
            offset: None,
        });
    }
}

/// Wait until all tasks of a rebuild generation are caught up, then promote it.
pub(crate) fn watch_rebuild(
    shared: Weak<Shared>,
    proc: Arc<Processor>,
    generation: u32,
    stop: Arc<AtomicBool>,
) {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let done = proc.state.lock().rebuild.as_ref().is_some_and(|s| {
            s.generation == generation && s.caught_up.iter().all(|f| f.load(Ordering::Relaxed))
        });
        if !done {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Admin operations join task threads; never block them from here.
        let Some(_admin) = shared.admin.try_lock() else {
            continue;
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (new_set, old_set) = {
            let mut state = proc.state.lock();
            let Some(new_set) = state.rebuild.take() else {
                return;
            };
            (new_set, state.main.take())
        };
        if let Some(s) = old_set {
            s.stop_and_join();
        }
        let (record, old_generation) = {
            let mut r = proc.record.lock();
            let old = r.read_generation;
            r.read_generation = generation;
            r.rebuilding_generation = None;
            (r.clone(), old)
        };
        if let Err(e) = shared.store.put_plugin(&record) {
            tracing::error!(processor = %proc.name, "cannot record the rebuilt generation: {e}");
        }
        proc.state.lock().main = Some(new_set);
        if let Err(e) = shared
            .store
            .drop_pond(&proc.name, old_generation)
            .and_then(|_| {
                shared
                    .store
                    .delete_checkpoints(&proc.consumer(old_generation))
            })
        {
            tracing::warn!(processor = %proc.name, "cannot drop generation {old_generation}: {e}");
        }
        tracing::info!(processor = %proc.name, "reads switched to rebuilt generation {generation}");
        return;
    }
}
