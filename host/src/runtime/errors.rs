//! The runtime's errors: creating the runtime, loading a plugin, calling one.
//!
//! Every message names what is wrong in terms a plugin author can act on
//! (which world, which export, which version). [`CallError::instance_discarded`]
//! tells a caller whether the instance it used is gone (the next call runs
//! on a fresh instance, `init` re-run) or still warm.

use std::path::PathBuf;
use std::time::Duration;

/// The runtime could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    #[error("cannot use the component cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid runtime configuration: {0}")]
    Config(String),
}

/// A plugin was refused at load time; nothing was registered.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly binary (no `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid WebAssembly component: {message}")]
    Invalid { message: String },
    #[error("wrong world: expected {expected} (exporting {expected_export}), {found}")]
    WrongWorld {
        expected: &'static str,
        expected_export: String,
        found: String,
    },
    #[error(
        "incompatible contract version: the component exports {export} (weir:plugin@{found}) but \
         this host supports weir:plugin@{supported}; rebuild the plugin against a compatible version"
    )]
    IncompatibleVersion {
        export: String,
        found: String,
        supported: String,
    },
    #[error("missing export: the component does not export {missing}")]
    MissingExport { missing: String },
    #[error("export {function} has the wrong type: {message}")]
    WrongType { function: String, message: String },
    #[error("unsupported import {import}: {message}")]
    UnsupportedImport { import: String, message: String },
    #[error("the plugin failed while being inspected: {0}")]
    Inspect(CallError),
}

/// A call into a plugin instance failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access,
    /// a stack overflow...). The message includes the guest's last stderr
    /// output, where a Rust panic message lands.
    #[error("plugin trapped: {message}")]
    Trap { message: String },
    /// The call ran past its deadline and was interrupted.
    #[error("plugin call exceeded its deadline of {limit:?}")]
    Timeout { limit: Duration },
    /// The plugin reported a failure for the batch (its own `failure`).
    #[error("plugin failed{}: {message}", .event_index.map(|i| format!(" on event {i}")).unwrap_or_default())]
    Failure {
        message: String,
        event_index: Option<u32>,
    },
    /// The plugin hit a resource limit (memory, tables, instances).
    #[error("plugin exceeded a resource limit: {message}")]
    ResourceLimit { message: String },
    /// The plugin returned output that does not describe a consistent
    /// result (bad indexes, inconsistent columns).
    #[error("plugin returned invalid output: {message}")]
    InvalidOutput { message: String },
    /// `init` refused the config, or the instance could not be set up.
    #[error("plugin init failed: {message}")]
    Init { message: String },
    /// The plugin did something its call does not allow (e.g. a state write
    /// during a query).
    #[error("plugin call refused: {message}")]
    Forbidden { message: String },
}

impl CallError {
    /// Whether the instance that made this call was discarded: the next
    /// call instantiates a fresh one (and re-runs `init`).
    pub fn instance_discarded(&self) -> bool {
        match self {
            CallError::Trap { .. }
            | CallError::Timeout { .. }
            | CallError::ResourceLimit { .. }
            | CallError::Init { .. }
            | CallError::Forbidden { .. } => true,
            CallError::Failure { .. } | CallError::InvalidOutput { .. } => false,
        }
    }
}
