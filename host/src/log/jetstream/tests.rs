//! The JetStream backend against a real three-node cluster on loopback, with
//! two `JetStreamLog`s standing for two weir hosts. One cluster serves every
//! check (starting one takes seconds); each check uses its own topics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_testkit::nats::NatsCluster;

use super::*;

fn hosts(cluster: &NatsCluster) -> (JetStreamLog, JetStreamLog) {
    let servers: Vec<String> = cluster.urls().split(',').map(String::from).collect();
    let open = |servers: Vec<String>| {
        JetStreamLog::open(&NatsConfig::new(servers)).expect("connecting to the test cluster")
    };
    // Each host knows a different first server, as hosts on several machines would.
    let mut rotated = servers.clone();
    rotated.rotate_left(1);
    (open(servers), open(rotated))
}

fn rec(key: &str, value: &str) -> Record {
    Record {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        headers: vec![("h".into(), vec![0, 255])],
        timestamp: 1_000,
    }
}

fn values(batch: &RecordBatch) -> Vec<String> {
    (0..batch.len())
        .map(|i| String::from_utf8_lossy(batch.value(i)).into_owned())
        .collect()
}

#[test]
fn the_jetstream_log_keeps_the_event_log_contract_across_hosts() {
    // The shared cluster's default namespace ("weir") is this test's alone.
    let cluster = NatsCluster::shared();
    let (a, b) = hosts(cluster);
    topics_are_shared_and_created_once(&a, &b);
    appends_get_dense_offsets_and_read_back_on_the_other_host(&a, &b);
    sequential_reads_go_on_through_one_cursor(&a);
    concurrent_appends_from_two_hosts_stay_dense_and_contiguous(Arc::new(a), Arc::new(b));
    let (a, b) = hosts(cluster);
    waiting_wakes_on_the_other_hosts_append(&a, &b);
    bad_requests_fail_clearly_and_change_nothing(&a);
    compaction_keeps_the_latest_record_per_key(&a);
    deletion_through_one_host_is_seen_by_the_other(&a, &b);
    orphan_streams_are_swept_and_live_ones_kept(&a);
    streams_are_replicated_on_every_node(cluster);
}

fn topics_are_shared_and_created_once(a: &JetStreamLog, b: &JetStreamLog) {
    let info = a
        .create_topic("orders.v1", TopicConfig::with_partitions(3))
        .expect("create");
    assert_eq!(info.partitions.len(), 3);
    assert!(
        info.partitions
            .iter()
            .all(|p| p.start_offset == 0 && p.end_offset == 0)
    );
    assert!(matches!(
        b.create_topic("orders.v1", TopicConfig::with_partitions(1)),
        Err(LogError::TopicExists(_))
    ));
    let seen = b
        .topic("orders.v1")
        .expect("visible through the other host");
    assert_eq!(seen.incarnation, info.incarnation);
    assert_eq!(seen.config.partitions, 3);
    let names: Vec<String> = b.topics().into_iter().map(|t| t.name).collect();
    assert!(names.contains(&"orders.v1".to_string()), "{names:?}");
    assert!(b.partition_for("orders.v1", b"customer-7").expect("keyed") < 3);
    assert_eq!(
        a.partition_for("orders.v1", b"customer-7").ok(),
        b.partition_for("orders.v1", b"customer-7").ok()
    );
}

fn appends_get_dense_offsets_and_read_back_on_the_other_host(a: &JetStreamLog, b: &JetStreamLog) {
    let one = a.append("orders.v1", 1, &[rec("k", "v0")]).expect("single");
    assert_eq!((one.base_offset, one.count), (0, 1));
    let many: Vec<Record> = (1..=4).map(|i| rec("k", &format!("v{i}"))).collect();
    let ack = b.append("orders.v1", 1, &many).expect("batch");
    assert_eq!((ack.base_offset, ack.count), (1, 4));
    assert_eq!(a.end_offset("orders.v1", 1).ok(), Some(5));
    assert_eq!(a.start_offset("orders.v1", 1).ok(), Some(0));
    assert_eq!(b.bounds("orders.v1", 1).ok(), Some((0, 5)));
    let meta = b.topic_meta("orders.v1").expect("meta");
    assert_eq!(
        (meta.partitions(), meta.incarnation),
        (3, a.topic("orders.v1").expect("info").incarnation)
    );
    let all = a.read("orders.v1", 1, 0, 100, 1 << 20).expect("read");
    assert_eq!(all.offsets, vec![0, 1, 2, 3, 4]);
    assert_eq!(values(&all), ["v0", "v1", "v2", "v3", "v4"]);
    assert_eq!(all.record(2), rec("k", "v2"));
    let tail = b.read("orders.v1", 1, 3, 1, 1 << 20).expect("read one");
    assert_eq!(tail.offsets, vec![3]);
    let small = b.read("orders.v1", 1, 0, 100, 1).expect("read by bytes");
    assert_eq!(small.len(), 1, "at least one record even past max_bytes");
    assert!(
        b.read("orders.v1", 1, 5, 100, 1 << 20)
            .expect("at end")
            .is_empty()
    );
    assert_eq!(
        b.offset_for_timestamp("orders.v1", 1, 1_000).ok(),
        Some(Some(0))
    );
    assert_eq!(
        b.offset_for_timestamp("orders.v1", 1, 1_001).ok(),
        Some(None)
    );
    assert!(
        a.read("orders.v1", 0, 0, 10, 1 << 20)
            .expect("empty")
            .is_empty()
    );
}

fn sequential_reads_go_on_through_one_cursor(a: &JetStreamLog) {
    a.create_topic("paged", TopicConfig::with_partitions(1))
        .expect("create");
    let records: Vec<Record> = (0..7).map(|i| rec("k", &format!("v{i}"))).collect();
    a.append("paged", 0, &records).expect("append");
    let before = a.cursors.len();
    let mut seen = Vec::new();
    let mut at = 0;
    while at < 7 {
        let page = a.read("paged", 0, at, 3, 1 << 20).expect("page");
        assert!(!page.is_empty() && page.len() <= 3, "{:?}", page.offsets);
        seen.extend(values(&page));
        at = page.offsets.last().map_or(at, |o| o + 1);
    }
    // The first page was a direct get; the reader went on, so one cursor follows it.
    assert_eq!(a.cursors.len(), before + 1, "one cursor follows the reader");
    assert_eq!(seen, (0..7).map(|i| format!("v{i}")).collect::<Vec<_>>());
    // New records after the reader caught up come through the same cursor.
    a.append("paged", 0, &[rec("k", "v7")]).expect("append");
    assert_eq!(
        values(&a.read("paged", 0, 7, 10, 1 << 20).expect("read")),
        ["v7"]
    );
    // A byte limit stops a page early without losing the record it stopped at.
    let big: Vec<Record> = (8..11)
        .map(|i| rec("k", &format!("v{i}{}", "x".repeat(100))))
        .collect();
    a.append("paged", 0, &big).expect("append");
    let first = a.read("paged", 0, 8, 10, 150).expect("read");
    assert_eq!(first.offsets, vec![8]);
    let rest = a.read("paged", 0, 9, 10, 1 << 20).expect("read");
    assert_eq!(rest.offsets, vec![9, 10]);
    // A read elsewhere is a direct get: no consumer is created for it.
    assert_eq!(
        values(&a.read("paged", 0, 2, 1, 1 << 20).expect("read")),
        ["v2"]
    );
    assert_eq!(a.cursors.len(), before + 1);
    a.delete_topic("paged").expect("delete");
    assert_eq!(a.cursors.len(), before);
}

fn concurrent_appends_from_two_hosts_stay_dense_and_contiguous(
    a: Arc<JetStreamLog>,
    b: Arc<JetStreamLog>,
) {
    a.create_topic("race", TopicConfig::with_partitions(1))
        .expect("create");
    let writers: Vec<_> = [("a", a.clone()), ("b", b.clone())]
        .into_iter()
        .map(|(who, log)| {
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for n in 0..30 {
                    let batch: Vec<Record> = (0..5)
                        .map(|i| rec(who, &format!("{who}-{n}-{i}")))
                        .collect();
                    acks.push(log.append("race", 0, &batch).expect("append"));
                }
                acks
            })
        })
        .collect();
    let mut acks: Vec<AppendAck> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread"))
        .collect();
    acks.sort_by_key(|a| a.base_offset);
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(
            ack.base_offset,
            i as u64 * 5,
            "dense, never reused: {acks:?}"
        );
    }
    let all = b.read("race", 0, 0, 1000, 1 << 20).expect("read");
    assert_eq!(all.len(), 300);
    for chunk in values(&all).chunks(5) {
        // Every append's records are consecutive (one atomic batch).
        let prefix = chunk[0].rsplit_once('-').map(|(p, _)| p.to_string());
        for (i, v) in chunk.iter().enumerate() {
            assert_eq!(
                Some(v.as_str()),
                prefix.as_ref().map(|p| format!("{p}-{i}")).as_deref()
            );
        }
    }
    a.delete_topic("race").expect("delete");
}

fn waiting_wakes_on_the_other_hosts_append(a: &JetStreamLog, b: &JetStreamLog) {
    a.create_topic("waits", TopicConfig::with_partitions(2))
        .expect("create");
    assert_eq!(
        b.wait_for("waits", 0, 0, Duration::from_millis(200)).ok(),
        Some(false)
    );
    let mut end = b.watch_end("waits", 1).expect("watch");
    assert_eq!(*end.borrow(), 0);
    let woke = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let started = Instant::now();
            let woke = b.wait_for("waits", 0, 0, Duration::from_secs(5)).ok();
            (woke, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        a.append("waits", 0, &[rec("x", "1")]).expect("append");
        waiter.join().expect("waiter thread")
    });
    assert_eq!(woke.0, Some(true));
    assert!(
        woke.1 < Duration::from_secs(4),
        "woken by the append, not the timeout: {woke:?}"
    );
    a.append("waits", 1, &[rec("x", "1"), rec("x", "2")])
        .expect("append");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let seen = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), end.wait_for(|&e| e >= 2))
            .await
            .map(|r| r.map(|e| *e))
    });
    assert!(matches!(seen, Ok(Ok(2))), "{seen:?}");
    a.delete_topic("waits").expect("delete");
}

fn bad_requests_fail_clearly_and_change_nothing(a: &JetStreamLog) {
    a.create_topic("strict", TopicConfig::with_partitions(1))
        .expect("create");
    assert!(matches!(a.topic("nope"), Err(LogError::UnknownTopic(_))));
    assert!(matches!(
        a.append("strict", 1, &[rec("k", "v")]),
        Err(LogError::InvalidPartition { partitions: 1, .. })
    ));
    assert!(matches!(
        a.create_topic("bad name", TopicConfig::default()),
        Err(LogError::InvalidName { .. })
    ));
    assert!(matches!(
        a.create_topic("zero", TopicConfig::with_partitions(0)),
        Err(LogError::InvalidConfig(_))
    ));
    let too_many: Vec<Record> = (0..=MAX_APPEND_RECORDS).map(|_| rec("k", "v")).collect();
    assert!(matches!(
        a.append("strict", 0, &too_many),
        Err(LogError::TooManyRecords { .. })
    ));
    let huge = rec("k", &"x".repeat(a.max_batch_bytes() + 1));
    assert!(matches!(
        a.append("strict", 0, &[huge]),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(
        a.end_offset("strict", 0).ok(),
        Some(0),
        "nothing was written"
    );
    a.append("strict", 0, &[rec("k", "v"), rec("k", "w")])
        .expect("append");
    assert!(matches!(
        a.read("strict", 0, 3, 10, 1 << 20),
        Err(LogError::OffsetOutOfRange {
            offset: 3,
            start: 0,
            end: 2
        })
    ));
    assert!(
        a.truncate("strict", 0, 2, false).is_ok(),
        "cutting nothing is fine"
    );
    assert!(matches!(
        a.truncate("strict", 0, 1, true),
        Err(LogError::Unsupported(_))
    ));
    assert!(a.publish("strict", 0, 2).is_ok());
    assert_eq!(a.end_offset("strict", 0).ok(), Some(2));
    a.delete_topic("strict").expect("delete");
}

fn compaction_keeps_the_latest_record_per_key(a: &JetStreamLog) {
    let config = TopicConfig {
        compaction: true,
        ..TopicConfig::with_partitions(1)
    };
    a.create_topic("latest", config).expect("create");
    a.append(
        "latest",
        0,
        &[rec("k1", "a"), rec("k2", "b"), rec("k1", "c"), rec("", "d")],
    )
    .expect("append");
    // The first record (k1 = a) was superseded, so the partition starts at 1.
    assert_eq!(a.start_offset("latest", 0).ok(), Some(1));
    let all = a.read("latest", 0, 1, 100, 1 << 20).expect("read");
    assert_eq!(all.offsets, vec![1, 2, 3]);
    assert_eq!(values(&all), ["b", "c", "d"]);
    a.append("latest", 0, &[rec("k2", "e")]).expect("append");
    let all = a
        .read("latest", 0, 2, 100, 1 << 20)
        .expect("read over a gap");
    assert_eq!(all.offsets, vec![2, 3, 4], "offset 1 (k2 = b) is gone");
    assert_eq!(a.end_offset("latest", 0).ok(), Some(5));
    a.delete_topic("latest").expect("delete");
}

fn deletion_through_one_host_is_seen_by_the_other(a: &JetStreamLog, b: &JetStreamLog) {
    a.append("orders.v1", 2, &[rec("k", "old")])
        .expect("append");
    assert_eq!(
        b.end_offset("orders.v1", 2).ok(),
        Some(1),
        "b caches the topic"
    );
    a.delete_topic("orders.v1").expect("delete");
    assert!(matches!(
        b.append("orders.v1", 2, &[rec("k", "lost?")]),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        b.delete_topic("orders.v1"),
        Err(LogError::UnknownTopic(_))
    ));
    let again = b
        .create_topic("orders.v1", TopicConfig::with_partitions(3))
        .expect("create again");
    assert!(again.partitions.iter().all(|p| p.end_offset == 0));
    let ack = a
        .append("orders.v1", 2, &[rec("k", "new")])
        .expect("append");
    assert_eq!(ack.base_offset, 0, "a fresh incarnation starts at offset 0");
    assert_eq!(
        values(&b.read("orders.v1", 2, 0, 10, 1 << 20).expect("read")),
        ["new"]
    );
}

fn streams_are_replicated_on_every_node(cluster: &NatsCluster) {
    let jsz = cluster
        .monitor(0, "/jsz?streams=true")
        .expect("monitoring endpoint");
    let streams = jsz["streams"].as_u64().unwrap_or(0);
    assert!(
        streams >= 3,
        "the topic's partitions and the directory: {jsz}"
    );
    for node in 0..3 {
        let jsz = cluster.monitor(node, "/jsz").expect("monitoring endpoint");
        assert_eq!(
            jsz["streams"].as_u64(),
            Some(streams),
            "R3: node {node} holds every stream"
        );
    }
}

fn orphan_streams_are_swept_and_live_ones_kept(a: &JetStreamLog) {
    // A crash between making a topic's streams and recording it.
    let orphan = names::stream_name(&a.ns, &"f".repeat(32), 0);
    let js = a.js.clone();
    let config = jetstream::stream::Config {
        name: orphan.clone(),
        subjects: vec![format!("{}.log.{}.0", a.ns, "f".repeat(32))],
        ..Default::default()
    };
    a.run(async move {
        js.create_stream(config)
            .await
            .map(drop)
            .map_err(|e| backend("creating a stream", e))
    })
    .expect("orphan stream");
    let young = a.sweep_orphans(Duration::from_secs(600)).expect("sweep");
    assert!(
        young.is_empty(),
        "a young stream may belong to a topic being created: {young:?}"
    );
    let swept = a.sweep_orphans(Duration::ZERO).expect("sweep");
    assert_eq!(swept, vec![orphan]);
    assert!(
        a.topic("orders.v1").is_ok(),
        "live topics keep their streams"
    );
    assert!(a.read("orders.v1", 2, 0, 10, 1 << 20).is_ok());
}
