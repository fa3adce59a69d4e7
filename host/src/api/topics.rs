//! Topic routes: create, list, inspect, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::backend::TopicSpec;
use super::{ApiError, AppState, blocking, json_body, names};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    #[serde(default = "one")]
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    #[serde(default)]
    compact: bool,
}

fn one() -> u32 {
    1
}

pub(super) async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: CreateTopic = json_body(body)?;
    names::validate("topic", &req.name)?;
    if req.partitions == 0 || req.partitions > MAX_PARTITIONS {
        return Err(ApiError::bad_request(
            "invalid_partitions",
            format!(
                "partitions must be 1..={MAX_PARTITIONS}, not {}",
                req.partitions
            ),
        ));
    }
    let spec = TopicSpec {
        name: req.name,
        partitions: req.partitions,
        retention_ms: req.retention_ms,
        retention_bytes: req.retention_bytes,
        compact: req.compact,
    };
    let rapids = state.rapids.clone();
    let view = blocking(move || rapids.create_topic(&spec)).await?;
    Ok((StatusCode::CREATED, Json(json!(view))))
}

pub(super) async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "topics": state.rapids.topics() }))
}

pub(super) async fn inspect(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(topic) = path?;
    names::validate("topic", &topic)?;
    Ok(Json(json!(state.rapids.topic(&topic)?)))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(topic) = path?;
    names::validate("topic", &topic)?;
    let rapids = state.rapids.clone();
    let name = topic.clone();
    blocking(move || rapids.delete_topic(&name)).await?;
    Ok(Json(json!({ "deleted": topic })))
}
