//! Per-event cost of the example plugins in each guest language, side by
//! side with Rust in the same run: the orders enricher (JSON parse, a pond
//! lookup per order, JSON out) and the totals projection (JSON parse, a state
//! get + put per order), over batches of ~60-byte order events. Also the
//! component sizes and the time to load each one from the artifact cache.
//!
//!   guest-sdk/install-toolchains.sh
//!   cargo bench -p weir-host --bench languages
//!   WEIR_BENCH_QUICK=1 ...   (fewer rounds)
//!
//! Languages whose toolchain is missing are reported and left out (the
//! conformance test is what fails on a missing toolchain).

use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::batch::{Record, RecordBatch};
use weir::runtime::*;
use weir_testkit::languages::{self, Language};
use weir_testkit::plugins::plugin_bytes;

const BATCH: usize = 1000;

fn orders(n: usize) -> RecordBatch {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            key: Vec::new(),
            value: format!(
                r#"{{"id":"o{i}","customer":"c{}","amount":{}}}"#,
                i % 100,
                1 + i % 50
            )
            .into_bytes(),
            headers: vec![],
            timestamp: i as i64,
        })
        .collect();
    RecordBatch::from_records(0, &records)
}

fn customers(_pond: &str, key: &[u8]) -> Option<Vec<u8>> {
    // Half the customers are known.
    let n: u32 = std::str::from_utf8(key.get(1..)?).ok()?.parse().ok()?;
    n.is_multiple_of(2)
        .then(|| format!(r#"{{"name":"customer {n}","tier":"gold","since":2019}}"#).into_bytes())
}

/// Median time per event over `rounds` calls of `run` on one batch.
fn per_event(rounds: usize, mut run: impl FnMut()) -> Duration {
    run(); // warm-up: first-call costs (lazy init, page faults)
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2] / BATCH as u32
}

struct Row {
    language: &'static str,
    size_mb: f64,
    cached_load: Duration,
    enricher: Duration,
    projection: Duration,
}

fn measure(
    runtime: &Runtime,
    language: &'static str,
    enricher: &[u8],
    projection: &[u8],
    rounds: usize,
) -> Row {
    let t = Instant::now();
    let enr = runtime
        .load(PluginKind::Enricher, enricher)
        .expect("load enricher");
    let cached_load = t.elapsed();
    let prj = runtime
        .load(PluginKind::Projection, projection)
        .expect("load projection");
    let limits = runtime.default_limits();

    let batch = orders(BATCH);
    let mut river = enr
        .enricher("orders", limits.clone(), "", Arc::new(customers))
        .expect("init enricher");
    river.set_output_count(1);
    let enricher_cost = per_event(rounds, || {
        let out = river.process("orders", 0, &batch).expect("process");
        assert_eq!(out.len(), BATCH);
    });

    let mut pond = prj
        .projection("totals", limits, "")
        .expect("init projection");
    let mut state = MemoryState::default();
    let projection_cost = per_event(rounds, || {
        pond.apply("orders", 0, &batch, &mut state).expect("apply")
    });

    Row {
        language,
        size_mb: enricher.len() as f64 / 1e6,
        cached_load,
        enricher: enricher_cost,
        projection: projection_cost,
    }
}

fn main() {
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some();
    let rounds = if quick { 5 } else { 30 };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(languages::output_dir().join("wasmtime-cache")),
        pool: Some(PoolConfig::for_instances(16)),
        ..RuntimeConfig::default()
    })
    .expect("runtime");

    let mut rows = Vec::new();
    // Compile (or fetch) every component first, so the measured load below
    // is a cache load.
    let rust = (
        plugin_bytes("enricher_orders"),
        plugin_bytes("projection_totals"),
    );
    let mut sources = vec![("rust", rust.0, rust.1)];
    for lang in Language::ALL {
        let built = languages::component_bytes(lang, "enricher-orders")
            .and_then(|e| languages::component_bytes(lang, "projection-totals").map(|p| (e, p)));
        match built {
            Ok((e, p)) => sources.push((lang.id(), e, p)),
            Err(message) => eprintln!("{} left out: {message}", lang.id()),
        }
    }
    for (_, e, p) in &sources {
        runtime
            .load(PluginKind::Enricher, e)
            .expect("compile enricher");
        runtime
            .load(PluginKind::Projection, p)
            .expect("compile projection");
    }
    for (name, e, p) in &sources {
        rows.push(measure(&runtime, name, e, p, rounds));
    }

    let rust = rows
        .iter()
        .find(|r| r.language == "rust")
        .map(|r| (r.enricher, r.projection));
    println!("batches of {BATCH} orders, median of {rounds} rounds, per event:");
    println!(
        "{:<8} {:>9} {:>12} {:>14} {:>9} {:>16} {:>9}",
        "language", "size MB", "cached load", "enricher", "x rust", "projection", "x rust"
    );
    for r in &rows {
        let (re, rp) = rust.unwrap_or((r.enricher, r.projection));
        println!(
            "{:<8} {:>9.1} {:>12.1?} {:>14.2?} {:>9.1} {:>16.2?} {:>9.1}",
            r.language,
            r.size_mb,
            r.cached_load,
            r.enricher,
            r.enricher.as_secs_f64() / re.as_secs_f64(),
            r.projection,
            r.projection.as_secs_f64() / rp.as_secs_f64()
        );
    }
}
