//! Router tests over a real log and processor engine on a temp dir,
//! through the axum router (`oneshot`): status codes, error codes and "no
//! state change" on bad input. No fake stands in for a layer below, so none
//! can drift from it.

#![allow(clippy::unwrap_used)]

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiConfig, AppState, router};
use crate::log::{EventLog, FsyncPolicy, Log, LogConfig};
use crate::processor::{Engine, EngineConfig};
use crate::runtime::{PoolConfig, Runtime, RuntimeConfig};

const TOKEN: &str = "s3cret-token";

/// The layers below the API, as `weir serve` opens them (fields drop in
/// order: the engine before the log it writes, the directory last).
struct Server {
    engine: Arc<Engine>,
    log: Arc<Log>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn open() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut log_config = LogConfig::new(dir.path().join("log"));
        log_config.default_fsync = FsyncPolicy::Never;
        let log = Arc::new(Log::open(log_config).unwrap());
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.path().join("cache")),
            pool: Some(PoolConfig::for_instances(16)),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let mut config = EngineConfig::new(dir.path().join("data"), FsyncPolicy::Never);
        config.idle_wait = Duration::from_millis(20);
        config.commit_interval = Duration::from_millis(10);
        let engine = Engine::open(config, log.clone(), runtime).unwrap();
        Server {
            engine: Arc::new(engine),
            log,
            _dir: dir,
        }
    }
}

/// The router over a [`Server`]; derefs to the router.
struct TestApp {
    router: Router,
    server: Arc<Server>,
}

impl Deref for TestApp {
    type Target = Router;
    fn deref(&self) -> &Router {
        &self.router
    }
}

impl TestApp {
    fn over(server: Arc<Server>, config: ApiConfig) -> TestApp {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx); // never shutting down
        let state = AppState::new(server.log.clone(), server.engine.clone(), config, rx);
        TestApp {
            router: router(state),
            server,
        }
    }

    /// A fresh API process (nothing in memory) over the same log and engine.
    fn restarted(&self, config: ApiConfig) -> TestApp {
        TestApp::over(self.server.clone(), config)
    }

    fn log(&self) -> &Log {
        &self.server.log
    }

    fn engine(&self) -> &Engine {
        &self.server.engine
    }
}

fn app_with(config: ApiConfig) -> TestApp {
    TestApp::over(Arc::new(Server::open()), config)
}

/// Data bodies are limited to 4 KiB here; components may be larger.
const TEST_LIMITS: ApiConfig = ApiConfig {
    admin_token: None,
    max_body_bytes: 4096,
    max_component_bytes: 8 << 20,
    max_wait: Duration::from_secs(30),
    max_read_records: 10_000,
    idempotency_cache_bytes: 64 << 20,
    header_timeout: Duration::from_secs(30),
    body_timeout: Duration::from_secs(60),
};

fn app() -> TestApp {
    app_with(TEST_LIMITS)
}

/// Deploy a test plugin (built once per run by the testkit) through the API.
async fn deploy(app: &Router, manifest: Value, plugin: &str) -> (StatusCode, Value) {
    use base64::Engine as _;
    let component = weir_testkit::plugins::plugin_bytes(plugin);
    let body = json!({
        "manifest": manifest,
        "component_base64": base64::engine::general_purpose::STANDARD.encode(component),
    });
    json_call(app, "POST", "/plugins", body).await
}

/// Poll `uri` until it answers 200 (a processor caught up), at most 30 s.
async fn get_when_ready(app: &Router, uri: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = call(app, "GET", uri, Body::empty(), &[]).await;
        if s == StatusCode::OK {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{uri}: {s} {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "{method} {uri} has no x-request-id"
    );
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

async fn json_call(app: &Router, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    call(
        app,
        method,
        uri,
        body.to_string(),
        &[("content-type", "application/json")],
    )
    .await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn with_topic(partitions: u32) -> TestApp {
    let app = app();
    let (s, _) = json_call(
        &app,
        "POST",
        "/topics",
        json!({"name": "orders", "partitions": partitions}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    app
}

#[tokio::test]
async fn topics_lifecycle() {
    let app = with_topic(3).await;
    let (s, v) = json_call(
        &app,
        "POST",
        "/topics",
        json!({"name": "orders", "partitions": 3}),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "topic_exists"));
    let (s, v) = call(&app, "GET", "/topics", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["topics"][0]["name"], "orders");
    assert_eq!(v["topics"][0]["partitions"].as_array().unwrap().len(), 3);
    let (s, v) = call(&app, "GET", "/topics/orders", Body::empty(), &[]).await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("orders")));
    let (s, _) = call(&app, "DELETE", "/topics/orders", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&app, "GET", "/topics/orders", Body::empty(), &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_topic"));
}

#[tokio::test]
async fn bad_topic_requests_change_nothing() {
    let app = app();
    for (body, want) in [
        (json!({"name": "../etc", "partitions": 1}), "invalid_name"),
        (json!({"name": "ok", "partitions": 0}), "invalid_partitions"),
        (json!({"name": "ok", "partitons": 2}), "malformed_json"),
    ] {
        let (s, v) = json_call(&app, "POST", "/topics", body).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, want));
    }
    let (s, v) = call(
        &app,
        "POST",
        "/topics",
        "{\"name\": ",
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (_, v) = call(&app, "GET", "/topics", Body::empty(), &[]).await;
    assert_eq!(v["topics"], json!([]));
}

#[tokio::test]
async fn produce_and_read_json_batch_and_raw() {
    let app = with_topic(1).await;
    let (s, v) = json_call(
        &app,
        "POST",
        "/topics/orders/records",
        json!({"key": "a", "value": {"n": 1}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["partition"].as_u64(), v["offset"].as_u64()),
        (Some(0), Some(0))
    );
    let (s, v) = json_call(
        &app,
        "POST",
        "/topics/orders/records",
        json!({"records": [{"value": 2}, {"value_text": "three", "headers": {"h": "x"}}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["records"][1]["offset"], 2);
    let (s, _) = call(
        &app,
        "POST",
        "/topics/orders/records?key=k",
        "raw\x00bytes",
        &[("weir-header", "src=test")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(
        &app,
        "GET",
        "/topics/orders/partitions/0/records?offset=0&limit=10",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0]["value"], json!({"n": 1}));
    assert_eq!(recs[1]["value"], json!(2));
    assert_eq!(recs[2]["value_text"], "three");
    assert_eq!(recs[2]["headers"][0]["name"], "h");
    assert_eq!(recs[3]["key"], "k");
    assert_eq!(recs[3]["value_text"], "raw\u{0}bytes");
    assert_eq!(recs[3]["headers"][0]["value"], "test");
    assert_eq!(v["next_offset"], 4);
    let (_, v) = call(
        &app,
        "GET",
        "/topics/orders/partitions/0/records?offset=3",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn read_errors_and_long_poll() {
    let app = with_topic(2).await;
    let (s, v) = call(
        &app,
        "GET",
        "/topics/orders/partitions/0/records?offset=5",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::RANGE_NOT_SATISFIABLE, "invalid_offset")
    );
    let (s, v) = call(
        &app,
        "GET",
        "/topics/orders/partitions/0/records?offset=abc",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_offset"));
    let (s, v) = call(
        &app,
        "GET",
        "/topics/orders/partitions/7/records",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_partition"));
    let (s, v) = call(
        &app,
        "GET",
        "/topics/orders/partitions/x/records",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_partition")
    );
    let (s, v) = call(
        &app,
        "GET",
        "/topics/nope/partitions/0/records",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_topic"));

    // A long poll at the end returns as soon as a record arrives.
    let reader = {
        let app = app.clone();
        tokio::spawn(async move {
            call(
                &app,
                "GET",
                "/topics/orders/partitions/1/records?offset=0&wait_ms=5000",
                Body::empty(),
                &[],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, _) = json_call(
        &app,
        "POST",
        "/topics/orders/records",
        json!({"value": 1, "partition": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let started = std::time::Instant::now();
    let (s, v) = reader.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(4));
    // A long poll with nothing arriving times out empty.
    let (s, v) = call(
        &app,
        "GET",
        "/topics/orders/partitions/0/records?wait_ms=50",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!(
        (s, v["records"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}

#[tokio::test]
async fn produce_errors_change_nothing() {
    let app = app_with(ApiConfig {
        max_body_bytes: 4096,
        ..ApiConfig::default()
    });
    json_call(
        &app,
        "POST",
        "/topics",
        json!({"name": "orders", "partitions": 2}),
    )
    .await;
    let cases: Vec<(Body, &str, StatusCode, &str)> = vec![
        (
            Body::from("{\"value\": "),
            "orders",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            Body::from("{\"value\": 1}"),
            "nope",
            StatusCode::NOT_FOUND,
            "unknown_topic",
        ),
        (
            Body::from("{\"value\": 1}"),
            "..",
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            Body::from(format!("{{\"value_text\": \"{}\"}}", "x".repeat(5000))),
            "orders",
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Body::from("{\"value\": 1, \"partition\": 9}"),
            "orders",
            StatusCode::NOT_FOUND,
            "unknown_partition",
        ),
        (
            Body::from("{\"records\": [{\"value\": 1}, {\"key\": \"no value\"}]}"),
            "orders",
            StatusCode::BAD_REQUEST,
            "invalid_record",
        ),
    ];
    for (body, topic, status, want) in cases {
        let uri = format!("/topics/{topic}/records");
        let (s, v) = call(
            &app,
            "POST",
            &uri,
            body,
            &[("content-type", "application/json")],
        )
        .await;
        assert_eq!((s, code(&v)), (status, want), "{uri}: {v}");
    }
    let ends: Vec<u64> = app
        .log()
        .topic("orders")
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.end_offset)
        .collect();
    assert_eq!(ends, vec![0, 0], "a rejected produce appended something");
}

#[tokio::test]
async fn idempotent_produce_appends_once() {
    let app = with_topic(1).await;
    let h = [
        ("content-type", "application/json"),
        ("idempotency-key", "req-1"),
    ];
    let (s1, v1) = call(&app, "POST", "/topics/orders/records", "{\"value\": 1}", &h).await;
    let (s2, v2) = call(&app, "POST", "/topics/orders/records", "{\"value\": 1}", &h).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(v1, v2);
    let (_, v) = call(&app, "GET", "/topics/orders", Body::empty(), &[]).await;
    assert_eq!(v["partitions"][0]["end_offset"], 1);
    // The key and its answer are remembered, and their memory reported.
    let (_, metrics) = call(&app, "GET", "/metrics", Body::empty(), &[]).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("weir_idempotency_cache_keys 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_idempotency_cache_bytes "),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_idempotency_key_is_new_for_a_topic_created_again() {
    let app = with_topic(1).await;
    let h = [
        ("content-type", "application/json"),
        ("idempotency-key", "req-1"),
    ];
    let (s, _) = call(&app, "POST", "/topics/orders/records", "{\"value\": 1}", &h).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, "DELETE", "/topics/orders", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = json_call(&app, "POST", "/topics", json!({"name": "orders"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(&app, "POST", "/topics/orders/records", "{\"value\": 2}", &h).await;
    assert_eq!((s, v["offset"].as_u64()), (StatusCode::OK, Some(0)));
    let (_, v) = call(&app, "GET", "/topics/orders", Body::empty(), &[]).await;
    assert_eq!(
        v["partitions"][0]["end_offset"], 1,
        "the record was appended, not answered from the deleted topic"
    );
}

#[tokio::test]
async fn admin_routes_need_the_token() {
    let app = app_with(ApiConfig {
        admin_token: Some(TOKEN.into()),
        ..ApiConfig::default()
    });
    let body = json!({"name": "t", "partitions": 1}).to_string();
    let (s, v) = call(&app, "POST", "/topics", body.clone(), &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _) = call(
        &app,
        "POST",
        "/topics",
        body.clone(),
        &[("authorization", "Bearer wrong-token")],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&app, "GET", "/plugins", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, v) = call(&app, "GET", "/topics", Body::empty(), &[]).await;
    assert_eq!(
        v["topics"],
        json!([]),
        "an unauthorized create changed state"
    );
    let auth = format!("Bearer {TOKEN}");
    let (s, _) = call(&app, "POST", "/topics", body, &[("authorization", &auth)]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = call(&app, "DELETE", "/topics/t", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Data routes stay open.
    let (s, _) = call(&app, "POST", "/topics/t/records", "x", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, "GET", "/healthz", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn deploy_validates_before_the_engine() {
    let app = with_topic(1).await;
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let component = weir_testkit::plugins::plugin_bytes("enricher_orders");
    let enricher =
        json!({"kind": "enricher", "inputs": ["orders"], "outputs": ["orders.enriched"]});
    let named = |name: &str| {
        let mut m = enricher.clone();
        m["name"] = json!(name);
        m
    };
    let cases = [
        (
            json!({"manifest": named("e"), "component_base64": b64(b"\0asm\x01\0\0\0")}),
            "invalid_component",
        ),
        (
            json!({"manifest": named("e"), "component_base64": "%%"}),
            "invalid_component",
        ),
        (
            json!({"manifest": named("e/../x"), "component_base64": b64(&component)}),
            "invalid_name",
        ),
        (
            json!({"manifest": {"name": "e", "kind": "nope"}, "component_base64": b64(&component)}),
            "invalid_manifest",
        ),
        (json!({"manifest": named("e")}), "malformed_json"),
    ];
    for (body, want) in cases {
        let (s, v) = json_call(&app, "POST", "/plugins", body).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, want), "{v}");
    }
    let manifest_header = enricher.to_string();
    let (s, v) = call(
        &app,
        "PUT",
        "/plugins/e",
        vec![0u8; TEST_LIMITS.max_component_bytes + 1],
        &[("weir-manifest", &manifest_header)],
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    // Components may be larger than data bodies.
    assert!(component.len() > TEST_LIMITS.max_body_bytes);
    let (s, v) = call(
        &app,
        "PUT",
        "/plugins/big",
        component.clone(),
        &[("weir-manifest", &manifest_header)],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    call(&app, "DELETE", "/plugins/big", Body::empty(), &[]).await;
    let (s, v) = call(&app, "PUT", "/plugins/e", component.clone(), &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_manifest"));
    let (_, v) = call(&app, "GET", "/plugins", Body::empty(), &[]).await;
    assert_eq!(v["plugins"], json!([]));

    let (s, v) = call(
        &app,
        "PUT",
        "/plugins/e",
        component.clone(),
        &[("weir-manifest", &manifest_header)],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "e");
    // Another manifest makes another version (identical bytes and
    // manifest would be a no-op).
    let mut second = named("e");
    second["retries"] = json!(1);
    let (s, v) = json_call(
        &app,
        "POST",
        "/plugins",
        json!({"manifest": second, "component_base64": b64(&component)}),
    )
    .await;
    assert_eq!(
        (s, v["active_version"].as_u64()),
        (StatusCode::CREATED, Some(2))
    );
    let (s, v) = call(&app, "POST", "/plugins/e/pause", Body::empty(), &[]).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("paused")));
    let (s, v) = json_call(
        &app,
        "POST",
        "/plugins/e/reset",
        json!({"offset": 1, "to": "end"}),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_reset"));
    let (s, _) = call(&app, "POST", "/plugins/e/rollback", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = json_call(&app, "POST", "/plugins/e/rollback", json!({"version": 9})).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_version"));
    let (s, v) = call(&app, "GET", "/plugins/ghost", Body::empty(), &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_plugin"));
    let (s, _) = call(&app, "DELETE", "/plugins/e", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn commands_answer_with_status_and_tracking_id() {
    let app = app();
    let (s, v) = deploy(
        &app,
        json!({"name": "bank", "kind": "command-handler", "partitions": 1}),
        "command_bank",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let cmd = |name: &str, data: Value| json!({"aggregate": "acc-1", "name": name, "data": data});
    let (s, v) = json_call(
        &app,
        "POST",
        "/services/bank/commands",
        json!({"aggregate": "acc-2", "name": "deposit", "data": {"amount": 5}}),
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("accepted"))
    );
    assert!(v["tracking_id"].as_str().is_some_and(|t| !t.is_empty()));
    let (s, v) = json_call(
        &app,
        "POST",
        "/services/bank/commands?wait=true",
        json!({"id": "c-1", "aggregate": "acc-1", "name": "open", "data": {"owner": "ann"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tracking_id"], "c-1");
    assert_eq!(v["events"][0]["data"], json!({"owner": "ann"}));
    assert_eq!(v["version"], 1);
    let mut stale = cmd("deposit", json!({"amount": 5}));
    stale["expected_version"] = json!(5);
    let (s, v) = json_call(&app, "POST", "/services/bank/commands?wait=true", stale).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "version_conflict"),
        "{v}"
    );
    assert!(v["tracking_id"].is_string());
    let (s, v) = json_call(
        &app,
        "POST",
        "/services/bank/commands?wait=true",
        cmd("withdraw", json!({"amount": 100})),
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "command_rejected")
    );
    assert_eq!(v["error"]["reason"], "insufficient-funds");
    assert!(v["tracking_id"].is_string());
    let (s, v) = json_call(
        &app,
        "POST",
        "/services/nope/commands",
        cmd("deposit", json!({"amount": 5})),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_plugin"));
    assert!(v["tracking_id"].is_string());
    let (s, v) = call(&app, "POST", "/services/bank/commands", "{", &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "malformed_json"));
    // An id is up to 256 characters, whatever their bytes (as documented).
    let mut long = cmd("deposit", json!({"amount": 1}));
    long["id"] = json!("é".repeat(256));
    let (s, v) = json_call(&app, "POST", "/services/bank/commands", long.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    long["id"] = json!("é".repeat(257));
    let (s, v) = json_call(&app, "POST", "/services/bank/commands", long).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_command"));
}

#[tokio::test]
async fn ponds_answer_keys_scans_and_queries() {
    let app = with_topic(1).await;
    let (s, _) = json_call(
        &app,
        "POST",
        "/topics/orders/records",
        json!({"key": "acc-1", "value": {"customer": "acc-1", "amount": 10}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = deploy(
        &app,
        json!({"name": "balances", "kind": "projection", "inputs": ["orders"]}),
        "projection_totals",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let v = get_when_ready(&app, "/ponds/balances/keys/acc-1").await;
    assert_eq!(v["value"], json!({"count": 1, "sum": 10}));
    let (s, v) = call(
        &app,
        "GET",
        "/ponds/balances/keys/acc-2",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_key"));
    let (s, v) = call(
        &app,
        "GET",
        "/ponds/balances/keys?prefix=acc-",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["entries"][0]["key"], "acc-1");
    let (s, v) = call(&app, "POST", "/ponds/balances/query", "acc-1", &[]).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"count": 1, "sum": 10})));
    let (s, v) = call(&app, "GET", "/ponds/ghost/keys/x", Body::empty(), &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_plugin"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let app = app();
    let (s, v) = call(&app, "GET", "/nope", Body::empty(), &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "no_such_route"));
    let (s, v) = call(&app, "PATCH", "/topics", Body::empty(), &[]).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn metrics_and_openapi_describe_the_server() {
    let app = with_topic(1).await;
    json_call(&app, "POST", "/topics/orders/records", json!({"value": 1})).await;
    let (s, v) = call(&app, "GET", "/metrics", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(
        text.contains("weir_produced_records_total{topic=\"orders\"} 1"),
        "{text}"
    );
    assert!(text.contains("weir_partition_end_offset{topic=\"orders\",partition=\"0\"} 1"));
    assert!(text.contains("route=\"/topics/{topic}/records\""));

    let (s, doc) = call(&app, "GET", "/openapi.json", Body::empty(), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    // Every documented route is routed (a routed path never answers no_such_route).
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let uri = path
                .replace("{topic}", "orders")
                .replace("{partition}", "0")
                .replace("{name}", "p")
                .replace("{pond}", "balances")
                .replace("{key}", "k")
                .replace("{service}", "bank")
                .replace("{id}", "i");
            let (_, v) = call(&app, &method.to_uppercase(), &uri, Body::empty(), &[]).await;
            assert_ne!(code(&v), "no_such_route", "{method} {path}");
            assert_ne!(code(&v), "method_not_allowed", "{method} {path}");
        }
    }
    assert_eq!(super::openapi::ROUTES.len(), 25);
}

#[tokio::test]
async fn tail_streams_records_as_server_sent_events() {
    use futures::StreamExt;
    let app = with_topic(2).await;
    json_call(
        &app,
        "POST",
        "/topics/orders/records",
        json!({"value": {"first": true}, "partition": 1}),
    )
    .await;
    let req = Request::builder()
        .uri("/topics/orders/tail?from=earliest")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    json_call(
        &app,
        "POST",
        "/topics/orders/records",
        json!({"value": {"second": true}, "partition": 0}),
    )
    .await;
    while !(seen.contains("first") && seen.contains("second")) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("tail stalled")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: record"), "{seen}");
    assert!(seen.contains("id: 1:0"), "{seen}");
    let (s, v) = call(
        &app,
        "GET",
        "/topics/orders/tail?partition=5",
        Body::empty(),
        &[],
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_partition"));
}

#[tokio::test]
async fn producing_into_a_processor_owned_topic_is_refused() {
    let app = app();
    json_call(
        &app,
        "POST",
        "/topics",
        json!({"name": "in", "partitions": 1}),
    )
    .await;
    let (s, v) = deploy(
        &app,
        json!({"name": "writer", "kind": "enricher", "inputs": ["in"], "outputs": ["owned"]}),
        "enricher_orders",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    json_call(
        &app,
        "POST",
        "/topics",
        json!({"name": "owned", "partitions": 1}),
    )
    .await;
    let (s, v) = json_call(&app, "POST", "/topics/owned/records", json!({"value": 1})).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "topic_owned"));
    assert_eq!(v["error"]["owner"], "writer", "{v}");
    let (_, v) = call(&app, "GET", "/topics/owned", Body::empty(), &[]).await;
    assert_eq!(v["partitions"][0]["end_offset"], 0);
    // Neither is a topic a processor owns or reads deleted.
    for topic in ["owned", "in"] {
        let (s, v) = call(
            &app,
            "DELETE",
            &format!("/topics/{topic}"),
            Body::empty(),
            &[],
        )
        .await;
        assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "topic_in_use"), "{v}");
        let (s, _) = call(&app, "GET", &format!("/topics/{topic}"), Body::empty(), &[]).await;
        assert_eq!(s, StatusCode::OK);
    }
}

/// Every record of `orders` a produce answer places, checked against the
/// request: the record at each answered offset has the request's value.
async fn assert_placed(app: &Router, answer: &Value, values: &[u64]) {
    let placed = answer["records"].as_array().unwrap();
    assert_eq!(placed.len(), values.len(), "{answer}");
    for (at, value) in placed.iter().zip(values) {
        let uri = format!(
            "/topics/orders/partitions/{}/records?offset={}&limit=1",
            at["partition"], at["offset"]
        );
        let (_, v) = call(app, "GET", &uri, Body::empty(), &[]).await;
        assert_eq!(v["records"][0]["value"]["i"], json!(value), "{uri}: {v}");
    }
}

async fn stored(app: &Router) -> u64 {
    let (_, v) = call(app, "GET", "/topics/orders", Body::empty(), &[]).await;
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn a_keyed_produce_over_partitions_appends_each_part_once_across_failures_and_restarts() {
    let app = app_with(ApiConfig::default());
    json_call(
        &app,
        "POST",
        "/topics",
        json!({"name": "orders", "partitions": 3}),
    )
    .await;
    // Keys k0..k11 spread over all three partitions; parts are appended in
    // partition order.
    let values: Vec<u64> = (0..12).collect();
    let mut sizes = [0u64; 3];
    for i in 0..12 {
        sizes[crate::log::partition_for_key(format!("k{i}").as_bytes(), 3) as usize] += 1;
    }
    assert!(sizes.iter().all(|&n| n > 1), "{sizes:?}");
    let body = |keys: std::ops::Range<u64>| {
        let records: Vec<Value> = keys
            .map(|i| json!({"key": format!("k{i}"), "value": {"i": i}}))
            .collect();
        json!({"records": records}).to_string()
    };
    let send = |app: Router, key: &'static str, body: String| async move {
        call(
            &app,
            "POST",
            "/topics/orders/records",
            body,
            &[
                ("content-type", "application/json"),
                ("idempotency-key", key),
            ],
        )
        .await
    };

    // 1. The part for partition 1 fails after partition 0's was appended;
    //    the retry in the same process appends only the missing parts.
    *app.engine().failpoints().fail_client_append_to.lock() = Some(1);
    let (s, _) = send(app.clone(), "multi-1", body(0..12)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(stored(&app).await, sizes[0], "partition 0's part only");
    let (s, first) = send(app.clone(), "multi-1", body(0..12)).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(stored(&app).await, 12);
    assert_placed(&app, &first, &values).await;
    let (_, again) = send(app.clone(), "multi-1", body(0..12)).await;
    assert_eq!(again, first);

    // 2. The same after a crash: a new process relearns the parts from the log.
    *app.engine().failpoints().fail_client_append_to.lock() = Some(2);
    let (s, _) = send(app.clone(), "multi-2", body(0..12)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(stored(&app).await, 12 + sizes[0] + sizes[1]);
    let restarted = app.restarted(ApiConfig::default());
    let (s, second) = send(restarted.clone(), "multi-2", body(0..12)).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(stored(&restarted).await, 24);
    assert_placed(&restarted, &second, &values).await;
    // multi-1 was complete before the "crash": replayed, nothing appended.
    let (_, replayed) = send(restarted.clone(), "multi-1", body(0..12)).await;
    assert_eq!(replayed, first);
    assert_eq!(stored(&restarted).await, 24);

    // 3. A retry with another body under a partly written key appends nothing.
    *app.engine().failpoints().fail_client_append_to.lock() = Some(1);
    let (s, _) = send(restarted.clone(), "multi-3", body(0..12)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let (s, v) = send(restarted.clone(), "multi-3", body(0..1)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        "{v}"
    );
    assert_eq!(stored(&restarted).await, 24 + sizes[0]);
}

#[tokio::test]
async fn keyless_records_of_a_keyed_produce_stay_together() {
    let app = with_topic(4).await;
    let records: Vec<Value> = (0..8).map(|i| json!({"value": {"i": i}})).collect();
    let (s, v) = call(
        &app,
        "POST",
        "/topics/orders/records",
        json!({"records": records}).to_string(),
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "sticky"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let partitions: std::collections::BTreeSet<u64> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["partition"].as_u64().unwrap())
        .collect();
    assert_eq!(partitions.len(), 1, "{v}");
}
