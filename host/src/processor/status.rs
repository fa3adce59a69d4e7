//! What `inspect` shows about a processor: its run state, its progress per
//! input partition, its versions and metrics, and its one wire shape (the
//! HTTP API's plugin answers serialize [`ProcessorStatus`] directly).

use std::collections::HashMap;

use serde::{Serialize, Serializer};

use crate::runtime::PluginKind;
use crate::store::VersionRecord;

use super::error::Result;
use super::manifest::Manifest;
use super::metrics::{LastError, MetricsSnapshot};
use super::registry::Processor;
use super::shared::Shared;

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

    /// Why it is stopped or failed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            RunState::Stopped { reason } | RunState::Failed { reason } => Some(reason),
            RunState::Running | RunState::Paused => None,
        }
    }
}

/// Progress of a processor over one input partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// The wire shape: the state as a word beside its reason, the active
/// manifest's inputs and outputs at the top, each version marked active or
/// not, and the counters clients read (all since start).
impl Serialize for ProcessorStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Version<'a> {
            version: u32,
            sha256: &'a str,
            deployed_at_ms: i64,
            active: bool,
        }
        #[derive(Serialize)]
        struct Wire<'a> {
            name: &'a str,
            kind: &'static str,
            state: &'static str,
            state_reason: Option<&'a str>,
            active_version: u32,
            inputs: &'a [String],
            outputs: &'a [String],
            manifest: Option<&'a Manifest>,
            versions: Vec<Version<'a>>,
            partitions: &'a [PartitionStatus],
            events_in: u64,
            events_out: u64,
            error_count: u64,
            dead_lettered: u64,
            last_error: Option<&'a LastError>,
            generation: u32,
            rebuilding_generation: Option<u32>,
        }
        let (inputs, outputs): (&[String], &[String]) = match &self.manifest {
            Some(m) => (&m.inputs, &m.outputs),
            None => (&[], &[]),
        };
        Wire {
            name: &self.name,
            kind: self.kind.world(),
            state: self.state.as_str(),
            state_reason: self.state.reason(),
            active_version: self.active_version,
            inputs,
            outputs,
            manifest: self.manifest.as_ref(),
            versions: self
                .versions
                .iter()
                .map(|v| Version {
                    version: v.version,
                    sha256: &v.sha256,
                    deployed_at_ms: v.deployed_at_ms,
                    active: v.version == self.active_version,
                })
                .collect(),
            partitions: &self.partitions,
            events_in: self.metrics.events_in,
            events_out: self.metrics.events_out,
            error_count: self.metrics.errors,
            dead_lettered: self.metrics.dead_lettered,
            last_error: self.last_error.as_ref(),
            generation: self.read_generation,
            rebuilding_generation: self.rebuilding_generation,
        }
        .serialize(serializer)
    }
}

pub(crate) fn status_of(shared: &Shared, proc: &Processor) -> Result<ProcessorStatus> {
    let record = proc.record.lock().clone();
    let active = proc.active();
    let state = if let Some(e) = proc.load_error() {
        RunState::Failed { reason: e }
    } else if proc.crashed() {
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
        let committed: HashMap<(String, u32), u64> = match &shared.cluster {
            Some(cluster) => cluster
                .positions(proc, shared, &a.manifest)
                .unwrap_or_else(|e| {
                    tracing::warn!(processor = %proc.name, "cannot read its checkpoints: {e}");
                    Vec::new()
                })
                .into_iter()
                .map(|(topic, partition, offset)| ((topic, partition), offset))
                .collect(),
            None => shared
                .store
                .checkpoints(&consumer)?
                .into_iter()
                .map(|p| ((p.topic, p.partition), p.offset))
                .collect(),
        };
        for t in &a.manifest.inputs {
            let Ok(info) = shared.log.topic(t) else {
                continue;
            };
            for p in info.partitions {
                let c = match committed.get(&(t.clone(), p.partition)) {
                    Some(c) => *c,
                    // Every unit has a checkpoint from its deploy on: one
                    // not read (the cluster unreachable) is left out, not
                    // shown as the partition's start.
                    None if shared.cluster.is_some() => continue,
                    // Not committed yet: at the start.
                    None => p.start_offset,
                };
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
