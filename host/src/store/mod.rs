//! The embedded store: checkpoints, pond state, aggregate snapshots and metadata.
