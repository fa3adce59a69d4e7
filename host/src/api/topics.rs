//! Topic routes: create, list, inspect, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking, json_body, names, whole};
use crate::log::{TopicConfig, TopicInfo};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    #[serde(default = "one", deserialize_with = "whole::number")]
    partitions: u32,
    #[serde(default, deserialize_with = "whole::option")]
    retention_ms: Option<u64>,
    #[serde(default, deserialize_with = "whole::option")]
    retention_bytes: Option<u64>,
    #[serde(default)]
    compact: bool,
}

fn one() -> u32 {
    1
}

/// A topic as the API shows it: its name and each partition's offsets.
pub(super) fn topic_json(info: &TopicInfo) -> Value {
    let partitions: Vec<Value> = info
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "start_offset": p.start_offset,
                "end_offset": p.end_offset,
            })
        })
        .collect();
    json!({"name": info.name, "partitions": partitions})
}

pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: CreateTopic = json_body(&headers, body)?;
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
    let config = TopicConfig {
        partitions: req.partitions,
        retention_ms: req.retention_ms,
        retention_bytes: req.retention_bytes,
        compaction: req.compact,
        ..TopicConfig::default()
    };
    let log = state.log.clone();
    let info = blocking(move || log.create_topic(&req.name, config)).await?;
    Ok((StatusCode::CREATED, Json(topic_json(&info))))
}

pub(super) async fn list(State(state): State<AppState>) -> Json<Value> {
    let mut topics = state.log.topics();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let topics: Vec<Value> = topics.iter().map(topic_json).collect();
    Json(json!({ "topics": topics }))
}

pub(super) async fn inspect(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(topic) = path?;
    names::validate("topic", &topic)?;
    Ok(Json(topic_json(&state.log.topic(&topic)?)))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(topic) = path?;
    names::validate("topic", &topic)?;
    let engine = state.engine.clone();
    let name = topic.clone();
    blocking(move || engine.delete_topic(&name)).await?;
    Ok(Json(json!({ "deleted": topic })))
}
