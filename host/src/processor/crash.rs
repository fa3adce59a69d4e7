//! Crash harness: a child process runs an enricher + projection + command
//! handler pipeline over a generated workload (in-process engine, fsync
//! `always`); the parent SIGKILLs it at random moments, restarts it, and
//! finally checks that
//! - every acknowledged produce survived (fsync `always`);
//! - each input's effect is in the enricher's output exactly once;
//! - the pond equals a from-scratch fold of its input;
//! - every aggregate's versions are contiguous, and no command was applied twice;
//! - every command in the commands topic has a result.
//!
//! CI runs 30 cycles; a soak runs more:
//!
//!   WEIR_CRASH_CYCLES=500 cargo test -p weir-host --lib processor::crash::crash_harness -- --nocapture
//!
//! The child is this test binary re-run on the `crash_worker` test with
//! `WEIR_CRASH_DIR` set: an in-process engine with no HTTP in between. The
//! real binary has its own harness (`tests/e2e/crash.rs`, which kills
//! `weir serve` only once it answered `/healthz`); this one stays because it
//! is cheap (no server start, no HTTP) and its kills also land where that
//! one's cannot: while the engine opens (log recovery, store open, processor
//! recovery), before anything could be served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use super::shared::now_ms;
use super::tests::header;
use super::*;
use crate::batch::Record;
use crate::log::{EventLog, FsyncPolicy, Log, LogConfig, LogError, TopicConfig};
use crate::runtime::{PoolConfig, Runtime, RuntimeConfig};

const ACCOUNTS: u64 = 20;
const CUSTOMERS: u64 = 50;

fn open(dir: &Path) -> (Arc<Log>, Engine) {
    let mut lc = LogConfig::new(dir.join("log"));
    lc.default_fsync = FsyncPolicy::Always;
    let log = Arc::new(Log::open(lc).expect("open log"));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        pool: Some(PoolConfig::for_instances(32)),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let mut config = EngineConfig::new(dir.join("data"), FsyncPolicy::Always);
    config.idle_wait = Duration::from_millis(20);
    config.commit_interval = Duration::from_millis(20);
    let engine = Engine::open(config, log.clone(), runtime).expect("open engine");
    (log, engine)
}

fn ensure_pipeline(log: &Log, engine: &Engine) {
    if matches!(log.topic("orders"), Err(LogError::UnknownTopic(_))) {
        log.create_topic("orders", TopicConfig::with_partitions(2))
            .expect("orders");
    }
    let deployed: HashSet<String> = engine.list().into_iter().map(|s| s.name).collect();
    let deploy = |manifest: serde_json::Value, plugin: &str| {
        engine
            .deploy(manifest, &weir_testkit::plugins::plugin_bytes(plugin))
            .expect("deploy");
    };
    if !deployed.contains("enrich") {
        deploy(
            json!({"name": "enrich", "kind": "enricher", "inputs": ["orders"], "outputs": ["orders.enriched"]}),
            "enricher_orders",
        );
    }
    if !deployed.contains("totals") {
        deploy(
            json!({"name": "totals", "kind": "projection", "inputs": ["orders"]}),
            "projection_totals",
        );
    }
    if !deployed.contains("bank") {
        deploy(
            json!({"name": "bank", "kind": "command-handler", "partitions": 2}),
            "command_bank",
        );
    }
}

/// Every visible record of a topic.
fn read_all(log: &Log, topic: &str) -> Vec<Record> {
    super::tests::read_topic(log, topic)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

fn order_id(value: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(value).expect("order json");
    v["id"]
        .as_str()
        .and_then(|s| s.strip_prefix('o'))
        .and_then(|s| s.parse().ok())
        .expect("order id")
}

/// The child: produce orders and commands until killed (or, with
/// `WEIR_CRASH_FINISH`, until every processor has caught up).
#[test]
#[ignore = "run by crash_harness in a child process"]
fn crash_worker() {
    let Some(dir) = std::env::var_os("WEIR_CRASH_DIR").map(PathBuf::from) else {
        return;
    };
    let finish = std::env::var_os("WEIR_CRASH_FINISH").is_some();
    let (log, engine) = open(&dir);
    ensure_pipeline(&log, &engine);
    std::fs::write(dir.join("ready"), b"").expect("ready marker");
    if finish {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let all = engine.list();
            if all.len() == 3
                && all
                    .iter()
                    .all(|s| s.lag() == 0 && s.state == RunState::Running)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pipeline did not catch up: {all:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    // Continue after the highest order id the log holds (the log is the truth).
    let mut next_order = read_all(&log, "orders")
        .iter()
        .map(|r| order_id(&r.value) + 1)
        .max()
        .unwrap_or(0);
    let mut next_command = read_all(&log, "bank.commands")
        .iter()
        .filter_map(|r| {
            header(r, headers::COMMAND_ID)?
                .strip_prefix("cmd-")?
                .parse::<u64>()
                .ok()
        })
        .map(|k| k + 1)
        .max()
        .unwrap_or(0);
    let acks_path = dir.join("acks");
    // A kill can tear the last line: start ours on a fresh one.
    let torn = std::fs::read(&acks_path).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n'));
    let mut acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&acks_path)
        .expect("acks");
    if torn {
        acks.write_all(b"\n").expect("ack");
    }
    loop {
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        for _ in 0..10 {
            let customer = format!("c{}", next_order % CUSTOMERS);
            let value = json!({"id": format!("o{next_order}"), "customer": customer, "amount": next_order % 100 + 1});
            let p = log
                .partition_for("orders", customer.as_bytes())
                .expect("partition");
            by_partition.entry(p).or_default().push(Record {
                key: customer.into_bytes(),
                value: value.to_string().into_bytes(),
                headers: vec![],
                timestamp: now_ms(),
            });
            next_order += 1;
        }
        for (p, records) in by_partition {
            log.append("orders", p, &records).expect("append");
            let ids: Vec<String> = records
                .iter()
                .map(|r| order_id(&r.value).to_string())
                .collect();
            // One write per line: a kill leaves a whole line or a torn last one.
            acks.write_all(format!("{}\n", ids.join(" ")).as_bytes())
                .expect("ack");
        }
        acks.sync_data().expect("sync acks");
        // Commands: the first for an account opens it; retry the previous id
        // now and then (a retried id must not act twice).
        let k = next_command;
        let account = k % ACCOUNTS;
        let (name, data) = if k < ACCOUNTS {
            ("open", json!({"owner": "o"}))
        } else {
            ("deposit", json!({"amount": 1}))
        };
        let request = |id: u64| CommandRequest {
            id: format!("cmd-{id}"),
            aggregate: format!("acc-{account}"),
            name: name.into(),
            data: data.to_string().into_bytes(),
            expected_version: None,
            reply_topic: None,
        };
        engine.submit("bank", &request(k)).expect("submit");
        if k % 7 == 3 {
            engine.submit("bank", &request(k)).expect("resubmit");
        }
        next_command += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn spawn_worker(dir: &Path, finish: bool) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "processor::crash::crash_worker",
        "--exact",
        "--ignored",
        "--test-threads=1",
    ])
    .env("WEIR_CRASH_DIR", dir)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if finish {
        cmd.env("WEIR_CRASH_FINISH", "1");
    }
    cmd.spawn().expect("spawn worker")
}

fn kill(child: &mut Child) {
    // SIGKILL: no destructor, no flush, no commit runs.
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn crash_harness() {
    let cycles: usize = std::env::var("WEIR_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rng();
    for cycle in 0..cycles {
        let mut child = spawn_worker(dir.path(), false);
        if cycle == 0 {
            // The first run compiles the plugins and deploys the pipeline:
            // let it get that far once (later kills land anywhere, start-up included).
            let deadline = Instant::now() + Duration::from_secs(300);
            while !dir.path().join("ready").exists() {
                assert!(Instant::now() < deadline, "the worker never got ready");
                assert!(
                    !matches!(child.try_wait(), Ok(Some(_))),
                    "the worker died while starting"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(100..900)));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("worker exited on its own ({status}): {err}");
        }
        kill(&mut child);
    }
    let mut child = spawn_worker(dir.path(), true);
    let status = child.wait().expect("wait");
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("final worker failed: {err}");
    }
    check(dir.path(), cycles);
}

fn check(dir: &Path, cycles: usize) {
    let (log, engine) = open(dir);
    // Every acknowledged produce survived; order ids are unique.
    let orders = read_all(&log, "orders");
    let ids: Vec<u64> = orders.iter().map(|r| order_id(&r.value)).collect();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no order was produced twice");
    let acks = std::fs::read_to_string(dir.join("acks")).unwrap_or_default();
    let mut acked = 0;
    // A torn line (no newline; the next run started a fresh one) was never acknowledged.
    let complete = acks.rsplit_once('\n').map_or("", |(whole, _)| whole);
    for line in complete.lines() {
        for id in line
            .split_whitespace()
            .filter_map(|s| s.parse::<u64>().ok())
        {
            assert!(unique.contains(&id), "acknowledged order {id} was lost");
            acked += 1;
        }
    }
    // Enricher: each order's effect exactly once.
    let enriched = read_all(&log, "orders.enriched");
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for r in &enriched {
        *seen.entry(order_id(&r.value)).or_default() += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "an order was enriched twice"
    );
    assert_eq!(seen.len(), unique.len(), "every order enriched");
    // Pond: equals a fold from scratch.
    let mut want: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for r in &orders {
        let v: serde_json::Value = serde_json::from_slice(&r.value).expect("json");
        let e = want
            .entry(v["customer"].as_str().expect("customer").to_string())
            .or_default();
        e.0 += 1;
        e.1 += v["amount"].as_i64().expect("amount");
    }
    for (customer, (count, sum)) in &want {
        let got = engine
            .pond_get("totals", customer.as_bytes())
            .expect("get")
            .expect("present");
        let got: serde_json::Value = serde_json::from_slice(&got).expect("json");
        assert_eq!(
            (got["count"].as_u64(), got["sum"].as_i64()),
            (Some(*count), Some(*sum)),
            "pond {customer}"
        );
    }
    // Service: contiguous versions, no command applied twice, every command answered.
    let events = read_all(&log, "bank.events");
    let mut versions: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
    let mut applied: HashMap<String, u32> = HashMap::new();
    for e in &events {
        let v = header(e, headers::VERSION)
            .and_then(|v| v.parse().ok())
            .expect("version header");
        versions.entry(e.key.clone()).or_default().push(v);
        *applied
            .entry(
                header(e, headers::COMMAND_ID)
                    .expect("command id")
                    .to_string(),
            )
            .or_default() += 1;
    }
    for (aggregate, vs) in &versions {
        let expected: Vec<u64> = (1..=vs.len() as u64).collect();
        assert_eq!(
            vs,
            &expected,
            "versions of {}",
            String::from_utf8_lossy(aggregate)
        );
    }
    assert!(
        applied.values().all(|&n| n == 1),
        "a command was applied twice"
    );
    let commands = read_all(&log, "bank.commands");
    let command_ids: HashSet<String> = commands
        .iter()
        .map(|c| header(c, headers::COMMAND_ID).expect("id").to_string())
        .collect();
    for id in &command_ids {
        assert!(
            engine.command_result("bank", id).expect("result").is_some(),
            "command {id} has no result"
        );
    }
    println!(
        "crash harness: {cycles} kills; {} orders ({acked} acknowledged), {} enriched, {} customers, {} commands, {} events",
        ids.len(),
        enriched.len(),
        want.len(),
        command_ids.len(),
        events.len()
    );
}
