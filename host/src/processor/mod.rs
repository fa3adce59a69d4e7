//! The processors: the drive loops (enricher, projection, command handler),
//! the exactly-once commit protocol, the failure policy, and the [`Engine`]
//! facade the HTTP layer uses (deploy, inspect, pause / resume / reset /
//! rollback / rebuild / delete, pond reads, commands, metrics).
//!
//! # Promises
//!
//! - One task (an OS thread: plugin calls block) per (processor, input
//!   partition); a partition's events are handled in offset order,
//!   partitions in parallel. Idle tasks block on the log's `wait_for`.
//! - **Exactly-once effects.** A processor is the sole writer of its output
//!   topics and dead-letter topic (a service: of its events and reply
//!   topics); `ownership` holds that rule and every write path asks it. Per
//!   processor, steps are serialised: outputs are appended *deferred*
//!   (durable per the fsync policy, invisible), then one store transaction
//!   records the state delta, the input checkpoint and the new output ends,
//!   then the outputs are published. Before any task runs, [`Engine::open`]
//!   cuts every owned output partition back to its recorded end. A kill at
//!   any instant therefore leaves each input's effect exactly once.
//!   Delivery to plugins is at-least-once (a redone batch is re-delivered).
//! - **Failures.** A trap, deadline or plugin `failure` is retried with
//!   exponential backoff (`retries`, `retry_backoff_ms`); a batch that keeps
//!   failing is split to isolate the failing event (the failure's event
//!   index, else halving), which then goes to `<name>.dlq` (policy `dlq`,
//!   headers `weir-error`, `weir-plugin-version`, `weir-plugin-sha256`,
//!   `weir-source-topic/partition/offset`), is dropped (`skip`) or stops the
//!   processor (`stop`). One processor's failures never stall another.
//! - **Versions.** Deploying under an existing name adds a version; tasks
//!   stop at a batch boundary (after their commit) and the new version
//!   starts at that checkpoint. Rollback re-activates an older version the
//!   same way. Deployments (manifests, versions, active version, paused)
//!   live in the store; components are kept content-addressed under
//!   `<data_dir>/components`, so everything survives a restart.
//! - **Durability.** With fsync `always` an append is fsynced before the
//!   store commit and the commit is fsynced too. With `interval` / `never`
//!   the store uses non-durable commits with a durable one at least every
//!   interval (1 s for `never`): a crash rolls the store back to a
//!   consistent earlier commit and recovery redoes the work. With `never`
//!   a power loss can also lose log records; recovery then adopts the
//!   shorter log (logged as an error): effects of lost inputs are lost too.
//!
//! Methods are blocking (they may join task threads, read the store or
//! append): call them from `spawn_blocking` in async code, except
//! [`Engine::await_result`], which is async.

mod command;
mod components;
mod enricher;
mod manifest;
mod metrics;
mod ownership;
mod projection;
mod task;

#[cfg(test)]
mod crash;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::log::{EventLog, FsyncPolicy, LogError, TopicConfig};
use crate::runtime::{LoadError, Plugin, PluginKind, PondLookup, ProjectionInstance, Runtime};
use crate::store::{PartitionPos, PluginRecord, Store, StoreDurability, StoreError, VersionRecord};

pub use command::{CommandOutcome, decode_command, encode_command};
pub use manifest::{
    ErrorPolicy, Manifest, ManifestError, ManifestLimits, StartFrom, validate_name,
};
pub use metrics::{LATENCY_BUCKETS_US, LastError, MetricsSnapshot};
pub use ownership::{Ownership, OwnershipError, is_reply_topic, reply_topics};
pub use task::headers;

use components::ComponentStore;
use metrics::ProcessorMetrics;
use projection::PondPending;
use task::TaskCtx;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Errors of the engine's API. Each names what is wrong; none leaves a
/// half-done change behind.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component was refused (wrong world, missing export, not wasm…).
    #[error("component refused: {0}")]
    Load(#[from] LoadError),
    /// The plugin failed to start (init refused its config…).
    #[error("plugin failed: {0}")]
    Plugin(String),
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (name taken by another
    /// kind, topic owned by another processor…).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// A write, claim or delete the ownership rule forbids.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("log error: {0}")]
    Log(#[from] LogError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Test-only switches that simulate crashes (not in release builds).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Failpoints {
    /// The next step that appended outputs stops dead after the append and
    /// before the store commit, as if the process had been killed there.
    pub crash_before_commit: AtomicBool,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Holds `store.redb` and `components/`.
    pub data_dir: PathBuf,
    /// The host's fsync policy (decides the store's commit durability).
    pub fsync: FsyncPolicy,
    /// How long an idle task blocks on the log before re-checking its stop flag.
    pub idle_wait: Duration,
    /// Most payload bytes read per batch.
    pub max_batch_bytes: usize,
    /// Most payload bytes read per batch while a task is behind its input
    /// (the previous read was full).
    pub catch_up_batch_bytes: usize,
    /// Projections commit pending writes as soon as a task has caught up,
    /// and while catching up at least this often (default 500 ms: the
    /// longest a busy pond's reads lag its input)...
    pub commit_interval: Duration,
    /// ...or when this many keys are pending...
    pub commit_max_writes: usize,
    /// ...or this many bytes.
    pub commit_max_bytes: usize,
    /// Partitions of topics a deploy creates when the manifest names none
    /// and there is no input to copy from.
    pub default_partitions: u32,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>, fsync: FsyncPolicy) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            fsync,
            idle_wait: Duration::from_millis(100),
            max_batch_bytes: 4 << 20,
            catch_up_batch_bytes: 16 << 20,
            commit_interval: Duration::from_millis(500),
            commit_max_writes: 200_000,
            commit_max_bytes: 64 << 20,
            default_partitions: 4,
        }
    }

    fn store_durability(&self) -> StoreDurability {
        match self.fsync {
            FsyncPolicy::Always => StoreDurability::Immediate,
            FsyncPolicy::Interval(d) => StoreDurability::Lazy { sync_every: d },
            FsyncPolicy::Never => StoreDurability::Lazy {
                sync_every: Duration::from_secs(1),
            },
        }
    }
}

/// Where a reset moves a processor's input positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Beginning,
    End,
    /// Clamped to each partition's stored range.
    Offset(u64),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// Run state of a processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    /// Error policy `stop` tripped; resume (or deploy a fix) to continue.
    Stopped {
        reason: String,
    },
    /// Its component could not be loaded, or a simulated crash.
    Failed {
        reason: String,
    },
}

impl RunState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Stopped { .. } => "stopped",
            RunState::Failed { .. } => "failed",
        }
    }
}

/// Progress of a processor over one input partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: u32,
    /// Next offset to process (everything before it is committed).
    pub committed_offset: u64,
    pub end_offset: u64,
    pub lag: u64,
}

/// What `inspect` shows about a processor.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorStatus {
    pub name: String,
    pub kind: PluginKind,
    pub state: RunState,
    pub active_version: u32,
    pub versions: Vec<VersionRecord>,
    /// The active version's manifest (with defaults filled in).
    pub manifest: Option<Manifest>,
    pub partitions: Vec<PartitionStatus>,
    pub metrics: MetricsSnapshot,
    pub last_error: Option<LastError>,
    /// Projections: the generation reads come from / one being rebuilt.
    pub read_generation: u32,
    pub rebuilding_generation: Option<u32>,
}

impl ProcessorStatus {
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// A command for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// Unique per command; a retry with the same id gets the first result.
    pub id: String,
    pub aggregate: String,
    pub name: String,
    pub data: Vec<u8>,
    /// Apply only if the aggregate is at this version.
    pub expected_version: Option<u64>,
    /// Also write the result here, keyed and headed by the command id, in
    /// the service's commit: `<service>.results` or `<service>.private.reply`.
    pub reply_topic: Option<String>,
}

/// One running plugin version.
#[derive(Clone)]
struct Active {
    version: u32,
    manifest: Arc<Manifest>,
    plugin: Plugin,
}

/// The threads of one consumer (a processor, or one pond generation).
struct TaskSet {
    generation: u32,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    caught_up: Vec<Arc<AtomicBool>>,
}

impl TaskSet {
    fn stop_and_join(self) {
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
    kind: PluginKind,
    record: Mutex<PluginRecord>,
    active: RwLock<Option<Active>>,
    load_error: Mutex<Option<String>>,
    /// Serialises the exactly-once steps over the processor's outputs.
    commit_lock: Mutex<()>,
    metrics: ProcessorMetrics,
    crashed: AtomicBool,
    main: Mutex<Option<TaskSet>>,
    rebuild: Mutex<Option<TaskSet>>,
    query: Mutex<Option<(u32, ProjectionInstance)>>,
}

impl Processor {
    fn new(
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
    fn activate(&self, shared: &Shared, active: Active) -> Result<()> {
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
    fn halt(&self, shared: &Shared, reason: String) {
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

    fn consumer(&self, generation: u32) -> String {
        consumer_id(&self.name, self.kind, generation)
    }

    fn active(&self) -> Option<Active> {
        self.active.read().clone()
    }

    fn stop_tasks(&self) {
        let main = self.main.lock().take();
        let rebuild = self.rebuild.lock().take();
        for set in [main, rebuild].into_iter().flatten() {
            set.stop_and_join();
        }
    }
}

/// Checkpoint owner of a processor: its name, or `name@g<n>` for a pond generation.
fn consumer_id(name: &str, kind: PluginKind, generation: u32) -> String {
    match kind {
        PluginKind::Projection => format!("{name}@g{generation}"),
        _ => name.to_string(),
    }
}

/// Who waits for which command's result: (service, command id) → waiters.
type Waiters = HashMap<(String, String), Vec<oneshot::Sender<CommandOutcome>>>;

/// Engine-wide state shared with the task threads.
pub(crate) struct Shared {
    log: Arc<dyn EventLog>,
    store: Arc<Store>,
    runtime: Runtime,
    config: EngineConfig,
    components: ComponentStore,
    processors: RwLock<BTreeMap<String, Arc<Processor>>>,
    waiters: Mutex<Waiters>,
    /// Who may write which topic (see `ownership`).
    ownership: Arc<Ownership>,
    #[cfg(test)]
    failpoints: Failpoints,
    /// Serialises admin operations (deploy, pause, reset…).
    admin: Mutex<()>,
}

impl Shared {
    fn processor(&self, name: &str) -> Result<Arc<Processor>> {
        self.processors
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("no plugin named {name:?}")))
    }

    fn service(&self, name: &str) -> Result<Active> {
        let proc = self.processor(name)?;
        if proc.kind != PluginKind::CommandHandler {
            return Err(EngineError::Invalid(format!(
                "{name} is a {}, not a service",
                proc.kind.world()
            )));
        }
        proc.active()
            .ok_or_else(|| EngineError::Conflict(format!("{name} is not loaded")))
    }

    fn notify_result(&self, service: &str, id: &str, outcome: CommandOutcome) {
        let waiters = self
            .waiters
            .lock()
            .remove(&(service.to_string(), id.to_string()));
        for w in waiters.into_iter().flatten() {
            let _ = w.send(outcome.clone());
        }
    }
}

/// Pond lookups for enrichers: the committed state of the pond's read generation.
struct PondLookupImpl {
    shared: Weak<Shared>,
}

impl PondLookup for PondLookupImpl {
    fn lookup(&self, pond: &str, key: &[u8]) -> Option<Vec<u8>> {
        let shared = self.shared.upgrade()?;
        let proc = shared.processors.read().get(pond).cloned()?;
        if proc.kind != PluginKind::Projection {
            return None;
        }
        let generation = proc.record.lock().read_generation;
        shared.store.pond_get(pond, generation, key).ok().flatten()
    }
}

/// The processor engine. Dropping it stops every task at a batch boundary.
pub struct Engine {
    shared: Arc<Shared>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Engine {
    /// Open the store under `config.data_dir`, restore every deployed
    /// processor, cut owned outputs back to their committed ends, then start
    /// the tasks of processors that are not paused or stopped.
    pub fn open(config: EngineConfig, log: Arc<dyn EventLog>, runtime: Runtime) -> Result<Engine> {
        let store = Arc::new(Store::open(
            config.data_dir.join("store.redb"),
            config.store_durability(),
        )?);
        let components = ComponentStore::open(config.data_dir.join("components"))?;
        let shared = Arc::new(Shared {
            log,
            store,
            runtime,
            config,
            components,
            processors: RwLock::new(BTreeMap::new()),
            waiters: Mutex::new(HashMap::new()),
            ownership: Arc::new(Ownership::default()),
            #[cfg(test)]
            failpoints: Failpoints::default(),
            admin: Mutex::new(()),
        });
        let engine = Engine { shared };
        let records = engine.shared.store.plugins()?;
        let mut restored = Vec::new();
        for record in records {
            let proc = engine.restore(record);
            engine
                .shared
                .processors
                .write()
                .insert(proc.name.clone(), proc.clone());
            restored.push(proc);
        }
        // Every owned output is cut back before any task (of any processor) reads.
        // Even a processor whose component failed to load owns its outputs:
        // use the registry's manifest, not the loaded plugin.
        for proc in &restored {
            let manifest = proc
                .record
                .lock()
                .active()
                .map(|v| Manifest::parse(v.manifest.clone()));
            match manifest {
                Some(Ok(m)) => {
                    engine.recover_outputs(proc, &m)?;
                    engine
                        .shared
                        .ownership
                        .restore(&proc.name, Some(Arc::new(m)));
                }
                Some(Err(e)) => {
                    tracing::error!(processor = %proc.name, "cannot recover outputs: {e}")
                }
                None => {}
            }
        }
        for proc in &restored {
            engine.start_if_runnable(proc);
        }
        Ok(engine)
    }

    /// Build a processor from its registry record (loading its component).
    fn restore(&self, record: PluginRecord) -> Arc<Processor> {
        let kind = parse_kind(&record.kind);
        let loaded = (|| -> std::result::Result<Active, String> {
            let kind = kind.ok_or_else(|| format!("unknown kind {:?}", record.kind))?;
            let version = record
                .active()
                .ok_or("the active version is missing from the registry")?;
            let manifest = Manifest::parse(version.manifest.clone()).map_err(|e| e.to_string())?;
            let bytes = self
                .shared
                .components
                .load(&version.sha256)
                .map_err(|e| e.to_string())?;
            let plugin = self
                .shared
                .runtime
                .load(kind, &bytes)
                .map_err(|e| e.to_string())?;
            Ok(Active {
                version: version.version,
                manifest: Arc::new(manifest),
                plugin,
            })
        })();
        let (active, load_error) = match loaded {
            Ok(a) => (Some(a), None),
            Err(e) => {
                tracing::error!(plugin = %record.name, "cannot restore: {e}");
                (None, Some(e))
            }
        };
        Processor::new(
            record,
            kind.unwrap_or(PluginKind::Enricher),
            active,
            load_error,
        )
    }

    /// Cut each owned output partition back to its recorded end and publish it.
    fn recover_outputs(&self, proc: &Processor, manifest: &Manifest) -> Result<()> {
        let log = &self.shared.log;
        let recorded: HashMap<(String, u32), u64> = self
            .shared
            .store
            .output_ends(&proc.name)?
            .into_iter()
            .map(|p| ((p.topic, p.partition), p.offset))
            .collect();
        let mut adopt = Vec::new();
        for topic in ownership::owned_topics(manifest) {
            let info = match log.topic(&topic) {
                Ok(i) => i,
                Err(LogError::UnknownTopic(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for p in info.partitions {
                let written = log.written_end(&topic, p.partition)?;
                let end = match recorded.get(&(topic.clone(), p.partition)) {
                    Some(&end) if written > end => {
                        tracing::info!(processor = %proc.name, %topic, partition = p.partition, "cutting uncommitted output {end}..{written}");
                        log.truncate(&topic, p.partition, end, true)?;
                        end
                    }
                    Some(&end) if written < end => {
                        tracing::error!(processor = %proc.name, %topic, partition = p.partition,
                            "the log ends at {written} but {end} was committed: records were lost (power loss with fsync never?)");
                        adopt.push(PartitionPos {
                            topic: topic.clone(),
                            partition: p.partition,
                            offset: written,
                        });
                        written
                    }
                    Some(&end) => end,
                    None => {
                        adopt.push(PartitionPos {
                            topic: topic.clone(),
                            partition: p.partition,
                            offset: written,
                        });
                        written
                    }
                };
                log.publish(&topic, p.partition, end)?;
            }
        }
        if !adopt.is_empty() {
            self.shared.store.set_output_ends(&proc.name, &adopt)?;
        }
        Ok(())
    }

    /// After a task crashed mid-step (tasks stopped), cut the outputs back
    /// to their committed ends before anything runs again.
    fn recover_crashed(&self, proc: &Processor) -> Result<()> {
        if proc.crashed.load(Ordering::Relaxed) {
            if let Some(active) = proc.active() {
                self.recover_outputs(proc, &active.manifest)?;
            }
            proc.crashed.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn start_if_runnable(&self, proc: &Arc<Processor>) {
        let (paused, stopped, generation, rebuilding) = {
            let r = proc.record.lock();
            (
                r.paused,
                r.stopped.is_some(),
                r.read_generation,
                r.rebuilding_generation,
            )
        };
        if paused || stopped || proc.crashed.load(Ordering::Relaxed) {
            return;
        }
        let Some(active) = proc.active() else { return };
        let set = self.spawn_tasks(proc, &active, generation, false);
        *proc.main.lock() = Some(set);
        if let Some(g) = rebuilding {
            let set = self.spawn_tasks(proc, &active, g, true);
            *proc.rebuild.lock() = Some(set);
        }
    }

    /// Start one task per input partition for `generation`.
    fn spawn_tasks(
        &self,
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
            let partitions = match self.shared.log.topic(topic) {
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
                let flag = Arc::new(AtomicBool::new(false));
                caught_up.push(flag.clone());
                let ctx = TaskCtx {
                    shared: self.shared.clone(),
                    proc: proc.clone(),
                    manifest: active.manifest.clone(),
                    plugin: active.plugin.clone(),
                    version: active.version,
                    consumer: proc.consumer(generation),
                    topic: topic.clone(),
                    partition,
                    stop: stop.clone(),
                    caught_up: flag,
                };
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
            let (shared, proc, stop) = (Arc::downgrade(&self.shared), proc.clone(), stop.clone());
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

    /// Validate and deploy a plugin version (a new processor, or a new
    /// version of an existing one, which becomes active at a batch boundary).
    /// Start one throw-away instance with the manifest's config, so a
    /// config the plugin's `init` refuses is a deploy error (nothing
    /// changes) instead of a processor that fails after it was accepted.
    fn check_init(&self, plugin: &Plugin, manifest: &Manifest) -> Result<()> {
        let limits = manifest.limits(&self.shared.runtime.default_limits());
        let config = manifest.config_json();
        let started = match manifest.kind {
            PluginKind::Enricher => plugin
                .enricher(
                    &manifest.name,
                    limits,
                    &config,
                    Arc::new(crate::runtime::NoPonds),
                )
                .map(drop),
            PluginKind::Projection => plugin.projection(&manifest.name, limits, &config).map(drop),
            PluginKind::CommandHandler => plugin
                .command_handler(&manifest.name, limits, &config)
                .map(drop),
        };
        started.map_err(|e| EngineError::Plugin(e.to_string()))
    }

    pub fn deploy(&self, manifest: serde_json::Value, component: &[u8]) -> Result<ProcessorStatus> {
        let raw_manifest = manifest;
        let manifest = Manifest::parse(raw_manifest.clone())?;
        // Compile and check the component off the data path (before any lock).
        let plugin = self.shared.runtime.load(manifest.kind, component)?;
        self.check_init(&plugin, &manifest)?;
        let _admin = self.shared.admin.lock();
        let existing = self.shared.processors.read().get(&manifest.name).cloned();
        if let Some(p) = &existing {
            if p.kind != manifest.kind {
                return Err(EngineError::Conflict(format!(
                    "{} is deployed as {}; delete it before deploying a {}",
                    p.name,
                    p.kind.world(),
                    manifest.kind.world()
                )));
            }
            if let Some(a) = p.active()
                && (a.manifest.inputs != manifest.inputs || a.manifest.outputs != manifest.outputs)
            {
                return Err(EngineError::Conflict(format!(
                    "a new version of {} must keep its inputs and outputs; delete and redeploy to change them",
                    p.name
                )));
            }
        }
        let name = manifest.name.clone();
        let manifest = Arc::new(manifest);
        // Claim the topics first: from here on no client append lands in them.
        let previous = self.shared.ownership.claim(manifest.clone())?;
        let deployed = self.activate_deployed(existing, manifest, plugin, component, raw_manifest);
        if deployed.is_err() {
            self.shared.ownership.restore(&name, previous);
        }
        let proc = deployed?;
        self.start_if_runnable(&proc);
        self.status_of(&proc)
    }

    /// The part of a deploy after its claims were granted: create topics,
    /// store the component and the version, activate it.
    fn activate_deployed(
        &self,
        existing: Option<Arc<Processor>>,
        manifest: Arc<Manifest>,
        plugin: Plugin,
        component: &[u8],
        raw_manifest: serde_json::Value,
    ) -> Result<Arc<Processor>> {
        self.ensure_topics(&manifest)?;
        let sha = self.shared.components.save(component)?;
        let stored_manifest = serde_json::to_value(&*manifest).unwrap_or(raw_manifest);
        let proc = match existing {
            Some(proc) => {
                proc.stop_tasks();
                let version = {
                    let mut r = proc.record.lock();
                    let version = r.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
                    r.versions.push(VersionRecord {
                        version,
                        sha256: sha,
                        manifest: stored_manifest,
                        deployed_at_ms: now_ms(),
                    });
                    version
                };
                let active = Active {
                    version,
                    manifest,
                    plugin,
                };
                proc.activate(&self.shared, active)?;
                self.recover_crashed(&proc)?;
                proc
            }
            None => {
                let record = PluginRecord {
                    name: manifest.name.clone(),
                    kind: manifest.kind.world().to_string(),
                    versions: vec![VersionRecord {
                        version: 1,
                        sha256: sha,
                        manifest: stored_manifest,
                        deployed_at_ms: now_ms(),
                    }],
                    active_version: 1,
                    paused: false,
                    stopped: None,
                    read_generation: 0,
                    rebuilding_generation: None,
                };
                // Baselines first: output ends as they are now (topics created
                // on first use get theirs then), input positions per start_from.
                let mut ends = Vec::new();
                for topic in ownership::owned_topics(&manifest) {
                    let info = match self.shared.log.topic(&topic) {
                        Ok(info) => info,
                        Err(LogError::UnknownTopic(_)) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    for p in info.partitions {
                        let end = self.shared.log.written_end(&topic, p.partition)?;
                        ends.push(PartitionPos {
                            topic: topic.clone(),
                            partition: p.partition,
                            offset: end,
                        });
                    }
                }
                self.shared.store.set_output_ends(&manifest.name, &ends)?;
                let consumer = consumer_id(&manifest.name, manifest.kind, 0);
                let starts = self.positions(&manifest, |t, p| match manifest.start_from {
                    StartFrom::Earliest => self.shared.log.start_offset(t, p),
                    StartFrom::Latest => self.shared.log.end_offset(t, p),
                })?;
                self.shared.store.set_checkpoints(&consumer, &starts)?;
                self.shared.store.put_plugin(&record)?;
                let kind = manifest.kind;
                let active = Active {
                    version: 1,
                    manifest,
                    plugin,
                };
                let proc = Processor::new(record, kind, Some(active), None);
                self.shared
                    .processors
                    .write()
                    .insert(proc.name.clone(), proc.clone());
                proc
            }
        };
        Ok(proc)
    }

    /// Create missing outputs / DLQ (and a service's commands topic); inputs must exist.
    fn ensure_topics(&self, manifest: &Manifest) -> Result<()> {
        let log = &self.shared.log;
        let mut input_partitions = None;
        for t in &manifest.inputs {
            match log.topic(t) {
                Ok(info) => {
                    input_partitions.get_or_insert(info.partitions.len() as u32);
                }
                Err(LogError::UnknownTopic(_)) if manifest.kind == PluginKind::CommandHandler => {
                    let n = manifest
                        .partitions
                        .unwrap_or(self.shared.config.default_partitions);
                    create_topic(&**log, t, n)?;
                    input_partitions = Some(n);
                }
                Err(LogError::UnknownTopic(_)) => {
                    return Err(EngineError::NotFound(format!(
                        "input topic {t:?} does not exist; create it first"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let n = manifest
            .partitions
            .or(input_partitions)
            .unwrap_or(self.shared.config.default_partitions);
        for t in &manifest.outputs {
            if matches!(log.topic(t), Err(LogError::UnknownTopic(_))) {
                create_topic(&**log, t, n)?;
            }
        }
        let dlq = manifest.dlq_topic();
        if matches!(log.topic(&dlq), Err(LogError::UnknownTopic(_))) {
            create_topic(&**log, &dlq, 1)?;
        }
        Ok(())
    }

    /// A position per input partition, computed by `at`.
    fn positions(
        &self,
        manifest: &Manifest,
        at: impl Fn(&str, u32) -> std::result::Result<u64, LogError>,
    ) -> Result<Vec<PartitionPos>> {
        let mut out = Vec::new();
        for t in &manifest.inputs {
            for p in self.shared.log.topic(t)?.partitions {
                out.push(PartitionPos {
                    topic: t.clone(),
                    partition: p.partition,
                    offset: at(t, p.partition)?,
                });
            }
        }
        Ok(out)
    }

    pub fn list(&self) -> Vec<ProcessorStatus> {
        let procs: Vec<Arc<Processor>> = self.shared.processors.read().values().cloned().collect();
        procs
            .iter()
            .filter_map(|p| self.status_of(p).ok())
            .collect()
    }

    pub fn inspect(&self, name: &str) -> Result<ProcessorStatus> {
        let proc = self.shared.processor(name)?;
        self.status_of(&proc)
    }

    fn status_of(&self, proc: &Processor) -> Result<ProcessorStatus> {
        let record = proc.record.lock().clone();
        let active = proc.active();
        let state = if let Some(e) = proc.load_error.lock().clone() {
            RunState::Failed { reason: e }
        } else if proc.crashed.load(Ordering::Relaxed) {
            RunState::Failed {
                reason: "a task crashed (see last_error); resume or restart to recover".into(),
            }
        } else if let Some(reason) = &record.stopped {
            RunState::Stopped {
                reason: reason.clone(),
            }
        } else if record.paused {
            RunState::Paused
        } else {
            RunState::Running
        };
        let mut partitions = Vec::new();
        if let Some(a) = &active {
            let consumer = proc.consumer(record.read_generation);
            let committed: HashMap<(String, u32), u64> = self
                .shared
                .store
                .checkpoints(&consumer)?
                .into_iter()
                .map(|p| ((p.topic, p.partition), p.offset))
                .collect();
            for t in &a.manifest.inputs {
                let Ok(info) = self.shared.log.topic(t) else {
                    continue;
                };
                for p in info.partitions {
                    let c = committed
                        .get(&(t.clone(), p.partition))
                        .copied()
                        .unwrap_or(p.start_offset);
                    partitions.push(PartitionStatus {
                        topic: t.clone(),
                        partition: p.partition,
                        committed_offset: c,
                        end_offset: p.end_offset,
                        lag: p.end_offset.saturating_sub(c),
                    });
                }
            }
        }
        Ok(ProcessorStatus {
            name: proc.name.clone(),
            kind: proc.kind,
            state,
            active_version: record.active_version,
            versions: record.versions.clone(),
            manifest: active.map(|a| (*a.manifest).clone()),
            partitions,
            metrics: proc.metrics.snapshot(),
            last_error: proc.metrics.last_error(),
            read_generation: record.read_generation,
            rebuilding_generation: record.rebuilding_generation,
        })
    }

    /// Stop a processor's tasks (at a batch boundary) until `resume`.
    pub fn pause(&self, name: &str) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        let proc = self.shared.processor(name)?;
        proc.stop_tasks();
        let record = {
            let mut r = proc.record.lock();
            r.paused = true;
            r.clone()
        };
        self.shared.store.put_plugin(&record)?;
        self.status_of(&proc)
    }

    /// Run a paused or stopped processor again.
    pub fn resume(&self, name: &str) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        let proc = self.shared.processor(name)?;
        proc.stop_tasks();
        let record = {
            let mut r = proc.record.lock();
            r.paused = false;
            r.stopped = None;
            r.clone()
        };
        self.shared.store.put_plugin(&record)?;
        self.recover_crashed(&proc)?;
        self.start_if_runnable(&proc);
        self.status_of(&proc)
    }

    /// Move the input positions. A pond's state is emptied in the same
    /// store transaction, so it then holds the fold of its inputs from the
    /// new position on (as a Kafka Streams application reset or a KurrentDB
    /// projection reset leaves it) — unless `keep_state`: then the events
    /// before the new position stay folded in, and moving backwards folds
    /// events in again. Rivers only move; a service dedupes replayed
    /// commands by id. ([`Engine::rebuild`] rebuilds a pond beside the
    /// current state instead, switching reads when it has caught up.)
    pub fn reset(&self, name: &str, to: ResetTo, keep_state: bool) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        let proc = self.shared.processor(name)?;
        let active = proc
            .active()
            .ok_or_else(|| EngineError::Conflict(format!("{name} is not loaded")))?;
        proc.stop_tasks();
        let log = &self.shared.log;
        let positions = self.positions(&active.manifest, |t, p| {
            let (start, end) = (log.start_offset(t, p)?, log.end_offset(t, p)?);
            Ok(match to {
                ResetTo::Beginning => start,
                ResetTo::End => end,
                ResetTo::Offset(o) => o.clamp(start, end),
                ResetTo::Timestamp(ts) => log.offset_for_timestamp(t, p, ts)?.unwrap_or(end),
            })
        });
        let result = positions.and_then(|positions| {
            let generation = proc.record.lock().read_generation;
            let consumer = proc.consumer(generation);
            let store = &self.shared.store;
            if proc.kind == PluginKind::Projection && !keep_state {
                store.reset_pond(name, generation, &consumer, &positions)?;
            } else {
                store.set_checkpoints(&consumer, &positions)?;
            }
            Ok(())
        });
        self.start_if_runnable(&proc);
        result?;
        self.status_of(&proc)
    }

    /// Make `version` (default: the newest one older than the active one) active again.
    pub fn rollback(&self, name: &str, version: Option<u32>) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        let proc = self.shared.processor(name)?;
        let record = proc.record.lock().clone();
        let target = match version {
            Some(v) => record
                .version(v)
                .ok_or_else(|| EngineError::NotFound(format!("{name} has no version {v}")))?,
            None => record
                .versions
                .iter()
                .filter(|v| v.version < record.active_version)
                .max_by_key(|v| v.version)
                .ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "{name} has no version older than {}",
                        record.active_version
                    ))
                })?,
        }
        .clone();
        let manifest = Arc::new(Manifest::parse(target.manifest.clone())?);
        let bytes = self.shared.components.load(&target.sha256)?;
        let plugin = self.shared.runtime.load(manifest.kind, &bytes)?;
        // The older version's topics are claimed like a deploy's.
        let previous = self.shared.ownership.claim(manifest.clone())?;
        proc.stop_tasks();
        let active = Active {
            version: target.version,
            manifest,
            plugin,
        };
        let result = proc
            .activate(&self.shared, active)
            .and_then(|_| self.recover_crashed(&proc));
        if result.is_err() {
            self.shared.ownership.restore(name, previous);
        }
        self.start_if_runnable(&proc);
        result?;
        self.status_of(&proc)
    }

    /// Rebuild a pond from offset 0 into a new generation beside the
    /// current one; reads switch to it once it has caught up on every partition.
    pub fn rebuild(&self, name: &str) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        let proc = self.shared.processor(name)?;
        if proc.kind != PluginKind::Projection {
            return Err(EngineError::Invalid(format!(
                "{name} is not a projection; only ponds are rebuilt"
            )));
        }
        let active = proc
            .active()
            .ok_or_else(|| EngineError::Conflict(format!("{name} is not loaded")))?;
        if let Some(set) = proc.rebuild.lock().take() {
            set.stop_and_join();
        }
        let (old, generation) = {
            let r = proc.record.lock();
            (
                r.rebuilding_generation,
                r.read_generation.max(r.rebuilding_generation.unwrap_or(0)) + 1,
            )
        };
        if let Some(g) = old {
            self.shared.store.drop_pond(name, g)?;
            self.shared.store.delete_checkpoints(&proc.consumer(g))?;
        }
        let starts = self.positions(&active.manifest, |t, p| self.shared.log.start_offset(t, p))?;
        self.shared
            .store
            .set_checkpoints(&proc.consumer(generation), &starts)?;
        let record = {
            let mut r = proc.record.lock();
            r.rebuilding_generation = Some(generation);
            r.clone()
        };
        self.shared.store.put_plugin(&record)?;
        if proc.main.lock().is_some() {
            let set = self.spawn_tasks(&proc, &active, generation, true);
            *proc.rebuild.lock() = Some(set);
        }
        self.status_of(&proc)
    }

    /// Stop and forget a processor (its checkpoints, state, aggregates and
    /// results). Its topics and their records stay.
    pub fn delete(&self, name: &str) -> Result<()> {
        let _admin = self.shared.admin.lock();
        let proc = self.shared.processor(name)?;
        proc.stop_tasks();
        self.shared.store.delete_plugin(name)?;
        self.shared.processors.write().remove(name);
        self.shared.ownership.release(name);
        Ok(())
    }

    fn projection(&self, name: &str) -> Result<Arc<Processor>> {
        let proc = self.shared.processor(name)?;
        if proc.kind != PluginKind::Projection {
            return Err(EngineError::Invalid(format!(
                "{name} is a {}, not a pond",
                proc.kind.world()
            )));
        }
        Ok(proc)
    }

    /// The committed value of `key` in a pond (its read generation).
    pub fn pond_get(&self, pond: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let proc = self.projection(pond)?;
        let generation = proc.record.lock().read_generation;
        Ok(self.shared.store.pond_get(pond, generation, key)?)
    }

    /// Up to `limit` committed entries with `prefix`, strictly after `start_after`.
    pub fn pond_scan(
        &self,
        pond: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let proc = self.projection(pond)?;
        let generation = proc.record.lock().read_generation;
        Ok(self
            .shared
            .store
            .pond_scan(pond, generation, prefix, start_after, limit)?)
    }

    /// The plugin's own `query` over the pond's committed state.
    /// `Ok(Err(reason))` is the plugin refusing the request.
    pub fn pond_query(
        &self,
        pond: &str,
        request: &[u8],
    ) -> Result<std::result::Result<Vec<u8>, String>> {
        let proc = self.projection(pond)?;
        let active = proc
            .active()
            .ok_or_else(|| EngineError::Conflict(format!("{pond} is not loaded")))?;
        let generation = proc.record.lock().read_generation;
        let mut slot = proc.query.lock();
        if slot.as_ref().is_none_or(|(v, _)| *v != active.version) {
            let limits = active
                .manifest
                .limits(&self.shared.runtime.default_limits());
            let instance = active
                .plugin
                .projection(pond, limits, &active.manifest.config_json())
                .map_err(|e| EngineError::Plugin(e.to_string()))?;
            *slot = Some((active.version, instance));
        }
        let Some((_, instance)) = slot.as_mut() else {
            return Err(EngineError::Plugin("query instance unavailable".into()));
        };
        let reader = self.shared.store.pond_reader(pond, generation)?;
        projection::query(instance, &reader, request)
            .map_err(|e| EngineError::Plugin(e.to_string()))
    }

    /// Put a command durably into the service's commands topic (per the
    /// fsync policy). A command id that already has a result answers that
    /// result instead (nothing is appended).
    pub fn submit(&self, service: &str, command: &CommandRequest) -> Result<CommandOutcome> {
        submit_command(&self.shared, service, command)
    }

    /// The first result of a command, if it has been handled.
    pub fn command_result(&self, service: &str, id: &str) -> Result<Option<CommandOutcome>> {
        stored_result(&self.shared, service, id)
    }

    /// Wait up to `timeout` for a command's result (`None`: not yet handled).
    pub async fn await_result(
        &self,
        service: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<CommandOutcome>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.shared.waiters.lock();
            waiters.retain(|_, list| {
                list.retain(|s| !s.is_closed());
                !list.is_empty()
            });
            waiters
                .entry((service.to_string(), id.to_string()))
                .or_default()
                .push(tx);
        }
        // Registered before looking: a result committed meanwhile is not missed.
        if let Some(outcome) = stored_result(&self.shared, service, id)? {
            return Ok(Some(outcome));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => Ok(Some(outcome)),
            _ => Ok(None),
        }
    }

    /// Submit and wait for the result (up to `timeout`); `Accepted` when it
    /// is durable but not handled in time.
    pub async fn submit_and_wait(
        &self,
        service: &str,
        command: CommandRequest,
        timeout: Duration,
    ) -> Result<CommandOutcome> {
        let shared = self.shared.clone();
        let service_owned = service.to_string();
        let cmd = command.clone();
        let accepted =
            tokio::task::spawn_blocking(move || submit_command(&shared, &service_owned, &cmd))
                .await
                .map_err(|e| EngineError::Invalid(format!("submit task failed: {e}")))??;
        if !matches!(accepted, CommandOutcome::Accepted { .. }) {
            return Ok(accepted);
        }
        Ok(self
            .await_result(service, &command.id, timeout)
            .await?
            .unwrap_or(accepted))
    }

    /// Stop every task at a batch boundary (committing pending work) and
    /// make the store durable. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        let procs: Vec<Arc<Processor>> = self.shared.processors.read().values().cloned().collect();
        for p in procs {
            p.stop_tasks();
        }
        if let Err(e) = self.shared.store.sync() {
            tracing::error!("store sync at shutdown failed: {e}");
        }
    }

    /// The store (read access for tools and tests).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The processor that writes `topic`, if any.
    pub fn owner_of(&self, topic: &str) -> Option<String> {
        self.shared.ownership.owner_of(topic)
    }

    /// The ownership rule, for the paths that write on a client's behalf
    /// (the API's produce and topic delete go through it).
    pub fn ownership(&self) -> Arc<Ownership> {
        self.shared.ownership.clone()
    }
}

/// Put a command durably into the service's commands topic (per the
/// fsync policy). A command id that already has a result answers that
/// result instead (nothing is appended).
fn submit_command(
    shared: &Shared,
    service: &str,
    command: &CommandRequest,
) -> Result<CommandOutcome> {
    let active = shared.service(service)?;
    if command.id.is_empty() || command.id.len() > 256 {
        return Err(EngineError::Invalid(
            "a command id must be 1–256 bytes".into(),
        ));
    }
    if command.aggregate.is_empty() {
        return Err(EngineError::Invalid(
            "a command needs an aggregate id".into(),
        ));
    }
    if command.name.is_empty() {
        return Err(EngineError::Invalid("a command needs a name".into()));
    }
    if let Some(t) = &command.reply_topic {
        shared.ownership.check_reply(service, t)?;
    }
    if let Some(outcome) = stored_result(shared, service, &command.id)? {
        return Ok(outcome);
    }
    let topic = &active.manifest.inputs[0];
    let record = encode_command(
        &command.id,
        &command.aggregate,
        &command.name,
        &command.data,
        command.expected_version,
        command.reply_topic.as_deref(),
        now_ms(),
    );
    let partition = shared.log.partition_for(topic, &record.key)?;
    let ack = shared.log.append(topic, partition, &[record])?;
    Ok(CommandOutcome::Accepted {
        topic: topic.clone(),
        partition,
        offset: ack.base_offset,
    })
}

/// The stored first result of a command.
fn stored_result(shared: &Shared, service: &str, id: &str) -> Result<Option<CommandOutcome>> {
    match shared.store.command_result(service, id)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            EngineError::Store(StoreError::Corrupt {
                what: format!("result of command {id}"),
                detail: e.to_string(),
            })
        }),
    }
}

fn parse_kind(s: &str) -> Option<PluginKind> {
    PluginKind::ALL.into_iter().find(|k| k.world() == s)
}

fn create_topic(log: &dyn EventLog, name: &str, partitions: u32) -> Result<()> {
    match log.create_topic(name, TopicConfig::with_partitions(partitions)) {
        Ok(_) | Err(LogError::TopicExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Body of a task thread: build the worker (retrying a failing `init`),
/// find the committed position, run.
fn task_main(ctx: TaskCtx, pending: Arc<Mutex<PondPending>>, generation: u32) {
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
fn watch_rebuild(
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
