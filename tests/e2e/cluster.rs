//! Cluster mode's backend (issue #11): the suite runs its own NATS
//! JetStream cluster on loopback. Steps of the cluster mode build on this.

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

    // Processors need the cluster commit protocol: refused, clearly.
    let r = a.deploy(
        &json!({"name": "stamp", "kind": "enricher", "inputs": ["orders"], "outputs": ["stamped"]}),
        &plugin_bytes("stamp_enricher"),
    );
    assert_eq!(r.status, 501, "{}", r.json);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("JetStream"),
        "{}",
        r.json
    );

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
