//! What the host offers every plugin: structured logging and, for
//! enrichers, read access to ponds (`lookup`).

use crate::bindings::enricher::weir::plugin::{host as wit_host, lookup as wit_lookup};

/// Structured logging through the host, tagged with the plugin's name.
/// (Output written to stdout / stderr also reaches the host's log.)
pub mod log {
    use super::wit_host::{self, Level};

    pub fn trace(message: &str) {
        wit_host::log(Level::Trace, message);
    }
    pub fn debug(message: &str) {
        wit_host::log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        wit_host::log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        wit_host::log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        wit_host::log(Level::Error, message);
    }
}

/// The committed value under `key` in the pond named `pond` (enrichers only:
/// a stream–table join). `None` when the key or the pond does not exist.
pub fn lookup(pond: &str, key: &[u8]) -> Option<Vec<u8>> {
    wit_lookup::lookup(pond, key)
}

/// [`lookup`], parsed as JSON; a value that does not parse reads as `None`.
pub fn lookup_json<T: serde::de::DeserializeOwned>(pond: &str, key: &[u8]) -> Option<T> {
    lookup(pond, key).and_then(|v| serde_json::from_slice(&v).ok())
}
