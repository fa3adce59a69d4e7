//! Cluster mode under faults (issue #11): weir hosts killed with kill -9 at
//! random moments while a river, a pond and a service run across them and
//! clients keep producing and sending commands through whichever host
//! answers; new versions deployed and
//! rolled back through the host about to die or during the takeover; every
//! third cycle the pond is rebuilt; at the end both hosts are killed and
//! restarted. With `WEIR_CLUSTER_NATS_FAULTS=1`, every fifth kill also
//! takes one NATS node of three down and the end restarts every NATS node
//! too (not in CI yet: one run found a service's events out of version
//! order; see docs/cluster.md). Checked like the
//! single-host crash harness: every acknowledged input is in the input
//! topic once, every input has exactly one output, by a version that was
//! deployed, the pond read through each host equals an independent fold of
//! its input topic, and every command in the commands topic was applied
//! exactly once. Each kill also measures the failover: from the kill until
//! every input partition has processed a record produced after it (kills
//! with a NATS node down or a deploy during the takeover are left out of
//! those figures).
//!
//! CI runs 20 kills; the soak, by hand:
//!
//!   WEIR_CLUSTER_CYCLES=300 cargo test -p weir-host --test e2e hosts_killed -- --nocapture
//!
//! and with NATS faults:
//!
//!   WEIR_CLUSTER_NATS_FAULTS=1 WEIR_CLUSTER_CYCLES=100 cargo test -p weir-host --test e2e hosts_killed -- --nocapture
//!
//! It stops at the first checkpoint it sees going back and prints both
//! hosts' partition events (how it found the reader bug in docs/cluster.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use weir_testkit::nats::NatsCluster;
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

use crate::start;

const PARTITIONS: u32 = 4;
/// The service's accounts (aggregates), opened at the start.
const ACCOUNTS: u64 = 4;
/// Short leases, so a dead host's partitions move quickly.
const LEASE_TTL_MS: &str = "1000";
/// How long the river may make no progress at all before the test fails.
const STUCK: Duration = Duration::from_secs(30);

/// What the producer learned: values acknowledged, requests that failed.
#[derive(Default)]
struct Produced {
    acked: Vec<u64>,
    failed: usize,
}

/// Produce `values` (keyed over 16 keys) through `url`; the placement
/// (partition, offset) of each record, or `None` if the request failed (then
/// they may or may not be stored: never retried, so each value is at most
/// once in the input).
fn produce(agent: &ureq::Agent, url: &str, values: &[u64]) -> Option<Vec<(u32, u64)>> {
    let records: Vec<Value> = values
        .iter()
        .map(|v| json!({"key": format!("k{}", v % 16), "value": v}))
        .collect();
    let mut resp = agent
        .post(format!("{url}/topics/in/records"))
        .header("content-type", "application/json")
        .send(json!({ "records": records }).to_string())
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body: Value = resp.body_mut().read_json().ok()?;
    let placed = body["records"].as_array()?;
    Some(
        values
            .iter()
            .zip(placed)
            .filter_map(|(_, at)| Some((at["partition"].as_u64()? as u32, at["offset"].as_u64()?)))
            .collect(),
    )
}

/// Send `values` through `url` as orders for the pond (customer by key,
/// amount = value) and one deposit for the service (command id `d<first>`);
/// whether each was acknowledged does not matter: the checks read what the
/// topics hold.
fn orders_and_command(agent: &ureq::Agent, url: &str, values: &[u64]) {
    let orders: Vec<Value> = values
        .iter()
        .map(|v| {
            let customer = format!("c{}", v % 16);
            json!({"key": customer, "value": {"customer": customer, "amount": v}})
        })
        .collect();
    let _ = agent
        .post(format!("{url}/topics/orders/records"))
        .header("content-type", "application/json")
        .send(json!({ "records": orders }).to_string());
    let first = values.first().copied().unwrap_or(0);
    let command = json!({"id": format!("d{first}"), "aggregate": format!("acc-{}", first % ACCOUNTS),
                         "name": "deposit", "data": {"amount": values.len()}});
    let _ = agent
        .post(format!("{url}/services/bank/commands"))
        .header("content-type", "application/json")
        .send(command.to_string());
}

/// The value of header `name` of record `r` as the API shows it.
fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"] == name)?["value"]
        .as_str()
}

/// Every record of `topic` read through `host`, all partitions.
fn all_records(host: &Server, topic: &str) -> Vec<Value> {
    let partitions = host.get(&format!("/topics/{topic}")).json["partitions"]
        .as_array()
        .map_or(0, Vec::len) as u32;
    (0..partitions)
        .flat_map(|p| host.read_all(topic, p))
        .collect()
}

/// The pond read through each host equals an independent fold of its
/// input topic (each order in the topic once).
fn check_pond(hosts: &[Server]) {
    let mut fold: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut seen = HashSet::new();
    for r in all_records(&hosts[0], "orders") {
        let amount = r["value"]["amount"].as_u64().expect("an order's amount");
        assert!(seen.insert(amount), "order {amount} stored twice");
        let customer = r["value"]["customer"].as_str().unwrap_or_default();
        let e = fold.entry(customer.to_string()).or_default();
        e.0 += 1;
        e.1 += amount;
    }
    let want: serde_json::Map<String, Value> = fold
        .iter()
        .map(|(c, (count, sum))| (c.clone(), json!({"count": count, "sum": sum})))
        .collect();
    let want = Value::Object(want);
    for host in hosts {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let r = host.post_bytes("/ponds/totals/query", "text/plain", b"");
            if r.json == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the pond through {} is {} ({} orders folded independently: {want})",
                host.url,
                r.json,
                seen.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Every command in the service's commands topic was applied exactly once:
/// one event each, none without a command, per account in version order.
fn check_service(hosts: &[Server]) {
    let mut commands: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = HashSet::new();
    for r in all_records(&hosts[0], "bank.commands") {
        let id = header(&r, "weir-command-id")
            .expect("a command id")
            .to_string();
        assert!(ids.insert(id.clone()), "command {id} stored twice");
        let account = r["key"].as_str().unwrap_or_default().to_string();
        *commands.entry(account).or_default() += 1;
    }
    let total: u64 = commands.values().sum();
    hosts[0].wait_until(
        "the service to apply every command",
        Duration::from_secs(180),
        |h| h.total_records("bank.events") >= total,
    );
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut applied = HashSet::new();
    for r in all_records(&hosts[0], "bank.events") {
        let id = header(&r, "weir-command-id").expect("an event's command id");
        assert!(applied.insert(id.to_string()), "command {id} applied twice");
        assert!(
            ids.contains(id),
            "an event of command {id}, which was never sent"
        );
        let account = r["key"].as_str().unwrap_or_default().to_string();
        let n = events.entry(account.clone()).or_default();
        *n += 1;
        let version = header(&r, "weir-version").and_then(|v| v.parse::<u64>().ok());
        assert_eq!(version, Some(*n), "{account}'s events in version order");
    }
    assert_eq!(
        events, commands,
        "events per account = commands per account"
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// The committed input offset of each partition of the river, as `host` reports it.
fn committed(host: &Server) -> BTreeMap<u32, u64> {
    host.committed_offsets("stamp")
        .into_iter()
        .map(|((_, p), offset)| (p, offset))
        .collect()
}

/// The lines of `host`'s log that tell what happened to partitions.
fn notable(host: &Server) -> String {
    host.logs()
        .lines()
        .filter(|l| {
            [
                "WARN",
                "ERROR",
                "lease lost",
                "running partition",
                "taken over",
                "joining",
            ]
            .iter()
            .any(|m| l.contains(m))
        })
        .filter(|l| !l.contains("admin routes") && !l.contains("request failed"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The river's versions: deployed (new versions) and rolled back, through
/// whichever host the test names.
#[derive(Default)]
struct Versions {
    deployed: HashSet<u32>,
    /// The version the last change made active.
    active: u32,
    rollbacks: usize,
}

impl Versions {
    /// Deploy the next version through `host`, retrying while it answers 503
    /// (a NATS node is down).
    fn deploy(&mut self, host: &Server) {
        let version = self.deployed.len() as u32 + 1;
        let manifest = json!({"name": "stamp", "kind": "enricher", "inputs": ["in"],
            "outputs": ["out"], "config": {"stamp": version.to_string()}, "max_batch": 8});
        let r = retry_unavailable(|| host.deploy(&manifest, &plugin_bytes("stamp_enricher")));
        assert_eq!(r.status, 201, "{}", r.json);
        // A retry after a lost answer may have added the version twice.
        let active = r.json["active_version"].as_u64().unwrap_or(0) as u32;
        assert!(active >= version, "deployed {version}, active {active}");
        self.deployed.extend(version..=active);
        self.active = active;
    }

    /// A new version, or (one time in four) a rollback to the one before.
    fn change(&mut self, host: &Server, rng: &mut impl Rng) {
        if self.active > 1 && rng.random_range(0..4) == 0 {
            let r = retry_unavailable(|| host.post_json("/plugins/stamp/rollback", &json!({})));
            assert_eq!(r.status, 200, "{}", r.json);
            self.active = r.json["active_version"].as_u64().unwrap_or(0) as u32;
            self.rollbacks += 1;
        } else {
            self.deploy(host);
        }
    }
}

/// `request` until it answers something else than 503 (for 30 s at most).
fn retry_unavailable(
    mut request: impl FnMut() -> weir_testkit::server::Resp,
) -> weir_testkit::server::Resp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request();
        if r.status != 503 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hosts_killed_at_random_moments_leave_every_input_exactly_once() {
    let cycles: usize = std::env::var("WEIR_CLUSTER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let nats_faults = std::env::var("WEIR_CLUSTER_NATS_FAULTS").as_deref() == Ok("1");
    let started = Instant::now();
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let args = [
        "--backend",
        "jetstream",
        "--nats",
        &urls,
        "--lease-ttl-ms",
        LEASE_TTL_MS,
    ];
    let mut cluster = cluster;
    let mut hosts = [start(&args), start(&args)];
    hosts[0].create_topic("in", PARTITIONS);
    let mut versions = Versions::default();
    versions.deploy(&hosts[0]);
    // A pond and a service beside the river.
    hosts[0].create_topic("orders", PARTITIONS);
    let deployed = [
        (
            json!({"name": "totals", "kind": "projection", "inputs": ["orders"], "max_batch": 16}),
            "projection_totals",
        ),
        (
            json!({"name": "bank", "kind": "command-handler"}),
            "command_bank",
        ),
    ];
    for (manifest, plugin) in &deployed {
        let r = retry_unavailable(|| hosts[0].deploy(manifest, &plugin_bytes(plugin)));
        assert_eq!(r.status, 201, "{}", r.json);
    }
    for account in 0..ACCOUNTS {
        let open = json!({"id": format!("open-{account}"), "aggregate": format!("acc-{account}"),
                          "name": "open", "data": {"owner": "ada"}});
        let r =
            retry_unavailable(|| hosts[0].post_json("/services/bank/commands?wait=true", &open));
        assert_eq!(r.status, 200, "{}", r.json);
    }

    // One key per partition, for the markers that time each failover.
    let next = Arc::new(AtomicU64::new(0));
    let produced = Arc::new(Mutex::new(Produced::default()));
    let take = |n: u64| -> Vec<u64> {
        let first = next.fetch_add(n, Ordering::Relaxed);
        (first..first + n).collect()
    };
    let first = take(16);
    let placed = produce(&agent(), &hosts[0].url, &first).expect("first produce");
    produced.lock().unwrap().acked.extend(&first);
    let mut key_of: BTreeMap<u32, u64> = BTreeMap::new();
    for (v, (p, _)) in first.iter().zip(placed) {
        key_of.entry(p).or_insert(v % 16);
    }
    assert_eq!(
        key_of.len(),
        PARTITIONS as usize,
        "16 keys cover every partition"
    );

    // Clients produce through both hosts, whichever answers.
    let live: Arc<RwLock<Vec<String>>> =
        Arc::new(RwLock::new(hosts.iter().map(|h| h.url.clone()).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (live, stop, next, produced) =
            (live.clone(), stop.clone(), next.clone(), produced.clone());
        std::thread::spawn(move || {
            let agent = agent();
            let mut rng = rand::rng();
            while !stop.load(Ordering::Relaxed) {
                let url = {
                    let live = live.read().unwrap();
                    live[rng.random_range(0..live.len())].clone()
                };
                let n = rng.random_range(1..=10u64);
                let first = next.fetch_add(n, Ordering::Relaxed);
                let values: Vec<u64> = (first..first + n).collect();
                let ok = produce(&agent, &url, &values).is_some();
                orders_and_command(&agent, &url, &values);
                let mut p = produced.lock().unwrap();
                if ok {
                    p.acked.extend(values);
                } else {
                    p.failed += 1;
                }
                drop(p);
                // ~200 events/s: what a debug build on a loaded machine keeps
                // up with while partitions move (see docs/cluster.md, costs).
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };

    let mut rng = rand::rng();
    let mut failovers = Vec::with_capacity(cycles);
    let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
    let mut rebuilds = 0;
    for cycle in 0..cycles {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1200)));
        let victim = rng.random_range(0..2);
        let survivor = 1 - victim;
        // A version change through the host about to die (or, below,
        // through the survivor while it takes over).
        let change = rng.random_range(0..3);
        if change == 1 {
            versions.change(&hosts[victim], &mut rng);
            std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        }
        // Every third cycle the pond is rebuilt through the host about to
        // die, so kills land while a rebuild runs (or replaces another).
        if cycle % 3 == 0 {
            let r = retry_unavailable(|| {
                hosts[victim].post_json("/plugins/totals/rebuild", &json!({}))
            });
            assert_eq!(r.status, 200, "{}", r.json);
            rebuilds += 1;
        }
        let nats_down = (nats_faults && cycle % 5 == 4).then(|| rng.random_range(0..3));
        if let Some(node) = nats_down {
            cluster.kill(node);
        }
        live.write().unwrap().retain(|u| *u != hosts[victim].url);
        hosts[victim].kill();
        let killed = Instant::now();
        if change == 2 {
            versions.change(&hosts[survivor], &mut rng);
        }
        // A marker per partition through the survivor; the failover is over
        // when every partition committed past its marker.
        let mut markers = BTreeMap::new();
        for (p, key) in &key_of {
            // A value of the key's class within a range reserved for it;
            // retried with a new one while a NATS node is down.
            let deadline = Instant::now() + Duration::from_secs(30);
            let offset = loop {
                let v = (next.fetch_add(32, Ordering::Relaxed) / 16 + 1) * 16 + key;
                if let Some(placed) = produce(&agent(), &hosts[survivor].url, &[v]) {
                    assert_eq!(placed[0].0, *p, "key {key} is partition {p}");
                    produced.lock().unwrap().acked.push(v);
                    break placed[0].1;
                }
                assert!(
                    Instant::now() < deadline,
                    "cycle {cycle}: no marker through the survivor; log:\n{}",
                    hosts[survivor].logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            };
            markers.insert(*p, offset + 1);
        }
        // A partition behind its marker must be moving: one that is still
        // catching up on a backlog (a loaded machine) is slow, not stuck.
        let behind = |done: &BTreeMap<u32, u64>| -> BTreeMap<u32, Option<u64>> {
            markers
                .iter()
                .filter(|(p, end)| done.get(p).is_none_or(|c| c < end))
                .map(|(p, _)| (*p, done.get(p).copied()))
                .collect()
        };
        let mut last = (BTreeMap::new(), Instant::now());
        loop {
            let done = committed(&hosts[survivor]);
            for (p, c) in &done {
                let best = highest.entry(*p).or_insert(*c);
                assert!(
                    c >= best,
                    "cycle {cycle} (victim {victim}, change {change}): partition {p}'s checkpoint \
                     went back from {best} to {c}\nsurvivor:\n{}\nvictim:\n{}",
                    notable(&hosts[survivor]),
                    notable(&hosts[victim])
                );
                *best = (*best).max(*c);
            }
            let lagging = behind(&done);
            if lagging.is_empty() {
                break;
            }
            if lagging != last.0 {
                last = (lagging, Instant::now());
            }
            assert!(
                last.1.elapsed() < STUCK,
                "cycle {cycle}: a partition behind its marker did not move for {STUCK:?}: \
                 committed {done:?}, markers at {markers:?}\nsurvivor:\n{}\nkilled host:\n{}",
                hosts[survivor].logs(),
                hosts[victim].logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        if let Some(node) = nats_down {
            cluster.restart(node);
        } else if change != 2 {
            failovers.push(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
        hosts[victim].restart();
        live.write().unwrap().push(hosts[victim].url.clone());
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer");

    // Restart everything: every host (and with NATS faults every NATS node)
    // killed at once.
    for host in &mut hosts {
        host.kill();
    }
    if nats_faults {
        cluster.restart_all();
    }
    for host in &mut hosts {
        host.restart();
    }

    // Everything acknowledged is processed once the hosts settle.
    let mut input_ends: BTreeMap<u32, u64> = BTreeMap::new();
    hosts[0].wait_until("the input's ends", Duration::from_secs(30), |s| {
        let topic = s.get("/topics/in").json;
        for p in 0..PARTITIONS {
            match topic["partitions"][p as usize]["end_offset"].as_u64() {
                Some(end) => input_ends.insert(p, end),
                None => return false,
            };
        }
        true
    });
    hosts[0].wait_until("the river to catch up", Duration::from_secs(180), |s| {
        let done = committed(s);
        for (p, c) in &done {
            let best = highest.get(p).copied().unwrap_or(0);
            assert!(
                *c >= best,
                "after the restart: partition {p}'s checkpoint went back from {best} to {c}"
            );
        }
        input_ends
            .iter()
            .all(|(p, end)| done.get(p).is_some_and(|c| c >= end))
    });
    let mut inputs = HashSet::new();
    for p in 0..PARTITIONS {
        for r in hosts[1].read_all("in", p) {
            let v = r["value"].as_u64().expect("numeric input");
            assert!(inputs.insert(v), "input {v} stored twice");
        }
    }
    let produced = produced.lock().unwrap();
    let lost: Vec<&u64> = produced
        .acked
        .iter()
        .filter(|v| !inputs.contains(v))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in the input: {lost:?}"
    );
    let mut outputs: HashMap<u64, u32> = HashMap::new();
    // Every output as (output partition, offset, stamp), to name duplicates.
    let mut at: HashMap<u64, Vec<(u32, usize, u32)>> = HashMap::new();
    for p in 0..PARTITIONS {
        for (offset, (v, stamp)) in hosts[0].stamped("out", p).into_iter().enumerate() {
            outputs.insert(v, stamp);
            at.entry(v).or_default().push((p, offset, stamp));
            assert!(
                versions.deployed.contains(&stamp),
                "input {v} stamped by version {stamp}, never deployed"
            );
        }
    }
    let mut twice: Vec<_> = at.iter().filter(|(_, places)| places.len() > 1).collect();
    twice.sort();
    assert!(
        twice.is_empty(),
        "{} inputs have several outputs, e.g. (input, [(partition, offset, version)]): {:?}\n\
         host 0 warnings:\n{}\nhost 1 warnings:\n{}",
        twice.len(),
        &twice[..twice.len().min(5)],
        notable(&hosts[0]),
        notable(&hosts[1])
    );
    let missing: Vec<&u64> = inputs
        .iter()
        .filter(|v| !outputs.contains_key(v))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "inputs without output: {missing:?}");
    let extra: Vec<&u64> = outputs
        .keys()
        .filter(|v| !inputs.contains(v))
        .take(10)
        .collect();
    assert!(extra.is_empty(), "outputs without input: {extra:?}");
    // The last rebuild finished: every host reads a rebuilt generation.
    if rebuilds > 0 {
        for host in &hosts {
            host.wait_until("the pond's rebuild", Duration::from_secs(180), |s| {
                let status = s.get("/plugins/totals").json;
                status["rebuilding_generation"].is_null()
                    && status["generation"].as_u64().is_some_and(|g| g > 0)
            });
        }
    }
    check_pond(&hosts);
    check_service(&hosts);

    failovers.sort();
    let at = |q: f64| {
        let i = (failovers.len().saturating_sub(1) as f64 * q).round() as usize;
        failovers.get(i).copied().unwrap_or_default()
    };
    eprintln!(
        "{cycles} kills of a host in {:?}: {} inputs ({} acknowledged, {} requests failed), \
         each with one output; {} versions deployed, {} rollbacks, {rebuilds} pond rebuilds; \
         failover over {} kills \
         (kill -9 to every partition processing again, lease TTL {LEASE_TTL_MS} ms): \
         p50 {:?}, p99 {:?}, max {:?}",
        started.elapsed(),
        inputs.len(),
        produced.acked.len(),
        produced.failed,
        versions.deployed.len(),
        versions.rollbacks,
        failovers.len(),
        at(0.5),
        at(0.99),
        failovers.last().copied().unwrap_or_default(),
    );
}
