//! A topic: its persisted configuration (`topic.json`) and its partitions
//! (sub-directories `0`, `1`, …).
//!
//! Creation is atomic: everything is built in a temporary directory whose
//! name cannot be a topic name (it contains `~`) and renamed into place.
//! Deletion renames the directory away first, so a crash never leaves a
//! half-deleted topic that would be opened again.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{LogConfig, TopicConfig};
use super::error::{IoContext, LogError, Result};
use super::partition::{Partition, PartitionSettings};
use super::partitioner::RoundRobin;
use super::segment;

const META: &str = "topic.json";

/// A topic's configuration and the offsets of each partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    /// Unique to this creation of the topic: one deleted and created again
    /// under the same name has another (empty for topics created before
    /// incarnations were recorded).
    pub incarnation: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionInfo>,
}

/// A topic without its offsets: what holds until the topic is deleted
/// (cheaper to learn than [`TopicInfo`] where offsets live remotely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub incarnation: String,
    pub config: TopicConfig,
}

impl TopicMeta {
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }
}

impl TopicInfo {
    pub fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.clone(),
            incarnation: self.incarnation.clone(),
            config: self.config.clone(),
        }
    }
}

/// Offsets of one partition: readers see `start_offset..end_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    pub start_offset: u64,
    /// The visible end (next offset a reader will see).
    pub end_offset: u64,
    /// The written end; above `end_offset` only after `append_deferred`.
    pub written_end: u64,
    pub size_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    name: String,
    config: TopicConfig,
    #[serde(default)]
    incarnation: String,
}

pub(crate) struct Topic {
    pub name: String,
    pub incarnation: String,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
    pub round_robin: RoundRobin,
}

fn settings(config: &TopicConfig, log: &LogConfig) -> PartitionSettings {
    PartitionSettings {
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        fsync: config.fsync.unwrap_or(log.default_fsync),
        index_interval: log.index_interval_bytes,
        max_batch_bytes: log.max_batch_bytes,
    }
}

impl Topic {
    /// Create a topic directory under `root` (the caller holds the create lock).
    pub fn create(root: &Path, name: &str, config: TopicConfig, log: &LogConfig) -> Result<Topic> {
        let dir = root.join(name);
        if dir.exists() {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let tmp = root.join(format!("~creating~{name}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
        }
        let built = Self::build(&tmp, name, &config).and_then(|()| {
            fs::rename(&tmp, &dir).ctx(|| format!("renaming {} into place", tmp.display()))
        });
        if let Err(e) = built {
            // A failed create (a full disk, say) leaves nothing behind.
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        segment::sync_dir(root)?;
        Self::open(root, name, log)
    }

    /// Lay out a new topic's metadata and partition directories in `tmp`.
    fn build(tmp: &Path, name: &str, config: &TopicConfig) -> Result<()> {
        fs::create_dir_all(tmp).ctx(|| format!("creating {}", tmp.display()))?;
        let meta = serde_json::to_vec_pretty(&Meta {
            name: name.to_string(),
            config: config.clone(),
            incarnation: uuid::Uuid::new_v4().to_string(),
        })
        .map_err(|e| LogError::InvalidConfig(e.to_string()))?;
        let meta_path = tmp.join(META);
        fs::write(&meta_path, meta).ctx(|| format!("writing {}", meta_path.display()))?;
        fs::File::open(&meta_path)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("syncing {}", meta_path.display()))?;
        for p in 0..config.partitions {
            let pdir = tmp.join(p.to_string());
            fs::create_dir_all(&pdir).ctx(|| format!("creating {}", pdir.display()))?;
        }
        segment::sync_dir(tmp)
    }

    /// Open an existing topic directory, recovering each partition.
    pub fn open(root: &Path, name: &str, log: &LogConfig) -> Result<Topic> {
        let dir = root.join(name);
        let meta_path = dir.join(META);
        let bytes = fs::read(&meta_path).ctx(|| format!("reading {}", meta_path.display()))?;
        let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
            file: meta_path.clone(),
            position: e.column() as u64,
            reason: format!("topic metadata is not valid: {e}"),
        })?;
        meta.config.validate()?;
        let st = settings(&meta.config, log);
        let partitions = (0..meta.config.partitions)
            .map(|p| {
                Partition::open(
                    dir.join(p.to_string()),
                    p,
                    st.clone(),
                    log.repair,
                    log.verify_on_open,
                )
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            name: name.to_string(),
            incarnation: meta.incarnation,
            config: meta.config,
            partitions,
            round_robin: RoundRobin::default(),
        })
    }

    pub fn partition(&self, p: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(p as usize)
            .ok_or_else(|| LogError::InvalidPartition {
                topic: self.name.clone(),
                partition: p,
                partitions: self.partitions.len() as u32,
            })
    }

    pub fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.clone(),
            incarnation: self.incarnation.clone(),
            config: self.config.clone(),
        }
    }

    pub fn info(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            incarnation: self.incarnation.clone(),
            config: self.config.clone(),
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.id,
                    start_offset: p.start_offset(),
                    end_offset: p.visible_end(),
                    written_end: p.log_end(),
                    size_bytes: p.size_bytes(),
                })
                .collect(),
        }
    }

    /// Remove the topic's files: rename away, then delete.
    pub fn remove_dir(root: &Path, name: &str) -> Result<()> {
        let dir = root.join(name);
        let gone = root.join(format!("~deleting~{name}~{}", std::process::id()));
        fs::rename(&dir, &gone).ctx(|| format!("renaming {} for deletion", dir.display()))?;
        segment::sync_dir(root)?;
        fs::remove_dir_all(&gone).ctx(|| format!("deleting {}", gone.display()))
    }
}
