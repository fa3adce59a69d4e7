//! Pond state in cluster mode: the truth is the pond's commit stream
//! (`cluster::commits`); every host keeps a copy in its local store, in the
//! pond's key space as in embedded mode, and pond reads, scans and queries
//! on that host read the copy.
//!
//! - The host that runs the pond (holds its lease) *owns* its copy: at the
//!   claim the copy is replaced with the claimed state, then every commit
//!   writes its changes to the copy once they are committed in the stream
//!   (`cluster::Slot::commit`). The pond's tasks read committed state from
//!   the copy, as in embedded mode, so it must never lag or run ahead.
//! - Every other host *follows* the commit stream ([`PondCopies::follow_round`]):
//!   the whole state first (replacing its copy in one transaction), then
//!   each commit's changes in commit order. Its reads lag the owner's
//!   commits by the time they take to arrive.
//! - A pond is owned or followed on a host, never both: the switch happens
//!   under one lock, and a host that stops owning a pond follows it from
//!   the whole state again (another host may have committed meanwhile).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::Mutex;

use crate::cluster::commits::{CommitStream, StateFollower, StateUpdate};
use crate::runtime::PluginKind;
use crate::store::{PondDelta, Store, WriteSet};

use super::error::Result;
use super::shared::Shared;

/// How long one round waits for each followed pond's changes.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// The most changes one round applies per pond.
const POLL_MAX: usize = 4096;

/// This host's copies of pond state.
#[derive(Default)]
pub(crate) struct PondCopies {
    inner: Mutex<Copies>,
}

#[derive(Default)]
struct Copies {
    owned: HashSet<String>,
    following: HashMap<String, Following>,
}

struct Following {
    generation: u32,
    follower: StateFollower,
}

impl PondCopies {
    /// Own `pond`'s copy from now on: stop following it and make the copy
    /// exactly `state` (what the claim read).
    pub(crate) fn own<'a>(
        &self,
        store: &Store,
        pond: &str,
        generation: u32,
        state: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<()> {
        let mut copies = self.inner.lock();
        copies.following.remove(pond);
        copies.owned.insert(pond.to_string());
        store.replace_pond(pond, generation, state)?;
        Ok(())
    }

    /// Stop owning `pond`'s copy (its tasks have stopped): the next round
    /// follows it again.
    pub(crate) fn disown(&self, pond: &str) {
        self.inner.lock().owned.remove(pond);
    }

    /// Bring every pond this host does not own up to date with its commit
    /// stream (`stream` opens one).
    pub(crate) fn follow_round(
        &self,
        shared: &Shared,
        stream: impl Fn(&str) -> Result<std::sync::Arc<CommitStream>>,
    ) {
        let ponds: Vec<(String, u32)> = shared
            .processors
            .read()
            .values()
            .filter(|p| p.kind == PluginKind::Projection)
            .map(|p| (p.name.clone(), p.record.lock().read_generation))
            .collect();
        {
            let mut copies = self.inner.lock();
            copies
                .following
                .retain(|name, f| ponds.iter().any(|(n, g)| n == name && *g == f.generation));
        }
        for (pond, generation) in ponds {
            // Held while reading and writing, so an `own` waits for it.
            let mut copies = self.inner.lock();
            if copies.owned.contains(&pond) {
                continue;
            }
            if let Err(e) = follow_one(&mut copies, &shared.store, &pond, generation, &stream) {
                copies.following.remove(&pond);
                tracing::warn!(%pond, "cannot follow the pond's state: {e}");
            }
        }
    }
}

fn follow_one(
    copies: &mut Copies,
    store: &Store,
    pond: &str,
    generation: u32,
    stream: &impl Fn(&str) -> Result<std::sync::Arc<CommitStream>>,
) -> Result<()> {
    if !copies.following.contains_key(pond) {
        // A pond's state is partition 0 of its commit stream (one unit).
        let follower = stream(pond)?.follow_state(0)?;
        copies.following.insert(
            pond.to_string(),
            Following {
                generation,
                follower,
            },
        );
    }
    let Some(following) = copies.following.get_mut(pond) else {
        return Ok(());
    };
    match following.follower.poll(POLL_WAIT, POLL_MAX)? {
        None => {}
        Some(StateUpdate::Replace(state)) => {
            store.replace_pond(
                pond,
                generation,
                state.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            )?;
        }
        Some(StateUpdate::Changes(changes)) => {
            let mut writes = WriteSet::new();
            for (key, value) in changes {
                match value {
                    Some(v) => writes.put(key, v),
                    None => writes.delete(key),
                }
            }
            store.write_pond(&PondDelta {
                pond: pond.to_string(),
                generation,
                writes,
            })?;
        }
    }
    Ok(())
}
