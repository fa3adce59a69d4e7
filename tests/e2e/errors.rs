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
