//! Test support for weir: the example and fault-test plugins (built once
//! per test run by this crate's build script) and helpers that start the
//! real server for end-to-end tests.

pub mod cpu;
pub mod languages;
pub mod nats;
pub mod plugins;
pub mod server;
