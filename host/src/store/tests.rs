use std::time::{Duration, Instant};

use super::*;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(
        dir.path().join("store.redb"),
        StoreDurability::Immediate,
        DEFAULT_CACHE_BYTES,
    )
    .expect("open store")
}

fn pos(topic: &str, partition: u32, offset: u64) -> PartitionPos {
    PartitionPos {
        topic: topic.into(),
        partition,
        offset,
    }
}

fn full_set() -> CommitSet {
    let mut writes = WriteSet::new();
    writes.put(b"a".to_vec(), b"1".to_vec());
    writes.put(b"b".to_vec(), b"2".to_vec());
    let mut set = CommitSet::new("proj");
    set.checkpoints.push(pos("in", 0, 10));
    set.output_ends.push(pos("out", 1, 5));
    set.pond = Some(PondDelta {
        pond: "proj".into(),
        generation: 1,
        writes,
    });
    set.aggregates.push((
        "svc".into(),
        "acc-1".into(),
        AggregateSnapshot {
            version: 3,
            plugin_sha256: "abc".into(),
            state: b"s".to_vec(),
        },
    ));
    set.command_results
        .push(("svc".into(), "cmd-1".into(), b"first".to_vec()));
    set
}

#[test]
fn commit_applies_everything_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        store.commit(&full_set()).expect("commit");
    }
    let store = open(&dir);
    assert_eq!(store.checkpoint("proj", "in", 0).expect("read"), Some(10));
    assert_eq!(
        store.checkpoints("proj").expect("read"),
        vec![pos("in", 0, 10)]
    );
    assert_eq!(
        store.output_ends("proj").expect("read"),
        vec![pos("out", 1, 5)]
    );
    assert_eq!(
        store.pond_get("proj", 1, b"a").expect("read"),
        Some(b"1".to_vec())
    );
    assert_eq!(
        store.pond_get("proj", 2, b"a").expect("read"),
        None,
        "generations are separate"
    );
    let snap = store
        .aggregate("svc", "acc-1")
        .expect("read")
        .expect("present");
    assert_eq!(
        (
            snap.version,
            snap.plugin_sha256.as_str(),
            snap.state.as_slice()
        ),
        (3, "abc", &b"s"[..])
    );
    assert_eq!(
        store.command_result("svc", "cmd-1").expect("read"),
        Some(b"first".to_vec())
    );
}

#[test]
fn aborted_commit_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    store.write_then_abort(&full_set()).expect("abort");
    assert_eq!(store.checkpoint("proj", "in", 0).expect("read"), None);
    assert!(store.output_ends("proj").expect("read").is_empty());
    assert_eq!(store.pond_get("proj", 1, b"a").expect("read"), None);
    assert_eq!(store.aggregate("svc", "acc-1").expect("read"), None);
    assert_eq!(store.command_result("svc", "cmd-1").expect("read"), None);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.checkpoint("proj", "in", 0).expect("read"), None);
}

#[test]
fn failed_commit_leaves_nothing() {
    // A value over redb's 3 GiB limit is impossible to build here, so fail
    // the transaction another way: a command result whose table write fails
    // because the pond table name clashes with a table of another type.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut set = full_set();
    // "checkpoints" is a (str, str, u32) → u64 table; opening it as a pond table fails.
    set.pond = Some(PondDelta {
        pond: "x".into(),
        generation: 0,
        writes: WriteSet::new(),
    });
    {
        let txn = store.db.begin_write().expect("txn");
        write_commit_set(&txn, &set).expect("writes");
        let clash = txn.open_table(pond_table("checkpoints"));
        assert!(clash.is_err(), "type mismatch must fail");
        // The processor drops the transaction on error: nothing is committed.
    }
    assert_eq!(store.checkpoint("proj", "in", 0).expect("read"), None);
    assert_eq!(store.command_result("svc", "cmd-1").expect("read"), None);
}

#[test]
fn first_command_result_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    store.commit(&full_set()).expect("commit");
    let mut again = CommitSet::new("svc");
    again
        .command_results
        .push(("svc".into(), "cmd-1".into(), b"second".to_vec()));
    store.commit(&again).expect("commit");
    assert_eq!(
        store.command_result("svc", "cmd-1").expect("read"),
        Some(b"first".to_vec())
    );
}

#[test]
fn scan_by_prefix_with_start_after_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut writes = WriteSet::new();
    for k in ["a/1", "a/2", "a/3", "a/4", "b/1", "a"] {
        writes.put(k.as_bytes().to_vec(), k.to_uppercase().into_bytes());
    }
    let mut set = CommitSet::new("p");
    set.pond = Some(PondDelta {
        pond: "p".into(),
        generation: 0,
        writes,
    });
    store.commit(&set).expect("commit");
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| {
        v.into_iter()
            .map(|(k, _)| String::from_utf8(k).expect("utf8"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.pond_scan("p", 0, b"a/", None, 10).expect("scan")),
        ["a/1", "a/2", "a/3", "a/4"]
    );
    assert_eq!(
        keys(
            store
                .pond_scan("p", 0, b"a/", Some(b"a/2"), 2)
                .expect("scan")
        ),
        ["a/3", "a/4"]
    );
    assert_eq!(
        keys(
            store
                .pond_scan("p", 0, b"a/", Some(b"a/4"), 2)
                .expect("scan")
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(store.pond_scan("p", 0, b"", None, 3).expect("scan")),
        ["a", "a/1", "a/2"]
    );
    // start-after before the prefix starts at the prefix.
    assert_eq!(
        keys(store.pond_scan("p", 0, b"b", Some(b"a"), 5).expect("scan")),
        ["b/1"]
    );
    assert_eq!(
        keys(store.pond_scan("missing", 0, b"", None, 5).expect("scan")),
        Vec::<String>::new()
    );
}

#[test]
fn merged_scan_overlays_pending_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut writes = WriteSet::new();
    for k in ["k1", "k3", "k5", "k7"] {
        writes.put(k.as_bytes().to_vec(), b"old".to_vec());
    }
    let mut set = CommitSet::new("p");
    set.pond = Some(PondDelta {
        pond: "p".into(),
        generation: 0,
        writes,
    });
    store.commit(&set).expect("commit");

    let mut pending = WriteSet::new();
    pending.put(b"k2".to_vec(), b"new".to_vec());
    pending.put(b"k3".to_vec(), b"new".to_vec());
    pending.delete(b"k5".to_vec());
    pending.put(b"k9".to_vec(), b"new".to_vec());
    let reader = store.pond_reader("p", 0).expect("reader");
    let got = scan_merged(&reader, &pending, b"k", None, 100).expect("scan");
    let got: Vec<(String, String)> = got
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k).expect("utf8"),
                String::from_utf8(v).expect("utf8"),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("k1", "old"),
        ("k2", "new"),
        ("k3", "new"),
        ("k7", "old"),
        ("k9", "new"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    // Paging through the merged view with every limit yields the same sequence.
    for limit in 1..=4 {
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = scan_merged(&reader, &pending, b"k", after.as_deref(), limit).expect("scan");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= limit);
            after = page.last().map(|(k, _)| k.clone());
            seen.extend(
                page.into_iter()
                    .map(|(k, _)| String::from_utf8(k).expect("utf8")),
            );
        }
        assert_eq!(seen, ["k1", "k2", "k3", "k7", "k9"], "limit {limit}");
    }
}

#[test]
fn write_set_coalesces_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut first = WriteSet::new();
    first.put(b"x".to_vec(), b"1".to_vec());
    first.put(b"y".to_vec(), b"1".to_vec());
    let mut second = WriteSet::new();
    second.put(b"x".to_vec(), b"2".to_vec());
    second.delete(b"y".to_vec());
    first.merge(second);
    assert_eq!(first.len(), 2);
    assert_eq!(first.get(b"x"), Some(Some(&b"2"[..])));
    assert_eq!(first.get(b"y"), Some(None));
    let mut set = CommitSet::new("p");
    set.pond = Some(PondDelta {
        pond: "p".into(),
        generation: 0,
        writes: first,
    });
    store.commit(&set).expect("commit");
    assert_eq!(
        store.pond_get("p", 0, b"x").expect("get"),
        Some(b"2".to_vec())
    );
    assert_eq!(store.pond_get("p", 0, b"y").expect("get"), None);
}

#[test]
fn registry_round_trips_and_delete_removes_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let record = PluginRecord {
        name: "proj".into(),
        kind: "projection".into(),
        versions: vec![VersionRecord {
            version: 1,
            sha256: "ff".into(),
            manifest: serde_json::json!({"name": "proj"}),
            deployed_at_ms: 1,
        }],
        active_version: 1,
        paused: true,
        stopped: None,
        read_generation: 1,
        rebuilding_generation: None,
    };
    store.put_plugin(&record).expect("put");
    store.commit(&full_set()).expect("commit");
    let mut rebuild = CommitSet::new("proj@g2");
    rebuild.checkpoints.push(pos("in", 0, 3));
    store.commit(&rebuild).expect("commit");
    let mut other = CommitSet::new("proj2");
    other.checkpoints.push(pos("in", 0, 7));
    store.commit(&other).expect("commit");
    drop(store);

    let store = open(&dir);
    assert_eq!(store.plugin("proj").expect("get"), Some(record.clone()));
    assert_eq!(store.plugins().expect("list"), vec![record]);
    store.delete_plugin("proj").expect("delete");
    assert_eq!(store.plugin("proj").expect("get"), None);
    assert!(store.checkpoints("proj").expect("read").is_empty());
    assert!(store.checkpoints("proj@g2").expect("read").is_empty());
    assert!(store.output_ends("proj").expect("read").is_empty());
    assert_eq!(store.pond_get("proj", 1, b"a").expect("read"), None);
    assert_eq!(
        store.checkpoint("proj2", "in", 0).expect("read"),
        Some(7),
        "other plugins untouched"
    );
    // The service "svc" is not "proj": its aggregate stays.
    assert!(store.aggregate("svc", "acc-1").expect("read").is_some());
    store.delete_plugin("svc").expect("delete");
    assert_eq!(store.aggregate("svc", "acc-1").expect("read"), None);
    assert_eq!(store.command_result("svc", "cmd-1").expect("read"), None);
}

#[test]
fn set_checkpoints_replaces_a_consumers_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    store.commit(&full_set()).expect("commit");
    store
        .set_checkpoints("proj", &[pos("in", 1, 0)])
        .expect("reset");
    assert_eq!(
        store.checkpoints("proj").expect("read"),
        vec![pos("in", 1, 0)]
    );
    assert_eq!(
        store.output_ends("proj").expect("read"),
        vec![pos("out", 1, 5)],
        "output ends kept"
    );
}

#[test]
fn lazy_durability_commits_are_visible_and_survive_a_clean_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(
            dir.path().join("store.redb"),
            StoreDurability::Lazy {
                sync_every: Duration::from_secs(3600),
            },
            DEFAULT_CACHE_BYTES,
        )
        .expect("open");
        store.commit(&full_set()).expect("commit");
        assert_eq!(store.checkpoint("proj", "in", 0).expect("read"), Some(10));
        store.sync().expect("sync");
    }
    let store = open(&dir);
    assert_eq!(store.checkpoint("proj", "in", 0).expect("read"), Some(10));
}

#[test]
fn corrupt_aggregate_is_an_error_not_a_panic() {
    assert!(AggregateSnapshot::decode(b"short").is_none());
    let snap = AggregateSnapshot {
        version: 9,
        plugin_sha256: "d".into(),
        state: vec![1, 2, 3],
    };
    assert_eq!(AggregateSnapshot::decode(&snap.encode()), Some(snap));
}

/// Commit cost of a pond write set, durable and lazy. Run with
/// `cargo test -p weir-host --release --lib store::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_commit_cost() {
    for (label, durability) in [
        ("immediate", StoreDurability::Immediate),
        (
            "lazy",
            StoreDurability::Lazy {
                sync_every: Duration::from_secs(1),
            },
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(dir.path().join("s.redb"), durability, DEFAULT_CACHE_BYTES).expect("open");
        for keys in [1usize, 100, 10_000] {
            let rounds = if keys == 10_000 { 20 } else { 200 };
            let start = Instant::now();
            for round in 0..rounds {
                let mut writes = WriteSet::new();
                for k in 0..keys {
                    writes.put(
                        format!("key-{k:05}").into_bytes(),
                        (round as u64).to_le_bytes().repeat(2),
                    );
                }
                let mut set = CommitSet::new("bench");
                set.checkpoints.push(pos("in", 0, round as u64));
                set.pond = Some(PondDelta {
                    pond: "bench".into(),
                    generation: 0,
                    writes,
                });
                store.commit(&set).expect("commit");
            }
            let per = start.elapsed() / rounds;
            println!(
                "{label}: commit of {keys} keys + checkpoint: {per:?} ({:.0} ns/key)",
                per.as_nanos() as f64 / keys as f64
            );
        }
        let reader = store.pond_reader("bench", 0).expect("reader");
        let start = Instant::now();
        for k in 0..10_000 {
            reader.get(format!("key-{k:05}").as_bytes()).expect("get");
        }
        println!("{label}: committed get: {:?}/key", start.elapsed() / 10_000);
    }
}

#[test]
fn a_pond_copy_is_replaced_whole_and_written_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    store.commit(&full_set()).expect("commit");
    let keys = |store: &Store| {
        let reader = store.pond_reader("proj", 1).expect("reader");
        (
            reader.get(b"a").expect("get"),
            reader.get(b"b").expect("get"),
            reader.get(b"c").expect("get"),
        )
    };
    // Replaced: what is not in the new content is gone.
    let entries = [(b"b".as_slice(), b"20".as_slice()), (b"c", b"30")];
    store.replace_pond("proj", 1, entries).expect("replace");
    assert_eq!(
        keys(&store),
        (None, Some(b"20".to_vec()), Some(b"30".to_vec()))
    );
    // A pond's changes alone: no checkpoint moves.
    let mut writes = WriteSet::new();
    writes.delete(b"c".to_vec());
    writes.put(b"a".to_vec(), b"1".to_vec());
    store
        .write_pond(&PondDelta {
            pond: "proj".into(),
            generation: 1,
            writes,
        })
        .expect("write");
    assert_eq!(
        keys(&store),
        (Some(b"1".to_vec()), Some(b"20".to_vec()), None)
    );
    assert_eq!(
        store.checkpoint("proj", "in", 0).expect("checkpoint"),
        Some(10)
    );
    // Replacing a generation never written before works too.
    store.replace_pond("other", 0, []).expect("replace empty");
    assert_eq!(
        store
            .pond_reader("other", 0)
            .expect("reader")
            .get(b"a")
            .expect("get"),
        None
    );
}
