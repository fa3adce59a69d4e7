//! Cluster mode's coordination between weir hosts, kept on NATS JetStream
//! (see `docs/cluster.md`): which live host runs which processor partition
//! ([`leases`]), where a processor partition commits, fenced against a
//! previous owner ([`commits`]), and how its committed outputs reach their
//! topics exactly once ([`forward`]), the plugin registry every host
//! follows ([`registry`]), and the idempotency keys of produce requests
//! every host checks ([`produce_keys`]). The log itself is `log::jetstream`; the
//! connection all of them use is [`crate::nats`].

pub mod commits;
pub mod forward;
pub mod leases;
pub mod produce_keys;
pub mod registry;
