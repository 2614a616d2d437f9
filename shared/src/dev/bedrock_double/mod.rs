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
//!   ValidationException Bedrock gives for models that cannot count;
//! - `ApplyGuardrail` (`POST /guardrail/{id}/version/{version}/apply`): one guardrail with a
//!   denied topic (BLOCKED) and an employee-ID regex (ANONYMIZED), whose verdicts a test
//!   scripts through its text (`guardrail`).
//!
//! A Converse request whose messages hold `toolUse` or `toolResult` blocks without a `toolConfig`
//! is Bedrock's ValidationException, as it is for Bedrock, even when no tools are offered.
//!
//! Both formats are read into one request model, so a reply and its counts do not depend on
//! the API that asked. Replies are deterministic and derive from the input:
//! - a request whose last message carries tool results answers `Tool result: <results>`;
//! - with tools offered (and `tool_choice` not `none`), a user message naming one or more of them
//!   (or `tool_choice` any/tool) gets a call to each, with input `{"input": "<the user's text>"}`;
//! - with native structured output (Converse's `outputConfig.textFormat`, InvokeModel's
//!   `output_config.format`; InvokeModel refuses the beta's `output_format` key) and no tool
//!   call, the answer is an instance of the schema;
//! - a last user text with `[[say64:<base64>]]` is answered with the decoded text instead of
//!   the echo below (text the prompt does not carry, for the answers' PII guard);
//! - otherwise the answer is `echo: <the user's last text>`, cut at a stop sequence or at the
//!   maximum tokens in words, with a reasoning block first when thinking was asked for.
//!
//! Token counts are word counts: input is every word of the system prompt's and messages' text
//! (an image counts 100; tool calls, tool results, reasoning and documents count nothing), output
//! is the words of the reply. The first cache point (Converse `cachePoint`, Anthropic
//! `cache_control`) makes everything before it, system included, a cache write for its `ttl`
//! (`5m` when none is given; any other value than `5m` and `1h` is a ValidationException),
//! reported apart from the input tokens and split by TTL (`cacheDetails`, `cache_creation`), as
//! Bedrock does. The double remembers what was written, per model: the same prefix sent again
//! within its TTL is a cache read instead (and the read restarts the TTL).
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
//! `GET /__double/calls` lists what it was asked: `{"operation", "model_id", "body",
//! "request_metadata", "service_tier"}` each (the metadata from Converse's body or InvokeModel's
//! header, refused with a `ValidationException` when it breaks Bedrock's rules; the tier from
//! Converse's `serviceTier` or InvokeModel's `X-Amzn-Bedrock-Service-Tier`, refused unless it is
//! one of Bedrock's), the
//! operation being `converse`, `converse-stream`, `invoke`, `invoke-with-response-stream` or
//! `count-tokens` (whose `invokeModel` body is also given decoded, as `invoke_body`); an
//! `ApplyGuardrail` call is `{"operation": "apply-guardrail", "guardrail", "version", "source",
//! "texts"}`.
//!
//! This file holds the server, its state and the failure knobs; each operation has a file of its
//! own, over one request model (`request`), one deterministic reply (`reply`) and the event-stream
//! framing both streaming operations share (`eventstream`).

mod converse;
mod count_tokens;
mod embeddings;
mod eventstream;
mod guardrail;
mod invoke;
mod reply;
mod request;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use converse::{converse, converse_stream};
use count_tokens::count_tokens;
pub use embeddings::embedding_vector;
use guardrail::apply_guardrail;
pub use guardrail::{BLOCKED_INPUT, BLOCKED_OUTPUT};
use invoke::{invoke, invoke_with_response_stream};
use reply::Reply;
use request::Request;

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
    /// The prompt cache: (model ID, digest of the prefix) to when the entry expires.
    cache: Mutex<std::collections::HashMap<(String, u64), tokio::time::Instant>>,
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
            .route(
                "/guardrail/{id}/version/{version}/apply",
                post(apply_guardrail),
            )
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

/// A JSON request body, recorded under `operation` with its request metadata (Converse's
/// `requestMetadata`, InvokeModel's `X-Amzn-Bedrock-Request-Metadata` header); refused as
/// Bedrock refuses it when it is not JSON or its metadata breaks Bedrock's rules.
fn read_body(
    state: &DoubleState,
    operation: &str,
    model_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Box<Response>> {
    let body = serde_json::from_slice::<Value>(body).map_err(|_| Box::new(malformed()))?;
    let metadata = match headers.get("x-amzn-bedrock-request-metadata") {
        Some(header) => Some(
            header
                .to_str()
                .ok()
                .and_then(|h| serde_json::from_str::<Value>(h).ok())
                .ok_or_else(|| Box::new(validation_error("request metadata is not JSON")))?,
        ),
        None => body.get("requestMetadata").cloned(),
    };
    if let Some(metadata) = &metadata {
        check_metadata(metadata).map_err(|why| Box::new(validation_error(&why)))?;
    }
    // The service tier: Converse's `serviceTier.type`, InvokeModel's header.
    let tier = match headers.get("x-amzn-bedrock-service-tier") {
        Some(header) => Some(header.to_str().unwrap_or_default().to_owned()),
        None => body["serviceTier"]["type"].as_str().map(str::to_owned),
    };
    if let Some(tier) = &tier
        && !["default", "flex", "priority", "reserved"].contains(&tier.as_str())
    {
        return Err(Box::new(validation_error(&format!(
            "The service tier `{tier}` is not valid."
        ))));
    }
    record(
        state,
        json!({ "operation": operation, "model_id": model_id, "body": body,
                "request_metadata": metadata, "service_tier": tier }),
    );
    Ok(body)
}

/// Bedrock's rules for request metadata: at most 16 entries; keys of 1-256 and values of 0-256
/// characters from `[a-zA-Z0-9\s:_@$#=/+,-.]`.
fn check_metadata(metadata: &Value) -> Result<(), String> {
    let allowed = |s: &str, min: usize| {
        (min..=256).contains(&s.chars().count())
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ":_@$#=/+,-.".contains(c)
            })
    };
    let Some(entries) = metadata.as_object() else {
        return Err("requestMetadata must be an object".into());
    };
    if entries.len() > 16 {
        return Err("requestMetadata has more than 16 entries".into());
    }
    for (key, value) in entries {
        let value = value.as_str().ok_or("requestMetadata values are strings")?;
        if !allowed(key, 1) || !allowed(value, 0) {
            return Err(format!("requestMetadata entry {key:?} breaks the pattern"));
        }
    }
    Ok(())
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
    if let Some(problem) = request.problem.clone().or_else(|| request.bad_cache_ttl()) {
        return Err(validation_error(&problem));
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

impl DoubleState {
    /// Bedrock's prompt cache, per model: the prefix before a request's first cache point is
    /// read from the cache when an earlier request wrote it and it has not expired (the read
    /// restarts its life), and written, for the cache point's TTL, when not.
    fn cache(&self, model_id: &str, request: &Request, reply: &mut Reply) {
        let Some((ttl, prefix)) = request.input_tokens().cache_point else {
            return;
        };
        let life = Duration::from_secs(if ttl == "1h" { 3600 } else { 300 });
        let now = tokio::time::Instant::now();
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let entry = cache.entry((model_id.to_owned(), prefix)).or_insert(now);
        if *entry > now {
            reply.cache_read_tokens = reply.cache_write_tokens;
            reply.cache_write_tokens = 0;
        } else {
            reply.cache_write_1h = ttl == "1h";
        }
        *entry = (*entry).max(now + life);
    }

    fn next_message_id(&self) -> String {
        let n = self.messages.fetch_add(1, Ordering::SeqCst) + 1;
        format!("msg_bdrk_{n:024x}")
    }
}
