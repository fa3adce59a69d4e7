//! Plugin path benchmark: per-event cost of an enricher (map, byte filter,
//! JSON filter over ~100-byte JSON events) at batch sizes 1 / 100 / 1000 /
//! 10000, beside the same logic in native Rust measured in the same run;
//! plus compile, load-from-cache and instantiate times.
//!
//!   cargo bench -p weir-host --bench plugin
//!   WEIR_BENCH_QUICK=1 ...   (shorter measurements)

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::batch::{HeaderColumns, Record, RecordBatch};
use weir::runtime::*;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Map,
    Filter,
    Json,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Map => "map",
            Mode::Filter => "filter",
            Mode::Json => "json",
        }
    }
}

fn event(i: usize) -> Vec<u8> {
    let side = if i.is_multiple_of(2) { "buy" } else { "sell" };
    let mut v = format!(
        r#"{{"id":{},"side":"{side}","qty":{},"sym":"WEIR","pad":""#,
        1_000_000 + i,
        i % 100
    );
    while v.len() < 98 {
        v.push('x');
    }
    v.push_str(r#""}"#);
    v.into_bytes()
}

fn batch(n: usize) -> RecordBatch {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            key: format!("k{}", i % 64).into_bytes(),
            value: event(i),
            headers: vec![],
            timestamp: i as i64,
        })
        .collect();
    RecordBatch::from_records(0, &records)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(serde::Deserialize)]
struct Order<'a> {
    id: u64,
    #[allow(dead_code)]
    #[serde(borrow)]
    side: &'a str,
    qty: u32,
}

#[derive(serde::Serialize)]
struct Slim {
    id: u64,
    qty: u32,
}

/// The bench plugin's logic, natively, producing the same columns.
fn native(mode: Mode, b: &RecordBatch) -> Emitted {
    let n = b.len();
    let mut out = Emitted {
        outputs: Vec::with_capacity(n),
        sources: Vec::with_capacity(n),
        key_ends: Vec::with_capacity(n),
        keys: Vec::new(),
        value_ends: Vec::with_capacity(n),
        values: Vec::with_capacity(b.values.len()),
        headers: HeaderColumns {
            ends: Vec::with_capacity(n),
            ..HeaderColumns::default()
        },
    };
    let emit = |out: &mut Emitted, i: usize, key: &[u8], value: Option<&[u8]>| {
        if let Some(value) = value {
            out.values.extend_from_slice(value);
        }
        out.value_ends.push(out.values.len() as u32);
        out.keys.extend_from_slice(key);
        out.key_ends.push(out.keys.len() as u32);
        out.outputs.push(0);
        out.sources.push(i as u32);
        out.headers.ends.push(0);
    };
    for i in 0..n {
        let (key, value) = (b.key(i), b.value(i));
        match mode {
            Mode::Map => emit(&mut out, i, key, Some(value)),
            Mode::Filter => {
                if contains(value, br#""side":"buy""#) {
                    emit(&mut out, i, key, Some(value));
                }
            }
            Mode::Json => {
                let order: Order = serde_json::from_slice(value).expect("bench events are valid");
                if order.qty >= 50 {
                    serde_json::to_writer(
                        &mut out.values,
                        &Slim {
                            id: order.id,
                            qty: order.qty,
                        },
                    )
                    .expect("serialise");
                    emit(&mut out, i, key, None);
                }
            }
        }
    }
    out
}

/// Best-of-`reps` nanoseconds per event of `f` (which processes `events`).
fn per_event(events: usize, budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    black_box(f());
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget || calls < 3 {
        black_box(f());
        calls += 1;
    }
    start.elapsed().as_nanos() as f64 / (calls as f64 * events as f64)
}

fn main() {
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some();
    let budget = Duration::from_millis(if quick { 40 } else { 200 });
    let reps = if quick { 1 } else { 3 };
    let wasm = weir_testkit::plugins::plugin_bytes("bench_enricher");
    println!(
        "plugin runtime benchmark (wasmtime 48, bench_enricher {} KiB)",
        wasm.len() / 1024
    );

    // Compile, load from cache, instantiate.
    let cache = tempfile::tempdir().expect("temp dir");
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config.clone()).expect("runtime");
    let t = Instant::now();
    runtime.load(PluginKind::Enricher, &wasm).expect("compile");
    let compile = t.elapsed();
    let restarted = Runtime::new(config).expect("runtime");
    let mut cached = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let p = restarted
            .load(PluginKind::Enricher, &wasm)
            .expect("cached load");
        cached = cached.min(t.elapsed());
        assert_eq!(p.source(), ArtifactSource::DiskCache);
    }
    let plugin = restarted.load(PluginKind::Enricher, &wasm).expect("load");
    let lookup: Arc<dyn PondLookup> = Arc::new(NoPonds);
    let rounds = if quick { 50 } else { 300 };
    let t = Instant::now();
    for _ in 0..rounds {
        black_box(
            plugin
                .enricher(
                    "bench",
                    restarted.default_limits(),
                    r#"{"mode":"map"}"#,
                    lookup.clone(),
                )
                .expect("instance"),
        );
    }
    let instantiate = t.elapsed() / rounds;
    println!(
        "compile: {:.1} ms   load from cache (validate + describe): {:.2} ms   instantiate + init: {:.1} µs",
        compile.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        instantiate.as_secs_f64() * 1e6
    );

    println!(
        "\n{:<7} {:>6} {:>12} {:>12} {:>8} {:>12}",
        "mode", "batch", "wasm ns/ev", "native ns/ev", "ratio", "wasm Mev/s"
    );
    for mode in [Mode::Map, Mode::Filter, Mode::Json] {
        let config = format!(r#"{{"mode":"{}"}}"#, mode.name());
        let mut instance = plugin
            .enricher("bench", restarted.default_limits(), &config, lookup.clone())
            .expect("instance");
        for size in [1usize, 100, 1000, 10_000] {
            let b = batch(size);
            // Same logic, same output: check before timing.
            let from_wasm = instance.process("bench", 0, &b).expect("process");
            assert_eq!(
                from_wasm,
                native(mode, &b),
                "{} differs from native at batch {size}",
                mode.name()
            );
            let (mut wasm_ns, mut native_ns) = (f64::MAX, f64::MAX);
            for _ in 0..reps {
                wasm_ns = wasm_ns.min(per_event(size, budget, || {
                    instance.process("bench", 0, &b).expect("process").len()
                }));
                native_ns = native_ns.min(per_event(size, budget, || {
                    native(mode, black_box(&b)).len()
                }));
            }
            println!(
                "{:<7} {:>6} {:>12.1} {:>12.1} {:>7.2}x {:>12.1}",
                mode.name(),
                size,
                wasm_ns,
                native_ns,
                wasm_ns / native_ns,
                1e3 / wasm_ns
            );
        }
    }
}
