//! The processors: the drive loops (enricher, projection, command handler),
//! the exactly-once commit protocol, the failure policy, and the [`Engine`]
//! facade the HTTP layer uses (deploy, inspect, pause / resume / reset /
//! rollback / rebuild / delete, pond reads, commands, client appends and
//! topic deletes under the ownership rule). The HTTP layer uses these
//! types directly; [`ProcessorStatus`] serializes to its wire shape.
//!
//! # Promises
//!
//! - One task (an OS thread: plugin calls block) per (processor, input
//!   partition); a partition's events are handled in offset order,
//!   partitions in parallel. Idle tasks block on the log's `wait_for`.
//! - **Exactly-once effects.** A processor is the sole writer of its output
//!   topics and dead-letter topic (a service: of its events and reply
//!   topics); `ownership` holds that rule and every write path asks it. Per
//!   processor, steps are serialised: outputs are appended *deferred*
//!   (durable per the fsync policy, invisible), then one store transaction
//!   records the state delta, the input checkpoint and the new output ends,
//!   then the outputs are published. Before any task runs, [`Engine::open`]
//!   cuts every owned output partition back to its recorded end. A kill at
//!   any instant therefore leaves each input's effect exactly once.
//!   Delivery to plugins is at-least-once (a redone batch is re-delivered).
//! - **Failures.** A trap, deadline or plugin `failure` is retried with
//!   exponential backoff (`retries`, `retry_backoff_ms`); a batch that keeps
//!   failing is split to isolate the failing event (the failure's event
//!   index, else halving), which then goes to `<name>.dlq` (policy `dlq`,
//!   headers `weir-error`, `weir-plugin-version`, `weir-plugin-sha256`,
//!   `weir-source-topic/partition/offset`), is dropped (`skip`) or stops the
//!   processor (`stop`). One processor's failures never stall another.
//! - **Versions.** Deploying under an existing name adds a version; tasks
//!   stop at a batch boundary (after their commit) and the new version
//!   starts at that checkpoint. Rollback re-activates an older version the
//!   same way. Deployments (manifests, versions, active version, paused)
//!   live in the store; components are kept content-addressed under
//!   `<data_dir>/components`, so everything survives a restart.
//! - **Durability.** With fsync `always` an append is fsynced before the
//!   store commit and the commit is fsynced too. With `interval` / `never`
//!   the store uses non-durable commits with a durable one at least every
//!   interval (1 s for `never`): a crash rolls the store back to a
//!   consistent earlier commit and recovery redoes the work. With `never`
//!   a power loss can also lose log records; recovery then adopts the
//!   shorter log (logged as an error): effects of lost inputs are lost too.
//!
//! Methods are blocking (they may join task threads, read the store or
//! append): call them from `spawn_blocking` in async code, except
//! [`Engine::await_result`], which is async.
//!
//! # Modules
//!
//! - `engine`: the façade ([`Engine`]); `config`, `error`, `status`: its
//!   configuration, errors and the status it reports
//! - `shared`: engine-wide state the task threads share; `registry`: one
//!   deployed processor (record, active version, task sets); `recovery`:
//!   processors restored at start, outputs cut back to their commits
//! - `supervisor`: what a task thread runs, the rebuild watcher; `task`: the
//!   drive loop, the failure policy and the exactly-once commit
//! - `enricher`, `projection`, `command`: the workers per plugin kind;
//!   `commands`: submitting commands and reading their results
//! - `cluster`: the same processors on a JetStream cluster (registry
//!   followed by every host, partition leases, commits to commit streams)
//! - `ownership`: who may write which topic; `manifest`, `components`,
//!   `metrics`: what was deployed, where components are kept, counters

mod cluster;
mod command;
mod commands;
mod components;
mod config;
mod engine;
mod enricher;
mod error;
mod manifest;
mod metrics;
mod ownership;
mod projection;
mod recovery;
mod registry;
mod shared;
mod state_copies;
mod status;
mod supervisor;
mod task;

#[cfg(test)]
mod crash;
#[cfg(test)]
mod tests;

pub use cluster::DEFAULT_LEASE_TTL;
pub use command::{CommandOutcome, decode_command, encode_command};
pub use commands::CommandRequest;
pub use config::{EngineConfig, ResetTo};
pub use engine::Engine;
pub use error::{EngineError, Missing, Result};
pub use manifest::{
    ErrorPolicy, Manifest, ManifestError, ManifestLimits, StartFrom, validate_name,
};
pub use metrics::{LATENCY_BUCKETS_US, LastError, MetricsSnapshot};
pub use ownership::{OwnershipError, is_reply_topic, reply_topics};
pub use status::{PartitionStatus, ProcessorStatus, RunState};
pub use task::headers;
