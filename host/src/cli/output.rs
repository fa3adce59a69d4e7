//! How answers are shown to a person: records, values, topics, plugins.

use serde_json::{Value, json};

use super::answers::{Plugin, Plugins, Topic, Topics};

pub(super) fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// The readable form of a field given as `field` (JSON, or text for keys
/// and headers), `field_text` or `field_base64`.
pub(super) fn shown(record: &Value, field: &str) -> String {
    shown_as(record, field, field == "key")
}

pub(super) fn shown_as(record: &Value, field: &str, text: bool) -> String {
    if let Some(v) = record.get(field) {
        return match v {
            Value::String(s) if text => s.clone(),
            other => other.to_string(),
        };
    }
    if let Some(Value::String(t)) = record.get(format!("{field}_text")) {
        return t.clone();
    }
    if let Some(Value::String(b)) = record.get(format!("{field}_base64")) {
        return format!("base64:{b}");
    }
    String::new()
}

pub(super) fn print_record(partition: u64, r: &Value) {
    let key = if r["key"].is_null() && r.get("key_base64").is_none() {
        "-".to_owned()
    } else {
        shown(r, "key")
    };
    let headers: Vec<String> = r["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    format!(
                        "{}={}",
                        h["name"].as_str().unwrap_or(""),
                        shown_as(h, "value", true)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let headers = if headers.is_empty() {
        String::new()
    } else {
        format!(" [{}]", headers.join(" "))
    };
    println!(
        "{partition}@{} key={key}{headers} {}",
        r["offset"],
        shown(r, "value")
    );
}

pub(super) fn print_topics(topics: &Topics) {
    if topics.topics.is_empty() {
        println!("no topics");
        return;
    }
    println!("{:<40} {:>10} {:>14}", "TOPIC", "PARTITIONS", "RECORDS");
    for t in &topics.topics {
        let records: u64 = t
            .partitions
            .iter()
            .map(|p| p.end_offset.saturating_sub(p.start_offset))
            .sum();
        println!("{:<40} {:>10} {:>14}", t.name, t.partitions.len(), records);
    }
}

pub(super) fn print_topic(t: &Topic) {
    println!("{}", t.name);
    for p in &t.partitions {
        println!(
            "  partition {}: offsets {}..{}",
            p.partition, p.start_offset, p.end_offset
        );
    }
}

pub(super) fn print_plugins(plugins: &Plugins) {
    if plugins.plugins.is_empty() {
        println!("no plugins");
        return;
    }
    println!(
        "{:<30} {:<16} {:<8} {:>7} {:>10} {:>7}",
        "PLUGIN", "KIND", "STATE", "VERSION", "LAG", "ERRORS"
    );
    for p in &plugins.plugins {
        println!(
            "{:<30} {:<16} {:<8} {:>7} {:>10} {:>7}",
            p.name,
            p.kind,
            p.state,
            p.active_version,
            p.lag(),
            p.error_count
        );
    }
}

pub(super) fn print_plugin(p: &Plugin) {
    println!(
        "{} ({}) — {}, version {}",
        p.name, p.kind, p.state, p.active_version
    );
    println!(
        "  inputs: {}  outputs: {}",
        json!(p.inputs),
        json!(p.outputs)
    );
    println!(
        "  errors: {}  dead-lettered: {}",
        p.error_count, p.dead_lettered
    );
    if let Some(e) = &p.last_error {
        println!("  last error: {}", e.message);
    }
    println!("  versions:");
    for v in &p.versions {
        println!(
            "    {}{} sha256:{}",
            v.version,
            if v.active { " (active)" } else { "" },
            &v.sha256[..v.sha256.len().min(12)]
        );
    }
    println!("  partitions:");
    for x in &p.partitions {
        println!(
            "    {}/{}: committed {} of {} (lag {})",
            x.topic, x.partition, x.committed_offset, x.end_offset, x.lag
        );
    }
}
