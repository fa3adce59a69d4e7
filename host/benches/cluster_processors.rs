//! Rivers and ponds in cluster mode beside one machine, in the same run,
//! through the real `weir` binary: how fast a river and a pond catch up on
//! a backlog (a replay) on one host with the embedded log and on two hosts
//! over a three-node NATS JetStream cluster (R3), with the CPU each side
//! spends per event; then the failover: from a kill -9 of one of the two
//! hosts until every input partition of the river processes again, over
//! several kills, at the default lease TTL.
//!
//! Run: `cargo bench -p weir-host --bench cluster_processors`
//! (`WEIR_BENCH_QUICK=1`: smaller backlogs and 5 kills; `WEIR_BENCH_KILLS=n`;
//! `WEIR_BENCH_POND_EVENTS=n`: the pond's replay, 1,000,000 by default).
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

/// What catches up: a processor, its input topic and what its events look like.
struct Workload {
    processor: &'static str,
    topic: &'static str,
    manifest: Value,
    plugin: &'static str,
    record: fn(u64) -> Value,
}

/// The river: stamps 100-byte events over 16 keys.
fn river() -> Workload {
    Workload {
        processor: "stamp",
        topic: "in",
        manifest: json!({"name": "stamp", "kind": "enricher", "inputs": ["in"], "outputs": ["out"],
                         "config": {"stamp": "1"}}),
        plugin: "stamp_enricher",
        record: river_record,
    }
}

fn river_record(i: u64) -> Value {
    json!({"key": format!("k{}", i % 16), "value": {"i": i, "pad": "x".repeat(80)}})
}

/// The pond: order totals per customer, 1,000 customers.
fn pond() -> Workload {
    Workload {
        processor: "totals",
        topic: "orders",
        manifest: json!({"name": "totals", "kind": "projection", "inputs": ["orders"]}),
        plugin: "projection_totals",
        record: |i| {
            let customer = format!("c{}", i % 1000);
            json!({"key": customer, "value": {"customer": customer, "amount": i % 100}})
        },
    }
}

/// `n` records of `make` from `first` on.
fn records(first: u64, n: u64, make: fn(u64) -> Value) -> Vec<Value> {
    (first..first + n).map(make).collect()
}

/// Produce `records` into `topic` through `host`; where each landed (partition, offset).
fn produce(host: &Server, topic: &str, records: &[Value]) -> BenchResult<Vec<(u32, u64)>> {
    let r = host.post_json(
        &format!("/topics/{topic}/records"),
        &json!({ "records": records }),
    );
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

/// Wait until `w`'s processor committed every partition up to `ends`.
fn wait_committed(
    host: &Server,
    w: &Workload,
    ends: &BTreeMap<u32, u64>,
    timeout: Duration,
) -> BenchResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let done = host.committed_offsets(w.processor);
        if ends.iter().all(|(p, end)| {
            done.get(&(w.topic.to_string(), *p))
                .is_some_and(|c| c >= end)
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not reach {ends:?} (at {done:?})", w.processor).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct CatchUp {
    events_per_s: f64,
    weir_cpu_us: f64,
    nats_cpu_us: f64,
}

/// Deploy `w` paused, load a backlog of `n` events, resume it and time it
/// until it has committed all of them.
fn catch_up(hosts: &[&Server], w: &Workload, n: u64) -> BenchResult<CatchUp> {
    let first = hosts[0];
    first.create_topic(w.topic, PARTITIONS);
    let r = first.deploy(&w.manifest, &plugin_bytes(w.plugin));
    if r.status != 201 {
        return Err(format!("deploy: {}", r.json).into());
    }
    let admin = |action: &str| -> BenchResult<()> {
        let r = first.post_json(&format!("/plugins/{}/{action}", w.processor), &json!({}));
        if r.status != 200 {
            return Err(format!("{action}: {}", r.json).into());
        }
        Ok(())
    };
    admin("pause")?;
    std::thread::sleep(Duration::from_secs(2)); // every host's lease round saw it
    let mut ends = BTreeMap::new();
    for start in (0..n).step_by(1000) {
        let batch = records(start, 1000.min(n - start), w.record);
        for (p, offset) in produce(first, w.topic, &batch)? {
            let end = ends.entry(p).or_insert(0);
            *end = (*end).max(offset + 1);
        }
    }
    let weir_cpu = || -> f64 { hosts.iter().filter_map(|h| h.pid()).map(cpu::of).sum() };
    let (weir0, nats0) = (weir_cpu(), cpu::of_command("nats-server"));
    let started = Instant::now();
    admin("resume")?;
    wait_committed(first, w, &ends, Duration::from_secs(3600))?;
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
                let body = json!({ "records": records(i, 10, river_record) }).to_string();
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
        let batch = records(k as u64 * 16, 16, river_record);
        for (p, offset) in produce(&hosts[survivor], "in", &batch)? {
            let end = ends.entry(p).or_insert(0);
            *end = (*end).max(offset + 1);
        }
        wait_committed(&hosts[survivor], &river(), &ends, Duration::from_secs(60))?;
        took.push(killed.elapsed());
        hosts[victim].restart();
        live.write().push(hosts[victim].url.clone());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    Ok(took)
}

/// One line of figures.
fn report(label: &str, c: &CatchUp, reference: Option<&CatchUp>) {
    match reference {
        None => println!(
            "{label:<48} {:>9.0} ev/s            weir CPU {:>6.1} µs/ev",
            c.events_per_s, c.weir_cpu_us
        ),
        Some(r) => println!(
            "{label:<48} {:>9.0} ev/s {:>7.3}x   weir CPU {:>6.1} µs/ev   NATS CPU {:>6.1} µs/ev",
            c.events_per_s,
            c.events_per_s / r.events_per_s,
            c.weir_cpu_us,
            c.nats_cpu_us
        ),
    }
}

fn main() -> BenchResult<()> {
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some();
    let river_n: u64 = if quick { 20_000 } else { 200_000 };
    let pond_n: u64 = std::env::var("WEIR_BENCH_POND_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 50_000 } else { 1_000_000 });
    let kills: usize = std::env::var("WEIR_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5 } else { 20 });
    println!(
        "catching up: the river (stamp enricher) on {river_n} events of ~100 bytes, the pond \
         (order totals, 1,000 customers) on {pond_n} orders; {PARTITIONS} partitions, {} cores",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    let (river, pond) = (river(), pond());

    let embedded = Server::start(BIN, &[]);
    let one_river = catch_up(&[&embedded], &river, river_n)?;
    report("river, one host, embedded log", &one_river, None);
    let one_pond = catch_up(&[&embedded], &pond, pond_n)?;
    report("pond, one host, embedded log", &one_pond, None);
    drop(embedded);

    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let args = ["--backend", "jetstream", "--nats", &urls];
    let mut hosts = [Server::start(BIN, &args), Server::start(BIN, &args)];
    let two_river = catch_up(&[&hosts[0], &hosts[1]], &river, river_n)?;
    report(
        "river, two hosts on 3 NATS nodes (R3)",
        &two_river,
        Some(&one_river),
    );
    let two_pond = catch_up(&[&hosts[0], &hosts[1]], &pond, pond_n)?;
    report(
        "pond, two hosts on 3 NATS nodes (R3)",
        &two_pond,
        Some(&one_pond),
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
