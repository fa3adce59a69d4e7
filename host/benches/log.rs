//! Log throughput benchmark: append and read rates of the embedded log,
//! each printed beside the same machine's raw sequential file write
//! (write + fdatasync) and read, measured in the same run.
//!
//! Run: `cargo bench -p weir-host --bench log`
//! Quick mode (about a tenth of the volume): `WEIR_BENCH_QUICK=1`.
//! Data goes to a temporary directory under `WEIR_BENCH_DIR` (default: the system temp dir).
//! One table only: `WEIR_BENCH_ONLY=append` (one appender, every size, batch
//! and policy) or `WEIR_BENCH_ONLY=concurrent` (1 vs 64 appenders);
//! `WEIR_BENCH_SIZES=100` / `WEIR_BENCH_BATCHES=1000` limit the append
//! table to some record sizes / batch sizes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::batch::Record;
use weir::log::{EventLog, FsyncPolicy, Log, LogConfig, TopicConfig};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Scale {
    /// Bytes of payload per append configuration.
    bytes: u64,
    /// Time budget per configuration.
    budget: Duration,
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Raw sequential write of `total` bytes in 1 MiB writes, then fdatasync.
fn raw_write(dir: &Path, total: u64) -> BenchResult<(f64, f64)> {
    let path = dir.join("raw.bin");
    let buf = vec![0x5au8; 1 << 20];
    let t0 = Instant::now();
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let mut written = 0;
    while written < total {
        f.write_all(&buf)?;
        written += buf.len() as u64;
    }
    f.sync_data()?;
    let write = mbps(written, t0.elapsed());
    let t0 = Instant::now();
    let mut f = File::open(&path)?;
    let mut read_buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut read_buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let read_rate = mbps(read, t0.elapsed());
    std::fs::remove_file(&path)?;
    Ok((write, read_rate))
}

/// Mean latency of a 4 KiB write + fdatasync.
fn raw_fsync_latency(dir: &Path) -> BenchResult<Duration> {
    let path = dir.join("fsync.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let buf = [1u8; 4096];
    let n = 20;
    let t0 = Instant::now();
    for _ in 0..n {
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    std::fs::remove_file(&path)?;
    Ok(t0.elapsed() / n)
}

fn records(n: usize, size: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Vec::new(),
            value: vec![b'a' + (i % 26) as u8; size],
            headers: Vec::new(),
            timestamp: i as i64,
        })
        .collect()
}

struct AppendRun {
    records: u64,
    elapsed: Duration,
}

/// Append batches from `threads` threads until the byte volume or the time budget is used.
fn append_run(
    log: &Arc<Log>,
    topic: &str,
    size: usize,
    batch: usize,
    threads: usize,
    scale: &Scale,
) -> BenchResult<AppendRun> {
    let batch_records = Arc::new(records(batch, size));
    let per_thread_batches = (scale.bytes / (size * batch) as u64 / threads as u64).max(1);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let log = log.clone();
            let recs = batch_records.clone();
            let topic = topic.to_string();
            let budget = scale.budget;
            std::thread::spawn(move || -> Result<u64, String> {
                let mut n = 0u64;
                for i in 0..per_thread_batches {
                    log.append(&topic, 0, &recs).map_err(|e| e.to_string())?;
                    n += recs.len() as u64;
                    if i % 16 == 0 && t0.elapsed() > budget {
                        break;
                    }
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "appender panicked")??;
    }
    log.flush()?;
    Ok(AppendRun {
        records: total,
        elapsed: t0.elapsed(),
    })
}

fn read_all(log: &Log, topic: &str) -> BenchResult<(u64, u64, Duration)> {
    let end = log.end_offset(topic, 0)?;
    let t0 = Instant::now();
    let mut from = 0;
    let mut n = 0u64;
    let mut bytes = 0u64;
    while from < end {
        let b = log.read(topic, 0, from, 10_000, 16 << 20)?;
        n += b.len() as u64;
        bytes += b.payload_bytes() as u64;
        from = b.offsets.last().map_or(end, |o| o + 1);
    }
    Ok((n, bytes, t0.elapsed()))
}

/// A comma-separated list of numbers from the environment, or `default`.
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name).ok().map_or_else(
        || default.to_vec(),
        |v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
    )
}

fn policy_name(p: FsyncPolicy) -> String {
    p.to_string()
}

fn main() -> BenchResult<()> {
    let quick = std::env::var("WEIR_BENCH_QUICK").is_ok_and(|v| v != "0");
    let scale = if quick {
        Scale {
            bytes: 20 << 20,
            budget: Duration::from_millis(400),
        }
    } else {
        Scale {
            bytes: 200 << 20,
            budget: Duration::from_millis(2500),
        }
    };
    let base = std::env::var_os("WEIR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let tmp = tempfile::tempdir_in(base)?;
    let (raw_w, raw_r) = raw_write(tmp.path(), scale.bytes.max(64 << 20))?;
    let fsync_lat = raw_fsync_latency(tmp.path())?;
    println!(
        "log benchmark ({} mode), data in {}",
        if quick { "quick" } else { "full" },
        tmp.path().display()
    );
    println!(
        "reference: raw sequential write+fdatasync {raw_w:.0} MB/s, raw read {raw_r:.0} MB/s, 4 KiB write+fdatasync {:.2} ms",
        fsync_lat.as_secs_f64() * 1e3
    );
    println!();

    let mut cfg = LogConfig::new(tmp.path().join("log"));
    cfg.default_fsync = FsyncPolicy::Never;
    let log = Arc::new(Log::open(cfg)?);
    let policies = [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(50)),
        FsyncPolicy::Always,
    ];

    println!("append, 1 appender (payload MB/s vs raw write {raw_w:.0} MB/s)");
    println!(
        "{:>6} {:>6} {:>14} {:>14} {:>10} {:>8}",
        "size", "batch", "fsync", "records/s", "MB/s", "vs raw"
    );
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_default();
    let sizes = env_list("WEIR_BENCH_SIZES", &[100, 1024]);
    let batches = env_list("WEIR_BENCH_BATCHES", &[1, 100, 1000]);
    let mut topic_id = 0;
    let append_sizes = if only.is_empty() || only == "append" {
        sizes
    } else {
        Vec::new()
    };
    for size in append_sizes {
        for &batch in &batches {
            for policy in policies {
                topic_id += 1;
                let topic = format!("a{topic_id}");
                let tc = TopicConfig {
                    fsync: Some(policy),
                    segment_bytes: 256 << 20,
                    ..TopicConfig::default()
                };
                log.create_topic(&topic, tc)?;
                let run = append_run(&log, &topic, size, batch, 1, &scale)?;
                let rate = run.records as f64 / run.elapsed.as_secs_f64();
                let mb = mbps(run.records * size as u64, run.elapsed);
                println!(
                    "{size:>6} {batch:>6} {:>14} {rate:>14.0} {mb:>10.1} {:>7.0}%",
                    policy_name(policy),
                    mb / raw_w * 100.0
                );
                if policy == FsyncPolicy::Never && batch == 1000 {
                    let (n, bytes, d) = read_all(&log, &topic)?;
                    println!(
                        "{:>6} {:>6} {:>14} {:>14.0} {:>10.1} {:>7.0}%   <- sequential read (vs raw read {raw_r:.0} MB/s)",
                        size,
                        "read",
                        "",
                        n as f64 / d.as_secs_f64(),
                        mbps(bytes, d),
                        mbps(bytes, d) / raw_r * 100.0
                    );
                }
                log.delete_topic(&topic)?;
            }
        }
    }

    println!();
    println!("concurrent appenders, 100-byte records, batch 1");
    println!(
        "{:>14} {:>8} {:>14} {:>10}",
        "fsync", "threads", "records/s", "vs 1"
    );
    let concurrent_policies = if only.is_empty() || only == "concurrent" {
        vec![FsyncPolicy::Always, FsyncPolicy::Never]
    } else {
        Vec::new()
    };
    for policy in concurrent_policies {
        let mut one = 0.0;
        for threads in [1usize, 64] {
            topic_id += 1;
            let topic = format!("c{topic_id}");
            log.create_topic(
                &topic,
                TopicConfig {
                    fsync: Some(policy),
                    ..TopicConfig::default()
                },
            )?;
            let run = append_run(&log, &topic, 100, 1, threads, &scale)?;
            let rate = run.records as f64 / run.elapsed.as_secs_f64();
            if threads == 1 {
                one = rate;
            }
            println!(
                "{:>14} {threads:>8} {rate:>14.0} {:>9.1}x",
                policy_name(policy),
                rate / one
            );
            log.delete_topic(&topic)?;
        }
    }
    log.close()?;
    Ok(())
}
