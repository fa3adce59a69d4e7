//! Cluster mode's backend (issue #11): the suite runs its own NATS
//! JetStream cluster on loopback. Steps of the cluster mode build on this.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_testkit::nats::NatsCluster;
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

use crate::start;

#[test]
fn a_three_node_jetstream_cluster_forms_on_loopback() {
    let cluster = NatsCluster::start(3);
    let leaders: Vec<Option<String>> = (0..3).map(|i| cluster.meta_leader(i)).collect();
    assert!(leaders[0].is_some(), "no meta leader: {leaders:?}");
    assert!(
        leaders.iter().all(|l| *l == leaders[0]),
        "every node sees the same meta leader: {leaders:?}"
    );
    for node in 0..3 {
        let jsz = cluster.monitor(node, "/jsz").expect("/jsz");
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
        let varz = cluster.monitor(node, "/varz").expect("/varz");
        let version = varz["version"].as_str().unwrap_or_default();
        // Atomic batch publish, which cluster commits rely on, needs 2.12+.
        assert!(version.starts_with("2.15."), "nats-server {version}");
    }
    assert_eq!(cluster.urls().split(',').count(), 3);
}

/// Two weir hosts on one JetStream cluster (`--backend jetstream`).
fn two_hosts(cluster: &NatsCluster) -> (Server, Server) {
    let urls = cluster.urls();
    let args = ["--backend", "jetstream", "--nats", &urls];
    (start(&args), start(&args))
}

/// The SSE tail of `topic` through `server`, as a channel of events.
fn tail(server: &Server, topic: &str) -> mpsc::Receiver<Value> {
    let url = format!("{}/topics/{topic}/tail?from=earliest", server.url);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let Ok(resp) = agent.get(url).call() else {
            return;
        };
        for line in BufReader::new(resp.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(event) = serde_json::from_str::<Value>(data)
                && tx.send(event).is_err()
            {
                return;
            }
        }
    });
    rx
}

#[test]
fn two_hosts_share_topics_on_jetstream() {
    let cluster = NatsCluster::start(3);
    let (a, b) = two_hosts(&cluster);
    a.create_topic("orders", 3);
    let listed = b.get("/topics");
    assert_eq!(
        listed.json["topics"][0]["name"], "orders",
        "{}",
        listed.json
    );
    let r = b.post_json("/topics", &json!({"name": "orders", "partitions": 1}));
    assert_eq!(r.status, 409, "created once across hosts: {}", r.json);

    let events = tail(&a, "orders");
    // Produced through both hosts: one key lands in one partition, in
    // order, at dense offsets, whichever host took the request.
    for i in 0..10 {
        let host = if i % 2 == 0 { &a } else { &b };
        let r = host.post_json(
            "/topics/orders/records",
            &json!({"key": "cust-1", "value": {"i": i}}),
        );
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(r.json["offset"], i, "{}", r.json);
    }
    let batch: Vec<Value> = (10..20)
        .map(|i| json!({"key": "cust-1", "value": {"i": i}}))
        .collect();
    let r = b.post_json("/topics/orders/records", &json!({"records": batch}));
    assert_eq!(r.status, 200, "{}", r.json);
    let p = r.json["records"][0]["partition"]
        .as_u64()
        .expect("partition") as u32;
    for host in [&a, &b] {
        let all = host.read_all("orders", p);
        let seen: Vec<Value> = all.iter().map(|r| r["value"]["i"].clone()).collect();
        assert_eq!(seen, (0..20).map(|i| json!(i)).collect::<Vec<_>>());
        assert_eq!(host.total_records("orders"), 20);
    }
    for i in 0..20 {
        let event = events
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("record {i} on host a's tail; log:\n{}", a.logs()));
        assert_eq!(event["value"]["i"], i);
    }

    // A long poll on one host wakes on a produce through the other.
    let url = format!(
        "{}/topics/orders/partitions/{p}/records?offset=20&wait_ms=10000",
        a.url
    );
    let poll = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let started = Instant::now();
        let body: Option<Value> = agent
            .get(url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json().ok());
        (body, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = b.post_json(
        "/topics/orders/records",
        &json!({"key": "cust-1", "value": "late"}),
    );
    assert_eq!(r.json["offset"], 20, "{}", r.json);
    let (body, took) = poll.join().expect("poll thread");
    assert_eq!(
        body.map(|b| b["records"][0]["value"].clone()),
        Some(json!("late"))
    );
    assert!(
        took < Duration::from_secs(8),
        "woken by the produce: {took:?}"
    );

    // Idempotent produce across hosts. Both hosts have produced with keys
    // to this topic before (so neither relearns keys from the log): a
    // retry through the other host answers the first attempt's offsets and
    // appends nothing (another body under the key is refused there); one
    // request sent through both hosts at once is appended once.
    let keyed = |host: &Server, key: &str, body: &Value| {
        host.request(
            "POST",
            "/topics/orders/records",
            Some(("application/json", body.to_string().as_bytes())),
            &[("idempotency-key", key)],
        )
    };
    let warm = json!({"key": "w", "value": 0});
    assert_eq!(keyed(&a, "warm-a", &warm).status, 200);
    assert_eq!(keyed(&b, "warm-b", &warm).status, 200);
    let before = a.total_records("orders");
    let records: Vec<Value> = (0..30)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    let body = json!({ "records": records });
    let first = keyed(&a, "req-1", &body);
    assert_eq!(first.status, 200, "{}", first.json);
    let parts: HashSet<u64> = (0..30)
        .filter_map(|i| first.json["records"][i]["partition"].as_u64())
        .collect();
    assert!(parts.len() > 1, "spans partitions: {}", first.json);
    let other = json!({"records": [{"key": "k1", "value": "x"}]});
    let refused = keyed(&b, "req-1", &other);
    assert_eq!(refused.status, 422, "{}", refused.json);
    let retry = keyed(&b, "req-1", &body);
    assert_eq!((retry.status, &retry.json), (200, &first.json));
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let answers: Vec<_> = std::thread::scope(|s| {
        let racing: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|host| s.spawn(|| keyed(host, "req-2", &body)))
            .collect();
        racing
            .into_iter()
            .map(|r| r.join().expect("request thread"))
            .collect()
    });
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.json);
        assert_eq!(answer.json, answers[0].json);
    }
    for host in [&a, &b] {
        assert_eq!(host.total_records("orders"), before + 60);
    }

    // Deleted through b: gone for a, and a new incarnation starts afresh.
    assert_eq!(b.delete("/topics/orders").status, 200);
    assert_eq!(a.get("/topics/orders").status, 404);
    a.create_topic("orders", 1);
    let r = b.post_json("/topics/orders/records", &json!({"value": 1}));
    assert_eq!(
        (r.status, r.json["offset"].clone()),
        (200, json!(0)),
        "{}",
        r.json
    );
}

#[test]
fn a_host_without_reachable_nats_refuses_to_start_with_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--backend", "jetstream"])
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nats"), "{err}");
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let data = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "jetstream",
            "--nats",
            &dead,
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to NATS"), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn acknowledged_records_survive_nats_nodes_killed_and_restarted() {
    let mut cluster = NatsCluster::start(3);
    let (a, b) = two_hosts(&cluster);
    a.create_topic("ledger", 2);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked = std::sync::Mutex::new(Vec::<String>::new());
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let last_error = std::sync::Mutex::new(String::new());
    let kills = std::thread::scope(|s| {
        for (name, host) in [("a", &a), ("b", &b)] {
            let (stop, acked, failed, last_error) = (&stop, &acked, &failed, &last_error);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Alternate single records and batches of five.
                    let ids: Vec<String> = (0..if n.is_multiple_of(2) { 1 } else { 5 })
                        .map(|i| format!("{name}-{n}-{i}"))
                        .collect();
                    n += 1;
                    let body = if ids.len() == 1 {
                        json!({"key": ids[0], "value": {"id": ids[0]}})
                    } else {
                        let records: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"key": id, "value": {"id": id}}))
                            .collect();
                        json!({ "records": records })
                    };
                    let r = host.post_json("/topics/ledger/records", &body);
                    if r.status == 200 {
                        acked.lock().expect("acked").extend(ids);
                    } else {
                        // Not retried: such a record may or may not be stored, once.
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        *last_error.lock().expect("last error") =
                            format!("{name}: {} {}", r.status, r.json);
                    }
                }
            });
        }
        let mut progress = Vec::new();
        for node in [1, 2, 0] {
            std::thread::sleep(Duration::from_millis(700));
            cluster.kill(node);
            let killed = Instant::now();
            // Requests in flight on a connection to the dead node end at the
            // NATS request timeout (5 s); streams whose leader died elect a
            // new one within JetStream's election timeouts (4–9 s). Then
            // produce must go on: wait for fifty more acknowledged records.
            std::thread::sleep(Duration::from_secs(1));
            let before = acked.lock().expect("acked").len();
            let resumed = loop {
                if acked.lock().expect("acked").len() >= before + 50 {
                    break Some(killed.elapsed());
                }
                if killed.elapsed() > Duration::from_secs(30) {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            progress.push(resumed);
            cluster.restart(node);
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        progress
    });
    assert!(
        kills.iter().all(Option::is_some),
        "produce went on with one node of three down: {kills:?}; last error: {}\nhost a:\n{}\nhost b:\n{}",
        last_error.lock().expect("last error"),
        a.logs(),
        b.logs()
    );
    let acked = acked.into_inner().expect("acked");
    let mut seen = std::collections::HashMap::<String, usize>::new();
    // The last restarted node may still be rejoining: wait until reads answer.
    b.wait_until(
        "the cluster to answer reads",
        Duration::from_secs(30),
        |b| {
            (0..2).all(|p| {
                b.get(&format!("/topics/ledger/partitions/{p}/records?limit=1"))
                    .status
                    == 200
            })
        },
    );
    for p in 0..2 {
        let all = b.read_all("ledger", p);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r["offset"], i, "dense offsets in partition {p}");
            let id = r["value"]["id"].as_str().unwrap_or_default().to_string();
            *seen.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    eprintln!(
        "{} acknowledged, {} stored, {} requests failed while nodes died; produce resumed after {kills:?}",
        acked.len(),
        seen.len(),
        failed.into_inner()
    );
}

fn river(version: u32) -> Value {
    json!({"name": "stamp", "kind": "enricher", "inputs": ["orders"], "outputs": ["stamped"],
           "config": {"stamp": version.to_string()}, "max_batch": 16})
}

/// Produce `range` as values through `host`, keyed over 8 keys.
fn produce(host: &Server, range: std::ops::Range<u64>) {
    let records: Vec<Value> = range
        .map(|i| json!({"key": format!("k{}", i % 8), "value": i}))
        .collect();
    for chunk in records.chunks(50) {
        let r = host.post_json("/topics/orders/records", &json!({"records": chunk}));
        assert_eq!(r.status, 200, "{}", r.json);
    }
}

/// Every output of the river read through `host`: input value → version that stamped it.
/// Panics if an input was processed twice.
fn outputs(host: &Server) -> HashMap<u64, u32> {
    let mut stamp_of = HashMap::new();
    for p in 0..4 {
        for (seq, stamp) in host.stamped("stamped", p) {
            assert!(
                stamp_of.insert(seq, stamp).is_none(),
                "input {seq} has two outputs"
            );
        }
    }
    stamp_of
}

/// Wait until `host` shows exactly the outputs of inputs `0..n`.
fn wait_for_outputs(host: &Server, n: u64, timeout: Duration) -> HashMap<u64, u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = outputs(host);
        if seen.len() as u64 >= n || Instant::now() > deadline {
            let mut missing: Vec<u64> = (0..n).filter(|i| !seen.contains_key(i)).collect();
            missing.truncate(10);
            assert!(
                missing.is_empty() && seen.len() as u64 == n,
                "{} outputs for {n} inputs, missing e.g. {missing:?}; log:\n{}",
                seen.len(),
                host.logs()
            );
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_river_deployed_through_one_host_runs_on_both_and_survives_one_dying() {
    let cluster = NatsCluster::start(3);
    let (mut a, b) = two_hosts(&cluster);
    a.create_topic("orders", 4);
    let component = plugin_bytes("stamp_enricher");
    let r = a.deploy(&river(1), &component);
    assert_eq!(r.status, 201, "{}", r.json);
    // b follows the registry: it knows the river without being told.
    b.wait_until("b to load the river", Duration::from_secs(10), |b| {
        b.get("/plugins/stamp").json["active_version"] == 1
    });
    // A client may not write the river's output, through either host.
    let r = b.post_json("/topics/stamped/records", &json!({"value": 1}));
    assert_eq!(r.status, 409, "{}", r.json);

    produce(&b, 0..200);
    let seen = wait_for_outputs(&a, 200, Duration::from_secs(30));
    assert!(seen.values().all(|v| *v == 1));
    assert_eq!(outputs(&b).len(), 200, "both hosts read the same outputs");
    // Both hosts ran partitions: the work is shared.
    let ran = |s: &Server| {
        s.get("/plugins/stamp").json["events_in"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(
        ran(&a) + ran(&b),
        200,
        "each input processed once across the hosts"
    );
    b.wait_until("checkpoints at the end", Duration::from_secs(10), |b| {
        let status = b.get("/plugins/stamp").json;
        status["partitions"]
            .as_array()
            .is_some_and(|ps| ps.len() == 4 && ps.iter().all(|p| p["lag"] == 0))
    });

    // A new version through b: every host switches, nothing is lost or doubled.
    let r = b.deploy(&river(2), &component);
    assert_eq!(
        (r.status, r.json["active_version"].clone()),
        (201, json!(2)),
        "{}",
        r.json
    );
    a.wait_until("a to load version 2", Duration::from_secs(10), |a| {
        a.get("/plugins/stamp").json["active_version"] == 2
    });
    produce(&a, 200..300);
    let seen = wait_for_outputs(&b, 300, Duration::from_secs(30));
    assert!((200..300).all(|i| seen[&i] == 2), "new inputs by version 2");

    // Paused through a: no host processes; resumed through b: all of it, once.
    let r = a.post_json("/plugins/stamp/pause", &json!({}));
    assert_eq!(r.status, 200, "{}", r.json);
    b.wait_until("b to see the pause", Duration::from_secs(10), |b| {
        b.get("/plugins/stamp").json["state"] == "paused"
    });
    std::thread::sleep(Duration::from_secs(2)); // every host's lease round saw it
    produce(&b, 300..320);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(outputs(&a).len(), 300, "nothing processed while paused");
    let r = b.post_json("/plugins/stamp/resume", &json!({}));
    assert_eq!(r.status, 200, "{}", r.json);
    wait_for_outputs(&a, 320, Duration::from_secs(30));

    // kill -9 host a: b takes its partitions over (within the lease TTL) and
    // every input is processed exactly once.
    a.kill();
    produce(&b, 320..400);
    let seen = wait_for_outputs(&b, 400, Duration::from_secs(30));
    assert_eq!(seen.len(), 400);
    assert_eq!(b.get("/plugins/stamp").json["active_version"], 2);
}

/// Produce orders `range` through `host` (customer `c<i % 10>`, amount `i`),
/// folding them into `expected` (customer → {count, sum}).
fn produce_orders(
    host: &Server,
    range: std::ops::Range<u64>,
    expected: &mut HashMap<String, (u64, u64)>,
) {
    let records: Vec<Value> = range
        .map(|i| {
            let customer = format!("c{}", i % 10);
            let e = expected.entry(customer.clone()).or_default();
            e.0 += 1;
            e.1 += i;
            json!({"key": customer, "value": {"customer": customer, "amount": i}})
        })
        .collect();
    for chunk in records.chunks(50) {
        let r = host.post_json("/topics/orders/records", &json!({"records": chunk}));
        assert_eq!(r.status, 200, "{}", r.json);
    }
}

/// Wait until the pond's state read through `host` is exactly `expected`
/// (by a query and by a scan).
fn wait_for_totals(host: &Server, expected: &HashMap<String, (u64, u64)>) {
    let want: serde_json::Map<String, Value> = expected
        .iter()
        .map(|(c, (count, sum))| (c.clone(), json!({"count": count, "sum": sum})))
        .collect();
    let want = Value::Object(want);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = host.post_bytes("/ponds/totals/query", "text/plain", b"");
        if r.status == 200 && r.json == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pond through {}: {} (want {want}); log:\n{}",
            host.url,
            r.json,
            host.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = host.get("/ponds/totals/keys?prefix=c&limit=100");
    assert_eq!(
        r.json["entries"].as_array().map(Vec::len),
        Some(expected.len()),
        "{}",
        r.json
    );
}

#[test]
fn a_pond_runs_on_one_host_reads_through_both_and_moves_when_that_host_dies() {
    let cluster = NatsCluster::start(3);
    let (a, b) = two_hosts(&cluster);
    a.create_topic("orders", 4);
    let pond =
        json!({"name": "totals", "kind": "projection", "inputs": ["orders"], "max_batch": 16});
    let component = plugin_bytes("projection_totals");
    let r = a.deploy(&pond, &component);
    assert_eq!(r.status, 201, "{}", r.json);
    b.wait_until("b to load the pond", Duration::from_secs(10), |b| {
        b.get("/plugins/totals").json["active_version"] == 1
    });

    let mut expected = HashMap::new();
    produce_orders(&b, 0..400, &mut expected);
    // Folded once, whichever host runs it; read the same through both.
    wait_for_totals(&a, &expected);
    wait_for_totals(&b, &expected);
    let ran = |s: &Server| {
        s.get("/plugins/totals").json["events_in"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(ran(&a) + ran(&b), 400, "each order folded once");
    assert!(ran(&a) == 0 || ran(&b) == 0, "one host runs the pond");
    let r = b.get("/ponds/totals/keys/c3");
    assert_eq!(
        r.json["value"],
        json!({"count": 40, "sum": (0..400).filter(|i| i % 10 == 3).sum::<u64>()})
    );

    // A new version through the host that does not run it: the state stays.
    let (mut owner, other) = if ran(&a) > 0 { (a, b) } else { (b, a) };
    let r = other.deploy(
        &json!({"name": "totals", "kind": "projection", "inputs": ["orders"], "max_batch": 8}),
        &component,
    );
    assert_eq!(
        (r.status, r.json["active_version"].clone()),
        (201, json!(2)),
        "{}",
        r.json
    );
    produce_orders(&other, 400..500, &mut expected);
    wait_for_totals(&owner, &expected);
    wait_for_totals(&other, &expected);

    // kill -9 the host running it: the other takes the pond over from its
    // commit stream, and every order is still folded exactly once.
    owner.kill();
    produce_orders(&other, 500..700, &mut expected);
    wait_for_totals(&other, &expected);
    assert!(ran(&other) > 0, "the survivor runs the pond now");
}

#[test]
fn the_readme_pipeline_deployed_through_one_host_runs_across_both() {
    let cluster = NatsCluster::start(3);
    let (mut a, b) = two_hosts(&cluster);
    a.create_topic("orders", 2);
    let deploys = [
        (
            json!({"name": "enrich", "kind": "enricher", "inputs": ["orders"], "outputs": ["orders.enriched"],
                   "config": {"customers_pond": "totals"}}),
            "enricher_orders",
        ),
        (
            json!({"name": "totals", "kind": "projection", "inputs": ["orders.enriched"]}),
            "projection_totals",
        ),
        (
            json!({"name": "bank", "kind": "command-handler"}),
            "command_bank",
        ),
    ];
    for (manifest, plugin) in &deploys {
        let r = a.deploy(manifest, &plugin_bytes(plugin));
        assert_eq!(r.status, 201, "{}", r.json);
    }
    b.wait_until("b to load all three", Duration::from_secs(10), |b| {
        ["enrich", "totals", "bank"]
            .iter()
            .all(|p| b.get(&format!("/plugins/{p}")).json["active_version"] == 1)
    });

    // Orders through b: enriched and folded once, read through both.
    let records: Vec<Value> = (0..20)
        .map(|i| {
            let customer = if i % 2 == 0 { "c1" } else { "c2" };
            json!({"key": customer, "value": {"id": format!("o{i}"), "customer": customer, "amount": 10}})
        })
        .collect();
    let r = b.post_json("/topics/orders/records", &json!({"records": records}));
    assert_eq!(r.status, 200, "{}", r.json);
    for host in [&a, &b] {
        host.wait_until("the pond to fold 20 orders", Duration::from_secs(30), |h| {
            h.get("/ponds/totals/keys/c1").json["value"] == json!({"count": 10, "sum": 100})
                && h.get("/ponds/totals/keys/c2").json["value"] == json!({"count": 10, "sum": 100})
        });
        assert_eq!(host.total_records("orders.enriched"), 20);
    }

    // Commands through either host, answered wherever they are handled.
    let command = |id: &str, name: &str, data: Value| json!({"id": id, "aggregate": "acc-1", "name": name, "data": data});
    let r = b.post_json(
        "/services/bank/commands?wait=true",
        &command("open-1", "open", json!({"owner": "ada"})),
    );
    assert_eq!(
        (r.status, r.json["version"].clone()),
        (200, json!(1)),
        "{}",
        r.json
    );
    let deposit = command("dep-1", "deposit", json!({"amount": 100}));
    let r = a.post_json("/services/bank/commands?wait=true", &deposit);
    assert_eq!(
        (r.status, r.json["version"].clone()),
        (200, json!(2)),
        "{}",
        r.json
    );
    // A retry through the other host answers the first result, appends nothing.
    let r = b.post_json("/services/bank/commands?wait=true", &deposit);
    assert_eq!(
        (r.status, r.json["version"].clone()),
        (200, json!(2)),
        "{}",
        r.json
    );
    let r = a.post_json(
        "/services/bank/commands",
        &command("dep-2", "deposit", json!({"amount": 5})),
    );
    assert_eq!(r.status, 202, "{}", r.json);
    b.wait_until("dep-2's result through b", Duration::from_secs(30), |b| {
        b.get("/services/bank/commands/dep-2").json["version"] == 3
    });
    // Events are forwarded to their topic right after their commit.
    for host in [&a, &b] {
        host.wait_until(
            "3 events, each command applied once",
            Duration::from_secs(10),
            |h| h.total_records("bank.events") == 3,
        );
    }

    // kill -9 a: b runs everything; the account's state carried over.
    a.kill();
    let r = b.post_json(
        "/services/bank/commands?wait=true",
        &command("dep-3", "deposit", json!({"amount": 1})),
    );
    assert!(r.status == 200 || r.status == 202, "{}", r.json);
    b.wait_until(
        "dep-3 handled after the takeover",
        Duration::from_secs(30),
        |b| b.get("/services/bank/commands/dep-3").json["version"] == 4,
    );
    let r = b.post_json(
        "/services/bank/commands?wait=true",
        &command("wd-1", "withdraw", json!({"amount": 106})),
    );
    assert_eq!(
        (r.status, r.json["version"].clone()),
        (200, json!(5)),
        "the balance is 106: {}",
        r.json
    );
    b.wait_until("5 events", Duration::from_secs(10), |b| {
        b.total_records("bank.events") == 5
    });
}

#[test]
fn a_processor_deleted_through_one_host_is_gone_from_both_and_starts_afresh() {
    let cluster = NatsCluster::start(3);
    let (a, b) = two_hosts(&cluster);
    a.create_topic("orders", 4);
    let pond = json!({"name": "totals", "kind": "projection", "inputs": ["orders"]});
    let component = plugin_bytes("projection_totals");
    let r = a.deploy(&pond, &component);
    assert_eq!(r.status, 201, "{}", r.json);
    let mut expected = HashMap::new();
    produce_orders(&b, 0..100, &mut expected);
    wait_for_totals(&a, &expected);
    wait_for_totals(&b, &expected);

    let r = b.delete("/plugins/totals");
    assert_eq!(r.status, 200, "{}", r.json);
    for host in [&a, &b] {
        host.wait_until("the pond to be gone", Duration::from_secs(10), |h| {
            h.get("/plugins/totals").status == 404
        });
        assert_eq!(host.get("/ponds/totals/keys/c1").status, 404);
    }
    assert_eq!(a.delete("/plugins/totals").status, 404, "deleted once");
    // Its input stays; a pond of the same name starts from scratch.
    let r = a.deploy(&pond, &component);
    assert_eq!(
        (r.status, r.json["active_version"].clone()),
        (201, json!(1)),
        "{}",
        r.json
    );
    produce_orders(&a, 100..150, &mut expected);
    wait_for_totals(&a, &expected);
    wait_for_totals(&b, &expected);
}

#[test]
fn a_pond_reset_or_rebuilt_through_one_host_refolds_on_every_host() {
    let cluster = NatsCluster::start(3);
    let (a, b) = two_hosts(&cluster);
    a.create_topic("orders", 4);
    let pond = json!({"name": "totals", "kind": "projection", "inputs": ["orders"]});
    let r = a.deploy(&pond, &plugin_bytes("projection_totals"));
    assert_eq!(r.status, 201, "{}", r.json);
    let mut expected = HashMap::new();
    produce_orders(&b, 0..100, &mut expected);
    wait_for_totals(&a, &expected);
    wait_for_totals(&b, &expected);

    // Back to the beginning without the state: folded again, not twice.
    let r = b.post_json("/plugins/totals/reset", &json!({"to": "beginning"}));
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["state"], "running", "{}", r.json);
    wait_for_totals(&a, &expected);
    wait_for_totals(&b, &expected);

    // A paused pond stays paused; to the end keeping the state, it folds
    // only what comes after.
    assert_eq!(a.post_json("/plugins/totals/pause", &json!({})).status, 200);
    let r = a.post_json(
        "/plugins/totals/reset",
        &json!({"to": "end", "keep_state": true}),
    );
    assert_eq!(
        (r.status, r.json["state"].clone()),
        (200, json!("paused")),
        "{}",
        r.json
    );
    // Produced while paused, then skipped by a second reset to the end.
    let mut skipped = HashMap::new();
    produce_orders(&b, 100..120, &mut skipped);
    let r = a.post_json(
        "/plugins/totals/reset",
        &json!({"to": "end", "keep_state": true}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        b.post_json("/plugins/totals/resume", &json!({})).status,
        200
    );
    produce_orders(&a, 120..150, &mut expected);
    wait_for_totals(&a, &expected);
    wait_for_totals(&b, &expected);

    // A rebuild through one host folds everything from offset 0 beside the
    // live state, which goes on answering, then every host reads the
    // rebuilt one: the skipped orders are in it, nothing is in it twice.
    let before = a.get("/plugins/totals").json["generation"].clone();
    let r = b.post_json("/plugins/totals/rebuild", &json!({}));
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["rebuilding_generation"].is_u64(), "{}", r.json);
    let mut all = expected.clone();
    for (customer, (count, sum)) in skipped {
        let e = all.entry(customer).or_default();
        e.0 += count;
        e.1 += sum;
    }
    produce_orders(&a, 150..170, &mut all);
    wait_for_totals(&a, &all);
    wait_for_totals(&b, &all);
    for host in [&a, &b] {
        let status = host.get("/plugins/totals").json;
        assert_eq!(status["rebuilding_generation"], Value::Null, "{status}");
        assert_ne!(status["generation"], before, "{status}");
    }
    // The rebuilt generation goes on folding where it runs and is followed
    // by the other host.
    produce_orders(&b, 170..200, &mut all);
    wait_for_totals(&a, &all);
    wait_for_totals(&b, &all);
}
