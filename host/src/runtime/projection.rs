//! The projection world (a pond): `apply(batch)` folds events into state
//! through the host's `state` import; `query(request)` reads it.

use super::bindings::projection::weir::plugin::state as wit_state;
use super::bindings::types;
use super::contract::ExportIndices;
use super::errors::CallError;
use super::instance::{Lifecycle, WorldFuncs, func, lifecycle_methods, typed};
use super::sandbox::{MAX_KEY_BYTES, MAX_VALUE_BYTES, StoreState};
use super::state::{StateAccess, StateSlot};
use super::wire::BatchRef;
use super::{Limits, Plugin, PluginInfo};
use crate::batch::RecordBatch;
use wasmtime::Store;
use wasmtime::component::{Func, Instance, TypedFunc};

/// The most entries one `scan` call returns, whatever the guest asks...
const MAX_SCAN: u32 = 10_000;
/// ...and the most bytes of them.
const MAX_SCAN_BYTES: usize = 16 << 20;

impl StoreState {
    fn lent_state(&mut self) -> wasmtime::Result<&mut dyn StateAccess> {
        self.state
            .get()
            .ok_or_else(|| wasmtime::format_err!("state is only available during apply and query"))
    }

    fn refuse_write(&mut self, what: &str) -> wasmtime::Result<()> {
        if self.state.writable {
            return Ok(());
        }
        let message = format!("state {what} during a query: queries are read-only");
        self.refused = Some(message.clone());
        Err(wasmtime::format_err!(message))
    }
}

impl wit_state::Host for StoreState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.bounded("a state key", key.len(), MAX_KEY_BYTES)?;
        Ok(self.lent_state()?.get(&key))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.refuse_write("put")?;
        self.bounded("a state key", key.len(), MAX_KEY_BYTES)?;
        self.bounded("a state value", value.len(), MAX_VALUE_BYTES)?;
        self.lent_state()?.put(&key, &value);
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.refuse_write("delete")?;
        self.bounded("a state key", key.len(), MAX_KEY_BYTES)?;
        self.lent_state()?.delete(&key);
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.bounded("a scan prefix", prefix.len(), MAX_KEY_BYTES)?;
        let after = start_after.as_ref().map_or(0, Vec::len);
        self.bounded("a scan start key", after, MAX_KEY_BYTES)?;
        let mut entries =
            self.lent_state()?
                .scan(&prefix, start_after.as_deref(), limit.min(MAX_SCAN));
        // One page holds at most MAX_SCAN_BYTES (at least one entry): the
        // guest pages on with `start_after`.
        let mut bytes = 0;
        let keep = entries
            .iter()
            .position(|(k, v)| {
                bytes += k.len() + v.len();
                bytes > MAX_SCAN_BYTES
            })
            .map_or(entries.len(), |i| i.max(1));
        entries.truncate(keep);
        Ok(entries)
    }
}

type QueryResult = (Result<Vec<u8>, String>,);
type ApplyResult = (Result<(), types::Failure>,);

pub(crate) struct ProjectionFuncs {
    /// Checked to be `(BatchRef<'static>,) -> ApplyResult`.
    apply: Func,
    query: TypedFunc<(Vec<u8>,), QueryResult>,
}

impl WorldFuncs for ProjectionFuncs {
    fn resolve(
        store: &mut Store<StoreState>,
        instance: &Instance,
        exports: &ExportIndices,
    ) -> wasmtime::Result<Self> {
        let apply = func(store, instance, exports, "apply")?;
        apply
            .typed::<(BatchRef<'static>,), ApplyResult>(&*store)
            .map_err(|e| wasmtime::format_err!("{}#apply: {e:#}", exports.export_name))?;
        Ok(ProjectionFuncs {
            apply,
            query: typed(store, instance, exports, "query")?,
        })
    }
}

fn slot(store: &mut Store<StoreState>) -> &mut StateSlot {
    &mut store.data_mut().state
}

/// A live projection instance (one per partition task).
pub struct ProjectionInstance {
    life: Lifecycle<ProjectionFuncs>,
}

impl ProjectionInstance {
    pub(crate) fn start(
        plugin: Plugin,
        name: &str,
        limits: Limits,
        config: &str,
    ) -> Result<Self, CallError> {
        Ok(ProjectionInstance {
            life: Lifecycle::start(plugin, name, limits, config, None)?,
        })
    }

    /// Fold one batch into `state`. On `Err`, the writes made to `state`
    /// during this call must be discarded by the caller (they are not a
    /// committed batch).
    pub fn apply(
        &mut self,
        topic: &str,
        partition: u32,
        batch: &RecordBatch,
        state: &mut dyn StateAccess,
    ) -> Result<(), CallError> {
        let arg = BatchRef::new(topic, partition, batch);
        self.life.set_event_time(batch.event_time());
        let result = self.life.call(|live| {
            // SAFETY: `resolve` type-checked this function as
            // `(BatchRef<'static>,) -> ApplyResult`; only the parameter's
            // lifetime differs, which does not change how it is lowered.
            let apply = unsafe {
                TypedFunc::<(BatchRef<'_>,), ApplyResult>::new_unchecked(live.funcs.apply)
            };
            StateSlot::lend(slot, &mut live.store, state, true, |store| {
                apply.call(store, (arg,))
            })
        })?;
        result.0.map_err(|f| CallError::Failure {
            message: f.message,
            event_index: f.event_index,
        })
    }

    /// A custom read. `Ok(Err(reason))` is the plugin's own answer (e.g. a
    /// bad request); a state write during the query fails the call with
    /// [`CallError::Forbidden`].
    pub fn query(
        &mut self,
        request: &[u8],
        state: &mut dyn StateAccess,
    ) -> Result<Result<Vec<u8>, String>, CallError> {
        let request = request.to_vec();
        self.life.call(|live| {
            let query = live.funcs.query;
            StateSlot::lend(slot, &mut live.store, state, false, |store| {
                query.call(store, (request,))
            })
            .map(|(answer,)| answer)
        })
    }

    lifecycle_methods!();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::state::MemoryState;

    fn state_slot(s: &mut StoreState) -> &mut StateSlot {
        &mut s.state
    }

    #[test]
    fn writes_are_refused_during_a_query_and_reads_are_not() {
        let mut store = StoreState::new("p".into(), &Limits::default(), None);
        let mut state = MemoryState::default();
        state.put(b"k", b"v");
        StateSlot::lend(state_slot, &mut store, &mut state, false, |st| {
            assert_eq!(
                wit_state::Host::get(st, b"k".to_vec()).expect("read"),
                Some(b"v".to_vec())
            );
            assert!(wit_state::Host::put(st, b"k".to_vec(), b"w".to_vec()).is_err());
            assert!(
                st.refused
                    .as_deref()
                    .is_some_and(|m| m.contains("read-only"))
            );
            assert!(wit_state::Host::delete(st, b"k".to_vec()).is_err());
        });
        assert_eq!(state.get(b"k"), Some(b"v".to_vec()));
        StateSlot::lend(state_slot, &mut store, &mut state, true, |st| {
            wit_state::Host::put(st, b"k2".to_vec(), b"x".to_vec()).expect("write while applying");
        });
        assert_eq!(state.get(b"k2"), Some(b"x".to_vec()));
        // Outside a call there is no state at all.
        assert!(wit_state::Host::get(&mut store, b"k".to_vec()).is_err());
    }
}
