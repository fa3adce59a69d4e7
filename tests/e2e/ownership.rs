//! The ownership rule over HTTP: a topic a processor owns has that
//! processor as its only writer. Clients cannot produce there, a command's
//! reply goes only to its service's own reply topics (written once, in the
//! service's commit), deploy order never decides who owns what, and a
//! topic in use is not deleted.

use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

use crate::plugins::all_records;
use crate::start;

const WAIT: Duration = Duration::from_secs(30);

fn river(name: &str, input: &str, output: &str) -> Value {
    json!({"name": name, "kind": "enricher", "inputs": [input], "outputs": [output]})
}

/// `enrich` (orders → orders.enriched) and the service `bank`.
fn deploy_enrich_and_bank(s: &Server) {
    s.create_topic("orders", 2);
    let r = s.deploy(
        &river("enrich", "orders", "orders.enriched"),
        &plugin_bytes("stamp_enricher"),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s.deploy(
        &json!({"name": "bank", "kind": "command-handler", "partitions": 2}),
        &plugin_bytes("command_bank"),
    );
    assert_eq!(r.status, 201, "{}", r.json);
}

fn open_account(id: &str, aggregate: &str, reply_topic: &str) -> Value {
    json!({"id": id, "aggregate": aggregate, "name": "open", "data": {"owner": "ann"},
           "reply_topic": reply_topic})
}

fn total(s: &Server, topic: &str) -> u64 {
    if s.get(&format!("/topics/{topic}")).status == 404 {
        return 0;
    }
    s.total_records(topic)
}

#[test]
fn a_reply_topic_owned_by_a_processor_is_refused_and_nothing_is_appended() {
    let s = start(&[]);
    deploy_enrich_and_bank(&s);
    for (topic, owner) in [
        ("orders.enriched", "enrich"),
        ("enrich.dlq", "enrich"),
        ("bank.events", "bank"),
        ("bank.dlq", "bank"),
        ("bank.commands", "bank"),
    ] {
        let r = s.post_json(
            "/services/bank/commands?wait=true",
            &open_account(&format!("c-{topic}"), "acc-1", topic),
        );
        assert_eq!(
            (r.status, r.code()),
            (409, "topic_owned"),
            "{topic}: {}",
            r.json
        );
        assert_eq!(r.json["error"]["owner"], owner, "{}", r.json);
    }
    // A topic nobody owns is no reply topic either.
    s.create_topic("mine", 1);
    let r = s.post_json(
        "/services/bank/commands?wait=true",
        &open_account("c-mine", "acc-1", "mine"),
    );
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_reply_topic"),
        "{}",
        r.json
    );
    for topic in [
        "orders.enriched",
        "enrich.dlq",
        "bank.events",
        "bank.dlq",
        "mine",
        "bank.commands",
    ] {
        assert_eq!(total(&s, topic), 0, "{topic} was appended to");
    }
    // Clients cannot produce into an owned topic: 409 naming the owner.
    for (topic, owner) in [("orders.enriched", "enrich"), ("bank.events", "bank")] {
        let r = s.post_json(&format!("/topics/{topic}/records"), &json!({"value": 1}));
        assert_eq!((r.status, r.code()), (409, "topic_owned"), "{}", r.json);
        assert_eq!(r.json["error"]["owner"], owner);
        assert_eq!(total(&s, topic), 0);
    }
}

#[test]
fn replies_go_to_the_services_own_topics_exactly_once() {
    let s = start(&[]);
    deploy_enrich_and_bank(&s);
    for (i, topic) in ["bank.results", "bank.private.reply"].iter().enumerate() {
        let id = format!("open-{i}");
        let r = s.post_json(
            "/services/bank/commands?wait=true",
            &open_account(&id, &format!("acc-{i}"), topic),
        );
        assert_eq!(
            (r.status, r.json["version"].as_u64()),
            (200, Some(1)),
            "{}",
            r.json
        );
        // A retried command answers its first result and writes no second reply.
        let again = s.post_json(
            "/services/bank/commands?wait=true",
            &open_account(&id, &format!("acc-{i}"), topic),
        );
        assert_eq!(again.status, 200, "{}", again.json);
        let replies = all_records(&s, topic);
        assert_eq!(replies.len(), 1, "{topic}: {replies:?}");
        assert_eq!(replies[0]["key"], id.as_str());
        assert_eq!(replies[0]["value"]["outcome"], "applied");
        let correlation = replies[0]["headers"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["name"] == "weir-correlation-id"))
            .map(|h| h["value"].clone());
        assert_eq!(correlation, Some(json!(id)), "{}", replies[0]);
        // The reply topic is the service's: clients cannot write it.
        let r = s.post_json(&format!("/topics/{topic}/records"), &json!({"value": 1}));
        assert_eq!((r.status, r.code()), (409, "topic_owned"));
    }
    // The reply topics were created on first use with the commands' partitions.
    let r = s.get("/topics/bank.results");
    assert_eq!(r.json["partitions"].as_array().map(Vec::len), Some(2));
    // A command produced straight into the commands topic with a foreign
    // reply topic is handled, but no reply goes there.
    let r = s.post_json(
        "/topics/bank.commands/records",
        &json!({"key": "acc-9", "value": {"owner": "bo"},
                "headers": {"weir-command-id": "raw-1", "weir-command": "open",
                            "weir-reply-topic": "orders.enriched"}}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    s.wait_until("the raw command to be handled", WAIT, |s| {
        s.get("/services/bank/commands/raw-1").status == 200
    });
    assert_eq!(total(&s, "orders.enriched"), 0);
}

#[test]
fn deploy_order_never_decides_ownership() {
    let s = start(&[]);
    s.create_topic("orders", 1);
    let writer = river("w", "orders", "svc.commands");
    let svc = json!({"name": "svc", "kind": "command-handler"});
    // Service first: the river that would write its commands is refused.
    let r = s.deploy(&svc, &plugin_bytes("command_bank"));
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s.deploy(&writer, &plugin_bytes("stamp_enricher"));
    assert_eq!((r.status, r.code()), (409, "topic_owned"), "{}", r.json);
    assert_eq!(r.json["error"]["owner"], "svc");
    // River first: the service is refused.
    assert_eq!(s.delete("/plugins/svc").status, 200);
    let r = s.deploy(&writer, &plugin_bytes("stamp_enricher"));
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s.deploy(&svc, &plugin_bytes("command_bank"));
    assert_eq!((r.status, r.code()), (409, "topic_owned"), "{}", r.json);
    assert_eq!(r.json["error"]["owner"], "w");
    // Nor may a river take a service's reply topic, in either order.
    let thief = river("thief", "orders", "w2.results");
    let r = s.deploy(&thief, &plugin_bytes("stamp_enricher"));
    assert_eq!(r.status, 201, "{}", r.json);
    let r = s.deploy(
        &json!({"name": "w2", "kind": "command-handler"}),
        &plugin_bytes("command_bank"),
    );
    assert_eq!((r.status, r.code()), (409, "topic_owned"), "{}", r.json);
    let names: Vec<String> = s.get("/plugins").json["plugins"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["thief", "w"], "refused deploys change nothing");
}

#[test]
fn topics_in_use_are_not_deleted() {
    let mut s = start(&[]);
    deploy_enrich_and_bank(&s);
    for topic in [
        "orders",
        "orders.enriched",
        "enrich.dlq",
        "bank.commands",
        "bank.events",
    ] {
        let r = s.delete(&format!("/topics/{topic}"));
        assert_eq!(
            (r.status, r.code()),
            (409, "topic_in_use"),
            "{topic}: {}",
            r.json
        );
        assert_eq!(s.get(&format!("/topics/{topic}")).status, 200, "{topic}");
    }
    // The rule survives a kill -9 (claims come back from the store).
    s.kill();
    s.restart();
    let r = s.delete("/topics/orders.enriched");
    assert_eq!((r.status, r.code()), (409, "topic_in_use"), "{}", r.json);
    let r = s.post_json("/topics/orders.enriched/records", &json!({"value": 1}));
    assert_eq!((r.status, r.code()), (409, "topic_owned"), "{}", r.json);
    // Once the processor is gone, its topics are ordinary topics again.
    assert_eq!(s.delete("/plugins/enrich").status, 200);
    assert_eq!(s.delete("/topics/orders.enriched").status, 200);
    assert_eq!(s.delete("/topics/orders").status, 200);
}
