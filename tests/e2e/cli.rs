//! The `weir` CLI against a running server: human output by default,
//! `--json` on request, server errors as a non-zero exit with the code.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::start;

fn weir(server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--server", server])
        .args(args)
        .env_remove("WEIR_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weir");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    // A watchdog: a CLI that hangs (say, a tail that never sees its records)
    // fails the test instead of hanging the suite.
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill(2) on our own child, which is not reaped until
            // wait_with_output returns (after which done_tx is sent).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    });
    let out = child.wait_with_output().expect("weir output");
    let _ = done_tx.send(());
    let _ = watchdog.join();
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "weir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_topics_produce_tail_status() {
    let s = start(&[]);
    let url = s.url.as_str();
    let out = ok(&weir(
        url,
        &["topics", "create", "orders", "--partitions", "2"],
        None,
    ));
    assert!(out.contains("created topic orders"), "{out}");
    let out = ok(&weir(
        url,
        &[
            "produce",
            "orders",
            "{\"id\":1}",
            "--key",
            "c1",
            "-H",
            "src=cli",
        ],
        None,
    ));
    assert!(out.starts_with("orders/"), "{out}");
    let out = ok(&weir(
        url,
        &["produce", "orders", "--key", "c1"],
        Some("{\"id\":2}\nplain text\n\n{\"id\":3}\n"),
    ));
    assert!(out.contains("produced 3 records"), "{out}");

    let out = ok(&weir(url, &["tail", "orders"], None));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].contains("key=c1 [src=cli] {\"id\":1}"), "{out}");
    assert!(lines[2].ends_with("plain text"), "{out}");

    let out = ok(&weir(url, &["--json", "tail", "orders", "-n", "2"], None));
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["value"]["id"], 1);
    assert_eq!(out.lines().count(), 2);

    let out = ok(&weir(url, &["topics", "list"], None));
    assert!(out.contains("orders") && out.contains('4'), "{out}");
    let out = ok(&weir(url, &["status"], None));
    assert!(out.contains(" ok ") || out.contains("— ok"), "{out}");
    let out = ok(&weir(url, &["--json", "topics", "inspect", "orders"], None));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["partitions"].as_array().map(Vec::len), Some(2));

    let failed = weir(url, &["produce", "nope", "1"], None);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("unknown_topic (404)"));
    let unreachable = weir("http://127.0.0.1:1", &["status"], None);
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"));
}

/// The README quick start, command for command (the server is started by
/// the test instead of `weir serve &`).
#[test]
fn cli_quick_start_flow() {
    let s = start(&[]);
    let url = s.url.as_str();
    let p = weir_testkit::plugins::plugin_dir();
    let wasm = |name: &str| p.join(format!("{name}.wasm")).display().to_string();
    ok(&weir(
        url,
        &["topics", "create", "orders", "--partitions", "2"],
        None,
    ));
    let out = ok(&weir(
        url,
        &[
            "deploy",
            r#"{"name":"enrich","kind":"enricher","inputs":["orders"],"outputs":["orders.enriched"],"config":{"customers_pond":"totals"}}"#,
            &wasm("enricher_orders"),
        ],
        None,
    ));
    assert_eq!(out.trim(), "deployed enrich version 1 (enricher)");
    ok(&weir(
        url,
        &[
            "deploy",
            r#"{"name":"totals","kind":"projection","inputs":["orders.enriched"]}"#,
            &wasm("projection_totals"),
        ],
        None,
    ));
    ok(&weir(
        url,
        &[
            "deploy",
            r#"{"name":"bank","kind":"command-handler"}"#,
            &wasm("command_bank"),
        ],
        None,
    ));

    ok(&weir(
        url,
        &[
            "produce",
            "orders",
            r#"{"id":"o1","customer":"c1","amount":10}"#,
            "--key",
            "c1",
        ],
        None,
    ));
    ok(&weir(
        url,
        &[
            "produce",
            "orders",
            r#"{"id":"o2","customer":"c1","amount":32}"#,
            "--key",
            "c1",
        ],
        None,
    ));
    let out = ok(&weir(
        url,
        &["tail", "orders.enriched", "--follow", "-n", "2"],
        None,
    ));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(r#""id":"o2""#), "{out}");
    s.wait_until("the pond", Duration::from_secs(20), |_| {
        ok(&weir(url, &["pond", "get", "totals", "c1"], None)).contains(r#""count":2"#)
    });
    let out = ok(&weir(url, &["pond", "get", "totals", "c1"], None));
    assert_eq!(out.trim(), r#"c1 = {"count":2,"sum":42}"#);

    let out = ok(&weir(
        url,
        &["command", "bank", "acc-1", "open", r#"{"owner":"ada"}"#],
        None,
    ));
    assert!(
        out.starts_with("applied") && out.contains("version 1") && out.contains("opened"),
        "{out}"
    );
    let out = ok(&weir(
        url,
        &["command", "bank", "acc-1", "deposit", r#"{"amount":100}"#],
        None,
    ));
    assert!(out.contains("version 2"), "{out}");
    let rejected = weir(
        url,
        &["command", "bank", "acc-1", "withdraw", r#"{"amount":500}"#],
        None,
    );
    assert!(!rejected.status.success());
    let err = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        err.contains("command_rejected (422): insufficient-funds"),
        "{err}"
    );
    let out = ok(&weir(url, &["plugins", "list"], None));
    assert!(
        out.contains("enrich") && out.contains("totals") && out.contains("bank"),
        "{out}"
    );
    let out = ok(&weir(url, &["plugins", "inspect", "totals"], None));
    assert!(
        out.contains("partitions:") && out.contains("(active)"),
        "{out}"
    );
}

/// `weir serve --help` lists the server's flags only, each with its
/// variable; client subcommands list the client options; a client whose
/// reader goes away ends quietly; server logs in a file carry no colours.
#[test]
fn help_pipes_and_logs_are_tidy() {
    let bin = env!("CARGO_BIN_EXE_weir");
    let help = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().expect("run weir");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serve = help(&["serve", "--help"]);
    for var in [
        "WEIR_CONFIG",
        "WEIR_LISTEN",
        "WEIR_DATA_DIR",
        "WEIR_ADMIN_TOKEN",
        "WEIR_FSYNC",
        "WEIR_MAX_BODY_BYTES",
        "WEIR_MAX_COMPONENT_BYTES",
        "WEIR_MAX_WAIT_MS",
        "WEIR_SHUTDOWN_TIMEOUT_MS",
        "WEIR_LOG_FORMAT",
    ] {
        assert!(serve.contains(&format!("[env: {var}]")), "{var}:\n{serve}");
    }
    for client_flag in ["--server", "--token", "--json"] {
        assert!(!serve.contains(client_flag), "{client_flag}:\n{serve}");
    }
    let status = help(&["status", "--help"]);
    assert!(
        status.contains("--server") && status.contains("[env: WEIR_SERVER]"),
        "{status}"
    );

    let s = start(&[]);
    s.create_topic("orders", 1);
    // The reader of stdout is gone before the client writes anything.
    let mut child = Command::new(bin)
        .args(["--server", &s.url, "topics", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weir");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("weir output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    let logs = s.logs();
    assert!(logs.contains("weir serving"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "colour codes in a log file:\n{logs}"
    );
}
