//! Plugin routes: deploy (JSON + base64, or the raw component with the
//! manifest in a header or query), list, inspect, pause, resume, reset,
//! rollback, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, blocking, json_body, names, whole};
use crate::processor::ResetTo;

/// The kinds of plugin, by world.
pub const KINDS: [&str; 3] = ["enricher", "projection", "command-handler"];

/// A WebAssembly binary starts with `\0asm` and a 4-byte version/layer;
/// components use layer 1, core modules version 1 layer 0.
fn check_component(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ApiError::bad_request(
            "invalid_component",
            "the component is not a WebAssembly binary",
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(ApiError::bad_request(
            "invalid_component",
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)",
        ));
    }
    Ok(())
}

/// Check the parts of a manifest the API owns (name, kind); the engine
/// validates the rest against the component.
fn check_manifest(manifest: &Value, name_in_path: Option<&str>) -> Result<String, ApiError> {
    let obj = manifest.as_object().ok_or_else(|| {
        ApiError::bad_request("invalid_manifest", "the manifest must be a JSON object")
    })?;
    let name = match (obj.get("name"), name_in_path) {
        (Some(Value::String(n)), Some(p)) if n != p => {
            return Err(ApiError::bad_request(
                "invalid_manifest",
                format!("manifest name {n:?} differs from the name in the path {p:?}"),
            ));
        }
        (Some(Value::String(n)), _) => n.clone(),
        (None, Some(p)) => p.to_owned(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_manifest",
                "the manifest needs a string 'name'",
            ));
        }
    };
    names::validate("plugin", &name)?;
    match obj.get("kind").and_then(Value::as_str) {
        Some(kind) if KINDS.contains(&kind) => Ok(name),
        other => Err(ApiError::bad_request(
            "invalid_manifest",
            format!("manifest 'kind' must be one of {KINDS:?}, not {other:?}"),
        )),
    }
}

async fn deploy(
    state: AppState,
    mut manifest: Value,
    component: Vec<u8>,
    name_in_path: Option<&str>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = check_manifest(&manifest, name_in_path)?;
    manifest["name"] = json!(name);
    check_component(&component)?;
    let engine = state.engine.clone();
    let status = blocking(move || engine.deploy(manifest, &component)).await?;
    Ok((StatusCode::CREATED, Json(json!(status))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    manifest: Value,
    component_base64: String,
}

pub(super) async fn deploy_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: DeployBody = json_body(&headers, body)?;
    let component = B64.decode(req.component_base64.as_bytes()).map_err(|e| {
        ApiError::bad_request(
            "invalid_component",
            format!("component_base64 is not valid base64: {e}"),
        )
    })?;
    deploy(state, req.manifest, component, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployQuery {
    manifest: Option<String>,
}

pub(super) async fn deploy_raw(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DeployQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(name) = path?;
    names::validate("plugin", &name)?;
    let Query(query) = query?;
    let text = match (headers.get("weir-manifest"), query.manifest) {
        (Some(h), None) => h
            .to_str()
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_manifest",
                    "the Weir-Manifest header must be ASCII JSON",
                )
            })?
            .to_owned(),
        (None, Some(q)) => q,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_manifest",
                "give the manifest in the header or the query, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_manifest",
                "PUT /plugins/{name} needs the manifest JSON in a Weir-Manifest header or a ?manifest= query",
            ));
        }
    };
    let manifest: Value = serde_json::from_str(&text).map_err(ApiError::malformed_json)?;
    let body = body?;
    deploy(state, manifest, body.to_vec(), Some(&name)).await
}

pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Statuses read the store: off the async worker threads.
    let engine = state.engine.clone();
    let plugins = blocking(move || Ok::<_, ApiError>(engine.list())).await?;
    Ok(Json(json!({ "plugins": plugins })))
}

fn plugin_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path?;
    names::validate("plugin", &name)?;
    Ok(name)
}

pub(super) async fn inspect(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(path)?;
    let engine = state.engine.clone();
    Ok(Json(json!(blocking(move || engine.inspect(&name)).await?)))
}

pub(super) async fn pause(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(path)?;
    let engine = state.engine.clone();
    Ok(Json(json!(blocking(move || engine.pause(&name)).await?)))
}

pub(super) async fn resume(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(path)?;
    let engine = state.engine.clone();
    Ok(Json(json!(blocking(move || engine.resume(&name)).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    /// `beginning` or `end`.
    to: Option<String>,
    #[serde(default, deserialize_with = "whole::option")]
    offset: Option<u64>,
    #[serde(default, deserialize_with = "whole::option")]
    timestamp: Option<i64>,
    /// Ponds: keep the state instead of emptying it.
    #[serde(default)]
    keep_state: bool,
}

fn reset_target(body: &ResetBody) -> Result<ResetTo, ApiError> {
    match (body.to.as_deref(), body.offset, body.timestamp) {
        (Some("beginning" | "earliest"), None, None) => Ok(ResetTo::Beginning),
        (Some("end" | "latest"), None, None) => Ok(ResetTo::End),
        (None, Some(o), None) => Ok(ResetTo::Offset(o)),
        (None, None, Some(t)) => Ok(ResetTo::Timestamp(t)),
        _ => Err(ApiError::bad_request(
            "invalid_reset",
            "give exactly one of {\"to\": \"beginning\"|\"end\"}, {\"offset\": n}, {\"timestamp\": ms}",
        )),
    }
}

pub(super) async fn reset(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(path)?;
    let body: ResetBody = json_body(&headers, body)?;
    let to = reset_target(&body)?;
    let engine = state.engine.clone();
    Ok(Json(json!(
        blocking(move || engine.reset(&name, to, body.keep_state)).await?
    )))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default, deserialize_with = "whole::option")]
    version: Option<u32>,
}

pub(super) async fn rollback(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(path)?;
    let body = body?;
    // The body is optional: none (or blanks) rolls back to the version before.
    let req: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        json_body(&headers, Ok(body))?
    };
    let engine = state.engine.clone();
    Ok(Json(json!(
        blocking(move || engine.rollback(&name, req.version)).await?
    )))
}

pub(super) async fn rebuild(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(path)?;
    let engine = state.engine.clone();
    Ok(Json(json!(blocking(move || engine.rebuild(&name)).await?)))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = plugin_name(path)?;
    let (engine, n) = (state.engine.clone(), name.clone());
    blocking(move || engine.delete(&n)).await?;
    Ok(Json(json!({ "deleted": name })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn components_are_sniffed() {
        assert_eq!(check_component(b"").unwrap_err().code, "invalid_component");
        assert_eq!(
            check_component(b"hello world").unwrap_err().code,
            "invalid_component"
        );
        assert!(
            check_component(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .message
                .contains("core")
        );
        assert!(check_component(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn manifests_are_checked() {
        let m = json!({"name": "up", "kind": "enricher"});
        assert_eq!(check_manifest(&m, None).unwrap(), "up");
        assert_eq!(check_manifest(&m, Some("up")).unwrap(), "up");
        assert!(check_manifest(&m, Some("other")).is_err());
        assert_eq!(
            check_manifest(&json!({"kind": "projection"}), Some("p")).unwrap(),
            "p"
        );
        assert!(check_manifest(&json!({"name": "../x", "kind": "enricher"}), None).is_err());
        assert!(check_manifest(&json!({"name": "x", "kind": "river"}), None).is_err());
        assert!(check_manifest(&json!([1]), None).is_err());
    }

    #[test]
    fn reset_targets() {
        let b = |to: Option<&str>, offset, timestamp| ResetBody {
            to: to.map(str::to_owned),
            offset,
            timestamp,
            keep_state: false,
        };
        assert_eq!(
            reset_target(&b(Some("beginning"), None, None)).unwrap(),
            ResetTo::Beginning
        );
        assert_eq!(
            reset_target(&b(None, Some(4), None)).unwrap(),
            ResetTo::Offset(4)
        );
        assert_eq!(
            reset_target(&b(None, None, Some(9))).unwrap(),
            ResetTo::Timestamp(9)
        );
        assert!(reset_target(&b(Some("beginning"), Some(1), None)).is_err());
        assert!(reset_target(&b(None, None, None)).is_err());
    }
}
