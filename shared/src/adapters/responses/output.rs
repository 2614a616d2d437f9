//! Chat answers written as Responses: a `chat.completion` becomes a `response` object
//! ([`ResponseBody`]), and the chat stream's pieces become Responses events
//! (`response.created` ... `response.completed`, each with its `sequence_number`) through the
//! [`ResponsesEncoder`]. What produces them (retries, the deadline, a buffered response's limit,
//! the client hanging up, settlement) is the pipeline's.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::chat::converse;
use super::chat::stream::{ChatEvent, Kind};
use crate::catalog::TokenUsage;
use crate::error::{ApiError, ErrorShape};
use crate::openai::{ChatCompletion, Usage};
use crate::pii::OutputGuard;
use crate::pipeline::call::AnswerBody;
use crate::pipeline::invocation::escaped_len;
use crate::pipeline::relay::{END_RESERVE, Encoder};

/// What every rendering of one response shares: its ID, its time and what it repeats of the
/// request.
#[derive(Debug, Clone)]
pub struct Echo {
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
fn usage(chat: &Usage) -> Value {
    json!({
        "input_tokens": chat.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": chat.prompt_tokens_details.cached_tokens,
            "cache_creation_tokens": chat.prompt_tokens_details.cache_creation_tokens,
            "cache_creation_token_details": chat.prompt_tokens_details.cache_creation_token_details,
        },
        "output_tokens": chat.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": chat.total_tokens,
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

/// A complete answer: the chat completion written as a `response` object.
pub struct ResponseBody {
    pub completion: ChatCompletion,
    pub echo: Echo,
}

impl AnswerBody for ResponseBody {
    fn screen(&mut self, output: &mut OutputGuard) {
        self.completion.screen(output);
    }

    fn texts(&mut self) -> Vec<&mut String> {
        self.completion.texts()
    }

    fn into_bytes(self) -> Vec<u8> {
        let ResponseBody { completion, echo } = self;
        let Some(choice) = completion.choices.first() else {
            return Vec::new();
        };
        let message = &choice.message;
        let mut output = Vec::new();
        if let Some(reasoning) = &message.reasoning_content {
            output.push(reasoning_item(&echo.item_id("rs", output.len()), reasoning));
        }
        let calls = message.tool_calls.as_deref().unwrap_or_default();
        match message.content.as_deref() {
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
                &call.id,
                &call.function.name,
                &call.function.arguments,
            ));
        }
        let (status, incomplete) = ending(Some(choice.finish_reason));
        let object = echo.object(
            status,
            output,
            usage(&completion.usage),
            &[("incomplete_details", incomplete)],
        );
        object.to_string().into_bytes()
    }
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
        index: u32,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Writes a chat answer's pieces as Responses events.
pub struct ResponsesEncoder {
    echo: Echo,
    sequence: u64,
    /// The finished output items.
    output: Vec<Value>,
    open: Option<Open>,
    finish_reason: Option<String>,
    /// The response's last event has been written.
    ended: bool,
    /// The text written so far, as a buffered response counts it: the ending repeats it.
    text_bytes: usize,
}

impl ResponsesEncoder {
    pub fn new(echo: Echo) -> ResponsesEncoder {
        ResponsesEncoder {
            echo,
            sequence: 0,
            output: Vec::new(),
            open: None,
            finish_reason: None,
            ended: false,
            text_bytes: 0,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, fields: Value) {
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

    fn reasoning_delta(&mut self, out: &mut Vec<u8>, text: &str) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out, "completed");
            let index = self.output.len();
            let id = self.echo.item_id("rs", index);
            let item = json!({"type": "reasoning", "id": id, "summary": []});
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            self.emit(
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
            self.emit(
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
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        self.emit(
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
            self.emit(
                out,
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "delta": text, "logprobs": []}),
            );
        }
    }

    fn open_call(&mut self, out: &mut Vec<u8>, index: u32, call_id: String, name: String) {
        self.close(out, "completed");
        let output_index = self.output.len();
        let id = self.echo.item_id("fc", output_index);
        let item = call_item(&id, "in_progress", &call_id, &name, "");
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        self.open = Some(Open::Call {
            id,
            index,
            call_id,
            name,
            arguments: String::new(),
        });
    }

    fn arguments_delta(&mut self, out: &mut Vec<u8>, index: u32, delta: &str) {
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
            self.emit(
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
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
                reasoning_item(&id, &text)
            }
            Some(Open::Message { id, text }) => {
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.emit(
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
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name,
                           "arguments": arguments}),
                );
                call_item(&id, status, &call_id, &name, &arguments)
            }
        };
        self.emit(
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
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": error["param"].clone()}),
        );
        let object = self.echo.object(
            "failed",
            self.output.clone(),
            Value::Null,
            &[("error", json!({"code": code, "message": message}))],
        );
        self.emit(out, "response.failed", json!({"response": object}));
        self.ended = true;
    }
}

impl Encoder<Kind, ChatEvent> for ResponsesEncoder {
    fn start(&mut self) -> Bytes {
        let mut out = Vec::new();
        let object = self
            .echo
            .object("in_progress", Vec::new(), Value::Null, &[]);
        self.emit(&mut out, "response.created", json!({"response": object}));
        self.emit(
            &mut out,
            "response.in_progress",
            json!({"response": object}),
        );
        Bytes::from(out)
    }

    fn text(&mut self, _block: i64, kind: Kind, text: String) -> Bytes {
        let mut out = Vec::new();
        if self.ended {
            return Bytes::new();
        }
        self.text_bytes += wire_len(&text);
        match kind {
            Kind::Content => self.text_delta(&mut out, &text),
            Kind::Reasoning => self.reasoning_delta(&mut out, &text),
            Kind::Arguments(index) => self.arguments_delta(&mut out, index, &text),
        }
        Bytes::from(out)
    }

    fn event(&mut self, event: ChatEvent) -> Bytes {
        let mut out = Vec::new();
        match event {
            ChatEvent::ToolCall { index, id, name } => {
                self.text_bytes += name.len();
                self.open_call(&mut out, index, id, name);
            }
            ChatEvent::Finish(reason) => self.finish_reason = Some(reason.to_owned()),
        }
        Bytes::from(out)
    }

    fn end(&mut self, used: &TokenUsage) -> Bytes {
        let mut out = Vec::new();
        if self.ended {
            return Bytes::new();
        }
        self.close(&mut out, "completed");
        let (status, incomplete) = ending(self.finish_reason.as_deref());
        if self.output.is_empty() {
            // Nothing was said: an empty message, as a complete answer has.
            self.open_message(&mut out);
            self.close(&mut out, "completed");
        }
        let object = self.echo.object(
            status,
            self.output.clone(),
            usage(&converse::openai_usage(used)),
            &[("incomplete_details", incomplete)],
        );
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(&mut out, kind, json!({"response": object}));
        self.ended = true;
        Bytes::from(out)
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        let mut out = Vec::new();
        if !self.ended {
            let body = ErrorShape::OpenAi.body(error);
            self.fail(&mut out, &body["error"]);
        }
        Bytes::from(out)
    }

    /// The ending repeats every text written (the `.done` events, the finished items and the
    /// `response` object): room for four copies of it.
    fn reserve(&self) -> usize {
        END_RESERVE + 4 * self.text_bytes
    }

    fn reserve_after(&self, text: &str) -> usize {
        END_RESERVE + 4 * (self.text_bytes + wire_len(text))
    }
}

/// The bytes `text` takes as the receiver counts them: JSON-escaped in an event, which is
/// JSON-escaped again in the load balancer's response document.
fn wire_len(text: &str) -> usize {
    let encoded = serde_json::to_string(text).unwrap_or_default();
    escaped_len(encoded.as_bytes())
}
