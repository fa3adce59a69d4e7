//! How answers are shown to a person: records, values, topics, plugins.

use serde_json::Value;

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

pub(super) fn print_topics(topics: &Value) {
    let list = topics["topics"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no topics");
        return;
    }
    println!("{:<40} {:>10} {:>14}", "TOPIC", "PARTITIONS", "RECORDS");
    for t in list {
        let parts = t["partitions"].as_array().cloned().unwrap_or_default();
        let records: u64 = parts
            .iter()
            .map(|p| {
                p["end_offset"].as_u64().unwrap_or(0) - p["start_offset"].as_u64().unwrap_or(0)
            })
            .sum();
        println!(
            "{:<40} {:>10} {:>14}",
            t["name"].as_str().unwrap_or("?"),
            parts.len(),
            records
        );
    }
}

pub(super) fn print_plugins(plugins: &Value) {
    let list = plugins["plugins"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no plugins");
        return;
    }
    println!(
        "{:<30} {:<16} {:<8} {:>7} {:>10} {:>7}",
        "PLUGIN", "KIND", "STATE", "VERSION", "LAG", "ERRORS"
    );
    for p in list {
        let lag: u64 = p["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["lag"].as_u64().unwrap_or(0))
            .sum();
        println!(
            "{:<30} {:<16} {:<8} {:>7} {:>10} {:>7}",
            p["name"].as_str().unwrap_or("?"),
            p["kind"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["active_version"].as_u64().unwrap_or(0),
            lag,
            p["error_count"].as_u64().unwrap_or(0)
        );
    }
}

pub(super) fn print_plugin(p: &Value) {
    println!(
        "{} ({}) — {}, version {}",
        p["name"].as_str().unwrap_or("?"),
        p["kind"].as_str().unwrap_or("?"),
        p["state"].as_str().unwrap_or("?"),
        p["active_version"]
    );
    println!("  inputs: {}  outputs: {}", p["inputs"], p["outputs"]);
    println!(
        "  errors: {}  dead-lettered: {}",
        p["error_count"], p["dead_lettered"]
    );
    if let Some(e) = p["last_error"].as_object() {
        println!(
            "  last error: {}",
            e.get("message").and_then(Value::as_str).unwrap_or("?")
        );
    }
    println!("  versions:");
    for v in p["versions"].as_array().into_iter().flatten() {
        let sha = v["sha256"].as_str().unwrap_or("");
        println!(
            "    {}{} sha256:{}",
            v["version"],
            if v["active"].as_bool() == Some(true) {
                " (active)"
            } else {
                ""
            },
            &sha[..sha.len().min(12)]
        );
    }
    println!("  partitions:");
    for x in p["partitions"].as_array().into_iter().flatten() {
        println!(
            "    {}/{}: committed {} of {} (lag {})",
            x["topic"].as_str().unwrap_or("?"),
            x["partition"],
            x["committed_offset"],
            x["end_offset"],
            x["lag"]
        );
    }
}
