//! Pond routes: a key, a prefix scan, and the plugin's own `query`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::codec::bytes_field;
use super::{ApiError, AppState, blocking, names};

/// Most entries one scan returns.
const MAX_SCAN: u32 = 10_000;

fn entry_json(key: &[u8], value: &[u8]) -> Value {
    let mut obj = Map::new();
    match std::str::from_utf8(key) {
        Ok(k) => obj.insert("key".into(), json!(k)),
        Err(_) => obj.insert("key_base64".into(), json!(B64.encode(key))),
    };
    let (field, v) = bytes_field("value", value);
    obj.insert(field, v);
    Value::Object(obj)
}

pub(super) async fn get(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((pond, key)) = path?;
    names::validate("pond", &pond)?;
    let engine = state.engine.clone();
    let (p, k) = (pond.clone(), key.clone());
    match blocking(move || engine.pond_get(&p, k.as_bytes())).await? {
        Some(value) => {
            let mut v = entry_json(key.as_bytes(), &value);
            v["pond"] = json!(pond);
            Ok(Json(v))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("pond {pond:?} has no key {key:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanQuery {
    #[serde(default)]
    prefix: String,
    start_after: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn scan(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ScanQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(pond) = path?;
    names::validate("pond", &pond)?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_SCAN);
    let engine = state.engine.clone();
    let p = pond.clone();
    let entries = blocking(move || {
        engine.pond_scan(
            &p,
            q.prefix.as_bytes(),
            q.start_after.as_deref().map(str::as_bytes),
            limit as usize,
        )
    })
    .await?;
    let next = (entries.len() as u32 == limit)
        .then(|| {
            entries
                .last()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        })
        .flatten();
    let entries: Vec<Value> = entries.iter().map(|(k, v)| entry_json(k, v)).collect();
    Ok(Json(
        json!({"pond": pond, "entries": entries, "next_start_after": next}),
    ))
}

/// The plugin's own query: the body goes to its `query` export as bytes and
/// its answer comes back as bytes (JSON by convention).
pub(super) async fn query(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(pond) = path?;
    names::validate("pond", &pond)?;
    let body = body?;
    let engine = state.engine.clone();
    let answer = blocking(move || engine.pond_query(&pond, &body))
        .await?
        .map_err(|message| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "query_failed", message)
        })?;
    let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&answer).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], answer).into_response())
}
