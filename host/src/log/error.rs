//! The log's error type. Every variant maps to one HTTP status class, so the
//! API layer can translate without string matching:
//! `UnknownTopic` → 404, `TopicExists` → 409, `InvalidName` / `InvalidPartition` /
//! `InvalidConfig` / `InvalidArgument` / `BatchTooLarge` → 400,
//! `OffsetOutOfRange` → 416 (or 400), `TooManyRecords` → 413, `Unsupported` → 501,
//! `Corrupt` / `Io` / `Closed` / `Backend` → 500 / 503.

use std::path::PathBuf;

/// Errors of the embedded log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    InvalidPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    /// A read or lookup outside `start..=end`. `start` is the first offset
    /// still stored (it rises with retention), `end` the visible end.
    #[error("offset {offset} is out of range: the partition holds offsets {start}..{end}")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    /// Stored data failed validation at `position` (a byte offset) of `file`.
    #[error("corrupt log data in {} at byte {position}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    /// More records in one append than the backend stores atomically.
    #[error("an append of {count} records exceeds the limit of {max} records")]
    TooManyRecords { count: usize, max: usize },
    /// An operation this backend cannot perform (e.g. cutting JetStream's tail).
    #[error("not supported by this log backend: {0}")]
    Unsupported(String),
    /// The cluster backend (NATS JetStream) failed or could not be reached.
    #[error("the JetStream backend failed: {0}")]
    Backend(String),
    #[error("the log is closed")]
    Closed,
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attach a human context to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LogError::Io {
            context: what(),
            source,
        })
    }
}
