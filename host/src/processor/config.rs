//! How the engine runs ([`EngineConfig`]), where a reset moves a processor
//! ([`ResetTo`]), and the test-only failpoints.

use std::path::PathBuf;
#[cfg(test)]
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::log::FsyncPolicy;
use crate::store::StoreDurability;

/// Test-only switches that simulate crashes (not in release builds).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Failpoints {
    /// The next step that appended outputs stops dead after the append and
    /// before the store commit, as if the process had been killed there.
    pub crash_before_commit: AtomicBool,
    /// The next client append to this partition fails (a disk error, or
    /// the crash of a process between two appends of one request).
    pub fail_client_append_to: parking_lot::Mutex<Option<u32>>,
    /// The next deploy fails right after creating its topics (as a full
    /// disk would, storing the component).
    pub fail_deploy_after_topics: AtomicBool,
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
    /// Bytes of the store's page cache.
    pub store_cache_bytes: usize,
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
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }

    pub(crate) fn store_durability(&self) -> StoreDurability {
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
