//! Tests of the log as a whole: the API (`api`), a model-based property
//! test (`model`) and fault injection (`faults`).

mod api;
mod faults;
mod model;

use std::path::Path;
use std::time::Duration;

use super::{FsyncPolicy, Log, LogConfig, Record};

pub(super) fn rec(key: &str, value: &str, ts: i64) -> Record {
    Record {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        headers: vec![],
        timestamp: ts,
    }
}

pub(super) fn config(dir: &Path, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        default_fsync: fsync,
        index_interval_bytes: 64,
        maintenance_interval: Duration::from_secs(3600),
        ..LogConfig::default()
    }
}

pub(super) fn open(dir: &Path, fsync: FsyncPolicy) -> Log {
    match Log::open(config(dir, fsync)) {
        Ok(log) => log,
        Err(e) => panic!("opening the log failed: {e}"),
    }
}
