//! Engine-wide state shared with the task threads: the log, the store, the
//! runtime, the processors, command waiters and the ownership rule.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::log::{EventLog, LogError, TopicConfig};
use crate::runtime::{PluginKind, PondLookup, Runtime};
use crate::store::{PartitionPos, Store};

use super::command::StoredResult;
use super::components::ComponentStore;
use super::config::EngineConfig;
#[cfg(test)]
use super::config::Failpoints;
use super::error::{EngineError, Missing, Result};
use super::manifest::Manifest;
use super::ownership::Ownership;
use super::registry::{Active, Processor};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Who waits for which command's result: (service, command id) → waiters.
pub(crate) type Waiters = HashMap<(String, String), Vec<oneshot::Sender<StoredResult>>>;

/// Engine-wide state shared with the task threads.
pub(crate) struct Shared {
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) store: Arc<Store>,
    pub(crate) runtime: Runtime,
    pub(crate) config: EngineConfig,
    pub(crate) components: ComponentStore,
    pub(crate) processors: RwLock<BTreeMap<String, Arc<Processor>>>,
    pub(crate) waiters: Mutex<Waiters>,
    /// Who may write which topic (see `ownership`).
    pub(crate) ownership: Arc<Ownership>,
    #[cfg(test)]
    pub(crate) failpoints: Failpoints,
    /// Serialises admin operations (deploy, pause, reset…).
    pub(crate) admin: Mutex<()>,
    /// Cluster mode: the registry, leases and commit streams this host
    /// shares with the others (`None` on the embedded log).
    pub(crate) cluster: Option<Arc<super::cluster::Cluster>>,
}

impl Shared {
    /// A deployed component: this host's copy, else (cluster mode) the
    /// registry's, kept here for the next load.
    pub(crate) fn component(&self, sha256: &str) -> std::result::Result<Vec<u8>, String> {
        let local = self.components.load(sha256);
        let Some(cluster) = &self.cluster else {
            return local.map_err(|e| e.to_string());
        };
        if let Ok(bytes) = local {
            return Ok(bytes);
        }
        let bytes = cluster
            .registry
            .component(sha256)
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.components.save(&bytes) {
            tracing::warn!("cannot keep component {sha256} on this host: {e}");
        }
        Ok(bytes)
    }

    pub(crate) fn processor(&self, name: &str) -> Result<Arc<Processor>> {
        self.processors
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Missing::Plugin(name.to_string()).into())
    }

    pub(crate) fn service(&self, name: &str) -> Result<Active> {
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

    pub(crate) fn notify_result(&self, service: &str, id: &str, result: StoredResult) {
        let waiters = self
            .waiters
            .lock()
            .remove(&(service.to_string(), id.to_string()));
        for w in waiters.into_iter().flatten() {
            let _ = w.send(result.clone());
        }
    }
}

/// Pond lookups for enrichers: the committed state of the pond's read generation.
pub(crate) struct PondLookupImpl {
    pub(crate) shared: Weak<Shared>,
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

/// Create `name` unless it exists; answers whether this call created it.
pub(crate) fn create_topic(log: &dyn EventLog, name: &str, partitions: u32) -> Result<bool> {
    match log.create_topic(name, TopicConfig::with_partitions(partitions)) {
        Ok(_) => Ok(true),
        Err(LogError::TopicExists(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A position per input partition, computed by `at`.
pub(crate) fn positions(
    shared: &Shared,
    manifest: &Manifest,
    at: impl Fn(&str, u32) -> std::result::Result<u64, LogError>,
) -> Result<Vec<PartitionPos>> {
    let mut out = Vec::new();
    for t in &manifest.inputs {
        for p in shared.log.topic(t)?.partitions {
            out.push(PartitionPos {
                topic: t.clone(),
                partition: p.partition,
                offset: at(t, p.partition)?,
            });
        }
    }
    Ok(out)
}
