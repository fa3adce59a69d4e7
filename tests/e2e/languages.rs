//! The Python, JavaScript and C example plugins deployed to a running
//! server beside the Rust ones and fed the same records and commands over
//! HTTP: each language's enriched output, pond contents, pond query answers
//! and command answers must equal Rust's.
//!
//! One server for all languages, so each component is compiled once (the
//! server keeps the artifact). A missing toolchain fails the test.

use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::languages::{self, Language};
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

use crate::start;

const WAIT: Duration = Duration::from_secs(120);

/// Name suffix, enricher, projection and command handler of one language.
type Components = (&'static str, Vec<u8>, Vec<u8>, Vec<u8>);

fn components() -> Vec<Components> {
    let mut all = vec![(
        "rust",
        plugin_bytes("enricher_orders"),
        plugin_bytes("projection_totals"),
        plugin_bytes("command_bank"),
    )];
    for lang in Language::ALL {
        let get = |plugin: &str| {
            languages::component_bytes(lang, plugin).unwrap_or_else(|e| panic!("{e}"))
        };
        all.push((
            lang.id(),
            get("enricher-orders"),
            get("projection-totals"),
            get("command-bank"),
        ));
    }
    all
}

fn caught_up(s: &Server, plugin: &str) -> bool {
    let r = s.get(&format!("/plugins/{plugin}"));
    r.status == 200
        && r.json["partitions"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["lag"] == 0))
}

fn produce(s: &Server, topic: &str, records: &[Value]) {
    let r = s.post_json(
        &format!("/topics/{topic}/records"),
        &json!({ "records": records }),
    );
    assert_eq!(r.status, 200, "{}", r.json);
}

/// Key and value of every record of a one-partition topic, in order.
fn records(s: &Server, topic: &str) -> Vec<Value> {
    s.read_all(topic, 0)
        .into_iter()
        .map(|r| json!({"key": r["key"], "value": r.get("value").or(r.get("value_text")).cloned()}))
        .collect()
}

#[test]
fn every_language_gives_rust_results_over_http() {
    let s = start(&[]);
    let langs = components();

    // A static customers pond (built with the Rust projection), complete
    // before any order is enriched, so every enricher sees the same state.
    s.create_topic("customers", 1);
    produce(
        &s,
        "customers",
        &[
            json!({"key": "c1", "value": {"customer": "c1", "amount": 5}}),
            json!({"key": "c2", "value": {"customer": "c2", "amount": -7}}),
        ],
    );
    let r = s.deploy(
        &json!({"name": "customers", "kind": "projection", "inputs": ["customers"]}),
        &plugin_bytes("projection_totals"),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    s.wait_until("the customers pond", WAIT, |s| caught_up(s, "customers"));

    s.create_topic("orders", 1);
    for (lang, enricher, projection, bank) in &langs {
        let r = s.deploy(
            &json!({"name": format!("enrich-{lang}"), "kind": "enricher", "inputs": ["orders"],
                    "outputs": [format!("enriched-{lang}")], "config": {"customers_pond": "customers"}}),
            enricher,
        );
        assert_eq!(r.status, 201, "{lang} enricher: {}", r.json);
        let r = s.deploy(
            &json!({"name": format!("totals-{lang}"), "kind": "projection", "inputs": ["orders"],
                    "error_policy": "skip"}),
            projection,
        );
        assert_eq!(r.status, 201, "{lang} projection: {}", r.json);
        let r = s.deploy(
            &json!({"name": format!("bank-{lang}"), "kind": "command-handler", "config": {"max_amount": 100}}),
            bank,
        );
        assert_eq!(r.status, 201, "{lang} bank: {}", r.json);
    }

    let orders: Vec<Value> = [
        json!({"id": "o1", "customer": "c1", "amount": 10}),
        json!({"id": "o2", "customer": "c2", "amount": 5}),
        json!({"id": "o3", "customer": "c1", "amount": -3}),
        json!({"id": "o4", "customer": "c9", "amount": 7, "note": [1, 2.5, null]}),
        json!({"id": "", "customer": "c1", "amount": 3}),
        json!({"id": "o5", "customer": "ü", "amount": 9_223_372_036_854_775_807_i64}),
        json!({"id": "o6", "customer": "c1", "amount": 1.5}),
    ]
    .into_iter()
    .map(|v| json!({"key": v["customer"], "value": v}))
    .chain([json!({"key": "c1", "value_text": "not json"})])
    .collect();
    produce(&s, "orders", &orders);
    s.wait_until("every language to catch up", WAIT, |s| {
        langs.iter().all(|(l, ..)| {
            caught_up(s, &format!("enrich-{l}")) && caught_up(s, &format!("totals-{l}"))
        })
    });

    let rust_enriched = records(&s, "enriched-rust");
    assert_eq!(rust_enriched.len(), 4, "{rust_enriched:#?}");
    let pond = |l: &str| s.get(&format!("/ponds/totals-{l}/keys?prefix=")).json["entries"].clone();
    let query = |l: &str, q: &[u8]| {
        let r = s.post_bytes(
            &format!("/ponds/totals-{l}/query"),
            "application/octet-stream",
            q,
        );
        (r.status, r.json)
    };
    for (lang, ..) in &langs[1..] {
        assert_eq!(
            records(&s, &format!("enriched-{lang}")),
            rust_enriched,
            "{lang}: enriched orders"
        );
        assert_eq!(pond(lang), pond("rust"), "{lang}: pond entries");
        for q in [&b""[..], b"c1", b"nobody"] {
            assert_eq!(query(lang, q), query("rust", q), "{lang}: query {q:?}");
        }
    }

    let commands = [
        ("deposit", json!({"amount": 5})),
        ("open", json!({"owner": "Ann"})),
        ("deposit", json!({"amount": 101})),
        ("deposit", json!({"amount": 60})),
        ("withdraw", json!({"amount": 61})),
        ("close", Value::Null),
        ("withdraw", json!({"amount": 60})),
        ("close", Value::Null),
    ];
    let banks: Vec<&str> = langs.iter().map(|(l, ..)| *l).collect();
    for (i, (name, data)) in commands.iter().enumerate() {
        let answer = |l: &str| {
            let r = s.post_json(
                &format!("/services/bank-{l}/commands?wait=true"),
                &json!({"id": format!("cmd-{i}"), "aggregate": "acc-1", "name": name, "data": data}),
            );
            let mut json = r.json;
            // The tracking id and the service's name differ by design, and
            // serde's wording for a malformed command is Rust's own (the
            // reason code is the contract).
            if let Some(o) = json.as_object_mut() {
                o.remove("tracking_id");
                o.remove("service");
            }
            if json["error"]["reason"] == "invalid-command" {
                json["error"]["message"] = Value::Null;
            }
            (r.status, json)
        };
        let rust = answer("rust");
        assert!(
            matches!(rust.0, 200 | 422),
            "command {i} ({name}): {rust:?}"
        );
        // `close` has no data: it must reach the plugin's rules, not fail to
        // parse as a command.
        if *name == "close" {
            assert_ne!(rust.1["error"]["reason"], "invalid-command", "{rust:?}");
        }
        for lang in &banks[1..] {
            assert_eq!(answer(lang), rust, "{lang}: command {i} ({name})");
        }
    }
}
