//! The one request model both wire formats are read into, so a reply and its token counts do not
//! depend on the API that asked; token counts are word counts.

use serde_json::Value;

/// One piece of a request's content, whichever API it came in.
pub(super) enum Part {
    Text(String),
    Image {
        format: String,
        bytes: usize,
    },
    /// Everything before it (system and messages) is written to the cache, for its `ttl` as
    /// sent (`None`: Bedrock's default, five minutes).
    CachePoint(Option<String>),
    /// The texts of one tool result.
    ToolResult(Vec<String>),
    /// Tool calls, reasoning, documents and the rest: no words counted, no effect on the reply.
    Other,
}

pub(super) struct Turn {
    pub(super) user: bool,
    pub(super) parts: Vec<Part>,
}

pub(super) enum ToolChoice {
    Auto,
    Any,
    Tool(String),
    None,
}

/// A request, whichever API it came in: what the replies and the token counts derive from.
pub(super) struct Request {
    pub(super) system: Vec<Part>,
    pub(super) turns: Vec<Turn>,
    pub(super) tools: Vec<String>,
    pub(super) tool_choice: ToolChoice,
    pub(super) max_tokens: Option<usize>,
    pub(super) stop_sequences: Vec<String>,
    pub(super) thinking: bool,
    /// The JSON schema of native structured output (Converse's `outputConfig.textFormat`): the
    /// answer is an instance of it.
    pub(super) schema: Option<Value>,
    /// Why Bedrock would refuse it (a ValidationException), if it would.
    pub(super) problem: Option<String>,
}

/// The input tokens of a request: all of them, and those before its first cache point.
pub(super) struct InputTokens {
    pub(super) total: usize,
    pub(super) cache_write: usize,
    /// The first cache point: its TTL (`"5m"` or `"1h"`) and a digest of everything before it,
    /// which is what the cache is keyed by.
    pub(super) cache_point: Option<(String, u64)>,
}

pub(super) fn strings(value: &Value) -> Vec<String> {
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
pub(super) fn block_texts(blocks: &Value) -> Vec<String> {
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
pub(super) fn base64_size(data: &Value) -> usize {
    data.as_str().map_or(0, |b| b.len() * 3 / 4)
}

pub(super) fn as_count(value: &Value) -> Option<usize> {
    value
        .as_u64()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

impl Request {
    pub(super) fn last_user_text(&self) -> String {
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

    pub(super) fn input_tokens(&self) -> InputTokens {
        use std::hash::{Hash, Hasher};
        let mut total = 0;
        let mut cache_write = 0;
        let mut cache_point = None;
        let mut prefix = std::collections::hash_map::DefaultHasher::new();
        let parts = self
            .system
            .iter()
            .chain(self.turns.iter().flat_map(|t| &t.parts));
        for part in parts {
            match part {
                Part::Text(text) => {
                    total += words(text);
                    text.hash(&mut prefix);
                }
                Part::Image { format, bytes } => {
                    total += 100;
                    (format, bytes).hash(&mut prefix);
                }
                Part::CachePoint(ttl) if cache_point.is_none() && total > 0 => {
                    cache_write = total;
                    let ttl = ttl.clone().unwrap_or_else(|| "5m".to_owned());
                    cache_point = Some((ttl, prefix.finish()));
                }
                _ => {}
            }
        }
        InputTokens {
            total,
            cache_write,
            cache_point,
        }
    }

    /// A cache point's `ttl` Bedrock refuses: anything but `"5m"` and `"1h"`.
    pub(super) fn bad_cache_ttl(&self) -> Option<String> {
        self.system
            .iter()
            .chain(self.turns.iter().flat_map(|t| &t.parts))
            .find_map(|part| match part {
                Part::CachePoint(Some(ttl)) if ttl != "5m" && ttl != "1h" => Some(format!(
                    "The provided cache TTL `{ttl}` is not valid: use 5m or 1h."
                )),
                _ => None,
            })
    }

    /// A note of the last image in the conversation, for the echo.
    pub(super) fn image_note(&self) -> Option<String> {
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
    pub(super) fn tool_results(&self) -> Vec<String> {
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

pub(super) fn words(text: &str) -> usize {
    text.split_whitespace().count()
}
