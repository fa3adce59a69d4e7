//! The deployed processors: each one's registry record (durable) and run
//! state (the loaded version, the crash flag and the task sets, under one
//! lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;

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

/// The version a processor runs, or why it could not be loaded.
pub(crate) enum Loaded {
    Active(Active),
    Failed(String),
}

/// A processor's run state: what changes together, under one lock. (Its
/// registry record is the durable half; the lock is never held while
/// joining task threads, which take it themselves.)
pub(crate) struct ProcState {
    pub(crate) loaded: Loaded,
    /// A task died mid-step: its outputs are cut back before anything runs again.
    pub(crate) crashed: bool,
    /// The tasks of the read generation.
    pub(crate) main: Option<TaskSet>,
    /// The tasks of a pond generation being rebuilt beside it.
    pub(crate) rebuild: Option<TaskSet>,
}

/// A deployed processor.
pub(crate) struct Processor {
    pub name: String,
    pub(crate) kind: PluginKind,
    pub(crate) record: Mutex<PluginRecord>,
    pub(crate) state: Mutex<ProcState>,
    /// Serialises the exactly-once steps over the processor's outputs.
    pub(crate) commit_lock: Mutex<()>,
    pub(crate) metrics: ProcessorMetrics,
    /// The instance answering custom pond queries, per active version.
    pub(crate) query: Mutex<Option<(u32, ProjectionInstance)>>,
}

impl Processor {
    pub(crate) fn new(record: PluginRecord, kind: PluginKind, loaded: Loaded) -> Arc<Processor> {
        Arc::new(Processor {
            name: record.name.clone(),
            kind,
            record: Mutex::new(record),
            state: Mutex::new(ProcState {
                loaded,
                crashed: false,
                main: None,
                rebuild: None,
            }),
            commit_lock: Mutex::new(()),
            metrics: ProcessorMetrics::default(),
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
        self.state.lock().loaded = Loaded::Active(active);
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
        let persisted = match &shared.cluster {
            // Every host stops its partitions of it as it follows the registry.
            Some(cluster) => cluster
                .registry
                .update(&self.name, |current| {
                    Ok(current.map(|mut r| {
                        r.stopped = record.stopped.clone();
                        r
                    }))
                })
                .map(drop)
                .map_err(|e| e.to_string()),
            None => shared.store.put_plugin(&record).map_err(|e| e.to_string()),
        };
        if let Err(e) = persisted {
            tracing::error!(processor = %self.name, "cannot persist stop: {e}");
        }
        let state = self.state.lock();
        for set in [&state.main, &state.rebuild].into_iter().flatten() {
            set.stop.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn consumer(&self, generation: u32) -> String {
        consumer_id(&self.name, self.kind, generation)
    }

    pub(crate) fn active(&self) -> Option<Active> {
        match &self.state.lock().loaded {
            Loaded::Active(a) => Some(a.clone()),
            Loaded::Failed(_) => None,
        }
    }

    /// Why the active version could not be loaded, if it could not.
    pub(crate) fn load_error(&self) -> Option<String> {
        match &self.state.lock().loaded {
            Loaded::Failed(e) => Some(e.clone()),
            Loaded::Active(_) => None,
        }
    }

    pub(crate) fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    pub(crate) fn set_crashed(&self, crashed: bool) {
        self.state.lock().crashed = crashed;
    }

    /// Stop every task at a batch boundary and wait for them.
    pub(crate) fn stop_tasks(&self) {
        let (main, rebuild) = {
            let mut state = self.state.lock();
            (state.main.take(), state.rebuild.take())
        };
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
