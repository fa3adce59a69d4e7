//! Hot swap under load: an enricher is upgraded 50 times while events flow.
//! Every input must appear exactly once in the output, and along each input
//! partition the version that processed the events never goes back (each
//! partition switches at a batch boundary to the version current then).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_testkit::plugins::plugin_bytes;

use crate::start;

const PARTITIONS: u32 = 4;
const UPGRADES: u32 = 50;

fn manifest(version: u32) -> Value {
    json!({"name": "swap", "kind": "enricher", "inputs": ["in"], "outputs": ["out"],
           "config": {"stamp": version.to_string()}, "max_batch": 64})
}

#[test]
fn fifty_upgrades_under_load_lose_and_duplicate_nothing() {
    let s = start(&["--fsync", "never"]);
    s.create_topic("in", PARTITIONS);
    let component = plugin_bytes("stamp_enricher");
    assert_eq!(s.deploy(&manifest(1), &component).status, 201);

    // A producer: batches of 40 unique sequence numbers, keyed over 16 keys.
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (url, done) = (s.url.clone(), done.clone());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut placed: HashMap<u64, (u64, u64)> = HashMap::new();
            let mut seq = 0u64;
            while !done.load(Ordering::Relaxed) || seq < 2_000 {
                let records: Vec<Value> = (seq..seq + 40)
                    .map(|i| json!({"key": format!("k{}", i % 16), "value": i}))
                    .collect();
                let mut resp = agent
                    .post(format!("{url}/topics/in/records"))
                    .header("content-type", "application/json")
                    .send(json!({"records": records}).to_string())
                    .expect("produce");
                let body: Value = resp.body_mut().read_json().expect("produce answer");
                for (i, at) in body["records"]
                    .as_array()
                    .expect("placed records")
                    .iter()
                    .enumerate()
                {
                    placed.insert(
                        seq + i as u64,
                        (
                            at["partition"].as_u64().unwrap(),
                            at["offset"].as_u64().unwrap(),
                        ),
                    );
                }
                seq += 40;
            }
            placed
        })
    };

    let mut slowest = Duration::ZERO;
    for version in 2..=UPGRADES + 1 {
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        let r = s.deploy(&manifest(version), &component);
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            (r.status, r.json["active_version"].as_u64()),
            (201, Some(version as u64)),
            "{}",
            r.json
        );
    }
    done.store(true, Ordering::Relaxed);
    let placed = producer.join().expect("producer");
    let produced = placed.len() as u64;
    eprintln!(
        "hot swap: {UPGRADES} upgrades while producing {produced} events; slowest deploy {slowest:?}"
    );

    s.wait_until(
        "the enricher to process everything",
        Duration::from_secs(60),
        |s| s.total_records("out") >= produced,
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.total_records("out"),
        produced,
        "more outputs than inputs: something was processed twice"
    );

    // Exactly once: every sequence number once.
    let mut stamp_of: HashMap<u64, u32> = HashMap::new();
    for p in 0..PARTITIONS {
        for (seq, stamp) in s.stamped("out", p) {
            assert!(
                stamp_of.insert(seq, stamp).is_none(),
                "event {seq} was processed twice"
            );
        }
    }
    assert_eq!(stamp_of.len() as u64, produced, "events were lost");

    // Along each input partition the version never goes back.
    let mut by_input: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for (seq, at) in &placed {
        by_input.insert(*at, stamp_of[seq]);
    }
    let mut last: HashMap<u64, u32> = HashMap::new();
    let mut versions_seen = std::collections::BTreeSet::new();
    for ((partition, offset), stamp) in by_input {
        let prev = last.insert(partition, stamp).unwrap_or(1);
        assert!(
            stamp >= prev,
            "partition {partition} offset {offset}: version {stamp} after {prev}"
        );
        versions_seen.insert(stamp);
    }
    assert!(
        versions_seen.len() > 10,
        "too few versions processed events: {versions_seen:?}"
    );
    let r = s.get("/plugins/swap");
    assert_eq!(
        r.json["versions"].as_array().map(Vec::len),
        Some(UPGRADES as usize + 1)
    );
    assert_eq!(r.json["active_version"], UPGRADES + 1);
    // Rollback is one call.
    let r = s.post_json("/plugins/swap/rollback", &json!({"version": 1}));
    assert_eq!((r.status, &r.json["active_version"]), (200, &json!(1)));
}
