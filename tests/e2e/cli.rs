//! The `weir` CLI against a running server: human output by default,
//! `--json` on request, server errors as a non-zero exit with the code.

use std::io::Write;
use std::process::{Command, Output, Stdio};

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
    child.wait_with_output().expect("weir output")
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
