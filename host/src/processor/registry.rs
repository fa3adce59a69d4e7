//! The deployed processors: each one's registry record, its active
//! version, its task sets and run-state flags.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use crate::runtime::{Plugin, PluginKind, ProjectionInstance};
use crate::store::PluginRecord;

use super::error::Result;
use super::manifest::Manifest;
use super::metrics::ProcessorMetrics;
use super::shared::Shared;

/// One running plugin version.
#[derive(Clone)]
pub(crate) struct Active {
    pub(crate) version: u32,
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) plugin: Plugin,
}

/// The threads of one consumer (a processor, or one pond generation).
pub(crate) struct TaskSet {
    pub(crate) generation: u32,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) handles: Vec<JoinHandle<()>>,
    pub(crate) caught_up: Vec<Arc<AtomicBool>>,
}

impl TaskSet {
    pub(crate) fn stop_and_join(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            if h.join().is_err() {
                tracing::error!("a processor task panicked");
            }
        }
    }
}

/// A deployed processor.
pub(crate) struct Processor {
    pub name: String,
    pub(crate) kind: PluginKind,
    pub(crate) record: Mutex<PluginRecord>,
    pub(crate) active: RwLock<Option<Active>>,
    pub(crate) load_error: Mutex<Option<String>>,
    /// Serialises the exactly-once steps over the processor's outputs.
    pub(crate) commit_lock: Mutex<()>,
    pub(crate) metrics: ProcessorMetrics,
    pub(crate) crashed: AtomicBool,
    pub(crate) main: Mutex<Option<TaskSet>>,
    pub(crate) rebuild: Mutex<Option<TaskSet>>,
    pub(crate) query: Mutex<Option<(u32, ProjectionInstance)>>,
}

impl Processor {
    pub(crate) fn new(
        record: PluginRecord,
        kind: PluginKind,
        active: Option<Active>,
        load_error: Option<String>,
    ) -> Arc<Processor> {
        Arc::new(Processor {
            name: record.name.clone(),
            kind,
            record: Mutex::new(record),
            active: RwLock::new(active),
            load_error: Mutex::new(load_error),
            commit_lock: Mutex::new(()),
            metrics: ProcessorMetrics::default(),
            crashed: AtomicBool::new(false),
            main: Mutex::new(None),
            rebuild: Mutex::new(None),
            query: Mutex::new(None),
        })
    }

    /// Make `active` the running version (tasks must be stopped): record it
    /// durably, clear a `stop`, forget instances of the previous version.
    pub(crate) fn activate(&self, shared: &Shared, active: Active) -> Result<()> {
        let record = {
            let mut r = self.record.lock();
            r.active_version = active.version;
            r.stopped = None;
            r.clone()
        };
        shared.store.put_plugin(&record)?;
        *self.active.write() = Some(active);
        *self.load_error.lock() = None;
        *self.query.lock() = None;
        Ok(())
    }

    /// Error policy `stop`: remember why and stop every task (from a task
    /// thread: no joining here).
    pub(crate) fn halt(&self, shared: &Shared, reason: String) {
        tracing::error!(processor = %self.name, "stopped: {reason}");
        let record = {
            let mut r = self.record.lock();
            r.stopped = Some(reason);
            r.clone()
        };
        if let Err(e) = shared.store.put_plugin(&record) {
            tracing::error!(processor = %self.name, "cannot persist stop: {e}");
        }
        for set in [&self.main, &self.rebuild] {
            if let Some(s) = &*set.lock() {
                s.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn consumer(&self, generation: u32) -> String {
        consumer_id(&self.name, self.kind, generation)
    }

    pub(crate) fn active(&self) -> Option<Active> {
        self.active.read().clone()
    }

    pub(crate) fn stop_tasks(&self) {
        let main = self.main.lock().take();
        let rebuild = self.rebuild.lock().take();
        for set in [main, rebuild].into_iter().flatten() {
            set.stop_and_join();
        }
    }
}

/// Checkpoint owner of a processor: its name, or `name@g<n>` for a pond generation.
pub(crate) fn consumer_id(name: &str, kind: PluginKind, generation: u32) -> String {
    match kind {
        PluginKind::Projection => format!("{name}@g{generation}"),
        _ => name.to_string(),
    }
}

pub(crate) fn parse_kind(s: &str) -> Option<PluginKind> {
    PluginKind::ALL.into_iter().find(|k| k.world() == s)
}
