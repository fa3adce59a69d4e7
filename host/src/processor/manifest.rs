//! The deployment manifest: what a client sends with a component, its
//! defaults, and validation with errors that say what to fix.
//!
//! ```json
//! { "name": "orders-enricher", "kind": "enricher",
//!   "inputs": ["orders"], "outputs": ["orders.enriched"],
//!   "config": {"customers_pond": "customers"},
//!   "limits": {"memory_mb": 64, "timeout_ms": 2000},
//!   "error_policy": "dlq", "retries": 3, "retry_backoff_ms": 100 }
//! ```
//!
//! A command handler names no topics: it reads `<name>.commands` and is the
//! sole writer of `<name>.events` (both created when missing); `inputs` /
//! `outputs` may name them explicitly.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::{Limits, PluginKind};

/// What happens to an event the plugin keeps failing on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Send it to `<name>.dlq` and go on (default).
    #[default]
    Dlq,
    /// Drop it and go on (counted as an error).
    Skip,
    /// Stop the processor at that event until an operator acts.
    Stop,
}

/// Per-instance limits as the manifest writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// A deployment manifest (validated by [`Manifest::parse`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub kind: PluginKind,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Handed to the plugin's `init` as JSON text.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub limits: ManifestLimits,
    #[serde(default)]
    pub error_policy: ErrorPolicy,
    /// Extra attempts after the first failure of a batch (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff between attempts; doubles per attempt (default 100 ms).
    #[serde(default = "default_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Partitions of topics this deploy creates (outputs, commands, events);
    /// default: the first input's partition count, or 4.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Most events per batch handed to the plugin. Default: 1000 while
    /// keeping up with live traffic, up to 100,000 (within the engine's
    /// catch-up byte limit) while a task is behind, e.g. replaying from
    /// offset 0: fewer, larger batches cost fewer state reads and writes
    /// per event. When given, it bounds every batch.
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// Where the start position comes from for inputs without a checkpoint:
    /// `"earliest"` (default) or `"latest"`.
    #[serde(default)]
    pub start_from: StartFrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

fn default_retries() -> u32 {
    3
}

fn default_backoff_ms() -> u64 {
    100
}

pub const MAX_NAME_LEN: usize = 100;
const MAX_RETRIES: u32 = 100;
const MAX_BATCH: u32 = 100_000;

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {0}")]
pub struct ManifestError(pub String);

/// Check a processor (plugin) name: `[a-z0-9][a-z0-9._-]*`, at most 100 bytes.
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_first || !ok_rest {
        return Err(ManifestError(format!(
            "name {name:?} must be 1–{MAX_NAME_LEN} characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )));
    }
    if name.ends_with(".dlq") || name.ends_with(".events") || name.ends_with(".commands") {
        return Err(ManifestError(format!(
            "name {name:?} must not end in .dlq, .events or .commands"
        )));
    }
    Ok(())
}

impl Manifest {
    /// Parse and validate a client's manifest, filling in the defaults a
    /// kind implies (a command handler's topics).
    pub fn parse(value: serde_json::Value) -> Result<Manifest, ManifestError> {
        let mut m: Manifest =
            serde_json::from_value(value).map_err(|e| ManifestError(e.to_string()))?;
        validate_name(&m.name)?;
        if m.kind == PluginKind::CommandHandler {
            if m.inputs.is_empty() {
                m.inputs.push(m.commands_topic_default());
            }
            if m.outputs.is_empty() {
                m.outputs.push(m.events_topic_default());
            }
        }
        m.validate()?;
        Ok(m)
    }

    fn commands_topic_default(&self) -> String {
        format!("{}.commands", self.name)
    }

    fn events_topic_default(&self) -> String {
        format!("{}.events", self.name)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let err = |s: String| Err(ManifestError(s));
        if self.inputs.is_empty() {
            return err(format!(
                "a {} needs at least one input topic",
                self.kind.world()
            ));
        }
        match self.kind {
            PluginKind::Enricher if self.outputs.is_empty() => {
                return err("an enricher needs at least one output topic".into());
            }
            PluginKind::Projection if !self.outputs.is_empty() => {
                return err("a projection has no output topics (its output is its state)".into());
            }
            PluginKind::CommandHandler if self.inputs.len() != 1 || self.outputs.len() != 1 => {
                return err("a command handler reads exactly one commands topic and writes exactly one events topic".into());
            }
            _ => {}
        }
        let mut seen = std::collections::HashSet::new();
        for t in self.inputs.iter().chain(&self.outputs) {
            if let Err(e) = crate::log::validate_topic_name(t) {
                return err(e.to_string());
            }
            if !seen.insert(t) {
                return err(format!(
                    "topic {t:?} is listed twice (a processor may not read its own output)"
                ));
            }
        }
        if self.outputs.iter().any(|t| *t == self.dlq_topic()) {
            return err(format!(
                "{} is the processor's dead-letter topic, not an output",
                self.dlq_topic()
            ));
        }
        if self.retries > MAX_RETRIES {
            return err(format!(
                "retries {} exceeds the maximum of {MAX_RETRIES}",
                self.retries
            ));
        }
        if self.retry_backoff_ms > 600_000 {
            return err("retry_backoff_ms exceeds 10 minutes".into());
        }
        if let Some(p) = self.partitions
            && (p == 0 || p > 10_000)
        {
            return err(format!("partitions {p} must be 1–10000"));
        }
        if let Some(b) = self.max_batch
            && (b == 0 || b > MAX_BATCH)
        {
            return err(format!("max_batch {b} must be 1–{MAX_BATCH}"));
        }
        if let Some(mb) = self.limits.memory_mb
            && (mb == 0 || mb > 4096)
        {
            return err(format!("limits.memory_mb {mb} must be 1–4096"));
        }
        if let Some(ms) = self.limits.timeout_ms
            && (ms == 0 || ms > 600_000)
        {
            return err(format!("limits.timeout_ms {ms} must be 1–600000"));
        }
        Ok(())
    }

    /// The processor's dead-letter topic.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// The config as the JSON text `init` receives (`{}` when absent).
    pub fn config_json(&self) -> String {
        if self.config.is_null() {
            "{}".to_string()
        } else {
            self.config.to_string()
        }
    }

    pub fn limits(&self, defaults: &Limits) -> Limits {
        let mut l = defaults.clone();
        if let Some(mb) = self.limits.memory_mb {
            l.memory_bytes = (mb as usize) << 20;
        }
        if let Some(ms) = self.limits.timeout_ms {
            l.call_timeout = Duration::from_millis(ms);
        }
        l
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch.unwrap_or(1000) as usize
    }

    /// Most events per batch while a task is behind its input.
    pub fn catch_up_batch(&self) -> usize {
        self.max_batch.unwrap_or(MAX_BATCH) as usize
    }

    pub fn backoff(&self, attempt: u32) -> Duration {
        Duration::from_millis(
            self.retry_backoff_ms
                .saturating_mul(1u64 << attempt.min(10)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_with_defaults() {
        let m = Manifest::parse(
            json!({"name": "e1", "kind": "enricher", "inputs": ["a"], "outputs": ["b"]}),
        )
        .expect("valid");
        assert_eq!(m.error_policy, ErrorPolicy::Dlq);
        assert_eq!(m.retries, 3);
        assert_eq!(m.config_json(), "{}");
        assert_eq!(
            super::super::ownership::owned_topics(&m),
            vec!["b".to_string(), "e1.dlq".to_string()]
        );
    }

    #[test]
    fn command_handler_gets_its_topics() {
        let m = Manifest::parse(json!({"name": "bank", "kind": "command-handler"})).expect("valid");
        assert_eq!(m.inputs, vec!["bank.commands"]);
        assert_eq!(m.outputs, vec!["bank.events"]);
    }

    #[test]
    fn refuses_bad_manifests_with_reasons() {
        let cases = [
            (
                json!({"name": "E", "kind": "enricher", "inputs": ["a"], "outputs": ["b"]}),
                "must be 1",
            ),
            (
                json!({"name": "e", "kind": "river", "inputs": ["a"], "outputs": ["b"]}),
                "unknown variant",
            ),
            (
                json!({"name": "e", "kind": "enricher", "inputs": ["a"]}),
                "at least one output",
            ),
            (
                json!({"name": "p", "kind": "projection", "inputs": ["a"], "outputs": ["b"]}),
                "no output topics",
            ),
            (
                json!({"name": "e", "kind": "enricher", "inputs": ["a"], "outputs": ["a"]}),
                "listed twice",
            ),
            (
                json!({"name": "e", "kind": "enricher", "inputs": ["a"], "outputs": ["b"], "retries": 1000}),
                "retries",
            ),
            (
                json!({"name": "e", "kind": "enricher", "inputs": ["a"], "outputs": ["b"], "bogus": 1}),
                "unknown field",
            ),
            (
                json!({"name": "e", "kind": "enricher", "inputs": ["a"], "outputs": ["e.dlq"]}),
                "dead-letter",
            ),
            (
                json!({"name": "x.dlq", "kind": "projection", "inputs": ["a"]}),
                "must not end",
            ),
        ];
        for (manifest, want) in cases {
            let err = Manifest::parse(manifest.clone())
                .expect_err("must be refused")
                .to_string();
            assert!(err.contains(want), "{manifest}: {err} lacks {want:?}");
        }
    }
}
