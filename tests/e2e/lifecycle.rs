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
