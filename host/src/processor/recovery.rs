//! Recovery: a processor rebuilt from its registry record at start, and
//! every owned output cut back to its committed end before any task runs
//! (at start, and after a task crashed mid-step).

use std::collections::HashMap;
use std::sync::Arc;

use crate::log::LogError;
use crate::runtime::PluginKind;
use crate::store::{PartitionPos, PluginRecord};

use super::error::Result;
use super::manifest::Manifest;
use super::ownership;
use super::registry::{Active, Loaded, Processor, parse_kind};
use super::shared::Shared;

/// Build a processor from its registry record (loading its component).
pub(crate) fn restore(shared: &Shared, record: PluginRecord) -> Arc<Processor> {
    let kind = parse_kind(&record.kind);
    let loaded = (|| -> std::result::Result<Active, String> {
        let kind = kind.ok_or_else(|| format!("unknown kind {:?}", record.kind))?;
        let version = record
            .active()
            .ok_or("the active version is missing from the registry")?;
        let manifest = Manifest::parse(version.manifest.clone()).map_err(|e| e.to_string())?;
        let bytes = shared.component(&version.sha256)?;
        let plugin = shared
            .runtime
            .load(kind, &bytes)
            .map_err(|e| e.to_string())?;
        Ok(Active {
            version: version.version,
            manifest: Arc::new(manifest),
            plugin,
        })
    })();
    let loaded = match loaded {
        Ok(a) => Loaded::Active(a),
        Err(e) => {
            tracing::error!(plugin = %record.name, "cannot restore: {e}");
            Loaded::Failed(e)
        }
    };
    Processor::new(record, kind.unwrap_or(PluginKind::Enricher), loaded)
}

/// Cut each owned output partition back to its recorded end and publish it.
pub(crate) fn recover_outputs(
    shared: &Shared,
    proc: &Processor,
    manifest: &Manifest,
) -> Result<()> {
    let log = &shared.log;
    let recorded: HashMap<(String, u32), u64> = shared
        .store
        .output_ends(&proc.name)?
        .into_iter()
        .map(|p| ((p.topic, p.partition), p.offset))
        .collect();
    let mut adopt = Vec::new();
    for topic in ownership::owned_topics(manifest) {
        let info = match log.topic(&topic) {
            Ok(i) => i,
            Err(LogError::UnknownTopic(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for p in info.partitions {
            let written = log.written_end(&topic, p.partition)?;
            let end = match recorded.get(&(topic.clone(), p.partition)) {
                Some(&end) if written > end => {
                    tracing::info!(processor = %proc.name, %topic, partition = p.partition, "cutting uncommitted output {end}..{written}");
                    log.truncate(&topic, p.partition, end, true)?;
                    end
                }
                Some(&end) if written < end => {
                    tracing::error!(processor = %proc.name, %topic, partition = p.partition,
                        "the log ends at {written} but {end} was committed: records were lost (power loss with fsync never?)");
                    adopt.push(PartitionPos {
                        topic: topic.clone(),
                        partition: p.partition,
                        offset: written,
                    });
                    written
                }
                Some(&end) => end,
                None => {
                    adopt.push(PartitionPos {
                        topic: topic.clone(),
                        partition: p.partition,
                        offset: written,
                    });
                    written
                }
            };
            log.publish(&topic, p.partition, end)?;
        }
    }
    if !adopt.is_empty() {
        shared.store.set_output_ends(&proc.name, &adopt)?;
    }
    Ok(())
}

/// After a task crashed mid-step (tasks stopped), cut the outputs back
/// to their committed ends before anything runs again.
pub(crate) fn recover_crashed(shared: &Shared, proc: &Processor) -> Result<()> {
    if proc.crashed() {
        if let Some(active) = proc.active() {
            recover_outputs(shared, proc, &active.manifest)?;
        }
        proc.set_crashed(false);
    }
    Ok(())
}
