//! Every error the HTTP API can answer with, as JSON
//! `{"error": {"code": "stable_code", "message": "human text"}}`.
//!
//! This is the one place where lower-layer errors (log, store, runtime,
//! processors) and request-parsing failures become a stable machine code and
//! an HTTP status. Codes are part of the API contract: never rename one.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error: an HTTP status, a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Set on answers to service commands so every answer carries its id.
    pub tracking_id: Option<String>,
    /// Set on ownership refusals: the processor that owns (or uses) the topic.
    pub owner: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            tracking_id: None,
            owner: None,
        }
    }

    pub fn with_tracking_id(mut self, id: impl Into<String>) -> Self {
        self.tracking_id = Some(id.into());
        self
    }

    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn malformed_json(err: impl std::fmt::Display) -> Self {
        Self::bad_request(
            "malformed_json",
            format!("request body is not valid JSON for this route: {err}"),
        )
    }

    pub fn invalid_name(what: &str, name: &str, why: &str) -> Self {
        Self::bad_request(
            "invalid_name",
            format!("invalid {what} name {name:?}: {why}"),
        )
    }

    pub fn unknown_topic(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            format!("no topic named {name:?}"),
        )
    }

    pub fn unknown_plugin(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_plugin",
            format!("no plugin named {name:?}"),
        )
    }

    pub fn unknown_partition(topic: &str, partition: u32, partitions: u32) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_partition",
            format!("topic {topic:?} has partitions 0..{partitions}, not {partition}"),
        )
    }

    pub fn invalid_offset(message: impl Into<String>) -> Self {
        Self::new(StatusCode::RANGE_NOT_SATISFIABLE, "invalid_offset", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no_such_route",
            format!("no route for {path}"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(owner) = &self.owner {
            body["error"]["owner"] = json!(owner);
        }
        if let Some(id) = &self.tracking_id {
            body["tracking_id"] = json!(id);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"weir\""),
            );
        }
        response
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if let Some(timed_out) = cause::<super::http::BodyTimedOut>(&rejection) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                timed_out.to_string(),
            )
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "request body exceeds the server's size limit for this route",
            )
        } else {
            ApiError::new(rejection.status(), "bad_body", rejection.body_text())
        }
    }
}

/// The first error of type `E` in the chain of `error`'s sources.
fn cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("background task failed: {err}"))
    }
}

/// Whether a disk being full (or over quota) is what `error` comes down to.
fn disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    cause::<std::io::Error>(error).is_some_and(|e| {
        e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
    })
}

/// `507 insufficient_storage`: nothing was written; freeing space is enough.
fn insufficient_storage(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        format!(
            "{message} (the data directory's disk is full; nothing was written; free space and retry)"
        ),
    )
}

impl From<crate::log::LogError> for ApiError {
    fn from(err: crate::log::LogError) -> Self {
        use crate::log::LogError as E;
        let message = err.to_string();
        if disk_full(&err) {
            return insufficient_storage(message);
        }
        match err {
            E::UnknownTopic(_) => ApiError::new(StatusCode::NOT_FOUND, "unknown_topic", message),
            E::TopicExists(_) => ApiError::conflict("topic_exists", message),
            E::InvalidName { .. } => ApiError::bad_request("invalid_name", message),
            E::InvalidPartition { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_partition", message)
            }
            E::OffsetOutOfRange { .. } => ApiError::invalid_offset(message),
            E::InvalidConfig(_) => ApiError::bad_request("invalid_config", message),
            E::InvalidArgument(_) => ApiError::bad_request("invalid_argument", message),
            E::BatchTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message)
            }
            E::Corrupt { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt_log", message)
            }
            E::Io { .. } => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io_error", message),
            E::TooManyRecords { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_records", message)
            }
            E::Unsupported(_) => ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", message),
            E::Closed | E::Backend(_) => ApiError::unavailable(message),
        }
    }
}

impl From<crate::processor::EngineError> for ApiError {
    fn from(err: crate::processor::EngineError) -> Self {
        use crate::processor::EngineError as E;
        use crate::runtime::LoadError as L;
        let message = err.to_string();
        if disk_full(&err) {
            return insufficient_storage(message);
        }
        let unprocessable =
            |code| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message.clone());
        match err {
            E::Manifest(_) => ApiError::bad_request("invalid_manifest", message),
            E::Load(load) => match load {
                L::NotWasm | L::CoreModule | L::Invalid { .. } => {
                    ApiError::bad_request("invalid_component", message)
                }
                L::WrongWorld { .. } => unprocessable("wrong_world"),
                L::IncompatibleVersion { .. } => unprocessable("incompatible_contract"),
                L::MissingExport { .. } => unprocessable("missing_export"),
                L::WrongType { .. } => unprocessable("wrong_export_type"),
                L::UnsupportedImport { .. } => unprocessable("unsupported_import"),
                L::Inspect(_) => unprocessable("plugin_failed"),
            },
            E::Plugin(_) => unprocessable("plugin_failed"),
            E::NotFound(missing) => {
                use crate::processor::Missing as M;
                let code = match missing {
                    M::Plugin(_) => "unknown_plugin",
                    M::InputTopic(_) => "unknown_topic",
                    M::Version { .. } => "unknown_version",
                };
                ApiError::new(StatusCode::NOT_FOUND, code, message)
            }
            E::Conflict(m) => ApiError::conflict("conflict", m),
            E::Invalid(m) => ApiError::bad_request("invalid_request", m),
            E::IdReused(_) => ApiError::conflict("id_reused", message),
            E::Ownership(o) => o.into(),
            E::Log(log) => log.into(),
            E::Store(_) => ApiError::internal(message),
            E::Io(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io_error", message),
        }
    }
}

impl From<crate::processor::OwnershipError> for ApiError {
    fn from(err: crate::processor::OwnershipError) -> Self {
        use crate::processor::OwnershipError as O;
        let message = err.to_string();
        let owner = err.owner().map(str::to_owned);
        let error = match err {
            O::TopicOwned { .. } | O::CommandsTopic { .. } => {
                ApiError::conflict("topic_owned", message)
            }
            O::TopicInUse { .. } => ApiError::conflict("topic_in_use", message),
            O::NotAReplyTopic { .. } => ApiError::bad_request("invalid_reply_topic", message),
        };
        match owner {
            Some(owner) => error.with_owner(owner),
            None => error,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_wherever_it_comes_from() {
        let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let log = crate::log::LogError::Io {
            context: "appending".into(),
            source: full(),
        };
        let e = ApiError::from(log);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        );
        let e = ApiError::from(crate::processor::EngineError::Io(full()));
        assert_eq!(e.code, "insufficient_storage");
        let other = crate::log::LogError::Io {
            context: "appending".into(),
            source: std::io::Error::other("broken"),
        };
        assert_eq!(ApiError::from(other).code, "io_error");
    }

    #[test]
    fn body_has_stable_shape() {
        let e = ApiError::unknown_topic("orders");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["code"], "unknown_topic");
        assert!(
            e.body()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("orders"))
        );
        assert!(e.body().get("tracking_id").is_none());
        let e = e.with_tracking_id("t-1");
        assert_eq!(e.body()["tracking_id"], "t-1");
    }
}
