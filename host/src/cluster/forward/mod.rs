//! Forwarding a processor partition's committed outputs from its outbox
//! (`commits`) to their topics, each exactly once.
//!
//! Every output is appended under a message id naming it (namespace,
//! processor, partition, output number), in commit order, and the outbox is
//! trimmed once all of them are acknowledged. A host that dies in between
//! leaves outputs that are both in a topic and still in the outbox; the next
//! owner forwards them again. Two things keep that from duplicating:
//! JetStream drops a repeated id within its de-duplication window (2 min by
//! default), and for outputs read back by a claim the forwarder first reads
//! what the target partitions stored since those outputs were committed
//! (minus [`CLOCK_MARGIN`] for clocks that disagree) and skips the ids it
//! finds there — so a takeover after any pause, however long, adds nothing
//! twice.
//!
//! A previous owner that wakes up after a takeover must not forward its
//! stale outbox once the window has passed: forwarding starts by checking
//! that the owner still owns its partition (`Fenced` otherwise). What remains
//! is a pause longer than the de-duplication window *between* that check and
//! the publishes a few milliseconds later — the assumption this protocol
//! states (docs/cluster.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::commits::{CommitError, CommitStream, Owner};
use crate::log::LogError;
use crate::log::jetstream::JetStreamLog;

/// How far before an output's commit time the forwarder looks for it.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forwarding to {topic}/{partition}: {source}")]
    Log {
        topic: String,
        partition: u32,
        source: LogError,
    },
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// What one call forwarded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Appended now.
    pub published: usize,
    /// Found already in their topics (by a scan or JetStream's de-duplication).
    pub already_there: usize,
}

/// Forward everything in `owner`'s outbox, then trim it.
pub fn forward(
    log: &JetStreamLog,
    commits: &CommitStream,
    owner: &mut Owner,
) -> Result<Forwarded, ForwardError> {
    let mut done = Forwarded::default();
    let Some(last) = owner.outbox.last().map(|p| p.n) else {
        return Ok(done);
    };
    commits.check_owner(owner)?;
    let prefix = commits.output_id_prefix(owner.partition);
    // Outputs a claim read back may be in their topics already.
    let mut since: BTreeMap<(String, u32), time::OffsetDateTime> = BTreeMap::new();
    for p in &owner.outbox {
        if let Some(at) = p.committed {
            let key = (p.output.topic.clone(), p.output.partition);
            let at = at - CLOCK_MARGIN;
            since
                .entry(key)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
    }
    let mut present = BTreeSet::new();
    for ((topic, partition), at) in since {
        let ids = log
            .ids_since(&topic, partition, at, &prefix)
            .map_err(|source| ForwardError::Log {
                topic: topic.clone(),
                partition,
                source,
            })?;
        present.extend(ids);
    }
    for p in &owner.outbox {
        let id = format!("{prefix}{}", p.n);
        if present.contains(&id) {
            done.already_there += 1;
            continue;
        }
        let (_, duplicate) = log
            .append_once(&p.output.topic, p.output.partition, &id, &p.output.record)
            .map_err(|source| ForwardError::Log {
                topic: p.output.topic.clone(),
                partition: p.output.partition,
                source,
            })?;
        if duplicate {
            done.already_there += 1;
        } else {
            done.published += 1;
        }
    }
    commits.forwarded(owner, last)?;
    Ok(done)
}

#[cfg(test)]
mod tests;
