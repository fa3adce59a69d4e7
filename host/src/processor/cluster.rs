//! Processors in cluster mode (see `docs/cluster.md`): how one host's
//! engine runs its share of every processor over NATS JetStream, with no
//! processor state on its own disk.
//!
//! - **Registry.** A deploy stores the component and the new version in the
//!   shared registry (`cluster::registry`). Every host follows the registry
//!   and loads what it names ([`apply`]), so a deploy through any host runs
//!   on all of them; a host that starts later loads everything at start.
//! - **Leases.** A loop ([`Cluster::tick`], every third of the lease TTL)
//!   takes the processor partitions this host should run
//!   (`cluster::leases`). For each it *claims* the partition in the
//!   processor's commit stream (fencing any previous owner), forwards what
//!   that owner committed but had not forwarded yet, and runs the ordinary
//!   drive loop (`task::run`) from the committed checkpoint. A lease lost or
//!   given back stops the task at a batch boundary.
//! - **Commits.** A step commits through [`Slot::commit`]: its outputs,
//!   state changes and input checkpoint as one atomic batch in the commit
//!   stream, then the outputs are forwarded to their topics under message
//!   ids (`cluster::forward`). A fenced owner's commit changes nothing and
//!   ends its task; the unit's new owner redoes the step.
//! - **State** (a pond's keys, a service's aggregates and command results)
//!   lives in the unit's commit stream; every host keeps a copy for reads,
//!   owned by the host running the unit and followed by the others
//!   (`state_copies`).
//!
//! A *unit* (what a lease is for) is one input partition of a river or a
//! service, numbered in manifest order (input 0's partitions first, then
//! input 1's), or a whole pond: any partition of a pond may write any key
//! of its state, so one host runs all of them (see `docs/cluster.md` for
//! what that costs). A pond's unit is numbered by the state *generation* it
//! builds ([`units_of`]): the one reads use and, while a rebuild runs, the
//! one being built beside it from offset 0, which becomes the read
//! generation once its tasks have caught up ([`Cluster::promote`]). A
//! unit's checkpoint lists the positions of the partitions it covers.
//!
//! Deploy, pause, resume, rollback, reset, rebuild and delete act through
//! the registry ([`Cluster::reset_units`] moves a paused processor's units,
//! [`Cluster::start_generation`] starts a pond generation afresh,
//! [`Cluster::remove_commits`] empties a deleted processor's stream).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::cluster::commits::{
    CommitError, CommitStream, MAX_COMMIT_MESSAGES, Output, Owner, Step,
};
use crate::cluster::forward::{self, ForwardError};
use crate::cluster::leases::{Leases, Unit};
use crate::cluster::produce_keys::ProduceKeys;
use crate::cluster::registry::{Change, Registry, RegistryError};
use crate::log::LogError;
use crate::log::jetstream::JetStreamLog;
use crate::nats::{Nats, NatsError};
use crate::runtime::PluginKind;
use crate::store::{CommitSet, PartitionPos, PluginRecord, Store, StoreError};

use super::error::{EngineError, Result};
use super::manifest::Manifest;
use super::projection::PondPending;
use super::registry::{Active, Loaded, Processor, parse_kind};
use super::shared::Shared;
use super::state_copies::{StateCopies, StateUnit, service_entries};
use super::task::{Outputs, TaskCtx, TaskError};
use super::{recovery, supervisor};

/// How long a lease lives without renewal: a dead host's partitions move
/// to the others within it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

impl From<RegistryError> for EngineError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Rejected(m) => EngineError::Conflict(m),
            other => EngineError::Log(LogError::Backend(other.to_string())),
        }
    }
}

impl From<CommitError> for EngineError {
    fn from(e: CommitError) -> Self {
        EngineError::Log(LogError::Backend(e.to_string()))
    }
}

impl From<NatsError> for EngineError {
    fn from(e: NatsError) -> Self {
        EngineError::Log(LogError::Backend(e.to_string()))
    }
}

impl From<CommitError> for TaskError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Fenced { .. } => TaskError::Fenced,
            other => TaskError::Infra(format!("commit: {other}")),
        }
    }
}

impl From<ForwardError> for TaskError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::Commit(c) => c.into(),
            other => TaskError::Infra(format!("forward: {other}")),
        }
    }
}

/// One input position of a unit, as its commit stream keeps it: a unit's
/// checkpoint is the list of the positions of the input partitions it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    topic: String,
    partition: u32,
    offset: u64,
}

impl Checkpoint {
    fn encode(positions: &[Checkpoint]) -> Vec<u8> {
        serde_json::to_vec(positions).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Result<Vec<Checkpoint>, TaskError> {
        serde_json::from_slice(bytes)
            .map_err(|e| TaskError::Infra(format!("unreadable checkpoint: {e}")))
    }

    /// The offset stored for `topic`/`partition` (an error if the unit's
    /// checkpoint has none: the processor's inputs changed).
    fn offset_of(bytes: &[u8], topic: &str, partition: u32) -> Result<u64, TaskError> {
        Checkpoint::decode(bytes)?
            .iter()
            .find(|c| c.topic == topic && c.partition == partition)
            .map(|c| c.offset)
            .ok_or_else(|| {
                TaskError::Infra(format!(
                    "the checkpoint has no position for {topic}/{partition}"
                ))
            })
    }
}

/// One claimed unit: its commit stream and what its owner committed.
pub(crate) struct Slot {
    stream: Arc<CommitStream>,
    log: Arc<JetStreamLog>,
    owner: Mutex<Owner>,
    /// A pond's local copy missed a commit: nothing more commits through
    /// this slot (its tasks end, and the unit is claimed afresh).
    broken: AtomicBool,
}

impl Slot {
    /// The committed position of `topic`/`partition`, if any.
    pub(crate) fn position(&self, topic: &str, partition: u32) -> Result<Option<u64>, TaskError> {
        match &self.owner.lock().checkpoint {
            Some(bytes) => Checkpoint::offset_of(bytes, topic, partition).map(Some),
            None => Ok(None),
        }
    }

    /// The exactly-once step in cluster mode: outputs, state changes and
    /// the input checkpoint in one atomic commit, then forwarded (a pond's
    /// changes are also written to this host's copy). A forward that fails
    /// after the commit is retried by the next step or the lease loop.
    pub(crate) fn commit(
        &self,
        ctx: &TaskCtx,
        outputs: &Outputs,
        set: &CommitSet,
    ) -> Result<(), TaskError> {
        if set.checkpoints.is_empty() {
            return Err(TaskError::Infra("a step without its checkpoint".into()));
        }
        if self.broken.load(Ordering::Relaxed) {
            return Err(TaskError::Fenced);
        }
        let mut owner = self.owner.lock();
        let mut positions = match &owner.checkpoint {
            Some(bytes) => Checkpoint::decode(bytes)?,
            None => Vec::new(),
        };
        for p in &set.checkpoints {
            match positions
                .iter_mut()
                .find(|c| c.topic == p.topic && c.partition == p.partition)
            {
                Some(c) => c.offset = p.offset,
                None => positions.push(Checkpoint {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset: p.offset,
                }),
            }
        }
        let step = Step {
            outputs: outputs
                .iter()
                .flat_map(|((topic, partition), records)| {
                    records.iter().map(|record| Output {
                        topic: topic.clone(),
                        partition: *partition,
                        record: record.clone(),
                    })
                })
                .collect(),
            state: match &set.pond {
                Some(delta) => delta
                    .writes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                None => service_entries(set),
            },
            checkpoint: Checkpoint::encode(&positions),
        };
        self.stream.commit(&mut owner, step)?;
        if let Err(e) = write_copy(&ctx.shared.store, set) {
            // Committed, but the copy the unit's tasks read lacks it.
            self.broken.store(true, Ordering::Relaxed);
            tracing::error!(processor = %ctx.proc.name, "the local copy of the state missed a commit ({e}); taking the unit over afresh");
            return Err(TaskError::Fenced);
        }
        if let Err(e) = forward::forward(&self.log, &self.stream, &mut owner) {
            match TaskError::from(e) {
                TaskError::Fenced => return Err(TaskError::Fenced),
                other => ctx.note_error(format!("committed; forwarding later: {other}"), None),
            }
        }
        Ok(())
    }

    /// Forward what is committed and not yet forwarded (unless a step is
    /// committing right now: it forwards itself).
    fn forward_pending(&self) -> Result<(), ForwardError> {
        let Some(mut owner) = self.owner.try_lock() else {
            return Ok(());
        };
        if owner.outbox.is_empty() {
            return Ok(());
        }
        forward::forward(&self.log, &self.stream, &mut owner).map(drop)
    }
}

/// Write a committed step's state changes to this host's copy.
fn write_copy(store: &Store, set: &CommitSet) -> Result<(), StoreError> {
    if let Some(delta) = &set.pond {
        return store.write_pond(delta);
    }
    if set.aggregates.is_empty() && set.command_results.is_empty() {
        return Ok(());
    }
    let mut state = CommitSet::new(String::new());
    state.aggregates = set.aggregates.clone();
    state.command_results = set.command_results.clone();
    store.commit(&state)
}

/// The most outputs one step may commit in cluster mode (one message is the
/// checkpoint).
pub(crate) const MAX_STEP_OUTPUTS: usize = MAX_COMMIT_MESSAGES - 1;

/// A unit this host runs: one task per input partition it covers.
struct UnitTask {
    version: u32,
    /// The pond state generation it reads and writes.
    generation: u32,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    /// One per task: set while it has nothing left to read.
    caught_up: Vec<Arc<AtomicBool>>,
    slot: Arc<Slot>,
    /// Owns its state's copy here (ponds and services).
    owns_copy: Option<Unit>,
}

impl UnitTask {
    /// Whether a task ended (the unit is to be claimed and started again).
    fn ended(&self) -> bool {
        self.handles.iter().any(JoinHandle::is_finished)
    }

    fn stop_and_join(self, copies: &StateCopies) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            if handle.join().is_err() {
                tracing::error!("a processor task panicked");
            }
        }
        if let Some(unit) = &self.owns_copy {
            copies.disown(unit);
        }
    }
}

/// This host's part of the cluster.
pub(crate) struct Cluster {
    pub(crate) log: Arc<JetStreamLog>,
    pub(crate) registry: Registry,
    /// The idempotency keys of produce requests, shared by all hosts.
    pub(crate) produce_keys: Arc<ProduceKeys>,
    leases: Leases,
    ttl: Duration,
    streams: Mutex<HashMap<String, Arc<CommitStream>>>,
    running: Mutex<BTreeMap<Unit, UnitTask>>,
    copies: StateCopies,
    /// Held by a lease round and by a version switch, so a round never
    /// starts a unit with a version being replaced.
    switching: Mutex<()>,
    /// Held while a registry change is applied ([`apply`]), and the
    /// revision of the last change applied per processor.
    applying: Mutex<()>,
    applied: Mutex<HashMap<String, u64>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Join the cluster as `host` (unique among live hosts).
    pub(crate) fn join(
        nats: Arc<Nats>,
        log: Arc<JetStreamLog>,
        host: &str,
        ttl: Duration,
    ) -> Result<Cluster> {
        let registry = Registry::open(nats.clone())?;
        let produce_keys = Arc::new(ProduceKeys::open(nats.clone(), host)?);
        let leases = Leases::join(nats, host, ttl)?;
        Ok(Cluster {
            log,
            registry,
            produce_keys,
            leases,
            ttl,
            streams: Mutex::new(HashMap::new()),
            running: Mutex::new(BTreeMap::new()),
            copies: StateCopies::default(),
            switching: Mutex::new(()),
            applying: Mutex::new(()),
            applied: Mutex::new(HashMap::new()),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// The commit stream of `processor` (opened once per host).
    pub(crate) fn stream(&self, processor: &str) -> Result<Arc<CommitStream>, CommitError> {
        if let Some(s) = self.streams.lock().get(processor) {
            return Ok(s.clone());
        }
        let stream = Arc::new(CommitStream::open(self.nats(), processor)?);
        self.streams
            .lock()
            .insert(processor.to_string(), stream.clone());
        Ok(stream)
    }

    fn nats(&self) -> Arc<Nats> {
        self.log.nats().clone()
    }

    /// Load every deployed processor, then follow the registry and run the
    /// lease loop on their own threads.
    pub(crate) fn start(shared: &Arc<Shared>) -> Result<()> {
        let Some(cluster) = &shared.cluster else {
            return Ok(());
        };
        for change in cluster.registry.list()? {
            apply(shared, change);
        }
        let weak = Arc::downgrade(shared);
        let follower = std::thread::Builder::new()
            .name("weir-registry".into())
            .spawn(move || follow(weak))?;
        // Leases: every third of their TTL.
        let weak = Arc::downgrade(shared);
        let leases = std::thread::Builder::new()
            .name("weir-leases".into())
            .spawn(move || {
                rounds(
                    weak,
                    |cluster| cluster.ttl / 3,
                    |shared, cluster| match cluster.tick(shared) {
                        Ok(rebuilt) => {
                            for (pond, generation) in rebuilt {
                                if let Err(e) = cluster.promote(shared, &pond, generation) {
                                    tracing::warn!(%pond, generation, "cannot switch reads to the rebuilt generation: {e}");
                                }
                            }
                        }
                        Err(e) => tracing::warn!("lease round failed: {e}"),
                    },
                )
            })?;
        // This host's copies of the state of units it does not run.
        let weak = Arc::downgrade(shared);
        let copies =
            std::thread::Builder::new()
                .name("weir-copies".into())
                .spawn(move || {
                    rounds(
                        weak,
                        |_| Duration::from_millis(50),
                        |shared, cluster| {
                            let units = state_units(shared);
                            cluster
                                .copies
                                .follow_round(shared, &units, |name| Ok(cluster.stream(name)?))
                        },
                    )
                })?;
        cluster.threads.lock().extend([follower, leases, copies]);
        Ok(())
    }

    /// Stop the loops and every unit at a batch boundary (committing), and
    /// give the leases back so other hosts take over at once.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        let running: Vec<(Unit, UnitTask)> = std::mem::take(&mut *self.running.lock())
            .into_iter()
            .collect();
        for (unit, task) in running {
            task.stop_and_join(&self.copies);
            if let Err(e) = self.leases.release(&unit) {
                tracing::warn!(processor = %unit.processor, partition = unit.partition, "cannot give back a lease: {e}");
            }
        }
    }

    /// Stop the units of `processor` this host runs (the lease loop starts
    /// them again with what is active then).
    pub(crate) fn stop_units_of(&self, processor: &str) {
        let stopping: Vec<UnitTask> = {
            let mut running = self.running.lock();
            let units: Vec<Unit> = running
                .keys()
                .filter(|u| u.processor == processor)
                .cloned()
                .collect();
            units.iter().filter_map(|u| running.remove(u)).collect()
        };
        for task in stopping {
            task.stop_and_join(&self.copies);
        }
    }

    fn stop_unit(&self, unit: &Unit) {
        let task = self.running.lock().remove(unit);
        if let Some(task) = task {
            task.stop_and_join(&self.copies);
        }
    }

    /// One round of the lease loop: renew, take and give back leases, and
    /// make the running units match the leases held. Answers the pond
    /// generations being rebuilt here whose tasks have all caught up.
    fn tick(&self, shared: &Arc<Shared>) -> Result<Vec<(String, u32)>> {
        let _round = self.switching.lock();
        let wanted = wanted_units(shared);
        let units: Vec<Unit> = wanted.keys().cloned().collect();
        let changes = self.leases.tick(&units)?;
        for unit in &changes.lost {
            tracing::info!(processor = %unit.processor, partition = unit.partition, "lease lost");
            self.stop_unit(unit);
        }
        for unit in &changes.to_release {
            self.stop_unit(unit);
            self.leases.release(unit)?;
        }
        for (unit, _) in self.leases.held() {
            let Some((proc, active)) = wanted.get(&unit) else {
                continue;
            };
            let stale = self.running.lock().get(&unit).map(|t| {
                t.ended()
                    || t.version != active.version
                    || t.generation != unit_generation(proc, &unit)
            });
            match stale {
                Some(false) => continue,
                Some(true) => self.stop_unit(&unit),
                None => {}
            }
            match self.start_unit(shared, proc, active, &unit) {
                Ok(Some(task)) => {
                    self.running.lock().insert(unit, task);
                }
                // Not ready yet: the next round starts it.
                Ok(None) => {}
                Err(e) => {
                    proc.metrics.record_error(super::metrics::LastError {
                        message: format!("cannot take over partition {}: {e}", unit.partition),
                        at_ms: super::shared::now_ms(),
                        topic: None,
                        partition: None,
                        offset: None,
                    });
                }
            }
        }
        let slots: Vec<Arc<Slot>> = self
            .running
            .lock()
            .values()
            .map(|t| t.slot.clone())
            .collect();
        for slot in slots {
            if let Err(e) = slot.forward_pending() {
                tracing::warn!("forwarding committed outputs: {e}");
            }
        }
        let rebuilt = self
            .running
            .lock()
            .iter()
            .filter(|(unit, task)| {
                wanted.get(*unit).is_some_and(|(proc, _)| {
                    proc.kind == PluginKind::Projection
                        && proc.record.lock().rebuilding_generation == Some(unit.partition)
                }) && task.caught_up.iter().all(|c| c.load(Ordering::Relaxed))
            })
            .map(|(unit, _)| (unit.processor.clone(), unit.partition))
            .collect();
        Ok(rebuilt)
    }

    /// Switch `pond`'s reads to its rebuilt `generation`, whose tasks here
    /// have caught up: the record names it the read generation (every host
    /// then stops the old generation's unit and drops its copy, and already
    /// follows the new one), then the old generation's partition of the
    /// commit stream is claimed (fencing a host that has not seen the
    /// switch yet), its outbox forwarded and its state removed.
    fn promote(&self, shared: &Arc<Shared>, pond: &str, generation: u32) -> Result<()> {
        let mut replaced = None;
        let change = self.registry.update(pond, |current| {
            let Some(mut record) = current else {
                return Err(RegistryError::Rejected(format!(
                    "{pond} was deleted meanwhile"
                )));
            };
            if record.rebuilding_generation != Some(generation) {
                return Err(RegistryError::Rejected(format!(
                    "{pond} no longer rebuilds generation {generation}"
                )));
            }
            replaced = Some(record.read_generation);
            record.read_generation = generation;
            record.rebuilding_generation = None;
            Ok(Some(record))
        })?;
        apply(shared, change);
        tracing::info!(%pond, generation, "reads switched to the rebuilt generation");
        if let Some(old) = replaced {
            self.clear_generation(pond, old)?;
        }
        Ok(())
    }

    /// Claim `unit`, forward what its previous owner left (and own the
    /// local copy of its state), start its tasks.
    fn start_unit(
        &self,
        shared: &Arc<Shared>,
        proc: &Arc<Processor>,
        active: &Active,
        unit: &Unit,
    ) -> Result<Option<UnitTask>> {
        let units = unit_inputs(shared, proc.kind, &active.manifest)?;
        let inputs = units_of(proc, units.len())
            .into_iter()
            .find(|(u, _)| u == unit)
            .and_then(|(_, index)| units.get(index).cloned());
        let Some(inputs) = inputs else {
            return Err(EngineError::Invalid(format!(
                "{} has no unit {}",
                proc.name, unit.partition
            )));
        };
        let stream = self.stream(&proc.name)?;
        let rebuilding = proc.kind == PluginKind::Projection
            && proc.record.lock().rebuilding_generation == Some(unit.partition);
        let mut owner = if rebuilding {
            stream.start(unit.partition)?
        } else {
            stream.claim(unit.partition)?
        };
        match &owner.checkpoint {
            Some(_) => {}
            // A rebuild starts at its inputs' first offsets: the first
            // host to run it writes them.
            None if rebuilding => {
                let starts = inputs
                    .iter()
                    .map(|(topic, partition)| {
                        Ok(PartitionPos {
                            topic: topic.clone(),
                            partition: *partition,
                            offset: shared.log.start_offset(topic, *partition)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let step = Step {
                    checkpoint: checkpoint_at(&inputs, &starts)?,
                    ..Step::default()
                };
                stream.commit(&mut owner, step)?;
            }
            // Claimed between a reset's new generation's claim and its
            // first checkpoint (`start_generation`, which writes it again).
            None => {
                tracing::debug!(processor = %proc.name, unit = unit.partition, "no checkpoint yet");
                return Ok(None);
            }
        }
        let generation = unit_generation(proc, unit);
        let owns_copy = (proc.kind != PluginKind::Enricher).then(|| unit.clone());
        if owns_copy.is_some() {
            let copy = StateUnit {
                unit: unit.clone(),
                kind: proc.kind,
                generation,
            };
            self.copies
                .own(shared, &copy, &std::mem::take(&mut owner.state))?;
        }
        if let Err(e) = forward::forward(&self.log, &stream, &mut owner) {
            // Left in the outbox: the task's first step (or the next tick) forwards it.
            tracing::warn!(processor = %proc.name, partition = unit.partition, "forwarding a previous owner's outputs: {e}");
        }
        let slot = Arc::new(Slot {
            stream,
            log: self.log.clone(),
            owner: Mutex::new(owner),
            broken: AtomicBool::new(false),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let pending = PondPending::new();
        let mut handles = Vec::with_capacity(inputs.len());
        let mut caught_up = Vec::with_capacity(inputs.len());
        for (topic, partition) in inputs {
            let mut ctx = TaskCtx::new(shared, proc, active, generation, &topic, partition, &stop);
            ctx.cluster = Some(slot.clone());
            caught_up.push(ctx.caught_up.clone());
            let name = format!("weir-{}-{partition}", proc.name);
            let pending = pending.clone();
            let spawned = std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn(move || supervisor::task_main(ctx, pending, generation));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Those started stop again; the next round retries.
                    stop.store(true, Ordering::Relaxed);
                    for h in handles {
                        let _ = h.join();
                    }
                    if let Some(unit) = &owns_copy {
                        self.copies.disown(unit);
                    }
                    return Err(e.into());
                }
            }
        }
        tracing::info!(processor = %proc.name, unit = unit.partition, version = active.version, "running unit");
        Ok(Some(UnitTask {
            version: active.version,
            generation,
            stop,
            handles,
            caught_up,
            slot,
            owns_copy,
        }))
    }

    /// Write each unit's starting positions unless it has them (a new
    /// processor's `start_from`), before its record names it: no host runs
    /// a unit without a checkpoint.
    pub(crate) fn init_checkpoints(
        &self,
        shared: &Shared,
        name: &str,
        kind: PluginKind,
        manifest: &Manifest,
    ) -> Result<()> {
        // Opened afresh (made if missing): a processor of this name deleted
        // a moment ago may still be cached with its removed stream.
        let stream = Arc::new(CommitStream::open(self.nats(), name)?);
        self.streams.lock().insert(name.to_string(), stream.clone());
        for (i, inputs) in unit_inputs(shared, kind, manifest)?.into_iter().enumerate() {
            let mut owner = stream.start(i as u32)?;
            if owner.checkpoint.is_some() {
                continue;
            }
            let mut positions = Vec::with_capacity(inputs.len());
            for (topic, partition) in inputs {
                let offset = match manifest.start_from {
                    super::manifest::StartFrom::Earliest => {
                        shared.log.start_offset(&topic, partition)?
                    }
                    super::manifest::StartFrom::Latest => {
                        shared.log.end_offset(&topic, partition)?
                    }
                };
                positions.push(Checkpoint {
                    topic,
                    partition,
                    offset,
                });
            }
            stream.commit(
                &mut owner,
                Step {
                    checkpoint: Checkpoint::encode(&positions),
                    ..Step::default()
                },
            )?;
        }
        Ok(())
    }

    /// Empty `processor`'s commit stream without losing a committed output:
    /// claim each unit (fencing any host still running it), forward what
    /// its outbox holds, then remove the stream.
    pub(crate) fn remove_commits(&self, processor: &str) -> Result<()> {
        let stream = self.stream(processor)?;
        for partition in stream.partitions()? {
            self.take_stopped(&stream, partition)?;
        }
        // Still cached: dropped when the record goes (`apply`), so nothing
        // here opens, and so makes, the stream again meanwhile.
        stream.delete()?;
        Ok(())
    }

    /// Claim a unit of a processor every host was told to stop (fencing a
    /// host that still runs it) and forward what its outbox holds.
    fn take_stopped(&self, stream: &CommitStream, partition: u32) -> Result<Owner> {
        let mut attempt = 0;
        let mut owner = loop {
            match stream.claim(partition) {
                // A host that has not seen the stop yet claimed it back.
                Err(CommitError::Fenced { .. }) if attempt < 10 => {
                    attempt += 1;
                    std::thread::sleep(self.ttl / 3);
                }
                claimed => break claimed?,
            }
        };
        forward::forward(&self.log, stream, &mut owner)
            .map_err(|e| EngineError::Log(LogError::Backend(e.to_string())))?;
        Ok(owner)
    }

    /// Move every unit of a paused processor to `positions` (a pond's: the
    /// unit of its read generation, keeping its state; a rebuild goes on),
    /// unit by unit: each is claimed, its outbox forwarded, its new
    /// checkpoint committed.
    pub(crate) fn reset_units(
        &self,
        shared: &Shared,
        proc: &Processor,
        manifest: &Manifest,
        positions: &[PartitionPos],
    ) -> Result<()> {
        let stream = self.stream(&proc.name)?;
        let units = unit_inputs(shared, proc.kind, manifest)?;
        let read_generation = proc.record.lock().read_generation;
        for (unit, index) in units_of(proc, units.len()) {
            if proc.kind == PluginKind::Projection && unit.partition != read_generation {
                continue;
            }
            let mut owner = self.take_stopped(&stream, unit.partition)?;
            let checkpoint = checkpoint_at(&units[index], positions)?;
            stream.commit(
                &mut owner,
                Step {
                    checkpoint,
                    ..Step::default()
                },
            )?;
        }
        Ok(())
    }

    /// Start `pond`'s state `generation` (a number the record reserved and
    /// no host has written) empty at `positions` (a reset): claimed,
    /// emptied and given its first checkpoint. A host claiming it between
    /// the claim and the checkpoint finds none and does not start it; the
    /// checkpoint is then written again.
    pub(crate) fn start_generation(
        &self,
        shared: &Shared,
        pond: &Processor,
        manifest: &Manifest,
        generation: u32,
        positions: &[PartitionPos],
    ) -> Result<()> {
        let stream = self.stream(&pond.name)?;
        let units = unit_inputs(shared, pond.kind, manifest)?;
        let inputs = units.first().map(Vec::as_slice).unwrap_or_default();
        let checkpoint = checkpoint_at(inputs, positions)?;
        let mut attempt = 0;
        loop {
            let mut owner = stream.start(generation)?;
            stream.clear_state(&owner)?;
            let step = Step {
                checkpoint: checkpoint.clone(),
                ..Step::default()
            };
            match stream.commit(&mut owner, step) {
                Err(CommitError::Fenced { .. }) if attempt < 10 => attempt += 1,
                done => return Ok(done?),
            }
        }
    }

    /// Empty the partition of `pond`'s state `generation`, which no host
    /// runs any more (reads moved on): claimed (fencing a host that has not
    /// seen that yet), its outbox forwarded, its state removed.
    pub(crate) fn clear_generation(&self, pond: &str, generation: u32) -> Result<()> {
        let stream = self.stream(pond)?;
        let owner = self.take_stopped(&stream, generation)?;
        stream.clear_state(&owner)?;
        Ok(())
    }

    /// Committed positions of `processor`'s units (for its status).
    /// (A pond's are those of its read generation.)
    pub(crate) fn positions(
        &self,
        proc: &Processor,
        shared: &Shared,
        manifest: &Manifest,
    ) -> Result<Vec<(String, u32, u64)>> {
        let stream = self.stream(&proc.name)?;
        let units = unit_inputs(shared, proc.kind, manifest)?;
        let read_generation = proc.record.lock().read_generation;
        let mut out = Vec::new();
        for (unit, index) in units_of(proc, units.len()) {
            if proc.kind == PluginKind::Projection && unit.partition != read_generation {
                continue;
            }
            let Some(bytes) = stream.checkpoint(unit.partition)? else {
                continue;
            };
            for (topic, partition) in units[index].iter().cloned() {
                if let Ok(offset) = Checkpoint::offset_of(&bytes, &topic, partition) {
                    out.push((topic, partition, offset));
                }
            }
        }
        Ok(out)
    }
}

/// The input partitions each unit of a processor covers, in unit order: a
/// river's unit is one input partition (input 0's partitions first, then
/// input 1's); a pond is one unit covering them all, because any of its
/// partitions may write any key of its state.
fn unit_inputs(
    shared: &Shared,
    kind: PluginKind,
    manifest: &Manifest,
) -> Result<Vec<Vec<(String, u32)>>> {
    let mut all = Vec::new();
    for topic in &manifest.inputs {
        let info = shared.log.topic(topic)?;
        for p in info.partitions {
            all.push((topic.clone(), p.partition));
        }
    }
    Ok(match kind {
        PluginKind::Projection => vec![all],
        _ => all.into_iter().map(|input| vec![input]).collect(),
    })
}

/// The units of `proc` now, each with the index (in [`unit_inputs`]'s
/// answer, of `inputs` entries) of the input partitions it covers. A
/// river's or service's unit `i` covers entry `i`. A pond's units are
/// numbered by the state generation they build, which is also their
/// partition in the commit stream: the generation reads use and, while a
/// rebuild runs, the one built beside it; each covers all its inputs.
fn units_of(proc: &Processor, inputs: usize) -> Vec<(Unit, usize)> {
    if proc.kind == PluginKind::Projection {
        let (read, rebuilding) = {
            let r = proc.record.lock();
            (r.read_generation, r.rebuilding_generation)
        };
        return std::iter::once(read)
            .chain(rebuilding)
            .map(|g| (Unit::new(proc.name.clone(), g), 0))
            .collect();
    }
    (0..inputs)
        .map(|i| (Unit::new(proc.name.clone(), i as u32), i))
        .collect()
}

/// The pond state generation `unit` of `proc` reads and writes (see
/// [`units_of`]; other kinds have one).
fn unit_generation(proc: &Processor, unit: &Unit) -> u32 {
    if proc.kind == PluginKind::Projection {
        unit.partition
    } else {
        proc.record.lock().read_generation
    }
}

/// The checkpoint of a unit covering `inputs`, at `positions`.
fn checkpoint_at(inputs: &[(String, u32)], positions: &[PartitionPos]) -> Result<Vec<u8>> {
    let mut checkpoint = Vec::with_capacity(inputs.len());
    for (topic, partition) in inputs {
        let Some(at) = positions
            .iter()
            .find(|p| p.topic == *topic && p.partition == *partition)
        else {
            return Err(EngineError::Invalid(format!(
                "no position for {topic}/{partition}"
            )));
        };
        checkpoint.push(Checkpoint {
            topic: topic.clone(),
            partition: *partition,
            offset: at.offset,
        });
    }
    Ok(Checkpoint::encode(&checkpoint))
}

/// The units of every pond and service, whose state every host keeps a
/// copy of (a pond's rebuilt generation too, so reads switch to a copy
/// already made).
fn state_units(shared: &Shared) -> Vec<StateUnit> {
    let procs: Vec<Arc<Processor>> = shared.processors.read().values().cloned().collect();
    let mut out = Vec::new();
    for proc in procs {
        if proc.kind == PluginKind::Enricher {
            continue;
        }
        let Some(active) = proc.active() else {
            continue;
        };
        let Ok(units) = unit_inputs(shared, proc.kind, &active.manifest) else {
            continue;
        };
        out.extend(
            units_of(&proc, units.len())
                .into_iter()
                .map(|(unit, _)| StateUnit {
                    generation: unit_generation(&proc, &unit),
                    unit,
                    kind: proc.kind,
                }),
        );
    }
    out
}

/// The units of every processor that should run now, with what runs them.
fn wanted_units(shared: &Shared) -> BTreeMap<Unit, (Arc<Processor>, Active)> {
    let procs: Vec<Arc<Processor>> = shared.processors.read().values().cloned().collect();
    let mut out = BTreeMap::new();
    for proc in procs {
        let (paused, stopped) = {
            let r = proc.record.lock();
            (r.paused, r.stopped.is_some())
        };
        if paused || stopped || proc.crashed() {
            continue;
        }
        let Some(active) = proc.active() else {
            continue;
        };
        let Ok(units) = unit_inputs(shared, proc.kind, &active.manifest) else {
            continue;
        };
        for (unit, _) in units_of(&proc, units.len()) {
            out.insert(unit, (proc.clone(), active.clone()));
        }
    }
    out
}

/// Make this host's processors match a registry change, unless it already
/// applied a later one of that processor (changes come from this host's own
/// updates, the registry follower and the list at start, in any order
/// between them). One change is applied at a time.
pub(crate) fn apply(shared: &Arc<Shared>, change: Change) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    let _applying = cluster.applying.lock();
    {
        let mut applied = cluster.applied.lock();
        let last = applied.entry(change.name().to_string()).or_insert(0);
        if change.revision() <= *last && change.revision() != 0 {
            tracing::debug!(processor = %change.name(), revision = change.revision(), "an older registry change; skipped");
            return;
        }
        *last = change.revision();
    }
    let record = match change {
        Change::Put(record, _) => record,
        Change::Deleted(name, _) => {
            if let Some(cluster) = &shared.cluster {
                cluster.streams.lock().remove(&name);
            }
            let removed = shared.processors.write().remove(&name);
            if let Some(cluster) = &shared.cluster {
                cluster.stop_units_of(&name);
                if let Err(e) = cluster.copies.forget(shared, &name) {
                    tracing::warn!(processor = %name, "cannot forget the deleted processor's state here: {e}");
                }
            }
            if removed.is_some() {
                shared.ownership.restore(&name, None);
                tracing::info!(processor = %name, "deleted (registry)");
            }
            return;
        }
    };
    let existing = shared.processors.read().get(&record.name).cloned();
    if let Some(proc) = &existing
        && proc.active().map(|a| a.version) == Some(record.active_version)
    {
        let old = std::mem::replace(&mut *proc.record.lock(), record.clone());
        if proc.kind == PluginKind::Projection
            && let Some(cluster) = &shared.cluster
        {
            // A reset, a rebuild or its switch left a generation behind:
            // its unit stops here and its copy goes.
            let now = [record.read_generation]
                .into_iter()
                .chain(record.rebuilding_generation);
            let before = [old.read_generation]
                .into_iter()
                .chain(old.rebuilding_generation);
            // Under the lease round's lock, so no round starts it again.
            let _round = cluster.switching.lock();
            for gone in before.filter(|g| !now.clone().any(|n| n == *g)) {
                cluster.stop_unit(&Unit::new(record.name.clone(), gone));
                cluster.copies.drop_generation(shared, &record.name, gone);
            }
        }
        return;
    }
    let name = record.name.clone();
    let kind = record.kind.clone();
    let fresh = recovery::restore(shared, record.clone());
    let loaded = fresh.active();
    let manifest = loaded.as_ref().map(|a| a.manifest.clone());
    match existing {
        Some(proc) => {
            // The old version's units stop before the record says the new
            // one is active; the next lease round starts the new one.
            let _switch = shared.cluster.as_ref().map(|c| c.switching.lock());
            proc.state.lock().loaded = match loaded {
                Some(a) => Loaded::Active(a),
                None => Loaded::Failed(fresh.load_error().unwrap_or_default()),
            };
            if let Some(cluster) = &shared.cluster {
                cluster.stop_units_of(&name);
            }
            *proc.query.lock() = None;
            *proc.record.lock() = record;
        }
        None => {
            shared.processors.write().insert(name.clone(), fresh);
        }
    }
    if manifest.is_some() {
        shared.ownership.restore(&name, manifest);
    }
    tracing::info!(processor = %name, kind = ?parse_kind(&kind), "loaded from the registry");
}

/// Follow the registry until the engine stops, re-following if the watch ends.
fn follow(shared: Weak<Shared>) {
    loop {
        let Some(cluster) = shared.upgrade().and_then(|s| s.cluster.clone()) else {
            return;
        };
        let changes = match cluster.registry.follow() {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!("cannot follow the registry: {e}");
                if sleep_unless_stopped(&cluster.stop, Duration::from_secs(1)) {
                    return;
                }
                continue;
            }
        };
        drop(cluster);
        loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let Some(cluster) = shared.cluster.clone() else {
                return;
            };
            if cluster.stop.load(Ordering::Relaxed) {
                return;
            }
            match changes.recv_timeout(Duration::from_millis(200)) {
                Ok(change) => apply(&shared, change),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

/// Run `round` until the engine stops, pausing `pause` between rounds.
fn rounds(
    shared: Weak<Shared>,
    pause: fn(&Cluster) -> Duration,
    round: fn(&Arc<Shared>, &Cluster),
) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let Some(cluster) = strong.cluster.clone() else {
            return;
        };
        if cluster.stop.load(Ordering::Relaxed) {
            return;
        }
        round(&strong, &cluster);
        drop(strong);
        if sleep_unless_stopped(&cluster.stop, pause(&cluster)) {
            return;
        }
    }
}

/// Sleep up to `d`, waking early when `stop` is set. True if stopping.
fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = std::time::Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
    true
}

/// The record of a processor's first version, as a deploy writes it.
pub(crate) fn first_record(
    manifest: &Manifest,
    sha256: String,
    stored: serde_json::Value,
) -> PluginRecord {
    PluginRecord {
        name: manifest.name.clone(),
        kind: manifest.kind.world().to_string(),
        versions: vec![crate::store::VersionRecord {
            version: 1,
            sha256,
            manifest: stored,
            deployed_at_ms: super::shared::now_ms(),
        }],
        active_version: 1,
        paused: false,
        stopped: None,
        read_generation: 0,
        rebuilding_generation: None,
    }
}
