//! The plugin runtime: wasmtime engine, component cache, sandbox, limits,
//! and one module per plugin world. It owns the `weir:plugin` contract on
//! the host side (see `wit/weir.wit`).
//!
//! # Using it
//!
//! ```no_run
//! # use weir::runtime::*;
//! # use weir::batch::RecordBatch;
//! # use std::sync::Arc;
//! # fn demo(wasm: &[u8], batch: &RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig {
//!     cache_dir: Some("weir-data/plugins/cache".into()),
//!     ..RuntimeConfig::default()
//! })?;
//! let plugin = runtime.load(PluginKind::Enricher, wasm)?; // validated + compiled (or cached)
//! println!("{} {} ({})", plugin.info().name, plugin.info().version, plugin.digest());
//! let lookup: Arc<dyn PondLookup> = Arc::new(NoPonds);
//! let mut instance = plugin.enricher("orders-enricher", runtime.default_limits(), "{}", lookup)?;
//! instance.set_output_count(1);
//! let emitted = instance.process("orders", 0, batch)?;
//! for i in 0..emitted.len() {
//!     let (_output, _key, _value) = (emitted.outputs[i], emitted.key(i), emitted.value(i));
//! }
//! # Ok(()) }
//! ```
//!
//! * [`Runtime`] (cheap to clone, `Send + Sync`): one engine, one epoch
//!   ticker thread, the pooling allocator, a linker per world and the
//!   content-addressed artifact cache.
//! * [`Runtime::load`] → [`Plugin`] (cheap to clone): checks the component
//!   against the world (wrong world, missing export, incompatible contract
//!   version, unsupported import → [`LoadError`] naming what is wrong),
//!   compiles it or loads its precompiled artifact, builds one
//!   `InstancePre`, and type-checks the exports on a trial instance that
//!   answers `describe`.
//! * Instances — [`EnricherInstance`], [`ProjectionInstance`],
//!   [`CommandHandlerInstance`] — are created by [`Plugin::enricher`] /
//!   [`Plugin::projection`] / [`Plugin::command_handler`] (instantiate + `init`).
//!   One instance serves one partition task; it is `Send`, not shared.
//!   Every call has a deadline ([`Limits::call_timeout`]) and the store's
//!   memory / table / instance limits. A call that traps, times out or hits
//!   a limit discards the instance; the next call transparently gets a fresh
//!   one with `init` re-run ([`CallError::instance_discarded`]).
//! * Batches cross as columns borrowed from the [`RecordBatch`]: no
//!   per-event host work, no copy before the one into guest memory.
//!
//! Projections read and write state through [`StateAccess`], lent for the
//! duration of one `apply` / `query`. **If `apply` returns an error, the
//! writes it made are not a committed batch: the caller must discard them.**
//! `query` gets a read-only view: a write fails the call
//! ([`CallError::Forbidden`]).
//!
//! [`RecordBatch`]: crate::batch::RecordBatch

mod bindings;
mod cache;
mod clock;
mod command_handler;
mod contract;
mod engine;
mod enricher;
mod errors;
mod instance;
mod projection;
mod sandbox;
mod state;
mod wire;

pub use cache::{ArtifactSource, sha256_hex};
pub use command_handler::{Command, CommandHandlerInstance, Event, Rejection};
pub use contract::CONTRACT_VERSION;
pub use engine::{Limits, PoolConfig, RuntimeConfig};
pub use enricher::{EnricherInstance, NoPonds, PondLookup};
pub use errors::{CallError, LoadError, RuntimeError};
pub use projection::ProjectionInstance;
pub use state::{MemoryState, StateAccess};
pub use wire::Emitted;

use bindings::types;
use cache::ArtifactCache;
use contract::ExportIndices;
use engine::EpochTicker;
use instance::{CommonFuncs, WorldFuncs};
use sandbox::StoreState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// The three plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Enricher,
    Projection,
    CommandHandler,
}

impl PluginKind {
    pub const ALL: [PluginKind; 3] = [
        PluginKind::Enricher,
        PluginKind::Projection,
        PluginKind::CommandHandler,
    ];

    /// The WIT world name.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Enricher => "enricher",
            PluginKind::Projection => "projection",
            PluginKind::CommandHandler => "command-handler",
        }
    }

    /// The interface the world exports.
    pub fn interface(self) -> &'static str {
        match self {
            PluginKind::Enricher => "river",
            PluginKind::Projection => "pond",
            PluginKind::CommandHandler => "service",
        }
    }

    /// The `weir:plugin` interfaces the world may import.
    pub(crate) fn imports(self) -> &'static [&'static str] {
        match self {
            PluginKind::Enricher => &["types", "host", "lookup"],
            PluginKind::Projection => &["types", "host", "state"],
            PluginKind::CommandHandler => &["types", "host"],
        }
    }

    /// The functions the world's interface must export.
    pub(crate) fn functions(self) -> &'static [&'static str] {
        match self {
            PluginKind::Enricher => &["init", "describe", "process"],
            PluginKind::Projection => &["init", "describe", "apply", "query"],
            PluginKind::CommandHandler => &["init", "describe", "decide", "evolve"],
        }
    }

    fn article(self) -> &'static str {
        match self {
            PluginKind::Enricher => "an",
            _ => "a",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.world())
    }
}

/// What a plugin says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
}

impl From<types::PluginInfo> for PluginInfo {
    fn from(i: types::PluginInfo) -> Self {
        PluginInfo {
            name: i.name,
            version: i.version,
            kind: match i.kind {
                types::PluginKind::Enricher => PluginKind::Enricher,
                types::PluginKind::Projection => PluginKind::Projection,
                types::PluginKind::CommandHandler => PluginKind::CommandHandler,
            },
        }
    }
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Loads that compiled the component.
    pub compiled: u64,
    /// Loads served from the precompiled artifact cache.
    pub cache_hits: u64,
}

/// The plugin runtime. Cheap to clone; share it across threads.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) config: RuntimeConfig,
    cache: ArtifactCache,
    linkers: [Linker<StoreState>; 3],
    compiled: AtomicU64,
    cache_hits: AtomicU64,
    _ticker: EpochTicker,
}

fn linker(engine: &Engine, kind: PluginKind) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    clock::add_to_linker(&mut linker)?;
    match kind {
        PluginKind::Enricher => {
            bindings::enricher::Enricher::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?
        }
        PluginKind::Projection => {
            bindings::projection::Projection::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?
        }
        PluginKind::CommandHandler => bindings::command_handler::CommandHandler::add_to_linker::<
            _,
            HasSelf<_>,
        >(&mut linker, |s| s)?,
    }
    Ok(linker)
}

fn kind_index(kind: PluginKind) -> usize {
    match kind {
        PluginKind::Enricher => 0,
        PluginKind::Projection => 1,
        PluginKind::CommandHandler => 2,
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine::build_engine(&config)?;
        let cache = ArtifactCache::new(config.cache_dir.clone(), &engine).map_err(|source| {
            RuntimeError::CacheDir {
                path: config.cache_dir.clone().unwrap_or_default(),
                source,
            }
        })?;
        let mut linkers = Vec::with_capacity(3);
        for kind in PluginKind::ALL {
            linkers
                .push(linker(&engine, kind).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?);
        }
        let linkers: [Linker<StoreState>; 3] = linkers
            .try_into()
            .map_err(|_| RuntimeError::Engine("linker setup".into()))?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                cache,
                linkers,
                compiled: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                _ticker: ticker,
            }),
        })
    }

    /// The limits instances get unless the caller passes others.
    pub fn default_limits(&self) -> Limits {
        self.inner.config.default_limits.clone()
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            compiled: self.inner.compiled.load(Ordering::Relaxed),
            cache_hits: self.inner.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Validate `wasm` as a plugin of `kind` and make it ready to
    /// instantiate. Compiling takes ~0.2–1 s for a small Rust plugin (do it
    /// off the data path); a cached artifact loads in about a millisecond.
    pub fn load(&self, kind: PluginKind, wasm: &[u8]) -> Result<Plugin, LoadError> {
        const COMPONENT_LAYER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            return Err(LoadError::NotWasm);
        }
        if wasm[4..8] != COMPONENT_LAYER {
            return Err(if wasm[4..8] == [1, 0, 0, 0] {
                LoadError::CoreModule
            } else {
                LoadError::Invalid {
                    message: "unsupported WebAssembly binary version or layer".into(),
                }
            });
        }
        let inner = &self.inner;
        let digest = sha256_hex(wasm);
        let (component, source) = inner.cache.load_or_compile(&inner.engine, wasm, &digest)?;
        match source {
            ArtifactSource::Compiled => inner.compiled.fetch_add(1, Ordering::Relaxed),
            ArtifactSource::DiskCache => inner.cache_hits.fetch_add(1, Ordering::Relaxed),
        };
        let exports = contract::check(&inner.engine, &component, kind)?;
        let pre = inner.linkers[kind_index(kind)]
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnsupportedImport {
                import: "(see message)".into(),
                message: format!("{e:#}"),
            })?;
        let mut plugin = PluginInner {
            kind,
            digest,
            source,
            exports,
            pre,
            runtime: inner.clone(),
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                kind,
            },
        };
        plugin.info = inspect(&plugin)?;
        Ok(Plugin {
            inner: Arc::new(plugin),
        })
    }
}

/// Instantiate once, type-check every export of the world, ask `describe`.
fn inspect(plugin: &PluginInner) -> Result<PluginInfo, LoadError> {
    fn trial<F: WorldFuncs>(inner: &PluginInner) -> Result<PluginInfo, LoadError> {
        let limits = inner.runtime.config.default_limits.clone();
        let mut store = wasmtime::Store::new(
            &inner.runtime.engine,
            StoreState::new("(inspect)".into(), &limits, None),
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(engine::deadline_ticks(
            limits.call_timeout,
            inner.runtime.config.epoch_tick,
        ));
        let instance = inner
            .pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Inspect(instance::classify(e, store.data(), &limits)))?;
        let wrong_type = |e: wasmtime::Error| LoadError::WrongType {
            function: inner.exports.export_name.clone(),
            message: format!("{e:#}"),
        };
        let common =
            CommonFuncs::resolve(&mut store, &instance, &inner.exports).map_err(wrong_type)?;
        F::resolve(&mut store, &instance, &inner.exports).map_err(wrong_type)?;
        let (info,) = common
            .describe
            .call(&mut store, ())
            .map_err(|e| LoadError::Inspect(instance::classify(e, store.data(), &limits)))?;
        Ok(info.into())
    }
    match plugin.kind {
        PluginKind::Enricher => trial::<enricher::EnricherFuncs>(plugin),
        PluginKind::Projection => trial::<projection::ProjectionFuncs>(plugin),
        PluginKind::CommandHandler => trial::<command_handler::CommandHandlerFuncs>(plugin),
    }
}

/// A loaded, validated plugin version. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    kind: PluginKind,
    digest: String,
    source: ArtifactSource,
    pub(crate) exports: ExportIndices,
    pub(crate) pre: InstancePre<StoreState>,
    pub(crate) runtime: Arc<RuntimeInner>,
    info: PluginInfo,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("kind", &self.inner.kind)
            .field("digest", &self.inner.digest)
            .field("info", &self.inner.info)
            .finish()
    }
}

impl Plugin {
    pub fn kind(&self) -> PluginKind {
        self.inner.kind
    }

    /// sha256 of the component's bytes, lowercase hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// What the plugin's `describe` said at load time.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// Same as [`Plugin::info`]: the answer `describe` gave at load time.
    pub fn describe(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// Whether this load compiled the component or used the cache.
    pub fn source(&self) -> ArtifactSource {
        self.inner.source
    }

    /// The exact interface the component exports, e.g. `weir:plugin/river@0.1.0`.
    pub fn export_name(&self) -> &str {
        &self.inner.exports.export_name
    }

    fn expect_kind(&self, kind: PluginKind) -> Result<(), CallError> {
        if self.inner.kind == kind {
            Ok(())
        } else {
            Err(CallError::Init {
                message: format!(
                    "the plugin is {} {}, not {} {}",
                    self.inner.kind.article(),
                    self.inner.kind,
                    kind.article(),
                    kind
                ),
            })
        }
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), CallError> {
        match &self.inner.runtime.config.pool {
            Some(pool) if limits.memory_bytes > pool.max_memory_bytes => Err(CallError::Init {
                message: format!(
                    "memory limit {} exceeds the runtime's pool maximum {}",
                    limits.memory_bytes, pool.max_memory_bytes
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Instantiate an enricher and run its `init(config_json)`.
    pub fn enricher(
        &self,
        name: &str,
        limits: Limits,
        config_json: &str,
        lookup: Arc<dyn PondLookup>,
    ) -> Result<EnricherInstance, CallError> {
        self.expect_kind(PluginKind::Enricher)?;
        self.check_limits(&limits)?;
        EnricherInstance::start(self.clone(), name, limits, config_json, lookup)
    }

    /// Instantiate a projection and run its `init(config_json)`.
    pub fn projection(
        &self,
        name: &str,
        limits: Limits,
        config_json: &str,
    ) -> Result<ProjectionInstance, CallError> {
        self.expect_kind(PluginKind::Projection)?;
        self.check_limits(&limits)?;
        ProjectionInstance::start(self.clone(), name, limits, config_json)
    }

    /// Instantiate a command handler and run its `init(config_json)`.
    pub fn command_handler(
        &self,
        name: &str,
        limits: Limits,
        config_json: &str,
    ) -> Result<CommandHandlerInstance, CallError> {
        self.expect_kind(PluginKind::CommandHandler)?;
        self.check_limits(&limits)?;
        CommandHandlerInstance::start(self.clone(), name, limits, config_json)
    }
}
