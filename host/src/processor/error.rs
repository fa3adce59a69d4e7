//! The engine's error type: each variant names what is wrong, and no
//! operation that fails leaves a half-done change behind.

use crate::log::LogError;
use crate::runtime::LoadError;
use crate::store::StoreError;

use super::manifest::ManifestError;
use super::ownership::OwnershipError;

/// What a request names that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// No processor (plugin, pond, service) of that name.
    #[error("no plugin named {0:?}")]
    Plugin(String),
    /// A manifest names an input topic that does not exist.
    #[error("input topic {0:?} does not exist; create it first")]
    InputTopic(String),
    #[error("{plugin} has no version {version}")]
    Version { plugin: String, version: u32 },
}

/// Errors of the engine's API. Each names what is wrong; none leaves a
/// half-done change behind.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component was refused (wrong world, missing export, not wasm…).
    #[error("component refused: {0}")]
    Load(#[from] LoadError),
    /// The plugin failed to start (init refused its config…).
    #[error("plugin failed: {0}")]
    Plugin(String),
    #[error(transparent)]
    NotFound(#[from] Missing),
    /// The request contradicts the current state (name taken by another
    /// kind, topic owned by another processor…).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// A command id already answered a command that asked something else.
    #[error(
        "command id {0:?} was already used by a command with another aggregate, name, data, expected version or reply topic; use a new id"
    )]
    IdReused(String),
    /// A write, claim or delete the ownership rule forbids.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("log error: {0}")]
    Log(#[from] LogError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
