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
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use crate::adapters::chat::converse::bedrock_tier;
use crate::auth;
use crate::catalog::{CacheTtl, ModelEntry, ServiceTier, TokenUsage};
use crate::clients::bedrock::{BedrockFailure, Candidate};
use crate::error::{ApiError, ErrorShape, Refusal};
use crate::pii::{OutputGuard, Policy, Report, Scanner};
use crate::pipeline::call::{self, AnswerBody, Answered, Failed};
use crate::pipeline::{self, Accounting, Adapter, Call, Invocation, Models, relay};
use crate::record::CallType;
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

/// The request, as far as the gateway reads it; the rest goes to Bedrock as it came.
pub struct Parsed {
    model: String,
    max_tokens: u32,
    stream: bool,
    user_id: Option<String>,
    /// A `cache_control` asks for a 1-hour write.
    cache_1h: bool,
    /// The service tier `service_tier` names.
    service_tier: Option<ServiceTier>,
    /// The JSON schema of native structured output (`output_config.format`, or the beta's
    /// `output_format`), checked: a `json_schema` with an object schema.
    output_format: Option<Value>,
}

/// The structured-output format a request asks for: `output_config.format` or the older
/// `output_format`, each `{"type": "json_schema", "schema": {...}}`.
fn output_format(body: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    let (param, format) = match (
        body.get("output_config").filter(|c| !c.is_null()),
        body.get("output_format").filter(|f| !f.is_null()),
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "output_format",
                "send `output_config.format` or `output_format`, not both",
            ));
        }
        (Some(Value::Object(config)), None) => {
            if let Some(other) = config.keys().find(|k| k.as_str() != "format") {
                let other = other.chars().take(64).collect::<String>();
                return Err(invalid(
                    "output_config",
                    format!("`output_config.{other}` is not supported by llmlite"),
                ));
            }
            ("output_config.format", config.get("format"))
        }
        (Some(_), None) => {
            return Err(invalid(
                "output_config",
                "`output_config` must be an object",
            ));
        }
        (None, format) => ("output_format", format),
    };
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(format)
            if format.get("type").and_then(Value::as_str) == Some("json_schema")
                && format.get("schema").is_some_and(Value::is_object) =>
        {
            Ok(Some(
                json!({"type": "json_schema", "schema": format["schema"].clone()}),
            ))
        }
        Some(_) => Err(invalid(
            param,
            format!(
                "`{param}` must be {{\"type\": \"json_schema\", \"schema\": {{...}}}} with an object schema"
            ),
        )),
    }
}

/// The Bedrock tier an Anthropic `service_tier` names: `auto` (or none) is Bedrock's default,
/// unnamed; `standard_only` is the `default` tier, named. Bedrock's own names (`default`,
/// `flex`, `priority`) are taken too, since Anthropic's have no word for flex or priority on
/// Bedrock.
fn service_tier(value: Option<&Value>) -> Result<Option<ServiceTier>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(tier)) => match tier.as_str() {
            "auto" => Ok(None),
            "standard_only" | "default" => Ok(Some(ServiceTier::Default)),
            "flex" => Ok(Some(ServiceTier::Flex)),
            "priority" => Ok(Some(ServiceTier::Priority)),
            _ => Err(invalid(
                "service_tier",
                "`service_tier` must be `auto` or `standard_only` (or Bedrock's `default`, `flex`, `priority`)",
            )),
        },
        Some(_) => Err(invalid("service_tier", "`service_tier` must be a string")),
    }
}

/// The tier an answer's `usage.service_tier` names: Anthropic's `standard` for the default.
pub(super) fn answered_tier(tier: Option<ServiceTier>) -> &'static str {
    match tier {
        None | Some(ServiceTier::Default) => "standard",
        Some(tier) => tier.as_str(),
    }
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
        Some(Value::String(user)) => Some(user.clone()),
        Some(_) => {
            return Err(invalid(
                "metadata.user_id",
                "`metadata.user_id` must be a string",
            ));
        }
    };
    pipeline::check_end_user(user_id.as_deref(), "metadata.user_id")?;
    let mut ttls = Vec::new();
    for field in ["system", "messages", "tools"] {
        if let Some(value) = body.get(field) {
            cache_ttls(value, field, &mut ttls)?;
        }
    }
    Ok(Parsed {
        model,
        max_tokens,
        stream,
        user_id,
        cache_1h: ttls.contains(&CacheTtl::OneHour),
        service_tier: service_tier(body.get("service_tier"))?,
        output_format: output_format(body)?,
    })
}

/// The TTL of every `cache_control` under `value` (at `path`), each checked: an object whose
/// `ttl`, when it has one, is `"5m"` or `"1h"`.
fn cache_ttls(value: &Value, path: &str, ttls: &mut Vec<CacheTtl>) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                cache_ttls(item, &format!("{path}[{i}]"), ttls)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key != "cache_control" {
                    cache_ttls(item, &format!("{path}.{key}"), ttls)?;
                    continue;
                }
                let param = format!("{path}.cache_control");
                let ttl = match item {
                    Value::Null => continue,
                    Value::Object(control) => control.get("ttl"),
                    _ => {
                        let message = format!("`{param}` must be an object");
                        return Err(invalid(&param, message));
                    }
                };
                let bad_ttl = || {
                    let param = format!("{param}.ttl");
                    let message = format!("`{param}` must be \"5m\" or \"1h\"");
                    invalid(&param, message)
                };
                ttls.push(match ttl {
                    None | Some(Value::Null) => CacheTtl::FiveMinutes,
                    Some(Value::String(ttl)) => CacheTtl::parse(ttl).ok_or_else(bad_ttl)?,
                    Some(_) => return Err(bad_ttl()),
                });
            }
        }
        _ => {}
    }
    Ok(())
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
pub struct Planned {
    model: Arc<ModelEntry>,
    body: Bytes,
    max_tokens: u32,
    /// A `cache_control` asks for a 1-hour write (and the model offers it).
    cache_1h: bool,
    /// The service tier asked for (and the model offers it).
    service_tier: Option<ServiceTier>,
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

    fn cache_1h(&self) -> bool {
        self.cache_1h
    }

    fn service_tier(&self) -> Option<ServiceTier> {
        self.service_tier
    }
}

/// Bedrock's body for `model`: the passed fields, `anthropic_version`, and the betas the
/// catalog lists for it.
fn plan_one(
    request: &Map<String, Value>,
    model: &Arc<ModelEntry>,
    parsed: &Parsed,
    betas: &[String],
) -> Planned {
    let max_tokens = parsed.max_tokens;
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
    if let Some(format) = &parsed.output_format {
        body.insert("output_config".into(), json!({ "format": format }));
    }
    if !kept.is_empty() {
        body.insert("anthropic_beta".into(), json!(kept));
    }
    Planned {
        model: Arc::clone(model),
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        max_tokens,
        cache_1h: parsed.cache_1h,
        service_tier: parsed.service_tier,
        betas: kept,
        dropped,
    }
}

/// The chain's plans: the model asked for (whose output limit, and 1-hour caching if the
/// request asks for it, the request must fit), then the fallbacks it fits.
fn plan(
    request: &Map<String, Value>,
    chain: &[Arc<ModelEntry>],
    parsed: &Parsed,
    betas: &[String],
) -> Result<Vec<Planned>, ApiError> {
    let max_tokens = parsed.max_tokens;
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
    if parsed.cache_1h && !asked.prices.offers_cache_1h() {
        return Err(crate::catalog::no_cache_1h(asked, "cache_control.ttl"));
    }
    if let Some(tier) = parsed.service_tier
        && asked.prices_at(Some(tier)).is_none()
    {
        return Err(crate::catalog::no_tier(asked, tier, "service_tier"));
    }
    let structured = parsed.output_format.is_some();
    if structured && !asked.flags.structured_output {
        return Err(invalid(
            "output_format",
            format!(
                "model `{}` does not offer native structured output on Bedrock",
                asked.alias
            ),
        ));
    }
    Ok(chain
        .iter()
        .filter(|m| max_tokens <= m.max_output_tokens)
        .filter(|m| !parsed.cache_1h || m.prices.offers_cache_1h())
        .filter(|m| m.prices_at(parsed.service_tier).is_some())
        .filter(|m| !structured || m.flags.structured_output)
        .map(|m| plan_one(request, m, parsed, betas))
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
    for field in [
        "system",
        "messages",
        "tools",
        "output_config",
        "output_format",
    ] {
        if let Some(value) = request.get(field) {
            walk(value, &mut chars, &mut media);
        }
    }
    (chars as u64).div_ceil(4) + media * 1_600 + 8
}

/// Anthropic's Messages API.
#[derive(Debug, Clone, Copy, Default)]
pub struct Messages;

/// A Messages request: the body as it came (what Bedrock takes of it passes as it is), what the
/// gateway reads of it, and the betas it asks for.
pub struct Request {
    body: Map<String, Value>,
    parsed: Parsed,
    betas: Vec<String>,
}

impl Adapter for Messages {
    type Body = Map<String, Value>;
    type Request = Request;
    type Planned = Planned;

    const CALL_TYPE: CallType = CallType::AnthropicMessages;
    const SHAPE: ErrorShape = ErrorShape::Anthropic;
    const MODELS: Models = Models::Chat;

    fn parse(
        &mut self,
        body: Map<String, Value>,
        headers: &HeaderMap,
    ) -> Result<Request, ApiError> {
        let parsed = parse(&body, false)?;
        Ok(Request {
            body,
            parsed,
            betas: requested_betas(headers),
        })
    }

    fn model(request: &Request) -> &str {
        &request.parsed.model
    }

    fn estimate(request: &Request) -> u64 {
        estimate_tokens(&request.body)
    }

    fn accounting(request: &Request) -> Accounting {
        Accounting {
            end_user: request.parsed.user_id.clone(),
            metadata: None,
        }
    }

    fn plan(
        &self,
        _state: &AppState,
        request: &Request,
        chain: &[Arc<ModelEntry>],
        _invocation: &Invocation,
    ) -> Result<Vec<Planned>, ApiError> {
        plan(&request.body, chain, &request.parsed, &request.betas)
    }

    fn guard_pii(request: &mut Request, scanner: &Scanner, policy: &Policy) -> Report {
        let mut body = Value::Object(std::mem::take(&mut request.body));
        let report = scanner.guard_messages(&mut body, policy);
        if let Value::Object(body) = body {
            request.body = body;
        }
        report
    }

    fn guardrail_texts(request: &mut Request) -> Vec<&mut String> {
        pipeline::guardrail::messages_texts(&mut request.body)
    }

    async fn respond(&self, call: Call<Self>) -> Result<Response, Refusal> {
        let bedrock = call.state.bedrock.clone();
        if call.request.parsed.stream {
            let open = move |planned: &Planned| stream::open(&bedrock, planned);
            relay::stream(call, open, |call, planned| {
                stream::streaming(&call.alias, planned, dropped_headers(planned))
            })
            .await
        } else {
            let upstream = std::time::Instant::now();
            let answered = complete(&call, &bedrock).await;
            call::complete(call, answered, upstream).await
        }
    }
}

/// A message answered in one body.
async fn complete(
    call: &Call<Messages>,
    bedrock: &aws_sdk_bedrockruntime::Client,
) -> Result<Answered<Message>, Failed> {
    let (called, planned) = call::fallbacks(call, |planned| {
        let call = bedrock
            .invoke_model()
            .model_id(&planned.model.bedrock_model_id)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(planned.body.to_vec()))
            .set_service_tier(planned.service_tier.map(bedrock_tier));
        async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
    })
    .await?;
    let mut message: Value = match serde_json::from_slice(called.body().as_ref()) {
        Ok(Value::Object(message)) => Value::Object(message),
        _ => {
            return Err(ApiError::Upstream("the model's answer was not a message".into()).into());
        }
    };
    let usage = usage_of(message.get("usage"));
    message["model"] = json!(call.alias);
    if let Some(answer_usage) = message.get_mut("usage").and_then(Value::as_object_mut) {
        answer_usage.insert(
            "service_tier".into(),
            json!(answered_tier(planned.service_tier)),
        );
    }
    Ok(Answered {
        model: Arc::clone(&planned.model),
        usage,
        body: Message(message),
        headers: dropped_headers(planned),
    })
}

/// An Anthropic `message`.
pub struct Message(Value);

impl AnswerBody for Message {
    /// Its text, thinking and tool-use input. (A masked thinking block no longer matches its
    /// signature: sent back, Bedrock refuses it.)
    fn screen(&mut self, output: &mut OutputGuard) {
        for block in self
            .0
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

    fn texts(&mut self) -> Vec<&mut String> {
        let mut texts = Vec::new();
        for block in self
            .0
            .get_mut("content")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Value::Object(block) = block else {
                continue;
            };
            for (field, value) in block.iter_mut() {
                match (field.as_str(), value) {
                    ("text" | "thinking", Value::String(text)) => texts.push(text),
                    ("input", input) => pipeline::guardrail::json_strings(input, &mut texts),
                    _ => {}
                }
            }
        }
        texts
    }

    fn into_bytes(self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }
}

/// The usage of an Anthropic `usage` object (Bedrock's: `input_tokens` excludes the cache; the
/// writes split by TTL in `cache_creation`, and those it does not split live five minutes).
fn usage_of(usage: Option<&Value>) -> TokenUsage {
    let count = |path: &[&str]| {
        usage
            .and_then(|usage| path.iter().try_fold(usage, |value, field| value.get(field)))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    TokenUsage {
        input: count(&["input_tokens"]),
        output: count(&["output_tokens"]),
        cache_read: count(&["cache_read_input_tokens"]),
        cache_write: count(&["cache_creation_input_tokens"]),
        cache_write_1h: count(&["cache_creation", "ephemeral_1h_input_tokens"]),
    }
}

/// Headers naming the betas passed and dropped (each dropped one is logged once).
fn dropped_headers(planned: &Planned) -> HeaderMap {
    let mut headers = HeaderMap::new();
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
    headers
}

/// `POST /v1/messages/count_tokens`: Bedrock's `CountTokens` where the model takes it, else an
/// estimate (`x-llmlite-token-count: estimate`). It needs a working key and takes nothing from
/// its budget or rate limits.
pub async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match count(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => Refusal::from(error)
            .in_shape(ErrorShape::Anthropic)
            .into_response(),
    }
}

async fn count(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = auth::api_key(headers)
        .ok_or(ApiError::MissingApiKey)?
        .to_owned();
    let request: Map<String, Value> = crate::http::json_body(headers, body)?;
    let parsed = parse(&request, true)?;
    if !state.config.master_key.matches(&key).await {
        let caller = auth::authenticate_key(state, &key).await?;
        if !caller.may_use(&parsed.model) {
            return Err(ApiError::ModelNotAllowed {
                model: parsed.model,
            });
        }
    }
    let chain = pipeline::chain(state, &key, &parsed.model, Models::Chat).await?;
    let Some(asked) = chain.first() else {
        return Err(ApiError::Internal("a model chain without a model".into()));
    };
    let planned = plan_one(&request, asked, &parsed, &requested_betas(headers));
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
