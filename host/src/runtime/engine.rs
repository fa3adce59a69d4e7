//! Engine configuration: one wasmtime [`Engine`] per runtime, component
//! model on, epoch interruption driven by one ticker thread, and the pooling
//! instance allocator sized by [`PoolConfig`].
//!
//! Promises: the ticker thread stops when the runtime is dropped; a call's
//! deadline is converted to ticks rounding up, so a call is never
//! interrupted before its limit (it may run up to one tick longer).

use super::errors::RuntimeError;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Per-instance limits; the processor may override them per plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, all memories together (bytes).
    pub memory_bytes: usize,
    /// Wall-clock deadline of one call (init, a batch, a query, a command).
    pub call_timeout: Duration,
    /// Table elements per table.
    pub table_elements: usize,
    /// Core instances, tables and memories per instance (store).
    pub instances: usize,
    pub tables: usize,
    pub memories: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            call_timeout: Duration::from_secs(5),
            table_elements: 200_000,
            instances: 64,
            tables: 64,
            memories: 16,
        }
    }
}

/// Sizing of the pooling allocator. Slots are reserved address space, not
/// committed memory: a memory slot reserves `memory_reservation` (4 GiB on
/// 64-bit hosts, so bounds checks are free) of virtual space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Live plugin instances at once (component instances).
    pub max_instances: u32,
    /// Core instances per component: a Rust wasip2 component uses about 3,
    /// componentize-py / componentize-js components more.
    pub max_core_instances_per_component: u32,
    pub max_memories_per_component: u32,
    pub max_tables_per_component: u32,
    /// Totals across all live instances.
    pub total_core_instances: u32,
    pub total_memories: u32,
    pub total_tables: u32,
    /// Largest linear memory any instance may grow to (caps `Limits::memory_bytes`).
    pub max_memory_bytes: usize,
    /// Largest table (elements); interpreters built as components have big
    /// function tables.
    pub table_elements: usize,
    /// Per-instance metadata ("vmctx") sizes; large components need more.
    pub max_core_instance_size: usize,
    pub max_component_instance_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig::for_instances(256)
    }
}

impl PoolConfig {
    /// A pool for `n` live instances of typical size.
    pub fn for_instances(n: u32) -> Self {
        PoolConfig {
            max_instances: n,
            max_core_instances_per_component: 32,
            max_memories_per_component: 8,
            max_tables_per_component: 16,
            total_core_instances: n.saturating_mul(8),
            total_memories: n.saturating_mul(2),
            total_tables: n.saturating_mul(4),
            max_memory_bytes: 1 << 30,
            table_elements: 200_000,
            max_core_instance_size: 8 << 20,
            max_component_instance_size: 8 << 20,
        }
    }
}

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where precompiled components are kept (content-addressed). `None`
    /// disables the disk cache: every load compiles.
    pub cache_dir: Option<PathBuf>,
    /// Limits for instances created without explicit ones.
    pub default_limits: Limits,
    /// `Some` = pooling allocator (fast instantiation); `None` = allocate on
    /// demand (no up-front reservation; slower instantiation).
    pub pool: Option<PoolConfig>,
    /// Granularity of deadlines.
    pub epoch_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            default_limits: Limits::default(),
            pool: Some(PoolConfig::default()),
            epoch_tick: Duration::from_millis(10),
        }
    }
}

pub(crate) fn build_engine(config: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    if config.epoch_tick.is_zero() {
        return Err(RuntimeError::Config("epoch_tick must be positive".into()));
    }
    let mut wasm = Config::new();
    wasm.wasm_component_model(true);
    wasm.epoch_interruption(true);
    wasm.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some(pool) = &config.pool {
        if config.default_limits.memory_bytes > pool.max_memory_bytes {
            return Err(RuntimeError::Config(format!(
                "default memory limit {} exceeds the pool's max_memory_bytes {}",
                config.default_limits.memory_bytes, pool.max_memory_bytes
            )));
        }
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(pool.max_instances)
            .max_core_instances_per_component(pool.max_core_instances_per_component)
            .max_memories_per_component(pool.max_memories_per_component)
            .max_tables_per_component(pool.max_tables_per_component)
            .total_core_instances(pool.total_core_instances)
            .total_memories(pool.total_memories)
            .total_tables(pool.total_tables)
            .max_memory_size(pool.max_memory_bytes)
            .table_elements(pool.table_elements)
            .max_core_instance_size(pool.max_core_instance_size)
            .max_component_instance_size(pool.max_component_instance_size);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Converts a deadline into epoch ticks (rounding up, plus one tick because
/// the current tick may be about to end).
pub(crate) fn deadline_ticks(timeout: Duration, tick: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(tick.as_nanos().max(1));
    u64::try_from(ticks)
        .unwrap_or(u64::MAX / 2)
        .saturating_add(1)
}

/// The one thread that advances the engine's epoch. Stops when dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up() {
        let tick = Duration::from_millis(10);
        assert_eq!(deadline_ticks(Duration::from_millis(10), tick), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(11), tick), 3);
        assert_eq!(deadline_ticks(Duration::ZERO, tick), 1);
    }

    #[test]
    fn memory_limit_above_pool_cap_is_refused() {
        let mut config = RuntimeConfig {
            pool: Some(PoolConfig::for_instances(4)),
            ..Default::default()
        };
        config.default_limits.memory_bytes = 2 << 30;
        assert!(matches!(
            build_engine(&config),
            Err(RuntimeError::Config(_))
        ));
    }
}
