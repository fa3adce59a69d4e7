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
        "Deploy a plugin version: the body is the component, the manifest JSON is in a Weir-Manifest header or ?manifest=",
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

fn schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "description": "stable machine-readable code"},
                "message": {"type": "string"}}},
            "tracking_id": {"type": "string"}}},
        "CreateTopic": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,248}$"},
            "partitions": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 1},
            "retention_ms": {"type": "integer"}, "retention_bytes": {"type": "integer"},
            "compact": {"type": "boolean"}}},
        "Record": {"type": "object", "description": "give one of value (any JSON), value_text, value_base64", "properties": {
            "key": {"type": "string"}, "key_base64": {"type": "string"},
            "value": {}, "value_text": {"type": "string"}, "value_base64": {"type": "string"},
            "headers": {"oneOf": [{"type": "object", "additionalProperties": {"type": "string"}},
                                  {"type": "array", "items": {"type": "object", "properties": {
                                      "name": {"type": "string"}, "value": {"type": "string"}, "value_base64": {"type": "string"}}}}]},
            "timestamp": {"type": "integer"}, "partition": {"type": "integer"}}},
        "Produce": {"oneOf": [{"$ref": "#/components/schemas/Record"},
                              {"type": "object", "required": ["records"], "properties": {
                                  "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}}}]},
        "Deploy": {"type": "object", "required": ["manifest", "component_base64"], "properties": {
            "manifest": {"$ref": "#/components/schemas/Manifest"}, "component_base64": {"type": "string"}}},
        "Manifest": {"type": "object", "required": ["name", "kind"], "properties": {
            "name": {"type": "string"},
            "kind": {"enum": ["enricher", "projection", "command-handler"]},
            "inputs": {"type": "array", "items": {"type": "string"}},
            "outputs": {"type": "array", "items": {"type": "string"}},
            "config": {}, "limits": {"type": "object"},
            "error_policy": {"enum": ["dlq", "skip", "stop"]}}},
        "Component": {"type": "string", "format": "binary"},
        "Bytes": {"type": "string", "format": "binary"},
        "Reset": {"type": "object", "properties": {
            "to": {"enum": ["beginning", "end"]}, "offset": {"type": "integer"}, "timestamp": {"type": "integer"},
            "keep_state": {"type": "boolean", "description": "ponds: keep the state instead of emptying it"}}},
        "Rollback": {"type": "object", "properties": {"version": {"type": "integer"}}},
        "Command": {"type": "object", "required": ["aggregate", "name"], "properties": {
            "id": {"type": "string", "description": "command id = tracking id; generated when absent"},
            "aggregate": {"type": "string"}, "name": {"type": "string"},
            "data": {}, "data_text": {"type": "string"}, "data_base64": {"type": "string"},
            "expected_version": {"type": "integer"},
            "reply_topic": {"type": "string", "description": "also write the result to <service>.results or <service>.private.reply, exactly once"}}}
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, admin, body, ok) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
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
            let content_type = match *schema {
                "Component" | "Bytes" => "application/octet-stream",
                _ => "application/json",
            };
            op["requestBody"] = json!({"content": {content_type: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
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
