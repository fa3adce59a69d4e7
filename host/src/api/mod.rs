//! The HTTP API (axum): admin and data routes, JSON errors, OpenAPI.
