//! Anthropic's Messages API, for Claude Code and the Anthropic SDKs: `POST /v1/messages` and
//! `POST /v1/messages/count_tokens`. The body goes to Bedrock's `InvokeModel` (or
//! `InvokeModelWithResponseStream`) nearly as it came, with `anthropic_version` added, so
//! Anthropic-native features pass through without a lossy translation. The request takes the
//! same path as a chat completion: admission, the PII guard, retries and fallbacks under the
//! invocation's deadline, exact cost from Bedrock's usage, settlement and the audit record, with
//! `call_type` `anthropic_messages`. Errors have Anthropic's shape.

mod stream;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{CountTokensInput, InvokeModelTokensRequest};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::admission::{self, Refusal};
use crate::auth;
use crate::bedrock::{self, BedrockFailure, Candidate};
use crate::catalog::{ModelAlias, ModelEntry, TokenUsage};
use crate::chat::invocation::Invocation;
use crate::chat::record::{CallType, Client, RequestRecord, Status};
use crate::chat::{self, MAX_USER_CHARS, clean};
use crate::error::{ApiError, redact_keys};
use crate::http::{MAX_BODY_BYTES, RequestId, is_json_content_type};
use crate::settlement::Guard;
use crate::state::AppState;

/// The `anthropic_version` Bedrock takes.
const BEDROCK_VERSION: &str = "bedrock-2023-05-31";

/// The request fields Bedrock's Anthropic body takes; the rest (`model` and `stream`, which the
/// operation carries, `metadata`, and fields Bedrock does not know) stay here.
const PASSED: &[&str] = &[
    "system",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "thinking",
];

/// An error in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`, with the
/// status and headers (`retry-after`, rate limits) the OpenAI routes give.
pub struct AnthropicError(Refusal);

impl From<Refusal> for AnthropicError {
    fn from(refusal: Refusal) -> Self {
        AnthropicError(refusal)
    }
}

impl From<ApiError> for AnthropicError {
    fn from(error: ApiError) -> Self {
        AnthropicError(error.into())
    }
}

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
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

/// The body of an Anthropic error, for a response or a stream's `error` event.
pub fn error_body(error: &ApiError) -> Value {
    json!({
        "type": "error",
        "error": {
            "type": error_type(error.status()),
            "message": redact_keys(&error.to_string()),
        },
    })
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let body = error_body(&self.0.error);
        // The OpenAI rendering's status and headers (and its log line), with this body.
        let (mut parts, _) = self.0.into_response().into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Response::from_parts(parts, Body::from(body.to_string()))
    }
}

/// The request, as far as the gateway reads it; the rest goes to Bedrock as it came.
struct Parsed {
    model: String,
    max_tokens: u32,
    stream: bool,
    user_id: Option<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, message.into())
}

/// Reads and checks what the gateway needs before anything is taken.
fn parse(body: &Map<String, Value>, count_only: bool) -> Result<Parsed, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => return Err(invalid("model", "`model` is required: a model name")),
    };
    let max_tokens = match body.get("max_tokens") {
        None if count_only => 1,
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid("max_tokens", "`max_tokens` must be a positive integer"))?,
        _ => {
            return Err(invalid(
                "max_tokens",
                "`max_tokens` is required: a positive integer",
            ));
        }
    };
    match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => {}
        _ => {
            return Err(invalid(
                "messages",
                "`messages` is required: a non-empty list",
            ));
        }
    }
    if let Some(system) = body.get("system")
        && !matches!(system, Value::String(_) | Value::Array(_))
    {
        return Err(invalid(
            "system",
            "`system` must be a string or a list of blocks",
        ));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(invalid("stream", "`stream` must be a boolean")),
    };
    let user_id = match body.get("metadata").and_then(|m| m.get("user_id")) {
        None | Some(Value::Null) => None,
        Some(Value::String(user)) if !clean(user) => {
            return Err(invalid(
                "metadata.user_id",
                "`metadata.user_id` must not contain control characters",
            ));
        }
        Some(Value::String(user)) if user.chars().count() > MAX_USER_CHARS => {
            return Err(invalid(
                "metadata.user_id",
                "`metadata.user_id` must be at most 256 characters",
            ));
        }
        Some(Value::String(user)) => Some(user.clone()),
        Some(_) => {
            return Err(invalid(
                "metadata.user_id",
                "`metadata.user_id` must be a string",
            ));
        }
    };
    Ok(Parsed {
        model,
        max_tokens,
        stream,
        user_id,
    })
}

/// The `anthropic-beta` values a request carries (the header may repeat and list several).
fn requested_betas(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect()
}

/// Logs a beta the catalog does not pass, once per value and process.
fn note_dropped(beta: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    let first = seen
        .lock()
        .map(|mut s| s.len() < 1024 && s.insert(beta.to_owned()))
        .unwrap_or(false);
    if first {
        tracing::warn!(
            beta = %beta.chars().take(100).collect::<String>(),
            "anthropic-beta not listed for the model in the catalog: dropped"
        );
    }
}

/// One model the request may be served by, with the body Bedrock takes for it.
struct Planned {
    model: Arc<ModelEntry>,
    body: Bytes,
    max_tokens: u32,
    /// The betas passed, and those dropped.
    betas: Vec<String>,
    dropped: Vec<String>,
}

impl Candidate for Planned {
    fn model(&self) -> &Arc<ModelEntry> {
        &self.model
    }

    fn max_tokens(&self) -> u32 {
        self.max_tokens
    }
}

/// Bedrock's body for `model`: the passed fields, `anthropic_version`, and the betas the
/// catalog lists for it.
fn plan_one(
    request: &Map<String, Value>,
    model: &Arc<ModelEntry>,
    max_tokens: u32,
    betas: &[String],
) -> Planned {
    let (kept, dropped): (Vec<String>, Vec<String>) = betas
        .iter()
        .cloned()
        .partition(|b| model.anthropic_betas.contains(b));
    let mut body = Map::new();
    body.insert("anthropic_version".into(), json!(BEDROCK_VERSION));
    for field in PASSED {
        if let Some(value) = request.get(*field) {
            body.insert((*field).to_owned(), value.clone());
        }
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    if !kept.is_empty() {
        body.insert("anthropic_beta".into(), json!(kept));
    }
    Planned {
        model: Arc::clone(model),
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        max_tokens,
        betas: kept,
        dropped,
    }
}

/// The chain's plans: the model asked for (whose output limit the request must fit), then the
/// fallbacks it fits.
fn plan(
    request: &Map<String, Value>,
    chain: &[Arc<ModelEntry>],
    max_tokens: u32,
    betas: &[String],
) -> Result<Vec<Planned>, ApiError> {
    let Some(asked) = chain.first() else {
        return Err(ApiError::Internal("a model chain without a model".into()));
    };
    if max_tokens > asked.max_output_tokens {
        return Err(invalid(
            "max_tokens",
            format!(
                "`max_tokens` is {max_tokens}, above model `{}`'s maximum of {}",
                asked.alias, asked.max_output_tokens
            ),
        ));
    }
    Ok(chain
        .iter()
        .filter(|m| max_tokens <= m.max_output_tokens)
        .map(|m| plan_one(request, m, max_tokens, betas))
        .collect())
}

/// The prompt's tokens, estimated as for chat completions: four bytes of text a token, and an
/// image or a document's binary source 1,600.
pub fn estimate_tokens(request: &Map<String, Value>) -> u64 {
    fn walk(value: &Value, chars: &mut usize, media: &mut u64) {
        match value {
            Value::String(text) => *chars += text.len(),
            Value::Array(items) => items.iter().for_each(|v| walk(v, chars, media)),
            Value::Object(map) => {
                if matches!(
                    map.get("type").and_then(Value::as_str),
                    Some("base64" | "url")
                ) {
                    *media += 1;
                    return;
                }
                map.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "type" | "cache_control"))
                    .for_each(|(_, v)| walk(v, chars, media));
            }
            _ => {}
        }
    }
    let (mut chars, mut media) = (0usize, 0u64);
    for field in ["system", "messages", "tools"] {
        if let Some(value) = request.get(field) {
            walk(value, &mut chars, &mut media);
        }
    }
    (chars as u64).div_ceil(4) + media * 1_600 + 8
}

/// Reads the body as a JSON object, or says what is wrong with it.
fn read_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    if !content_type.as_deref().is_some_and(is_json_content_type) {
        return Err(ApiError::UnsupportedContentType {
            found: content_type,
        });
    }
    let body = body.map_err(|rejection| {
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
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidJson(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

/// The model chain for `model`, or a 404 to a caller whose key works.
async fn chain(state: &AppState, key: &str, model: &str) -> Result<Vec<Arc<ModelEntry>>, ApiError> {
    match state.config.catalog.chain(model) {
        Some(chain) => {
            if let Some(asked) = chain.first() {
                chat::chat_model(asked)?;
            }
            Ok(chain)
        }
        None => {
            if !state.config.master_key.matches(key).await {
                auth::authenticate_key(state, key).await?;
            }
            Err(ApiError::ModelNotFound {
                model: model.to_owned(),
            })
        }
    }
}

/// What every response of one message shares.
struct Answer {
    /// The name the client asked for: responses name it, whichever model served.
    alias: String,
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let arrived = std::time::Instant::now();
    let invocation = invocation.map(|Extension(i)| i).unwrap_or_default();
    let key = auth::api_key(&headers)
        .ok_or(ApiError::MissingApiKey)?
        .to_owned();
    let mut request = read_body(&headers, body)?;
    let parsed = parse(&request, false)?;
    let chain = chain(&state, &key, &parsed.model).await?;
    let betas = requested_betas(&headers);
    let plan = plan(&request, &chain, parsed.max_tokens, &betas)?;
    if invocation.out_of_time() {
        return Err(ApiError::UpstreamTimeout(
            "the gateway has no time left in this invocation; retry".into(),
        )
        .into());
    }
    let estimate = estimate_tokens(&request);
    let mut record = RequestRecord::new(
        request_id,
        state.clock.now(),
        ModelAlias::new(&parsed.model),
        Client::from_headers(&headers),
    );
    record.call_type = CallType::AnthropicMessages;

    // Admit: one round trip; a refusal is recorded, with nothing to settle.
    let (admitted, mut record) = chat::admit(
        &state,
        &key,
        &parsed.model,
        &plan,
        (request_id, estimate),
        record,
        arrived,
    )
    .await?;
    record.payer = admitted.payer.clone();
    record.end_user = parsed.user_id.clone();
    record.estimated_input = estimate;

    // Guard: from here every way out settles exactly once.
    let mut guard = state.settlements.guard(&state, record, arrived);
    if let Some(asked) = plan.first() {
        guard.for_model(Arc::clone(&asked.model));
    }
    state.hooks.after_admission();
    let mut position = 0;
    let plan: Vec<Planned> = plan
        .into_iter()
        .filter(|p| {
            position += 1;
            position == 1 || admitted.allowed.iter().any(|a| a == p.model.alias.as_str())
        })
        .collect();
    let policy = admitted.pii_policy(&state.config.pii_policy, &state.pii.entity_names());
    let mut guarded = Value::Object(std::mem::take(&mut request));
    let report = state.pii.guard_messages(&mut guarded, &policy);
    let record = guard.record();
    record.pii = report.to_json();
    if !report.counts.is_empty() {
        record.metadata = json!({ "llmlite_pii": report.to_json() });
    }
    if !report.blocked.is_empty() {
        let error = ApiError::PiiBlocked {
            entities: report.blocked_summary(),
        };
        return Err(chat::fail(guard, error).into());
    }
    let plan = match guarded {
        // Masking changed the prompt: the bodies are built again from the guarded request.
        Value::Object(request) if !report.counts.is_empty() => plan
            .iter()
            .map(|p| plan_one(&request, &p.model, p.max_tokens, &betas))
            .collect(),
        _ => plan,
    };

    let answer = Answer {
        alias: parsed.model.clone(),
    };
    let output = crate::pii::OutputGuard::new(&state.pii, policy);
    if parsed.stream {
        stream::respond(state, plan, answer, admitted, guard, invocation, output).await
    } else {
        complete(state, plan, answer, admitted, guard, invocation, output).await
    }
}

/// The usage of an Anthropic `usage` object (Bedrock's: `input_tokens` excludes the cache).
fn usage_of(usage: Option<&Value>) -> TokenUsage {
    let count = |field: &str| {
        usage
            .and_then(|u| u.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    TokenUsage {
        input: count("input_tokens"),
        output: count("output_tokens"),
        cache_read: count("cache_read_input_tokens"),
        cache_write: count("cache_creation_input_tokens"),
    }
}

/// Names the dropped betas in a response header.
fn write_dropped(headers: &mut HeaderMap, planned: &Planned) {
    for beta in &planned.dropped {
        note_dropped(beta);
    }
    if !planned.dropped.is_empty()
        && let Ok(value) = HeaderValue::from_str(&planned.dropped.join(","))
    {
        headers.insert("x-llmlite-dropped-betas", value);
    }
    if !planned.betas.is_empty()
        && let Ok(value) = HeaderValue::from_str(&planned.betas.join(","))
    {
        headers.insert("x-llmlite-passed-betas", value);
    }
}

/// A message answered in one body.
async fn complete(
    state: AppState,
    plan: Vec<Planned>,
    answer: Answer,
    admitted: admission::Admitted,
    mut guard: Guard,
    invocation: Invocation,
    output: Option<crate::pii::OutputGuard>,
) -> Result<Response, AnthropicError> {
    let upstream = std::time::Instant::now();
    let called = chat::until_deadline(
        &invocation,
        bedrock::with_fallbacks(&state.retry, &plan, &answer.alias, |planned| {
            let call = state
                .bedrock
                .invoke_model()
                .model_id(&planned.model.bedrock_model_id)
                .content_type("application/json")
                .accept("application/json")
                .body(Blob::new(planned.body.to_vec()));
            async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
        }),
    )
    .await;
    guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
    let (called, planned) = match called {
        Some(Ok(called)) => called,
        Some(Err(error)) => return Err(chat::fail(guard, error).into()),
        None => return Err(chat::end(guard, chat::deadline_error(), Status::Deadline).into()),
    };
    let mut message: Value = match serde_json::from_slice(called.body().as_ref()) {
        Ok(Value::Object(message)) => Value::Object(message),
        _ => {
            let error = ApiError::Upstream("the model's answer was not a message".into());
            return Err(chat::fail(guard, error).into());
        }
    };
    let usage = usage_of(message.get("usage"));
    message["model"] = json!(answer.alias);
    guard.record().charge(&planned.model, usage);
    if let Some(mut output) = output {
        guard_answer(&mut output, &mut message);
        guard.record().note_output(output.report());
        if let Some(error) = output.blocked() {
            // The answer is withheld; the request pays for it, as the model produced it.
            return Err(chat::end(guard, error, Status::Failure).into());
        }
    }
    let bytes = serde_json::to_vec(&message).unwrap_or_default();
    let record = guard.record();
    record.response_bytes = bytes.len() as u64;
    record.status_code = 200;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    chat::write_headers(
        response.headers_mut(),
        &admitted,
        guard.record_ref(),
        Some(&planned.model),
    );
    write_dropped(response.headers_mut(), planned);
    guard.finish(Status::Success);
    Ok(response)
}

/// The output guard over a whole message: its text, thinking and tool-use input. (A masked
/// thinking block no longer matches its signature: sent back, Bedrock refuses it.)
fn guard_answer(output: &mut crate::pii::OutputGuard, message: &mut Value) {
    for block in message
        .get_mut("content")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for field in ["text", "thinking"] {
            if let Some(Value::String(text)) = block.get_mut(field) {
                output.text(text);
            }
        }
        if let Some(input) = block.get_mut("input") {
            output.json(input);
        }
    }
}

/// `POST /v1/messages/count_tokens`: Bedrock's `CountTokens` where the model takes it, else an
/// estimate (`x-llmlite-token-count: estimate`). It needs a working key and takes nothing from
/// its budget or rate limits.
pub async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let key = auth::api_key(&headers)
        .ok_or(ApiError::MissingApiKey)?
        .to_owned();
    let request = read_body(&headers, body)?;
    let parsed = parse(&request, true)?;
    if !state.config.master_key.matches(&key).await {
        let caller = auth::authenticate_key(&state, &key).await?;
        if !caller.may_use(&parsed.model) {
            return Err(ApiError::ModelNotAllowed {
                model: parsed.model,
            }
            .into());
        }
    }
    let chain = chain(&state, &key, &parsed.model).await?;
    let Some(asked) = chain.first() else {
        return Err(ApiError::Internal("a model chain without a model".into()).into());
    };
    let planned = plan_one(
        &request,
        asked,
        parsed.max_tokens,
        &requested_betas(&headers),
    );
    let counted = async {
        let input = InvokeModelTokensRequest::builder()
            .body(Blob::new(planned.body.to_vec()))
            .build()
            .map_err(|e| e.to_string())?;
        let output = state
            .bedrock
            .count_tokens()
            .model_id(&asked.bedrock_model_id)
            .input(CountTokensInput::InvokeModel(input))
            .send()
            .await
            .map_err(|e| format!("{:?}", BedrockFailure::from_sdk(&e)))?;
        u64::try_from(output.input_tokens()).map_err(|e| e.to_string())
    };
    let (tokens, source) = match counted.await {
        Ok(tokens) => (tokens, "bedrock"),
        Err(why) => {
            tracing::info!(model = %asked.alias, why, "CountTokens unavailable: estimating");
            (estimate_tokens(&request), "estimate")
        }
    };
    let mut response = axum::Json(json!({ "input_tokens": tokens })).into_response();
    response
        .headers_mut()
        .insert("x-llmlite-token-count", HeaderValue::from_static(source));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_request_is_checked_before_anything_is_taken() {
        let ok = body(
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert!(parse(&ok, false).is_ok());
        for (bad, param) in [
            (json!({"max_tokens": 5, "messages": [1]}), "model"),
            (json!({"model": "m", "messages": [1]}), "max_tokens"),
            (
                json!({"model": "m", "max_tokens": 0, "messages": [1]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": -3, "messages": [1]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [1], "system": 3}),
                "system",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [1], "stream": "yes"}),
                "stream",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [1], "metadata": {"user_id": "a\u{0}b"}}),
                "metadata.user_id",
            ),
        ] {
            let error = parse(&body(bad.clone()), false).err();
            assert!(
                matches!(&error, Some(ApiError::InvalidRequest { param: Some(p), .. }) if p == param),
                "{bad}: {error:?}"
            );
        }
        // count_tokens needs no max_tokens.
        let count = body(json!({"model": "m", "messages": [1]}));
        assert_eq!(parse(&count, true).map(|p| p.max_tokens).ok(), Some(1));
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
            let body = error_body(&error);
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind, "{error:?}");
        }
    }

    #[test]
    fn the_estimate_counts_text_and_media_but_not_type_names() {
        let request = body(json!({
            "system": "abcd",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "abcdefgh"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]}]
        }));
        // "abcd" + "user" + "abcdefgh" = 16 bytes = 4 tokens, one image, 8 overhead.
        assert_eq!(estimate_tokens(&request), 4 + 1_600 + 8);
    }
}
