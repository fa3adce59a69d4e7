//! The enricher world (a river): `process(batch) -> emitted`, with the
//! host's `lookup(pond, key)` import for stream–table joins.

use super::bindings::enricher::weir::plugin::lookup as wit_lookup;
use super::bindings::types;
use super::contract::ExportIndices;
use super::errors::CallError;
use super::instance::{Lifecycle, WorldFuncs, func, lifecycle_methods};
use super::sandbox::{MAX_KEY_BYTES, MAX_NAME_BYTES, StoreState};
use super::wire::{BatchRef, Emitted};
use super::{Limits, Plugin, PluginInfo};
use crate::batch::RecordBatch;
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::{Func, Instance, TypedFunc};

/// Read access to ponds' committed state for enrichers. Implemented by the
/// processor over the store.
pub trait PondLookup: Send + Sync {
    /// The value under `key` in the pond named `pond`; `None` when the pond
    /// or the key does not exist.
    fn lookup(&self, pond: &str, key: &[u8]) -> Option<Vec<u8>>;
}

/// A [`PondLookup`] that knows no ponds.
pub struct NoPonds;

impl PondLookup for NoPonds {
    fn lookup(&self, _pond: &str, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl<F> PondLookup for F
where
    F: Fn(&str, &[u8]) -> Option<Vec<u8>> + Send + Sync,
{
    fn lookup(&self, pond: &str, key: &[u8]) -> Option<Vec<u8>> {
        self(pond, key)
    }
}

impl wit_lookup::Host for StoreState {
    fn lookup(&mut self, pond: String, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.bounded("a pond name", pond.len(), MAX_NAME_BYTES)?;
        self.bounded("a lookup key", key.len(), MAX_KEY_BYTES)?;
        Ok(self.lookup.as_ref().and_then(|l| l.lookup(&pond, &key)))
    }
}

type ProcessResult = (Result<types::Emitted, types::Failure>,);

pub(crate) struct EnricherFuncs {
    /// Checked to be `(BatchRef<'static>,) -> ProcessResult`.
    process: Func,
}

impl WorldFuncs for EnricherFuncs {
    fn resolve(
        store: &mut Store<StoreState>,
        instance: &Instance,
        exports: &ExportIndices,
    ) -> wasmtime::Result<Self> {
        let process = func(store, instance, exports, "process")?;
        process
            .typed::<(BatchRef<'static>,), ProcessResult>(&*store)
            .map_err(|e| wasmtime::format_err!("{}#process: {e:#}", exports.export_name))?;
        Ok(EnricherFuncs { process })
    }
}

/// A live enricher instance (one per partition task).
pub struct EnricherInstance {
    life: Lifecycle<EnricherFuncs>,
    output_count: u32,
}

impl EnricherInstance {
    pub(crate) fn start(
        plugin: Plugin,
        name: &str,
        limits: Limits,
        config: &str,
        lookup: Arc<dyn PondLookup>,
    ) -> Result<Self, CallError> {
        Ok(EnricherInstance {
            life: Lifecycle::start(plugin, name, limits, config, Some(lookup))?,
            output_count: u32::MAX,
        })
    }

    /// How many outputs the processor has: an emitted record naming an
    /// output at or past this is invalid output. Unchecked until set.
    pub fn set_output_count(&mut self, outputs: u32) {
        self.output_count = outputs;
    }

    /// Run the plugin over one batch of `topic`/`partition`. The batch's
    /// columns are lowered into the guest directly (not cloned first).
    pub fn process(
        &mut self,
        topic: &str,
        partition: u32,
        batch: &RecordBatch,
    ) -> Result<Emitted, CallError> {
        let arg = BatchRef::new(topic, partition, batch);
        self.life.set_event_time(batch.event_time());
        let result = self.life.call(|live| {
            // SAFETY: `resolve` type-checked this function as
            // `(BatchRef<'static>,) -> ProcessResult`; only the lifetime of
            // the borrowed parameter differs, which does not change its
            // component type or how it is lowered.
            let process = unsafe {
                TypedFunc::<(BatchRef<'_>,), ProcessResult>::new_unchecked(live.funcs.process)
            };
            Ok(process.call(&mut live.store, (arg,))?.0)
        })?;
        match result {
            Ok(emitted) => {
                let emitted = Emitted::from_wit(emitted);
                emitted
                    .validate(batch.len(), self.output_count)
                    .map_err(|message| CallError::InvalidOutput { message })?;
                Ok(emitted)
            }
            Err(f) => Err(CallError::Failure {
                message: f.message,
                event_index: f.event_index,
            }),
        }
    }

    lifecycle_methods!();
}
