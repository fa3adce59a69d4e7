//! The engine façade the HTTP layer uses: open, deploy, inspect, pause /
//! resume / reset / rollback / rebuild / delete, pond reads, commands.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::batch::Record;
use crate::cluster::registry::RegistryError;
use crate::log::jetstream::JetStreamLog;
use crate::log::{EventLog, LogError};
use crate::runtime::{Plugin, PluginKind, Runtime};
use crate::store::{PartitionPos, PluginRecord, Store, VersionRecord};

use super::cluster::{self, Cluster};
use super::command::CommandOutcome;
use super::command::StoredResult;
use super::commands::{CommandRequest, result_for, stored_result, submit_command};
use super::components::ComponentStore;
#[cfg(test)]
use super::config::Failpoints;
use super::config::{EngineConfig, ResetTo};
use super::error::{EngineError, Missing, Result};
use super::manifest::{Manifest, StartFrom};
use super::ownership::{self, Ownership};
use super::projection;
use super::registry::{Active, Loaded, Processor, consumer_id, parse_kind};
use super::shared::{self, Shared, create_topic, now_ms};
use super::status::{self, ProcessorStatus};
use super::{recovery, supervisor};

/// The processor engine. Dropping it stops every task at a batch boundary.
pub struct Engine {
    shared: Arc<Shared>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why a log without processor commits (JetStream) refuses deploys unless
/// the engine runs as a cluster host (`Engine::open_cluster`).
const PROCESSORS_NEED_COMMITS: &str = "processors need commits this log backend does not have: \
     on JetStream they run on engines opened as cluster hosts (`weir serve --backend jetstream`).";

impl Engine {
    /// Open the store under `config.data_dir`, restore every deployed
    /// processor, cut owned outputs back to their committed ends, then start
    /// the tasks of processors that are not paused or stopped.
    pub fn open(config: EngineConfig, log: Arc<dyn EventLog>, runtime: Runtime) -> Result<Engine> {
        Engine::open_with(config, log, runtime, None)
    }

    /// Open a host of a cluster on JetStream (`log`) as `host` (unique
    /// among live hosts): processors come from the shared registry and run
    /// on the partitions whose leases (living `lease_ttl`) this host holds;
    /// see `cluster`. `config.data_dir` keeps only a cache of components.
    pub fn open_cluster(
        config: EngineConfig,
        log: Arc<JetStreamLog>,
        runtime: Runtime,
        host: &str,
        lease_ttl: Duration,
    ) -> Result<Engine> {
        let cluster = Cluster::join(log.nats().clone(), log.clone(), host, lease_ttl)?;
        let engine = Engine::open_with(config, log, runtime, Some(Arc::new(cluster)))?;
        Cluster::start(&engine.shared)?;
        Ok(engine)
    }

    fn open_with(
        config: EngineConfig,
        log: Arc<dyn EventLog>,
        runtime: Runtime,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Engine> {
        let commits = log.supports_processor_commits();
        let store = Arc::new(Store::open(
            config.data_dir.join("store.redb"),
            config.store_durability(),
            config.store_cache_bytes,
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
            cluster,
        });
        let engine = Engine { shared };
        let records = engine.shared.store.plugins()?;
        if !commits && let Some(first) = records.first() {
            return Err(LogError::Unsupported(format!(
                "the data directory holds processors of the embedded backend (e.g. {:?}), \
                 which a JetStream host cannot run: serve it with the embedded backend, \
                 or point this host at an empty data directory",
                first.name
            ))
            .into());
        }
        let mut restored = Vec::new();
        for record in records {
            let proc = recovery::restore(&engine.shared, record);
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
                    recovery::recover_outputs(&engine.shared, proc, &m)?;
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
            supervisor::start_if_runnable(&engine.shared, proc);
        }
        Ok(engine)
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
        let cluster = self.shared.cluster.clone();
        if !self.shared.log.supports_processor_commits() && cluster.is_none() {
            return Err(LogError::Unsupported(PROCESSORS_NEED_COMMITS.into()).into());
        }
        let raw_manifest = manifest;
        let manifest = Manifest::parse(raw_manifest.clone())?;
        // Compile and check the component off the data path (before any lock).
        let plugin = self.shared.runtime.load(manifest.kind, component)?;
        self.check_init(&plugin, &manifest)?;
        let _admin = self.shared.admin.lock();
        let existing = self.shared.processors.read().get(&manifest.name).cloned();
        if let Some(p) = &existing {
            let active = p.active();
            check_redeploy(
                &p.name,
                p.kind,
                active.as_ref().map(|a| &*a.manifest),
                &manifest,
            )
            .map_err(EngineError::Conflict)?;
        }
        if let Some(p) = &existing
            && is_active_already(p, &manifest, component)
        {
            // The same bytes and manifest again: nothing to do.
            return status::status_of(&self.shared, p);
        }
        let name = manifest.name.clone();
        let manifest = Arc::new(manifest);
        // Claim the topics first: from here on no client append lands in them.
        let previous = self.shared.ownership.claim(manifest.clone())?;
        let mut created = Vec::new();
        let deployed = self
            .ensure_topics(&manifest, &mut created)
            .and_then(|()| match &cluster {
                Some(cluster) => self.publish_version(cluster, manifest, component, raw_manifest),
                None => self.activate_deployed(existing, manifest, plugin, component, raw_manifest),
            });
        if deployed.is_err() {
            // A refused deploy changes nothing: drop the topics it made and
            // give back its claims.
            for topic in created {
                if let Err(e) = self.shared.log.delete_topic(&topic) {
                    tracing::warn!(%topic, "cannot remove a topic of a failed deploy: {e}");
                }
            }
            self.shared.ownership.restore(&name, previous);
        }
        let proc = deployed?;
        supervisor::start_if_runnable(&self.shared, &proc);
        status::status_of(&self.shared, &proc)
    }

    /// The part of a deploy after its claims were granted and its topics
    /// made: store the component and the version, activate it.
    fn activate_deployed(
        &self,
        existing: Option<Arc<Processor>>,
        manifest: Arc<Manifest>,
        plugin: Plugin,
        component: &[u8],
        raw_manifest: serde_json::Value,
    ) -> Result<Arc<Processor>> {
        #[cfg(test)]
        if self
            .shared
            .failpoints
            .fail_deploy_after_topics
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(EngineError::Io(std::io::Error::other(
                "injected deploy failure",
            )));
        }
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
                recovery::recover_crashed(&self.shared, &proc)?;
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
                let starts =
                    shared::positions(&self.shared, &manifest, |t, p| match manifest.start_from {
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
                let proc = Processor::new(record, kind, Loaded::Active(active));
                self.shared
                    .processors
                    .write()
                    .insert(proc.name.clone(), proc.clone());
                proc
            }
        };
        Ok(proc)
    }

    /// Cluster mode's part of a deploy after its claims and topics: store
    /// the component, give a new processor its starting checkpoints, then
    /// add the version to the shared registry (a compare-and-set, so
    /// deploys through several hosts at once get distinct versions), and
    /// load it here; every other host loads it as it follows the registry.
    fn publish_version(
        &self,
        cluster: &Cluster,
        manifest: Arc<Manifest>,
        component: &[u8],
        raw_manifest: serde_json::Value,
    ) -> Result<Arc<Processor>> {
        let sha = cluster.registry.put_component(component)?;
        self.shared.components.save(component)?;
        let stored_manifest = serde_json::to_value(&*manifest).unwrap_or(raw_manifest);
        if cluster.registry.get(&manifest.name)?.is_none() {
            cluster.init_checkpoints(&self.shared, &manifest.name, manifest.kind, &manifest)?;
        }
        let change = cluster.registry.update(&manifest.name, |current| {
            let Some(mut record) = current else {
                return Ok(Some(cluster::first_record(
                    &manifest,
                    sha.clone(),
                    stored_manifest.clone(),
                )));
            };
            let kind = parse_kind(&record.kind).ok_or_else(|| {
                RegistryError::Rejected(format!("{} has an unknown kind", record.name))
            })?;
            let active = record
                .active()
                .map(|v| Manifest::parse(v.manifest.clone()))
                .transpose()
                .map_err(|e| RegistryError::Rejected(e.to_string()))?;
            check_redeploy(&record.name, kind, active.as_ref(), &manifest)
                .map_err(RegistryError::Rejected)?;
            let version = record.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            record.versions.push(VersionRecord {
                version,
                sha256: sha.clone(),
                manifest: stored_manifest.clone(),
                deployed_at_ms: now_ms(),
            });
            record.active_version = version;
            record.stopped = None;
            Ok(Some(record))
        })?;
        cluster::apply(&self.shared, change);
        self.shared.processor(&manifest.name)
    }

    /// Cluster mode: change `name`'s record in the shared registry with
    /// `change` (every host follows it), apply it here and restart this
    /// host's partitions of it with what is active now. Other hosts stop or
    /// start theirs at their next lease round (a third of the lease TTL).
    fn change_in_cluster(
        &self,
        cluster: &Cluster,
        name: &str,
        mut change: impl FnMut(&mut PluginRecord) -> Result<(), RegistryError>,
    ) -> Result<ProcessorStatus> {
        let proc = self.shared.processor(name)?;
        let changed = cluster.registry.update(name, |current| {
            let Some(mut record) = current else {
                return Err(RegistryError::Rejected(format!(
                    "{name} was deleted meanwhile"
                )));
            };
            change(&mut record)?;
            Ok(Some(record))
        })?;
        cluster::apply(&self.shared, changed);
        cluster.stop_units_of(name);
        proc.set_crashed(false);
        status::status_of(&self.shared, &proc)
    }

    /// Delete across the cluster: stop it on every host (a stopped record
    /// every host follows), empty its commit stream without losing a
    /// committed output (`Cluster::remove_commits`), then drop the record,
    /// upon which every host forgets its copies. Interrupted, it leaves a
    /// processor stopped "being deleted", and deleting it again finishes.
    fn delete_in_cluster(&self, cluster: &Cluster, name: &str) -> Result<()> {
        let _admin = self.shared.admin.lock();
        if cluster.registry.get(name)?.is_none() {
            return Err(Missing::Plugin(name.to_string()).into());
        }
        self.change_in_cluster(cluster, name, |r| {
            r.stopped = Some("being deleted".into());
            Ok(())
        })?;
        cluster.remove_commits(name)?;
        let deleted = cluster.registry.update(name, |_| Ok(None))?;
        cluster::apply(&self.shared, deleted);
        Ok(())
    }

    /// Create missing outputs / DLQ (and a service's commands topic),
    /// naming each in `created`; inputs must exist.
    fn ensure_topics(&self, manifest: &Manifest, created: &mut Vec<String>) -> Result<()> {
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
                    if create_topic(&**log, t, n)? {
                        created.push(t.clone());
                    }
                    input_partitions = Some(n);
                }
                Err(LogError::UnknownTopic(_)) => {
                    return Err(Missing::InputTopic(t.clone()).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let n = manifest
            .partitions
            .or(input_partitions)
            .unwrap_or(self.shared.config.default_partitions);
        for t in &manifest.outputs {
            if create_topic(&**log, t, n)? {
                created.push(t.clone());
            }
        }
        let dlq = manifest.dlq_topic();
        if create_topic(&**log, &dlq, 1)? {
            created.push(dlq);
        }
        Ok(())
    }

    /// Cluster mode: the idempotency keys of produce requests every host checks.
    pub fn produce_keys(&self) -> Option<Arc<crate::cluster::produce_keys::ProduceKeys>> {
        self.shared.cluster.as_ref().map(|c| c.produce_keys.clone())
    }

    pub fn list(&self) -> Vec<ProcessorStatus> {
        let procs: Vec<Arc<Processor>> = self.shared.processors.read().values().cloned().collect();
        procs
            .iter()
            .filter_map(|p| status::status_of(&self.shared, p).ok())
            .collect()
    }

    pub fn inspect(&self, name: &str) -> Result<ProcessorStatus> {
        let proc = self.shared.processor(name)?;
        status::status_of(&self.shared, &proc)
    }

    /// Stop a processor's tasks (at a batch boundary) until `resume`.
    pub fn pause(&self, name: &str) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        if let Some(cluster) = &self.shared.cluster {
            return self.change_in_cluster(cluster, name, |r| {
                r.paused = true;
                Ok(())
            });
        }
        let proc = self.shared.processor(name)?;
        proc.stop_tasks();
        let record = {
            let mut r = proc.record.lock();
            r.paused = true;
            r.clone()
        };
        self.shared.store.put_plugin(&record)?;
        status::status_of(&self.shared, &proc)
    }

    /// Run a paused or stopped processor again.
    pub fn resume(&self, name: &str) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        if let Some(cluster) = &self.shared.cluster {
            return self.change_in_cluster(cluster, name, |r| {
                r.paused = false;
                r.stopped = None;
                Ok(())
            });
        }
        let proc = self.shared.processor(name)?;
        proc.stop_tasks();
        let record = {
            let mut r = proc.record.lock();
            r.paused = false;
            r.stopped = None;
            r.clone()
        };
        self.shared.store.put_plugin(&record)?;
        recovery::recover_crashed(&self.shared, &proc)?;
        supervisor::start_if_runnable(&self.shared, &proc);
        status::status_of(&self.shared, &proc)
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
        if let Some(cluster) = &self.shared.cluster {
            return self.reset_in_cluster(cluster, &proc, &active, to, keep_state);
        }
        proc.stop_tasks();
        let result = self.reset_positions(&active, to).and_then(|positions| {
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
        supervisor::start_if_runnable(&self.shared, &proc);
        result?;
        status::status_of(&self.shared, &proc)
    }

    /// Where a reset to `to` puts each input partition of `active`.
    fn reset_positions(&self, active: &Active, to: ResetTo) -> Result<Vec<PartitionPos>> {
        let log = &self.shared.log;
        shared::positions(&self.shared, &active.manifest, |t, p| {
            let (start, end) = (log.start_offset(t, p)?, log.end_offset(t, p)?);
            Ok(match to {
                ResetTo::Beginning => start,
                ResetTo::End => end,
                ResetTo::Offset(o) => o.clamp(start, end),
                ResetTo::Timestamp(ts) => log.offset_for_timestamp(t, p, ts)?.unwrap_or(end),
            })
        })
    }

    /// Reset across the cluster: paused on every host through the registry
    /// (claims fence a host that has not seen it yet), moved, then resumed
    /// as it was. Every unit is moved in place (`Cluster::reset_units`),
    /// except a pond losing its state: it gets a new read generation,
    /// started empty at the positions (`Cluster::start_generation`), so
    /// every host's copy is made again, and the old one is emptied. A
    /// pond's rebuild goes on. Interrupted, it leaves the processor
    /// paused; resetting again finishes it.
    fn reset_in_cluster(
        &self,
        cluster: &Cluster,
        proc: &Arc<Processor>,
        active: &Active,
        to: ResetTo,
        keep_state: bool,
    ) -> Result<ProcessorStatus> {
        let positions = self.reset_positions(active, to)?;
        let mut was_paused = false;
        let mut generations = (0, 0);
        let clear_state = proc.kind == PluginKind::Projection && !keep_state;
        self.change_in_cluster(cluster, &proc.name, |r| {
            was_paused = r.paused;
            r.paused = true;
            if clear_state {
                // Reserved here, so two admin calls never build one generation.
                generations = (r.read_generation, next_generation(r));
                r.read_generation = generations.1;
            }
            Ok(())
        })?;
        if clear_state {
            let (old, fresh) = generations;
            cluster.start_generation(&self.shared, proc, &active.manifest, fresh, &positions)?;
            let status = self.change_in_cluster(cluster, &proc.name, |r| {
                r.paused = was_paused;
                Ok(())
            })?;
            if let Err(e) = cluster.clear_generation(&proc.name, old) {
                tracing::warn!(processor = %proc.name, generation = old, "cannot empty the replaced generation: {e}");
            }
            return Ok(status);
        }
        cluster.reset_units(&self.shared, proc, &active.manifest, &positions)?;
        self.change_in_cluster(cluster, &proc.name, |r| {
            r.paused = was_paused;
            Ok(())
        })
    }

    /// Make `version` (default: the newest one older than the active one) active again.
    pub fn rollback(&self, name: &str, version: Option<u32>) -> Result<ProcessorStatus> {
        let _admin = self.shared.admin.lock();
        let proc = self.shared.processor(name)?;
        if let Some(cluster) = &self.shared.cluster {
            // The shared record, not this host's copy of it, names the versions
            // (a deploy through another host may not have reached this one).
            let mut refused = None;
            let changed = self.change_in_cluster(cluster, name, |r| {
                match rollback_target(r, name, version) {
                    Ok(target) => {
                        r.active_version = target.version;
                        r.stopped = None;
                        Ok(())
                    }
                    Err(e) => {
                        let message = e.to_string();
                        refused = Some(e);
                        Err(RegistryError::Rejected(message))
                    }
                }
            });
            return match (changed, refused) {
                (Err(_), Some(e)) => Err(e),
                (changed, _) => changed,
            };
        }
        let record = proc.record.lock().clone();
        let target = rollback_target(&record, name, version)?;
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
            .and_then(|_| recovery::recover_crashed(&self.shared, &proc));
        if result.is_err() {
            self.shared.ownership.restore(name, previous);
        }
        supervisor::start_if_runnable(&self.shared, &proc);
        result?;
        status::status_of(&self.shared, &proc)
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
        if let Some(cluster) = &self.shared.cluster {
            return self.rebuild_in_cluster(cluster, &proc);
        }
        let rebuilding = proc.state.lock().rebuild.take();
        if let Some(set) = rebuilding {
            set.stop_and_join();
        }
        let (old, generation) = {
            let r = proc.record.lock();
            (r.rebuilding_generation, next_generation(&r))
        };
        if let Some(g) = old {
            self.shared.store.drop_pond(name, g)?;
            self.shared.store.delete_checkpoints(&proc.consumer(g))?;
        }
        let starts = shared::positions(&self.shared, &active.manifest, |t, p| {
            self.shared.log.start_offset(t, p)
        })?;
        self.shared
            .store
            .set_checkpoints(&proc.consumer(generation), &starts)?;
        let record = {
            let mut r = proc.record.lock();
            r.rebuilding_generation = Some(generation);
            r.clone()
        };
        self.shared.store.put_plugin(&record)?;
        let running = proc.state.lock().main.is_some();
        if running {
            let set = supervisor::spawn_tasks(&self.shared, &proc, &active, generation, true);
            proc.state.lock().rebuild = Some(set);
        }
        status::status_of(&self.shared, &proc)
    }

    /// Rebuild across the cluster: the record names a new generation as
    /// the one being rebuilt (every host then wants its unit, and follows
    /// its state; the host that runs it first starts it at the inputs'
    /// first offsets), and a rebuild it replaces is emptied. The host
    /// running it switches reads once it has caught up (`Cluster::promote`).
    fn rebuild_in_cluster(
        &self,
        cluster: &Cluster,
        proc: &Arc<Processor>,
    ) -> Result<ProcessorStatus> {
        let mut replaced = None;
        let mut generation = 0;
        self.change_in_cluster(cluster, &proc.name, |r| {
            replaced = r.rebuilding_generation;
            generation = next_generation(r);
            r.rebuilding_generation = Some(generation);
            Ok(())
        })?;
        tracing::info!(processor = %proc.name, generation, "rebuilding");
        if let Some(old) = replaced
            && let Err(e) = cluster.clear_generation(&proc.name, old)
        {
            tracing::warn!(processor = %proc.name, generation = old, "cannot empty the abandoned rebuild: {e}");
        }
        status::status_of(&self.shared, proc)
    }

    /// Stop and forget a processor (its checkpoints, state, aggregates and
    /// results). Its topics and their records stay.
    pub fn delete(&self, name: &str) -> Result<()> {
        if let Some(cluster) = &self.shared.cluster {
            return self.delete_in_cluster(cluster, name);
        }
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
        Ok(stored_result(&self.shared, service, id)?.map(|r| r.outcome))
    }

    /// Wait up to `timeout` for a command's result (`None`: not yet handled).
    pub async fn await_result(
        &self,
        service: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<CommandOutcome>> {
        Ok(self
            .await_stored(service, id, timeout)
            .await?
            .map(|r| r.outcome))
    }

    async fn await_stored(
        &self,
        service: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<StoredResult>> {
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
        // Registered before looking: a result committed meanwhile is not
        // missed. The look reads the store: off the async threads.
        let (shared, s, i) = (self.shared.clone(), service.to_string(), id.to_string());
        let stored = tokio::task::spawn_blocking(move || stored_result(&shared, &s, &i))
            .await
            .map_err(|e| EngineError::Invalid(format!("result lookup failed: {e}")))??;
        if let Some(outcome) = stored {
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
        match self.await_stored(service, &command.id, timeout).await? {
            Some(stored) => result_for(&command, stored),
            None => Ok(accepted),
        }
    }

    /// Stop every task at a batch boundary (committing pending work) and
    /// make the store durable. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        if let Some(cluster) = &self.shared.cluster {
            cluster.shutdown();
        }
        let procs: Vec<Arc<Processor>> = self.shared.processors.read().values().cloned().collect();
        for p in procs {
            p.stop_tasks();
        }
        if let Err(e) = self.shared.store.sync() {
            tracing::error!("store sync at shutdown failed: {e}");
        }
    }

    /// The crash switches of this engine's tasks.
    #[cfg(test)]
    pub(crate) fn failpoints(&self) -> &Failpoints {
        &self.shared.failpoints
    }

    /// The store (read access for tools and tests).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The processor that writes `topic`, if any.
    pub fn owner_of(&self, topic: &str) -> Option<String> {
        self.shared.ownership.owner_of(topic)
    }

    /// Append a client's records to one partition (the HTTP produce path;
    /// blocking, durable per the fsync policy when it returns) and answer
    /// the first offset given. A topic a processor owns refuses, appending
    /// nothing: see the `ownership` module.
    pub fn append_from_client(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
    ) -> Result<u64> {
        #[cfg(test)]
        {
            let mut fail = self.shared.failpoints.fail_client_append_to.lock();
            if *fail == Some(partition) {
                *fail = None;
                return Err(EngineError::Io(std::io::Error::other(
                    "injected append failure",
                )));
            }
        }
        self.shared.ownership.client_write(topic, || {
            Ok(self
                .shared
                .log
                .append(topic, partition, records)?
                .base_offset)
        })
    }

    /// Delete a topic (blocking). One a processor owns or reads is refused
    /// (delete the processor first): see the `ownership` module.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.shared
            .ownership
            .delete_topic(name, || Ok(self.shared.log.delete_topic(name)?))
    }
}

/// The version a rollback of `name` (whose record is `record`) activates:
/// `version`, or the newest one older than the active one.
/// A pond generation no host has used: above both the read one and the
/// one being rebuilt, which only ever grow to it.
fn next_generation(record: &PluginRecord) -> u32 {
    record
        .read_generation
        .max(record.rebuilding_generation.unwrap_or(0))
        + 1
}

fn rollback_target(
    record: &PluginRecord,
    name: &str,
    version: Option<u32>,
) -> Result<VersionRecord> {
    let target = match version {
        Some(v) => record.version(v).ok_or_else(|| Missing::Version {
            plugin: name.to_string(),
            version: v,
        })?,
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
    };
    Ok(target.clone())
}

/// Whether `manifest` may become a new version of `name`, deployed as
/// `kind` and running `active` (why not, if not).
fn check_redeploy(
    name: &str,
    kind: PluginKind,
    active: Option<&Manifest>,
    manifest: &Manifest,
) -> std::result::Result<(), String> {
    if kind != manifest.kind {
        return Err(format!(
            "{name} is deployed as {}; delete it before deploying a {}",
            kind.world(),
            manifest.kind.world()
        ));
    }
    if let Some(a) = active
        && (a.inputs != manifest.inputs || a.outputs != manifest.outputs)
    {
        return Err(format!(
            "a new version of {name} must keep its inputs and outputs; delete and redeploy to change them"
        ));
    }
    Ok(())
}

/// Is `component` with `manifest` what `proc` runs already (loaded, the
/// same digest and the same manifest, defaults filled in)?
fn is_active_already(proc: &Processor, manifest: &Manifest, component: &[u8]) -> bool {
    if proc.active().is_none() {
        return false; // it failed to load: a deploy retries
    }
    let record = proc.record.lock();
    record.active().is_some_and(|v| {
        v.sha256 == crate::runtime::sha256_hex(component)
            && serde_json::to_value(manifest).is_ok_and(|m| m == v.manifest)
    })
}
