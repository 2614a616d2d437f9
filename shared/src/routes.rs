//! The routers, one per Lambda function, and [`all_routes`], which dispatches by path exactly as
//! the ALB's listener rules do, so the local gateway and production answer every path alike.

use axum::Router;
use axum::extract::Request;
use tower::ServiceExt;

use axum::routing::{get, post};

use crate::adapters::anthropic::{self, Messages};
use crate::adapters::chat::ChatCompletions;
use crate::adapters::embeddings::Embeddings;
use crate::adapters::models;
use crate::adapters::responses::Responses;
use crate::clients::store::Database;
use crate::pipeline::handler;
use crate::state::AppState;
use crate::{admin, console, device, health, http};

/// The functions behind the ALB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Chat,
    KeyAdmin,
    Health,
}

/// The ALB listener rules' path patterns (`*` matches any characters, case-sensitive), in rule
/// priority order. `template.yaml` declares the same patterns (a test in `tests/tests/router.rs`
/// compares them).
pub const ALB_PATH_PATTERNS: &[(&str, Function)] = &[
    ("/v1/*", Function::Chat),
    ("/chat/*", Function::Chat),
    ("/models", Function::Chat),
    ("/models/*", Function::Chat),
    ("/embeddings", Function::Chat),
    ("/responses", Function::Chat),
    ("/key/*", Function::KeyAdmin),
    ("/user/*", Function::KeyAdmin),
    ("/team/*", Function::KeyAdmin),
    ("/spend/*", Function::KeyAdmin),
    ("/global/*", Function::KeyAdmin),
    ("/openapi.json", Function::KeyAdmin),
    ("/ui", Function::KeyAdmin),
    ("/ui/*", Function::KeyAdmin),
    ("/oauth/*", Function::KeyAdmin),
    ("/scim/*", Function::KeyAdmin),
    ("/health*", Function::Health),
];

impl Function {
    /// The function the ALB sends `path` to, or `None` for its default action (a JSON 404).
    pub fn for_path(path: &str) -> Option<Function> {
        ALB_PATH_PATTERNS
            .iter()
            .find(|(pattern, _)| alb_pattern_matches(pattern, path))
            .map(|(_, function)| *function)
    }
}

/// ALB path-pattern matching for the patterns we use: a literal prefix followed by `*`.
fn alb_pattern_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == pattern,
    }
}

/// The `chat` function: `/v1/*`, `/chat/*`, `/models`, `/embeddings`, `/responses`; and `GET /health`, which only its
/// target group's health checks reach (the ALB sends `/health*` to the health function).
pub fn chat_routes(state: AppState) -> Router {
    let router = Router::new()
        .route("/v1/chat/completions", post(handler::<ChatCompletions>))
        .route("/chat/completions", post(handler::<ChatCompletions>))
        .route("/v1/messages", post(handler::<Messages>))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/embeddings", post(handler::<Embeddings>))
        .route("/embeddings", post(handler::<Embeddings>))
        .route("/v1/responses", post(handler::<Responses>))
        .route("/responses", post(handler::<Responses>))
        .route("/v1/models", get(models::list_models))
        .route("/models", get(models::list_models))
        .route("/v1/models/{model}", get(models::get_model))
        .route("/models/{model}", get(models::get_model))
        .with_state(state);
    http::finish(router.merge(health::liveness_router()))
}

/// The `key-admin` function: `/key/*`, `/user/*`, `/team/*`, `/spend/*`, `/global/*`, the
/// OpenAPI document at `/openapi.json`, the admin console under `/ui`, the device sign-in of
/// `llmlite login` under `/oauth`, SCIM deactivation under `/scim`, and `GET /health` for its
/// target group's health checks.
pub fn admin_routes(state: AppState) -> Router {
    http::finish(
        admin::router(state.clone())
            .merge(device::router(state.clone()))
            .merge(console::router(state))
            .merge(health::liveness_router()),
    )
}

/// The `health` function: `/health*`. It needs only the database.
pub fn health_routes(db: Database) -> Router {
    http::finish(health::router(db))
}

/// Every route, dispatched to each function's own router by the ALB's rules.
pub fn all_routes(state: AppState) -> Router {
    let chat = chat_routes(state.clone());
    let admin = admin_routes(state.clone());
    let health = health_routes(state.db.clone());
    let unrouted = http::finish(Router::new());
    Router::new().fallback(move |request: Request| {
        let target = match Function::for_path(request.uri().path()) {
            Some(Function::Chat) => chat.clone(),
            Some(Function::KeyAdmin) => admin.clone(),
            Some(Function::Health) => health.clone(),
            None => unrouted.clone(),
        };
        async move {
            match target.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_where_the_alb_sends_them() {
        let cases = [
            ("/v1/chat/completions", Some(Function::Chat)),
            ("/v1/models", Some(Function::Chat)),
            ("/chat/completions", Some(Function::Chat)),
            ("/models", Some(Function::Chat)),
            ("/models/claude-sonnet-4-5", Some(Function::Chat)),
            ("/modelsx", None),
            ("/embeddings", Some(Function::Chat)),
            ("/v1/embeddings", Some(Function::Chat)),
            ("/embeddings/x", None),
            ("/responses", Some(Function::Chat)),
            ("/v1/responses", Some(Function::Chat)),
            ("/responsesx", None),
            ("/key/generate", Some(Function::KeyAdmin)),
            ("/user/new", Some(Function::KeyAdmin)),
            ("/team/info", Some(Function::KeyAdmin)),
            ("/spend/logs", Some(Function::KeyAdmin)),
            ("/global/spend/report", Some(Function::KeyAdmin)),
            ("/health", Some(Function::Health)),
            ("/health/readiness", Some(Function::Health)),
            ("/healthz", Some(Function::Health)),
            ("/ui", Some(Function::KeyAdmin)),
            ("/ui/keys", Some(Function::KeyAdmin)),
            ("/uix", None),
            ("/v1", None),
            ("/V1/models", None),
            ("/", None),
            ("/keys", None),
        ];
        for (path, expected) in cases {
            assert_eq!(Function::for_path(path), expected, "{path}");
        }
    }
}
