//! End-to-end tests: each starts the real `weir` binary on its own free
//! loopback port and temp data dir, drives it over HTTP and stops it.

#![allow(clippy::unwrap_used)]

mod auth;
mod cli;
mod cluster;
mod cluster_faults;
mod crash;
mod disk;
mod errors;
mod hotswap;
mod languages;
mod lifecycle;
mod limits;
mod openapi;
mod ownership;
mod plugins;
mod records;

use weir_testkit::server::Server;

/// A fresh server with extra `serve` arguments.
pub fn start(extra: &[&str]) -> Server {
    Server::start(env!("CARGO_BIN_EXE_weir"), extra)
}
