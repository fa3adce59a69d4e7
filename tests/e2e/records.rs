//! Topics, produce (JSON single / batch, raw bytes, idempotent), read with
//! long-poll, and the SSE tail, over real HTTP.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::start;

#[test]
fn topics_produce_and_read() {
    let s = start(&[]);
    s.create_topic("orders", 3);
    let r = s.get("/topics");
    assert_eq!(r.json["topics"][0]["name"], "orders");
    assert_eq!(
        r.json["topics"][0]["partitions"].as_array().map(Vec::len),
        Some(3)
    );

    // Keyed records of one key land in one partition, in order.
    let batch: Vec<_> = (0..20)
        .map(|i| json!({"key": "cust-1", "value": {"i": i}}))
        .collect();
    let r = s.post_json("/topics/orders/records", &json!({"records": batch}));
    assert_eq!(r.status, 200, "{}", r.json);
    let placed = r.json["records"].as_array().unwrap().clone();
    let p = placed[0]["partition"].as_u64().unwrap();
    assert!(placed.iter().all(|x| x["partition"].as_u64() == Some(p)));
    let offsets: Vec<u64> = placed
        .iter()
        .map(|x| x["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (0..20).collect::<Vec<_>>());

    let r = s.post_json(
        "/topics/orders/records",
        &json!({"key": "cust-1", "value_text": "hi", "headers": {"h": "1"}}),
    );
    assert_eq!(
        (r.json["partition"].as_u64(), r.json["offset"].as_u64()),
        (Some(p), Some(20))
    );
    let r = s.request(
        "POST",
        "/topics/orders/records?key=cust-1",
        Some(("application/octet-stream", &[0, 159, 146, 150])),
        &[],
    );
    assert_eq!(r.json["offset"], 21);

    let all = s.read_all("orders", p as u32);
    assert_eq!(all.len(), 22);
    assert_eq!(all[5]["value"], json!({"i": 5}));
    assert_eq!(all[20]["value_text"], "hi");
    assert_eq!(all[20]["headers"][0], json!({"name": "h", "value": "1"}));
    assert_eq!(all[21]["value_base64"], "AJ+Slg==");
    let r = s.get(&format!(
        "/topics/orders/partitions/{p}/records?offset=10&limit=3"
    ));
    assert_eq!(r.json["records"].as_array().map(Vec::len), Some(3));
    assert_eq!(r.json["next_offset"], 13);
    assert_eq!(r.json["end_offset"], 22);

    let r = s.get("/topics/orders");
    let ends: u64 = r.json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["end_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(ends, 22);
    let r = s.delete("/topics/orders");
    assert_eq!(r.status, 200);
    assert_eq!(s.get("/topics/orders").code(), "unknown_topic");
}

#[test]
fn long_poll_returns_when_data_arrives() {
    let s = start(&[]);
    s.create_topic("events", 1);
    let url = s.url.clone();
    let reader = std::thread::spawn(move || {
        let started = Instant::now();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .get(format!(
                "{url}/topics/events/partitions/0/records?offset=0&wait_ms=10000"
            ))
            .call()
            .unwrap();
        let body: serde_json::Value = resp.body_mut().read_json().unwrap();
        (started.elapsed(), body)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.post_json("/topics/events/records", &json!({"value": 42}))
            .status,
        200
    );
    let (took, body) = reader.join().unwrap();
    assert_eq!(body["records"][0]["value"], 42);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // Nothing arriving: an empty answer after the wait.
    let started = Instant::now();
    let r = s.get("/topics/events/partitions/0/records?offset=1&wait_ms=200");
    assert_eq!(r.json["records"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(180));
}

#[test]
fn sse_tail_streams_new_records() {
    let s = start(&[]);
    s.create_topic("feed", 2);
    s.post_json(
        "/topics/feed/records",
        &json!({"value": "old", "partition": 0}),
    );
    let url = s.url.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let resp = agent
            .get(format!("{url}/topics/feed/tail?from=earliest"))
            .call()
            .unwrap();
        for line in BufReader::new(resp.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ")
                && tx
                    .send(serde_json::from_str::<serde_json::Value>(data).unwrap())
                    .is_err()
            {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the old record");
    assert_eq!(first["value"], "old");
    s.post_json(
        "/topics/feed/records",
        &json!({"value": "new", "partition": 1}),
    );
    let second = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the new record");
    assert_eq!(
        (second["value"].as_str(), second["partition"].as_u64()),
        (Some("new"), Some(1))
    );
}

#[test]
fn idempotent_produce_appends_once() {
    let s = start(&[]);
    s.create_topic("pay", 1);
    let body = json!({"value": {"amount": 5}}).to_string();
    let h = [("idempotency-key", "payment-77")];
    let a = s.request(
        "POST",
        "/topics/pay/records",
        Some(("application/json", body.as_bytes())),
        &h,
    );
    let b = s.request(
        "POST",
        "/topics/pay/records",
        Some(("application/json", body.as_bytes())),
        &h,
    );
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.json, b.json);
    assert_eq!(b.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.read_all("pay", 0).len(), 1);
}

/// An idempotency key survives `kill -9`: the retry after the restart
/// answers the first append instead of appending again (the key is written
/// into the first record of each partition's part, in the same append, and
/// relearned from the log), also for a batch spread over partitions.
/// Clients may not forge the mark header.
#[test]
fn an_idempotency_key_survives_a_crash() {
    let mut s = start(&["--fsync", "always"]);
    s.create_topic("pay", 3);
    let send = |s: &weir_testkit::server::Server, key: &str, body: &serde_json::Value| {
        s.request(
            "POST",
            "/topics/pay/records",
            Some(("application/json", body.to_string().as_bytes())),
            &[("idempotency-key", key)],
        )
    };
    let single = json!({"key": "acct-1", "value": {"amount": 5}});
    let batch = json!({"records": [
        {"key": "acct-2", "value": 1}, {"key": "acct-2", "value": 2}, {"key": "acct-2", "value": 3}
    ]});
    let spread = json!({"records": (0..12).map(|i| json!({"key": format!("acct-{i}"), "value": i})).collect::<Vec<_>>()});
    let first_single = send(&s, "pay-1", &single);
    let first_batch = send(&s, "pay-2", &batch);
    let first_spread = send(&s, "pay-5", &spread);
    assert_eq!(
        (first_single.status, first_batch.status, first_spread.status),
        (200, 200, 200)
    );
    let partitions: std::collections::HashSet<u64> = first_spread.json["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["partition"].as_u64())
        .collect();
    assert_eq!(partitions.len(), 3, "{}", first_spread.json);
    // Pad the log so the marks are not at the end.
    for i in 0..50 {
        let pad = json!({"key": "acct-1", "value": {"pad": i}}).to_string();
        let r = s.request(
            "POST",
            "/topics/pay/records",
            Some(("application/json", pad.as_bytes())),
            &[],
        );
        assert_eq!(r.status, 200);
    }
    let count = |s: &weir_testkit::server::Server| -> usize {
        (0..3).map(|p| s.read_all("pay", p).len()).sum()
    };
    let before = count(&s);
    s.kill();
    s.restart();
    let again_single = send(&s, "pay-1", &single);
    let again_batch = send(&s, "pay-2", &batch);
    assert_eq!(again_single.status, 200);
    assert_eq!(again_single.json, first_single.json, "the first answer");
    assert_eq!(again_single.header("idempotent-replayed"), Some("true"));
    assert_eq!(again_batch.json, first_batch.json, "the first answer");
    assert_eq!(again_batch.header("idempotent-replayed"), Some("true"));
    let again_spread = send(&s, "pay-5", &spread);
    assert_eq!(again_spread.json, first_spread.json, "the first answer");
    assert_eq!(again_spread.header("idempotent-replayed"), Some("true"));
    assert_eq!(count(&s), before, "nothing appended twice");
    // The stored record carries the mark; clients cannot set it themselves.
    let p = first_single.json["partition"].as_u64().expect("partition") as u32;
    let stored =
        &s.read_all("pay", p)[first_single.json["offset"].as_u64().expect("offset") as usize];
    assert!(
        stored["headers"].to_string().contains("weir-idempotency"),
        "{stored}"
    );
    let forged = json!({"value": 1, "headers": {"weir-idempotency": "{}"}});
    let r = send(&s, "pay-3", &forged);
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (400, Some("invalid_record")),
        "{}",
        r.json
    );
    // A new key after the restart appends.
    let fresh = send(&s, "pay-4", &single);
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("idempotent-replayed"), None);
    assert_eq!(count(&s), before + 1);
}
