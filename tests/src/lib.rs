//! Test support for weir: helpers that start the real server for
//! end-to-end tests.

pub mod server;
