//! Behaviour of the public API on a healthy log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{open, rec};
use crate::batch::{Record, RecordBatch};
use crate::log::{EventLog, FsyncPolicy, LogError, TopicConfig};

fn small(partitions: u32) -> TopicConfig {
    TopicConfig {
        partitions,
        segment_bytes: 1024,
        ..TopicConfig::default()
    }
}

fn values(b: &RecordBatch) -> Vec<String> {
    (0..b.len())
        .map(|i| String::from_utf8_lossy(b.value(i)).into_owned())
        .collect()
}

#[test]
fn topics_are_created_listed_persisted_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), FsyncPolicy::Never);
        let info = log
            .create_topic("orders", TopicConfig::with_partitions(3))
            .expect("create");
        assert_eq!(info.partitions.len(), 3);
        assert_eq!(log.topic_meta("orders").ok(), Some(info.meta()));
        assert_eq!(log.bounds("orders", 2).ok(), Some((0, 0)));
        assert!(matches!(
            log.topic_meta("nope"),
            Err(LogError::UnknownTopic(_))
        ));
        assert!(matches!(
            log.create_topic("orders", TopicConfig::default()),
            Err(LogError::TopicExists(_))
        ));
        assert!(matches!(
            log.create_topic("../x", TopicConfig::default()),
            Err(LogError::InvalidName { .. })
        ));
        assert!(matches!(
            log.create_topic("x", TopicConfig::with_partitions(0)),
            Err(LogError::InvalidConfig(_))
        ));
        assert!(matches!(log.topic("nope"), Err(LogError::UnknownTopic(_))));
        assert!(matches!(
            log.append("orders", 3, &[rec("", "v", 1)]),
            Err(LogError::InvalidPartition { partition: 3, .. })
        ));
        log.create_topic("gone", TopicConfig::default())
            .expect("create");
        log.append("orders", 1, &[rec("k", "v", 1)])
            .expect("append");
        log.delete_topic("gone").expect("delete");
        assert!(matches!(
            log.delete_topic("gone"),
            Err(LogError::UnknownTopic(_))
        ));
    }
    let log = open(dir.path(), FsyncPolicy::Never);
    let names: Vec<String> = log.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["orders".to_string()]);
    let info = log.topic("orders").expect("topic");
    assert_eq!(info.config.partitions, 3);
    assert_eq!(info.partitions[1].end_offset, 1);
    assert!(!dir.path().join("gone").exists());
}

#[test]
fn append_and_read_with_limits_and_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), FsyncPolicy::Never);
    log.create_topic("t", small(1)).expect("create");
    let mut with_headers = rec("k", "first", 10);
    with_headers.headers = vec![("h".into(), b"1".to_vec())];
    let ack = log
        .append("t", 0, &[with_headers.clone(), rec("", "second", 11)])
        .expect("append");
    assert_eq!((ack.base_offset, ack.count), (0, 2));
    let ack = log
        .append("t", 0, &[rec("k2", "third", 12)])
        .expect("append");
    assert_eq!(ack.base_offset, 2);
    let all = log.read("t", 0, 0, 100, 1 << 20).expect("read");
    assert!(all.validate().is_ok());
    assert_eq!(all.offsets, vec![0, 1, 2]);
    assert_eq!(all.record(0), with_headers);
    assert_eq!(
        values(&log.read("t", 0, 1, 1, 1 << 20).expect("read")),
        vec!["second"]
    );
    // max_bytes smaller than one record still returns that record.
    assert_eq!(log.read("t", 0, 1, 10, 1).expect("read").len(), 1);
    assert!(
        log.read("t", 0, 3, 10, 100)
            .expect("read at end")
            .is_empty()
    );
    assert!(matches!(
        log.read("t", 0, 4, 10, 100),
        Err(LogError::OffsetOutOfRange {
            offset: 4,
            start: 0,
            end: 3
        })
    ));
    // Columnar appends keep headers.
    let batch = RecordBatch::from_records(0, &[with_headers.clone(), rec("x", "y", 13)]);
    assert_eq!(
        log.append_batch("t", 0, &batch)
            .expect("append batch")
            .base_offset,
        3
    );
    assert_eq!(
        log.read("t", 0, 3, 10, 1 << 20).expect("read").record(0),
        with_headers
    );
}

#[test]
fn segments_roll_by_size_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected: Vec<Record> = (0..300)
        .map(|i| rec(&format!("k{}", i % 7), &format!("value-{i:04}"), i))
        .collect();
    {
        let log = open(dir.path(), FsyncPolicy::Interval(Duration::from_millis(5)));
        log.create_topic("t", small(1)).expect("create");
        for chunk in expected.chunks(7) {
            log.append("t", 0, chunk).expect("append");
        }
    }
    let segments = std::fs::read_dir(dir.path().join("t/0"))
        .expect("ls")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        });
    assert!(segments.count() > 5, "small segments roll");
    let log = open(dir.path(), FsyncPolicy::Never);
    let mut got = Vec::new();
    let mut from = 0;
    while from < 300 {
        let b = log.read("t", 0, from, 13, 1 << 20).expect("read");
        assert!(!b.is_empty());
        got.extend((0..b.len()).map(|i| b.record(i)));
        from = b.offsets[b.len() - 1] + 1;
    }
    assert_eq!(got, expected);
    assert_eq!(
        log.offset_for_timestamp("t", 0, 150).expect("ts"),
        Some(150)
    );
    assert_eq!(log.offset_for_timestamp("t", 0, 1000).expect("ts"), None);
    assert_eq!(
        log.append("t", 0, &[rec("", "next", 1)])
            .expect("append")
            .base_offset,
        300
    );
}

#[test]
fn deferred_appends_publish_and_truncate() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), FsyncPolicy::Always);
        log.create_topic("out", small(1)).expect("create");
        log.append("out", 0, &[rec("", "a", 1)]).expect("append");
        let ack = log
            .append_deferred("out", 0, &[rec("", "b", 2), rec("", "c", 3)])
            .expect("deferred");
        assert_eq!(ack.base_offset, 1);
        assert_eq!(log.end_offset("out", 0).expect("end"), 1);
        assert_eq!(log.written_end("out", 0).expect("end"), 3);
        assert_eq!(log.read("out", 0, 0, 10, 1 << 20).expect("read").len(), 1);
        assert!(
            !log.wait_for("out", 0, 1, Duration::from_millis(10))
                .expect("wait")
        );
        log.publish("out", 0, 3).expect("publish");
        assert_eq!(
            values(&log.read("out", 0, 0, 10, 1 << 20).expect("read")),
            vec!["a", "b", "c"]
        );
        assert!(matches!(
            log.truncate("out", 0, 2, false),
            Err(LogError::InvalidArgument(_))
        ));
        // An uncommitted tail: cut back mid-batch, offsets reassigned.
        log.append_deferred(
            "out",
            0,
            &[rec("", "d", 4), rec("", "e", 5), rec("", "f", 6)],
        )
        .expect("deferred");
        log.truncate("out", 0, 4, false).expect("truncate");
        assert_eq!(log.written_end("out", 0).expect("end"), 4);
        assert_eq!(
            log.append("out", 0, &[rec("", "g", 7)])
                .expect("append")
                .base_offset,
            4
        );
        assert_eq!(
            values(&log.read("out", 0, 0, 10, 1 << 20).expect("read")),
            vec!["a", "b", "c", "d", "g"]
        );
        log.truncate("out", 0, 1, true).expect("forced truncate");
        assert_eq!(log.end_offset("out", 0).expect("end"), 1);
        log.append_deferred("out", 0, &[rec("", "h", 8)])
            .expect("deferred");
    }
    // On open the visible end is the recovered end.
    let log = open(dir.path(), FsyncPolicy::Always);
    assert_eq!(
        values(&log.read("out", 0, 0, 10, 1 << 20).expect("read")),
        vec!["a", "h"]
    );
}

#[test]
fn waiting_is_woken_by_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path(), FsyncPolicy::Never));
    log.create_topic("t", TopicConfig::default())
        .expect("create");
    let mut rx = log.watch_end("t", 0).expect("watch");
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            log.append("t", 0, &[rec("", "x", 1)])
                .map(|a| a.base_offset)
        })
    };
    let t0 = Instant::now();
    assert!(
        log.wait_for("t", 0, 0, Duration::from_secs(10))
            .expect("wait")
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(matches!(writer.join(), Ok(Ok(0))));
    assert!(
        !log.wait_for("t", 0, 1, Duration::from_millis(20))
            .expect("wait")
    );
    // Deleting a topic wakes its waiters.
    log.create_topic("doomed", TopicConfig::default())
        .expect("create");
    let waiter = {
        let log = log.clone();
        std::thread::spawn(move || log.wait_for("doomed", 0, 0, Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_millis(30));
    let t1 = Instant::now();
    log.delete_topic("doomed").expect("delete");
    // (A waiter that arrives after the deletion gets UnknownTopic instead.)
    assert!(matches!(
        waiter.join(),
        Ok(Ok(false)) | Ok(Err(LogError::UnknownTopic(_)))
    ));
    assert!(t1.elapsed() < Duration::from_secs(10));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let log2 = log.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let _ = log2.append("t", 0, &[rec("", "y", 2)]);
    });
    let end = rt.block_on(async move {
        while *rx.borrow_and_update() < 2 {
            if rx.changed().await.is_err() {
                break;
            }
        }
        *rx.borrow()
    });
    assert_eq!(end, 2);
}

#[test]
fn group_commit_gives_unique_contiguous_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path(), FsyncPolicy::Always));
    log.create_topic("t", small(1)).expect("create");
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        log.append("t", 0, &[rec("", &format!("{t}-{i}"), 0)])
                            .map(|a| a.base_offset)
                    })
                    .collect::<Result<Vec<u64>, _>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().ok().and_then(Result::ok).unwrap_or_default())
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..160).collect::<Vec<u64>>());
    assert_eq!(log.read("t", 0, 0, 1000, 1 << 20).expect("read").len(), 160);
}

/// Many appenders at once (most of them queued and written by another
/// thread's combined write): every ack names exactly the offsets where
/// that append's records are, in order, across segment rolls.
#[test]
fn concurrent_appends_land_at_their_acked_offsets() {
    for (fsync, threads, appends) in [(FsyncPolicy::Never, 32, 150), (FsyncPolicy::Always, 16, 30)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(open(dir.path(), fsync));
        log.create_topic("t", small(1)).expect("create");
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..appends {
                        // 1–3 records per append, with a key and a header.
                        let records: Vec<Record> = (0..1 + (t + i) % 3)
                            .map(|j| {
                                let mut r =
                                    rec(&format!("k{t}"), &format!("{t}-{i}-{j}"), i as i64);
                                r.headers.push(("h".into(), vec![j as u8]));
                                r
                            })
                            .collect();
                        let ack = log.append("t", 0, &records).map_err(|e| e.to_string())?;
                        if ack.count as usize != records.len() {
                            return Err(format!("ack {ack:?} for {} records", records.len()));
                        }
                        acked.push((ack.base_offset, records));
                    }
                    Ok::<_, String>(acked)
                })
            })
            .collect();
        let mut acked = Vec::new();
        for h in handles {
            acked.extend(h.join().expect("appender").expect("appends"));
        }
        let total: usize = acked.iter().map(|(_, r)| r.len()).sum();
        let all = log.read("t", 0, 0, total + 1, 1 << 30).expect("read");
        assert_eq!(all.len(), total, "{fsync}: nothing lost, nothing extra");
        assert_eq!(all.offsets, (0..total as u64).collect::<Vec<_>>());
        for (base, records) in &acked {
            for (j, r) in records.iter().enumerate() {
                assert_eq!(
                    &all.record(*base as usize + j),
                    r,
                    "{fsync}: offset {}",
                    base + j as u64
                );
            }
        }
    }
}

#[test]
fn retention_deletes_old_segments_by_size_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), FsyncPolicy::Never);
    let cfg = TopicConfig {
        retention_bytes: Some(3000),
        ..small(1)
    };
    log.create_topic("sized", cfg).expect("create");
    let aged = TopicConfig {
        retention_ms: Some(60_000),
        ..small(1)
    };
    log.create_topic("aged", aged).expect("create");
    let now = super::super::now_ms();
    for i in 0..200 {
        let r = rec(
            "",
            &format!("{i:060}"),
            if i < 100 { now - 3_600_000 } else { now },
        );
        log.append("sized", 0, std::slice::from_ref(&r))
            .expect("append");
        log.append("aged", 0, &[r]).expect("append");
    }
    let reader = log
        .read("sized", 0, 0, 1000, 1 << 20)
        .expect("read before retention");
    log.run_maintenance().expect("maintenance");
    assert_eq!(
        reader.len(),
        200,
        "a batch read before retention is unaffected"
    );
    let info = log.topic("sized").expect("info");
    let p = info.partitions[0];
    assert!(
        p.start_offset > 0 && p.size_bytes >= 3000 && p.size_bytes < 3000 + 1100,
        "{p:?}"
    );
    match log.read("sized", 0, 0, 10, 100) {
        Err(LogError::OffsetOutOfRange {
            start, end: 200, ..
        }) => assert_eq!(start, p.start_offset),
        other => panic!("expected out of range, got {other:?}"),
    }
    let b = log
        .read("sized", 0, p.start_offset, 1000, 1 << 20)
        .expect("read");
    assert_eq!(b.offsets.first(), Some(&p.start_offset));
    assert_eq!(b.offsets.last(), Some(&199));
    let start = log.start_offset("aged", 0).expect("start");
    assert!(
        start > 50 && start <= 100,
        "old segments go, recent stay: start {start}"
    );
}

#[test]
fn compaction_keeps_latest_per_key_and_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path(), FsyncPolicy::Never));
    let cfg = TopicConfig {
        compaction: true,
        delete_retention_ms: 1000,
        ..small(1)
    };
    log.create_topic("c", cfg).expect("create");
    let now = super::super::now_ms();
    let mut all = Vec::new();
    for i in 0..400i64 {
        let key = format!("key{}", i % 10);
        // key9 gets deleted early with an old tombstone; key8's tombstone is fresh.
        let r = match i {
            100 => rec("key9", "", now - 10_000),
            390 => rec("key8", "", now),
            _ if i > 100 && i % 10 == 9 => rec("", &format!("keyless-{i}"), now),
            _ => rec(&key, &format!("v{i}"), now),
        };
        all.push(r.clone());
        log.append("c", 0, &[r]).expect("append");
    }
    // A reader in flight: reads through the log while compaction runs.
    let reader = {
        let log = log.clone();
        let all = all.clone();
        std::thread::spawn(move || -> Result<usize, String> {
            let mut checked = 0;
            for _ in 0..20 {
                let mut from = 0;
                while from < 400 {
                    let b = log
                        .read("c", 0, from, 37, 1 << 20)
                        .map_err(|e| e.to_string())?;
                    for i in 0..b.len() {
                        if b.record(i) != all[b.offsets[i] as usize] {
                            return Err(format!("wrong record at {}", b.offsets[i]));
                        }
                        checked += 1;
                    }
                    from = b.offsets.last().map_or(400, |o| o + 1);
                }
            }
            Ok(checked)
        })
    };
    log.run_maintenance().expect("compaction");
    assert!(matches!(reader.join(), Ok(Ok(n)) if n > 0));
    let b = log.read("c", 0, 0, 10_000, 1 << 30).expect("read");
    assert!(
        b.len() < 200,
        "compaction removed records ({} left)",
        b.len()
    );
    for i in 0..b.len() {
        assert_eq!(b.record(i), all[b.offsets[i] as usize], "offsets unchanged");
    }
    for k in 0..9 {
        let key = format!("key{k}");
        let latest = all
            .iter()
            .rposition(|r| r.key == key.as_bytes())
            .expect("key exists") as u64;
        assert!(
            b.offsets.contains(&latest),
            "latest of {key} ({latest}) survives"
        );
    }
    assert!(
        !b.offsets.contains(&100) || b.offsets.last() == Some(&100),
        "expired tombstone dropped"
    );
    let keyless = (0..b.len()).filter(|&i| b.key(i).is_empty()).count();
    assert_eq!(
        keyless,
        all.iter().filter(|r| r.key.is_empty()).count(),
        "keyless records kept"
    );
    // Reads from an offset inside a removed range move on to the next record.
    let first_gap = (0..400u64).find(|o| !b.offsets.contains(o)).expect("a gap");
    let next = log
        .read("c", 0, first_gap, 1, 1 << 20)
        .expect("read in gap");
    assert!(next.offsets[0] > first_gap);
    drop(log);
    let log = open(dir.path(), FsyncPolicy::Never);
    assert_eq!(
        log.read("c", 0, 0, 10_000, 1 << 30)
            .expect("read after reopen"),
        b
    );
}

#[test]
fn interval_policy_syncs_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), FsyncPolicy::Interval(Duration::from_millis(10)));
    log.create_topic("t", TopicConfig::default())
        .expect("create");
    log.append("t", 0, &[rec("", "x", 1)]).expect("append");
    let p = log.inner.partition("t", 0).expect("partition");
    let t0 = Instant::now();
    while p.durable_end() < 1 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(p.durable_end(), 1);
}
