//! Cluster backend benchmark: appends and reads through `JetStreamLog` on a
//! three-node NATS JetStream cluster (R3, loopback), beside the raw
//! JetStream client doing the same publishes and the embedded log doing the
//! same appends, all measured in the same run. Also prints the CPU each side
//! spends per record: this process (the weir host's log client) and the sum
//! of the three `nats-server` processes.
//!
//! Run: `cargo bench -p weir-host --bench cluster`
//! (`WEIR_BENCH_QUICK=1`: 1 s per configuration instead of 4 s).
//! Needs `nats-server` (guest-sdk/install-toolchains.sh nats).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use jetstream_extra::batch_publish::BatchPublishExt;
use weir::batch::Record;
use weir::log::jetstream::{JetStreamLog, NatsConfig};
use weir::log::{EventLog, FsyncPolicy, Log, LogConfig, TopicConfig};
use weir_testkit::cpu;
use weir_testkit::nats::NatsCluster;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const RECORD_BYTES: usize = 200;

fn record(i: u64) -> Record {
    let mut value = format!("{{\"n\":{i},\"pad\":\"").into_bytes();
    value.resize(RECORD_BYTES - 2, b'x');
    value.extend_from_slice(b"\"}");
    Record {
        key: format!("k{}", i % 1000).into_bytes(),
        value,
        headers: vec![],
        timestamp: 0,
    }
}

struct Measured {
    records_per_s: f64,
    host_cpu_us: f64,
    nats_cpu_us: f64,
}

/// Run `work` (returning records done per call) on `threads` threads for `budget`.
fn measure(
    threads: usize,
    budget: Duration,
    work: Arc<dyn Fn(u64) -> BenchResult<u64> + Send + Sync>,
) -> BenchResult<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (cpu0, nats0) = (cpu::own(), cpu::of_command("nats-server"));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, done, work) = (stop.clone(), done.clone(), work.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut i = t as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let n = work(i).map_err(|e| e.to_string())?;
                    i += n;
                    done.fetch_add(n, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(budget);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().map_err(|_| "bench thread panicked")??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed).max(1) as f64;
    Ok(Measured {
        records_per_s: n / elapsed,
        host_cpu_us: (cpu::own() - cpu0) / n * 1e6,
        nats_cpu_us: (cpu::of_command("nats-server") - nats0) / n * 1e6,
    })
}

fn row(name: &str, m: &Measured, reference: Option<f64>) {
    let ratio = reference.map_or(String::new(), |r| {
        let x = m.records_per_s / r;
        if x < 0.1 {
            format!("{x:>7.4}x")
        } else {
            format!("{x:>7.2}x")
        }
    });
    println!(
        "{name:<48} {:>10.0} rec/s {ratio:>8}   host CPU {:>6.1} µs/rec   NATS CPU {:>6.1} µs/rec",
        m.records_per_s, m.host_cpu_us, m.nats_cpu_us
    );
}

fn main() -> BenchResult<()> {
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some();
    let budget = Duration::from_secs(if quick { 1 } else { 4 });
    let cluster = NatsCluster::start(3);
    let servers: Vec<String> = cluster.urls().split(',').map(String::from).collect();
    let log = Arc::new(JetStreamLog::open(&NatsConfig::new(servers.clone()))?);
    println!(
        "3-node NATS JetStream cluster on loopback, R3, {RECORD_BYTES}-byte records, {} s per row, {} cores",
        budget.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // The raw client: the same publishes without weir around them.
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
    );
    let js = rt.block_on(async {
        let client = async_nats::connect(servers[0].as_str()).await?;
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: "raw".into(),
            subjects: vec!["raw".into()],
            num_replicas: 3,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await?;
        Ok::<_, Box<dyn std::error::Error>>(js)
    })?;
    let payload = bytes::Bytes::from(record(0).value);

    let dir = tempfile::tempdir()?;
    let mut embedded_config = LogConfig::new(dir.path());
    embedded_config.default_fsync = FsyncPolicy::Always;
    let embedded = Arc::new(Log::open(embedded_config)?);

    for topic in ["single", "batched"] {
        log.create_topic(topic, TopicConfig::with_partitions(1))?;
        embedded.create_topic(topic, TopicConfig::with_partitions(1))?;
    }

    for (threads, label) in [(1, "1 appender"), (32, "32 appenders")] {
        println!("\n1 record per append, {label}:");
        let raw = {
            let (rt, js, payload) = (rt.clone(), js.clone(), payload.clone());
            measure(
                threads,
                budget,
                Arc::new(move |_| {
                    rt.block_on(async {
                        js.publish("raw", payload.clone()).await?.await?;
                        Ok::<_, Box<dyn std::error::Error>>(1)
                    })
                }),
            )?
        };
        row("reference: raw JetStream publish + ack", &raw, None);
        let weir_js = {
            let log = log.clone();
            measure(
                threads,
                budget,
                Arc::new(move |i| Ok(log.append("single", 0, &[record(i)])?.count as u64)),
            )?
        };
        row("JetStreamLog::append", &weir_js, Some(raw.records_per_s));
        let weir_local = {
            let log = embedded.clone();
            measure(
                threads,
                budget,
                Arc::new(move |i| Ok(log.append("single", 0, &[record(i)])?.count as u64)),
            )?
        };
        row(
            "embedded Log::append (fsync always)",
            &weir_local,
            Some(raw.records_per_s),
        );
    }

    for (threads, label) in [(1, "1 appender"), (8, "8 appenders")] {
        println!("\n100 records per append, {label}:");
        let raw = {
            let (rt, js, payload) = (rt.clone(), js.clone(), payload.clone());
            measure(
                threads,
                budget,
                Arc::new(move |_| {
                    rt.block_on(async {
                        let mut batch = js.batch_publish().build();
                        for _ in 0..99 {
                            batch.add("raw", payload.clone()).await?;
                        }
                        batch.commit("raw", payload.clone()).await?;
                        Ok::<_, Box<dyn std::error::Error>>(100)
                    })
                }),
            )?
        };
        row("reference: raw JetStream atomic batch", &raw, None);
        let weir_js = {
            let log = log.clone();
            measure(
                threads,
                budget,
                Arc::new(move |i| {
                    let batch: Vec<Record> = (i..i + 100).map(record).collect();
                    Ok(log.append("batched", 0, &batch)?.count as u64)
                }),
            )?
        };
        row("JetStreamLog::append", &weir_js, Some(raw.records_per_s));
        let weir_local = {
            let log = embedded.clone();
            measure(
                threads,
                budget,
                Arc::new(move |i| {
                    let batch: Vec<Record> = (i..i + 100).map(record).collect();
                    Ok(log.append("batched", 0, &batch)?.count as u64)
                }),
            )?
        };
        row(
            "embedded Log::append (fsync always)",
            &weir_local,
            Some(raw.records_per_s),
        );
    }

    println!("\nreads, 1000 records per call, one reader:");
    let read_rate = |log: Arc<dyn EventLog>| -> BenchResult<Measured> {
        let end = log.end_offset("batched", 0)?;
        let at = Arc::new(AtomicU64::new(0));
        measure(
            1,
            budget,
            Arc::new(move |_| {
                let from = at.load(Ordering::Relaxed);
                let batch = log.read("batched", 0, from, 1000, 1 << 20)?;
                let next = batch.offsets.last().map_or(0, |o| o + 1);
                at.store(if next >= end { 0 } else { next }, Ordering::Relaxed);
                Ok(batch.len() as u64)
            }),
        )
    };
    let local = read_rate(embedded.clone())?;
    row("embedded Log::read", &local, None);
    let remote = read_rate(log.clone())?;
    row(
        "JetStreamLog::read (ordered consumer)",
        &remote,
        Some(local.records_per_s),
    );
    embedded.close()?;
    Ok(())
}
