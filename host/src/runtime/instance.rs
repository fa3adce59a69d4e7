//! The lifecycle every world shares: instantiate from the plugin's
//! `InstancePre` into a fresh sandboxed store, run `init`, make calls with a
//! deadline, and discard the instance when a call traps, times out or hits
//! a limit — the next call gets a fresh instance with `init` re-run.

use super::PondLookup;
use super::bindings::types;
use super::contract::ExportIndices;
use super::engine::{Limits, deadline_ticks};
use super::errors::CallError;
use super::sandbox::StoreState;
use super::{Plugin, PluginInfo};
use std::sync::Arc;
use wasmtime::component::{Func, Instance, TypedFunc};
use wasmtime::{Store, Trap};

/// Export functions of one world, resolved and type-checked on an instance.
pub(crate) trait WorldFuncs: Sized + Send + 'static {
    fn resolve(
        store: &mut Store<StoreState>,
        instance: &Instance,
        exports: &ExportIndices,
    ) -> wasmtime::Result<Self>;
}

/// An export function by name, as an untyped [`Func`].
pub(crate) fn func(
    store: &mut Store<StoreState>,
    instance: &Instance,
    exports: &ExportIndices,
    name: &str,
) -> wasmtime::Result<Func> {
    let index = exports
        .func(name)
        .ok_or_else(|| wasmtime::format_err!("missing export {}#{name}", exports.export_name))?;
    instance.get_func(&mut *store, index).ok_or_else(|| {
        wasmtime::format_err!("export {}#{name} is not a function", exports.export_name)
    })
}

/// An export function by name, type-checked against `P -> R`.
pub(crate) fn typed<P, R>(
    store: &mut Store<StoreState>,
    instance: &Instance,
    exports: &ExportIndices,
    name: &str,
) -> wasmtime::Result<TypedFunc<P, R>>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    func(store, instance, exports, name)?
        .typed::<P, R>(&*store)
        .map_err(|e| wasmtime::format_err!("{}#{name}: {e:#}", exports.export_name))
}

/// `init` and `describe`, which every world exports.
pub(crate) struct CommonFuncs {
    pub init: TypedFunc<(String,), (Result<(), String>,)>,
    pub describe: TypedFunc<(), (types::PluginInfo,)>,
}

impl WorldFuncs for CommonFuncs {
    fn resolve(
        store: &mut Store<StoreState>,
        instance: &Instance,
        exports: &ExportIndices,
    ) -> wasmtime::Result<Self> {
        Ok(CommonFuncs {
            init: typed(store, instance, exports, "init")?,
            describe: typed(store, instance, exports, "describe")?,
        })
    }
}

/// A live instance: its store and its resolved exports.
pub(crate) struct Live<F> {
    pub store: Store<StoreState>,
    pub common: CommonFuncs,
    pub funcs: F,
}

/// Creates a store + instance for `plugin` (no `init`).
pub(crate) fn instantiate<F: WorldFuncs>(
    plugin: &Plugin,
    name: Arc<str>,
    limits: &Limits,
    lookup: Option<Arc<dyn PondLookup>>,
) -> Result<Live<F>, wasmtime::Error> {
    let inner = &plugin.inner;
    let mut store = Store::new(&inner.runtime.engine, StoreState::new(name, limits, lookup));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(deadline_ticks(
        limits.call_timeout,
        inner.runtime.config.epoch_tick,
    ));
    let instance = inner.pre.instantiate(&mut store)?;
    let common = CommonFuncs::resolve(&mut store, &instance, &inner.exports)?;
    let funcs = F::resolve(&mut store, &instance, &inner.exports)?;
    Ok(Live {
        store,
        common,
        funcs,
    })
}

/// Turns a failed call's error into a [`CallError`], using what the store
/// recorded during the call (a refused growth, a refused import).
pub(crate) fn classify(error: wasmtime::Error, state: &StoreState, limits: &Limits) -> CallError {
    if let Some(message) = &state.refused {
        return CallError::Forbidden {
            message: message.clone(),
        };
    }
    if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return CallError::Timeout {
            limit: limits.call_timeout,
        };
    }
    if let Some(message) = &state.limiter.denied {
        return CallError::ResourceLimit {
            message: message.clone(),
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return CallError::ResourceLimit {
            message: format!("{error:#}"),
        };
    }
    let mut message = error.root_cause().to_string();
    let stderr = state.stderr_tail();
    if !stderr.is_empty() {
        message.push_str("; guest stderr: ");
        message.push_str(&stderr);
    }
    CallError::Trap { message }
}

/// One plugin instance slot: keeps a live instance warm, rebuilds it after
/// a fatal error.
pub(crate) struct Lifecycle<F> {
    plugin: Plugin,
    name: Arc<str>,
    limits: Limits,
    config: String,
    lookup: Option<Arc<dyn PondLookup>>,
    ticks: u64,
    live: Option<Live<F>>,
    instantiations: u64,
    /// What the guest's clocks read (see `clock`).
    event_time_ms: i64,
}

impl<F: WorldFuncs> Lifecycle<F> {
    /// Instantiates and runs `init`: a config the plugin refuses fails here.
    pub(crate) fn start(
        plugin: Plugin,
        name: &str,
        limits: Limits,
        config: &str,
        lookup: Option<Arc<dyn PondLookup>>,
    ) -> Result<Self, CallError> {
        let ticks = deadline_ticks(limits.call_timeout, plugin.inner.runtime.config.epoch_tick);
        let mut lifecycle = Lifecycle {
            plugin,
            name: Arc::from(name),
            limits,
            config: config.to_string(),
            lookup,
            ticks,
            live: None,
            instantiations: 0,
            event_time_ms: 0,
        };
        let live = lifecycle.fresh()?;
        lifecycle.live = Some(live);
        Ok(lifecycle)
    }

    fn fresh(&mut self) -> Result<Live<F>, CallError> {
        self.instantiations += 1;
        let mut live = instantiate::<F>(
            &self.plugin,
            self.name.clone(),
            &self.limits,
            self.lookup.clone(),
        )
        .map_err(
            |e| match e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
                Some(_) => CallError::ResourceLimit {
                    message: format!("{e:#}"),
                },
                None => CallError::Init {
                    message: format!("cannot instantiate: {e:#}"),
                },
            },
        )?;
        live.store.data_mut().begin_call();
        live.store.data_mut().clock.set(self.event_time_ms);
        live.store.set_epoch_deadline(self.ticks);
        match live
            .common
            .init
            .call(&mut live.store, (self.config.clone(),))
        {
            Ok((Ok(()),)) => Ok(live),
            Ok((Err(message),)) => Err(CallError::Init { message }),
            Err(e) => Err(CallError::Init {
                message: classify(e, live.store.data(), &self.limits).to_string(),
            }),
        }
    }

    /// Runs `f` on a live instance (instantiating one if the last was
    /// discarded) under the call deadline. If `f` fails, the instance is
    /// dropped; if `f` unwinds, so is the instance (it was taken out of the
    /// slot for the call).
    pub(crate) fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Live<F>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.fresh()?,
        };
        live.store.set_epoch_deadline(self.ticks);
        live.store.data_mut().begin_call();
        match f(&mut live) {
            Ok(result) => {
                self.live = Some(live);
                Ok(result)
            }
            Err(e) => Err(classify(e, live.store.data(), &self.limits)),
        }
    }

    /// Calls from now on (and the `init` of an instance made for them) see
    /// `event_time_ms` on the guest's clocks.
    pub(crate) fn set_event_time(&mut self, event_time_ms: i64) {
        self.event_time_ms = event_time_ms;
        if let Some(live) = &mut self.live {
            live.store.data_mut().clock.set(event_time_ms);
        }
    }

    /// Ask the live instance to describe itself.
    pub(crate) fn describe(&mut self) -> Result<PluginInfo, CallError> {
        self.call(|live| Ok(live.common.describe.call(&mut live.store, ())?.0.into()))
    }

    /// The plugin this slot runs.
    pub(crate) fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How many instances this slot has created (1 + rebuilds).
    pub(crate) fn instantiations(&self) -> u64 {
        self.instantiations
    }
}

/// The methods every world's instance type shares, delegated to its
/// `life: Lifecycle<_>` field (used inside each `impl XInstance` block).
macro_rules! lifecycle_methods {
    () => {
        /// Ask the live instance to describe itself.
        pub fn describe(&mut self) -> Result<PluginInfo, CallError> {
            self.life.describe()
        }

        /// Calls from now on see `event_time_ms` on the guest's clocks
        /// (see the sandbox's clock).
        pub fn set_event_time(&mut self, event_time_ms: i64) {
            self.life.set_event_time(event_time_ms)
        }

        /// The plugin this instance runs.
        pub fn plugin(&self) -> &Plugin {
            self.life.plugin()
        }

        /// The processor name it was started for.
        pub fn name(&self) -> &str {
            self.life.name()
        }

        /// Instances created so far (1 + rebuilds after fatal errors).
        pub fn instantiations(&self) -> u64 {
            self.life.instantiations()
        }
    };
}
pub(crate) use lifecycle_methods;
