//! The sandbox around one plugin instance: the store's data ([`StoreState`]),
//! its WASI context, its resource limiter and the host imports every world
//! shares (`log`).
//!
//! WASI is preview 2 with nothing ambient: no preopened directories, no
//! environment, no arguments, no sockets or name lookup, empty stdin,
//! deterministic "random" numbers and clocks that read the event time and
//! never sleep (`clock`): a plugin must be deterministic for its input, so
//! replay gives the same result. Guest stdout / stderr and the `log` import
//! become `tracing` events (target `weir::plugin`) tagged with the plugin's
//! name, within an output budget per instance ([`OUTPUT_BURST`] bytes, then
//! [`OUTPUT_PER_SECOND`]; what is over it is dropped and counted); the last
//! few KiB of stderr are kept so a trap (a Rust panic) can be reported with
//! its message. Every argument a guest passes to a host import is bounded
//! ([`StoreState::bounded`]): a larger one fails the call as refused.

use super::PondLookup;
use super::bindings::enricher::weir::plugin::host as wit_host;
use super::clock::{ClockView, EventClock};
use super::engine::Limits;
use super::state::StateSlot;
use bytes::Bytes;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// How much of a guest's recent stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;
/// A guest line longer than this is logged in pieces.
const MAX_LINE: usize = 8192;
/// Guest output an instance may log at once...
pub(crate) const OUTPUT_BURST: f64 = 256.0 * 1024.0;
/// ...and per second after that.
pub(crate) const OUTPUT_PER_SECOND: f64 = 64.0 * 1024.0;
/// The longest key (state, lookup) a guest may pass to the host.
pub(crate) const MAX_KEY_BYTES: usize = 64 << 10;
/// The longest value a guest may store.
pub(crate) const MAX_VALUE_BYTES: usize = 16 << 20;
/// The longest name (of a pond) a guest may pass to the host.
pub(crate) const MAX_NAME_BYTES: usize = 249;

/// Everything a plugin instance's store holds.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: TrackingLimiter,
    pub(crate) plugin: Arc<str>,
    stderr: GuestOutput,
    /// Enrichers: where `lookup` reads.
    pub(crate) lookup: Option<Arc<dyn PondLookup>>,
    /// Projections: the state handle of the call in progress.
    pub(crate) state: StateSlot,
    /// Set by a host import that refused what the guest asked for.
    pub(crate) refused: Option<String>,
    /// The time the guest sees.
    pub(crate) clock: EventClock,
    /// What the guest may still log (stdout, stderr and `log` share it).
    budget: Arc<Mutex<OutputBudget>>,
}

impl StoreState {
    pub(crate) fn new(
        plugin: Arc<str>,
        limits: &Limits,
        lookup: Option<Arc<dyn PondLookup>>,
    ) -> Self {
        let budget = Arc::new(Mutex::new(OutputBudget::new()));
        let stdout = GuestOutput::new(plugin.clone(), "stdout", budget.clone());
        let stderr = GuestOutput::new(plugin.clone(), "stderr", budget.clone());
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout)
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .secure_random(wasmtime_wasi::Deterministic::new(vec![
                0x5e, 0x1f, 0x0d, 0x42,
            ]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![
                0x42, 0x0d, 0x1f, 0x5e,
            ]))
            .insecure_random_seed(0x5eed)
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: TrackingLimiter::new(limits),
            plugin,
            stderr,
            lookup,
            state: StateSlot::default(),
            refused: None,
            clock: EventClock::default(),
            budget,
        }
    }

    /// Reset per-call diagnostics.
    pub(crate) fn begin_call(&mut self) {
        self.limiter.denied = None;
        self.refused = None;
        self.stderr.clear_tail();
    }

    /// Refuse a host-import argument of `len` bytes over `max`: the call
    /// fails as refused (`CallError::Forbidden`) and its policy applies.
    pub(crate) fn bounded(&mut self, what: &str, len: usize, max: usize) -> wasmtime::Result<()> {
        if len <= max {
            return Ok(());
        }
        let message = format!("{what} of {len} bytes is over the limit of {max} bytes");
        self.refused = Some(message.clone());
        Err(wasmtime::format_err!(message))
    }

    /// What the clock imports reach.
    pub(crate) fn clocks(&mut self) -> ClockView<'_> {
        ClockView {
            clock: &mut self.clock,
            table: &mut self.table,
        }
    }

    /// The guest's recent stderr output (trimmed), for error messages.
    pub(crate) fn stderr_tail(&self) -> String {
        self.stderr.tail()
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_host::Host for StoreState {
    fn log(&mut self, level: wit_host::Level, message: String) -> wasmtime::Result<()> {
        let plugin = &*self.plugin;
        let message = &message[..message.floor_char_boundary(MAX_LINE)];
        if !self.budget.lock().take(plugin, message.len()) {
            return Ok(());
        }
        match level {
            wit_host::Level::Trace => tracing::trace!(target: "weir::plugin", plugin, "{message}"),
            wit_host::Level::Debug => tracing::debug!(target: "weir::plugin", plugin, "{message}"),
            wit_host::Level::Info => tracing::info!(target: "weir::plugin", plugin, "{message}"),
            wit_host::Level::Warn => tracing::warn!(target: "weir::plugin", plugin, "{message}"),
            wit_host::Level::Error => tracing::error!(target: "weir::plugin", plugin, "{message}"),
        }
        Ok(())
    }
}

impl super::bindings::enricher::weir::plugin::types::Host for StoreState {}

/// [`StoreLimits`] plus a record of the first growth it refused, so a trap
/// that follows (e.g. Rust's allocation-failure abort) is reported as the
/// resource limit it really is.
pub(crate) struct TrackingLimiter {
    inner: StoreLimits,
    memory_bytes: usize,
    pub(crate) denied: Option<String>,
}

impl TrackingLimiter {
    fn new(limits: &Limits) -> Self {
        let inner = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .table_elements(limits.table_elements)
            .instances(limits.instances)
            .tables(limits.tables)
            .memories(limits.memories)
            .trap_on_grow_failure(false)
            .build();
        TrackingLimiter {
            inner,
            memory_bytes: limits.memory_bytes,
            denied: None,
        }
    }
}

impl ResourceLimiter for TrackingLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed && self.denied.is_none() {
            self.denied = Some(format!(
                "memory limit of {} bytes reached (asked to grow from {current} to {desired} bytes)",
                self.memory_bytes
            ));
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.table_growing(current, desired, maximum)?;
        if !allowed && self.denied.is_none() {
            self.denied = Some(format!(
                "table limit reached (asked to grow from {current} to {desired} elements)"
            ));
        }
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// How much guest output an instance may still log: a token bucket of
/// [`OUTPUT_BURST`] bytes refilled at [`OUTPUT_PER_SECOND`].
struct OutputBudget {
    tokens: f64,
    refilled: std::time::Instant,
    /// Bytes dropped since the last note about them.
    dropped: u64,
}

impl OutputBudget {
    fn new() -> Self {
        OutputBudget {
            tokens: OUTPUT_BURST,
            refilled: std::time::Instant::now(),
            dropped: 0,
        }
    }

    /// Whether `bytes` more may be logged now; if not they are counted as
    /// dropped (and said so once the budget allows again).
    fn take(&mut self, plugin: &str, bytes: usize) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * OUTPUT_PER_SECOND;
        self.tokens = (self.tokens + refill).min(OUTPUT_BURST);
        self.refilled = now;
        if self.tokens < bytes as f64 {
            self.dropped += bytes as u64;
            return false;
        }
        self.tokens -= bytes as f64;
        if self.dropped > 0 {
            tracing::warn!(
                target: "weir::plugin",
                plugin,
                dropped_bytes = self.dropped,
                "plugin output over its budget was dropped"
            );
            self.dropped = 0;
        }
        true
    }
}

/// A guest output stream (stdout or stderr) that becomes `tracing` events,
/// one per line.
#[derive(Clone)]
struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
    buffers: Arc<Mutex<OutputBuffers>>,
    budget: Arc<Mutex<OutputBudget>>,
}

#[derive(Default)]
struct OutputBuffers {
    partial: Vec<u8>,
    tail: Vec<u8>,
}

impl GuestOutput {
    fn new(plugin: Arc<str>, stream: &'static str, budget: Arc<Mutex<OutputBudget>>) -> Self {
        GuestOutput {
            plugin,
            stream,
            buffers: Arc::default(),
            budget,
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut b = self.buffers.lock();
        b.tail.extend_from_slice(bytes);
        if b.tail.len() > STDERR_TAIL {
            let cut = b.tail.len() - STDERR_TAIL;
            b.tail.drain(..cut);
        }
        b.partial.extend_from_slice(bytes);
        while let Some(nl) = b.partial.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = b.partial.drain(..=nl).collect();
            self.emit(&line[..nl]);
        }
        if b.partial.len() > MAX_LINE {
            let line = std::mem::take(&mut b.partial);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        if !self.budget.lock().take(&self.plugin, line.len()) {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        tracing::info!(target: "weir::plugin", plugin = &*self.plugin, stream = self.stream, "{line}");
    }

    fn clear_tail(&self) {
        self.buffers.lock().tail.clear();
    }

    fn tail(&self) -> String {
        String::from_utf8_lossy(&self.buffers.lock().tail)
            .trim()
            .to_string()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn output_over_the_budget_is_dropped_then_allowed_again() {
        let mut budget = OutputBudget::new();
        assert!(budget.take("p", OUTPUT_BURST as usize));
        assert!(!budget.take("p", 1024), "the burst is spent");
        assert_eq!(budget.dropped, 1024);
        // A second later there is room for a second's worth again.
        budget.refilled -= std::time::Duration::from_secs(1);
        assert!(budget.take("p", 1024));
        assert_eq!(budget.dropped, 0, "the drop was reported");
    }

    #[test]
    fn output_keeps_a_bounded_tail() {
        let out = GuestOutput::new(
            "p".into(),
            "stderr",
            Arc::new(Mutex::new(OutputBudget::new())),
        );
        out.write_bytes(b"first line\nsecond ");
        out.write_bytes(b"line\n");
        assert_eq!(out.tail(), "first line\nsecond line");
        out.write_bytes(&vec![b'x'; STDERR_TAIL * 2]);
        assert_eq!(out.tail().len(), STDERR_TAIL);
        out.clear_tail();
        assert_eq!(out.tail(), "");
    }
}
