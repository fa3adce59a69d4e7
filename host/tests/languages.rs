//! Conformance of the example plugins written in Python, JavaScript and C
//! with the Rust ones: each language's component is loaded into the host
//! runtime, fed the same batches / commands as the Rust component, and must
//! give the same outputs, state, query answers and decisions, byte for byte.
//!
//! Each component is compiled once into a persistent artifact cache
//! (`target/lang-plugins/wasmtime-cache`) and then loaded a second time by a
//! fresh runtime, which must take it from the cache. A missing toolchain
//! fails the test with the install command; nothing is skipped silently.

use std::sync::{Arc, OnceLock};
use std::time::Instant;
use weir::batch::{Record, RecordBatch};
use weir::runtime::*;
use weir_testkit::languages::{self, Language};
use weir_testkit::plugins::plugin_bytes;

fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: Some(languages::output_dir().join("wasmtime-cache")),
        pool: Some(PoolConfig::for_instances(16)),
        ..RuntimeConfig::default()
    }
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(runtime_config()).expect("runtime"))
}

// ---- inputs ---------------------------------------------------------------

/// The `customers` pond the enricher joins with: floats in every notation,
/// integers beyond i64, escapes, unsorted and repeated keys, invalid JSON.
fn customers(pond: &str, key: &[u8]) -> Option<Vec<u8>> {
    if pond != "customers" {
        return None;
    }
    let value: &str = match key {
        b"c1" => {
            r#"{"tier":"gold","name":"Ann","scores":[1e20,0.00001,1e-6,1.5e-7,1e16,2.5e-5,-0.0,1.0,100.5,0.1,1e15,123.456e3],
               "ints":[123456789012345678,12345678901234567890,-9223372036854775808],
               "nested":{"z":{"b":2,"a":1},"y":[{"k":1,"k":2}]},"text":"caf\u00e9 \ud83d\ude00 \u0001 tab\t quote\" slash\/ back\\"}"#
        }
        b"c2" => "not json",
        b"c3" => "[1,2,{\"b\":1,\"a\":2,\"10\":0,\"2\":0}]",
        b"c4" => "\"just a string\"",
        k if k == "ü".as_bytes() => r#"{"name":"Ü","n":-0.0}"#,
        _ => return None,
    };
    Some(value.as_bytes().to_vec())
}

fn batch(first_offset: u64, values: &[&str]) -> RecordBatch {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            key: if i % 3 == 0 {
                Vec::new()
            } else {
                format!("k{i}").into_bytes()
            },
            value: v.as_bytes().to_vec(),
            headers: if i % 2 == 0 {
                vec![("h".into(), b"v".to_vec())]
            } else {
                vec![]
            },
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect();
    RecordBatch::from_records(first_offset, &records)
}

const ORDERS: &[&str] = &[
    r#"{"id":"o1","customer":"c1","amount":10}"#,
    r#"{"id":"o\"q\u00e9","customer":"c1","amount":4}"#,
    r#"{"id":"o2","customer":"c2","amount":5,"extra":[1,{"x":null}]}"#,
    "not json",
    r#"{"id":"","customer":"c1","amount":3}"#,
    r#"{"id":"o3","customer":"c1","amount":-3}"#,
    r#"{"id":"o4","customer":"c3","amount":1.5}"#,
    r#"{"id":"o5","customer":"c9","amount":7}"#,
    r#"  {"id":"o6","customer":"c4","amount":2}  "#,
    "[1,2]",
    r#"{"id":"o7","customer":"ü","amount":9223372036854775807}"#,
    r#"{"id":"o8","customer":"c1","amount":"10"}"#,
    r#"{"id":"o9","customer":"c1","amount":18446744073709551615}"#,
    r#"{"id":"o10","customer":"c1","amount":5} trailing"#,
    r#"{"id":null,"customer":"c1","amount":1}"#,
    r#"{"id":"o11","customer":"c3","amount":1e2}"#,
    r#""a string""#,
    r#"{"id":"o12","customer":"","amount":4}"#,
    r#"{"customer":"c1","amount":4}"#,
    r#"{"id":"o13","customer":"c3","amount":0}"#,
    r#"{"id":"o14","customer":"c3","amount":1,"nested":{"deep":[[[]]]}}"#,
];

const TOTALS_BATCH_1: &[&str] = &[
    r#"{"customer":"c1","amount":10}"#,
    r#"{"customer":"c2","amount":-5,"id":"x"}"#,
    r#"{"customer":"c1","amount":2}"#,
    r#"{"customer":"ü","amount":9223372036854775807}"#,
    r#"{"customer":"ü","amount":9223372036854775807}"#,
    r#"{"customer":"10","amount":1}"#,
    r#"{"customer":"2","amount":1}"#,
];

const TOTALS_BATCH_2: &[&str] = &[
    r#"{"customer":"c1","amount":-9223372036854775808}"#,
    r#"{"customer":"c3","amount":0}"#,
    r#"  {"customer":"c2","amount":7}  "#,
];

/// Batches that fail, each at a known event; none of their writes count.
const BAD_TOTALS_BATCHES: &[&[&str]] = &[
    &[
        r#"{"customer":"c1","amount":1}"#,
        r#"{"customer":"c1","amount":1}"#,
        "not json",
    ],
    &[r#"{"customer":5,"amount":1}"#],
    &[
        r#"{"customer":"c1","amount":1}"#,
        r#"{"customer":"c1","amount":1.5}"#,
    ],
    &[r#"{"customer":"c1"}"#],
];

// ---- transcripts: what a plugin did with the inputs, as comparable lines --

fn info_line(info: &PluginInfo) -> String {
    format!("describe: {} {} {:?}", info.name, info.version, info.kind)
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn enricher_transcript(plugin: &Plugin) -> Vec<String> {
    let mut lines = vec![info_line(plugin.info())];
    let limits = runtime().default_limits();
    let refused = plugin.enricher(
        "orders",
        limits.clone(),
        r#"{"customers_pond": 5}"#,
        Arc::new(NoPonds),
    );
    lines.push(format!("bad config refused: {}", refused.is_err()));
    let mut instance = plugin
        .enricher(
            "orders",
            limits,
            r#"{"customers_pond":"customers"}"#,
            Arc::new(customers),
        )
        .expect("enricher init");
    instance.set_output_count(1);
    for (n, values) in [ORDERS, &ORDERS[..3]].iter().enumerate() {
        let emitted = instance
            .process("orders", 3, &batch(100 * n as u64, values))
            .expect("process");
        for i in 0..emitted.len() {
            let headers: Vec<String> = emitted
                .headers(i)
                .map(|(k, v)| format!("{}={}", show(k), show(v)))
                .collect();
            lines.push(format!(
                "batch {n} out {} from {} key {} headers {headers:?} value {}",
                emitted.outputs[i],
                emitted.sources[i],
                show(emitted.key(i)),
                show(emitted.value(i))
            ));
        }
    }
    lines
}

fn projection_transcript(plugin: &Plugin) -> Vec<String> {
    let mut lines = vec![info_line(plugin.info())];
    let mut instance = plugin
        .projection("totals", runtime().default_limits(), "")
        .expect("projection init");
    let mut state = MemoryState::default();
    for (n, values) in [TOTALS_BATCH_1, TOTALS_BATCH_2].iter().enumerate() {
        let applied = instance.apply("orders", 0, &batch(10 * n as u64, values), &mut state);
        lines.push(format!(
            "apply {n}: {:?}",
            applied.map_err(|e| e.to_string())
        ));
    }
    for (n, values) in BAD_TOTALS_BATCHES.iter().enumerate() {
        let mut scratch = state.clone();
        match instance.apply("orders", 0, &batch(50, values), &mut scratch) {
            Err(CallError::Failure { event_index, .. }) => {
                lines.push(format!("bad batch {n}: fails at {event_index:?}"))
            }
            other => lines.push(format!("bad batch {n}: unexpected {other:?}")),
        }
    }
    for (key, value) in &state.entries {
        lines.push(format!("state {} = {}", show(key), show(value)));
    }
    for request in ["", "c1", "zz", "ü", "10"] {
        let answer = instance
            .query(request.as_bytes(), &mut state)
            .expect("query call");
        lines.push(format!("query {request:?}: {:?}", answer.map(|a| show(&a))));
    }
    lines
}

fn command(name: &str, data: &str) -> Command {
    Command {
        id: format!("cmd-{name}"),
        aggregate: "acct-1".into(),
        name: name.into(),
        data: data.as_bytes().to_vec(),
    }
}

fn bank_transcript(plugin: &Plugin) -> Vec<String> {
    let mut lines = vec![info_line(plugin.info())];
    let limits = runtime().default_limits();
    lines.push(format!(
        "bad config refused: {}",
        plugin
            .command_handler("bank", limits.clone(), r#"{"max_amount":"lots"}"#)
            .is_err()
    ));
    let mut bank = plugin
        .command_handler("bank", limits, r#"{"max_amount":100}"#)
        .expect("bank init");
    let commands = [
        ("deposit", r#"{"amount":5}"#),
        ("close", ""),
        ("open", r#"{"owner":"  "}"#),
        ("open", r#"{"owner":"Ann"}"#),
        ("open", r#"{"owner":"Bob"}"#),
        ("deposit", r#"{"amount":0}"#),
        ("deposit", r#"{"amount":101}"#),
        (
            "deposit",
            r#"{"amount":60,"note":"extra fields are ignored"}"#,
        ),
        ("withdraw", r#"{"amount":61}"#),
        ("close", "null"),
        ("withdraw", r#"{"amount":60}"#),
        ("fly", "{}"),
        ("deposit", r#"{"amount":"x"}"#),
        ("deposit", "{not json"),
        ("deposit", r#"{"amount":1.5}"#),
        ("open", "null"),
        ("close", "  "),
        ("deposit", r#"{"amount":1}"#),
        ("open", r#"{"owner":"x"}"#),
    ];
    let mut state = Vec::new();
    for (name, data) in commands {
        match bank
            .decide(&command(name, data), &state)
            .expect("decide call")
        {
            Ok(events) => {
                for e in &events {
                    lines.push(format!("{name}: event {} {}", e.name, show(&e.data)));
                }
                state = bank.evolve(&state, &events).expect("evolve call");
                lines.push(format!("  state {}", show(&state)));
            }
            // Serde's wording for a malformed command is Rust's own; the
            // code is the contract.
            Err(r) if r.code == "invalid-command" => {
                lines.push(format!("{name}: rejected {}", r.code))
            }
            Err(r) => lines.push(format!("{name}: rejected {} ({})", r.code, r.message)),
        }
    }
    // A whole history folded at once, from empty.
    let history: Vec<Event> = [
        ("opened", r#"{"owner":"Cy"}"#),
        ("deposited", r#"{"amount":70}"#),
        ("withdrawn", r#"{"amount":20}"#),
        ("deposited", r#"{"amount":9}"#),
    ]
    .iter()
    .map(|(n, d)| Event {
        name: (*n).into(),
        data: d.as_bytes().to_vec(),
    })
    .collect();
    let folded = bank.evolve(&[], &history).expect("evolve history");
    lines.push(format!("history state {}", show(&folded)));
    lines
}

// ---- comparison -----------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Enricher,
    Projection,
    Bank,
}

impl Kind {
    fn plugin_kind(self) -> PluginKind {
        match self {
            Kind::Enricher => PluginKind::Enricher,
            Kind::Projection => PluginKind::Projection,
            Kind::Bank => PluginKind::CommandHandler,
        }
    }
    fn rust_crate(self) -> &'static str {
        match self {
            Kind::Enricher => "enricher_orders",
            Kind::Projection => "projection_totals",
            Kind::Bank => "command_bank",
        }
    }
    fn plugin_dir(self) -> &'static str {
        match self {
            Kind::Enricher => "enricher-orders",
            Kind::Projection => "projection-totals",
            Kind::Bank => "command-bank",
        }
    }
    fn transcript(self, plugin: &Plugin) -> Vec<String> {
        match self {
            Kind::Enricher => enricher_transcript(plugin),
            Kind::Projection => projection_transcript(plugin),
            Kind::Bank => bank_transcript(plugin),
        }
    }
}

fn rust_transcript(kind: Kind) -> Vec<String> {
    let plugin = runtime()
        .load(kind.plugin_kind(), &plugin_bytes(kind.rust_crate()))
        .unwrap_or_else(|e| panic!("loading {}: {e}", kind.rust_crate()));
    kind.transcript(&plugin)
}

/// Loads `plugins/<lang>/<kind>` (compiling it, or from the cache), checks a
/// fresh runtime takes it from the cache, and compares it with Rust.
fn check(lang: Language, kind: Kind) {
    let name = format!("{}/{}", lang.id(), kind.plugin_dir());
    let bytes =
        languages::component_bytes(lang, kind.plugin_dir()).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let plugin = runtime()
        .load(kind.plugin_kind(), &bytes)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let first_load = started.elapsed();

    let restarted = Runtime::new(runtime_config()).expect("runtime");
    let started = Instant::now();
    let again = restarted
        .load(kind.plugin_kind(), &bytes)
        .unwrap_or_else(|e| panic!("reloading {name}: {e}"));
    let cached_load = started.elapsed();
    assert_eq!(
        again.source(),
        ArtifactSource::DiskCache,
        "{name}: a second load must use the artifact cache"
    );
    eprintln!(
        "{name}: {:.1} MB, first load {first_load:.2?} ({:?}), cached load {cached_load:.2?}",
        bytes.len() as f64 / 1e6,
        plugin.source()
    );

    let expected = rust_transcript(kind);
    let got = kind.transcript(&again);
    assert!(
        expected.len() > 3,
        "the Rust transcript is too short to mean anything: {expected:#?}"
    );
    for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(have, want, "{name} differs from Rust at line {i}");
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: {got:#?}\nRust: {expected:#?}"
    );
}

#[test]
fn python_plugins_match_rust() {
    check(Language::Python, Kind::Enricher);
    check(Language::Python, Kind::Projection);
    check(Language::Python, Kind::Bank);
}

#[test]
fn javascript_plugins_match_rust() {
    check(Language::JavaScript, Kind::Enricher);
    check(Language::JavaScript, Kind::Projection);
    check(Language::JavaScript, Kind::Bank);
}

#[test]
fn c_plugins_match_rust() {
    check(Language::C, Kind::Enricher);
    check(Language::C, Kind::Projection);
    check(Language::C, Kind::Bank);
}

// ---- the SDKs' float notation against serde_json, natively --------------

/// Finite doubles: edge cases, then bit patterns from a fixed xorshift (all
/// exponents), then decimal-looking values.
fn sample_floats() -> Vec<f64> {
    let mut values = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        0.5,
        1.5,
        100.0,
        1e15,
        1e16,
        1e-5,
        1e-6,
        1e-7,
        1.5e-7,
        2.5e-5,
        123456.789,
        1e20,
        1e21,
        1e22,
        1e100,
        1e-100,
        5e-324,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        9007199254740993.0,
        0.30000000000000004,
        123456789012345680.0,
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while values.len() < 6000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            values.push(f);
        }
        let decimal = (x % 2_000_000) as f64 / 10f64.powi((x % 12) as i32) - 1000.0;
        values.push(decimal);
    }
    values
}

/// Runs `program args` with `input` lines on stdin; its output lines.
fn run_lines(what: &str, program: &str, args: &[&str], input: &[String]) -> Vec<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let text: String = input.iter().map(|l| format!("{l}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), input.len(), "{what}: one line out per line in");
    lines
}

/// The floats' bit patterns (hex, one a line) through `program`, which
/// prints each in the SDK's notation; compared with serde_json's.
fn check_float_notation(what: &str, program: &str, args: &[&str]) {
    let floats = sample_floats();
    let input: Vec<String> = floats
        .iter()
        .map(|f| format!("{:016x}", f.to_bits()))
        .collect();
    for (f, line) in floats.iter().zip(run_lines(what, program, args, &input)) {
        let want = serde_json::to_string(f).expect("serde_json");
        assert_eq!(line, want, "{what}: {f:e} (bits {:016x})", f.to_bits());
    }
}

/// JSON documents (hex-encoded, one a line) through `program`, which parses
/// each as a serde_json::Value would be (sorted keys) and writes it back, or
/// prints `error`; compared with serde_json's own round trip.
fn check_json_round_trip(what: &str, program: &str, args: &[&str]) {
    let docs = [
        r#"{"b":1,"a":[true,false,null],"c":{"z":"x","y":-0.0}}"#,
        r#"  {"k":1,"k":2, "j" : [ ] , "i":{}}  "#,
        r#""caf\u00e9 \ud83d\ude00 \u0001\u001f \b\f\n\r\t \/ \\ \" \u007f""#,
        "\"raw UTF-8: \u{e9} \u{1F600} \u{7f}\"",
        "[1e400]",
        "[123456789012345678, 12345678901234567890, -9223372036854775808, -0, 0, 1E2, 1e-2, 2.50]",
        r#"{"10":1,"2":2,"a":3,"B":4,"\u00e9":5,"e":6}"#,
        "[[[[[[[[[[]]]]]]]]]]",
        "{\"a\":1} x",
        "{\"a\":01}",
        "[1,]",
        "{\"a\" 1}",
        "NaN",
        "[Infinity]",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"tab\tinside\"",
        "",
        "  ",
        "[1.5e-7, 100.0, 1e16, 1e15, 0.00001, 5e-324]",
        "{\"nested\":{\"b\":{\"d\":1,\"c\":2},\"a\":[{\"y\":1,\"x\":2}]}}",
        "true",
        "nul",
        "-",
        "[.5]",
        "[1.]",
        "[-01]",
        "\"\\x41\"",
    ];
    let input: Vec<String> = docs
        .iter()
        .map(|d| d.bytes().map(|b| format!("{b:02x}")).collect())
        .collect();
    for (doc, line) in docs.iter().zip(run_lines(what, program, args, &input)) {
        let want = serde_json::from_str::<serde_json::Value>(doc)
            .map(|v| serde_json::to_string(&v).expect("serialise"))
            .unwrap_or_else(|_| "error".to_string());
        assert_eq!(line, want, "{what}: round trip of {doc:?}");
    }
}

// Each SDK's JSON code run natively: mode `float` prints the float with the
// given bits, mode `json` round-trips the hex-encoded document (or prints
// `error`).

#[test]
fn python_sdk_json_matches_serde_json() {
    let sdk = languages::repo_root().join("guest-sdk").join("python");
    let script = format!(
        r#"
import sys, struct, types
sys.modules["componentize_py_types"] = types.SimpleNamespace(Err=Exception)
imports = types.ModuleType("wit_world.imports")
imports.host = imports.types = None
sys.modules["wit_world"] = types.ModuleType("wit_world")
sys.modules["wit_world.imports"] = imports
sys.path.insert(0, {sdk:?})
import weir
for line in sys.stdin:
    raw = bytes.fromhex(line.strip())
    if sys.argv[1] == "float":
        print(weir.dumps(struct.unpack(">d", raw)[0]).decode())
        continue
    try:
        print(weir.dumps(weir.loads(raw, sort_keys=True)).decode())
    except (ValueError, UnicodeError):
        print("error")
"#,
        sdk = sdk.display().to_string()
    );
    check_float_notation("python SDK", "python3", &["-c", &script, "float"]);
    check_json_round_trip("python SDK", "python3", &["-c", &script, "json"]);
}

#[test]
fn javascript_sdk_json_matches_serde_json() {
    let core = languages::repo_root()
        .join("guest-sdk")
        .join("js")
        .join("core.js");
    let script = format!(
        r#"
import {{ dumps, loads, JsonFloat }} from {core:?};
import {{ readFileSync }} from 'node:fs';
const view = new DataView(new ArrayBuffer(8));
const out = [];
for (const line of readFileSync(0, 'utf8').split('\n').slice(0, -1)) {{
  const raw = Uint8Array.from(line.match(/../g) || [], (h) => parseInt(h, 16));
  if (process.argv[1] === 'float') {{
    const value = new DataView(raw.buffer).getFloat64(0);
    out.push(Number.isInteger(value) ? dumps(new JsonFloat(value)) : dumps(value));
    continue;
  }}
  try {{
    out.push(dumps(loads(raw, true)));
  }} catch (e) {{
    out.push('error');
  }}
}}
process.stdout.write(out.map((l) => l + '\n').join(''));
"#,
        core = format!("file://{}", core.display())
    );
    // Node 20 has JSON.parse source access (which the SDK needs for exact
    // numbers, and SpiderMonkey in componentize-js has) behind a flag.
    let node = [
        "--harmony-json-parse-with-source",
        "--input-type=module",
        "-e",
        &script,
    ];
    check_float_notation("javascript SDK", "node", &[&node[..], &["float"]].concat());
    check_json_round_trip("javascript SDK", "node", &[&node[..], &["json"]].concat());
}

#[test]
fn c_sdk_json_matches_serde_json() {
    let sdk = languages::repo_root().join("guest-sdk").join("c");
    let dir = tempfile::tempdir().expect("temp dir");
    let main = dir.path().join("main.c");
    std::fs::write(
        &main,
        r#"
#include "weir.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    static char line[1 << 16];
    bool floats = argc > 1 && strcmp(argv[1], "float") == 0;
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strcspn(line, "\n") / 2;
        uint8_t *raw = malloc(n + 1);
        for (size_t i = 0; i < n; i++) sscanf(line + 2 * i, "%2hhx", &raw[i]);
        weir_buf out = {0};
        if (floats) {
            double value = 0;
            unsigned char be[8];
            memcpy(be, raw, 8);
            for (int i = 0; i < 8; i++) ((unsigned char *)&value)[i] = be[7 - i];
            weir_json_write_float(&out, value);
        } else {
            weir_error err;
            weir_json *doc = weir_json_parse((weir_bytes){raw, n}, &err);
            if (doc) {
                weir_json_sort_keys(doc);
                weir_json_write(&out, doc);
                weir_json_free(doc);
            } else {
                weir_buf_push_str(&out, "error");
            }
        }
        printf("%.*s\n", (int)out.len, (const char *)out.ptr);
        weir_buf_free(&out);
        free(raw);
    }
    return 0;
}
"#,
    )
    .expect("write main.c");
    let binary = dir.path().join("json");
    let status = std::process::Command::new("cc")
        .arg("-O1")
        .arg("-I")
        .arg(&sdk)
        .arg(&main)
        .arg(sdk.join("weir_json.c"))
        .arg("-lm")
        .arg("-o")
        .arg(&binary)
        .status()
        .expect("run cc");
    assert!(
        status.success(),
        "compiling the C SDK's JSON natively failed"
    );
    let binary = binary.to_str().expect("utf-8 path");
    check_float_notation("C SDK", binary, &["float"]);
    check_json_round_trip("C SDK", binary, &["json"]);
}
