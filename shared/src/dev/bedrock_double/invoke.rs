//! `InvokeModel` and `InvokeModelWithResponseStream` with Anthropic's Messages body as Bedrock
//! takes it: the body read into the request model (embedding bodies go to the embeddings), and
//! the reply written back as an Anthropic `message` or as one `chunk` frame per stream event.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use super::embeddings::{EmbeddingApi, embed};
use super::eventstream::{chunk_frame, event_stream};
use super::reply::{Block, Reply, halves};
use super::request::{
    Part, Request, ToolChoice, Turn, as_count, base64_size, block_texts, strings,
};
use super::{Shared, prelude, read_body};

pub(super) async fn invoke(
    State(state): Shared,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match read_body(&state, "invoke", &model_id, &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    if let Some(api) = EmbeddingApi::of(&model_id) {
        return embed(&state, &model_id, api, &body).await;
    }
    let request = Request::from_anthropic(&body);
    let behaviour = match prelude(&state, &model_id, &request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let mut reply = Reply::for_request(&request);
    state.cache(&model_id, &request, &mut reply);
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
                reply.cache_read_tokens.to_string(),
            ),
            ("x-amzn-bedrock-invocation-latency", latency.to_string()),
        ],
        message.to_string(),
    )
        .into_response()
}

pub(super) async fn invoke_with_response_stream(
    State(state): Shared,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match read_body(
        &state,
        "invoke-with-response-stream",
        &model_id,
        &headers,
        &body,
    ) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let request = Request::from_anthropic(&body);
    let behaviour = match prelude(&state, &model_id, &request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let mut reply = Reply::for_request(&request);
    state.cache(&model_id, &request, &mut reply);
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
            "cacheReadInputTokenCount": reply.cache_read_tokens,
            "cacheWriteInputTokenCount": reply.cache_write_tokens,
        },
    }));
    let frames = events
        .iter()
        .map(|event| (event["type"] == "content_block_delta", chunk_frame(event)))
        .collect();
    event_stream(state, &behaviour, frames)
}

impl Request {
    /// An Anthropic Messages body as Bedrock's InvokeModel takes it.
    pub(super) fn from_anthropic(body: &Value) -> Request {
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
        // Native structured output: `output_config.format` (Bedrock's name; Anthropic's older
        // `output_format` is refused, as Bedrock refuses keys it does not know).
        let format = body.get("output_config").and_then(|c| c.get("format"));
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
        } else if body.get("output_format").is_some() {
            Some(
                "Malformed input request: #: extraneous key [output_format] is not permitted, please reformat your input and try again."
                    .to_owned(),
            )
        } else if format.is_some_and(|f| f["type"] != "json_schema" || !f["schema"].is_object()) {
            Some("output_config.format must be a json_schema with an object schema".to_owned())
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
            schema: format.map(|f| f["schema"].clone()).filter(Value::is_object),
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
            if let Some(control) = block.get("cache_control").filter(|c| !c.is_null()) {
                parts.push(Part::CachePoint(control["ttl"].as_str().map(str::to_owned)));
            }
        }
        parts
    }
}

impl Block {
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

impl Reply {
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
                "cache_read_input_tokens": self.cache_read_tokens,
                "cache_creation": self.cache_creation(),
            },
        })
    }
}
