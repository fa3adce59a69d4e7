//! Pipelines over the example plugins, failure policies with the faulty
//! plugin, hot swap, restart, and exactly-once after a simulated crash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::batch::Record;
use crate::log::{EventLog, FsyncPolicy, Log, LogConfig, TopicConfig};
use crate::runtime::{PoolConfig, Runtime, RuntimeConfig};

struct Harness {
    dir: tempfile::TempDir,
    fsync: FsyncPolicy,
    /// The log's limit per append.
    max_batch_bytes: usize,
    /// The engine's `commit_max_bytes`.
    commit_max_bytes: usize,
    log: Option<Arc<Log>>,
    engine: Option<Engine>,
    runtime: Runtime,
}

fn runtime(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        pool: Some(PoolConfig::for_instances(32)),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

impl Harness {
    fn new() -> Harness {
        Self::with_fsync(FsyncPolicy::Never)
    }

    fn with_fsync(fsync: FsyncPolicy) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = runtime(dir.path());
        let mut h = Harness {
            dir,
            fsync,
            max_batch_bytes: LogConfig::new("unused").max_batch_bytes,
            commit_max_bytes: EngineConfig::new("unused", fsync).commit_max_bytes,
            log: None,
            engine: None,
            runtime,
        };
        h.start();
        h
    }

    fn config(&self) -> EngineConfig {
        let mut c = EngineConfig::new(self.dir.path().join("data"), self.fsync);
        c.idle_wait = Duration::from_millis(20);
        c.commit_interval = Duration::from_millis(10);
        c.commit_max_bytes = self.commit_max_bytes;
        c
    }

    fn start(&mut self) {
        let mut lc = LogConfig::new(self.dir.path().join("log"));
        lc.default_fsync = self.fsync;
        lc.max_batch_bytes = self.max_batch_bytes;
        let log = Arc::new(Log::open(lc).expect("open log"));
        self.log = Some(log.clone());
        self.engine =
            Some(Engine::open(self.config(), log, self.runtime.clone()).expect("open engine"));
    }

    /// Drop the engine and the log (as a process exit would) and open both again.
    fn restart(&mut self) {
        self.engine = None;
        if let Some(log) = self.log.take() {
            let _ = log.close();
        }
        self.start();
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine")
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log")
    }

    fn topic(&self, name: &str, partitions: u32) {
        self.log()
            .create_topic(name, TopicConfig::with_partitions(partitions))
            .expect("create topic");
    }

    fn produce(&self, topic: &str, key: &str, value: &[u8], ts: i64) {
        let p = self
            .log()
            .partition_for(topic, key.as_bytes())
            .expect("partition");
        let record = Record {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            headers: vec![],
            timestamp: ts,
        };
        self.log().append(topic, p, &[record]).expect("append");
    }

    /// Orders `range` into `orders`, keyed by customer `c{i % 5}`, with
    /// timestamps `ts_base + i`.
    fn produce_orders(&self, range: std::ops::Range<u32>, ts_base: i64) {
        for i in range {
            self.produce(
                "orders",
                &format!("c{}", i % 5),
                &order(i),
                ts_base + i64::from(i),
            );
        }
    }

    /// Projection `totals` (customer totals) over `orders`.
    fn deploy_totals(&self) -> ProcessorStatus {
        self.deploy(
            json!({"name": "totals", "kind": "projection", "inputs": ["orders"]}),
            "projection_totals",
        )
    }

    /// Every visible record of a topic, with its partition.
    fn read_all(&self, topic: &str) -> Vec<(u32, Record)> {
        read_topic(self.log(), topic)
    }

    fn deploy(&self, manifest: serde_json::Value, plugin: &str) -> ProcessorStatus {
        self.engine()
            .deploy(manifest, &weir_testkit::plugins::plugin_bytes(plugin))
            .expect("deploy")
    }

    /// Make the next store commit of every processor fail like a crash.
    fn crash_before_next_commit(&self, on: bool) {
        let failpoints = self.engine().failpoints();
        failpoints.crash_before_commit.store(on, Ordering::Relaxed);
    }

    /// Enricher `e` (the `faulty` plugin, copying `in` to `e.out`) handles
    /// inputs `v0..v{before}`, then crashes committing `v{before}..v{total}`.
    fn crash_an_enricher_before_commit(&self, before: i64, total: i64) {
        self.topic("in", 1);
        let produce = |range: std::ops::Range<i64>| {
            for i in range {
                self.produce("in", &format!("k{i}"), format!("v{i}").as_bytes(), i);
            }
        };
        produce(0..before);
        self.deploy(
            json!({"name": "e", "kind": "enricher", "inputs": ["in"], "outputs": ["e.out"]}),
            "faulty",
        );
        self.wait_caught_up("e");
        self.crash_before_next_commit(true);
        produce(before..total);
        self.wait_failed("e");
    }

    fn wait_failed(&self, name: &str) {
        wait_for(&format!("{name} failed"), || {
            matches!(
                self.engine().inspect(name).expect("inspect").state,
                RunState::Failed { .. }
            )
            .then_some(())
        });
    }

    /// `(count, sum)` of a customer in a `projection_totals` pond.
    fn totals(&self, pond: &str, customer: &str) -> (Option<u64>, Option<i64>) {
        let v = self
            .engine()
            .pond_get(pond, customer.as_bytes())
            .expect("get")
            .expect("present");
        let v: serde_json::Value = serde_json::from_slice(&v).expect("json");
        (v["count"].as_u64(), v["sum"].as_i64())
    }

    fn wait_caught_up(&self, name: &str) -> ProcessorStatus {
        wait_for(&format!("{name} caught up"), || {
            let s = self.engine().inspect(name).expect("inspect");
            (s.lag() == 0 && !s.partitions.is_empty()).then_some(s)
        })
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn order(i: u32) -> Vec<u8> {
    order_for(i, &format!("c{}", i % 5))
}

fn order_for(i: u32, customer: &str) -> Vec<u8> {
    json!({"id": format!("o{i}"), "customer": customer, "amount": i + 1})
        .to_string()
        .into_bytes()
}

/// Every visible record of a topic (none if it does not exist), with its
/// partition.
pub(super) fn read_topic(log: &dyn EventLog, topic: &str) -> Vec<(u32, Record)> {
    let mut out = Vec::new();
    let Ok(info) = log.topic(topic) else {
        return out;
    };
    for p in info.partitions {
        let mut offset = p.start_offset;
        loop {
            let batch = log
                .read(topic, p.partition, offset, 1000, 1 << 20)
                .expect("read");
            let Some(last) = batch.offsets.last().copied() else {
                break;
            };
            out.extend((0..batch.len()).map(|i| (p.partition, batch.record(i))));
            offset = last + 1;
        }
    }
    out
}

/// The text of a record's header `name`.
pub(super) fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

#[test]
fn enricher_pipeline_emits_each_valid_order_once() {
    let h = Harness::new();
    h.topic("orders", 2);
    h.produce_orders(0..200, 1000);
    h.produce("orders", "bad", b"not json", 5);
    h.deploy(json!({"name": "enrich", "kind": "enricher", "inputs": ["orders"], "outputs": ["orders.enriched"]}), "enricher_orders");
    h.produce_orders(200..300, 1000);
    let status = h.wait_caught_up("enrich");
    assert_eq!(status.state, RunState::Running);
    let out = h.read_all("orders.enriched");
    let mut ids = BTreeMap::new();
    for (partition, r) in &out {
        let v: serde_json::Value = serde_json::from_slice(&r.value).expect("json");
        let id = v["id"].as_str().expect("id").to_string();
        let n: i64 = id[1..].parse().expect("number");
        assert_eq!(r.timestamp, 1000 + n, "the source event's timestamp");
        assert_eq!(
            *partition,
            h.log().partition_for("orders.enriched", &r.key).expect("p"),
            "partitioned by key"
        );
        *ids.entry(id).or_insert(0) += 1;
    }
    assert_eq!(ids.len(), 300, "every valid order once");
    assert!(ids.values().all(|&c| c == 1), "no duplicates");
    assert!(status.metrics.events_in >= 301);
    assert_eq!(status.metrics.events_out, 300);
}

#[test]
fn projection_state_commits_with_checkpoints_and_answers_reads() {
    let h = Harness::new();
    h.topic("orders", 3);
    h.produce_orders(0..500, 0);
    h.deploy_totals();
    h.wait_caught_up("totals");
    let mut want: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for i in 0..500u32 {
        let e = want.entry(format!("c{}", i % 5)).or_default();
        e.0 += 1;
        e.1 += (i + 1) as i64;
    }
    for (customer, (count, sum)) in &want {
        assert_eq!(
            h.totals("totals", customer),
            (Some(*count), Some(*sum)),
            "{customer}"
        );
    }
    let page = h
        .engine()
        .pond_scan("totals", b"c", Some(b"c1"), 2)
        .expect("scan");
    assert_eq!(
        page.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"c2".to_vec(), b"c3".to_vec()]
    );
    let all = h
        .engine()
        .pond_query("totals", b"")
        .expect("query")
        .expect("answer");
    let all: serde_json::Value = serde_json::from_slice(&all).expect("json");
    assert_eq!(all["c4"]["count"].as_u64(), Some(100));
    assert!(matches!(
        h.engine().pond_get("nope", b"x"),
        Err(EngineError::NotFound(_))
    ));
}

fn command(id: &str, aggregate: &str, name: &str, data: serde_json::Value) -> CommandRequest {
    CommandRequest {
        id: id.into(),
        aggregate: aggregate.into(),
        name: name.into(),
        data: data.to_string().into_bytes(),
        expected_version: None,
        reply_topic: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio")
}

#[test]
fn command_handler_decides_appends_and_answers_once() {
    let h = Harness::new();
    h.deploy(
        json!({"name": "bank", "kind": "command-handler", "partitions": 2}),
        "command_bank",
    );
    let engine = h.engine();
    let tokio = rt();
    let wait = Duration::from_secs(30);
    let run = |c: CommandRequest| {
        tokio
            .block_on(engine.submit_and_wait("bank", c, wait))
            .expect("submit")
    };

    let opened = run(command("c1", "acc-1", "open", json!({"owner": "ann"})));
    assert!(
        matches!(&opened, CommandOutcome::Applied { version: 1, events } if events[0].name == "opened"),
        "{opened:?}"
    );
    let deposited = run(command("c2", "acc-1", "deposit", json!({"amount": 50})));
    assert!(
        matches!(deposited, CommandOutcome::Applied { version: 2, .. }),
        "{deposited:?}"
    );
    let rejected = run(command("c3", "acc-1", "withdraw", json!({"amount": 80})));
    assert!(
        matches!(&rejected, CommandOutcome::Rejected { code, .. } if code == "insufficient-funds"),
        "{rejected:?}"
    );
    let mut stale = command("c4", "acc-1", "deposit", json!({"amount": 5}));
    stale.expected_version = Some(1);
    assert_eq!(
        run(stale),
        CommandOutcome::Conflict {
            expected: 1,
            actual: 2
        }
    );
    let mut fresh = command("c5", "acc-1", "withdraw", json!({"amount": 20}));
    fresh.expected_version = Some(2);
    fresh.reply_topic = Some("bank.results".into());
    assert!(matches!(
        run(fresh),
        CommandOutcome::Applied { version: 3, .. }
    ));
    // A retried command id answers its first result and appends nothing.
    let again = run(command("c2", "acc-1", "deposit", json!({"amount": 50})));
    assert_eq!(again, deposited);

    let events = h.read_all("bank.events");
    assert_eq!(events.len(), 3);
    let versions: Vec<&str> = events
        .iter()
        .map(|(_, r)| header(r, headers::VERSION).expect("version"))
        .collect();
    assert_eq!(versions, ["1", "2", "3"]);
    assert!(events.iter().all(|(_, r)| r.key == b"acc-1"));
    assert_eq!(header(&events[1].1, headers::EVENT), Some("deposited"));
    let replies = h.read_all("bank.results");
    assert_eq!(replies.len(), 1);
    assert_eq!(header(&replies[0].1, headers::CORRELATION_ID), Some("c5"));
    assert_eq!(
        engine.command_result("bank", "c3").expect("result"),
        Some(rejected)
    );
    assert!(matches!(
        engine.submit("totals", &command("x", "a", "n", json!({}))),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn aggregates_are_rebuilt_by_evolve_after_an_upgrade() {
    let mut h = Harness::new();
    h.deploy(
        json!({"name": "bank", "kind": "command-handler", "partitions": 1}),
        "command_bank",
    );
    let tokio = rt();
    let wait = Duration::from_secs(30);
    tokio
        .block_on(h.engine().submit_and_wait(
            "bank",
            command("a", "acc", "open", json!({"owner": "bo"})),
            wait,
        ))
        .expect("open");
    tokio
        .block_on(h.engine().submit_and_wait(
            "bank",
            command("b", "acc", "deposit", json!({"amount": 7})),
            wait,
        ))
        .expect("dep");
    // Pretend the snapshot was made by another build: the next command rebuilds from events.
    let mut snap = h
        .engine()
        .store()
        .aggregate("bank", "acc")
        .expect("read")
        .expect("snapshot");
    snap.plugin_sha256 = "another-build".into();
    snap.state = b"garbage".to_vec();
    let mut set = crate::store::CommitSet::new("test");
    set.aggregates.push(("bank".into(), "acc".into(), snap));
    h.engine().store().commit(&set).expect("commit");
    h.restart();
    let out = tokio
        .block_on(h.engine().submit_and_wait(
            "bank",
            command("c", "acc", "withdraw", json!({"amount": 7})),
            wait,
        ))
        .expect("withdraw");
    assert!(
        matches!(out, CommandOutcome::Applied { version: 3, .. }),
        "{out:?}"
    );
}

fn faulty_manifest(name: &str, policy: &str) -> serde_json::Value {
    json!({"name": name, "kind": "enricher", "inputs": ["in"], "outputs": [format!("{name}.out")],
           "error_policy": policy, "retries": 1, "retry_backoff_ms": 1, "limits": {"timeout_ms": 500}})
}

fn produce_with_faults(h: &Harness) {
    for (i, v) in ["a", "b", "fail", "c", "panic", "d"].iter().enumerate() {
        h.produce("in", &format!("k{i}"), v.as_bytes(), i as i64);
    }
}

#[test]
fn failing_events_go_to_the_dead_letter_topic() {
    let h = Harness::new();
    h.topic("in", 1);
    produce_with_faults(&h);
    h.deploy(faulty_manifest("f", "dlq"), "faulty");
    let status = h.wait_caught_up("f");
    let out: Vec<Vec<u8>> = h
        .read_all("f.out")
        .into_iter()
        .map(|(_, r)| r.value)
        .collect();
    assert_eq!(
        out,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
    );
    let dlq = h.read_all("f.dlq");
    assert_eq!(dlq.len(), 2);
    let (_, first) = &dlq[0];
    assert_eq!(first.value, b"fail");
    assert_eq!(header(first, headers::SOURCE_TOPIC), Some("in"));
    assert_eq!(header(first, headers::SOURCE_OFFSET), Some("2"));
    assert_eq!(header(first, headers::PLUGIN_VERSION), Some("1"));
    assert!(header(first, headers::ERROR).is_some_and(|e| e.contains("refused on purpose")));
    assert!(header(&dlq[1].1, headers::ERROR).is_some_and(|e| e.contains("trapped")));
    assert_eq!(status.metrics.dead_lettered, 2);
    assert!(status.metrics.errors >= 4, "each failure is retried once");
}

#[test]
fn skip_policy_drops_and_stop_policy_halts() {
    let h = Harness::new();
    h.topic("in", 1);
    produce_with_faults(&h);
    h.deploy(faulty_manifest("s", "skip"), "faulty");
    let status = h.wait_caught_up("s");
    assert_eq!(h.read_all("s.out").len(), 4);
    assert_eq!(status.metrics.skipped, 2);
    assert!(h.read_all("s.dlq").is_empty());

    h.deploy(faulty_manifest("t", "stop"), "faulty");
    let status = wait_for("stopped", || {
        let s = h.engine().inspect("t").expect("inspect");
        matches!(s.state, RunState::Stopped { .. }).then_some(s)
    });
    assert_eq!(
        status.partitions[0].committed_offset, 2,
        "stopped at the failing event"
    );
    let out: Vec<Vec<u8>> = h
        .read_all("t.out")
        .into_iter()
        .map(|(_, r)| r.value)
        .collect();
    assert_eq!(out, vec![b"a".to_vec(), b"b".to_vec()]);
    // The other processor was never stalled; the stopped one stays stopped across a restart.
    assert_eq!(
        h.engine().inspect("s").expect("inspect").state,
        RunState::Running
    );
}

/// A command the service keeps failing on (a trap) follows the error
/// policy like an event of a river: dead-lettered (answered
/// `handler-failed`), skipped (answered likewise), or the service stops at
/// it; the commands around it are not held up.
#[test]
fn a_failing_command_follows_the_error_policy() {
    for policy in ["dlq", "skip", "stop"] {
        let h = Harness::new();
        h.deploy(
            json!({"name": "svc", "kind": "command-handler", "partitions": 1,
                   "error_policy": policy, "retries": 1, "retry_backoff_ms": 1}),
            "faulty_service",
        );
        for (id, name) in [("c1", "note"), ("c2", "panic"), ("c3", "note")] {
            h.engine()
                .submit("svc", &command(id, "a", name, json!({"n": id})))
                .expect("submit");
        }
        let result = |id: &str| h.engine().command_result("svc", id).expect("result");
        let events = || h.read_all("svc.events").len();
        if policy == "stop" {
            let status = wait_for("stopped", || {
                let s = h.engine().inspect("svc").expect("inspect");
                matches!(s.state, RunState::Stopped { .. }).then_some(s)
            });
            assert_eq!(
                status.partitions[0].committed_offset, 1,
                "stopped at the failing command"
            );
            assert!(matches!(result("c1"), Some(CommandOutcome::Applied { .. })));
            assert_eq!((result("c2"), result("c3")), (None, None));
            assert_eq!(events(), 1);
            continue;
        }
        wait_for("c3 handled", || result("c3"));
        assert!(matches!(result("c1"), Some(CommandOutcome::Applied { .. })));
        assert!(
            matches!(result("c2"), Some(CommandOutcome::Rejected { code, message })
                if code == "handler-failed" && message.contains("panicked on purpose")),
            "{policy}: {:?}",
            result("c2")
        );
        assert_eq!(events(), 2, "{policy}");
        let status = h.engine().inspect("svc").expect("inspect");
        assert!(status.metrics.errors >= 2, "each failure is retried once");
        let dlq = h.read_all("svc.dlq");
        if policy == "dlq" {
            assert_eq!(dlq.len(), 1);
            assert_eq!(header(&dlq[0].1, headers::COMMAND_ID), Some("c2"));
            assert_eq!(header(&dlq[0].1, headers::SOURCE_OFFSET), Some("1"));
            assert!(header(&dlq[0].1, headers::ERROR).is_some_and(|e| e.contains("trapped")));
            assert_eq!(status.metrics.dead_lettered, 1);
        } else {
            assert!(dlq.is_empty());
            assert_eq!(status.metrics.skipped, 1);
        }
    }
}

#[test]
fn redeploying_the_same_bytes_and_manifest_changes_nothing() {
    let h = Harness::new();
    h.topic("in", 1);
    let manifest = |config: serde_json::Value| {
        json!({"name": "same", "kind": "enricher", "inputs": ["in"], "outputs": ["same.out"],
               "config": config})
    };
    assert_eq!(h.deploy(manifest(json!({})), "faulty").active_version, 1);
    let again = h.deploy(manifest(json!({})), "faulty");
    assert_eq!((again.active_version, again.versions.len()), (1, 1));
    // Another manifest, or other bytes, is a new version; then that one is current.
    let v2 = h.deploy(manifest(json!({"fail_init": false})), "faulty");
    assert_eq!(v2.active_version, 2);
    let v3 = h.deploy(manifest(json!({"fail_init": false})), "stamp_enricher");
    assert_eq!(v3.active_version, 3);
    let again = h.deploy(manifest(json!({"fail_init": false})), "stamp_enricher");
    assert_eq!((again.active_version, again.versions.len()), (3, 3));
    // After a rollback, deploying the rolled-back-to version is a no-op too.
    let back = h.engine().rollback("same", Some(1)).expect("rollback");
    assert_eq!(back.active_version, 1);
    let again = h.deploy(manifest(json!({})), "faulty");
    assert_eq!((again.active_version, again.versions.len()), (1, 3));
}

#[test]
fn a_command_id_reused_for_another_command_is_refused() {
    let h = Harness::new();
    h.deploy(
        json!({"name": "bank", "kind": "command-handler", "partitions": 1}),
        "command_bank",
    );
    let tokio = rt();
    let wait = Duration::from_secs(30);
    let run = |c: CommandRequest| tokio.block_on(h.engine().submit_and_wait("bank", c, wait));
    let first = run(command("c1", "acc", "open", json!({"owner": "ann"}))).expect("open");
    assert!(matches!(first, CommandOutcome::Applied { version: 1, .. }));
    // The same command again: its first result.
    let again = run(command("c1", "acc", "open", json!({"owner": "ann"}))).expect("again");
    assert_eq!(again, first);
    // Another command under the same id: refused, nothing appended.
    for other in [
        command("c1", "acc", "open", json!({"owner": "bob"})),
        command("c1", "acc2", "open", json!({"owner": "ann"})),
        command("c1", "acc", "deposit", json!({"owner": "ann"})),
    ] {
        assert!(
            matches!(run(other.clone()), Err(EngineError::IdReused(id)) if id == "c1"),
            "{other:?}"
        );
        assert!(matches!(
            h.engine().submit("bank", &other),
            Err(EngineError::IdReused(_))
        ));
    }
    // Raced: two commands under one id in the topic before either is handled.
    h.engine().pause("bank").expect("pause");
    let (a, b) = (
        command("c2", "acc", "deposit", json!({"amount": 1})),
        command("c2", "acc", "deposit", json!({"amount": 2})),
    );
    h.engine().submit("bank", &a).expect("a");
    h.engine().submit("bank", &b).expect("b");
    h.engine().resume("bank").expect("resume");
    assert!(matches!(
        run(a),
        Ok(CommandOutcome::Applied { version: 2, .. })
    ));
    assert!(matches!(run(b), Err(EngineError::IdReused(_))));
    assert_eq!(h.read_all("bank.events").len(), 2);
}

#[test]
fn hot_swap_switches_at_a_batch_boundary_and_rolls_back() {
    let h = Harness::new();
    h.topic("in", 2);
    let manifest = |name: &str| json!({"name": name, "kind": "enricher", "inputs": ["in"], "outputs": ["swap.out"]});
    for i in 0..100 {
        h.produce("in", &format!("k{i}"), format!("v{i}").as_bytes(), i);
    }
    h.deploy(manifest("swap"), "faulty");
    h.wait_caught_up("swap");
    // Version 2: the same plugin, now counting per instance (distinguishable output).
    let v2 = h.deploy(
        json!({"name": "swap", "kind": "enricher", "inputs": ["in"], "outputs": ["swap.out"], "config": {"fail_init": false}}),
        "faulty",
    );
    assert_eq!(v2.active_version, 2);
    for i in 100..200 {
        h.produce("in", &format!("k{i}"), format!("v{i}").as_bytes(), i);
    }
    h.wait_caught_up("swap");
    let out = h.read_all("swap.out");
    assert_eq!(
        out.len(),
        200,
        "no event skipped or processed twice across the swap"
    );
    let mut values: Vec<String> = out
        .iter()
        .map(|(_, r)| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 200);
    let back = h.engine().rollback("swap", None).expect("rollback");
    assert_eq!(back.active_version, 1);
    assert_eq!(back.versions.len(), 2);
    assert!(matches!(
        h.engine().rollback("swap", Some(9)),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn deployments_survive_a_restart_and_admin_operations_work() {
    let mut h = Harness::new();
    h.topic("orders", 1);
    for i in 0..20 {
        h.produce("orders", "c1", &order_for(i, "c1"), i as i64);
    }
    h.deploy_totals();
    h.wait_caught_up("totals");
    h.engine().pause("totals").expect("pause");
    h.produce("orders", "c1", &order_for(20, "c1"), 20);
    h.restart();
    let s = h.engine().inspect("totals").expect("inspect");
    assert_eq!(s.state, RunState::Paused);
    assert_eq!(s.partitions[0].lag, 1, "paused: nothing processed");
    h.engine().resume("totals").expect("resume");
    h.wait_caught_up("totals");
    assert_eq!(h.totals("totals", "c1").0, Some(21));
    // Reset to an offset moves the checkpoint; `keep_state` keeps the state.
    let s = h
        .engine()
        .reset("totals", ResetTo::Offset(21), true)
        .expect("reset");
    assert_eq!(s.partitions[0].committed_offset, 21);
    assert_eq!(h.totals("totals", "c1").0, Some(21));
    // By default a pond reset empties the state: it then folds from there on.
    h.engine()
        .reset("totals", ResetTo::Offset(10), false)
        .expect("reset");
    wait_for("the fold from offset 10", || {
        let v = h.engine().pond_get("totals", b"c1").ok().flatten()?;
        let v: serde_json::Value = serde_json::from_slice(&v).ok()?;
        (v["count"].as_u64() == Some(11)).then_some(())
    });
    let s = h.wait_caught_up("totals");
    assert_eq!(s.partitions[0].committed_offset, 21);
    // Rebuild from scratch into a new generation: same state, reads switch.
    h.engine().rebuild("totals").expect("rebuild");
    let s = wait_for("rebuild switched", || {
        let s = h.engine().inspect("totals").expect("inspect");
        (s.read_generation == 1 && s.rebuilding_generation.is_none()).then_some(s)
    });
    assert_eq!(s.lag(), 0);
    assert_eq!(
        h.totals("totals", "c1").0,
        Some(21),
        "rebuilt from offset 0"
    );
    h.engine().delete("totals").expect("delete");
    assert!(h.engine().list().is_empty());
    h.restart();
    assert!(h.engine().list().is_empty(), "deletion is durable");
}

#[test]
fn deploy_refuses_bad_input_with_reasons() {
    let h = Harness::new();
    h.topic("in", 1);
    let enricher = |name: &str, input: &str, output: &str| json!({"name": name, "kind": "enricher", "inputs": [input], "outputs": [output]});
    let refused = |manifest, plugin: &[u8]| match h.engine().deploy(manifest, plugin) {
        Err(e) => e,
        Ok(s) => panic!("deployed {}", s.name),
    };
    let plugin = weir_testkit::plugins::plugin_bytes;
    let wrong_world = refused(enricher("x", "in", "o"), &plugin("projection_totals"));
    assert!(
        matches!(wrong_world, EngineError::Load(_)),
        "{wrong_world:?}"
    );
    let missing_input = refused(enricher("x", "nope", "o"), &plugin("faulty"));
    assert!(
        matches!(missing_input, EngineError::NotFound(_)),
        "{missing_input:?}"
    );
    let not_wasm = refused(enricher("x", "in", "o"), b"hello");
    assert!(matches!(not_wasm, EngineError::Load(_)), "{not_wasm:?}");
    h.deploy(enricher("a", "in", "shared"), "faulty");
    let taken = refused(enricher("b", "in", "shared"), &plugin("faulty"));
    assert!(
        matches!(
            taken,
            EngineError::Ownership(OwnershipError::TopicOwned { .. })
        ),
        "{taken:?}"
    );
    assert_eq!(h.engine().list().len(), 1, "refused deploys change nothing");
    assert_eq!(h.engine().owner_of("shared").as_deref(), Some("a"));
}

/// A service dies between appending a step's events and reply and its
/// commit (the very first reply, which also created the reply topic):
/// after a restart each command has one event and one reply.
#[test]
fn service_replies_are_exactly_once_after_a_crash_before_commit() {
    let mut h = Harness::new();
    h.deploy(
        json!({"name": "bank", "kind": "command-handler", "partitions": 1}),
        "command_bank",
    );
    let with_reply = |id: &str, name: &str, data: serde_json::Value| {
        let mut c = command(id, "acc", name, data);
        c.reply_topic = Some("bank.results".into());
        c
    };
    h.crash_before_next_commit(true);
    h.engine()
        .submit("bank", &with_reply("c1", "open", json!({"owner": "ann"})))
        .expect("submit");
    h.wait_failed("bank");
    let written = h.log().written_end("bank.results", 0).expect("end");
    assert!(
        written > h.log().end_offset("bank.results", 0).expect("end"),
        "the reply was appended but not published"
    );
    h.restart();
    wait_for("c1 handled", || {
        h.engine().command_result("bank", "c1").expect("result")
    });
    let applied = rt()
        .block_on(h.engine().submit_and_wait(
            "bank",
            with_reply("c2", "deposit", json!({"amount": 5})),
            Duration::from_secs(30),
        ))
        .expect("c2");
    assert!(
        matches!(applied, CommandOutcome::Applied { version: 2, .. }),
        "{applied:?}"
    );
    let replies: Vec<String> = h
        .read_all("bank.results")
        .iter()
        .filter_map(|(_, r)| header(r, headers::CORRELATION_ID).map(str::to_owned))
        .collect();
    assert_eq!(replies, ["c1", "c2"], "one reply per command");
    assert_eq!(h.read_all("bank.events").len(), 2, "one event per command");
    // A reply topic of another service, or any other topic, is refused.
    for topic in ["bank.events", "other.results", "nowhere"] {
        let mut c = with_reply("c3", "deposit", json!({"amount": 1}));
        c.reply_topic = Some(topic.into());
        assert!(
            matches!(
                h.engine().submit("bank", &c),
                Err(EngineError::Ownership(_))
            ),
            "{topic}"
        );
    }
}

/// Kill an enricher between its deferred append and its store commit,
/// restart, and check each input's output exists exactly once.
#[test]
fn enricher_effects_are_exactly_once_after_a_crash_between_append_and_commit() {
    for fsync in [FsyncPolicy::Never, FsyncPolicy::Always] {
        let mut h = Harness::with_fsync(fsync);
        h.crash_an_enricher_before_commit(30, 60);
        let written = h.log().written_end("e.out", 0).expect("end");
        assert!(
            written > h.log().end_offset("e.out", 0).expect("end"),
            "an unpublished tail was left behind"
        );
        h.restart();
        h.wait_caught_up("e");
        let out: Vec<String> = h
            .read_all("e.out")
            .into_iter()
            .map(|(_, r)| String::from_utf8_lossy(&r.value).into_owned())
            .collect();
        let want: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
        assert_eq!(
            out, want,
            "fsync {fsync}: every input exactly once, in order"
        );
    }
}

#[test]
fn projection_effects_are_exactly_once_after_a_crash_before_commit() {
    let mut h = Harness::new();
    h.topic("orders", 2);
    h.produce_orders(0..100, 0);
    h.deploy_totals();
    h.wait_caught_up("totals");
    h.crash_before_next_commit(true);
    h.produce_orders(100..200, 0);
    h.wait_failed("totals");
    h.restart();
    h.wait_caught_up("totals");
    let mut count = 0;
    for c in 0..5 {
        count += h.totals("totals", &format!("c{c}")).0.expect("count");
    }
    assert_eq!(count, 200, "each event counted exactly once");
}

/// A crashed task (here: the failpoint) is recovered in place by `resume`:
/// the uncommitted tail is cut before the tasks run again.
#[test]
fn resume_after_a_crash_cuts_the_uncommitted_tail() {
    let h = Harness::new();
    h.crash_an_enricher_before_commit(10, 20);
    h.crash_before_next_commit(false);
    assert_eq!(
        h.engine().resume("e").expect("resume").state,
        RunState::Running
    );
    h.wait_caught_up("e");
    let out: Vec<String> = h
        .read_all("e.out")
        .into_iter()
        .map(|(_, r)| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert_eq!(out, want);
}

/// Stream–table join: the enricher reads the committed state of another
/// processor's pond through the host's `lookup`.
#[test]
fn enricher_joins_with_a_pond() {
    let h = Harness::new();
    h.topic("seed", 1);
    h.topic("orders", 1);
    for i in 0..3 {
        h.produce("seed", "c1", &order_for(i, "c1"), i as i64);
    }
    h.deploy(
        json!({"name": "customers", "kind": "projection", "inputs": ["seed"]}),
        "projection_totals",
    );
    h.wait_caught_up("customers");
    h.produce("orders", "c1", &order_for(10, "c1"), 10);
    h.produce("orders", "c9", &order_for(11, "c9"), 11);
    h.deploy(
        json!({"name": "join", "kind": "enricher", "inputs": ["orders"], "outputs": ["joined"],
               "config": {"customers_pond": "customers"}}),
        "enricher_orders",
    );
    h.wait_caught_up("join");
    let out: Vec<serde_json::Value> = h
        .read_all("joined")
        .into_iter()
        .map(|(_, r)| serde_json::from_slice(&r.value).expect("json"))
        .collect();
    let by_customer = |c: &str| {
        out.iter()
            .find(|v| v["customer"] == c)
            .expect("joined order")
            .clone()
    };
    assert_eq!(
        by_customer("c1")["customer_info"],
        json!({"count": 3, "sum": 6})
    );
    assert_eq!(by_customer("c9")["customer_info"], serde_json::Value::Null);
}

#[test]
fn a_task_that_is_behind_reads_large_batches_unless_max_batch_is_set() {
    let h = Harness::new();
    h.topic("orders", 1);
    let records: Vec<Record> = (0..5000u32)
        .map(|i| Record {
            key: format!("c{}", i % 7).into_bytes(),
            value: order_for(i, &format!("c{}", i % 7)),
            headers: vec![],
            timestamp: i64::from(i),
        })
        .collect();
    h.log().append("orders", 0, &records).expect("append");
    for (name, max_batch, most_batches) in [("adaptive", None, 2), ("fixed", Some(1000), 5)] {
        let mut manifest = json!({"name": name, "kind": "projection", "inputs": ["orders"]});
        if let Some(b) = max_batch {
            manifest["max_batch"] = json!(b);
        }
        h.deploy(manifest, "projection_totals");
        let status = h.wait_caught_up(name);
        // Live-sized first read (1000, full), then the rest in one catch-up read.
        assert!(
            status.metrics.batches <= most_batches && status.metrics.batches >= 2,
            "{name}: {} batches",
            status.metrics.batches
        );
        assert_eq!(h.totals(name, "c0").0, Some(715), "{name}");
    }
}

/// Partitions of one pond apply in parallel; when they update the same
/// keys, a batch that read a key another partition changed meanwhile is
/// applied again — no update is lost, none is counted twice.
#[test]
fn partitions_updating_the_same_keys_never_lose_an_update() {
    let mut h = Harness::new();
    let partitions = 4u32;
    h.topic("orders", partitions);
    // The same two customers in every partition (placed by hand, not by key).
    let per_partition = 1500u32;
    for p in 0..partitions {
        let records: Vec<Record> = (0..per_partition)
            .map(|i| {
                let customer = format!("c{}", i % 2);
                Record {
                    key: customer.clone().into_bytes(),
                    value: order_for(i, &customer),
                    headers: vec![],
                    timestamp: i64::from(i),
                }
            })
            .collect();
        h.log().append("orders", p, &records).expect("append");
    }
    h.deploy(
        json!({"name": "totals", "kind": "projection", "inputs": ["orders"], "max_batch": 10}),
        "projection_totals",
    );
    let status = h.wait_caught_up("totals");
    let check = |h: &Harness| {
        for c in 0..2u32 {
            let count = u64::from(per_partition / 2 * partitions);
            let sum: i64 = (0..per_partition)
                .filter(|i| i % 2 == c)
                .map(|i| i64::from(i + 1))
                .sum::<i64>()
                * i64::from(partitions);
            assert_eq!(
                h.totals("totals", &format!("c{c}")),
                (Some(count), Some(sum)),
                "c{c}"
            );
        }
    };
    check(&h);
    assert!(
        status.metrics.reapplied > 0,
        "600 batches over 4 partitions updating 2 keys: some must have conflicted"
    );
    // The committed state is the same after a restart (nothing pending was lost).
    h.restart();
    h.wait_caught_up("totals");
    check(&h);
}

#[test]
fn a_refused_deploy_leaves_no_topics_behind() {
    let h = Harness::new();
    h.topic("in", 1);
    let names = || {
        let mut names: Vec<String> = h.log().topics().into_iter().map(|t| t.name).collect();
        names.sort();
        names
    };
    let manifest = |outputs: serde_json::Value| json!({"name": "x", "kind": "enricher", "inputs": ["in"], "outputs": outputs});
    let faulty = weir_testkit::plugins::plugin_bytes("faulty");
    // An output name the log would refuse is refused before anything is made.
    let bad_name = h
        .engine()
        .deploy(manifest(json!(["x.ok", "bad/name"])), &faulty);
    assert!(
        matches!(bad_name, Err(EngineError::Manifest(_))),
        "{bad_name:?}"
    );
    assert_eq!(names(), vec!["in"]);
    // A failure after the topics were made (a full disk storing the
    // component, say) removes them again.
    let failpoints = h.engine().failpoints();
    failpoints
        .fail_deploy_after_topics
        .store(true, Ordering::Relaxed);
    let failed = h.engine().deploy(manifest(json!(["x.ok"])), &faulty);
    assert!(matches!(failed, Err(EngineError::Io(_))), "{failed:?}");
    assert_eq!(names(), vec!["in"]);
    assert!(h.engine().list().is_empty());
    // Nothing of it stays claimed either: the same deploy now succeeds.
    h.deploy(manifest(json!(["x.ok"])), "faulty");
    assert_eq!(names(), vec!["in", "x.dlq", "x.ok"]);
}

/// A plugin that sleeps cannot hold its task: sleeping takes no time in
/// the sandbox, so pause (and shutdown) wait for one call at most.
#[test]
fn a_sleeping_plugin_does_not_hold_pause() {
    let h = Harness::new();
    h.topic("in", 1);
    for i in 0..3 {
        h.produce("in", &format!("k{i}"), b"sleep", i);
    }
    h.deploy(
        json!({"name": "s", "kind": "enricher", "inputs": ["in"], "outputs": ["s.out"]}),
        "faulty",
    );
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let paused = h.engine().pause("s").expect("pause");
    assert_eq!(paused.state, RunState::Paused);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pause took {:?}",
        started.elapsed()
    );
    h.engine().resume("s").expect("resume");
    h.wait_caught_up("s");
    assert_eq!(h.read_all("s.out").len(), 3);
}

/// Output larger than one append of the log is appended in pieces; a single
/// record that can never fit is the plugin's failure and follows its error
/// policy (here: dead-lettered) instead of stalling the partition.
#[test]
fn output_over_the_log_limit_is_split_or_dead_lettered() {
    let mut h = Harness::new();
    h.max_batch_bytes = 1 << 20;
    h.restart();
    h.topic("in", 1);
    for (i, value) in [&b"many"[..], b"huge", b"after"].iter().enumerate() {
        h.produce("in", &format!("k{i}"), value, i as i64);
    }
    h.deploy(
        json!({"name": "big", "kind": "enricher", "inputs": ["in"], "outputs": ["big.out"],
               "retries": 1, "retry_backoff_ms": 1}),
        "faulty",
    );
    let status = h.wait_caught_up("big");
    assert_eq!(status.state, RunState::Running);
    let out = h.read_all("big.out");
    assert_eq!(out.len(), 101, "100 records of `many` and `after`");
    assert!(out[..100].iter().all(|(_, r)| r.value.len() == 64 << 10));
    assert_eq!(out[100].1.value, b"after");
    let dlq = h.read_all("big.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].1.value, b"huge");
    assert!(
        header(&dlq[0].1, headers::ERROR).is_some_and(|e| e.contains("exceeds the log's limit")),
        "{:?}",
        header(&dlq[0].1, headers::ERROR)
    );
}

#[test]
fn results_held_for_a_failing_batch_are_committed_within_the_budget() {
    // Isolating the panics calls the plugin once per part; each `many`
    // returns 6.4 MiB. Held all together they would be 25.6 MiB in memory
    // at once; with a 1 MiB budget every part's results are committed
    // before the next part runs.
    let mut h = Harness::new();
    h.commit_max_bytes = 1 << 20;
    h.restart();
    h.topic("in", 1);
    for (i, value) in ["many", "panic", "many", "many", "panic", "many"]
        .iter()
        .enumerate()
    {
        h.produce("in", &format!("k{i}"), value.as_bytes(), i as i64);
    }
    h.deploy(
        json!({"name": "held", "kind": "enricher", "inputs": ["in"], "outputs": ["held.out"],
               "retries": 0, "retry_backoff_ms": 1}),
        "faulty",
    );
    let status = h.wait_caught_up("held");
    assert_eq!(status.state, RunState::Running);
    assert!(
        status.metrics.commits >= 4,
        "one commit per `many` at least, got {}",
        status.metrics.commits
    );
    let out = h.read_all("held.out");
    assert_eq!(out.len(), 400, "each `many` emitted its 100 records once");
    let dlq = h.read_all("held.dlq");
    let dead: Vec<&[u8]> = dlq.iter().map(|(_, r)| r.value.as_slice()).collect();
    assert_eq!(dead, [&b"panic"[..], b"panic"]);
}
