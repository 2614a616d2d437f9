//! A Responses request read into the chat completion it asks for. Every refusal names the
//! Responses field (`input[2].call_id`, `tools[0].type`), and is made before anything is taken.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::{
    ChatCompletionRequest, ChatMessage, Content, ContentPart, FunctionCall, FunctionDefinition,
    ImageUrl, JsonSchemaFormat, NamedFunction, NamedToolChoice, ReasoningEffort, ResponseFormat,
    StreamOptions, Tool, ToolCall, ToolChoice,
};

mod input;
mod options;

use input::input;
use options::{reasoning, text_format, tool_choice, tools};

/// The request, as the gateway serves it: the chat completion, what the response repeats of the
/// request, and where each chat message came from (for errors found later).
pub struct Parsed {
    pub chat: ChatCompletionRequest,
    pub echo: Map<String, Value>,
    /// The Responses field each chat message was made from (`instructions`, `input[3]`).
    pub origins: Vec<String>,
}

/// Fields that need state the gateway does not keep (it is stateless: the client sends the
/// whole conversation each time), or a service it does not run.
const STATEFUL: &[(&str, &str)] = &[
    (
        "previous_response_id",
        "`previous_response_id` is not supported: llmlite keeps no responses; send the whole \
         conversation in `input` (earlier `output` items included)",
    ),
    (
        "conversation",
        "`conversation` is not supported: llmlite keeps no conversations; send the whole \
         conversation in `input`",
    ),
    (
        "prompt",
        "`prompt` (a stored prompt template) is not supported: send `instructions` and `input`",
    ),
    (
        "background",
        "`background` is not supported: llmlite keeps no responses to poll; stream instead",
    ),
];

/// Fields read elsewhere or known and ignored (they change nothing Bedrock can do).
const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "temperature",
    "top_p",
    "reasoning",
    "text",
    "stream",
    "stream_options",
    "store",
    "user",
    "metadata",
    "include",
    "parallel_tool_calls",
    "max_tool_calls",
    "truncation",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "top_logprobs",
];

pub(super) fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, message)
}

/// A string with no NUL: what the model may be sent and the records may keep.
pub(super) fn text(value: &Value, param: &str) -> Result<String, ApiError> {
    match value {
        Value::String(s) if s.contains('\0') => Err(invalid(
            param,
            format!("`{param}` must not contain NUL bytes"),
        )),
        Value::String(s) => Ok(s.clone()),
        _ => Err(invalid(param, format!("`{param}` must be a string"))),
    }
}

pub(super) fn optional<'v>(body: &'v Map<String, Value>, field: &str) -> Option<&'v Value> {
    body.get(field).filter(|v| !v.is_null())
}

/// Reads `body` (a JSON value as the client sent it).
pub fn parse(body: &Value) -> Result<Parsed, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::InvalidJson(
            "the body must be a JSON object".into(),
        ));
    };
    for (field, why) in STATEFUL {
        match body.get(*field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => return Err(invalid(field, *why)),
        }
    }
    if body.get("store") == Some(&Value::Bool(true)) {
        return Err(invalid(
            "store",
            "`store: true` is not supported: llmlite keeps no responses; send `store: false` (or \
             leave it out) and send the whole conversation in `input` each time",
        ));
    }
    if let Some(store) = optional(body, "store")
        && !store.is_boolean()
    {
        return Err(invalid("store", "`store` must be a boolean"));
    }
    let model = match body.get("model") {
        Some(m @ Value::String(name)) if !name.is_empty() => text(m, "model")?,
        _ => return Err(invalid("model", "`model` is required: a model name")),
    };

    let mut messages = Vec::new();
    let mut origins = Vec::new();
    if let Some(instructions) = optional(body, "instructions") {
        let instructions = text(instructions, "instructions")?;
        if !instructions.trim().is_empty() {
            messages.push(ChatMessage::System {
                content: Content::Text(instructions),
            });
            origins.push("instructions".to_owned());
        }
    }
    input(body.get("input"), &mut messages, &mut origins)?;

    let tools = tools(optional(body, "tools"))?;
    let tool_choice = tool_choice(optional(body, "tool_choice"))?;
    let max_output_tokens = match optional(body, "max_output_tokens") {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        "max_output_tokens",
                        "`max_output_tokens` must be a positive integer",
                    )
                })?,
        ),
    };
    let number = |field: &str| -> Result<Option<f32>, ApiError> {
        match optional(body, field) {
            None => Ok(None),
            #[allow(clippy::cast_possible_truncation, reason = "a sampling parameter")]
            Some(Value::Number(n)) => Ok(n.as_f64().map(|n| n as f32)),
            Some(_) => Err(invalid(field, format!("`{field}` must be a number"))),
        }
    };
    let temperature = number("temperature")?;
    let top_p = number("top_p")?;
    let reasoning_effort = reasoning(optional(body, "reasoning"))?;
    let response_format = text_format(optional(body, "text"))?;
    let stream = match optional(body, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "`stream` must be a boolean")),
    };
    let user = match optional(body, "user") {
        None => None,
        Some(Value::String(user)) => Some(user.clone()),
        Some(_) => return Err(invalid("user", "`user` must be a string")),
    };
    let metadata = match optional(body, "metadata") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(invalid("metadata", "`metadata` must be an object")),
    };
    let service_tier = match optional(body, "service_tier") {
        None => None,
        Some(Value::String(tier)) => Some(tier.clone()),
        Some(_) => return Err(invalid("service_tier", "`service_tier` must be a string")),
    };
    if let Some(n) = optional(body, "top_logprobs")
        && n.as_u64() != Some(0)
    {
        return Err(invalid(
            "top_logprobs",
            "`top_logprobs` is not supported: Bedrock returns no log probabilities",
        ));
    }
    if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        tracing::debug!(field = %unknown.chars().take(64).collect::<String>(), "unknown Responses field ignored");
    }

    let mut echo = Map::new();
    for field in [
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tool_choice",
        "tools",
        "text",
        "reasoning",
        "metadata",
        "user",
        "parallel_tool_calls",
    ] {
        if let Some(value) = optional(body, field) {
            echo.insert(field.to_owned(), value.clone());
        }
    }

    Ok(Parsed {
        chat: ChatCompletionRequest {
            model,
            messages,
            max_tokens: None,
            max_completion_tokens: max_output_tokens,
            temperature,
            top_p,
            stop: None,
            stream: Some(stream),
            // A stream's last chunk carries the usage, which `response.completed` reports.
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            tools,
            tool_choice,
            response_format,
            reasoning_effort,
            user,
            metadata,
            n: None,
            service_tier,
            other: Map::new(),
        },
        echo,
        origins,
    })
}

/// An error found after the request became a chat completion, in the Responses request's terms:
/// `input` for `messages` (and `input[3]` for the message made from it), `max_output_tokens` for
/// `max_completion_tokens`, and so on.
pub fn in_responses_terms(error: ApiError, origins: &[String]) -> ApiError {
    let ApiError::InvalidRequest { message, param } = error else {
        return error;
    };
    let param = param.map(|p| {
        match p.as_str() {
            "messages" => "input",
            "max_tokens" | "max_completion_tokens" => "max_output_tokens",
            "response_format" => "text.format",
            "reasoning_effort" => "reasoning.effort",
            other => other,
        }
        .to_owned()
    });
    let mut message = message
        .replace("`max_completion_tokens`", "`max_output_tokens`")
        .replace("`max_tokens`", "`max_output_tokens`")
        .replace("`reasoning_effort`", "`reasoning.effort`")
        .replace("`response_format`", "`text.format`")
        .replace("`messages`", "`input`");
    // `messages[3]` names the chat message; the client sent the item it came from.
    while let Some(start) = message.find("messages[") {
        let rest = &message[start + "messages[".len()..];
        let Some(end) = rest.find(']') else { break };
        let origin = rest[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| origins.get(i))
            .map_or("input", String::as_str);
        message = format!("{}{origin}{}", &message[..start], &rest[end + 1..]);
    }
    ApiError::InvalidRequest { message, param }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> (String, String) {
        match parse(&body) {
            Err(ApiError::InvalidRequest { message, param }) => {
                (param.unwrap_or_default(), message)
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted: {body}"),
        }
    }

    #[test]
    fn stored_state_and_built_in_tools_are_refused_by_name() {
        let base = json!({"model": "m", "input": "hi"});
        let with = |field: &str, value: Value| {
            let mut body = base.clone();
            body[field] = value;
            body
        };
        assert_eq!(
            refused(with("previous_response_id", json!("resp_1"))).0,
            "previous_response_id"
        );
        assert_eq!(refused(with("store", json!(true))).0, "store");
        assert!(parse(&with("store", json!(false))).is_ok());
        let (param, message) = refused(with("tools", json!([{"type": "web_search"}])));
        assert_eq!(param, "tools[0].type");
        assert!(message.contains("web_search"), "{message}");
        assert_eq!(refused(with("input", json!(""))).0, "input");
        assert_eq!(refused(with("input", json!([]))).0, "input");
        assert_eq!(refused(with("input", json!("a\u{0}b"))).0, "input");
        assert_eq!(refused(with("input", json!(7))).0, "input");
        assert_eq!(refused(with("temperature", json!("hot"))).0, "temperature");
        let (param, message) = refused(with("model", json!("claude\u{0}")));
        assert_eq!(
            (param.as_str(), message.as_str()),
            ("model", "`model` must not contain NUL bytes")
        );
        assert_eq!(
            refused(with(
                "input",
                json!([{"type": "function_call_output", "call_id": "c 1", "output": "x"}])
            ))
            .0,
            "input[0].call_id"
        );
    }

    #[test]
    fn a_tool_loop_becomes_chat_messages() {
        let parsed = parse(&json!({
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            ],
        }))
        .unwrap();
        assert_eq!(
            parsed.origins,
            ["instructions", "input[0]", "input[2]", "input[3]"]
        );
        assert!(
            matches!(&parsed.chat.messages[3], ChatMessage::Tool { tool_call_id, .. } if tool_call_id == "call_1")
        );
        let error = in_responses_terms(
            ApiError::invalid_param("messages", "messages[2]: bad"),
            &parsed.origins,
        );
        assert_eq!(error.param(), Some("input"));
        assert_eq!(error.to_string(), "input[2]: bad");
    }
}
