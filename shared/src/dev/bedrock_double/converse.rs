//! `Converse` and `ConverseStream`: the Converse body read into the request model, and the reply
//! written back as Converse JSON or as ConverseStream events.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use super::eventstream::{event_frame, event_stream};
use super::reply::{Block, Reply, halves};
use super::request::{
    Part, Request, ToolChoice, Turn, as_count, base64_size, block_texts, strings,
};
use super::{Shared, prelude, read_body};

pub(super) async fn converse(
    State(state): Shared,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match read_body(&state, "converse", &model_id, &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let request = Request::from_converse(&body);
    if let Err(response) = prelude(&state, &model_id, &request).await {
        return response;
    }
    let mut reply = Reply::for_request(&request);
    state.cache(&model_id, &request, &mut reply);
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

pub(super) async fn converse_stream(
    State(state): Shared,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match read_body(&state, "converse-stream", &model_id, &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let request = Request::from_converse(&body);
    let behaviour = match prelude(&state, &model_id, &request).await {
        Ok(behaviour) => behaviour,
        Err(response) => return response,
    };
    let mut reply = Reply::for_request(&request);
    state.cache(&model_id, &request, &mut reply);
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

impl Request {
    /// A Converse (or ConverseStream, or CountTokens `converse`) request body.
    pub(super) fn from_converse(body: &Value) -> Request {
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
        // Native structured output: the schema travels as a JSON string.
        let format = &body["outputConfig"]["textFormat"];
        let schema = format["structure"]["jsonSchema"]["schema"]
            .as_str()
            .map(serde_json::from_str::<Value>);
        let problem = if turns.is_empty() {
            Some("messages must not be empty".to_owned())
        } else if !format.is_null()
            && (format["type"] != "json_schema" || !matches!(schema, Some(Ok(_))))
        {
            Some(
                "outputConfig.textFormat needs type json_schema and a JSON schema string"
                    .to_owned(),
            )
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
            schema: schema.and_then(Result::ok),
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
        } else if let Some(point) = block.get("cachePoint") {
            Part::CachePoint(point["ttl"].as_str().map(str::to_owned))
        } else if let Some(result) = block.get("toolResult") {
            Part::ToolResult(block_texts(&result["content"]))
        } else {
            Part::Other
        }
    }
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
}

impl Reply {
    fn usage_json(&self) -> Value {
        json!({
            "inputTokens": self.uncached_input_tokens(),
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens + self.output_tokens,
            "cacheReadInputTokens": self.cache_read_tokens,
            "cacheWriteInputTokens": self.cache_write_tokens,
            "cacheDetails": self.cache_details(),
        })
    }
}
