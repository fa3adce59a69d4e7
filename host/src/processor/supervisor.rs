//! The task threads: what a task thread runs (build the worker, find the
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
use super::shared::{Shared, now_ms};
use super::task::{self, TaskCtx};
use super::{command, enricher, projection};

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
        proc.crashed.store(true, Ordering::Relaxed);
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
        let done = proc.rebuild.lock().as_ref().is_some_and(|s| {
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
        let Some(new_set) = proc.rebuild.lock().take() else {
            return;
        };
        let old_set = proc.main.lock().take();
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
        *proc.main.lock() = Some(new_set);
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
