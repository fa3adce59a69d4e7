//! The `weir` command line.
