//! An embeddings request as the client sent it, read field by field so that every refusal names
//! the field at fault (a typed parse would say only "invalid type" and a column).

use serde_json::{Map, Value};

use crate::catalog::{EmbeddingApi, ModelEntry};
use crate::error::ApiError;
use crate::pipeline::{check_end_user, check_metadata};

/// The most inputs one request may carry, as OpenAI allows.
pub const MAX_INPUTS: usize = 2048;

/// Cohere's `input_type` values; llmlite sends `search_document` when a request names none.
const INPUT_TYPES: &[&str] = &[
    "search_document",
    "search_query",
    "classification",
    "clustering",
];

/// How the vectors are written in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON numbers.
    Float,
    /// The little-endian `f32` bytes, base64-encoded (what the OpenAI SDKs ask for by default).
    Base64,
}

/// A parsed request: what can be refused without the catalog has been.
#[derive(Debug, Clone)]
pub struct EmbeddingRequest {
    pub model: String,
    pub inputs: Vec<String>,
    pub encoding: Encoding,
    pub dimensions: Option<u32>,
    pub input_type: Option<String>,
    pub user: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, message)
}

/// The fields OpenAI's request has, and `input_type` and `metadata` (llmlite's).
const KNOWN: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "user",
    "input_type",
    "metadata",
];

/// Reads `body`, refusing (naming the field) what no model could serve or no row could keep.
pub fn parse(body: &Map<String, Value>) -> Result<EmbeddingRequest, ApiError> {
    if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(
            unknown,
            format!("`{unknown}` is not a field of an embeddings request"),
        ));
    }
    let model = match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        None | Some(Value::Null) => return Err(invalid("model", "`model` is required")),
        Some(_) => return Err(invalid("model", "`model` must be a non-empty string")),
    };
    let inputs = inputs(body.get("input"))?;
    let encoding = match body.get("encoding_format") {
        None | Some(Value::Null) => Encoding::Float,
        Some(Value::String(f)) if f == "float" => Encoding::Float,
        Some(Value::String(f)) if f == "base64" => Encoding::Base64,
        Some(_) => {
            return Err(invalid(
                "encoding_format",
                "`encoding_format` must be `float` or `base64`",
            ));
        }
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|d| *d > 0)
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| invalid("dimensions", "`dimensions` must be a positive integer"))?,
        ),
    };
    let input_type = match body.get("input_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if INPUT_TYPES.contains(&t.as_str()) => Some(t.clone()),
        Some(_) => {
            return Err(invalid(
                "input_type",
                format!("`input_type` must be one of {}", INPUT_TYPES.join(", ")),
            ));
        }
    };
    let user = match body.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(user)) => Some(user.clone()),
        Some(_) => return Err(invalid("user", "`user` must be a string")),
    };
    check_end_user(user.as_deref(), "user")?;
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => return Err(invalid("metadata", "`metadata` must be an object")),
    };
    check_metadata(metadata.as_ref())?;
    Ok(EmbeddingRequest {
        model,
        inputs,
        encoding,
        dimensions,
        input_type,
        user,
        metadata,
    })
}

/// `input`: a string or an array of 1 to 2,048 strings. Token arrays (an array of integers, or
/// of arrays of integers) are refused: Bedrock's embedding models take text only.
fn inputs(input: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let token_arrays = || {
        invalid(
            "input",
            "`input` holds token arrays, which Bedrock's embedding models cannot take: send the \
             text as a string or an array of strings",
        )
    };
    let texts = match input {
        None | Some(Value::Null) => return Err(invalid("input", "`input` is required")),
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid("input", "`input` must not be an empty array"));
        }
        Some(Value::Array(items)) if items.len() > MAX_INPUTS => {
            return Err(invalid(
                "input",
                format!(
                    "`input` has {} items; at most {MAX_INPUTS} may be sent in one request",
                    items.len()
                ),
            ));
        }
        Some(Value::Array(items)) => {
            let is_tokens = |v: &Value| {
                v.is_i64()
                    || v.is_u64()
                    || v.as_array().is_some_and(|t| {
                        !t.is_empty() && t.iter().all(|n| n.is_i64() || n.is_u64())
                    })
            };
            if items.iter().all(is_tokens) {
                return Err(token_arrays());
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => Ok(text.clone()),
                    _ => Err(invalid(
                        "input",
                        format!("`input[{i}]` must be a string (an array mixes types)"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => {
            return Err(invalid(
                "input",
                "`input` must be a string or an array of strings",
            ));
        }
    };
    for (i, text) in texts.iter().enumerate() {
        let at = if texts.len() == 1 && matches!(input, Some(Value::String(_))) {
            "`input`".to_owned()
        } else {
            format!("`input[{i}]`")
        };
        if text.trim().is_empty() {
            return Err(invalid("input", format!("{at} must not be empty")));
        }
        if text.contains('\0') {
            return Err(invalid("input", format!("{at} must not contain NUL bytes")));
        }
    }
    Ok(texts)
}

/// Checks what depends on the model: `dimensions` where it has a choice of them, `input_type`
/// where it takes one. Returns the vector length the answer will have.
pub fn fit(request: &EmbeddingRequest, model: &ModelEntry) -> Result<u32, ApiError> {
    let Some(spec) = &model.embedding else {
        return Err(invalid(
            "model",
            format!(
                "model `{}` is a chat model: POST /v1/chat/completions serves it",
                model.alias
            ),
        ));
    };
    if request.input_type.is_some() && spec.api != EmbeddingApi::Cohere {
        return Err(invalid(
            "input_type",
            format!(
                "model `{}` takes no `input_type` (Cohere's models do)",
                model.alias
            ),
        ));
    }
    match request.dimensions {
        None => Ok(spec.dimensions),
        Some(_) if spec.dimension_choices.is_empty() => Err(invalid(
            "dimensions",
            format!(
                "model `{}` does not take `dimensions`: its vectors have {}",
                model.alias, spec.dimensions
            ),
        )),
        Some(d) if spec.dimension_choices.contains(&d) => Ok(d),
        Some(d) => Err(invalid(
            "dimensions",
            format!(
                "model `{}` does not make {d}-dimension vectors; `dimensions` may be {}",
                model.alias,
                spec.dimension_choices
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The prompt tokens admission takes: four bytes a token, per text, rounded up.
pub fn estimate_tokens(inputs: &[String]) -> u64 {
    inputs.iter().map(|t| (t.len() as u64).div_ceil(4)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(body: Value) -> Result<EmbeddingRequest, ApiError> {
        match body {
            Value::Object(map) => parse(&map),
            _ => Err(ApiError::invalid_request("not an object")),
        }
    }

    fn param(body: Value) -> Option<String> {
        match parsed(body) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn strings_and_arrays_of_strings_are_read_in_order() {
        let one = parsed(json!({"model": "m", "input": "hi"})).ok();
        assert_eq!(one.map(|r| r.inputs), Some(vec!["hi".to_owned()]));
        let many = parsed(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}));
        let many = many.ok();
        assert_eq!(
            many.as_ref().map(|r| r.inputs.clone()),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(many.map(|r| r.encoding), Some(Encoding::Base64));
    }

    #[test]
    fn bad_input_is_refused_naming_the_field() {
        let too_many: Vec<String> = (0..=MAX_INPUTS).map(|i| i.to_string()).collect();
        for (body, field) in [
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": too_many}), "input"),
            (json!({"model": "m", "input": [1, 2, 3]}), "input"),
            (json!({"model": "m", "input": [[1, 2], [3]]}), "input"),
            (json!({"model": "m", "input": ""}), "input"),
            (json!({"model": "m", "input": ["ok", " "]}), "input"),
            (json!({"model": "m", "input": "a\u{0}b"}), "input"),
            (json!({"model": "m", "input": 5}), "input"),
            (json!({"model": "m", "input": ["a", 5]}), "input"),
            (json!({"model": "m"}), "input"),
            (json!({"model": 5, "input": "x"}), "model"),
            (json!({"input": "x"}), "model"),
            (
                json!({"model": "m", "input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": "256"}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "x", "user": "a\u{0}"}),
                "user",
            ),
            (
                json!({"model": "m", "input": "x", "input_type": "poem"}),
                "input_type",
            ),
            (
                json!({"model": "m", "input": "x", "metadata": []}),
                "metadata",
            ),
            (
                json!({"model": "m", "input": "x", "temperature": 1}),
                "temperature",
            ),
        ] {
            assert_eq!(param(body.clone()).as_deref(), Some(field), "{body}");
        }
    }

    #[test]
    fn the_estimate_is_four_bytes_a_token_per_text() {
        assert_eq!(estimate_tokens(&["aaaa".into(), "aaaaa".into()]), 3);
    }
}
