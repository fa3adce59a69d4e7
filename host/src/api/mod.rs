//! The HTTP API (axum): admin and data routes, JSON errors, OpenAPI.
//!
//! Routes use the layers below by their own types: the log
//! ([`crate::log::EventLog`]) for topics and reads, the processor engine
//! ([`crate::processor::Engine`]) for plugins, ponds, services and every
//! client write (its ownership rule decides who may append where). Every
//! store or disk call runs on the blocking pool (`blocking`). Every error
//! is JSON with a stable code chosen from a typed error ([`error`]); every
//! answer carries an `x-request-id`; admin routes need the bearer token
//! when one is configured; request bodies are size-limited per route.

pub mod codec;
pub mod error;
pub mod http;
pub mod names;
pub mod openapi;
pub mod serve;

mod auth;
mod idempotency;
mod metrics;
mod plugins;
mod ponds;
mod processor_metrics;
mod records;
mod services;
mod topics;
mod whole;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::ApiError;

use crate::log::EventLog;
use crate::processor::Engine;

/// Limits and secrets of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bearer token required on admin routes; `None` leaves them open.
    pub admin_token: Option<String>,
    /// Largest request body on data routes (produce, commands, queries).
    pub max_body_bytes: usize,
    /// Largest request body on the deploy route (component + manifest).
    pub max_component_bytes: usize,
    /// Longest a read may long-poll or a command may wait.
    pub max_wait: Duration,
    /// Most records one read returns.
    pub max_read_records: usize,
    /// Memory for idempotency keys and their answers (the most recent keys
    /// within it are remembered).
    pub idempotency_cache_bytes: usize,
    /// How long a client may take to send a request's head (and how long
    /// an idle connection stays open).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            admin_token: None,
            max_body_bytes: 8 << 20,
            max_component_bytes: 64 << 20,
            max_wait: Duration::from_secs(30),
            max_read_records: 10_000,
            idempotency_cache_bytes: 64 << 20,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub log: Arc<dyn EventLog>,
    pub engine: Arc<Engine>,
    pub config: Arc<ApiConfig>,
    pub(crate) http: Arc<metrics::HttpMetrics>,
    pub(crate) idempotency: Arc<idempotency::IdempotencyCache>,
    pub(crate) started: Instant,
    /// Flipped at shutdown so long polls and tails end promptly.
    pub(crate) shutting_down: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    pub fn new(
        log: Arc<dyn EventLog>,
        engine: Arc<Engine>,
        config: ApiConfig,
        shutting_down: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let keys = engine.produce_keys();
        AppState {
            log,
            engine,
            idempotency: Arc::new(
                idempotency::IdempotencyCache::new(config.idempotency_cache_bytes)
                    .shared_with(keys),
            ),
            config: Arc::new(config),
            http: Arc::new(metrics::HttpMetrics::default()),

            started: Instant::now(),
            shutting_down,
        }
    }
}

/// Run blocking lower-layer work (disk, store, plugin calls) off the async
/// threads; its typed error becomes the API's.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Resolves when `partition` of `topic` has a committed record at `offset`
/// (or the topic goes away), or when `timeout` passes, whichever is first.
pub(crate) async fn wait_for_record(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
    offset: u64,
    timeout: Duration,
) {
    let Ok(mut end) = log.watch_end(topic, partition) else {
        return;
    };
    let wait = end.wait_for(|&e| e > offset);
    // A closed watch (topic deleted) or the timeout both end the wait.
    let _ = tokio::time::timeout(timeout, wait).await;
}

/// The whole API as one router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let component_limit = state.config.max_component_bytes;

    let admin = Router::new()
        .route("/topics", post(topics::create))
        .route("/topics/{topic}", axum::routing::delete(topics::delete))
        .route(
            "/plugins",
            post(plugins::deploy_json).layer(DefaultBodyLimit::max(component_limit)),
        )
        .route(
            "/plugins/{name}",
            axum::routing::put(plugins::deploy_raw)
                .layer(DefaultBodyLimit::max(component_limit))
                .delete(plugins::delete),
        )
        .route("/plugins/{name}/pause", post(plugins::pause))
        .route("/plugins/{name}/resume", post(plugins::resume))
        .route("/plugins/{name}/reset", post(plugins::reset))
        .route("/plugins/{name}/rollback", post(plugins::rollback))
        .route("/plugins/{name}/rebuild", post(plugins::rebuild))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));

    let admin_reads = Router::new()
        .route("/plugins", get(plugins::list))
        .route("/plugins/{name}", get(plugins::inspect))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));

    let data = Router::new()
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi))
        .route("/topics", get(topics::list))
        .route("/topics/{topic}", get(topics::inspect))
        .route("/topics/{topic}/records", post(records::produce))
        .route(
            "/topics/{topic}/partitions/{partition}/records",
            get(records::read),
        )
        .route("/topics/{topic}/tail", get(records::tail))
        .route("/ponds/{pond}/keys", get(ponds::scan))
        .route("/ponds/{pond}/keys/{*key}", get(ponds::get))
        .route("/ponds/{pond}/query", post(ponds::query))
        .route("/services/{service}/commands", post(services::submit))
        .route("/services/{service}/commands/{id}", get(services::result));

    admin
        .merge(admin_reads)
        .merge(data)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http::guard_request,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found_route(uri.path())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Gives every answer an `x-request-id` (the client's, or a new one) and
/// counts requests by route and status for `/metrics`.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    let start = Instant::now();
    let mut response = next.run(request).await.into_response();
    state.http.observe(
        method.as_str(),
        &route,
        response.status().as_u16(),
        start.elapsed(),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().entry("x-request-id").or_insert(v);
    }
    response
}

/// Whether the request says its body is JSON (`application/json` or any
/// `+json` type, parameters aside).
pub(crate) fn says_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"))
}

/// A JSON route refuses a body the request says is something else (`415
/// unsupported_media_type`); one without a content type is read as JSON.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        Some(ct) if !says_json(headers) => Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "this route takes application/json, not {:?}",
                ct.to_str().unwrap_or("(not ASCII)")
            ),
        )),
        _ => Ok(()),
    }
}

/// A JSON request body, with content type, size, time and syntax errors
/// as [`ApiError`]s.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    require_json(headers)?;
    let body = body?;
    serde_json::from_slice(&body).map_err(ApiError::malformed_json)
}
