//! Rivers in cluster mode beside one machine, in the same run, through the
//! real `weir` binary: how fast a river catches up on a backlog on one host
//! with the embedded log and on two hosts over a three-node NATS JetStream
//! cluster (R3), with the CPU each side spends per event; then the
//! failover: from a kill -9 of one of the two hosts until every input
//! partition processes again, over several kills, at the default lease TTL.
//!
//! Run: `cargo bench -p weir-host --bench cluster_river`
//! (`WEIR_BENCH_QUICK=1`: a smaller backlog and 5 kills; `WEIR_BENCH_KILLS=n`).
//! Needs `nats-server` (guest-sdk/install-toolchains.sh nats).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_testkit::cpu;
use weir_testkit::nats::NatsCluster;
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const PARTITIONS: u32 = 4;
const BIN: &str = env!("CARGO_BIN_EXE_weir");

/// `n` records with 100-byte values over 16 keys.
fn records(first: u64, n: u64) -> Vec<Value> {
    (first..first + n)
        .map(|i| json!({"key": format!("k{}", i % 16), "value": {"i": i, "pad": "x".repeat(80)}}))
        .collect()
}

/// Produce `records` through `host`; where each landed (partition, offset).
fn produce(host: &Server, records: &[Value]) -> BenchResult<Vec<(u32, u64)>> {
    let r = host.post_json("/topics/in/records", &json!({ "records": records }));
    if r.status != 200 {
        return Err(format!("produce: {} {}", r.status, r.json).into());
    }
    Ok(r.json["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|at| Some((at["partition"].as_u64()? as u32, at["offset"].as_u64()?)))
        .collect())
}

/// Wait until the river committed every partition up to `ends`.
fn wait_committed(host: &Server, ends: &BTreeMap<u32, u64>, timeout: Duration) -> BenchResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let done = host.committed_offsets("stamp");
        if ends
            .iter()
            .all(|(p, end)| done.get(&("in".to_string(), *p)).is_some_and(|c| c >= end))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the river did not reach {ends:?} (at {done:?})").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct CatchUp {
    events_per_s: f64,
    weir_cpu_us: f64,
    nats_cpu_us: f64,
}

/// Deploy the river paused, load a backlog of `n` events, resume it and
/// time it until it has committed all of them.
fn catch_up(hosts: &[&Server], n: u64) -> BenchResult<CatchUp> {
    let first = hosts[0];
    first.create_topic("in", PARTITIONS);
    let r = first.deploy(
        &json!({"name": "stamp", "kind": "enricher", "inputs": ["in"], "outputs": ["out"],
                "config": {"stamp": "1"}}),
        &plugin_bytes("stamp_enricher"),
    );
    if r.status != 201 {
        return Err(format!("deploy: {}", r.json).into());
    }
    let r = first.post_json("/plugins/stamp/pause", &json!({}));
    if r.status != 200 {
        return Err(format!("pause: {}", r.json).into());
    }
    std::thread::sleep(Duration::from_secs(2)); // every host's lease round saw it
    let mut ends = BTreeMap::new();
    for start in (0..n).step_by(500) {
        for (p, offset) in produce(first, &records(start, 500.min(n - start)))? {
            let end = ends.entry(p).or_insert(0);
            *end = (*end).max(offset + 1);
        }
    }
    let weir_cpu = || -> f64 { hosts.iter().filter_map(|h| h.pid()).map(cpu::of).sum() };
    let (weir0, nats0) = (weir_cpu(), cpu::of_command("nats-server"));
    let started = Instant::now();
    let r = first.post_json("/plugins/stamp/resume", &json!({}));
    if r.status != 200 {
        return Err(format!("resume: {}", r.json).into());
    }
    wait_committed(first, &ends, Duration::from_secs(600))?;
    let took = started.elapsed().as_secs_f64();
    Ok(CatchUp {
        events_per_s: n as f64 / took,
        weir_cpu_us: (weir_cpu() - weir0) / n as f64 * 1e6,
        nats_cpu_us: (cpu::of_command("nats-server") - nats0) / n as f64 * 1e6,
    })
}

/// Kill one of the two hosts `kills` times while clients produce through
/// both; each time, how long until every partition processed a record
/// produced after the kill.
fn failovers(hosts: &mut [Server; 2], kills: usize) -> BenchResult<Vec<Duration>> {
    let live = Arc::new(parking_lot::RwLock::new(
        hosts.iter().map(|h| h.url.clone()).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            // ~100 events/s: well below what a partition keeps up with even
            // while it moves between hosts, so a failover measures the
            // takeover, not a backlog.
            let mut i = 1u64 << 40;
            while !stop.load(Ordering::Relaxed) {
                let url = {
                    let live = live.read();
                    live[(i as usize / 10) % live.len()].clone()
                };
                let body = json!({ "records": records(i, 10) }).to_string();
                let _ = agent
                    .post(format!("{url}/topics/in/records"))
                    .header("content-type", "application/json")
                    .send(body);
                i += 10;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut took = Vec::with_capacity(kills);
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(1500));
        let victim = k % 2;
        let survivor = 1 - victim;
        live.write().retain(|u| *u != hosts[victim].url);
        hosts[victim].kill();
        let killed = Instant::now();
        // One record per key: every partition gets one after the kill.
        let mut ends = BTreeMap::new();
        for (p, offset) in produce(&hosts[survivor], &records(k as u64 * 16, 16))? {
            let end = ends.entry(p).or_insert(0);
            *end = (*end).max(offset + 1);
        }
        wait_committed(&hosts[survivor], &ends, Duration::from_secs(60))?;
        took.push(killed.elapsed());
        hosts[victim].restart();
        live.write().push(hosts[victim].url.clone());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    Ok(took)
}

fn main() -> BenchResult<()> {
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some();
    let n: u64 = if quick { 20_000 } else { 200_000 };
    let kills: usize = std::env::var("WEIR_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5 } else { 20 });
    println!(
        "river (stamp enricher, {PARTITIONS} partitions) catching up on {n} events of ~100 bytes, {} cores",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );

    let embedded = Server::start(BIN, &[]);
    let one = catch_up(&[&embedded], n)?;
    drop(embedded);
    println!(
        "{:<44} {:>9.0} ev/s            weir CPU {:>6.1} µs/ev",
        "one host, embedded log", one.events_per_s, one.weir_cpu_us
    );

    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let args = ["--backend", "jetstream", "--nats", &urls];
    let mut hosts = [Server::start(BIN, &args), Server::start(BIN, &args)];
    let two = catch_up(&[&hosts[0], &hosts[1]], n)?;
    println!(
        "{:<44} {:>9.0} ev/s {:>7.3}x   weir CPU {:>6.1} µs/ev   NATS CPU {:>6.1} µs/ev",
        "two hosts on 3 NATS nodes (R3)",
        two.events_per_s,
        two.events_per_s / one.events_per_s,
        two.weir_cpu_us,
        two.nats_cpu_us
    );

    let mut took = failovers(&mut hosts, kills)?;
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    println!(
        "failover, kill -9 of one of two hosts until every partition processes again \
         (lease TTL {:?}), {kills} kills: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        weir::processor::DEFAULT_LEASE_TTL,
        at(0.5).as_secs_f64(),
        at(0.99).as_secs_f64(),
        took.last().copied().unwrap_or_default().as_secs_f64()
    );
    Ok(())
}
