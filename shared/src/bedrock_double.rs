//! A wire-level Bedrock Runtime double: an HTTP server on loopback that speaks Converse (JSON)
//! and ConverseStream (`application/vnd.amazon.eventstream` frames with valid CRCs), so the real
//! `aws-sdk-bedrockruntime` client can be pointed at it with `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`.
//! Signatures are accepted unverified. `llmlite dev` serves chat from it; the tests drive it.
//!
//! Replies are deterministic and derive from the input:
//! - a request whose last message carries tool results answers `Tool result: <results>`;
//! - with tools offered, a user message naming one or more of them (or `tool_choice` any/tool)
//!   gets a call to each, with input `{"input": "<the user's text>"}`;
//! - otherwise the answer is `echo: <the user's last text>`, cut at a stop sequence or at
//!   `maxTokens` words, with a reasoning block first when thinking was asked for.
//!
//! Token counts are word counts: input is every word of the system prompt and messages (an
//! image counts 100), output is the words of the reply.
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
//! `GET /__double/calls` lists what it was asked: `{"operation", "model_id", "body"}` each.

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
            .route("/__double/script", post(script))
            .route("/__double/calls", get(calls))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(BedrockDouble { addr, state, task })
    }

    /// The `contentBlockDelta` stream events handed to the connection so far, over every call:
    /// how far a stream had got when a client saw something.
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
fn behaviour_for(state: &DoubleState, model_id: &str, body: &Value) -> Behaviour {
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
    let text = last_user_text(body);
    let mut behaviour = Behaviour::default();
    for directive in directives(&text) {
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

fn record(state: &DoubleState, operation: &str, model_id: &str, body: &Value) {
    if let Ok(mut calls) = state.calls.lock() {
        calls.push(json!({ "operation": operation, "model_id": model_id, "body": body }));
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

async fn prelude(
    state: &DoubleState,
    operation: &str,
    model_id: &str,
    body: &[u8],
) -> Result<(Value, Behaviour), Response> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Err(error_response(
            400,
            "ValidationException",
            "malformed request body",
        ));
    };
    record(state, operation, model_id, &body);
    let behaviour = behaviour_for(state, model_id, &body);
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
    if body["messages"].as_array().is_none_or(Vec::is_empty) {
        return Err(error_response(
            400,
            "ValidationException",
            "messages must not be empty",
        ));
    }
    Ok((body, behaviour))
}

async fn converse(State(state): Shared, Path(model_id): Path<String>, body: Bytes) -> Response {
    let (body, _) = match prelude(&state, "converse", &model_id, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let reply = Reply::for_request(&body);
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
    let (body, behaviour) = match prelude(&state, "converse-stream", &model_id, &body).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let reply = Reply::for_request(&body);
    let mut events = vec![("messageStart", json!({ "role": "assistant" }))];
    for (index, block) in reply.blocks().into_iter().enumerate() {
        events.extend(block.to_stream_events(index));
    }
    events.push(("messageStop", json!({ "stopReason": reply.stop_reason })));
    events.push((
        "metadata",
        json!({ "usage": reply.usage_json(), "metrics": { "latencyMs": 1 } }),
    ));
    let mut frames = Vec::new();
    for (sent, (event_type, payload)) in events.into_iter().enumerate() {
        if behaviour.break_after == Some(sent) {
            frames.push((
                false,
                exception_frame("modelStreamErrorException", "the model stream broke"),
            ));
            break;
        }
        frames.push((
            event_type == "contentBlockDelta",
            event_frame(event_type, &payload),
        ));
    }
    // One frame per chunk, so clients see them arrive separately.
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

enum Block {
    Reasoning(String),
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl Block {
    fn to_converse(&self) -> Value {
        match self {
            Block::Reasoning(text) => {
                json!({ "reasoningContent": { "reasoningText": { "text": text, "signature": "double-signature" } } })
            }
            Block::Text(text) => json!({ "text": text }),
            Block::ToolUse { id, name, input } => {
                json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } })
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
                let words: Vec<&str> = text.split_inclusive(' ').collect();
                for word in words {
                    events.push((
                        "contentBlockDelta",
                        json!({ "contentBlockIndex": index, "delta": { "text": word } }),
                    ));
                }
            }
            Block::ToolUse { id, name, input } => {
                events.push(("contentBlockStart", json!({ "contentBlockIndex": index, "start": { "toolUse": { "toolUseId": id, "name": name } } })));
                let arguments = input.to_string();
                let (first, second) = arguments.split_at(arguments.len() / 2);
                for part in [first, second] {
                    events.push(("contentBlockDelta", json!({ "contentBlockIndex": index, "delta": { "toolUse": { "input": part } } })));
                }
            }
        }
        events.push(("contentBlockStop", json!({ "contentBlockIndex": index })));
        events
    }
}

struct Reply {
    reasoning: Option<String>,
    text: Option<String>,
    tool_calls: Vec<(String, Value)>,
    stop_reason: &'static str,
    input_tokens: usize,
    output_tokens: usize,
    cache_write_tokens: usize,
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

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

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| block_texts(&m["content"]).join(" "))
        .unwrap_or_default()
}

impl Reply {
    fn for_request(body: &Value) -> Reply {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let mut input_tokens = block_texts(&body["system"])
            .iter()
            .map(|t| words(t))
            .sum::<usize>();
        let mut cache_write_tokens = 0;
        let mut image_note = None;
        for message in &messages {
            for block in message["content"].as_array().cloned().unwrap_or_default() {
                if let Some(text) = block["text"].as_str() {
                    input_tokens += words(text);
                } else if let Some(image) = block.get("image") {
                    input_tokens += 100;
                    let bytes = image["source"]["bytes"]
                        .as_str()
                        .map_or(0, |b| b.len() * 3 / 4);
                    image_note = Some(format!(
                        "[image: {}, about {bytes} bytes]",
                        image["format"].as_str().unwrap_or("?")
                    ));
                } else if block.get("cachePoint").is_some() && cache_write_tokens == 0 {
                    cache_write_tokens = input_tokens;
                }
            }
        }
        let last = messages.last().cloned().unwrap_or_default();
        let tool_results: Vec<String> = last["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter_map(|b| b.get("toolResult"))
                    .flat_map(|r| block_texts(&r["content"]))
                    .collect()
            })
            .unwrap_or_default();
        let user_text = last_user_text(body);
        let tools: Vec<String> = body["toolConfig"]["tools"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t["toolSpec"]["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let choice = &body["toolConfig"]["toolChoice"];
        let max_tokens = body["inferenceConfig"]["maxTokens"]
            .as_u64()
            .map_or(usize::MAX, |m| m as usize);
        let thinking = body["additionalModelRequestFields"]["thinking"]["type"] == "enabled";

        let mut reply = Reply {
            reasoning: thinking.then(|| format!("thinking about: {user_text}")),
            text: None,
            tool_calls: Vec::new(),
            stop_reason: "end_turn",
            input_tokens,
            output_tokens: 0,
            cache_write_tokens,
        };
        if !tool_results.is_empty() {
            reply.text = Some(format!("Tool result: {}", tool_results.join("; ")));
        } else if !tools.is_empty() {
            let named: Vec<String> = if let Some(name) = choice["tool"]["name"].as_str() {
                vec![name.to_owned()]
            } else {
                let mentioned: Vec<String> = tools
                    .iter()
                    .filter(|t| user_text.contains(t.as_str()))
                    .cloned()
                    .collect();
                if mentioned.is_empty() && choice.get("any").is_some() {
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
            let mut text = format!("echo: {user_text}");
            if let Some(note) = image_note {
                text = format!("{text} {note}");
            }
            let stops: Vec<String> = body["inferenceConfig"]["stopSequences"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
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
                id: format!("tooluse_double_{n}"),
                name: name.clone(),
                input: input.clone(),
            });
        }
        blocks
    }

    fn usage_json(&self) -> Value {
        json!({
            "inputTokens": self.input_tokens - self.cache_write_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens + self.output_tokens,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": self.cache_write_tokens,
        })
    }
}
