//! Cluster mode's coordination between weir hosts, kept on NATS JetStream
//! (see `docs/cluster.md`): which live host runs which processor partition
//! ([`leases`]). The log itself is `log::jetstream`; the connection both use
//! is [`crate::nats`].

pub mod leases;
