//! The HTTP server loop and the limits a slow or hostile client must not get
//! around (`axum::serve` has neither read timeouts nor a bounded drain).
//!
//! - A request's head must arrive within `header_timeout`, which is also
//!   how long an idle keep-alive connection stays open; otherwise the
//!   connection is closed. Its body must arrive within `body_timeout` of
//!   the head, else `408 request_timeout` ([`guard_request`]).
//! - A URI longer than [`MAX_URI_BYTES`] is `414 uri_too_long`, a head with
//!   more than [`MAX_HEADERS`] headers or [`MAX_HEADER_BYTES`] bytes of them
//!   `431 headers_too_large`, as JSON like every error. The HTTP parser's
//!   own limits sit far above these ([`PARSER_BUFFER_BYTES`]); only a
//!   request beyond them, or one that is not HTTP at all, gets the parser's
//!   bare status line before the connection is closed.
//! - Shutdown stops accepting, lets every connection finish the requests
//!   it is serving, and after `drain_timeout` closes whatever is left.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::{ApiError, AppState};

/// Longest URI (path and query) a request may have.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values one request may carry.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// The HTTP parser's buffer: a head must fit in it (well above the limits
/// checked here, so those answer in JSON).
const PARSER_BUFFER_BYTES: usize = 1 << 20;
/// Headers the HTTP parser accepts before it refuses on its own.
const PARSER_MAX_HEADERS: usize = 1_000;

/// Why a request body stopped: it did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Serve `app` on `listener` until `stop` resolves, then drain for at most
/// `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    drain_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(PARSER_BUFFER_BYTES)
        .max_headers(PARSER_MAX_HEADERS);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "{open} connection(s) did not finish within {drain_timeout:?}; closing them"
        );
    }
}

/// The head limits, and the body deadline: the body must arrive within
/// `body_timeout` of the head.
pub(crate) async fn guard_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(e) = check_head(&request) {
        return e.into_response();
    }
    let deadline = tokio::time::Instant::now() + state.config.body_timeout;
    let timeout = state.config.body_timeout;
    let request = request.map(|body| {
        let frames = body.into_data_stream();
        let bounded = futures::stream::unfold(Some(frames), move |frames| async move {
            let mut frames = frames?;
            match tokio::time::timeout_at(deadline, frames.next()).await {
                Ok(Some(frame)) => Some((frame.map_err(axum::BoxError::from), Some(frames))),
                Ok(None) => None,
                Err(_) => Some((Err(BodyTimedOut(timeout).into()), None)),
            }
        });
        Body::from_stream(bounded)
    });
    next.run(request).await
}

fn check_head(request: &Request) -> Result<(), ApiError> {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the URI has {uri} bytes; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request has {} headers of {bytes} bytes; at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes are accepted",
                headers.len()
            ),
        ));
    }
    Ok(())
}
