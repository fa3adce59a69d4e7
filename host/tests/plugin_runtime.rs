//! The plugin runtime against real components (built from `plugins/` by
//! weir-testkit): the three example worlds, load-time refusals, and the
//! sandbox's fault handling (deadline, memory limit, panic, no ambient
//! access), plus the precompiled-artifact cache.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use weir::batch::{Record, RecordBatch};
use weir::runtime::*;
use weir_testkit::plugins::plugin_bytes;

/// One runtime (small pool, shared artifact cache) for the tests that do
/// not inspect the cache itself: compiling each plugin once is enough.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    &RUNTIME
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let runtime = Runtime::new(RuntimeConfig {
                cache_dir: Some(dir.path().to_path_buf()),
                pool: Some(PoolConfig::for_instances(32)),
                ..RuntimeConfig::default()
            })
            .expect("runtime");
            (runtime, dir)
        })
        .0
}

fn load(kind: PluginKind, name: &str) -> Plugin {
    runtime()
        .load(kind, &plugin_bytes(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn batch(values: &[&str]) -> RecordBatch {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            key: format!("k{i}").into_bytes(),
            value: v.as_bytes().to_vec(),
            headers: vec![],
            timestamp: 1_000 + i as i64,
        })
        .collect();
    RecordBatch::from_records(40, &records)
}

fn values(e: &Emitted) -> Vec<String> {
    (0..e.len())
        .map(|i| String::from_utf8_lossy(e.value(i)).into_owned())
        .collect()
}

fn faulty(limits: Limits) -> EnricherInstance {
    load(PluginKind::Enricher, "faulty")
        .enricher("faulty", limits, "{}", Arc::new(NoPonds))
        .expect("faulty instance")
}

#[test]
fn runtime_handles_are_shareable() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Runtime>();
    send_sync::<Plugin>();
    send::<EnricherInstance>();
    send::<ProjectionInstance>();
    send::<CommandHandlerInstance>();
}

#[test]
fn enricher_joins_orders_with_customers_and_drops_invalid_ones() {
    let plugin = load(PluginKind::Enricher, "enricher_orders");
    assert_eq!(plugin.kind(), PluginKind::Enricher);
    assert_eq!(
        plugin.info(),
        &PluginInfo {
            name: "enricher_orders".into(),
            version: "0.1.0".into(),
            kind: PluginKind::Enricher
        }
    );
    assert_eq!(plugin.export_name(), "weir:plugin/river@0.1.0");
    assert_eq!(plugin.digest().len(), 64);

    let lookup = |pond: &str, key: &[u8]| -> Option<Vec<u8>> {
        (pond == "clients" && key == b"c1").then(|| br#"{"name":"Ada","tier":"gold"}"#.to_vec())
    };
    let mut enricher = plugin
        .enricher(
            "orders",
            runtime().default_limits(),
            r#"{"customers_pond":"clients"}"#,
            Arc::new(lookup),
        )
        .expect("init");
    enricher.set_output_count(1);
    let input = batch(&[
        r#"{"id":"o1","customer":"c1","amount":250}"#,
        r#"not json"#,
        r#"{"id":"o2","customer":"c2","amount":10}"#,
        r#"{"id":"o3","customer":"c1","amount":-5}"#,
        r#"{"id":"","customer":"c1","amount":5}"#,
    ]);
    let out = enricher.process("orders", 2, &input).expect("process");
    assert_eq!(out.len(), 2);
    assert_eq!(out.sources, vec![0, 2]);
    assert_eq!(out.outputs, vec![0, 0]);
    assert_eq!((out.key(0), out.key(1)), (&b"c1"[..], &b"c2"[..]));
    let first: serde_json::Value = serde_json::from_slice(out.value(0)).expect("json");
    assert_eq!(
        first,
        serde_json::json!({"id":"o1","customer":"c1","amount":250,"customer_info":{"name":"Ada","tier":"gold"}})
    );
    let second: serde_json::Value = serde_json::from_slice(out.value(1)).expect("json");
    assert_eq!(second["customer_info"], serde_json::Value::Null);

    // An empty batch is fine, and the instance stays warm across calls.
    assert!(
        enricher
            .process("orders", 2, &RecordBatch::default())
            .expect("empty")
            .is_empty()
    );
    assert_eq!(enricher.instantiations(), 1);

    // Output indexes are checked against the processor's outputs.
    enricher.set_output_count(0);
    let err = enricher.process("orders", 2, &input).unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidOutput { message } if message.contains("output 0")),
        "{err}"
    );
    assert!(!err.instance_discarded());
}

#[test]
fn projection_folds_totals_and_answers_queries() {
    let plugin = load(PluginKind::Projection, "projection_totals");
    let mut pond = plugin
        .projection("totals", runtime().default_limits(), "")
        .expect("init");
    let mut state = MemoryState::default();
    let input = batch(&[
        r#"{"customer":"c1","amount":100}"#,
        r#"{"customer":"c2","amount":7}"#,
        r#"{"customer":"c1","amount":50}"#,
    ]);
    pond.apply("orders", 0, &input, &mut state).expect("apply");
    pond.apply(
        "orders",
        0,
        &batch(&[r#"{"customer":"c1","amount":1}"#]),
        &mut state,
    )
    .expect("apply");
    assert_eq!(
        state.entries.get(&b"c1"[..]).map(Vec::as_slice),
        Some(&br#"{"count":3,"sum":151}"#[..])
    );

    let one = pond
        .query(b"c2", &mut state)
        .expect("query")
        .expect("answer");
    assert_eq!(one, br#"{"count":1,"sum":7}"#);
    let all = pond.query(b"", &mut state).expect("query").expect("answer");
    let all: serde_json::Value = serde_json::from_slice(&all).expect("json");
    assert_eq!(
        all,
        serde_json::json!({"c1":{"count":3,"sum":151},"c2":{"count":1,"sum":7}})
    );

    // A bad event fails the batch, naming the event; the instance survives.
    let err = pond
        .apply(
            "orders",
            0,
            &batch(&[r#"{"customer":"c3","amount":1}"#, "{oops"]),
            &mut state,
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Failure { event_index: Some(1), message } if message.contains("offset 41")),
        "{err}"
    );
    assert!(!err.instance_discarded());
    assert_eq!(pond.instantiations(), 1);
}

fn command(name: &str, data: &str) -> Command {
    Command {
        id: format!("cmd-{name}"),
        aggregate: "acct-1".into(),
        name: name.into(),
        data: data.as_bytes().to_vec(),
    }
}

#[test]
fn command_handler_decides_and_evolves_a_bank_account() {
    let plugin = load(PluginKind::CommandHandler, "command_bank");
    let mut bank = plugin
        .command_handler("bank", runtime().default_limits(), r#"{"max_amount":1000}"#)
        .expect("init");
    let mut state = Vec::new();
    let run = |bank: &mut CommandHandlerInstance, state: &mut Vec<u8>, name: &str, data: &str| {
        let decided = bank.decide(&command(name, data), state).expect("decide");
        if let Ok(events) = &decided {
            *state = bank.evolve(state, events).expect("evolve");
        }
        decided
    };
    let rejected = |r: Result<Vec<Event>, Rejection>| r.expect_err("should be rejected").code;

    assert_eq!(
        rejected(run(&mut bank, &mut state, "deposit", r#"{"amount":5}"#)),
        "not-open"
    );
    let opened = run(&mut bank, &mut state, "open", r#"{"owner":"Ada"}"#).expect("open");
    assert_eq!(
        opened,
        vec![Event {
            name: "opened".into(),
            data: br#"{"owner":"Ada"}"#.to_vec()
        }]
    );
    assert_eq!(
        rejected(run(&mut bank, &mut state, "open", r#"{"owner":"Ada"}"#)),
        "already-open"
    );
    run(&mut bank, &mut state, "deposit", r#"{"amount":100}"#).expect("deposit");
    assert_eq!(
        rejected(run(&mut bank, &mut state, "deposit", r#"{"amount":0}"#)),
        "bad-amount"
    );
    assert_eq!(
        rejected(run(&mut bank, &mut state, "deposit", r#"{"amount":5000}"#)),
        "bad-amount"
    );
    assert_eq!(
        rejected(run(&mut bank, &mut state, "withdraw", r#"{"amount":101}"#)),
        "insufficient-funds"
    );
    run(&mut bank, &mut state, "withdraw", r#"{"amount":30}"#).expect("withdraw");
    assert_eq!(
        rejected(run(&mut bank, &mut state, "close", "")),
        "balance-not-zero"
    );
    let state_json: serde_json::Value = serde_json::from_slice(&state).expect("state json");
    assert_eq!(state_json["balance"], 70);
    run(&mut bank, &mut state, "withdraw", r#"{"amount":70}"#).expect("withdraw all");
    let closed = run(&mut bank, &mut state, "close", "").expect("close");
    assert_eq!(closed[0].name, "closed");
    assert_eq!(
        rejected(run(&mut bank, &mut state, "deposit", r#"{"amount":5}"#)),
        "account-closed"
    );
    assert_eq!(
        rejected(run(&mut bank, &mut state, "transfer", r#"{}"#)),
        "invalid-command"
    );

    // Rebuilding state by folding the whole history gives the same state.
    let history = vec![
        Event {
            name: "opened".into(),
            data: br#"{"owner":"Ada"}"#.to_vec(),
        },
        Event {
            name: "deposited".into(),
            data: br#"{"amount":100}"#.to_vec(),
        },
        Event {
            name: "withdrawn".into(),
            data: br#"{"amount":30}"#.to_vec(),
        },
        Event {
            name: "withdrawn".into(),
            data: br#"{"amount":70}"#.to_vec(),
        },
        Event {
            name: "closed".into(),
            data: b"null".to_vec(),
        },
    ];
    assert_eq!(bank.evolve(&[], &history).expect("fold"), state);

    // An event the plugin cannot read traps evolve; the next call works.
    let err = bank
        .evolve(
            &[],
            &[Event {
                name: "nonsense".into(),
                data: b"{}".to_vec(),
            }],
        )
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Trap { message } if message.contains("nonsense")),
        "{err}"
    );
    assert!(
        bank.decide(&command("open", r#"{"owner":"Bo"}"#), &[])
            .expect("decide")
            .is_ok()
    );
    assert_eq!(bank.instantiations(), 2);
}

#[test]
fn load_refuses_what_is_not_a_plugin_of_the_world() {
    let rt = runtime();
    assert!(matches!(
        rt.load(PluginKind::Enricher, b"hello, world"),
        Err(LoadError::NotWasm)
    ));
    assert!(matches!(
        rt.load(PluginKind::Enricher, b"\0asm\x01\0\0\0"),
        Err(LoadError::CoreModule)
    ));
    let mut truncated = plugin_bytes("enricher_orders");
    truncated.truncate(truncated.len() / 2);
    let err = rt.load(PluginKind::Enricher, &truncated).unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");

    let err = rt
        .load(PluginKind::Enricher, &plugin_bytes("projection_totals"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wrong world")
            && err.contains("expected enricher")
            && err.contains("weir:plugin/pond@0.1.0"),
        "{err}"
    );
    let err = rt
        .load(PluginKind::CommandHandler, &plugin_bytes("enricher_orders"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected command-handler") && err.contains("an enricher"),
        "{err}"
    );

    let err = rt
        .load(PluginKind::Enricher, &plugin_bytes("missing_export"))
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingExport { missing } if missing == "weir:plugin/river@0.1.0#describe"),
        "{err}"
    );

    let err = rt
        .load(PluginKind::Enricher, &plugin_bytes("future_version"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::IncompatibleVersion { .. }),
        "{text}"
    );
    assert!(
        text.contains("weir:plugin/river@0.2.0") && text.contains("0.1.x"),
        "{text}"
    );

    // A plugin of one kind cannot be instantiated as another.
    let plugin = load(PluginKind::Enricher, "enricher_orders");
    assert!(matches!(
        plugin.projection("p", rt.default_limits(), ""),
        Err(CallError::Init { .. })
    ));
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline_and_the_next_call_gets_a_fresh_instance() {
    let limits = Limits {
        call_timeout: Duration::from_millis(200),
        ..runtime().default_limits()
    };
    let mut plugin = faulty(limits);
    assert_eq!(
        values(
            &plugin
                .process("t", 0, &batch(&["count", "count"]))
                .expect("count")
        ),
        ["1", "2"]
    );
    let started = Instant::now();
    let err = plugin.process("t", 0, &batch(&["loop"])).unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            limit: Duration::from_millis(200)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.instance_discarded());
    // Fresh instance: init re-run, the per-instance counter starts again.
    assert_eq!(
        values(
            &plugin
                .process("t", 0, &batch(&["count"]))
                .expect("after timeout")
        ),
        ["1"]
    );
    assert_eq!(plugin.instantiations(), 2);
}

#[test]
fn sleeping_cannot_outlast_the_deadline_and_the_clock_is_the_event_time() {
    let limits = Limits {
        call_timeout: Duration::from_millis(500),
        ..runtime().default_limits()
    };
    let mut plugin = faulty(limits);
    let started = Instant::now();
    let slept = plugin.process("t", 0, &batch(&["sleep"])).expect("sleep");
    assert_eq!(values(&slept), ["slept"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a 30 s sleep held the call for {:?}",
        started.elapsed()
    );
    // The wall clock is the batch's newest timestamp, and no time passes
    // inside a call: the same input gives the same output, in any instance.
    let clocks = batch(&["x", "clock"]);
    let first = values(&plugin.process("t", 0, &clocks).expect("clock"));
    assert_eq!(first, ["x", "wall_ms=1001 slept_ms=0"]);
    let mut other = faulty(runtime().default_limits());
    assert_eq!(
        values(&other.process("t", 0, &clocks).expect("replay")),
        first
    );
}

/// Counts the bytes `tracing` writes.
#[derive(Clone, Default)]
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .fetch_add(buf.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plugin_output_and_host_arguments_are_bounded() {
    let logged = Counted::default();
    let writer = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut plugin = faulty(runtime().default_limits());
    let shouted = plugin.process("t", 0, &batch(&["shout"])).expect("shout");
    assert_eq!(values(&shouted), ["shouted"]);
    let bytes = logged.0.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        bytes < 1 << 20,
        "10 MiB of stderr became {bytes} bytes of server log"
    );
    // A host-import argument over its bound fails the call as refused.
    let err = plugin.process("t", 0, &batch(&["bigkey"])).unwrap_err();
    assert!(
        matches!(&err, CallError::Forbidden { message } if message.contains("lookup key")),
        "{err:?}"
    );
}

#[test]
fn a_memory_bomb_fails_inside_its_limit() {
    let limits = Limits {
        memory_bytes: 48 << 20,
        ..runtime().default_limits()
    };
    let mut plugin = faulty(limits);
    let err = plugin.process("t", 0, &batch(&["memory"])).unwrap_err();
    assert!(
        matches!(&err, CallError::ResourceLimit { message } if message.contains("memory limit")),
        "{err}"
    );
    assert_eq!(
        values(
            &plugin
                .process("t", 0, &batch(&["count"]))
                .expect("after bomb")
        ),
        ["1"]
    );
}

#[test]
fn a_guest_panic_surfaces_with_its_message() {
    let mut plugin = faulty(runtime().default_limits());
    let err = plugin
        .process("t", 0, &batch(&["ok", "panic"]))
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Trap { message } if message.contains("faulty plugin panicked on purpose")),
        "{err}"
    );
    assert!(err.instance_discarded());
    assert_eq!(
        values(
            &plugin
                .process("t", 0, &batch(&["fine"]))
                .expect("after panic")
        ),
        ["fine"]
    );
}

#[test]
fn a_plugin_failure_names_the_event_and_keeps_the_instance() {
    let mut plugin = faulty(runtime().default_limits());
    let err = plugin
        .process("t", 0, &batch(&["ok", "fail", "ok"]))
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Failure {
            message: "event 1 refused on purpose".into(),
            event_index: Some(1)
        }
    );
    assert_eq!(
        values(&plugin.process("t", 0, &batch(&["count"])).expect("next")),
        ["3"]
    );
    assert_eq!(plugin.instantiations(), 1);
}

#[test]
fn init_can_refuse_its_config() {
    let plugin = load(PluginKind::Enricher, "faulty");
    let err = plugin
        .enricher(
            "f",
            runtime().default_limits(),
            r#"{"fail_init":true}"#,
            Arc::new(NoPonds),
        )
        .err();
    assert_eq!(
        err,
        Some(CallError::Init {
            message: "init refused by config".into()
        })
    );
    let err = plugin
        .enricher(
            "f",
            runtime().default_limits(),
            "{not json",
            Arc::new(NoPonds),
        )
        .err();
    assert!(
        matches!(&err, Some(CallError::Init { message }) if message.contains("invalid config")),
        "{err:?}"
    );
}

#[test]
fn the_sandbox_grants_no_files_sockets_or_environment() {
    let mut plugin = faulty(runtime().default_limits());
    let out = plugin
        .process("t", 0, &batch(&["file", "socket", "env", "log"]))
        .expect("process");
    let v = values(&out);
    assert!(
        v[0].starts_with("read=Err") && v[0].contains("create=Err") && v[0].contains("list=Err"),
        "{}",
        v[0]
    );
    assert!(
        v[1].starts_with("tcp=Err") && v[1].contains("udp=Err"),
        "{}",
        v[1]
    );
    assert_eq!(v[2], "vars=0 home=Err(NotPresent) args=0");
    assert_eq!(v[3], "logged");
    assert!(!std::path::Path::new("weir-escape.txt").exists());
}

#[test]
fn a_second_load_uses_the_precompiled_artifact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        pool: Some(PoolConfig::for_instances(4)),
        ..RuntimeConfig::default()
    };
    let bytes = plugin_bytes("command_bank");
    let first = Runtime::new(config.clone()).expect("runtime");
    let plugin = first
        .load(PluginKind::CommandHandler, &bytes)
        .expect("compile");
    assert_eq!(plugin.source(), ArtifactSource::Compiled);
    assert_eq!(
        first.stats(),
        RuntimeStats {
            compiled: 1,
            cache_hits: 0
        }
    );
    let again = first
        .load(PluginKind::CommandHandler, &bytes)
        .expect("cached");
    assert_eq!(again.source(), ArtifactSource::DiskCache);
    assert_eq!(again.digest(), plugin.digest());

    // A restarted host (a new runtime on the same directory) loads the
    // artifact instead of compiling, and it works.
    let restarted = Runtime::new(config).expect("runtime");
    let plugin = restarted
        .load(PluginKind::CommandHandler, &bytes)
        .expect("cached");
    assert_eq!(plugin.source(), ArtifactSource::DiskCache);
    assert_eq!(
        restarted.stats(),
        RuntimeStats {
            compiled: 0,
            cache_hits: 1
        }
    );
    let mut bank = plugin
        .command_handler("bank", restarted.default_limits(), "")
        .expect("init");
    assert!(
        bank.decide(&command("open", r#"{"owner":"Ada"}"#), &[])
            .expect("decide")
            .is_ok()
    );

    // A corrupt artifact is recompiled, not trusted.
    for entry in std::fs::read_dir(dir.path()).expect("cache dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt");
    }
    let plugin = restarted
        .load(PluginKind::CommandHandler, &bytes)
        .expect("recompiled");
    assert_eq!(plugin.source(), ArtifactSource::Compiled);
}

#[test]
fn a_memory_limit_above_the_pool_is_refused() {
    let plugin = load(PluginKind::CommandHandler, "command_bank");
    let limits = Limits {
        memory_bytes: 8 << 30,
        ..runtime().default_limits()
    };
    assert!(matches!(
        plugin.command_handler("bank", limits, ""),
        Err(CallError::Init { .. })
    ));
}
