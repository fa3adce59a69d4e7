//! Per-processor counters and the plugin call latency histogram. Lock-free
//! (atomics), read as a [`MetricsSnapshot`] by the API's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds (µs) of the latency histogram buckets; the last is +Inf.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

/// The last error a processor ran into.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastError {
    pub message: String,
    pub at_ms: i64,
    pub topic: Option<String>,
    pub partition: Option<u32>,
    pub offset: Option<u64>,
}

#[derive(Default)]
pub struct ProcessorMetrics {
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    pub batches: AtomicU64,
    /// Failed plugin calls (traps, timeouts, failures), retries included.
    pub errors: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub skipped: AtomicU64,
    pub commits: AtomicU64,
    /// Pond batches applied a second time, serially, because another
    /// partition changed state they had read (see `processor::projection`).
    pub reapplied: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

/// A copy of a processor's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    pub events_in: u64,
    pub events_out: u64,
    pub batches: u64,
    pub errors: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
    pub commits: u64,
    pub reapplied: u64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_US`], then +Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_us: u64,
    pub latency_count: u64,
}

impl ProcessorMetrics {
    pub fn observe_call(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn record_error(&self, error: LastError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error);
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().clone()
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let latency_buckets = self
            .buckets
            .iter()
            .map(|b| {
                cumulative += get(b);
                cumulative
            })
            .collect();
        MetricsSnapshot {
            events_in: get(&self.events_in),
            events_out: get(&self.events_out),
            batches: get(&self.batches),
            errors: get(&self.errors),
            dead_lettered: get(&self.dead_lettered),
            skipped: get(&self.skipped),
            commits: get(&self.commits),
            reapplied: get(&self.reapplied),
            latency_buckets,
            latency_sum_us: get(&self.latency_sum_us),
            latency_count: get(&self.latency_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = ProcessorMetrics::default();
        m.observe_call(Duration::from_micros(5));
        m.observe_call(Duration::from_micros(300));
        m.observe_call(Duration::from_secs(10));
        let s = m.snapshot();
        assert_eq!(s.latency_buckets[0], 1);
        assert_eq!(s.latency_buckets[4], 2);
        assert_eq!(*s.latency_buckets.last().expect("buckets"), 3);
        assert_eq!(s.latency_count, 3);
    }
}
