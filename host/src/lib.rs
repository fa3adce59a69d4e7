//! weir: a server that owns a partitioned event log and runs stream
//! processors inside it as sandboxed WebAssembly components.
//!
//! Data flows one way: `api → processor → runtime / log / store`. Nothing
//! below `processor` knows about HTTP; nothing in `log` knows about plugins.

pub mod api;
pub mod batch;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod log;
pub mod nats;
pub mod processor;
pub mod runtime;
pub mod store;
