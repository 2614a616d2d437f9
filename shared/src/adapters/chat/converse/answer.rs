//! Converse's answers back in OpenAI's terms: stop reasons, token usage, and JSON documents.

#[allow(
    clippy::wildcard_imports,
    reason = "the translation's own types and helpers"
)]
use super::*;

/// OpenAI's `finish_reason` for a Converse stop reason.
pub fn finish_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFiltered | StopReason::GuardrailIntervened => "content_filter",
        other => {
            tracing::warn!(stop_reason = %other.as_str(), "unmapped Bedrock stop reason, reported as stop");
            "stop"
        }
    }
}

/// Bedrock's token counts; the 1-hour cache writes from `cacheDetails` (the writes it does not
/// list by TTL were written for five minutes).
pub fn token_usage(usage: Option<&aws_sdk_bedrockruntime::types::TokenUsage>) -> TokenUsage {
    let count = |n: i32| u64::try_from(n).unwrap_or(0);
    usage.map_or_else(TokenUsage::default, |u| {
        let cache_write_1h = u
            .cache_details()
            .iter()
            .filter(|d| *d.ttl() == aws_sdk_bedrockruntime::types::CacheTtl::OneHour)
            .map(|d| count(d.input_tokens()))
            .sum::<u64>();
        TokenUsage {
            input: count(u.input_tokens()),
            output: count(u.output_tokens()),
            cache_read: count(u.cache_read_input_tokens().unwrap_or(0)),
            cache_write: count(u.cache_write_input_tokens().unwrap_or(0)),
            cache_write_1h,
        }
    })
}

/// OpenAI's usage: `prompt_tokens` counts cache reads and writes, which Bedrock's input omits.
pub fn openai_usage(usage: &TokenUsage) -> Usage {
    let prompt = usage.input + usage.cache_read + usage.cache_write;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: usage.output,
        total_tokens: prompt + usage.output,
        prompt_tokens_details: crate::openai::PromptTokensDetails {
            cached_tokens: usage.cache_read,
            cache_creation_tokens: usage.cache_write,
            cache_creation_token_details: crate::openai::CacheCreation::of(usage),
        },
        cache_read_input_tokens: usage.cache_read,
        cache_creation_input_tokens: usage.cache_write,
    }
}

pub fn to_document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(to_document).collect()),
        Value::Object(map) => Document::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_document(v)))
                .collect(),
        ),
    }
}

pub fn from_document(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(from_document).collect()),
        Document::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_document(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason(&StopReason::EndTurn), "stop");
        assert_eq!(finish_reason(&StopReason::StopSequence), "stop");
        assert_eq!(finish_reason(&StopReason::MaxTokens), "length");
        assert_eq!(finish_reason(&StopReason::ToolUse), "tool_calls");
        assert_eq!(
            finish_reason(&StopReason::ContentFiltered),
            "content_filter"
        );
        assert_eq!(
            finish_reason(&StopReason::GuardrailIntervened),
            "content_filter"
        );
        assert_eq!(finish_reason(&StopReason::from("something_new")), "stop");
    }

    #[test]
    fn prompt_tokens_include_the_cache() {
        let usage = openai_usage(&TokenUsage {
            input: 10,
            output: 5,
            cache_read: 100,
            cache_write: 20,
            cache_write_1h: 15,
        });
        assert_eq!(usage.prompt_tokens, 130);
        assert_eq!(usage.total_tokens, 135);
        assert_eq!(usage.prompt_tokens_details.cached_tokens, 100);
        let written = usage.prompt_tokens_details.cache_creation_token_details;
        assert_eq!(
            (
                written.ephemeral_5m_input_tokens,
                written.ephemeral_1h_input_tokens
            ),
            (5, 15)
        );
    }

    #[test]
    fn documents_round_trip() {
        let value = serde_json::json!({"a": [1, -2, 2.5, "x", null, true], "b": {}});
        assert_eq!(from_document(&to_document(&value)), value);
    }
}
