//! The `health` function: liveness without the database (the ALB and orchestrators may call it
//! often), and readiness that proves the database answers within a short timeout.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde_json::json;

use crate::clients::store::Database;
use crate::error::ApiError;

/// Readiness answers within this long even when the database hangs; the ALB's own health check
/// timeout is 5 s and callers expect an answer in under 2 s.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn router(db: Database) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/liveliness", get(alive))
        .route("/health/liveness", get(alive))
        .route("/health/readiness", get(readiness))
        .with_state(db)
}

/// `GET /health` alone: liveness without the database, for the chat and key-admin functions'
/// target-group health checks (`template.yaml`: `HealthCheckPath: /health`). A database outage
/// must not mark those functions unhealthy: they answer it themselves with 503 and
/// `Retry-After`.
pub fn liveness_router() -> Router {
    Router::new().route("/health", get(health))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy", "version": VERSION }))
}

async fn alive() -> Json<&'static str> {
    Json("I'm alive!")
}

async fn readiness(State(db): State<Database>) -> Response {
    match db.ping(READINESS_TIMEOUT).await {
        Ok(()) => Json(json!({
            "status": "healthy",
            "db": "ok",
            "version": VERSION,
        }))
        .into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "readiness: database unavailable");
            let error = ApiError::DatabaseUnavailable(reason.to_string());
            let mut body = json!({
                "status": "unhealthy",
                "db": "unavailable",
                "version": VERSION,
            });
            body["error"] = json!(error.body().error);
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
