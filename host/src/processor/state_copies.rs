//! Processor state in cluster mode: the truth is each unit's commit stream
//! (`cluster::commits`); every host keeps a copy in its local store, in the
//! tables the embedded server uses (a pond's key space; a service's
//! aggregate snapshots and command results), and reads on that host — pond
//! keys, scans and queries, command results — read the copy.
//!
//! - The host that runs a unit (holds its lease) *owns* the unit's copy: at
//!   the claim the copy is overwritten with the claimed state, then every
//!   commit writes its changes to the copy once they are committed in the
//!   stream (`cluster::Slot::commit`). The unit's tasks read committed state
//!   from the copy, as in embedded mode, so it must never lag or run ahead.
//! - Every other host *follows* the unit ([`StateCopies::follow_round`]):
//!   the whole state first, then each commit's changes in commit order. Its
//!   reads lag the owner's commits by the time they take to arrive; a
//!   command result arriving this way wakes the requests waiting for it here.
//! - A unit is owned or followed on a host, never both: the switch happens
//!   under one lock, and a host that stops owning a unit follows it from
//!   the whole state again (another host may have committed meanwhile).
//!
//! How state maps onto commit-stream keys: a pond's keys are its own; a
//! service's are `a/<aggregate>` (the snapshot) and `r/<command id>` (the
//! first result). A pond is one unit, so its copy is replaced whole; a
//! service's state is never deleted, so its units' copies are overwritten
//! entry by entry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::cluster::commits::{CommitStream, StateEntry, StateFollower, StateUpdate};
use crate::cluster::leases::Unit;
use crate::runtime::PluginKind;
use crate::store::{AggregateSnapshot, CommitSet, PondDelta, StoreError, WriteSet};

use super::command::StoredResult;
use super::error::Result;
use super::shared::Shared;

/// How long one round waits for each followed unit's changes.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// The most changes one round applies per unit.
const POLL_MAX: usize = 4096;

const AGGREGATE: &[u8] = b"a/";
const RESULT: &[u8] = b"r/";

/// The commit-stream entries of a service step's state: its aggregate
/// snapshots and command results.
pub(crate) fn service_entries(set: &CommitSet) -> Vec<StateEntry> {
    let aggregates = set
        .aggregates
        .iter()
        .map(|(_, aggregate, snap)| (prefixed(AGGREGATE, aggregate), Some(snap.encode())));
    let results = set
        .command_results
        .iter()
        .map(|(_, id, bytes)| (prefixed(RESULT, id), Some(bytes.clone())));
    aggregates.chain(results).collect()
}

fn prefixed(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// The store writes (aggregate snapshots, command results) of a service's
/// committed state entries, and the results among them (to wake waiters).
fn service_state(
    name: &str,
    changes: Vec<StateEntry>,
) -> std::result::Result<(CommitSet, Vec<(String, StoredResult)>), StoreError> {
    let corrupt = |key: &[u8], what: &str| StoreError::Corrupt {
        what: format!("{name} state entry {:?}", String::from_utf8_lossy(key)),
        detail: what.to_string(),
    };
    let mut set = CommitSet::new(String::new());
    let mut results = Vec::new();
    for (key, value) in changes {
        let Some(value) = value else {
            return Err(corrupt(&key, "a service's state is never deleted"));
        };
        if let Some(aggregate) = key.strip_prefix(AGGREGATE) {
            let snap = AggregateSnapshot::decode(&value)
                .ok_or_else(|| corrupt(&key, "not an aggregate snapshot"))?;
            let aggregate = String::from_utf8_lossy(aggregate).into_owned();
            set.aggregates.push((name.to_string(), aggregate, snap));
        } else if let Some(id) = key.strip_prefix(RESULT) {
            let result: StoredResult = serde_json::from_slice(&value)
                .map_err(|e| corrupt(&key, &format!("not a command result: {e}")))?;
            let id = String::from_utf8_lossy(id).into_owned();
            set.command_results
                .push((name.to_string(), id.clone(), value));
            results.push((id, result));
        } else {
            return Err(corrupt(&key, "neither an aggregate nor a command result"));
        }
    }
    Ok((set, results))
}

/// A unit of a stateful processor this host keeps a copy of.
#[derive(Debug, Clone)]
pub(crate) struct StateUnit {
    pub unit: Unit,
    pub kind: PluginKind,
    /// The pond generation reads use (ponds only).
    pub generation: u32,
}

/// This host's copies of processor state.
#[derive(Default)]
pub(crate) struct StateCopies {
    inner: Mutex<Copies>,
}

#[derive(Default)]
struct Copies {
    owned: HashSet<Unit>,
    following: HashMap<Unit, Following>,
}

struct Following {
    generation: u32,
    follower: StateFollower,
}

impl StateCopies {
    /// Own `unit`'s copy from now on: stop following it and make the copy
    /// what the claim read (`state`).
    pub(crate) fn own(
        &self,
        shared: &Shared,
        unit: &StateUnit,
        state: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Result<()> {
        let mut copies = self.inner.lock();
        copies.following.remove(&unit.unit);
        copies.owned.insert(unit.unit.clone());
        replace(shared, unit, state)
    }

    /// Stop owning `unit`'s copy (its tasks have stopped): the next round
    /// follows it again.
    pub(crate) fn disown(&self, unit: &Unit) {
        self.inner.lock().owned.remove(unit);
    }

    /// Drop this host's copies of a deleted processor's state (its units
    /// have stopped here).
    pub(crate) fn forget(&self, shared: &Shared, processor: &str) -> Result<()> {
        let mut copies = self.inner.lock();
        copies
            .following
            .retain(|unit, _| unit.processor != processor);
        copies.owned.retain(|unit| unit.processor != processor);
        shared.store.delete_plugin(processor)?;
        Ok(())
    }

    /// Drop this host's copy of `pond`'s state `generation` (reads moved on
    /// to another one).
    pub(crate) fn drop_generation(&self, shared: &Shared, pond: &str, generation: u32) {
        let mut copies = self.inner.lock();
        copies
            .following
            .retain(|unit, f| unit.processor != pond || f.generation != generation);
        if let Err(e) = shared.store.drop_pond(pond, generation) {
            tracing::warn!(%pond, generation, "cannot drop an old copy of the pond: {e}");
        }
    }

    /// Bring the copy of every unit in `units` this host does not own up
    /// to date with its commit stream (`stream` opens one); stop following
    /// units no longer listed.
    pub(crate) fn follow_round(
        &self,
        shared: &Shared,
        units: &[StateUnit],
        stream: impl Fn(&str) -> Result<Arc<CommitStream>>,
    ) {
        self.inner.lock().following.retain(|unit, f| {
            units
                .iter()
                .any(|u| u.unit == *unit && u.generation == f.generation)
        });
        for unit in units {
            // Held while reading and writing, so an `own` waits for it.
            let mut copies = self.inner.lock();
            if copies.owned.contains(&unit.unit) {
                continue;
            }
            if let Err(e) = follow_one(&mut copies, shared, unit, &stream) {
                copies.following.remove(&unit.unit);
                tracing::warn!(processor = %unit.unit.processor, unit = unit.unit.partition, "cannot follow the state: {e}");
            }
        }
    }
}

fn follow_one(
    copies: &mut Copies,
    shared: &Shared,
    unit: &StateUnit,
    stream: &impl Fn(&str) -> Result<Arc<CommitStream>>,
) -> Result<()> {
    if !copies.following.contains_key(&unit.unit) {
        let follower = stream(&unit.unit.processor)?.follow_state(unit.unit.partition)?;
        copies.following.insert(
            unit.unit.clone(),
            Following {
                generation: unit.generation,
                follower,
            },
        );
    }
    let Some(following) = copies.following.get_mut(&unit.unit) else {
        return Ok(());
    };
    match following.follower.poll(POLL_WAIT, POLL_MAX)? {
        None => Ok(()),
        Some(StateUpdate::Replace(state)) => replace(shared, unit, &state),
        Some(StateUpdate::Changes(changes)) => apply(shared, unit, changes),
    }
}

/// Make `unit`'s copy the whole `state`.
fn replace(shared: &Shared, unit: &StateUnit, state: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<()> {
    let name = &unit.unit.processor;
    match unit.kind {
        PluginKind::Projection => {
            let entries = state.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
            shared.store.replace_pond(name, unit.generation, entries)?;
            Ok(())
        }
        // Nothing of a service is ever deleted: overwriting every entry
        // makes the copy the state.
        _ => apply(
            shared,
            unit,
            state
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
        ),
    }
}

/// Write committed `changes` to `unit`'s copy (waking whoever waits here
/// for a command result among them).
fn apply(shared: &Shared, unit: &StateUnit, changes: Vec<StateEntry>) -> Result<()> {
    let name = &unit.unit.processor;
    if unit.kind == PluginKind::Projection {
        let mut writes = WriteSet::new();
        for (key, value) in changes {
            match value {
                Some(v) => writes.put(key, v),
                None => writes.delete(key),
            }
        }
        shared.store.write_pond(&PondDelta {
            pond: name.clone(),
            generation: unit.generation,
            writes,
        })?;
        return Ok(());
    }
    let (set, results) = service_state(name, changes)?;
    shared.store.commit(&set)?;
    for (id, result) in results {
        shared.notify_result(name, &id, result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::command::CommandOutcome;

    #[test]
    fn service_state_round_trips_through_commit_stream_entries() {
        let snap = AggregateSnapshot {
            version: 3,
            plugin_sha256: "abc".into(),
            state: b"balance=5".to_vec(),
        };
        let result = StoredResult {
            outcome: CommandOutcome::Conflict {
                expected: 1,
                actual: 3,
            },
            fingerprint: Some("f".into()),
        };
        let mut set = CommitSet::new("bank");
        set.aggregates
            .push(("bank".into(), "acc/1".into(), snap.clone()));
        let bytes = serde_json::to_vec(&result).expect("json");
        set.command_results
            .push(("bank".into(), "cmd-1".into(), bytes.clone()));

        let (back, results) = service_state("bank", service_entries(&set)).expect("decodes");
        assert_eq!(back.aggregates, vec![("bank".into(), "acc/1".into(), snap)]);
        assert_eq!(
            back.command_results,
            vec![("bank".into(), "cmd-1".into(), bytes)]
        );
        assert_eq!(results, vec![("cmd-1".to_string(), result)]);

        // What a service never writes is refused, not half applied.
        for bad in [
            (b"x/1".to_vec(), Some(b"v".to_vec())),
            (b"a/acc".to_vec(), None),
            (b"a/acc".to_vec(), Some(b"short".to_vec())),
            (b"r/c".to_vec(), Some(b"{not json".to_vec())),
        ] {
            assert!(service_state("bank", vec![bad]).is_err());
        }
    }
}
