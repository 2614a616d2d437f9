//! What every router shares: JSON 404 and 405, the body size limit, panic containment, and the
//! [`ApiJson`] extractor that turns bad bodies into OpenAI-shaped 400s and 413s.

use std::any::Any;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, StatusCode, Uri, header};
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;

/// The largest request body accepted: 1 MB, the ALB's limit for Lambda targets, so the local
/// gateway refuses exactly what production would.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Adds the fallbacks and layers every function's router needs. Call it once on a complete
/// router (fallbacks cannot be merged).
pub fn finish(router: Router) -> Router {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(refuse_oversized))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(request_id))
}

/// The ID of one request: in the `x-request-id` response header of every answer, in the logs,
/// and in the completion's `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub uuid::Uuid);

impl RequestId {
    pub fn simple(&self) -> uuid::fmt::Simple {
        self.0.simple()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Gives each request a fresh ID (a client's own `x-request-id` is not trusted to be unique).
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = RequestId(uuid::Uuid::new_v4());
    request.extensions_mut().insert(id);
    let mut response = next.run(request).await;
    if let Ok(value) = http::HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// An error in the shape of the API family `path` belongs to: Anthropic's for `/v1/messages`
/// and below, OpenAI's elsewhere.
fn in_shape(path: &str, error: ApiError) -> Response {
    if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        crate::anthropic::AnthropicError::from(error).into_response()
    } else {
        error.into_response()
    }
}

async fn route_not_found(method: Method, uri: Uri) -> Response {
    let error = ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    };
    in_shape(uri.path(), error)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let error = ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    };
    in_shape(uri.path(), error)
}

/// Refuses a declared body over the limit before any handler runs, on every path (as the ALB
/// does). Bodies without a length are cut off by the limit on extraction instead.
async fn refuse_oversized(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY_BYTES as u64 => in_shape(
            request.uri().path(),
            ApiError::PayloadTooLarge {
                limit_bytes: MAX_BODY_BYTES,
            },
        ),
        _ => next.run(request).await,
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}

/// A JSON request body. Unlike axum's `Json`, every failure is an [`ApiError`]: wrong content
/// type and malformed JSON are 400s that say what is wrong, an oversized body is a 413.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

pub(crate) fn is_json_content_type(value: &str) -> bool {
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
        if !content_type.as_deref().is_some_and(is_json_content_type) {
            return Err(ApiError::UnsupportedContentType {
                found: content_type,
            });
        }
        let bytes =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge {
                            limit_bytes: MAX_BODY_BYTES,
                        }
                    } else {
                        ApiError::invalid_request(format!(
                            "could not read the request body: {}",
                            rejection.body_text()
                        ))
                    }
                })?;
        if bytes.is_empty() {
            return Err(ApiError::InvalidJson("the body is empty".into()));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::InvalidJson(e.to_string()))
    }
}

/// A query string. Unlike axum's `Query`, a bad one is an OpenAI-shaped 400 that names the
/// problem.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| ApiError::invalid_request(format!("invalid query string: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/jsonp"));
        assert!(!is_json_content_type("multipart/form-data; boundary=x"));
    }
}
