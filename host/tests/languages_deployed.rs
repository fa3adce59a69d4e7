//! The Python, JavaScript and C example plugins *deployed* beside the Rust
//! ones to a running processor engine (the server's engine, without HTTP:
//! real log, store, checkpoints and partition tasks) and fed the same
//! records and commands: each language's output topic, pond contents, pond
//! query answers and command outcomes must equal Rust's.
//!
//! One engine for all languages; components come precompiled from the
//! artifact cache the conformance test (`languages.rs`) fills, or are
//! compiled here once. A missing toolchain fails the test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use weir::batch::Record;
use weir::log::{EventLog, FsyncPolicy, Log, LogConfig, TopicConfig};
use weir::processor::{CommandOutcome, CommandRequest, Engine, EngineConfig};
use weir::runtime::{PoolConfig, Runtime, RuntimeConfig};
use weir_testkit::languages::{self, Language};
use weir_testkit::plugins::plugin_bytes;

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn caught_up(engine: &Engine, name: &str) -> bool {
    engine
        .inspect(name)
        .is_ok_and(|s| s.lag() == 0 && !s.partitions.is_empty())
}

fn append(log: &Log, topic: &str, values: &[(&str, String)]) {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            headers: vec![],
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect();
    log.append(topic, 0, &records).expect("append");
}

/// (key, value) of every record of partition 0, as text.
fn read_all(log: &Log, topic: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let batch = log.read(topic, 0, offset, 1000, 1 << 20).expect("read");
        if batch.is_empty() {
            return out;
        }
        for i in 0..batch.len() {
            let r = batch.record(i);
            out.push((
                String::from_utf8_lossy(&r.key).into_owned(),
                String::from_utf8_lossy(&r.value).into_owned(),
            ));
        }
        offset = batch.offsets[batch.len() - 1] + 1;
    }
}

#[test]
fn every_language_deployed_to_an_engine_gives_rust_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(languages::output_dir().join("wasmtime-cache")),
        pool: Some(PoolConfig::for_instances(64)),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let log = Arc::new(Log::open(LogConfig::new(dir.path().join("log"))).expect("log"));
    let mut config = EngineConfig::new(dir.path().join("data"), FsyncPolicy::Never);
    config.idle_wait = Duration::from_millis(20);
    config.commit_interval = Duration::from_millis(10);
    let engine = Engine::open(config, log.clone(), runtime).expect("engine");

    let mut langs = vec![(
        "rust",
        plugin_bytes("enricher_orders"),
        plugin_bytes("projection_totals"),
        plugin_bytes("command_bank"),
    )];
    for lang in Language::ALL {
        let get = |plugin: &str| {
            languages::component_bytes(lang, plugin).unwrap_or_else(|e| panic!("{e}"))
        };
        langs.push((
            lang.id(),
            get("enricher-orders"),
            get("projection-totals"),
            get("command-bank"),
        ));
    }

    // A customers pond, complete before any order is enriched, so every
    // enricher joins against the same state.
    log.create_topic("customers", TopicConfig::with_partitions(1))
        .expect("topic");
    append(
        &log,
        "customers",
        &[
            ("c1", json!({"customer": "c1", "amount": 5}).to_string()),
            ("c2", json!({"customer": "c2", "amount": -7}).to_string()),
        ],
    );
    engine
        .deploy(
            json!({"name": "customers", "kind": "projection", "inputs": ["customers"]}),
            &plugin_bytes("projection_totals"),
        )
        .expect("deploy customers");
    wait_for("the customers pond", || caught_up(&engine, "customers"));

    log.create_topic("orders", TopicConfig::with_partitions(1))
        .expect("topic");
    for (lang, enricher, projection, bank) in &langs {
        engine
            .deploy(
                json!({"name": format!("enrich-{lang}"), "kind": "enricher", "inputs": ["orders"],
                       "outputs": [format!("enriched-{lang}")], "config": {"customers_pond": "customers"}}),
                enricher,
            )
            .unwrap_or_else(|e| panic!("deploy {lang} enricher: {e}"));
        engine
            .deploy(
                json!({"name": format!("totals-{lang}"), "kind": "projection", "inputs": ["orders"], "error_policy": "skip"}),
                projection,
            )
            .unwrap_or_else(|e| panic!("deploy {lang} projection: {e}"));
        engine
            .deploy(
                json!({"name": format!("bank-{lang}"), "kind": "command-handler", "config": {"max_amount": 100}}),
                bank,
            )
            .unwrap_or_else(|e| panic!("deploy {lang} bank: {e}"));
    }

    let orders = [
        json!({"id": "o1", "customer": "c1", "amount": 10}).to_string(),
        json!({"id": "o2", "customer": "c2", "amount": 5}).to_string(),
        json!({"id": "o3", "customer": "c1", "amount": -3}).to_string(),
        json!({"id": "o4", "customer": "c9", "amount": 7, "note": [1, 2.5, null]}).to_string(),
        json!({"id": "", "customer": "c1", "amount": 3}).to_string(),
        json!({"id": "o5", "customer": "ü", "amount": i64::MAX}).to_string(),
        json!({"id": "o6", "customer": "c1", "amount": 1.5}).to_string(),
        "not json".to_string(),
        json!({"id": "o7", "customer": "ü", "amount": i64::MAX}).to_string(),
    ];
    let keyed: Vec<(&str, String)> = orders.iter().map(|o| ("k", o.clone())).collect();
    append(&log, "orders", &keyed);
    wait_for("every language to catch up", || {
        langs.iter().all(|(l, ..)| {
            caught_up(&engine, &format!("enrich-{l}")) && caught_up(&engine, &format!("totals-{l}"))
        })
    });

    let rust_enriched = read_all(&log, "enriched-rust");
    assert_eq!(rust_enriched.len(), 5, "{rust_enriched:#?}");
    let pond = |l: &str| {
        engine
            .pond_scan(&format!("totals-{l}"), b"", None, 1000)
            .expect("scan")
    };
    let query = |l: &str, q: &[u8]| engine.pond_query(&format!("totals-{l}"), q).expect("query");
    assert!(!pond("rust").is_empty());
    for (lang, ..) in &langs[1..] {
        assert_eq!(
            read_all(&log, &format!("enriched-{lang}")),
            rust_enriched,
            "{lang}: enriched orders"
        );
        assert_eq!(pond(lang), pond("rust"), "{lang}: pond entries");
        for q in [&b""[..], b"c1", b"nobody"] {
            assert_eq!(query(lang, q), query("rust", q), "{lang}: query {q:?}");
        }
    }

    let commands = [
        ("deposit", r#"{"amount":5}"#),
        ("open", r#"{"owner":"Ann"}"#),
        ("deposit", r#"{"amount":101}"#),
        ("deposit", r#"{"amount":60}"#),
        ("withdraw", r#"{"amount":61}"#),
        ("close", ""),
        ("withdraw", r#"{"amount":60}"#),
        ("close", "null"),
        ("deposit", r#"{"amount":1}"#),
    ];
    for (i, (name, data)) in commands.iter().enumerate() {
        let outcome = |lang: &str| {
            let service = format!("bank-{lang}");
            let id = format!("cmd-{i}");
            let request = CommandRequest {
                id: id.clone(),
                aggregate: "acc-1".into(),
                name: (*name).into(),
                data: data.as_bytes().to_vec(),
                expected_version: None,
                reply_topic: None,
            };
            engine.submit(&service, &request).expect("submit");
            let mut result = None;
            wait_for(&format!("{service} to handle {id}"), || {
                result = engine.command_result(&service, &id).expect("result");
                result.is_some()
            });
            result
        };
        let rust = outcome("rust");
        assert!(
            matches!(
                rust,
                Some(CommandOutcome::Applied { .. } | CommandOutcome::Rejected { .. })
            ),
            "{rust:?}"
        );
        for (lang, ..) in &langs[1..] {
            assert_eq!(outcome(lang), rust, "{lang}: command {i} ({name})");
        }
    }
}
