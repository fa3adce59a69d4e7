//! The soak: a release `weir serve` under keyed produce, commands and a
//! misbehaving plugin for a while, printing the server's RSS as it goes.
//! Bounded memory is the point: RSS at the end should be near RSS after
//! warm-up, whatever the duration.
//!
//! ```sh
//! cargo build --release -p weir-host
//! cargo run --release -p weir-testkit --bin soak -- [minutes=10] [path/to/weir]
//! ```
//!
//! `WEIR_SOAK_LOADS=produce,commands,chaos` (the default: all three) picks
//! the loads, to see which one memory follows.
//!
//! Not part of the test suite (it runs for minutes); see BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

/// What the misbehaving enricher is fed, in turn: panics, timeouts,
/// memory bombs, floods of stderr, oversized output, and good events.
const MISBEHAVIOUR: [&str; 8] = [
    "panic", "ok", "loop", "shout", "memory", "huge", "fail", "ok",
];

/// Resident memory of a process in MiB (Linux): all of it, the part it
/// allocated (`RssAnon`: heap, stacks, WebAssembly memories) and the part
/// that is mapped files (`RssFile`: the binary and log segments being read,
/// pages the kernel can drop and read back).
#[derive(Clone, Copy)]
struct Rss {
    total: f64,
    anon: f64,
    file: f64,
}

fn rss(pid: u32) -> Rss {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

fn setup(s: &Server) {
    s.create_topic("orders", 4);
    s.create_topic("chaos", 2);
    let bank = json!({"name": "bank", "kind": "command-handler", "partitions": 4});
    let r = s.deploy(&bank, &plugin_bytes("command_bank"));
    assert_eq!(r.status, 201, "deploy bank: {}", r.json);
    let faulty = json!({
        "name": "faulty", "kind": "enricher", "inputs": ["chaos"], "outputs": ["chaos.out"],
        "retries": 1, "retry_backoff_ms": 10, "error_policy": "dlq",
        "limits": {"timeout_ms": 200, "memory_mb": 64}
    });
    let r = s.deploy(&faulty, &plugin_bytes("faulty"));
    assert_eq!(r.status, 201, "deploy faulty: {}", r.json);
}

/// Keyed produce with a fresh Idempotency-Key per request (every tenth is
/// a retry of the one before), batches of 20 records.
fn producer(s: &Server, stop: &AtomicBool, sent: &AtomicU64, worker: u64) {
    let mut i = 0u64;
    let mut last: Option<(String, String)> = None;
    while !stop.load(Ordering::Relaxed) {
        // Every tenth request is a client's retry of the one before.
        let (key, body, fresh) = match last.take() {
            Some((key, body)) if i % 10 == 9 => (key, body, false),
            _ => {
                let records: Vec<Value> = (0..20)
                    .map(
                        |n| json!({"key": format!("c{}", (i + n) % 97), "value": {"i": i, "n": n}}),
                    )
                    .collect();
                let body = json!({"records": records}).to_string();
                (format!("w{worker}-{i}"), body, true)
            }
        };
        let r = s.request(
            "POST",
            "/topics/orders/records",
            Some(("application/json", body.as_bytes())),
            &[("idempotency-key", &key)],
        );
        assert_eq!(r.status, 200, "produce: {}", r.json);
        if fresh {
            sent.fetch_add(20, Ordering::Relaxed);
        }
        last = Some((key, body));
        i += 1;
    }
}

fn commander(s: &Server, stop: &AtomicBool, sent: &AtomicU64, worker: u64) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let account = format!("acc-{worker}-{}", i % 500);
        let (name, data) = if i < 500 {
            ("open", json!({"owner": account}))
        } else {
            ("deposit", json!({"amount": 1 + i % 50}))
        };
        let r = s.post_json(
            "/services/bank/commands",
            &json!({"aggregate": account, "name": name, "data": data}),
        );
        assert_eq!(r.status, 202, "command: {}", r.json);
        sent.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

fn chaos(s: &Server, stop: &AtomicBool, sent: &AtomicU64) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let what = MISBEHAVIOUR[i % MISBEHAVIOUR.len()];
        let r = s.request(
            "POST",
            &format!("/topics/chaos/records?key=k{i}"),
            Some(("application/octet-stream", what.as_bytes())),
            &[],
        );
        assert_eq!(r.status, 200, "chaos: {}", r.json);
        sent.fetch_add(1, Ordering::Relaxed);
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let minutes: f64 = args.next().and_then(|m| m.parse().ok()).unwrap_or(10.0);
    let bin = args.next().unwrap_or_else(|| {
        weir_testkit::languages::repo_root()
            .join("target/release/weir")
            .display()
            .to_string()
    });
    let mut server = Server::start(&bin, &["--fsync", "interval:50"]);
    let pid = server.pid().expect("running server");
    setup(&server);
    let stop = AtomicBool::new(false);
    let (produced, commands, chaotic) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let warmup = Duration::from_secs(30).min(duration / 4);
    println!("soak: {minutes} min against {bin} (pid {pid})");
    println!(
        "{:>8} {:>10} {:>9} {:>9} {:>12} {:>10} {:>8}",
        "elapsed", "rss_mib", "anon", "file", "produced", "commands", "chaos"
    );
    let mut samples = Vec::new();
    let loads =
        std::env::var("WEIR_SOAK_LOADS").unwrap_or_else(|_| "produce,commands,chaos".into());
    std::thread::scope(|scope| {
        for w in 0..2 {
            let (s, stop, sent) = (&server, &stop, &produced);
            if loads.contains("produce") {
                scope.spawn(move || producer(s, stop, sent, w));
            }
        }
        for w in 0..2 {
            let (s, stop, sent) = (&server, &stop, &commands);
            if loads.contains("commands") {
                scope.spawn(move || commander(s, stop, sent, w));
            }
        }
        if loads.contains("chaos") {
            let (s, stop, sent) = (&server, &stop, &chaotic);
            scope.spawn(move || chaos(s, stop, sent));
        }
        let started = Instant::now();
        let mut next = warmup;
        while started.elapsed() < duration {
            std::thread::sleep(Duration::from_millis(250));
            if started.elapsed() >= next {
                let now = rss(pid);
                samples.push(now);
                println!(
                    "{:>7.0}s {:>10.1} {:>9.1} {:>9.1} {:>12} {:>10} {:>8}",
                    started.elapsed().as_secs_f64(),
                    now.total,
                    now.anon,
                    now.file,
                    produced.load(Ordering::Relaxed),
                    commands.load(Ordering::Relaxed),
                    chaotic.load(Ordering::Relaxed)
                );
                next += Duration::from_secs(60).min(duration / 10);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let end = rss(pid);
    let start = samples.first().copied().unwrap_or(end);
    let peak = samples.iter().map(|s| s.total).fold(end.total, f64::max);
    let cache = server.get("/metrics");
    let cache_bytes = String::from_utf8_lossy(&cache.bytes)
        .lines()
        .find(|l| l.starts_with("weir_idempotency_cache_bytes "))
        .map(str::to_owned)
        .unwrap_or_default();
    println!(
        "soak done: rss after warm-up {:.1} MiB (anon {:.1}, file {:.1}), at the end {:.1} MiB (anon {:.1}, file {:.1}; peak {peak:.1}), growth {:+.1} MiB; {cache_bytes}",
        start.total,
        start.anon,
        start.file,
        end.total,
        end.anon,
        end.file,
        end.total - start.total
    );
    println!(
        "sent {} records, {} commands, {} chaos events",
        produced.load(Ordering::Relaxed),
        commands.load(Ordering::Relaxed),
        chaotic.load(Ordering::Relaxed)
    );
    let status = server.stop();
    assert!(status.success(), "weir exited with {status:?}");
}
