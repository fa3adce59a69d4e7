//! The server's answers as the CLI reads them: typed, so a field the
//! server renamed or dropped is an error naming it instead of a silent
//! `?` in the output. Record keys and values stay JSON: they are the
//! user's data, shown as the server rendered them.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Read a JSON answer as `T`.
pub(super) fn typed<T: DeserializeOwned>(answer: &Value) -> Result<T> {
    T::deserialize(answer).with_context(|| {
        format!(
            "unexpected answer from the server: {}",
            answer.to_string().chars().take(200).collect::<String>()
        )
    })
}

/// `GET /healthz`.
#[derive(Debug, Deserialize)]
pub(super) struct Health {
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct Partition {
    pub partition: u32,
    pub start_offset: u64,
    pub end_offset: u64,
}

/// One topic (`GET /topics/{topic}`).
#[derive(Debug, Deserialize)]
pub(super) struct Topic {
    pub name: String,
    pub partitions: Vec<Partition>,
}

/// `GET /topics`.
#[derive(Debug, Deserialize)]
pub(super) struct Topics {
    pub topics: Vec<Topic>,
}

#[derive(Debug, Deserialize)]
pub(super) struct LastError {
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Version {
    pub version: u32,
    pub sha256: String,
    pub active: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct Progress {
    pub topic: String,
    pub partition: u32,
    pub committed_offset: u64,
    pub end_offset: u64,
    pub lag: u64,
}

/// One plugin (`GET /plugins/{name}`, and the answer of a deploy or an
/// admin operation).
#[derive(Debug, Deserialize)]
pub(super) struct Plugin {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub active_version: u32,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub versions: Vec<Version>,
    pub partitions: Vec<Progress>,
    pub error_count: u64,
    pub dead_lettered: u64,
    pub last_error: Option<LastError>,
}

impl Plugin {
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// `GET /plugins`.
#[derive(Debug, Deserialize)]
pub(super) struct Plugins {
    pub plugins: Vec<Plugin>,
}

/// Where a single produced record went.
#[derive(Debug, Deserialize)]
pub(super) struct Placed {
    pub partition: u32,
    pub offset: u64,
}

/// A page of a partition (`GET /topics/{t}/partitions/{p}/records`).
#[derive(Debug, Deserialize)]
pub(super) struct Page {
    pub records: Vec<Value>,
    pub next_offset: u64,
    pub end_offset: u64,
}

/// A pond's entries by prefix.
#[derive(Debug, Deserialize)]
pub(super) struct Entries {
    pub entries: Vec<Value>,
}

/// What a command came to (`POST /services/{s}/commands`, 2xx).
#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub(super) enum CommandAnswer {
    Applied {
        tracking_id: String,
        version: u64,
        /// `{"name", "data" | "data_text" | "data_base64"}` each.
        events: Vec<Value>,
    },
    Accepted {
        tracking_id: String,
        topic: String,
        partition: u32,
        offset: u64,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_read_typed_and_a_missing_field_is_named() {
        let a: CommandAnswer = typed(&json!({"status": "accepted", "tracking_id": "t",
            "topic": "bank.commands", "partition": 1, "offset": 7}))
        .unwrap();
        assert!(matches!(a, CommandAnswer::Accepted { offset: 7, .. }));
        let e = typed::<Health>(&json!({"status": "ok", "version": "1"})).unwrap_err();
        assert!(format!("{e:#}").contains("uptime_seconds"), "{e:#}");
    }
}
