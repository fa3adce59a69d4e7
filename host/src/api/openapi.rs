//! `GET /openapi.json`: a hand-written OpenAPI 3.1 description of every
//! route (kept next to the router; a unit test checks that every path listed
//! here is routed and every route is listed).

use axum::Json;
use serde_json::{Map, Value, json};

/// (method, path, summary, admin?, request body schema, success status)
pub type RouteDoc = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
    &'static str,
);

pub const ROUTES: &[RouteDoc] = &[
    (
        "get",
        "/healthz",
        "Liveness and version",
        false,
        None,
        "200",
    ),
    (
        "get",
        "/metrics",
        "Prometheus metrics (text format 0.0.4)",
        false,
        None,
        "200",
    ),
    ("get", "/openapi.json", "This document", false, None, "200"),
    (
        "get",
        "/topics",
        "List topics with partition offsets",
        false,
        None,
        "200",
    ),
    (
        "post",
        "/topics",
        "Create a topic",
        true,
        Some("CreateTopic"),
        "201",
    ),
    (
        "get",
        "/topics/{topic}",
        "Inspect a topic",
        false,
        None,
        "200",
    ),
    (
        "delete",
        "/topics/{topic}",
        "Delete a topic and its data",
        true,
        None,
        "200",
    ),
    (
        "post",
        "/topics/{topic}/records",
        "Produce: a JSON record, {\"records\": [...]} for a batch, or any other content type as the raw value \
      (?key=, ?partition=, Weir-Header: name=value). Idempotency-Key header makes a retry return the first answer (across restarts when the records go to one partition).",
        false,
        Some("Produce"),
        "200",
    ),
    (
        "get",
        "/topics/{topic}/partitions/{partition}/records",
        "Read from ?offset= (number|earliest|latest), ?limit=, ?max_bytes=; ?wait_ms= long-polls at the end",
        false,
        None,
        "200",
    ),
    (
        "get",
        "/topics/{topic}/tail",
        "Server-sent events: every new record (?partition=, ?from=earliest|latest|offset)",
        false,
        None,
        "200",
    ),
    (
        "get",
        "/plugins",
        "List deployed plugins",
        true,
        None,
        "200",
    ),
    (
        "post",
        "/plugins",
        "Deploy a plugin version: {\"manifest\": {...}, \"component_base64\": \"...\"}",
        true,
        Some("Deploy"),
        "201",
    ),
    (
        "get",
        "/plugins/{name}",
        "Inspect a plugin: versions, per-partition offsets and lag, errors",
        true,
        None,
        "200",
    ),
    (
        "put",
        "/plugins/{name}",
        "Deploy a plugin version: the body is the component, the manifest JSON is in the Weir-Manifest header (or, instead, a ?manifest= query)",
        true,
        Some("Component"),
        "201",
    ),
    (
        "delete",
        "/plugins/{name}",
        "Stop and delete a plugin (its output topics stay)",
        true,
        None,
        "200",
    ),
    (
        "post",
        "/plugins/{name}/pause",
        "Pause a plugin at a batch boundary",
        true,
        None,
        "200",
    ),
    (
        "post",
        "/plugins/{name}/resume",
        "Resume a paused plugin",
        true,
        None,
        "200",
    ),
    (
        "post",
        "/plugins/{name}/reset",
        "Move a plugin's input position: {\"to\": \"beginning\"|\"end\"} | {\"offset\": n} | {\"timestamp\": ms}; a pond's state is emptied unless \"keep_state\": true",
        true,
        Some("Reset"),
        "200",
    ),
    (
        "post",
        "/plugins/{name}/rollback",
        "Make an earlier version active again: {} (the previous one) or {\"version\": n}",
        true,
        Some("Rollback"),
        "200",
    ),
    (
        "post",
        "/plugins/{name}/rebuild",
        "Rebuild a pond (projection) from offset 0 beside its current state; reads switch once it caught up",
        true,
        None,
        "200",
    ),
    (
        "get",
        "/ponds/{pond}/keys",
        "Scan a pond by ?prefix=, ?start_after=, ?limit=",
        false,
        None,
        "200",
    ),
    (
        "get",
        "/ponds/{pond}/keys/{key}",
        "One key of a pond",
        false,
        None,
        "200",
    ),
    (
        "post",
        "/ponds/{pond}/query",
        "The pond plugin's own query: body in, its answer out",
        false,
        Some("Bytes"),
        "200",
    ),
    (
        "post",
        "/services/{service}/commands",
        "Send a command: 202 once durable in the command topic, or with ?wait=true 200 with the new events and version; 409 version conflict; 422 rejected",
        false,
        Some("Command"),
        "202",
    ),
    (
        "get",
        "/services/{service}/commands/{id}",
        "The result of a command, once handled",
        false,
        None,
        "200",
    ),
];

/// A name in a path or body, as `names::validate` takes it.
const NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,248}$";
/// A topic name: a name the log takes too (at most 200 characters).
const TOPIC_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$";
/// Padded, canonical standard base64 (what the server decodes).
const BASE64_PATTERN: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
/// The record header idempotent produce reserves, in any case.
const RESERVED_HEADER: &str = "^[Ww][Ee][Ii][Rr]-[Ii][Dd][Ee][Mm][Pp][Oo][Tt][Ee][Nn][Cc][Yy]$";
const U32_MAX: u64 = u32::MAX as u64;

/// The schema of a path parameter, by its name.
fn path_param(name: &str) -> Value {
    match name {
        "topic" => json!({"type": "string", "pattern": TOPIC_PATTERN}),
        "partition" => json!({"type": "integer", "minimum": 0, "maximum": U32_MAX}),
        "key" | "id" => json!({"type": "string", "minLength": 1}),
        _ => json!({"type": "string", "pattern": NAME_PATTERN}),
    }
}

/// Exactly one of `fields` is present and not null (the server reads a
/// null field as absent).
fn exactly_one(fields: &[&str]) -> Value {
    let each: Vec<Value> = fields
        .iter()
        .map(|f| json!({"required": [f], "properties": {*f: {"not": {"type": "null"}}}}))
        .collect();
    json!({"oneOf": each})
}

/// At most one of `fields` is present and not null.
fn at_most_one(fields: &[&str]) -> Value {
    let not_null = json!({"not": {"type": "null"}});
    let mut pairs = Vec::new();
    for (i, a) in fields.iter().enumerate() {
        for b in &fields[i + 1..] {
            pairs.push(json!({"required": [a, b], "properties": {*a: not_null, *b: not_null}}));
        }
    }
    json!({"not": {"anyOf": pairs}})
}

fn schemas() -> Value {
    let base64 = json!({"type": "string", "pattern": BASE64_PATTERN});
    let u64 = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    let i64 = json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX});
    let header_name = json!({"type": "string", "not": {"pattern": RESERVED_HEADER}});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "description": "stable machine-readable code"},
                "message": {"type": "string"}}},
            "tracking_id": {"type": "string"}}},
        "CreateTopic": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": {"type": "string", "pattern": TOPIC_PATTERN},
            "partitions": {"type": "integer", "minimum": 1, "maximum": super::topics::MAX_PARTITIONS, "default": 1},
            "retention_ms": {"oneOf": [u64, {"type": "null"}]},
            "retention_bytes": {"oneOf": [u64, {"type": "null"}]},
            "compact": {"type": "boolean"}}},
        "Record": {
            "type": "object", "additionalProperties": false,
            "description": "exactly one of value (any JSON but null), value_text, value_base64; at most one of key, key_base64",
            "properties": {
                "key": {"type": ["string", "null"]}, "key_base64": {"oneOf": [base64, {"type": "null"}]},
                "value": {}, "value_text": {"type": ["string", "null"]},
                "value_base64": {"oneOf": [base64, {"type": "null"}]},
                "headers": {"oneOf": [
                    {"type": "null"},
                    {"type": "object", "additionalProperties": {"type": "string"},
                     "propertyNames": {"not": {"pattern": RESERVED_HEADER}}},
                    {"type": "array", "items": {
                        "type": "object", "required": ["name"], "additionalProperties": false,
                        "properties": {"name": header_name, "value": {"type": ["string", "null"]},
                                       "value_base64": {"oneOf": [base64, {"type": "null"}]}},
                        "allOf": [exactly_one(&["value", "value_base64"])]}}]},
                "timestamp": {"oneOf": [i64, {"type": "null"}]},
                "partition": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": U32_MAX}, {"type": "null"}]}},
            "allOf": [exactly_one(&["value", "value_text", "value_base64"]), at_most_one(&["key", "key_base64"])]},
        "Produce": {"oneOf": [
            {"$ref": "#/components/schemas/Record"},
            {"type": "object", "required": ["records"], "additionalProperties": false, "properties": {
                "records": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Record"}}}}]},
        "Deploy": {"type": "object", "required": ["manifest", "component_base64"], "additionalProperties": false, "properties": {
            "manifest": {"$ref": "#/components/schemas/Manifest"}, "component_base64": base64}},
        "Manifest": {"type": "object", "required": ["name", "kind"], "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "kind": {"enum": ["enricher", "projection", "command-handler"]},
            "inputs": {"type": "array", "items": {"type": "string", "pattern": TOPIC_PATTERN}},
            "outputs": {"type": "array", "items": {"type": "string", "pattern": TOPIC_PATTERN}},
            "config": {}, "limits": {"type": "object"},
            "error_policy": {"enum": ["dlq", "skip", "stop"]}}},
        "Component": {"type": "string", "format": "binary"},
        "Bytes": {"type": "string", "format": "binary"},
        "Reset": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "to": {"enum": ["beginning", "earliest", "end", "latest", null]},
                "offset": {"oneOf": [u64, {"type": "null"}]},
                "timestamp": {"oneOf": [i64, {"type": "null"}]},
                "keep_state": {"type": "boolean", "description": "ponds: keep the state instead of emptying it"}},
            "allOf": [exactly_one(&["to", "offset", "timestamp"])]},
        "Rollback": {"type": "object", "additionalProperties": false, "properties": {
            "version": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": U32_MAX}, {"type": "null"}]}}},
        "Command": {
            "type": "object", "required": ["aggregate", "name"], "additionalProperties": false,
            "properties": {
                "id": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
                                  "description": "command id = tracking id; generated when absent"}, {"type": "null"}]},
                "aggregate": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
                "data": {}, "data_text": {"type": ["string", "null"]},
                "data_base64": {"oneOf": [base64, {"type": "null"}]},
                "expected_version": {"oneOf": [u64, {"type": "null"}]},
                "reply_topic": {"oneOf": [{"type": "string", "pattern": NAME_PATTERN,
                                  "description": "also write the result to <service>.results or <service>.private.reply, exactly once"}, {"type": "null"}]}},
            "allOf": [at_most_one(&["data", "data_text", "data_base64"])]}
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, admin, body, ok) in ROUTES {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_param(name)}))
            .collect();
        if *body == Some("Component") {
            params.push(json!({"name": "Weir-Manifest", "in": "header", "required": true,
                               "description": "the manifest, as JSON", "schema": {"type": "string"}}));
        }
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                *ok: {"description": "success"},
                "4XX": {"description": "bad request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "5XX": {"description": "server error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if *admin {
            op["security"] = json!([{"bearer": []}]);
        }
        if let Some(schema) = body {
            let reference = json!({"schema": {"$ref": format!("#/components/schemas/{schema}")}});
            op["requestBody"] = match *schema {
                "Component" | "Bytes" => {
                    json!({"required": true, "content": {"application/octet-stream": reference}})
                }
                // A raw produce takes any other content type (or none: an
                // empty value) as the record's value.
                "Produce" => json!({"required": false, "content": {
                    "application/json": reference,
                    "application/octet-stream": {"schema": {"$ref": "#/components/schemas/Bytes"}}}}),
                // A rollback without a body goes to the version before.
                "Rollback" => {
                    json!({"required": false, "content": {"application/json": reference}})
                }
                _ => json!({"required": true, "content": {"application/json": reference}}),
            };
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "weir", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Partitioned event log with sandboxed WebAssembly stream processors. Errors are {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

pub(super) async fn openapi() -> Json<Value> {
    Json(document())
}
