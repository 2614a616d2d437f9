//! A wire-level Bedrock Runtime double: an HTTP server on loopback that speaks the operations
//! llmlite calls, so the real `aws-sdk-bedrockruntime` client can be pointed at it with
//! `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`. Signatures are accepted unverified. `llmlite dev` serves
//! chat from it; the tests drive it.
//!
//! Operations:
//! - `Converse` (`POST /model/{id}/converse`, JSON) and `ConverseStream` (`.../converse-stream`,
//!   `application/vnd.amazon.eventstream` frames with valid CRCs);
//! - `InvokeModel` (`.../invoke`) with Anthropic's Messages body as Bedrock takes it
//!   (`anthropic_version: "bedrock-2023-05-31"`, no `model`, no `stream`: a body with either, or
//!   without `anthropic_version`, `max_tokens` or `messages`, is Bedrock's ValidationException),
//!   answering an Anthropic `message` and the `x-amzn-bedrock-*-token-count` headers;
//! - `InvokeModelWithResponseStream` (`.../invoke-with-response-stream`): one `chunk` frame per
//!   Anthropic stream event, `{"bytes": "<base64 of the event's JSON>"}`, from `message_start` to
//!   a `message_stop` carrying `amazon-bedrock-invocationMetrics`;
//! - `InvokeModel` with an embedding model's body, chosen by the model ID: Titan Text Embeddings
//!   (an ID containing `titan-embed`: `{"inputText", "dimensions": 256|512|1024}`, one text,
//!   answering `{"embedding", "inputTextTokenCount"}`) and Cohere Embed (`cohere.embed`:
//!   `{"texts": [1 to 96 strings], "input_type"}`, answering `{"id", "texts", "embeddings",
//!   "response_type"}`), both with the `x-amzn-bedrock-input-token-count` header. A missing or
//!   unknown field, an empty text, other dimensions or more than 96 texts is Bedrock's
//!   ValidationException. Vectors are deterministic: for a text with SHA-256 digest `h`,
//!   component `j` is `(2 * (h[j % 32] ^ (j / 32 % 256)) - 255) / 256` (exact in `f32`); token
//!   counts are word counts, as for chat. Directives in any text apply (`[[throttle]]`...);
//! - `CountTokens` (`.../count-tokens`) for either input (`invokeModel.body`, which the SDK sends
//!   as a base64 string, or `converse`): `{"inputTokens": n}`, n being every input token of the
//!   same request, cached or not. A model ID containing `no-count-tokens` answers the
//!   ValidationException Bedrock gives for models that cannot count.
//!
//! A Converse request whose messages hold `toolUse` or `toolResult` blocks without a `toolConfig`
//! is Bedrock's ValidationException, as it is for Bedrock, even when no tools are offered.
//!
//! Both formats are read into one request model, so a reply and its counts do not depend on
//! the API that asked. Replies are deterministic and derive from the input:
//! - a request whose last message carries tool results answers `Tool result: <results>`;
//! - with tools offered (and `tool_choice` not `none`), a user message naming one or more of them
//!   (or `tool_choice` any/tool) gets a call to each, with input `{"input": "<the user's text>"}`;
//! - a last user text with `[[say64:<base64>]]` is answered with the decoded text instead of
//!   the echo below (text the prompt does not carry, for the answers' PII guard);
//! - otherwise the answer is `echo: <the user's last text>`, cut at a stop sequence or at the
//!   maximum tokens in words, with a reasoning block first when thinking was asked for.
//!
//! Token counts are word counts: input is every word of the system prompt's and messages' text
//! (an image counts 100; tool calls, tool results, reasoning and documents count nothing), output
//! is the words of the reply. A cache point (Converse `cachePoint`, Anthropic `cache_control`)
//! in a message makes everything before it, system included, a cache write; it is reported
//! apart from the input tokens, as Bedrock does.
//!
//! Failures on demand, in order of precedence:
//! - a queue of scripted behaviours, `POST /__double/script` with a JSON list (each call takes
//!   the next one): `{"throttle": true}`, `{"error": {"status": 503, "type":
//!   "ServiceUnavailableException"}}`, `{"latency_ms": 200}`, `{"break_after": 2}`,
//!   `{"event_gap_ms": 100}` (a pause before each stream event after the first);
//! - a model ID containing `always-throttle` or `always-unavailable`;
//! - a directive in the last user text: `[[throttle]]`, `[[error:<status>:<Type>]]`,
//!   `[[latency:<ms>]]`, `[[break:<events>]]` (a stream that fails after that many events).
//!
//! `GET /__double/calls` lists what it was asked: `{"operation", "model_id", "body"}` each, the
//! operation being `converse`, `converse-stream`, `invoke`, `invoke-with-response-stream` or
//! `count-tokens` (whose `invokeModel` body is also given decoded, as `invoke_body`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// One scripted behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    #[serde(default)]
    pub throttle: bool,
    pub error: Option<ScriptedError>,
    pub latency_ms: Option<u64>,
    pub break_after: Option<usize>,
    /// A pause before each stream event after the first: a model that answers slowly.
    pub event_gap_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedError {
    pub status: u16,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Default)]
struct DoubleState {
    script: Mutex<VecDeque<Behaviour>>,
    calls: Mutex<Vec<Value>>,
    /// Stream content deltas written to the wire so far, over every call.
    deltas_sent: AtomicU64,
    /// Anthropic messages answered so far: their IDs.
    messages: AtomicU64,
}

/// A running double.
pub struct BedrockDouble {
    pub addr: SocketAddr,
    state: Arc<DoubleState>,
    task: tokio::task::JoinHandle<()>,
}

impl BedrockDouble {
    /// Starts a double on `127.0.0.1` (port 0 picks a free one).
    pub async fn start(port: u16) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(DoubleState::default());
        let app = Router::new()
            .route("/model/{model_id}/converse", post(converse))
            .route("/model/{model_id}/converse-stream", post(converse_stream))
            .route("/model/{model_id}/invoke", post(invoke))
            .route(
                "/model/{model_id}/invoke-with-response-stream",
                post(invoke_with_response_stream),
            )
            .route("/model/{model_id}/count-tokens", post(count_tokens))
            .route("/__double/script", post(script))
            .route("/__double/calls", get(calls))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(BedrockDouble { addr, state, task })
    }

    /// The content deltas (`contentBlockDelta` for ConverseStream, `content_block_delta` for
    /// InvokeModelWithResponseStream) handed to the connection so far, over every call: how far
    /// a stream had got when a client saw something.
    pub fn deltas_sent(&self) -> u64 {
        self.state.deltas_sent.load(Ordering::SeqCst)
    }

    /// The endpoint URL to give the SDK.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BedrockDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = State<Arc<DoubleState>>;

async fn script(State(state): Shared, Json(items): Json<Vec<Behaviour>>) -> StatusCode {
    if let Ok(mut queue) = state.script.lock() {
        queue.extend(items);
    }
    StatusCode::NO_CONTENT
}

async fn calls(State(state): Shared) -> Json<Value> {
    let calls = state.calls.lock().map(|c| c.clone()).unwrap_or_default();
    Json(Value::Array(calls))
}

/// What this call should do, from the script, the model ID and the prompt.
fn behaviour_for(state: &DoubleState, model_id: &str, last_user_text: &str) -> Behaviour {
    if let Some(next) = state.script.lock().ok().and_then(|mut q| q.pop_front()) {
        return next;
    }
    if model_id.contains("always-throttle") {
        return Behaviour {
            throttle: true,
            ..Behaviour::default()
        };
    }
    if model_id.contains("always-unavailable") {
        return Behaviour {
            error: Some(ScriptedError {
                status: 503,
                kind: "ServiceUnavailableException".into(),
            }),
            ..Behaviour::default()
        };
    }
    let mut behaviour = Behaviour::default();
    for directive in directives(last_user_text) {
        let parts: Vec<&str> = directive.split(':').collect();
        match parts.as_slice() {
            ["throttle"] => behaviour.throttle = true,
            ["error", status, kind] => {
                behaviour.error = status.parse().ok().map(|status| ScriptedError {
                    status,
                    kind: (*kind).to_owned(),
                });
            }
            ["latency", ms] => behaviour.latency_ms = ms.parse().ok(),
            ["break", n] => behaviour.break_after = n.parse().ok(),
            _ => {}
        }
    }
    behaviour
}

/// The answer a `[[say64:<base64>]]` directive asks for: text the prompt does not carry (what
/// the PII guard would otherwise mask on the way in), such as a card number in the answer.
fn said(text: &str) -> Option<String> {
    directives(text).iter().find_map(|d| {
        let encoded = d.strip_prefix("say64:")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        String::from_utf8(bytes).ok()
    })
}

fn directives(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let after = &rest[start + 2..];
        match after.find("]]") {
            Some(end) => {
                out.push(after[..end].to_owned());
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    out
}

fn record(state: &DoubleState, entry: Value) {
    if let Ok(mut calls) = state.calls.lock() {
        calls.push(entry);
    }
}

/// A Bedrock error response, as the service sends it.
fn error_response(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            ("content-type", "application/json"),
            ("x-amzn-errortype", kind),
        ],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn validation_error(message: &str) -> Response {
    error_response(400, "ValidationException", message)
}

/// A JSON request body, recorded under `operation`; `None` when it is not JSON.
fn read_body(state: &DoubleState, operation: &str, model_id: &str, body: &[u8]) -> Option<Value> {
    let body = serde_json::from_slice::<Value>(body).ok()?;
    record(
        state,
        json!({ "operation": operation, "model_id": model_id, "body": body }),
    );
    Some(body)
}

fn malformed() -> Response {
    validation_error("malformed request body")
}

/// The failures asked for, then the request's own faults: what comes before an answer.
async fn prelude(
    state: &DoubleState,
    model_id: &str,
    request: &Request,
) -> Result<Behaviour, Response> {
    let behaviour = behaviour_for(state, model_id, &request.last_user_text());
    failures(&behaviour).await?;
    if let Some(problem) = &request.problem {
        return Err(validation_error(problem));
    }
    Ok(behaviour)
}

/// The latency and failures `behaviour` asks for.
async fn failures(behaviour: &Behaviour) -> Result<(), Response> {
    if let Some(ms) = behaviour.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if behaviour.throttle {
        return Err(error_response(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ));
    }
    if let Some(error) = &behaviour.error {
        return Err(error_response(
            error.status,
            &error.kind,
            "scripted failure",
        ));
    }
    Ok(())
}

/// The embedding model families the double answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbeddingApi {
    Titan,
    Cohere,
}

impl EmbeddingApi {
    fn of(model_id: &str) -> Option<EmbeddingApi> {
        if model_id.contains("titan-embed") {
            Some(EmbeddingApi::Titan)
        } else if model_id.contains("cohere.embed") {
            Some(EmbeddingApi::Cohere)
        } else {
            None
        }
    }
}

const TITAN_DIMENSIONS: &[u64] = &[256, 512, 1024];
const COHERE_MAX_TEXTS: usize = 96;
const COHERE_INPUT_TYPES: &[&str] = &[
    "search_document",
    "search_query",
    "classification",
    "clustering",
];

/// The texts and vector length an embedding body asks for, or Bedrock's complaint about it.
fn embedding_request(api: EmbeddingApi, body: &Value) -> Result<(Vec<String>, usize), String> {
    let Some(fields) = body.as_object() else {
        return Err("Malformed input request: expected an object".into());
    };
    let allowed: &[&str] = match api {
        EmbeddingApi::Titan => &["inputText", "dimensions", "normalize", "embeddingTypes"],
        EmbeddingApi::Cohere => &["texts", "input_type", "truncate", "embedding_types"],
    };
    if let Some(extra) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: extraneous key [{extra}] is not permitted, please reformat your input and try again."
        ));
    }
    match api {
        EmbeddingApi::Titan => {
            let text = match body.get("inputText") {
                Some(Value::String(text)) if !text.is_empty() => text.clone(),
                _ => {
                    return Err(
                        "Malformed input request: #/inputText: expected a non-empty string".into(),
                    );
                }
            };
            let dimensions = match body.get("dimensions") {
                None => 1024,
                Some(d) => match d.as_u64().filter(|d| TITAN_DIMENSIONS.contains(d)) {
                    Some(d) => d as usize,
                    None => {
                        return Err(format!(
                            "Malformed input request: #/dimensions: {d} is not a valid enum value"
                        ));
                    }
                },
            };
            Ok((vec![text], dimensions))
        }
        EmbeddingApi::Cohere => {
            let Some(texts) = body.get("texts").and_then(Value::as_array) else {
                return Err("Malformed input request: #: required key [texts] not found".into());
            };
            if texts.len() > COHERE_MAX_TEXTS {
                return Err(format!(
                    "Malformed input request: #/texts: expected maximum item count: {COHERE_MAX_TEXTS}, found: {}",
                    texts.len()
                ));
            }
            if texts.is_empty() {
                return Err(
                    "Malformed input request: #/texts: expected minimum item count: 1, found: 0"
                        .into(),
                );
            }
            let texts: Option<Vec<String>> = texts
                .iter()
                .map(|t| t.as_str().filter(|t| !t.is_empty()).map(str::to_owned))
                .collect();
            let Some(texts) = texts else {
                return Err("Malformed input request: #/texts: expected non-empty strings".into());
            };
            match body.get("input_type").and_then(Value::as_str) {
                Some(t) if COHERE_INPUT_TYPES.contains(&t) => Ok((texts, 1024)),
                Some(t) => Err(format!(
                    "Malformed input request: #/input_type: {t} is not a valid enum value"
                )),
                None => {
                    Err("Malformed input request: #: required key [input_type] not found".into())
                }
            }
        }
    }
}

/// The double's vector for `text`: deterministic, and reproducible by a test from the text
/// alone (see the module comment).
pub fn embedding_vector(text: &str, dimensions: usize) -> Vec<f32> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    (0..dimensions)
        .map(|j| {
            let byte = digest[j % 32] ^ ((j / 32) % 256) as u8;
            (2.0 * f32::from(byte) - 255.0) / 256.0
        })
        .collect()
}

async fn embed(state: &DoubleState, model_id: &str, api: EmbeddingApi, body: &Value) -> Response {
    let (texts, dimensions) = match embedding_request(api, body) {
        Ok(request) => request,
        Err(problem) => return validation_error(&problem),
    };
    let behaviour = behaviour_for(state, model_id, &texts.join("\n"));
    if let Err(response) = failures(&behaviour).await {
        return response;
    }
    let tokens: usize = texts.iter().map(|t| words(t)).sum();
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| embedding_vector(t, dimensions))
        .collect();
    let answer = match api {
        EmbeddingApi::Titan => json!({
            "embedding": vectors.first(),
            "inputTextTokenCount": tokens,
        }),
        EmbeddingApi::Cohere => json!({
            "id": format!("emb-{}", state.next_message_id()),
            "texts": texts,
            "embeddings": vectors,
            "response_type": "embeddings_floats",
        }),
    };
    (
        [
            ("content-type", "application/json".to_owned()),
            ("x-amzn-bedrock-input-token-count", tokens.to_string()),
            (
                "x-amzn-bedrock-invocation-latency",
                (behaviour.latency_ms.unwrap_or(0) + 1).to_string(),
            ),
        ],
        answer.to_string(),
    )
        .into_response()
}

async fn converse(State(state): Shared, Path(model_id): Path<String>, body: Bytes) -> Response {
    let Some(body) = read_body(&state, "converse", &model_id, &body) else {
        return malformed();
    };
    let request = Request::from_converse(&body);
    if let Err(response) = prelude(&state, &model_id, &request).await {
        return response;
    }
    let reply = Reply::for_request(&request);
    let content: Vec<Value> = reply
        .blocks()
        .into_iter()
        .map(|b| b.to_converse())
        .collect();
    Json(json!({
        "output": { "message": { "role": "assistant", "content": content } },
        "stopReason": reply.stop_reason,
        "usage": reply.usage_json(),
        "metrics": { "latencyMs": 1 },
    }))
    .into_response()
}

async fn converse_stream(
    State(state): Shared,
    Path(model_id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(body) = read_body(&state, "converse-stream", &model_id, &body) else {
        return malformed();
    };
    let request = Request::from_converse(&body);
    let behaviour = match prelude(&state, &model_id, &request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let reply = Reply::for_request(&request);
    let mut events = vec![("messageStart", json!({ "role": "assistant" }))];
    for (index, block) in reply.blocks().into_iter().enumerate() {
        events.extend(block.to_stream_events(index));
    }
    events.push(("messageStop", json!({ "stopReason": reply.stop_reason })));
    events.push((
        "metadata",
        json!({ "usage": reply.usage_json(), "metrics": { "latencyMs": 1 } }),
    ));
    let frames = events
        .into_iter()
        .map(|(event_type, payload)| {
            (
                event_type == "contentBlockDelta",
                event_frame(event_type, &payload),
            )
        })
        .collect();
    event_stream(state, &behaviour, frames)
}

async fn invoke(State(state): Shared, Path(model_id): Path<String>, body: Bytes) -> Response {
    let Some(body) = read_body(&state, "invoke", &model_id, &body) else {
        return malformed();
    };
    if let Some(api) = EmbeddingApi::of(&model_id) {
        return embed(&state, &model_id, api, &body).await;
    }
    let request = Request::from_anthropic(&body);
    let behaviour = match prelude(&state, &model_id, &request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let reply = Reply::for_request(&request);
    let message = reply.anthropic_message(&state.next_message_id(), &model_id);
    let latency = behaviour.latency_ms.unwrap_or(0) + 1;
    (
        [
            ("content-type", "application/json".to_owned()),
            (
                "x-amzn-bedrock-input-token-count",
                reply.uncached_input_tokens().to_string(),
            ),
            (
                "x-amzn-bedrock-output-token-count",
                reply.output_tokens.to_string(),
            ),
            (
                "x-amzn-bedrock-cache-write-input-token-count",
                reply.cache_write_tokens.to_string(),
            ),
            (
                "x-amzn-bedrock-cache-read-input-token-count",
                "0".to_owned(),
            ),
            ("x-amzn-bedrock-invocation-latency", latency.to_string()),
        ],
        message.to_string(),
    )
        .into_response()
}

async fn invoke_with_response_stream(
    State(state): Shared,
    Path(model_id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(body) = read_body(&state, "invoke-with-response-stream", &model_id, &body) else {
        return malformed();
    };
    let request = Request::from_anthropic(&body);
    let behaviour = match prelude(&state, &model_id, &request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let reply = Reply::for_request(&request);
    let mut start = reply.anthropic_message(&state.next_message_id(), &model_id);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["stop_sequence"] = Value::Null;
    start["usage"]["output_tokens"] = json!(1);
    let mut events = vec![json!({ "type": "message_start", "message": start })];
    for (index, block) in reply.blocks().into_iter().enumerate() {
        events.extend(block.to_anthropic_events(index));
    }
    events.push(json!({
        "type": "message_delta",
        "delta": { "stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence },
        "usage": { "output_tokens": reply.output_tokens },
    }));
    // The latencies the double would have shown: its pause before answering, then its gaps.
    let first_byte = behaviour.latency_ms.unwrap_or(0) + 1;
    let gaps = behaviour.event_gap_ms.unwrap_or(0) * events.len() as u64;
    events.push(json!({
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": reply.uncached_input_tokens(),
            "outputTokenCount": reply.output_tokens,
            "invocationLatency": first_byte + gaps,
            "firstByteLatency": first_byte,
            "cacheReadInputTokenCount": 0,
            "cacheWriteInputTokenCount": reply.cache_write_tokens,
        },
    }));
    let frames = events
        .iter()
        .map(|event| (event["type"] == "content_block_delta", chunk_frame(event)))
        .collect();
    event_stream(state, &behaviour, frames)
}

async fn count_tokens(State(state): Shared, Path(model_id): Path<String>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return malformed();
    };
    let invoke_body = body["input"]["invokeModel"]["body"].as_str().map(|b| {
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    });
    let mut entry = json!({ "operation": "count-tokens", "model_id": model_id, "body": body });
    if let Some(Some(decoded)) = &invoke_body {
        entry["invoke_body"] = decoded.clone();
    }
    record(&state, entry);
    if model_id.contains("no-count-tokens") {
        return validation_error("The provided model doesn't support counting tokens.");
    }
    let request = match (invoke_body, body["input"].get("converse")) {
        (Some(Some(decoded)), _) => Request::from_anthropic(&decoded),
        (Some(None), _) => {
            return validation_error(
                "Malformed input request: the invokeModel body is not base64-encoded JSON",
            );
        }
        (None, Some(converse)) => Request::from_converse(converse),
        (None, None) => {
            return validation_error("input must hold either invokeModel or converse");
        }
    };
    if let Err(response) = prelude(&state, &model_id, &request).await {
        return response;
    }
    Json(json!({ "inputTokens": request.input_tokens().total })).into_response()
}

impl DoubleState {
    fn next_message_id(&self) -> String {
        let n = self.messages.fetch_add(1, Ordering::SeqCst) + 1;
        format!("msg_bdrk_{n:024x}")
    }
}

/// A streamed answer: `frames` (each marked when it is a content delta) up to the break the
/// behaviour asks for, which becomes a `modelStreamErrorException` frame; one frame per chunk,
/// so clients see them arrive separately, `event_gap_ms` apart.
fn event_stream(
    state: Arc<DoubleState>,
    behaviour: &Behaviour,
    all: Vec<(bool, Bytes)>,
) -> Response {
    let mut frames = Vec::new();
    for (sent, (delta, frame)) in all.into_iter().enumerate() {
        if behaviour.break_after == Some(sent) {
            frames.push((
                false,
                exception_frame("modelStreamErrorException", "the model stream broke"),
            ));
            break;
        }
        frames.push((delta, frame));
    }
    let gap = Duration::from_millis(behaviour.event_gap_ms.unwrap_or(0));
    let stream = futures_util::StreamExt::then(
        futures_util::stream::iter(frames.into_iter().enumerate()),
        move |(index, (delta, frame))| {
            let state = Arc::clone(&state);
            async move {
                if index > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                if delta {
                    state.deltas_sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, std::convert::Infallible>(frame)
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/vnd.amazon.eventstream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn frame(headers: Vec<(&str, &str)>, payload: &Value) -> Bytes {
    let message = headers.into_iter().fold(
        Message::new(Bytes::from(payload.to_string())),
        |message, (name, value)| {
            message.add_header(Header::new(
                name.to_owned(),
                HeaderValue::String(value.to_owned().into()),
            ))
        },
    );
    let mut buffer = Vec::new();
    // Writing to a Vec cannot fail for frames of this size.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut buffer);
    Bytes::from(buffer)
}

fn event_frame(event_type: &str, payload: &Value) -> Bytes {
    frame(
        vec![
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", "application/json"),
        ],
        payload,
    )
}

/// An InvokeModelWithResponseStream `chunk`: one Anthropic stream event, base64 in `bytes`.
fn chunk_frame(event: &Value) -> Bytes {
    let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    event_frame("chunk", &json!({ "bytes": bytes }))
}

fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    frame(
        vec![
            (":message-type", "exception"),
            (":exception-type", exception_type),
            (":content-type", "application/json"),
        ],
        &json!({ "message": message }),
    )
}

/// One piece of a request's content, whichever API it came in.
enum Part {
    Text(String),
    Image {
        format: String,
        bytes: usize,
    },
    /// Everything before it (in a message) is written to the cache.
    CachePoint,
    /// The texts of one tool result.
    ToolResult(Vec<String>),
    /// Tool calls, reasoning, documents and the rest: no words counted, no effect on the reply.
    Other,
}

struct Turn {
    user: bool,
    parts: Vec<Part>,
}

enum ToolChoice {
    Auto,
    Any,
    Tool(String),
    None,
}

/// A request, whichever API it came in: what the replies and the token counts derive from.
struct Request {
    system: Vec<Part>,
    turns: Vec<Turn>,
    tools: Vec<String>,
    tool_choice: ToolChoice,
    max_tokens: Option<usize>,
    stop_sequences: Vec<String>,
    thinking: bool,
    /// Why Bedrock would refuse it (a ValidationException), if it would.
    problem: Option<String>,
}

/// The input tokens of a request: all of them, and those before its first cache point.
struct InputTokens {
    total: usize,
    cache_write: usize,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `text` of each block that has one.
fn block_texts(blocks: &Value) -> Vec<String> {
    blocks
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The size of what a base64 string holds, near enough.
fn base64_size(data: &Value) -> usize {
    data.as_str().map_or(0, |b| b.len() * 3 / 4)
}

fn as_count(value: &Value) -> Option<usize> {
    value
        .as_u64()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

impl Request {
    /// A Converse (or ConverseStream, or CountTokens `converse`) request body.
    fn from_converse(body: &Value) -> Request {
        let system = body["system"]
            .as_array()
            .map(|blocks| blocks.iter().map(Self::converse_part).collect())
            .unwrap_or_default();
        let turns: Vec<Turn> = body["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| Turn {
                        user: m["role"] == "user",
                        parts: m["content"]
                            .as_array()
                            .map(|blocks| blocks.iter().map(Self::converse_part).collect())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let choice = &body["toolConfig"]["toolChoice"];
        let tool_choice = if let Some(name) = choice["tool"]["name"].as_str() {
            ToolChoice::Tool(name.to_owned())
        } else if choice.get("any").is_some() {
            ToolChoice::Any
        } else {
            ToolChoice::Auto
        };
        // Bedrock's rule: tool blocks in the conversation need a toolConfig, tools offered now
        // or not.
        let tool_blocks = body["messages"].as_array().is_some_and(|messages| {
            messages.iter().any(|m| {
                m["content"].as_array().is_some_and(|blocks| {
                    blocks
                        .iter()
                        .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some())
                })
            })
        });
        let problem = if turns.is_empty() {
            Some("messages must not be empty".to_owned())
        } else if tool_blocks && body.get("toolConfig").is_none() {
            Some(
                "The toolConfig field must be defined when using toolUse and toolResult content blocks."
                    .to_owned(),
            )
        } else {
            None
        };
        Request {
            system,
            problem,
            turns,
            tools: body["toolConfig"]["tools"]
                .as_array()
                .map(|tools| {
                    tools
                        .iter()
                        .filter_map(|t| t["toolSpec"]["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            tool_choice,
            max_tokens: as_count(&body["inferenceConfig"]["maxTokens"]),
            stop_sequences: strings(&body["inferenceConfig"]["stopSequences"]),
            thinking: body["additionalModelRequestFields"]["thinking"]["type"] == "enabled",
        }
    }

    fn converse_part(block: &Value) -> Part {
        if let Some(text) = block["text"].as_str() {
            Part::Text(text.to_owned())
        } else if let Some(image) = block.get("image") {
            Part::Image {
                format: image["format"].as_str().unwrap_or("?").to_owned(),
                bytes: base64_size(&image["source"]["bytes"]),
            }
        } else if block.get("cachePoint").is_some() {
            Part::CachePoint
        } else if let Some(result) = block.get("toolResult") {
            Part::ToolResult(block_texts(&result["content"]))
        } else {
            Part::Other
        }
    }

    /// An Anthropic Messages body as Bedrock's InvokeModel takes it.
    fn from_anthropic(body: &Value) -> Request {
        let system = match &body["system"] {
            Value::String(text) => vec![Part::Text(text.clone())],
            blocks => Self::anthropic_parts(blocks),
        };
        let turns: Vec<Turn> = body["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| Turn {
                        user: m["role"] == "user",
                        parts: match &m["content"] {
                            Value::String(text) => vec![Part::Text(text.clone())],
                            blocks => Self::anthropic_parts(blocks),
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        let choice = &body["tool_choice"];
        let tool_choice = match choice["type"].as_str() {
            Some("any") => ToolChoice::Any,
            Some("none") => ToolChoice::None,
            Some("tool") => ToolChoice::Tool(choice["name"].as_str().unwrap_or("").to_owned()),
            _ => ToolChoice::Auto,
        };
        let problem = if let Some(key) = ["model", "stream"]
            .into_iter()
            .find(|key| body.get(key).is_some())
        {
            Some(format!(
                "Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input and try again."
            ))
        } else if let Some(key) = ["anthropic_version", "max_tokens", "messages"]
            .into_iter()
            .find(|key| body.get(key).is_none())
        {
            Some(format!(
                "Malformed input request: #: required key [{key}] not found, please reformat your input and try again."
            ))
        } else if body["anthropic_version"] != "bedrock-2023-05-31" {
            Some("Invalid API version: anthropic_version must be bedrock-2023-05-31".to_owned())
        } else if turns.is_empty() {
            Some("messages must not be empty".to_owned())
        } else {
            None
        };
        Request {
            system,
            turns,
            tools: body["tools"]
                .as_array()
                .map(|tools| {
                    tools
                        .iter()
                        .filter_map(|t| t["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            tool_choice,
            max_tokens: as_count(&body["max_tokens"]),
            stop_sequences: strings(&body["stop_sequences"]),
            thinking: body["thinking"]["type"] == "enabled",
            problem,
        }
    }

    /// Anthropic content blocks; `cache_control` on a block is a cache point after it.
    fn anthropic_parts(blocks: &Value) -> Vec<Part> {
        let mut parts = Vec::new();
        for block in blocks.as_array().map(Vec::as_slice).unwrap_or_default() {
            parts.push(match block["type"].as_str() {
                Some("text") => Part::Text(block["text"].as_str().unwrap_or("").to_owned()),
                Some("image") => {
                    let source = &block["source"];
                    Part::Image {
                        format: source["media_type"]
                            .as_str()
                            .map_or("?", |t| t.strip_prefix("image/").unwrap_or(t))
                            .to_owned(),
                        bytes: base64_size(&source["data"]),
                    }
                }
                Some("tool_result") => Part::ToolResult(match &block["content"] {
                    Value::String(text) => vec![text.clone()],
                    blocks => block_texts(blocks),
                }),
                _ => Part::Other,
            });
            if block.get("cache_control").is_some_and(|c| !c.is_null()) {
                parts.push(Part::CachePoint);
            }
        }
        parts
    }

    fn last_user_text(&self) -> String {
        self.turns
            .iter()
            .rev()
            .find(|t| t.user)
            .map(|t| {
                t.parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(text) => Some(text.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    fn input_tokens(&self) -> InputTokens {
        let mut total = self
            .system
            .iter()
            .map(|p| match p {
                Part::Text(text) => words(text),
                _ => 0,
            })
            .sum::<usize>();
        let mut cache_write = 0;
        for part in self.turns.iter().flat_map(|t| &t.parts) {
            match part {
                Part::Text(text) => total += words(text),
                Part::Image { .. } => total += 100,
                Part::CachePoint if cache_write == 0 => cache_write = total,
                _ => {}
            }
        }
        InputTokens { total, cache_write }
    }

    /// A note of the last image in the conversation, for the echo.
    fn image_note(&self) -> Option<String> {
        self.turns
            .iter()
            .flat_map(|t| &t.parts)
            .filter_map(|p| match p {
                Part::Image { format, bytes } => {
                    Some(format!("[image: {format}, about {bytes} bytes]"))
                }
                _ => None,
            })
            .next_back()
    }

    /// The texts of the tool results in the last message.
    fn tool_results(&self) -> Vec<String> {
        self.turns
            .last()
            .map(|t| {
                t.parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolResult(texts) => Some(texts.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect()
            })
            .unwrap_or_default()
    }
}

enum Block {
    Reasoning(String),
    Text(String),
    /// The `n`th tool call of the reply.
    ToolUse {
        n: usize,
        name: String,
        input: Value,
    },
}

/// A string cut in two near its middle, on a character boundary.
fn halves(text: &str) -> (&str, &str) {
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle -= 1;
    }
    text.split_at(middle)
}

impl Block {
    fn to_converse(&self) -> Value {
        match self {
            Block::Reasoning(text) => {
                json!({ "reasoningContent": { "reasoningText": { "text": text, "signature": "double-signature" } } })
            }
            Block::Text(text) => json!({ "text": text }),
            Block::ToolUse { n, name, input } => {
                json!({ "toolUse": { "toolUseId": format!("tooluse_double_{n}"), "name": name, "input": input } })
            }
        }
    }

    fn to_stream_events(&self, index: usize) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        match self {
            Block::Reasoning(text) => {
                events.push(("contentBlockDelta", json!({ "contentBlockIndex": index, "delta": { "reasoningContent": { "text": text } } })));
                events.push(("contentBlockDelta", json!({ "contentBlockIndex": index, "delta": { "reasoningContent": { "signature": "double-signature" } } })));
            }
            Block::Text(text) => {
                // Word by word, as a model streams.
                for word in text.split_inclusive(' ') {
                    events.push((
                        "contentBlockDelta",
                        json!({ "contentBlockIndex": index, "delta": { "text": word } }),
                    ));
                }
            }
            Block::ToolUse { n, name, input } => {
                events.push(("contentBlockStart", json!({ "contentBlockIndex": index, "start": { "toolUse": { "toolUseId": format!("tooluse_double_{n}"), "name": name } } })));
                let arguments = input.to_string();
                let (first, second) = halves(&arguments);
                for part in [first, second] {
                    events.push(("contentBlockDelta", json!({ "contentBlockIndex": index, "delta": { "toolUse": { "input": part } } })));
                }
            }
        }
        events.push(("contentBlockStop", json!({ "contentBlockIndex": index })));
        events
    }

    fn to_anthropic(&self) -> Value {
        match self {
            Block::Reasoning(text) => {
                json!({ "type": "thinking", "thinking": text, "signature": "double-signature" })
            }
            Block::Text(text) => json!({ "type": "text", "text": text }),
            Block::ToolUse { n, name, input } => {
                json!({ "type": "tool_use", "id": format!("toolu_bdrk_double_{n}"), "name": name, "input": input })
            }
        }
    }

    /// The Anthropic stream events of this block: start, deltas, stop.
    fn to_anthropic_events(&self, index: usize) -> Vec<Value> {
        let delta =
            |delta: Value| json!({ "type": "content_block_delta", "index": index, "delta": delta });
        let (start, deltas) = match self {
            Block::Reasoning(text) => (
                json!({ "type": "thinking", "thinking": "", "signature": "" }),
                vec![
                    delta(json!({ "type": "thinking_delta", "thinking": text })),
                    delta(json!({ "type": "signature_delta", "signature": "double-signature" })),
                ],
            ),
            Block::Text(text) => (
                json!({ "type": "text", "text": "" }),
                // Word by word, as a model streams.
                text.split_inclusive(' ')
                    .map(|word| delta(json!({ "type": "text_delta", "text": word })))
                    .collect(),
            ),
            Block::ToolUse { input, .. } => {
                let mut start = self.to_anthropic();
                start["input"] = json!({});
                let arguments = input.to_string();
                let (first, second) = halves(&arguments);
                (
                    start,
                    [first, second]
                        .into_iter()
                        .map(|part| {
                            delta(json!({ "type": "input_json_delta", "partial_json": part }))
                        })
                        .collect(),
                )
            }
        };
        let mut events =
            vec![json!({ "type": "content_block_start", "index": index, "content_block": start })];
        events.extend(deltas);
        events.push(json!({ "type": "content_block_stop", "index": index }));
        events
    }
}

struct Reply {
    reasoning: Option<String>,
    text: Option<String>,
    tool_calls: Vec<(String, Value)>,
    stop_reason: &'static str,
    /// The stop sequence that cut the answer, if one did.
    stop_sequence: Option<String>,
    input_tokens: usize,
    output_tokens: usize,
    cache_write_tokens: usize,
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

impl Reply {
    fn for_request(request: &Request) -> Reply {
        let InputTokens { total, cache_write } = request.input_tokens();
        let tool_results = request.tool_results();
        let user_text = request.last_user_text();
        let tools: &[String] = match request.tool_choice {
            ToolChoice::None => &[],
            _ => &request.tools,
        };
        let max_tokens = request.max_tokens.unwrap_or(usize::MAX);

        let mut reply = Reply {
            reasoning: request
                .thinking
                .then(|| format!("thinking about: {user_text}")),
            text: None,
            tool_calls: Vec::new(),
            stop_reason: "end_turn",
            stop_sequence: None,
            input_tokens: total,
            output_tokens: 0,
            cache_write_tokens: cache_write,
        };
        if !tool_results.is_empty() {
            reply.text = Some(format!("Tool result: {}", tool_results.join("; ")));
        } else if !tools.is_empty() {
            let named: Vec<String> = if let ToolChoice::Tool(name) = &request.tool_choice {
                vec![name.clone()]
            } else {
                let mentioned: Vec<String> = tools
                    .iter()
                    .filter(|t| user_text.contains(t.as_str()))
                    .cloned()
                    .collect();
                if mentioned.is_empty() && matches!(request.tool_choice, ToolChoice::Any) {
                    tools.iter().take(1).cloned().collect()
                } else {
                    mentioned
                }
            };
            reply.tool_calls = named
                .into_iter()
                .map(|name| (name, json!({ "input": user_text })))
                .collect();
        }
        if reply.text.is_none() && reply.tool_calls.is_empty() {
            let mut text = said(&user_text).unwrap_or_else(|| format!("echo: {user_text}"));
            if let Some(note) = request.image_note() {
                text = format!("{text} {note}");
            }
            if let Some((cut, stop)) = request
                .stop_sequences
                .iter()
                .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
                .min_by_key(|(at, _)| *at)
            {
                reply.stop_sequence = Some(stop.clone());
                text.truncate(cut);
                reply.stop_reason = "stop_sequence";
            }
            if words(&text) > max_tokens {
                text = text
                    .split_whitespace()
                    .take(max_tokens)
                    .collect::<Vec<_>>()
                    .join(" ");
                reply.stop_reason = "max_tokens";
                reply.stop_sequence = None;
            }
            reply.text = Some(text);
        } else if !reply.tool_calls.is_empty() {
            reply.stop_reason = "tool_use";
        }
        reply.output_tokens = reply.text.as_deref().map_or(0, words)
            + reply.reasoning.as_deref().map_or(0, words)
            + reply
                .tool_calls
                .iter()
                .map(|(_, input)| words(&input.to_string()))
                .sum::<usize>();
        reply
    }

    fn blocks(&self) -> Vec<Block> {
        let mut blocks = Vec::new();
        if let Some(reasoning) = &self.reasoning {
            blocks.push(Block::Reasoning(reasoning.clone()));
        }
        if let Some(text) = &self.text {
            blocks.push(Block::Text(text.clone()));
        }
        for (n, (name, input)) in self.tool_calls.iter().enumerate() {
            blocks.push(Block::ToolUse {
                n,
                name: name.clone(),
                input: input.clone(),
            });
        }
        blocks
    }

    /// The input tokens that were neither written to nor read from the cache.
    fn uncached_input_tokens(&self) -> usize {
        self.input_tokens - self.cache_write_tokens
    }

    fn usage_json(&self) -> Value {
        json!({
            "inputTokens": self.uncached_input_tokens(),
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens + self.output_tokens,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": self.cache_write_tokens,
        })
    }

    /// The whole answer as an Anthropic `message`.
    fn anthropic_message(&self, id: &str, model_id: &str) -> Value {
        let content: Vec<Value> = self.blocks().iter().map(Block::to_anthropic).collect();
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model_id,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": {
                "input_tokens": self.uncached_input_tokens(),
                "output_tokens": self.output_tokens,
                "cache_creation_input_tokens": self.cache_write_tokens,
                "cache_read_input_tokens": 0,
            },
        })
    }
}
