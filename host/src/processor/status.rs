//! What `inspect` shows about a processor: its run state, its progress per
//! input partition, its versions and metrics.

use crate::runtime::PluginKind;
use crate::store::VersionRecord;

use super::manifest::Manifest;
use super::metrics::{LastError, MetricsSnapshot};

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
