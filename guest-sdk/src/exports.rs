//! The plugin traits for enrichers and projections, and the adapters that
//! implement the generated WIT `Guest` traits on top of any plugin type.
//!
//! The plugin value created by `init` lives in a per-instance slot; an
//! export called before `init` (a host bug) fails instead of panicking.

use crate::bindings::{command_handler, enricher, projection, types};
use crate::command::{self, CommandHandler, CommandMeta};
use crate::emit::Emitter;
use crate::event::{Batch, Event};
use crate::state::State;
use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

/// Name and version reported by `describe`; implemented by the export
/// macros from the plugin crate's `Cargo.toml`.
pub trait PluginMeta {
    const NAME: &'static str;
    const VERSION: &'static str;
}

/// An enricher (river): filters, transforms and enriches events.
pub trait Enricher: Sized + 'static {
    /// Called once per instance with the manifest's `config` JSON (see
    /// [`crate::parse_config`]).
    fn init(config: &str) -> Result<Self, String>;

    /// Handle one event: emit zero or more records to `out`. An `Err` fails
    /// the batch, naming this event (the host retries, then applies the
    /// processor's error policy, e.g. dead-lettering the event).
    fn process(&mut self, event: &Event<'_>, out: &mut Emitter) -> Result<(), String>;
}

/// A projection (pond): folds events into the pond's key-value state.
pub trait Projection: Sized + 'static {
    /// Called once per instance with the manifest's `config` JSON.
    fn init(config: &str) -> Result<Self, String>;

    /// Fold one event into the state. An `Err` fails the batch (nothing of
    /// it is committed) naming this event.
    fn apply(&mut self, event: &Event<'_>, state: &mut State) -> Result<(), String>;

    /// Answer a custom read. The default has none.
    fn query(&mut self, request: &[u8], state: &State) -> Result<Vec<u8>, String> {
        let _ = (request, state);
        Err("this projection has no custom queries".to_string())
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn set_instance<T: 'static>(value: T) {
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(value)));
}

fn with_instance<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> Result<R, String> {
    INSTANCE.with(|slot| {
        let mut slot = slot
            .try_borrow_mut()
            .map_err(|_| "plugin re-entered".to_string())?;
        match slot.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(plugin) => Ok(f(plugin)),
            None => Err("plugin not initialised: init was not called".to_string()),
        }
    })
}

fn info<T: PluginMeta>(kind: types::PluginKind) -> types::PluginInfo {
    types::PluginInfo {
        name: T::NAME.to_string(),
        version: T::VERSION.to_string(),
        kind,
    }
}

fn failure(message: String, event_index: Option<usize>) -> types::Failure {
    types::Failure {
        message,
        event_index: event_index.and_then(|i| u32::try_from(i).ok()),
    }
}

#[doc(hidden)]
pub struct EnricherExport<T>(PhantomData<T>);

impl<T: Enricher + PluginMeta> enricher::exports::weir::plugin::river::Guest for EnricherExport<T> {
    fn init(config: String) -> Result<(), String> {
        set_instance(T::init(&config)?);
        Ok(())
    }

    fn describe() -> types::PluginInfo {
        info::<T>(types::PluginKind::Enricher)
    }

    fn process(batch: types::Batch) -> Result<types::Emitted, types::Failure> {
        let batch = Batch::new(batch);
        let mut out = Emitter::with_capacity(batch.len(), batch.inner.values.len());
        with_instance::<T, _>(|plugin| {
            for event in batch.events() {
                out.source = event.index() as u32;
                if let Err(message) = plugin.process(&event, &mut out) {
                    return Err(failure(message, Some(event.index())));
                }
            }
            Ok(())
        })
        .map_err(|m| failure(m, None))??;
        Ok(out.into_inner())
    }
}

#[doc(hidden)]
pub struct ProjectionExport<T>(PhantomData<T>);

impl<T: Projection + PluginMeta> projection::exports::weir::plugin::pond::Guest
    for ProjectionExport<T>
{
    fn init(config: String) -> Result<(), String> {
        set_instance(T::init(&config)?);
        Ok(())
    }

    fn describe() -> types::PluginInfo {
        info::<T>(types::PluginKind::Projection)
    }

    fn apply(batch: types::Batch) -> Result<(), types::Failure> {
        let batch = Batch::new(batch);
        let mut state = State::new();
        with_instance::<T, _>(|plugin| {
            for event in batch.events() {
                if let Err(message) = plugin.apply(&event, &mut state) {
                    return Err(failure(message, Some(event.index())));
                }
            }
            Ok(())
        })
        .map_err(|m| failure(m, None))?
    }

    fn query(request: Vec<u8>) -> Result<Vec<u8>, String> {
        let state = State::new();
        with_instance::<T, _>(|plugin| plugin.query(&request, &state))?
    }
}

#[doc(hidden)]
pub struct CommandHandlerExport<T>(PhantomData<T>);

impl<T: CommandHandler + PluginMeta> command_handler::exports::weir::plugin::service::Guest
    for CommandHandlerExport<T>
{
    fn init(config: String) -> Result<(), String> {
        set_instance(T::init(&config)?);
        Ok(())
    }

    fn describe() -> types::PluginInfo {
        info::<T>(types::PluginKind::CommandHandler)
    }

    fn decide(cmd: types::Command, state: Vec<u8>) -> Result<Vec<types::Event>, types::Rejection> {
        let reject = |code: &str, message: String| types::Rejection {
            code: code.to_string(),
            message,
        };
        let decoded: T::Command =
            command::decode(&cmd.name, &cmd.data).map_err(|m| reject("invalid-command", m))?;
        let state: T::State =
            command::load_state(&state).map_err(|m| reject("invalid-state", m))?;
        let meta = CommandMeta {
            id: cmd.id,
            aggregate: cmd.aggregate,
            name: cmd.name,
        };
        let decided = with_instance::<T, _>(|plugin| plugin.decide(decoded, &state, &meta))
            .map_err(|m| reject("not-initialised", m))?;
        match decided {
            Ok(events) => events
                .iter()
                .map(command::encode)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| reject("invalid-event", m)),
            Err(r) => Err(types::Rejection {
                code: r.code,
                message: r.message,
            }),
        }
    }

    fn evolve(state: Vec<u8>, events: Vec<types::Event>) -> Vec<u8> {
        // `evolve` has no error channel: a state or event the plugin cannot
        // read is a bug in the plugin's own history, so it traps with the
        // reason (the host reports it and does not commit).
        let mut current: T::State = match command::load_state(&state) {
            Ok(s) => s,
            Err(m) => panic!("{m}"),
        };
        for event in &events {
            match command::decode::<T::Event>(&event.name, &event.data) {
                Ok(e) => T::evolve(&mut current, &e),
                Err(m) => panic!("cannot read event {m}"),
            }
        }
        match serde_json::to_vec(&current) {
            Ok(bytes) => bytes,
            Err(e) => panic!("cannot serialise aggregate state: {e}"),
        }
    }
}
