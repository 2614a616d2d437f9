//! The API error model: one enum for every failure a client can see, mapped exhaustively to an
//! HTTP status and a body in the shape of the route's API family ([`ErrorShape`]): OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` or Anthropic's. [`Refusal`] renders every
//! error response.
//!
//! `type` follows LiteLLM's names where it has one (`token_not_found_in_db`, `expired_key`,
//! `budget_exceeded`) so scripts written for LiteLLM keep working; `code` is the HTTP status as a
//! string, as LiteLLM sends it. Messages never carry a raw key: anything that looks like one is
//! redacted before it is rendered.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rust_decimal::Decimal;
use serde::Serialize;

/// Which budget a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Key,
    User,
    Team,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Key => "key",
            BudgetScope::User => "user",
            BudgetScope::Team => "team",
        }
    }
}

/// The reservation a request could not get: its worst-case cost and what that assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    pub cost: Decimal,
    /// The `max_tokens` the worst case assumed (the request's own, or the default).
    pub max_tokens: u32,
    /// Whether the prompt and at least one output token would fit what is left, so that a
    /// lower `max_tokens` would be admitted.
    pub lower_max_tokens_fits: bool,
}

/// The budget refusal in numbers, the same in every error shape.
fn budget_message(
    scope: BudgetScope,
    spend: &Decimal,
    max_budget: &Decimal,
    worst_case: Option<&WorstCase>,
) -> String {
    let scope = scope.as_str();
    let Some(w) = worst_case else {
        return format!("{scope} budget exceeded: spend {spend} of max budget {max_budget}");
    };
    let left = (*max_budget - *spend).max(Decimal::ZERO).normalize();
    let advice = if w.lower_max_tokens_fits {
        "a lower `max_tokens` would fit"
    } else {
        "even the prompt alone does not fit"
    };
    format!(
        "{scope} budget exceeded: this request could cost up to {} (with max_tokens {}), and \
         {left} of the {scope}'s max budget {max_budget} is left (spend and requests in flight \
         {spend}); {advice}",
        w.cost.normalize(),
        w.max_tokens
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request that is well-formed JSON but asks for something invalid.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The body is not valid JSON, or not the JSON the route expects.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// The body is not declared as JSON.
    #[error("expected `Content-Type: application/json`, got {}", .found.as_deref().map_or("no content type".to_owned(), |f| format!("`{f}`")))]
    UnsupportedContentType { found: Option<String> },
    /// The PII guard refused the prompt; only entity types and counts are named, never the
    /// matched text.
    #[error("request blocked by the PII policy: the prompt contains {}", .entities.join(", "))]
    PiiBlocked { entities: Vec<String> },
    /// The PII guard withheld the model's answer (`"output": true` in the policy): only entity
    /// types and counts are named. The request is charged; the tokens were produced.
    #[error("answer withheld by the PII policy: it contains {}; the request is charged, as the model produced it", .entities.join(", "))]
    PiiBlockedOutput { entities: Vec<String> },
    /// The key's or team's Bedrock guardrail blocked the prompt or withheld the answer; its
    /// message is the guardrail's own (the security team's words). A withheld answer is charged.
    #[error("{}: {message}", if *.output { "answer withheld by the guardrail (the request is charged, as the model produced it)" } else { "request blocked by the guardrail" })]
    GuardrailBlocked { message: String, output: bool },

    #[error("no API key: send `Authorization: Bearer sk-...` or `x-api-key`")]
    MissingApiKey,
    #[error("invalid API key: the key was not found")]
    InvalidApiKey,
    #[error("the API key has expired")]
    ExpiredKey,
    #[error("the API key has been revoked")]
    InactiveKey,
    #[error("the API key is blocked")]
    BlockedKey,

    #[error("this key is not allowed to use model `{model}`")]
    ModelNotAllowed { model: String },
    /// A paid Bedrock feature the key's or its team's policy forbids (`allow_cache_1h`,
    /// `allowed_service_tiers`), or a model none of whose routes its `residency` allows:
    /// `setting` names the field, `param` the request field.
    #[error("{what} is not allowed by the {scope}'s `{setting}` setting")]
    FeatureNotAllowed {
        what: String,
        scope: &'static str,
        setting: &'static str,
        param: &'static str,
    },
    #[error("{}", budget_message(*.scope, .spend, .max_budget, .worst_case.as_ref()))]
    BudgetExceeded {
        scope: BudgetScope,
        /// Spent, plus what requests in flight have reserved.
        spend: Decimal,
        max_budget: Decimal,
        /// What this request would have reserved, when admission knew it.
        worst_case: Option<WorstCase>,
    },
    #[error("{0}")]
    PermissionDenied(String),

    /// The `model` a request names is not in the catalog.
    #[error("model `{model}` does not exist: GET /v1/models lists the models")]
    ModelNotFound { model: String },
    /// A resource (key, user, team) that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No route matches the path.
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    /// The object exists already (a key alias, a user or team ID, a caller-supplied key).
    #[error("{0}")]
    Conflict(String),
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body is larger than the {limit_bytes}-byte limit")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },

    /// The model provider answered with an error or an unusable response.
    #[error("upstream error: {0}")]
    Upstream(String),
    /// The model provider is throttling or unavailable.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    /// A buffered answer outgrew what its receiver takes (an ALB: 1 MB); sent as the last
    /// event of the stream it cuts.
    #[error(
        "the answer passed the 1 MB a response through the load balancer may carry and was cut \
         here; send `stream: true` requests to the gateway's streaming endpoint"
    )]
    ResponseTooLarge,
    /// `llmlite serve` is answering as many requests as it may at once
    /// (`LLMLITE_MAX_CONCURRENCY`, see [`crate::capacity`]); sent with `Retry-After`, before
    /// the request is authenticated, admitted or charged.
    #[error(
        "the gateway is at capacity, with the most requests in flight it serves at once ({limit}); retry shortly"
    )]
    AtCapacity { limit: usize },
    /// The detail (which server, which failure) is logged, never sent: clients get a generic
    /// message and `Retry-After`.
    #[error("database unavailable: the gateway cannot reach its database; retry shortly")]
    DatabaseUnavailable(String),
    /// A bug or an unexpected failure. The detail is logged, never sent to the client.
    #[error("internal server error")]
    Internal(String),
}

/// The OpenAI error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: String,
}

impl ApiError {
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::InvalidJson(_)
            | ApiError::UnsupportedContentType { .. }
            | ApiError::PiiBlocked { .. }
            | ApiError::PiiBlockedOutput { .. }
            | ApiError::GuardrailBlocked { .. } => StatusCode::BAD_REQUEST,
            ApiError::MissingApiKey
            | ApiError::InvalidApiKey
            | ApiError::ExpiredKey
            | ApiError::InactiveKey
            | ApiError::BlockedKey => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotAllowed { .. }
            | ApiError::FeatureNotAllowed { .. }
            | ApiError::BudgetExceeded { .. }
            | ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound { .. }
            | ApiError::NotFound(_)
            | ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) | ApiError::ResponseTooLarge => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamUnavailable(_)
            | ApiError::AtCapacity { .. }
            | ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error `type` clients switch on.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::InvalidJson(_)
            | ApiError::UnsupportedContentType { .. } => "invalid_request_error",
            ApiError::PiiBlocked { .. } => "pii_blocked",
            ApiError::PiiBlockedOutput { .. } => "pii_blocked_output",
            ApiError::GuardrailBlocked { .. } => "guardrail_blocked",
            ApiError::MissingApiKey => "missing_api_key",
            ApiError::InvalidApiKey => "token_not_found_in_db",
            ApiError::ExpiredKey => "expired_key",
            ApiError::InactiveKey => "inactive_key",
            ApiError::BlockedKey => "blocked_key",
            ApiError::ModelNotAllowed { .. } => "model_not_allowed",
            ApiError::FeatureNotAllowed { .. } => "feature_not_allowed",
            ApiError::BudgetExceeded { .. } => "budget_exceeded",
            ApiError::PermissionDenied(_) => "permission_error",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::NotFound(_) | ApiError::RouteNotFound { .. } => "not_found_error",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict_error",
            ApiError::PayloadTooLarge { .. } => "request_too_large",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::ResponseTooLarge => "response_too_large",
            ApiError::UpstreamUnavailable(_)
            | ApiError::AtCapacity { .. }
            | ApiError::DatabaseUnavailable(_) => "service_unavailable",
            ApiError::UpstreamTimeout(_) => "timeout",
            ApiError::Internal(_) => "internal_server_error",
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ModelNotAllowed { .. } | ApiError::ModelNotFound { .. } => Some("model"),
            ApiError::FeatureNotAllowed { param, .. } => Some(param),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: redact_keys(&self.to_string()),
                kind: self.kind(),
                param: self.param().map(str::to_owned),
                code: self.status().as_u16().to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Refusal::from(self).into_response()
    }
}

/// The API family whose error shape a response takes, chosen by the route's adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorShape {
    /// OpenAI's `{"error": {"message", "type", "param", "code"}}`.
    #[default]
    OpenAi,
    /// Anthropic's `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
    /// The Responses API: OpenAI's body for a refused request; in a stream, its own `error`
    /// and `response.failed` events (which its adapter writes).
    Responses,
}

impl ErrorShape {
    /// The shape of the API family `path` belongs to: Anthropic's for `/v1/messages` and below,
    /// OpenAI's elsewhere (for the errors no adapter sees: 404, 405, 413, keys in URLs).
    pub fn for_path(path: &str) -> ErrorShape {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            ErrorShape::Anthropic
        } else {
            ErrorShape::OpenAi
        }
    }

    /// The body of `error` in this shape, for a response or a stream's error event.
    pub fn body(self, error: &ApiError) -> serde_json::Value {
        match self {
            ErrorShape::OpenAi | ErrorShape::Responses => {
                serde_json::to_value(error.body()).unwrap_or_default()
            }
            ErrorShape::Anthropic => serde_json::json!({
                "type": "error",
                "error": {
                    "type": anthropic_type(error.status()),
                    "message": redact_keys(&error.to_string()),
                },
            }),
        }
    }
}

/// Anthropic's error `type` for a status.
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// A refused or failed request as its client sees it: the error, the headers it carries (a
/// 429's rate limits), and the shape its body takes. Every error response is rendered here.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    /// Headers the response carries (a 429's rate limits); boxed, as most refusals have none.
    pub headers: Option<Box<HeaderMap>>,
    pub shape: ErrorShape,
}

impl Refusal {
    /// The same refusal, rendered in `shape`.
    pub fn in_shape(mut self, shape: ErrorShape) -> Refusal {
        self.shape = shape;
        self
    }
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            headers: None,
            shape: ErrorShape::OpenAi,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal {
            error,
            headers,
            shape,
        } = self;
        let status = error.status();
        if status.is_server_error() {
            // The detail of an internal error is for the operator only.
            let detail = match &error {
                ApiError::Internal(detail) | ApiError::DatabaseUnavailable(detail) => {
                    detail.as_str()
                }
                _ => "",
            };
            tracing::error!(error = %redact_keys(&error.to_string()), detail = %redact_keys(detail), status = status.as_u16(), "request failed");
        }
        let mut response = (status, Json(shape.body(&error))).into_response();
        let retry_after = match error {
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(retry_after_secs),
            // A database failover takes a minute or two; the client should come back.
            ApiError::DatabaseUnavailable(_) => Some(DATABASE_RETRY_AFTER_SECS),
            // A place frees as soon as any answer in flight ends.
            ApiError::AtCapacity { .. } => Some(AT_CAPACITY_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(headers) = headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

/// What a client refused because the database is away is told to wait.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

/// What a client refused at `serve`'s concurrency ceiling is told to wait.
pub const AT_CAPACITY_RETRY_AFTER_SECS: u64 = 1;

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // Input PostgreSQL cannot take (a NUL in text, a number out of range) is the client's
        // error, not ours.
        let code = err
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        match code.as_deref() {
            Some(c) if c.starts_with("22") => {
                return ApiError::invalid_request(
                    "a value in the request is not valid text or is out of range",
                );
            }
            Some("23514") => {
                return ApiError::invalid_request("a value in the request is out of range");
            }
            Some("23503") => {
                return ApiError::NotFound(
                    "a user or team the request refers to does not exist".into(),
                );
            }
            // Connection exceptions, the server shutting down or starting up, too many
            // connections: the database is away, not broken.
            Some(c) if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => {
                return ApiError::DatabaseUnavailable(err.to_string());
            }
            // Transaction rollback (a deadlock victim, a serialisation failure): nothing was
            // written, and the same request a moment later succeeds. Retryable, not a 500.
            Some(c) if c.starts_with("40") => {
                return ApiError::DatabaseUnavailable(err.to_string());
            }
            _ => {}
        }
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => ApiError::DatabaseUnavailable(err.to_string()),
            other => ApiError::Internal(format!("database: {other}")),
        }
    }
}

/// Replaces anything shaped like an API key (`sk-` followed by key characters) with `sk-...`, so
/// a key pasted into the wrong field is never echoed back or logged.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("sk-") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 3..];
        let key_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        let starts_word = !out
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if starts_word && key_len >= 4 {
            out.push_str("sk-...");
        } else {
            out.push_str(&rest[pos..pos + 3 + key_len]);
        }
        rest = &after[key_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted_from_messages() {
        assert_eq!(
            redact_keys("bad value \"sk-abcDEF123_-x\" here"),
            "bad value \"sk-...\" here"
        );
        assert_eq!(redact_keys("ask-me"), "ask-me");
        assert_eq!(redact_keys("task-specific"), "task-specific");
        assert_eq!(redact_keys("sk-"), "sk-");
        assert_eq!(redact_keys("a sk-1234 b sk-5678"), "a sk-... b sk-...");
    }

    #[test]
    fn errors_have_anthropics_types() {
        let cases = [
            (ApiError::MissingApiKey, "authentication_error"),
            (
                ApiError::ModelNotFound { model: "x".into() },
                "not_found_error",
            ),
            (ApiError::invalid_request("bad"), "invalid_request_error"),
            (
                ApiError::RateLimited {
                    message: "slow down".into(),
                    retry_after_secs: 3,
                },
                "rate_limit_error",
            ),
            (
                ApiError::UpstreamUnavailable("busy".into()),
                "overloaded_error",
            ),
            (ApiError::Internal("x".into()), "api_error"),
            (
                ApiError::PayloadTooLarge { limit_bytes: 1 },
                "request_too_large",
            ),
            (
                ApiError::ModelNotAllowed { model: "x".into() },
                "permission_error",
            ),
        ];
        for (error, kind) in cases {
            let body = ErrorShape::Anthropic.body(&error);
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind, "{error:?}");
            let openai = ErrorShape::OpenAi.body(&error);
            assert_eq!(openai["error"]["type"], error.kind(), "{error:?}");
        }
    }

    #[test]
    fn rendered_messages_never_contain_a_key() {
        let err = ApiError::InvalidJson("invalid type: string \"sk-live-secret-123\"".into());
        let body = serde_json::to_string(&err.body()).unwrap_or_default();
        assert!(!body.contains("secret-123"), "{body}");
        assert!(body.contains("sk-..."), "{body}");
    }
}
