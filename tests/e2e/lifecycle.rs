//! Restarts: a graceful stop exits 0 and keeps everything; after kill -9 the
//! acknowledged records are still there.

use serde_json::json;

use crate::start;

#[test]
fn graceful_stop_and_restart_keep_topics_and_records() {
    let mut s = start(&[]);
    s.create_topic("keep", 2);
    for i in 0..50 {
        assert_eq!(
            s.post_json(
                "/topics/keep/records",
                &json!({"key": format!("k{i}"), "value": i})
            )
            .status,
            200
        );
    }
    let status = s.stop();
    assert!(
        status.success(),
        "weir exited with {status:?}; log:\n{}",
        s.logs()
    );
    s.restart();
    let total: usize = (0..2).map(|p| s.read_all("keep", p).len()).sum();
    assert_eq!(total, 50);
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let mut s = start(&["--fsync", "always"]);
    s.create_topic("durable", 1);
    let batch: Vec<_> = (0..100).map(|i| json!({"value": i})).collect();
    for _ in 0..5 {
        assert_eq!(
            s.post_json("/topics/durable/records", &json!({"records": batch}))
                .status,
            200
        );
    }
    s.kill();
    s.restart();
    let all = s.read_all("durable", 0);
    assert_eq!(all.len(), 500);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, r)| r["offset"] == i as u64 && r["value"] == (i % 100) as u64)
    );
    // And the log keeps going from there.
    assert_eq!(
        s.post_json("/topics/durable/records", &json!({"value": "after"}))
            .json["offset"],
        500
    );
}

/// Stop (gracefully, or with kill -9) while an enricher is busy, restart,
/// and check every input reached the output exactly once.
fn interrupt_processing_then_check_exactly_once(kill: bool) {
    use std::collections::HashSet;
    use std::time::Duration;
    let mut s = start(&["--fsync", "always"]);
    s.create_topic("in", 2);
    let manifest = json!({"name": "st", "kind": "enricher", "inputs": ["in"], "outputs": ["out"],
                          "config": {"stamp": "1"}, "max_batch": 50});
    assert_eq!(
        s.deploy(
            &manifest,
            &weir_testkit::plugins::plugin_bytes("stamp_enricher")
        )
        .status,
        201
    );
    let mut total = 0u64;
    for chunk in 0..20u64 {
        let records: Vec<_> = (0..250)
            .map(|i| json!({"key": format!("k{i}"), "value": chunk * 250 + i}))
            .collect();
        assert_eq!(
            s.post_json("/topics/in/records", &json!({"records": records}))
                .status,
            200
        );
        total += 250;
    }
    if kill {
        s.kill();
    } else {
        let status = s.stop();
        assert!(status.success(), "{status:?}; log:\n{}", s.logs());
    }
    s.restart();
    s.wait_until(
        "the enricher to finish after the restart",
        Duration::from_secs(60),
        |s| s.total_records("out") >= total,
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut seen = HashSet::new();
    for p in 0..2 {
        for r in s.read_all("out", p) {
            assert!(
                seen.insert(r["value"].as_u64().unwrap()),
                "{} was processed twice",
                r["value"]
            );
        }
    }
    assert_eq!(seen.len() as u64, total, "inputs were lost");
}

#[test]
fn sigterm_while_processing_keeps_exactly_once() {
    interrupt_processing_then_check_exactly_once(false);
}

#[test]
fn kill_9_while_processing_keeps_exactly_once() {
    interrupt_processing_then_check_exactly_once(true);
}

#[test]
fn sigterm_ends_long_polls_and_exits_promptly() {
    use std::time::{Duration, Instant};
    let mut s = start(&[]);
    s.create_topic("quiet", 1);
    let url = s.url.clone();
    let poll = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .get(format!(
                "{url}/topics/quiet/partitions/0/records?wait_ms=25000"
            ))
            .call()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = s.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for the long poll: {:?}",
        started.elapsed()
    );
    // The poll got its (empty) answer instead of a reset connection.
    assert_eq!(poll.join().unwrap().ok(), Some(200));
}
