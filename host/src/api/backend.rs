//! What the HTTP layer needs from the layers below it, as two narrow ports:
//! [`Rapids`] (topics, produce, read) and [`Engine`] (plugins, ponds,
//! services, processor metrics), plus the views they answer with.
//!
//! Routes only ever talk to these traits; `api::adapters` implements them
//! over the real log and processor engine, and the unit tests implement them
//! in memory. Keeping the views here (not the lower layers' own types) keeps
//! the wire format stable when the layers below change.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use super::error::ApiError;
use crate::batch::{Record, RecordBatch};

/// One partition of a topic as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionView {
    pub partition: u32,
    /// First offset still stored (retention moves it forward).
    pub start_offset: u64,
    /// One past the last committed offset (the next offset to be written).
    pub end_offset: u64,
}

/// A topic as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicView {
    pub name: String,
    pub partitions: Vec<PartitionView>,
}

/// What a client asks for when it creates a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    /// Delete whole segments older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest whole segments beyond this size per partition.
    pub retention_bytes: Option<u64>,
    /// Keep only the latest record per key.
    pub compact: bool,
}

/// The partitioned log, as the API uses it. Methods that touch the disk are
/// blocking: call them from `spawn_blocking`.
pub trait Rapids: Send + Sync + 'static {
    fn create_topic(&self, spec: &TopicSpec) -> Result<TopicView, ApiError>;
    /// Refused with `topic_in_use` (409) while a processor owns or reads it.
    fn delete_topic(&self, name: &str) -> Result<(), ApiError>;
    fn topics(&self) -> Vec<TopicView>;
    fn topic(&self, name: &str) -> Result<TopicView, ApiError>;
    /// The partition a record with this key goes to; keyless records are
    /// spread round-robin.
    fn partition_for(&self, topic: &str, key: Option<&[u8]>) -> Result<u32, ApiError>;
    /// Append records to one partition as one batch (blocking; durable per the
    /// host's fsync policy when it returns). Returns the first offset given.
    /// A topic a processor owns refuses with `topic_owned` (409), appending
    /// nothing: see `processor::ownership`.
    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64, ApiError>;
    /// Up to `max_records` committed records from `offset` (blocking). An
    /// offset equal to the end answers an empty batch; one before the start or
    /// past the end is an `invalid_offset` error.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<RecordBatch, ApiError>;
    /// Resolves when `partition` has a committed record at `offset` (or the
    /// topic goes away), or when `timeout` passes, whichever is first.
    fn wait_for<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, ()>;
    /// Make everything appended so far durable (blocking); used at shutdown.
    fn sync(&self) -> Result<(), ApiError>;
}

/// One deployed version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionView {
    pub version: u32,
    /// sha256 of the component, hex.
    pub sha256: String,
    /// When it was deployed, ms since the Unix epoch.
    pub deployed_at_ms: i64,
    pub active: bool,
}

/// Progress of one processor over one input partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessorPartitionView {
    pub topic: String,
    pub partition: u32,
    /// Next input offset to process (everything before it is committed).
    pub committed_offset: u64,
    pub end_offset: u64,
    pub lag: u64,
}

/// The last error a processor ran into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastErrorView {
    pub message: String,
    pub at_ms: i64,
    pub topic: Option<String>,
    pub partition: Option<u32>,
    pub offset: Option<u64>,
}

/// A deployed plugin (a running processor) as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginView {
    pub name: String,
    /// `enricher`, `projection` or `command-handler`.
    pub kind: String,
    /// `running`, `paused`, `stopped` (error policy `stop` tripped) or
    /// `failed` (its component could not be loaded).
    pub state: String,
    /// Why it is stopped or failed.
    pub state_reason: Option<String>,
    pub active_version: u32,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// The manifest of the active version, as deployed.
    pub manifest: serde_json::Value,
    pub versions: Vec<VersionView>,
    pub partitions: Vec<ProcessorPartitionView>,
    /// Events handed to the plugin since start.
    pub events_in: u64,
    /// Records it emitted since start.
    pub events_out: u64,
    /// Failed plugin calls (traps, timeouts, failures) since start.
    pub error_count: u64,
    /// Events sent to the dead-letter topic since start.
    pub dead_lettered: u64,
    pub last_error: Option<LastErrorView>,
    /// Projections: the state generation reads come from, and the one being
    /// rebuilt beside it (if any).
    pub generation: u32,
    pub rebuilding_generation: Option<u32>,
}

// Resets and commands cross the boundary as the processor's own types.
pub use crate::processor::{CommandOutcome, CommandRequest, ResetTo};

/// Metric labels as (name, value) pairs.
pub type Labels = Vec<(String, String)>;

/// Key-value entries of a pond, in key order.
pub type PondEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// A Prometheus metric family the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    /// `counter`, `gauge`, `histogram` or `summary`.
    pub kind: &'static str,
    /// (sample name suffix such as `""`, `"_bucket"`, `"_sum"`; labels; value)
    pub samples: Vec<(String, Labels, f64)>,
}

/// The processor engine, as the API uses it.
pub trait Engine: Send + Sync + 'static {
    /// Validate, compile (off the data path) and activate a plugin version.
    /// `manifest` is the client's JSON manifest; `component` the wasm bytes.
    fn deploy(
        &self,
        manifest: serde_json::Value,
        component: Vec<u8>,
    ) -> BoxFuture<'_, Result<PluginView, ApiError>>;
    fn plugins(&self) -> Result<Vec<PluginView>, ApiError>;
    fn plugin(&self, name: &str) -> Result<PluginView, ApiError>;
    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>>;
    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>>;
    /// Move the input positions; a pond's state is emptied unless `keep_state`.
    fn reset<'a>(
        &'a self,
        name: &'a str,
        to: ResetTo,
        keep_state: bool,
    ) -> BoxFuture<'a, Result<PluginView, ApiError>>;
    /// Make `version` (default: the one before the active one) active again.
    fn rollback<'a>(
        &'a self,
        name: &'a str,
        version: Option<u32>,
    ) -> BoxFuture<'a, Result<PluginView, ApiError>>;
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Rebuild a pond from offset 0 beside the current state; reads switch
    /// to the new state once it has caught up.
    fn rebuild<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>>;

    fn pond_get(&self, pond: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ApiError>;
    fn pond_scan(
        &self,
        pond: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<PondEntries, ApiError>;
    fn pond_query<'a>(
        &'a self,
        pond: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApiError>>;

    /// Put a command durably into the service's command topic; with `wait`,
    /// also wait (up to that long) for its result.
    fn submit<'a>(
        &'a self,
        service: &'a str,
        command: CommandRequest,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutcome, ApiError>>;
    /// The result of an earlier command, if it has been handled.
    fn command_result(&self, service: &str, id: &str) -> Result<Option<CommandOutcome>, ApiError>;

    fn metrics(&self) -> Vec<MetricFamily>;
    /// Stop every processor at a batch boundary and commit (graceful shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
