//! Configuration of the log and of its topics, and topic-name validation.
//!
//! `FsyncPolicy` is written as a string everywhere (config files, JSON):
//! `"always"`, `"never"`, `"interval:50ms"` (also `"interval:2s"`,
//! `"interval(50ms)"`). `TopicConfig` is the JSON body the HTTP API accepts;
//! every field has a default.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{LogError, Result};

/// When an append is forced to stable storage.
///
/// - `Always`: an acknowledged append has been `fdatasync`ed; concurrent
///   appends to a partition share one sync (group commit). Records become
///   visible to readers only once durable.
/// - `Interval(d)`: a background thread syncs dirty partitions every `d`;
///   a power loss may lose up to `d` of acknowledged records.
/// - `Never`: the log never syncs on its own (only on a clean close).
///   Acknowledged data survives a *process* crash (it is in the OS page
///   cache) but **not a power loss or kernel crash**.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    Always,
    Interval(Duration),
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}ms", d.as_millis()),
        }
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "ms"),
    };
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "us" => Some(Duration::from_micros(n)),
        _ => None,
    }
}

impl FromStr for FsyncPolicy {
    type Err = LogError;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let bad = || {
            LogError::InvalidConfig(format!(
                "fsync policy {s:?}: expected \"always\", \"never\" or \"interval:<n>ms\""
            ))
        };
        match lower.as_str() {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            _ => {}
        }
        let rest = lower.strip_prefix("interval").ok_or_else(bad)?;
        let inner = rest
            .strip_prefix(':')
            .or_else(|| rest.strip_prefix('=').map(str::trim))
            .or_else(|| rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')))
            .ok_or_else(bad)?;
        let d = parse_duration(inner).ok_or_else(bad)?;
        if d.is_zero() {
            return Err(LogError::InvalidConfig(
                "fsync interval must be positive".into(),
            ));
        }
        Ok(FsyncPolicy::Interval(d))
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = LogError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        p.to_string()
    }
}

/// Host-wide log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Root directory; one sub-directory per topic.
    pub dir: PathBuf,
    /// Policy for topics that do not set their own.
    pub default_fsync: FsyncPolicy,
    /// On open, truncate at the first corruption instead of refusing to start.
    /// Everything after the corruption point is lost (and logged).
    pub repair: bool,
    /// On open, validate every segment, not only those after the recovery point.
    pub verify_on_open: bool,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Largest encoded batch accepted by one append.
    pub max_batch_bytes: usize,
    /// How often the background thread applies retention and compaction.
    pub maintenance_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: PathBuf::from("weir-data/log"),
            default_fsync: FsyncPolicy::Interval(Duration::from_millis(50)),
            repair: false,
            verify_on_open: false,
            index_interval_bytes: 4096,
            max_batch_bytes: 64 << 20,
            maintenance_interval: Duration::from_secs(30),
        }
    }
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            ..LogConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.index_interval_bytes == 0 {
            return Err(LogError::InvalidConfig(
                "index_interval_bytes must be positive".into(),
            ));
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes > 512 << 20 {
            return Err(LogError::InvalidConfig(
                "max_batch_bytes must be within 1 KiB..=512 MiB".into(),
            ));
        }
        Ok(())
    }
}

/// Per-topic settings, fixed at creation (persisted in `topic.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    pub partitions: u32,
    /// Delete whole segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest whole segments while a partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// Keep only the latest record per key (in sealed segments).
    pub compaction: bool,
    /// How long a tombstone (empty value) survives compaction.
    pub delete_retention_ms: u64,
    /// Roll to a new segment when the active one would grow beyond this.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one is older than this.
    pub segment_ms: Option<u64>,
    /// Overrides the host's default policy.
    pub fsync: Option<FsyncPolicy>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            compaction: false,
            delete_retention_ms: 24 * 3600 * 1000,
            segment_bytes: 128 << 20,
            segment_ms: None,
            fsync: None,
        }
    }
}

pub(crate) const MAX_PARTITIONS: u32 = 10_000;
pub(crate) const MIN_SEGMENT_BYTES: u64 = 1024;
/// Segment positions are stored as u32 in the index; a segment may exceed
/// `segment_bytes` by one batch, so keep well below 4 GiB.
pub(crate) const MAX_SEGMENT_BYTES: u64 = 1 << 30;

impl TopicConfig {
    pub fn with_partitions(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LogError::InvalidConfig(m));
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return bad(format!("partitions must be within 1..={MAX_PARTITIONS}"));
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes must be within {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}"
            ));
        }
        if self.segment_ms == Some(0) {
            return bad("segment_ms must be positive".into());
        }
        Ok(())
    }
}

/// Check a topic name: `[A-Za-z0-9._-]`, 1..=200 characters, not `.` or `..`.
/// A valid name is always a safe single path component.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let err = |reason| {
        Err(LogError::InvalidName {
            name: name.chars().take(240).collect(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 200 {
        return err("must be 1 to 200 characters long");
    }
    if name == "." || name == ".." {
        return err("must not be \".\" or \"..\"");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return err("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_round_trips() {
        assert_eq!(
            "always".parse::<FsyncPolicy>().ok(),
            Some(FsyncPolicy::Always)
        );
        assert_eq!(
            "Never".parse::<FsyncPolicy>().ok(),
            Some(FsyncPolicy::Never)
        );
        let i50 = FsyncPolicy::Interval(Duration::from_millis(50));
        for s in [
            "interval:50ms",
            "interval(50ms)",
            "interval:50",
            "interval=50ms",
        ] {
            assert_eq!(s.parse::<FsyncPolicy>().ok(), Some(i50), "{s}");
        }
        assert_eq!(
            "interval:2s".parse::<FsyncPolicy>().ok(),
            Some(FsyncPolicy::Interval(Duration::from_secs(2)))
        );
        for bad in ["", "sometimes", "interval", "interval:0ms", "interval:5h"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&i50).unwrap_or_default();
        assert_eq!(json, "\"interval:50ms\"");
        let back: FsyncPolicy = serde_json::from_str(&json).unwrap_or(FsyncPolicy::Never);
        assert_eq!(back, i50);
    }

    #[test]
    fn topic_config_json_defaults_and_validation() {
        let c: TopicConfig =
            serde_json::from_str(r#"{"partitions": 3, "fsync": "always"}"#).unwrap_or_default();
        assert_eq!(c.partitions, 3);
        assert_eq!(c.fsync, Some(FsyncPolicy::Always));
        assert_eq!(c.segment_bytes, TopicConfig::default().segment_bytes);
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<TopicConfig>(r#"{"partitons": 3}"#).is_err());
        assert!(TopicConfig::with_partitions(0).validate().is_err());
        let tiny = TopicConfig {
            segment_bytes: 10,
            ..TopicConfig::default()
        };
        assert!(tiny.validate().is_err());
    }

    #[test]
    fn topic_names_are_validated() {
        for ok in ["a", "orders.v1", "A_b-c.9", &"x".repeat(200), ".hidden"] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a b",
            "é",
            &"x".repeat(201),
            "a\0b",
            "~x",
        ] {
            assert!(
                matches!(validate_topic_name(bad), Err(LogError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }
}
