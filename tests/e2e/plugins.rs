//! The example plugins deployed over HTTP: events flow through a river
//! (enricher) into a pond (projection) that answers key, prefix and custom
//! queries; a service (command handler) answers commands with 200 / 202 /
//! 409 / 422; all of it survives a restart. Bad components are refused with
//! the reason and change nothing.

use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

use crate::start;

const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn all_records(s: &Server, topic: &str) -> Vec<Value> {
    let partitions = s.get(&format!("/topics/{topic}")).json["partitions"]
        .as_array()
        .map_or(0, Vec::len);
    (0..partitions as u32)
        .flat_map(|p| s.read_all(topic, p))
        .collect()
}

fn caught_up(s: &Server, plugin: &str) -> bool {
    let r = s.get(&format!("/plugins/{plugin}"));
    r.status == 200
        && r.json["partitions"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["lag"] == 0))
}

fn deploy_examples(s: &Server) {
    s.create_topic("orders", 2);
    let r = s.deploy(
        &json!({"name": "enrich", "kind": "enricher", "inputs": ["orders"], "outputs": ["orders.enriched"],
                "config": {"customers_pond": "totals"}}),
        &plugin_bytes("enricher_orders"),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(
        (r.json["active_version"].as_u64(), r.json["kind"].as_str()),
        (Some(1), Some("enricher"))
    );
    let r = s.deploy(
        &json!({"name": "totals", "kind": "projection", "inputs": ["orders.enriched"]}),
        &plugin_bytes("projection_totals"),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s.deploy(
        &json!({"name": "bank", "kind": "command-handler"}),
        &plugin_bytes("command_bank"),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["inputs"], json!(["bank.commands"]));
    assert_eq!(r.json["outputs"], json!(["bank.events"]));
}

fn produce_orders(s: &Server, from: u32, to: u32) {
    let records: Vec<Value> = (from..to)
        .map(|i| {
            let customer = if i % 2 == 0 { "c1" } else { "c2" };
            json!({"key": customer, "value": {"id": format!("o{i}"), "customer": customer, "amount": 10}})
        })
        .collect();
    let r = s.post_json("/topics/orders/records", &json!({"records": records}));
    assert_eq!(r.status, 200, "{}", r.json);
}

#[test]
fn river_pond_and_service_round_trip_and_survive_restart() {
    let mut s = start(&[]);
    deploy_examples(&s);
    produce_orders(&s, 0, 10);
    // Not an order: the enricher drops it.
    assert_eq!(
        s.post_json(
            "/topics/orders/records",
            &json!({"key": "c1", "value_text": "junk"})
        )
        .status,
        200
    );

    s.wait_until("the river to enrich 10 orders", WAIT, |s| {
        s.total_records("orders.enriched") == 10
    });
    let enriched = all_records(&s, "orders.enriched");
    assert!(
        enriched
            .iter()
            .all(|r| r["value"]["amount"] == 10 && r["value"].get("customer_info").is_some())
    );
    s.wait_until("the pond to fold 10 orders", WAIT, |s| {
        caught_up(s, "totals") && caught_up(s, "enrich")
    });

    let r = s.get("/ponds/totals/keys/c1");
    assert_eq!(
        (r.status, &r.json["value"]),
        (200, &json!({"count": 5, "sum": 50})),
        "{}",
        r.json
    );
    let r = s.get("/ponds/totals/keys?prefix=c");
    assert_eq!(
        r.json["entries"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.json
    );
    let r = s.post_bytes("/ponds/totals/query", "text/plain", b"c2");
    assert_eq!((r.status, &r.json), (200, &json!({"count": 5, "sum": 50})));
    let r = s.post_bytes("/ponds/totals/query", "text/plain", b"");
    assert_eq!(r.json["c1"]["sum"], 50);
    assert_eq!(s.get("/ponds/totals/keys/nobody").code(), "unknown_key");

    // The service: wait for the answer, or take 202 and look it up later.
    let cmd = |name: &str, data: Value| json!({"aggregate": "acc-1", "name": name, "data": data});
    let r = s.post_json(
        "/services/bank/commands?wait=true",
        &cmd("open", json!({"owner": "ada"})),
    );
    assert_eq!(
        (r.status, r.json["version"].as_u64()),
        (200, Some(1)),
        "{}",
        r.json
    );
    assert!(
        r.json["tracking_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let r = s.post_json(
        "/services/bank/commands?wait=true",
        &json!({"id": "dep-1", "aggregate": "acc-1", "name": "deposit", "data": {"amount": 100}}),
    );
    assert_eq!(
        (
            r.status,
            r.json["version"].as_u64(),
            r.json["tracking_id"].as_str()
        ),
        (200, Some(2), Some("dep-1"))
    );
    assert_eq!(r.json["events"][0]["name"], "deposited");
    // A retried command id answers the first result and appends nothing.
    let again = s.post_json(
        "/services/bank/commands?wait=true",
        &json!({"id": "dep-1", "aggregate": "acc-1", "name": "deposit", "data": {"amount": 100}}),
    );
    assert_eq!((again.status, &again.json["version"]), (200, &json!(2)));
    let r = s.post_json(
        "/services/bank/commands?wait=true",
        &cmd("withdraw", json!({"amount": 1000})),
    );
    assert_eq!(
        (r.status, r.code(), r.json["error"]["reason"].as_str()),
        (422, "command_rejected", Some("insufficient-funds"))
    );
    assert!(r.json["tracking_id"].is_string());
    let mut stale = cmd("deposit", json!({"amount": 1}));
    stale["expected_version"] = json!(1);
    let r = s.post_json("/services/bank/commands?wait=true", &stale);
    assert_eq!(
        (r.status, r.code()),
        (409, "version_conflict"),
        "{}",
        r.json
    );
    assert!(r.json["tracking_id"].is_string());
    let r = s.post_json(
        "/services/bank/commands",
        &json!({"id": "dep-2", "aggregate": "acc-1", "name": "deposit", "data": {"amount": 5}}),
    );
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (202, Some("accepted")),
        "{}",
        r.json
    );
    s.wait_until("command dep-2 to be handled", WAIT, |s| {
        s.get("/services/bank/commands/dep-2").status == 200
    });
    assert_eq!(s.get("/services/bank/commands/dep-2").json["version"], 3);
    assert_eq!(all_records(&s, "bank.events").len(), 3);

    // Producing into a processor's output is refused (exactly-once).
    let r = s.post_json("/topics/orders.enriched/records", &json!({"value": 1}));
    assert_eq!((r.status, r.code()), (409, "topic_owned"));

    // Metrics show the processors.
    let m = s
        .get("/metrics")
        .json
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        m.contains("weir_processor_lag{processor=\"enrich\",topic=\"orders\""),
        "{m}"
    );
    assert!(
        m.contains("weir_plugin_call_seconds_bucket{processor=\"totals\""),
        "{m}"
    );

    // Everything survives a restart: plugins, versions, state, positions.
    let status = s.stop();
    assert!(status.success(), "{status:?}");
    s.restart();
    let r = s.get("/plugins");
    let names: Vec<&str> = r.json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, vec!["bank", "enrich", "totals"]);
    assert_eq!(
        s.get("/ponds/totals/keys/c1").json["value"],
        json!({"count": 5, "sum": 50})
    );
    produce_orders(&s, 10, 14);
    s.wait_until("the restarted pipeline to fold 4 more orders", WAIT, |s| {
        s.get("/ponds/totals/keys/c1").json["value"]["count"] == 7
    });
    assert_eq!(
        s.total_records("orders.enriched"),
        14,
        "an order was processed twice or lost across the restart"
    );
    // A rebuilt pond ends where the old one was.
    let r = s.post_json("/plugins/totals/rebuild", &json!({}));
    assert_eq!(r.status, 200, "{}", r.json);
    s.wait_until("the rebuild to switch over", WAIT, |s| {
        s.get("/plugins/totals").json["rebuilding_generation"].is_null()
            && s.get("/ponds/totals/keys/c1").json["value"] == json!({"count": 7, "sum": 70})
    });
    let r = s.post_json(
        "/services/bank/commands?wait=true",
        &cmd("deposit", json!({"amount": 1})),
    );
    assert_eq!(r.json["version"], 4, "{}", r.json);
}

#[test]
fn bad_components_and_manifests_are_refused_and_change_nothing() {
    let s = start(&[]);
    s.create_topic("in", 1);
    let enricher = |name: &str| json!({"name": name, "kind": "enricher", "inputs": ["in"], "outputs": ["out"]});
    let cases: Vec<(Value, Vec<u8>, u16, &str)> = vec![
        // An enricher component deployed as a projection: the wrong world.
        (
            json!({"name": "p", "kind": "projection", "inputs": ["in"]}),
            plugin_bytes("enricher_orders"),
            422,
            "wrong_world",
        ),
        (
            enricher("m"),
            plugin_bytes("missing_export"),
            422,
            "missing_export",
        ),
        (
            enricher("f"),
            plugin_bytes("future_version"),
            422,
            "incompatible_contract",
        ),
        (
            enricher("g"),
            b"not wasm at all".to_vec(),
            400,
            "invalid_component",
        ),
        (
            enricher("c"),
            b"\0asm\x01\0\0\0".to_vec(),
            400,
            "invalid_component",
        ),
        (
            json!({"name": "x", "kind": "enricher", "inputs": ["missing"], "outputs": ["out"]}),
            plugin_bytes("enricher_orders"),
            404,
            "unknown_topic",
        ),
        (
            json!({"name": "x", "kind": "enricher", "inputs": ["in"]}),
            plugin_bytes("enricher_orders"),
            400,
            "invalid_manifest",
        ),
        (
            json!({"name": "x", "kind": "river", "inputs": ["in"], "outputs": ["out"]}),
            plugin_bytes("enricher_orders"),
            400,
            "invalid_manifest",
        ),
        // A config the plugin's own `init` refuses: refused at deploy time.
        (
            json!({"name": "cfg", "kind": "enricher", "inputs": ["in"], "outputs": ["out"], "config": {"customers_pond": 5}}),
            plugin_bytes("enricher_orders"),
            422,
            "plugin_failed",
        ),
        (
            json!({"name": "../x", "kind": "enricher", "inputs": ["in"], "outputs": ["out"]}),
            plugin_bytes("enricher_orders"),
            400,
            "invalid_name",
        ),
    ];
    for (manifest, component, status, code) in cases {
        let name = manifest["name"].as_str().unwrap_or("x").replace('/', "%2F");
        let r = s.request(
            "PUT",
            &format!("/plugins/{name}"),
            Some(("application/wasm", &component)),
            &[("weir-manifest", &manifest.to_string())],
        );
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{manifest}: {}",
            r.json
        );
        assert!(
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(s.get("/plugins").json["plugins"], json!([]));
    let topics: Vec<String> = s.get("/topics").json["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        topics,
        vec!["in".to_owned()],
        "a refused deploy created topics"
    );
}

#[test]
fn pause_resume_rollback_reset_delete() {
    let s = start(&[]);
    s.create_topic("in", 1);
    let manifest = |stamp: &str| json!({"name": "st", "kind": "enricher", "inputs": ["in"], "outputs": ["out"], "config": {"stamp": stamp}});
    assert_eq!(
        s.deploy(&manifest("v1"), &plugin_bytes("stamp_enricher"))
            .status,
        201
    );
    let produce = |n: u32| {
        let records: Vec<Value> = (0..n).map(|i| json!({"value": i})).collect();
        assert_eq!(
            s.post_json("/topics/in/records", &json!({"records": records}))
                .status,
            200
        );
    };
    produce(5);
    s.wait_until("v1 to process 5", WAIT, |s| s.total_records("out") == 5);

    let r = s.post_json("/plugins/st/pause", &json!({}));
    assert_eq!(r.json["state"], "paused", "{}", r.json);
    produce(5);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.total_records("out"),
        5,
        "a paused plugin processed events"
    );
    assert_eq!(s.get("/plugins/st").json["partitions"][0]["lag"], 5);
    assert_eq!(
        s.post_json("/plugins/st/resume", &json!({})).json["state"],
        "running"
    );
    s.wait_until("resume to catch up", WAIT, |s| s.total_records("out") == 10);

    assert_eq!(
        s.deploy(&manifest("v2"), &plugin_bytes("stamp_enricher"))
            .json["active_version"],
        2
    );
    produce(1);
    s.wait_until("v2 to process", WAIT, |s| s.total_records("out") == 11);
    let r = s.post_json("/plugins/st/rollback", &json!({}));
    assert_eq!(r.json["active_version"], 1, "{}", r.json);
    produce(1);
    s.wait_until("v1 again", WAIT, |s| s.total_records("out") == 12);
    let stamps: Vec<String> = s
        .read_all("out", 0)
        .iter()
        .map(|r| {
            r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["name"] == "stamp")
                .and_then(|h| h["value"].as_str())
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    assert_eq!(stamps[..10].iter().filter(|s| *s == "v1").count(), 10);
    assert_eq!((stamps[10].as_str(), stamps[11].as_str()), ("v2", "v1"));
    let r = s.get("/plugins/st");
    assert_eq!(r.json["versions"].as_array().map(Vec::len), Some(2));

    // Reset to the beginning: everything is processed again.
    let r = s.post_json("/plugins/st/reset", &json!({"to": "beginning"}));
    assert_eq!(r.status, 200, "{}", r.json);
    s.wait_until("the replay", WAIT, |s| s.total_records("out") == 24);

    assert_eq!(s.delete("/plugins/st").status, 200);
    assert_eq!(s.get("/plugins/st").code(), "unknown_plugin");
    assert_eq!(
        s.total_records("out"),
        24,
        "deleting a plugin removed its output"
    );
}
