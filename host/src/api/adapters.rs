//! The ports of [`super::backend`] over the real log and processor engine.
