//! Processor benchmarks, each beside a native reference measured in the same run:
//!
//! 1. enricher end to end (log → plugin → log, exactly-once commit), events/s,
//!    vs. a native copy of the same events log → log;
//! 2. replay: N events (~100 B, 10,000 keys) through a count+sum projection
//!    from offset 0 to caught up (target: 20 M in ≤ 10 s), vs. a native fold
//!    (read + JSON parse + hash map) over the same log;
//! 3. command handler: sequential latency (p50 / p99) and throughput with
//!    many commands in flight, fsync `never` and `always`.
//!
//!   cargo bench -p weir-host --bench processor
//!   WEIR_BENCH_QUICK=1 …                     (small N everywhere)
//!   WEIR_BENCH_REPLAY_EVENTS=20000000 …      (replay size; default 20 M, quick 1 M)
//!   WEIR_BENCH_REPLAY_BATCH=10000 …         (the replay manifest's max_batch; default unset)
//!   WEIR_BENCH_ONLY=replay …                 (one section: enricher, replay or commands)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::batch::Record;
use weir::log::{EventLog, FsyncPolicy, Log, LogConfig, TopicConfig};
use weir::processor::{CommandOutcome, CommandRequest, Engine, EngineConfig};
use weir::runtime::{MemoryState, PluginKind, PoolConfig, Runtime, RuntimeConfig};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    engine: Engine,
}

fn setup(fsync: FsyncPolicy, runtime: &Runtime) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lc = LogConfig::new(dir.path().join("log"));
    lc.default_fsync = fsync;
    let log = Arc::new(Log::open(lc).expect("log"));
    let config = EngineConfig::new(dir.path().join("data"), fsync);
    let engine = Engine::open(config, log.clone(), runtime.clone()).expect("engine");
    Setup {
        _dir: dir,
        log,
        engine,
    }
}

/// ~100-byte order for customer `key`.
fn order(i: usize, keys: usize) -> Record {
    let customer = format!("c{:05}", i % keys);
    let mut value = format!(
        r#"{{"id":"o{i}","customer":"{customer}","amount":{},"pad":""#,
        i % 1000
    );
    while value.len() < 98 {
        value.push('x');
    }
    value.push_str("\"}");
    Record {
        key: customer.into_bytes(),
        value: value.into_bytes(),
        headers: vec![],
        timestamp: i as i64,
    }
}

/// Append `n` orders over `keys` customers, in 1000-record batches per partition.
fn produce(log: &Log, topic: &str, n: usize, keys: usize) -> Duration {
    let partitions = log.topic(topic).expect("topic").partitions.len() as u32;
    let start = Instant::now();
    let mut pending: Vec<Vec<Record>> = vec![Vec::new(); partitions as usize];
    for i in 0..n {
        let r = order(i, keys);
        let p = log.partition_for(topic, &r.key).expect("partition");
        pending[p as usize].push(r);
        if pending[p as usize].len() == 1000 {
            log.append(topic, p, &pending[p as usize]).expect("append");
            pending[p as usize].clear();
        }
    }
    for (p, records) in pending.iter().enumerate() {
        if !records.is_empty() {
            log.append(topic, p as u32, records).expect("append");
        }
    }
    start.elapsed()
}

fn wait_caught_up(engine: &Engine, name: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = engine.inspect(name).expect("inspect");
        if s.lag() == 0 && !s.partitions.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{name} did not catch up within {limit:?}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn plugin(name: &str) -> Vec<u8> {
    weir_testkit::plugins::plugin_bytes(name)
}

/// CPU time used by this process so far (all threads): the machine is
/// shared, so wall time alone says little about the work done.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.2} M events/s", n as f64 / d.as_secs_f64() / 1e6)
}

fn bench_enricher(runtime: &Runtime, n: usize) {
    let s = setup(FsyncPolicy::Never, runtime);
    s.log
        .create_topic("in", TopicConfig::with_partitions(2))
        .expect("topic");
    produce(&s.log, "in", n, 10_000);
    // Native reference: read every partition and append the same records to another topic.
    s.log
        .create_topic("native.out", TopicConfig::with_partitions(2))
        .expect("topic");
    let start = Instant::now();
    for p in 0..2 {
        let mut offset = 0;
        loop {
            let batch = s.log.read("in", p, offset, 1000, 4 << 20).expect("read");
            if batch.is_empty() {
                break;
            }
            let records: Vec<Record> = (0..batch.len()).map(|i| batch.record(i)).collect();
            s.log.append("native.out", p, &records).expect("append");
            offset = batch.offsets[batch.len() - 1] + 1;
        }
    }
    let native = start.elapsed();
    // Compile once beforehand: a deploy then loads the precompiled artifact (as a restarted host does).
    runtime
        .load(PluginKind::Enricher, &plugin("bench_enricher"))
        .expect("warm the component cache");
    let manifest = serde_json::json!({"name": "bench-map", "kind": "enricher", "inputs": ["in"], "outputs": ["out"],
        "config": {"mode": "map"}, "partitions": 2});
    let start = Instant::now();
    s.engine
        .deploy(manifest, &plugin("bench_enricher"))
        .expect("deploy");
    let deployed = start.elapsed();
    let took = wait_caught_up(&s.engine, "bench-map", Duration::from_secs(600)) + deployed;
    let out: u64 = s
        .log
        .topic("out")
        .expect("out")
        .partitions
        .iter()
        .map(|p| p.end_offset)
        .sum();
    assert_eq!(out as usize, n, "every event mapped exactly once");
    println!("enricher map, {n} events, 2 partitions, exactly-once, fsync never:");
    println!(
        "  weir enricher (deploy → caught up): {:>8.3} s  {}",
        took.as_secs_f64(),
        rate(n, took)
    );
    println!(
        "  native log→log copy (reference)   : {:>8.3} s  {}",
        native.as_secs_f64(),
        rate(n, native)
    );
    println!(
        "  ratio weir / native               : {:.2}x",
        took.as_secs_f64() / native.as_secs_f64()
    );
}

/// Count and sum per customer over the given partitions of `orders`.
fn native_fold(log: &Log, partitions: &[u32]) -> HashMap<String, (u64, i64)> {
    #[derive(serde::Deserialize)]
    struct Order<'a> {
        #[serde(borrow)]
        customer: &'a str,
        amount: i64,
    }
    let mut totals: HashMap<String, (u64, i64)> = HashMap::new();
    for &p in partitions {
        let mut offset = 0;
        loop {
            let batch = log
                .read("orders", p, offset, 10_000, 8 << 20)
                .expect("read");
            if batch.is_empty() {
                break;
            }
            for i in 0..batch.len() {
                let o: Order = serde_json::from_slice(batch.value(i)).expect("json");
                let e = totals.entry(o.customer.to_string()).or_default();
                e.0 += 1;
                e.1 += o.amount;
            }
            offset = batch.offsets[batch.len() - 1] + 1;
        }
    }
    totals
}

fn bench_replay(runtime: &Runtime, n: usize, replay_batch: Option<usize>) {
    let keys = 10_000;
    let s = setup(FsyncPolicy::Never, runtime);
    s.log
        .create_topic("orders", TopicConfig::with_partitions(2))
        .expect("topic");
    let produced = produce(&s.log, "orders", n, keys);
    println!(
        "replay: produced {n} events (~100 B, {keys} keys, 2 partitions) in {:.1} s",
        produced.as_secs_f64()
    );
    // Native references: read + parse + fold into a hash map, on one
    // thread, and on one thread per partition (as the engine runs them).
    let (start, cpu_start) = (Instant::now(), cpu_time());
    let totals = native_fold(&s.log, &[0, 1]);
    let (native, native_cpu) = (start.elapsed(), cpu_time() - cpu_start);
    let (start, cpu_start) = (Instant::now(), cpu_time());
    let halves = std::thread::scope(|scope| {
        let log = &s.log;
        let threads: Vec<_> = [0, 1]
            .map(|p| scope.spawn(move || native_fold(log, &[p])))
            .into_iter()
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("native fold thread"))
            .collect::<Vec<_>>()
    });
    let (native_par, native_par_cpu) = (start.elapsed(), cpu_time() - cpu_start);
    let par_keys: usize = halves.iter().map(HashMap::len).sum();
    assert_eq!(par_keys, totals.len(), "keys are partitioned");
    // Plugin alone: the same batches through `apply` over an in-memory map (no store, no log writes).
    let loaded = runtime
        .load(PluginKind::Projection, &plugin("projection_totals"))
        .expect("load");
    let mut instance = loaded
        .projection("alone", runtime.default_limits(), "{}")
        .expect("instance");
    let mut memory = MemoryState::default();
    let (start, cpu_start) = (Instant::now(), cpu_time());
    for p in 0..2 {
        let mut offset = 0;
        loop {
            let batch = s
                .log
                .read(
                    "orders",
                    p,
                    offset,
                    replay_batch.unwrap_or(100_000),
                    16 << 20,
                )
                .expect("read");
            if batch.is_empty() {
                break;
            }
            instance
                .apply("orders", p, &batch, &mut memory)
                .expect("apply");
            offset = batch.offsets[batch.len() - 1] + 1;
        }
    }
    let (alone, alone_cpu) = (start.elapsed(), cpu_time() - cpu_start);
    let mut manifest =
        serde_json::json!({"name": "totals", "kind": "projection", "inputs": ["orders"]});
    if let Some(b) = replay_batch {
        manifest["max_batch"] = b.into();
    }
    let (start, cpu_start) = (Instant::now(), cpu_time());
    s.engine
        .deploy(manifest, &plugin("projection_totals"))
        .expect("deploy");
    let deployed = start.elapsed();
    let took = wait_caught_up(&s.engine, "totals", Duration::from_secs(1800)) + deployed;
    let took_cpu = cpu_time() - cpu_start;
    // Check against the native fold.
    let mut checked = 0;
    for (customer, (count, sum)) in totals.iter().take(100) {
        let v = s
            .engine
            .pond_get("totals", customer.as_bytes())
            .expect("get")
            .expect("present");
        let v: serde_json::Value = serde_json::from_slice(&v).expect("json");
        assert_eq!(
            (v["count"].as_u64(), v["sum"].as_i64()),
            (Some(*count), Some(*sum))
        );
        checked += 1;
    }
    let status = s.engine.inspect("totals").expect("inspect");
    println!(
        "replay count+sum projection, {n} events from offset 0 to caught up ({checked} keys verified):"
    );
    println!(
        "  weir projection (deploy → caught up)   : {:>8.3} s  {}  CPU {:.3} s  ({} store commits, {} batches re-applied, max_batch {})",
        took.as_secs_f64(),
        rate(n, took),
        took_cpu.as_secs_f64(),
        status.metrics.commits,
        status.metrics.reapplied,
        replay_batch.map_or("default".to_string(), |b| b.to_string())
    );
    println!(
        "  plugin alone, 1 thread (memory state)  : {:>8.3} s  {}  CPU {:.3} s",
        alone.as_secs_f64(),
        rate(n, alone),
        alone_cpu.as_secs_f64()
    );
    println!(
        "  native fold, 1 thread (ref.)           : {:>8.3} s  {}  CPU {:.3} s",
        native.as_secs_f64(),
        rate(n, native),
        native_cpu.as_secs_f64()
    );
    println!(
        "  native fold, thread per partition (ref.): {:>8.3} s  {}  CPU {:.3} s",
        native_par.as_secs_f64(),
        rate(n, native_par),
        native_par_cpu.as_secs_f64()
    );
    println!(
        "  ratio weir / native: {:.2}x (1 thread), {:.2}x (thread per partition)",
        took.as_secs_f64() / native.as_secs_f64(),
        took.as_secs_f64() / native_par.as_secs_f64()
    );
    let projected = took.as_secs_f64() * 20_000_000.0 / n as f64;
    println!("  20 M events at this rate: {projected:.1} s (target ≤ 10 s)");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn bench_commands(runtime: &Runtime, n: usize, fsync: FsyncPolicy) {
    let s = setup(fsync, runtime);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let manifest = serde_json::json!({"name": "bank", "kind": "command-handler", "partitions": 2});
    s.engine
        .deploy(manifest, &plugin("command_bank"))
        .expect("deploy");
    let accounts = 100;
    let engine = Arc::new(s.engine);
    let cmd = |id: String, account: usize, name: &str, data: serde_json::Value| CommandRequest {
        id,
        aggregate: format!("acc-{account}"),
        name: name.into(),
        data: data.to_string().into_bytes(),
        expected_version: None,
        reply_topic: None,
    };
    let wait = Duration::from_secs(60);
    for a in 0..accounts {
        let out = tokio
            .block_on(engine.submit_and_wait(
                "bank",
                cmd(
                    format!("open-{a}"),
                    a,
                    "open",
                    serde_json::json!({"owner": "o"}),
                ),
                wait,
            ))
            .expect("open");
        assert!(matches!(out, CommandOutcome::Applied { .. }), "{out:?}");
    }
    // Latency: one command at a time, submit → applied.
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let out = tokio
            .block_on(engine.submit_and_wait(
                "bank",
                cmd(
                    format!("seq-{i}"),
                    i % accounts,
                    "deposit",
                    serde_json::json!({"amount": 1}),
                ),
                wait,
            ))
            .expect("deposit");
        latencies.push(start.elapsed());
        assert!(matches!(out, CommandOutcome::Applied { .. }), "{out:?}");
    }
    latencies.sort();
    // Throughput: 256 commands in flight.
    let total = n * 4;
    let start = Instant::now();
    tokio.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        let inflight = Arc::new(tokio::sync::Semaphore::new(256));
        for i in 0..total {
            let permit = inflight.clone().acquire_owned().await.expect("semaphore");
            let engine = engine.clone();
            let c = cmd(
                format!("par-{i}"),
                i % accounts,
                "deposit",
                serde_json::json!({"amount": 1}),
            );
            set.spawn(async move {
                let out = engine
                    .submit_and_wait("bank", c, wait)
                    .await
                    .expect("deposit");
                drop(permit);
                assert!(matches!(out, CommandOutcome::Applied { .. }), "{out:?}");
            });
        }
        while set.join_next().await.is_some() {}
    });
    let took = start.elapsed();
    println!("command handler (bank), fsync {fsync}:");
    println!(
        "  sequential submit→applied: p50 {:?}  p99 {:?}  ({n} commands)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "  256 in flight: {total} commands in {:.2} s = {:.0} commands/s",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::var("WEIR_BENCH_QUICK").is_ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        pool: Some(PoolConfig::for_instances(64)),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let enrich_n = env_usize(
        "WEIR_BENCH_ENRICH_EVENTS",
        if quick { 200_000 } else { 2_000_000 },
    );
    let replay_n = env_usize(
        "WEIR_BENCH_REPLAY_EVENTS",
        if quick { 1_000_000 } else { 20_000_000 },
    );
    // Unset: the engine's default (large batches while catching up).
    let replay_batch = std::env::var("WEIR_BENCH_REPLAY_BATCH")
        .ok()
        .and_then(|v| v.parse().ok());
    let commands = env_usize("WEIR_BENCH_COMMANDS", if quick { 500 } else { 2_000 });
    // WEIR_BENCH_ONLY=replay (or enricher, commands) runs one section.
    let only = std::env::var("WEIR_BENCH_ONLY").ok();
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);
    if run("enricher") {
        bench_enricher(&runtime, enrich_n);
    }
    if run("replay") {
        bench_replay(&runtime, replay_n, replay_batch);
    }
    if run("commands") {
        bench_commands(&runtime, commands, FsyncPolicy::Never);
        bench_commands(&runtime, commands / 4, FsyncPolicy::Always);
    }
}
