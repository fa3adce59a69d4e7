//! The command-handler world (a service): the decider pattern,
//! `decide(command, state)` and `evolve(state, events)`.

use super::bindings::types;
use super::contract::ExportIndices;
use super::errors::CallError;
use super::instance::{Lifecycle, WorldFuncs, lifecycle_methods, typed};
use super::sandbox::StoreState;
use super::{Limits, Plugin, PluginInfo};
use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc};

/// A command addressed to one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Command {
    /// Unique per command; retries share it.
    pub id: String,
    /// The aggregate id (the partitioning key).
    pub aggregate: String,
    /// The command's type, e.g. `deposit`.
    pub name: String,
    /// The body (JSON by convention).
    pub data: Vec<u8>,
}

/// An event a handler decided on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub name: String,
    pub data: Vec<u8>,
}

/// A refused command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Stable and machine-readable, e.g. `insufficient-funds`.
    pub code: String,
    pub message: String,
}

impl From<types::Event> for Event {
    fn from(e: types::Event) -> Self {
        Event {
            name: e.name,
            data: e.data,
        }
    }
}

impl From<&Event> for types::Event {
    fn from(e: &Event) -> Self {
        types::Event {
            name: e.name.clone(),
            data: e.data.clone(),
        }
    }
}

type DecideParams = (types::Command, Vec<u8>);
type EvolveParams = (Vec<u8>, Vec<types::Event>);
type DecideResult = (Result<Vec<types::Event>, types::Rejection>,);

pub(crate) struct CommandHandlerFuncs {
    decide: TypedFunc<DecideParams, DecideResult>,
    evolve: TypedFunc<EvolveParams, (Vec<u8>,)>,
}

impl WorldFuncs for CommandHandlerFuncs {
    fn resolve(
        store: &mut Store<StoreState>,
        instance: &Instance,
        exports: &ExportIndices,
    ) -> wasmtime::Result<Self> {
        Ok(CommandHandlerFuncs {
            decide: typed(store, instance, exports, "decide")?,
            evolve: typed(store, instance, exports, "evolve")?,
        })
    }
}

/// A live command-handler instance (one per partition task).
pub struct CommandHandlerInstance {
    life: Lifecycle<CommandHandlerFuncs>,
}

impl CommandHandlerInstance {
    pub(crate) fn start(
        plugin: Plugin,
        name: &str,
        limits: Limits,
        config: &str,
    ) -> Result<Self, CallError> {
        Ok(CommandHandlerInstance {
            life: Lifecycle::start(plugin, name, limits, config, None)?,
        })
    }

    /// Which events `command` causes given the aggregate's `state` (empty
    /// for a new aggregate), or the plugin's rejection.
    pub fn decide(
        &mut self,
        command: &Command,
        state: &[u8],
    ) -> Result<Result<Vec<Event>, Rejection>, CallError> {
        let wit_command = types::Command {
            id: command.id.clone(),
            aggregate: command.aggregate.clone(),
            name: command.name.clone(),
            data: command.data.clone(),
        };
        let state = state.to_vec();
        let (answer,) = self.life.call(|live| {
            live.funcs
                .decide
                .call(&mut live.store, (wit_command, state))
        })?;
        Ok(match answer {
            Ok(events) => Ok(events.into_iter().map(Event::from).collect()),
            Err(r) => Err(Rejection {
                code: r.code,
                message: r.message,
            }),
        })
    }

    /// Fold `events` into `state`, returning the new state.
    pub fn evolve(&mut self, state: &[u8], events: &[Event]) -> Result<Vec<u8>, CallError> {
        let events: Vec<types::Event> = events.iter().map(types::Event::from).collect();
        let state = state.to_vec();
        let (next,) = self
            .life
            .call(|live| live.funcs.evolve.call(&mut live.store, (state, events)))?;
        Ok(next)
    }

    lifecycle_methods!();
}
