//! The plugin registry records the store keeps so deployments survive a
//! restart. Stored as JSON: a human can read them with any redb tool, and
//! new optional fields keep old records readable.

use serde::{Deserialize, Serialize};

use super::{Result, StoreError};

/// One deployed version of a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// 1, 2, … in deploy order.
    pub version: u32,
    /// sha256 of the component (hex): the name of its file in the component store.
    pub sha256: String,
    /// The manifest it was deployed with, as the client sent it (validated).
    pub manifest: serde_json::Value,
    /// ms since the Unix epoch.
    pub deployed_at_ms: i64,
}

/// A deployed plugin: a processor with its versions and run state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    /// `enricher`, `projection` or `command-handler`.
    pub kind: String,
    pub versions: Vec<VersionRecord>,
    /// The version partition tasks run.
    pub active_version: u32,
    #[serde(default)]
    pub paused: bool,
    /// Set when error policy `stop` tripped: why it stopped.
    #[serde(default)]
    pub stopped: Option<String>,
    /// Projections: the state generation reads are served from.
    #[serde(default)]
    pub read_generation: u32,
    /// Projections: a generation being rebuilt from offset 0 beside the read one.
    #[serde(default)]
    pub rebuilding_generation: Option<u32>,
}

impl PluginRecord {
    pub fn version(&self, version: u32) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }

    pub fn active(&self) -> Option<&VersionRecord> {
        self.version(self.active_version)
    }
}

pub(super) fn decode(name: &str, bytes: &[u8]) -> Result<PluginRecord> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: format!("plugin {name}"),
        detail: e.to_string(),
    })
}
