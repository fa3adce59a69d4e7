//! Content-addressed cache of precompiled components.
//!
//! An artifact lives at `<dir>/<sha256 of the component>-<engine tag>.cwasm`,
//! where the engine tag hashes wasmtime's compatibility key (version,
//! compiler settings, CPU features), so an engine never picks up an
//! artifact compiled for another. Writes go to a temp file renamed into
//! place, so a crash never leaves a half-written artifact; an unreadable or
//! incompatible artifact is recompiled and replaced. Cache I/O failures are
//! logged and never fail a load.

use super::errors::LoadError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a loaded component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Compiled from the component's bytes by this load.
    Compiled,
    /// Loaded from the precompiled artifact in the cache directory.
    DiskCache,
}

pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_tag: String,
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ArtifactCache {
    pub(crate) fn new(dir: Option<PathBuf>, engine: &Engine) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        // DefaultHasher::new() uses fixed keys: stable for one build of the
        // host, which is all a cache key needs (a new build at worst misses).
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        })
    }

    fn path_for(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_tag)))
    }

    /// The component for `bytes` (whose sha256 is `digest`): from the cache
    /// when present, else compiled (and stored).
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(Component, ArtifactSource), LoadError> {
        let path = self.path_for(digest);
        if let Some(path) = path.as_deref().filter(|p| p.exists()) {
            // Read into memory rather than `deserialize_file` (an mmap): a
            // file truncated or rewritten under a mapped component would
            // crash the host with SIGBUS.
            match std::fs::read(path) {
                // SAFETY: the file was written by `store` below from
                // `Engine::precompile_component` output, under a name that
                // pins the content digest and the engine's compatibility hash,
                // and wasmtime re-checks the artifact's header. Whoever can
                // alter the cache directory can alter the host binary as well.
                Ok(artifact) => match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(component) => return Ok((component, ArtifactSource::DiskCache)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "unusable cached artifact; recompiling")
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable cached artifact; recompiling")
                }
            }
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid {
                message: format!("{e:#}"),
            })?;
        // SAFETY: `artifact` was produced just above by this engine's
        // `precompile_component`.
        let component = unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| {
            LoadError::Invalid {
                message: format!("{e:#}"),
            }
        })?;
        if let Some(path) = path
            && let Err(e) = store(&path, &artifact)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled artifact to the cache");
        }
        Ok((component, ArtifactSource::Compiled))
    }
}

fn store(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, artifact)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
