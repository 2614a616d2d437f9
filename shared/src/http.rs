//! What every router shares: JSON 404 and 405, the body size limit, panic containment, and the
//! [`ApiJson`] extractor that turns bad bodies into OpenAI-shaped 400s and 413s.

use std::any::Any;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::{ApiError, ErrorShape, Refusal, redact_keys};

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
        .layer(middleware::from_fn(refuse_keys_in_urls))
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

/// Gives each request a fresh ID (a client's own `x-request-id` is not trusted to be unique),
/// and every response the security headers.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = RequestId(uuid::Uuid::new_v4());
    request.extensions_mut().insert(id);
    let mut response = next.run(request).await;
    stamp(&mut response, id);
    response
}

/// A refusal made before any function's router sees the request (`serve`'s concurrency
/// ceiling): in the shape of `path`'s API family, with a request ID and every answer's headers.
pub fn refuse(path: &str, error: ApiError) -> Response {
    let mut response = in_shape(path, error);
    stamp(&mut response, RequestId(uuid::Uuid::new_v4()));
    response
}

/// The headers every answer carries: its request ID, and the security headers.
fn stamp(response: &mut Response, id: RequestId) {
    let headers = response.headers_mut();
    if let Ok(value) = http::HeaderValue::from_str(&id.to_string()) {
        headers.insert("x-request-id", value);
    }
    // Every answer: browsers keep to HTTPS for two years (they ignore the header on plain
    // HTTP, so `llmlite dev` is unaffected), and nothing is sniffed into another type.
    headers
        .entry(http::header::STRICT_TRANSPORT_SECURITY)
        .or_insert(http::HeaderValue::from_static(HSTS));
    headers
        .entry(http::header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(http::HeaderValue::from_static("nosniff"));
}

/// The `Strict-Transport-Security` value of every response (the ALB's HTTPS listener sends the
/// same, `template.yaml`).
pub const HSTS: &str = "max-age=63072000; includeSubDomains";

/// An error in the shape of the API family `path` belongs to.
fn in_shape(path: &str, error: ApiError) -> Response {
    Refusal::from(error)
        .in_shape(ErrorShape::for_path(path))
        .into_response()
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

/// Refuses a request whose URL carries a raw key, in its path or its query string, on every
/// route: URLs end up in access logs (the ALB's, API Gateway's, a proxy's), bodies and headers do
/// not. The key is not echoed; the message says where it goes instead. A key's SHA-256 hash (64
/// hex digits) names a key just as well and is accepted wherever a key is.
async fn refuse_keys_in_urls(request: Request, next: Next) -> Response {
    match key_in_url(request.uri()) {
        None => next.run(request).await,
        Some(param) => {
            let message = "a raw API key must not be sent in a URL, where access logs keep it: \
                           send it in the request body (`POST /key/info` and \
                           `POST /key/regenerate` take `{\"key\": ...}`), or name the key by its \
                           SHA-256 hash (64 hex digits) in the URL instead; then regenerate this \
                           key, as it may have been logged";
            let error = match param {
                Some(param) => ApiError::invalid_param(&param, message),
                None => ApiError::invalid_request(message),
            };
            in_shape(request.uri().path(), error)
        }
    }
}

/// Whether `uri` carries something shaped like a raw key (what [`redact_keys`] would hide),
/// after percent-decoding: `Some(Some(name))` for a query parameter (its name), `Some(None)` for
/// the path or an unparsable query.
fn key_in_url(uri: &Uri) -> Option<Option<String>> {
    let looks_like_key = |text: &str| redact_keys(text) != text;
    let path = percent_decode(uri.path());
    if looks_like_key(&path) {
        return Some(None);
    }
    let query = uri.query()?;
    match serde_urlencoded::from_str::<Vec<(String, String)>>(query) {
        Ok(pairs) => pairs.into_iter().find_map(|(name, value)| {
            if looks_like_key(&name) {
                Some(None)
            } else if looks_like_key(&value) {
                Some(Some(name))
            } else {
                None
            }
        }),
        Err(_) => looks_like_key(&percent_decode(query)).then_some(None),
    }
}

/// `%XX` sequences decoded (bytes that are not UTF-8 are replaced); anything else kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await;
        json_body(&headers, body).map(ApiJson)
    }
}

/// Reads a request body as JSON of type `T`: a body not declared as JSON, empty or malformed is
/// a 400 that says what is wrong, one over the limit a 413.
pub fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    if !content_type.as_deref().is_some_and(is_json_content_type) {
        return Err(ApiError::UnsupportedContentType {
            found: content_type,
        });
    }
    let bytes = body.map_err(|rejection| {
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
    serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Whether every number in `value` reads back once stored in PostgreSQL's `jsonb`. `jsonb`
/// keeps a number as `numeric` and writes it back without an exponent; a float near `f64::MAX`
/// (`-1.7976931348623155e308`) then no longer parses ("number out of range"), so a row holding
/// one could not be read again: the key or spend row it is on would answer 500 on every read.
pub fn numbers_read_back(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.as_f64().is_none_or(|x| x.abs() < 1e300),
        serde_json::Value::Array(items) => items.iter().all(numbers_read_back),
        serde_json::Value::Object(map) => map.values().all(numbers_read_back),
        _ => true,
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
    fn raw_keys_in_urls_are_found_and_hashes_are_not() {
        let key = "sk-AbCdEf0123456789xyz";
        let hash = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b";
        let cases: &[(String, Option<Option<&str>>)] = &[
            (format!("/key/info?key={key}"), Some(Some("key"))),
            (format!("/key/info?key={hash}"), None),
            (
                format!("/spend/logs?user_id=u1&api_key={key}"),
                Some(Some("api_key")),
            ),
            // Percent-encoded, in the path, or as a parameter's name.
            (
                "/key/info?key=%73k-AbCdEf0123456789xyz".to_owned(),
                Some(Some("key")),
            ),
            (format!("/key/{key}/regenerate"), Some(None)),
            (format!("/key/{hash}/regenerate"), None),
            (format!("/v1/models?{key}=1"), Some(None)),
            ("/v1/models".to_owned(), None),
            ("/key/list?key_alias=my-sk-alias&page=1".to_owned(), None),
            ("/ui/keys?q=%E2%82%AC%FF%00".to_owned(), None),
        ];
        for (url, expected) in cases {
            let uri: Uri = url.parse().unwrap();
            let found = key_in_url(&uri);
            assert_eq!(found.as_ref().map(|p| p.as_deref()), *expected, "{url}");
        }
    }

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
