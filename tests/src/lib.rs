//! Shared helpers for weir's end-to-end tests.
