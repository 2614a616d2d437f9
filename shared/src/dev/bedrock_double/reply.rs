//! The deterministic answer to a request (tool calls, tool results, `[[say64:...]]`, the echo,
//! stop sequences and the token limit) and its content blocks, whichever API renders them.

use serde_json::{Value, json};

use super::request::{InputTokens, Request, ToolChoice, words};
use super::said;

pub(super) enum Block {
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
pub(super) fn halves(text: &str) -> (&str, &str) {
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle -= 1;
    }
    text.split_at(middle)
}

pub(super) struct Reply {
    pub(super) reasoning: Option<String>,
    pub(super) text: Option<String>,
    pub(super) tool_calls: Vec<(String, Value)>,
    pub(super) stop_reason: &'static str,
    /// The stop sequence that cut the answer, if one did.
    pub(super) stop_sequence: Option<String>,
    pub(super) input_tokens: usize,
    pub(super) output_tokens: usize,
    pub(super) cache_write_tokens: usize,
    /// Whether the cache write lives an hour (else five minutes).
    pub(super) cache_write_1h: bool,
    pub(super) cache_read_tokens: usize,
}

impl Reply {
    pub(super) fn for_request(request: &Request) -> Reply {
        let InputTokens {
            total, cache_write, ..
        } = request.input_tokens();
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
            cache_write_1h: false,
            cache_read_tokens: 0,
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
        if reply.text.is_none()
            && reply.tool_calls.is_empty()
            && let Some(schema) = &request.schema
        {
            reply.text = Some(instance(schema).to_string());
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

    pub(super) fn blocks(&self) -> Vec<Block> {
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
    pub(super) fn uncached_input_tokens(&self) -> usize {
        self.input_tokens - self.cache_write_tokens - self.cache_read_tokens
    }

    /// The cache writes by TTL: (five minutes, one hour).
    pub(super) fn cache_writes(&self) -> (usize, usize) {
        if self.cache_write_1h {
            (0, self.cache_write_tokens)
        } else {
            (self.cache_write_tokens, 0)
        }
    }

    /// Converse's `cacheDetails`: the writes by TTL.
    pub(super) fn cache_details(&self) -> Value {
        let (five, hour) = self.cache_writes();
        let details: Vec<Value> = [("5m", five), ("1h", hour)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(ttl, n)| json!({ "ttl": ttl, "inputTokens": n }))
            .collect();
        Value::Array(details)
    }

    /// Anthropic's `cache_creation`: the writes by TTL.
    pub(super) fn cache_creation(&self) -> Value {
        let (five, hour) = self.cache_writes();
        json!({ "ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour })
    }
}

/// A value that conforms to `schema` (types, properties, enums, arrays): what native structured
/// output answers with.
fn instance(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|v| v.first()) {
        return first.clone();
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    match schema["type"].as_str() {
        Some("object") => Value::Object(
            schema["properties"]
                .as_object()
                .map(|properties| {
                    properties
                        .iter()
                        .map(|(name, property)| (name.clone(), instance(property)))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some("array") => {
            let n = schema["minItems"].as_u64().unwrap_or(1).clamp(1, 3);
            Value::Array((0..n).map(|_| instance(&schema["items"])).collect())
        }
        Some("string") => json!("text"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("null") => Value::Null,
        _ => json!({}),
    }
}
