//! Bad input gets a JSON error with a stable code and the right status, and
//! changes nothing.

use serde_json::json;
use weir_testkit::server::Server;

use crate::start;

fn end_offsets(s: &Server, topic: &str) -> Vec<u64> {
    s.get(&format!("/topics/{topic}")).json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .collect()
}

#[test]
fn every_bad_request_is_a_json_error_and_changes_nothing() {
    let s = start(&["--max-body-bytes", "2048"]);
    s.create_topic("orders", 2);
    type Case = (
        &'static str,
        &'static str,
        Option<(&'static str, Vec<u8>)>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/topics/orders/records",
            Some(("application/json", b"{\"value\": ".to_vec())),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/topics",
            Some(("application/json", b"[1, 2".to_vec())),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/topics/nope/records",
            Some(("application/json", b"{\"value\": 1}".to_vec())),
            404,
            "unknown_topic",
        ),
        ("GET", "/topics/nope", None, 404, "unknown_topic"),
        ("GET", "/plugins/nope", None, 404, "unknown_plugin"),
        // A name with "topic" in it is still a plugin (no code from message text).
        ("GET", "/plugins/topic-reader", None, 404, "unknown_plugin"),
        ("POST", "/plugins/nope/pause", None, 404, "unknown_plugin"),
        (
            "POST",
            "/topics/orders/records",
            Some((
                "application/json",
                format!("{{\"value_text\": \"{}\"}}", "x".repeat(4096)).into_bytes(),
            )),
            413,
            "body_too_large",
        ),
        (
            "POST",
            "/topics/orders/records",
            Some(("application/octet-stream", vec![7; 4096])),
            413,
            "body_too_large",
        ),
        (
            "GET",
            "/topics/orders/partitions/0/records?offset=99",
            None,
            416,
            "invalid_offset",
        ),
        (
            "GET",
            "/topics/orders/partitions/0/records?offset=-1",
            None,
            400,
            "invalid_offset",
        ),
        (
            "GET",
            "/topics/orders/partitions/9/records",
            None,
            404,
            "unknown_partition",
        ),
        (
            "POST",
            "/topics",
            Some((
                "application/json",
                b"{\"name\": \"..\", \"partitions\": 1}".to_vec(),
            )),
            400,
            "invalid_name",
        ),
        (
            "POST",
            "/topics",
            Some((
                "application/json",
                b"{\"name\": \"a/b\", \"partitions\": 1}".to_vec(),
            )),
            400,
            "invalid_name",
        ),
        ("GET", "/topics/..%2F..%2Fetc", None, 400, "invalid_name"),
        (
            "POST",
            "/topics",
            Some((
                "application/json",
                b"{\"name\": \"orders\", \"partitions\": 1}".to_vec(),
            )),
            409,
            "topic_exists",
        ),
        ("GET", "/no/such/route", None, 404, "no_such_route"),
    ];
    for (method, path, body, status, code) in cases {
        let r = s.request(
            method,
            path,
            body.as_ref().map(|(ct, b)| (*ct, &b[..])),
            &[],
        );
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{method} {path}: {}",
            r.json
        );
        assert!(
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {path}"
        );
    }
    assert_eq!(end_offsets(&s, "orders"), vec![0, 0]);
    let topics = s.get("/topics").json["topics"].as_array().unwrap().len();
    assert_eq!(topics, 1, "a rejected request created a topic");
    assert!(!s.data_dir().parent().unwrap().join("etc").exists());
}

#[test]
fn a_batch_with_one_bad_record_appends_nothing() {
    let s = start(&[]);
    s.create_topic("orders", 1);
    let r = s.post_json(
        "/topics/orders/records",
        &json!({"records": [{"value": 1}, {"key": "k"}]}),
    );
    assert_eq!((r.status, r.code()), (400, "invalid_record"));
    let r = s.post_json(
        "/topics/orders/records",
        &json!({"records": [{"value": 1}, {"value": 2, "partition": 5}]}),
    );
    assert_eq!((r.status, r.code()), (404, "unknown_partition"));
    assert_eq!(end_offsets(&s, "orders"), vec![0]);
}

/// A command id answers the command that first used it: sending another
/// command under the same id is `409 id_reused` and appends nothing, and
/// deploying the same bytes and manifest again adds no version.
#[test]
fn a_reused_command_id_and_a_repeated_deploy_change_nothing() {
    let s = start(&[]);
    let bank = json!({"name": "bank", "kind": "command-handler"});
    let component = weir_testkit::plugins::plugin_bytes("command_bank");
    assert_eq!(s.deploy(&bank, &component).status, 201);
    let again = s.deploy(&bank, &component);
    assert_eq!(again.json["active_version"], 1, "{}", again.json);
    assert_eq!(again.json["versions"].as_array().map(Vec::len), Some(1));

    let open = json!({"id": "c1", "aggregate": "acc", "name": "open", "data": {"owner": "ann"}});
    let r = s.post_json("/services/bank/commands?wait=true", &open);
    assert_eq!(
        (r.status, &r.json["version"]),
        (200, &json!(1)),
        "{}",
        r.json
    );
    let r = s.post_json("/services/bank/commands?wait=true", &open);
    assert_eq!(
        (r.status, &r.json["version"]),
        (200, &json!(1)),
        "a retry: {}",
        r.json
    );
    let other = json!({"id": "c1", "aggregate": "acc", "name": "deposit", "data": {"amount": 5}});
    let r = s.post_json("/services/bank/commands?wait=true", &other);
    assert_eq!((r.status, r.code()), (409, "id_reused"), "{}", r.json);
    assert_eq!(r.json["tracking_id"], "c1");
    assert_eq!(s.total_records("bank.commands"), 1, "nothing appended");
}
