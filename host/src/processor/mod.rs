//! The drive loops (enricher, projection, command handler) and the commit protocol.
