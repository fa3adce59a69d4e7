//! Service routes: send a command (answer `202` once it is durably in the
//! command topic, or wait for `200` with the new events and version; `409`
//! on a version conflict, `422` on a rejection) and fetch a command's result.
//! Every answer carries the command's tracking id.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::codec::bytes_field;
use super::{ApiError, AppState, blocking, json_body, names, whole};
use crate::processor::{CommandOutcome, CommandRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    /// The command id (also the tracking id); generated when absent.
    id: Option<String>,
    aggregate: String,
    /// The command's type, e.g. `deposit`.
    name: String,
    data: Option<Value>,
    data_text: Option<String>,
    data_base64: Option<String>,
    #[serde(default, deserialize_with = "whole::option")]
    expected_version: Option<u64>,
    reply_topic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitQuery {
    /// Wait for the result instead of answering `202` once accepted.
    #[serde(default)]
    wait: bool,
    /// How long to wait (capped by the server); default 10 s.
    timeout_ms: Option<u64>,
}

fn command_data(body: &mut CommandBody) -> Result<Vec<u8>, ApiError> {
    match (
        body.data.take(),
        body.data_text.take(),
        body.data_base64.take(),
    ) {
        // `"data": null` and no data at all are the same: a command without
        // a body, which guest SDKs read as JSON null (a unit command).
        (Some(Value::Null), None, None) | (None, None, None) => Ok(Vec::new()),
        (Some(v), None, None) => Ok(v.to_string().into_bytes()),
        (None, Some(t), None) => Ok(t.into_bytes()),
        (None, None, Some(b)) => B64.decode(b.as_bytes()).map_err(|e| {
            ApiError::bad_request(
                "invalid_command",
                format!("data_base64 is not valid base64: {e}"),
            )
        }),
        _ => Err(ApiError::bad_request(
            "invalid_command",
            "give only one of data, data_text, data_base64",
        )),
    }
}

fn tracking_id(body_id: Option<String>, headers: &HeaderMap) -> Result<String, ApiError> {
    let id = body_id
        .or_else(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_command",
            "the command id must be 1..=256 printable characters",
        ));
    }
    Ok(id)
}

/// The HTTP answer for a command outcome.
fn answer(service: &str, id: &str, outcome: CommandOutcome) -> Response {
    match outcome {
        CommandOutcome::Accepted {
            topic,
            partition,
            offset,
        } => (
            StatusCode::ACCEPTED,
            Json(json!({
                "tracking_id": id, "service": service, "status": "accepted",
                "topic": topic, "partition": partition, "offset": offset,
            })),
        )
            .into_response(),
        CommandOutcome::Applied { events, version } => {
            let events: Vec<Value> = events
                .iter()
                .map(|e| {
                    let (field, v) = bytes_field("data", &e.data);
                    let mut obj = json!({"name": e.name});
                    obj[field] = v;
                    obj
                })
                .collect();
            Json(json!({
                "tracking_id": id, "service": service, "status": "applied",
                "version": version, "events": events,
            }))
            .into_response()
        }
        CommandOutcome::Conflict { expected, actual } => {
            let mut body = ApiError::conflict(
                "version_conflict",
                format!("expected the aggregate at version {expected}, it is at {actual}"),
            )
            .with_tracking_id(id)
            .body();
            body["error"]["expected_version"] = json!(expected);
            body["error"]["actual_version"] = json!(actual);
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        CommandOutcome::Rejected { code, message } => {
            let mut body = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "command_rejected",
                message,
            )
            .with_tracking_id(id)
            .body();
            body["error"]["reason"] = json!(code);
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}

pub(super) async fn submit(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(service) = path?;
    names::validate("service", &service)?;
    let Query(q) = query?;
    let mut cmd: CommandBody = json_body(&headers, body)?;
    let id = tracking_id(cmd.id.take(), &headers)?;
    let fail = |e: ApiError| e.with_tracking_id(id.clone());
    if cmd.aggregate.is_empty() || cmd.name.is_empty() {
        return Err(fail(ApiError::bad_request(
            "invalid_command",
            "aggregate and name must not be empty",
        )));
    }
    if let Some(t) = &cmd.reply_topic {
        names::validate("topic", t).map_err(fail)?;
    }
    let data = command_data(&mut cmd).map_err(fail)?;
    let wait = q
        .wait
        .then(|| Duration::from_millis(q.timeout_ms.unwrap_or(10_000)).min(state.config.max_wait));
    let request = CommandRequest {
        id: id.clone(),
        aggregate: cmd.aggregate,
        name: cmd.name,
        data,
        expected_version: cmd.expected_version,
        reply_topic: cmd.reply_topic,
    };
    let outcome = match wait {
        Some(timeout) => state
            .engine
            .submit_and_wait(&service, request, timeout)
            .await
            .map_err(ApiError::from),
        None => {
            let (engine, s) = (state.engine.clone(), service.clone());
            blocking(move || engine.submit(&s, &request)).await
        }
    }
    .map_err(fail)?;
    Ok(answer(&service, &id, outcome))
}

pub(super) async fn result(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((service, id)) = path?;
    names::validate("service", &service)?;
    let (engine, s, i) = (state.engine.clone(), service.clone(), id.clone());
    let stored = blocking(move || engine.command_result(&s, &i))
        .await
        .map_err(|e| e.with_tracking_id(id.clone()))?;
    match stored {
        Some(outcome) => Ok(answer(&service, &id, outcome)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_result",
            format!("no result for command {id:?} of {service:?} (unknown, or not handled yet)"),
        )
        .with_tracking_id(id)),
    }
}
