//! Chat completion answers rewritten as Responses: a `chat.completion` body becomes a `response`
//! object, and a stream of `chat.completion.chunk` events becomes Responses events
//! (`response.created` ... `response.completed`, each with its `sequence_number`). The rewrite
//! is of the wire only: what produced the chunks (retries, the deadline, a buffered response's
//! limit, the client hanging up, settlement) is the chat path's.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{StatusCode, header};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// What every rendering of one response shares: its ID, its time and what it repeats of the
/// request.
#[derive(Debug, Clone)]
pub(super) struct Echo {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    /// The request's fields a response object repeats (`instructions`, `tools`, ...).
    pub request: Map<String, Value>,
}

impl Echo {
    /// The `response` object, with `status`, `output` and the rest.
    fn object(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Value,
        extra: &[(&str, Value)],
    ) -> Value {
        let field = |name: &str, default: Value| self.request.get(name).cloned().unwrap_or(default);
        let mut object = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": field("instructions", Value::Null),
            "max_output_tokens": field("max_output_tokens", Value::Null),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": field("parallel_tool_calls", Value::Bool(true)),
            "previous_response_id": null,
            "reasoning": field("reasoning", json!({"effort": null, "summary": null})),
            "store": false,
            "temperature": field("temperature", Value::Null),
            "text": field("text", json!({"format": {"type": "text"}})),
            "tool_choice": field("tool_choice", json!("auto")),
            "tools": field("tools", json!([])),
            "top_p": field("top_p", Value::Null),
            "truncation": "disabled",
            "usage": usage,
            "user": field("user", Value::Null),
            "metadata": field("metadata", json!({})),
        });
        for (name, value) in extra {
            object[*name] = value.clone();
        }
        object
    }

    fn item_id(&self, prefix: &str, index: usize) -> String {
        let base = self.id.trim_start_matches("resp_");
        format!("{prefix}_{base}_{index}")
    }
}

/// Responses usage from a chat completion's.
fn usage(chat: &Value) -> Value {
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    json!({
        "input_tokens": count(&chat["prompt_tokens"]),
        "input_tokens_details": {"cached_tokens": count(&chat["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens": count(&chat["completion_tokens"]),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": count(&chat["total_tokens"]),
    })
}

/// The status and `incomplete_details` of a chat `finish_reason`.
fn ending(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({
        "type": "reasoning",
        "id": id,
        "summary": [{"type": "summary_text", "text": text}],
    })
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    })
}

/// A complete answer: the chat completion body rewritten as a `response` object. Errors pass as
/// they are (the two APIs share their shape).
pub(super) async fn complete(response: Response, echo: &Echo) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let chat = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
        Err(e) => {
            return ApiError::Internal(format!("reading the completion: {e}")).into_response();
        }
    };
    let choice = &chat["choices"][0];
    let message = &choice["message"];
    let mut output = Vec::new();
    if let Some(reasoning) = message["reasoning_content"].as_str() {
        output.push(reasoning_item(&echo.item_id("rs", output.len()), reasoning));
    }
    let calls = message["tool_calls"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    match message["content"].as_str() {
        Some(text) if !text.is_empty() || calls.is_empty() => {
            let id = echo.item_id("msg", output.len());
            output.push(message_item(&id, "completed", vec![text_part(text)]));
        }
        None if calls.is_empty() => {
            let id = echo.item_id("msg", output.len());
            output.push(message_item(&id, "completed", vec![text_part("")]));
        }
        _ => {}
    }
    for call in calls {
        let id = echo.item_id("fc", output.len());
        output.push(call_item(
            &id,
            "completed",
            call["id"].as_str().unwrap_or_default(),
            call["function"]["name"].as_str().unwrap_or_default(),
            call["function"]["arguments"].as_str().unwrap_or_default(),
        ));
    }
    let (status, incomplete) = ending(choice["finish_reason"].as_str());
    let object = echo.object(
        status,
        output,
        usage(&chat["usage"]),
        &[("incomplete_details", incomplete)],
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(object.to_string()))
}

/// A streamed answer: the chat completion's event stream rewritten, event by event, as
/// Responses events. Dropping the result (the client hung up) drops the chat stream, which ends
/// the model call and settles it as the chat path does.
pub(super) fn stream(response: Response, echo: Echo) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let relay = Relay {
        echo,
        sequence: 0,
        output: Vec::new(),
        open: None,
        usage: None,
        finish_reason: None,
        ended: false,
        pending: Vec::new(),
    };
    let start = futures_util::stream::once(async { None });
    let chunks = body.into_data_stream().map(Some);
    let ending = futures_util::stream::once(async { None });
    let events = start
        .chain(chunks)
        .chain(ending)
        .scan((relay, true), |(relay, first), chunk| {
            let bytes = match chunk {
                None if *first => {
                    *first = false;
                    relay.start()
                }
                None => relay.finish(),
                Some(Ok(chunk)) => relay.push(&chunk),
                // The chat stream's body cannot fail; if it did, the answer ends there.
                Some(Err(_)) => relay.finish(),
            };
            std::future::ready(Some(Ok::<_, std::convert::Infallible>(bytes)))
        })
        .filter(|bytes| std::future::ready(!matches!(bytes, Ok(b) if b.is_empty())));
    Response::from_parts(parts, Body::from_stream(events))
}

/// The output item being streamed.
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        /// The chat stream's index of the tool call.
        index: u64,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Rewrites one chat event stream.
struct Relay {
    echo: Echo,
    sequence: u64,
    /// The finished output items.
    output: Vec<Value>,
    open: Option<Open>,
    usage: Option<Value>,
    finish_reason: Option<String>,
    /// The response's last event has been written.
    ended: bool,
    /// Bytes of an event not yet complete.
    pending: Vec<u8>,
}

impl Relay {
    fn event(&mut self, out: &mut Vec<u8>, kind: &str, fields: Value) {
        let mut data = Map::new();
        data.insert("type".into(), json!(kind));
        if let Value::Object(fields) = fields {
            data.extend(fields);
        }
        data.insert("sequence_number".into(), json!(self.sequence));
        self.sequence += 1;
        out.extend_from_slice(
            format!("event: {kind}\ndata: {}\n\n", Value::Object(data)).as_bytes(),
        );
    }

    fn start(&mut self) -> Bytes {
        let mut out = Vec::new();
        let object = self
            .echo
            .object("in_progress", Vec::new(), Value::Null, &[]);
        self.event(&mut out, "response.created", json!({"response": object}));
        self.event(
            &mut out,
            "response.in_progress",
            json!({"response": object}),
        );
        Bytes::from(out)
    }

    /// The events of one chunk of the chat stream (whole `data:` events; a partial one waits).
    fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            for line in text.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    self.data(&mut out, data.trim());
                }
            }
        }
        Bytes::from(out)
    }

    fn data(&mut self, out: &mut Vec<u8>, data: &str) {
        if self.ended {
            return;
        }
        if data == "[DONE]" {
            self.close(out, "completed");
            let (status, incomplete) = ending(self.finish_reason.as_deref());
            if self.output.is_empty() {
                // Nothing was said: an empty message, as a complete answer has.
                self.open_message(out);
                self.close(out, "completed");
            }
            let object = self.echo.object(
                status,
                self.output.clone(),
                self.usage.clone().unwrap_or(Value::Null),
                &[("incomplete_details", incomplete)],
            );
            let kind = if status == "completed" {
                "response.completed"
            } else {
                "response.incomplete"
            };
            self.event(out, kind, json!({"response": object}));
            self.ended = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(error) = chunk.get("error") {
            self.fail(out, error);
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(self::usage(usage));
        }
        for choice in chunk["choices"].as_array().map_or(&[][..], Vec::as_slice) {
            let delta = &choice["delta"];
            if let Some(text) = delta["reasoning_content"]
                .as_str()
                .filter(|t| !t.is_empty())
            {
                self.reasoning_delta(out, text);
            }
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                self.text_delta(out, text);
            }
            for call in delta["tool_calls"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
            {
                self.call_delta(out, call);
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_owned());
            }
        }
    }

    fn reasoning_delta(&mut self, out: &mut Vec<u8>, text: &str) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out, "completed");
            let index = self.output.len();
            let id = self.echo.item_id("rs", index);
            let item = json!({"type": "reasoning", "id": id, "summary": []});
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            self.event(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            );
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.output.len();
        if let Some(Open::Reasoning { id, text: all }) = &mut self.open {
            all.push_str(text);
            let id = id.clone();
            self.event(
                out,
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
            );
        }
    }

    fn open_message(&mut self, out: &mut Vec<u8>) {
        self.close(out, "completed");
        let index = self.output.len();
        let id = self.echo.item_id("msg", index);
        let item = message_item(&id, "in_progress", Vec::new());
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")}),
        );
        self.open = Some(Open::Message {
            id,
            text: String::new(),
        });
    }

    fn text_delta(&mut self, out: &mut Vec<u8>, text: &str) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.open_message(out);
        }
        let index = self.output.len();
        if let Some(Open::Message { id, text: all }) = &mut self.open {
            all.push_str(text);
            let id = id.clone();
            self.event(
                out,
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "delta": text, "logprobs": []}),
            );
        }
    }

    fn call_delta(&mut self, out: &mut Vec<u8>, call: &Value) {
        let index = call["index"].as_u64().unwrap_or(0);
        if let Some(call_id) = call["id"].as_str() {
            self.close(out, "completed");
            let output_index = self.output.len();
            let id = self.echo.item_id("fc", output_index);
            let name = call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let item = call_item(&id, "in_progress", call_id, &name, "");
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            );
            self.open = Some(Open::Call {
                id,
                index,
                call_id: call_id.to_owned(),
                name,
                arguments: String::new(),
            });
        }
        let delta = call["function"]["arguments"].as_str().unwrap_or_default();
        if delta.is_empty() {
            return;
        }
        let output_index = self.output.len();
        if let Some(Open::Call {
            id,
            index: open,
            arguments,
            ..
        }) = &mut self.open
            && *open == index
        {
            arguments.push_str(delta);
            let id = id.clone();
            self.event(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": output_index, "delta": delta}),
            );
        }
    }

    /// Ends the open item, if any, with `status`.
    fn close(&mut self, out: &mut Vec<u8>, status: &str) {
        let index = self.output.len();
        let item = match self.open.take() {
            None => return,
            Some(Open::Reasoning { id, text }) => {
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
                reasoning_item(&id, &text)
            }
            Some(Open::Message { id, text }) => {
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": text_part(&text)}),
                );
                message_item(&id, status, vec![text_part(&text)])
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            }) => {
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name,
                           "arguments": arguments}),
                );
                call_item(&id, status, &call_id, &name, &arguments)
            }
        };
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    /// The answer failed midway (`error` is the chat stream's error body): an `error` event,
    /// then `response.failed` with what was produced.
    fn fail(&mut self, out: &mut Vec<u8>, error: &Value) {
        self.close(out, "incomplete");
        let code = error["type"].clone();
        let message = error["message"].clone();
        self.event(
            out,
            "error",
            json!({"code": code, "message": message, "param": error["param"].clone()}),
        );
        let object = self.echo.object(
            "failed",
            self.output.clone(),
            self.usage.clone().unwrap_or(Value::Null),
            &[("error", json!({"code": code, "message": message}))],
        );
        self.event(out, "response.failed", json!({"response": object}));
        self.ended = true;
    }

    /// The chat stream ended. An answer that did not end (it cannot happen but for a stream
    /// cut without an error) fails.
    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        if !self.ended {
            self.fail(
                &mut out,
                &json!({"type": "upstream_error",
                        "message": "the answer ended before it was complete"}),
            );
        }
        Bytes::from(out)
    }
}
