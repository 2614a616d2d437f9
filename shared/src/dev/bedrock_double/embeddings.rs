//! InvokeModel with an embedding model's body: Titan Text Embeddings and Cohere Embed, their
//! validation as Bedrock does it, and the deterministic vectors a test can reproduce.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::request::words;
use super::{DoubleState, behaviour_for, failures, validation_error};

/// The embedding model families the double answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EmbeddingApi {
    Titan,
    Cohere,
}

impl EmbeddingApi {
    pub(super) fn of(model_id: &str) -> Option<EmbeddingApi> {
        if model_id.contains("titan-embed") {
            Some(EmbeddingApi::Titan)
        } else if model_id.contains("cohere.embed") {
            Some(EmbeddingApi::Cohere)
        } else {
            None
        }
    }
}

const TITAN_DIMENSIONS: &[u64] = &[256, 512, 1024];
const COHERE_MAX_TEXTS: usize = 96;
const COHERE_INPUT_TYPES: &[&str] = &[
    "search_document",
    "search_query",
    "classification",
    "clustering",
];

/// The texts and vector length an embedding body asks for, or Bedrock's complaint about it.
fn embedding_request(api: EmbeddingApi, body: &Value) -> Result<(Vec<String>, usize), String> {
    let Some(fields) = body.as_object() else {
        return Err("Malformed input request: expected an object".into());
    };
    let allowed: &[&str] = match api {
        EmbeddingApi::Titan => &["inputText", "dimensions", "normalize", "embeddingTypes"],
        EmbeddingApi::Cohere => &["texts", "input_type", "truncate", "embedding_types"],
    };
    if let Some(extra) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: extraneous key [{extra}] is not permitted, please reformat your input and try again."
        ));
    }
    match api {
        EmbeddingApi::Titan => {
            let text = match body.get("inputText") {
                Some(Value::String(text)) if !text.is_empty() => text.clone(),
                _ => {
                    return Err(
                        "Malformed input request: #/inputText: expected a non-empty string".into(),
                    );
                }
            };
            let dimensions = match body.get("dimensions") {
                None => 1024,
                Some(d) => match d.as_u64().filter(|d| TITAN_DIMENSIONS.contains(d)) {
                    Some(d) => d as usize,
                    None => {
                        return Err(format!(
                            "Malformed input request: #/dimensions: {d} is not a valid enum value"
                        ));
                    }
                },
            };
            Ok((vec![text], dimensions))
        }
        EmbeddingApi::Cohere => {
            let Some(texts) = body.get("texts").and_then(Value::as_array) else {
                return Err("Malformed input request: #: required key [texts] not found".into());
            };
            if texts.len() > COHERE_MAX_TEXTS {
                return Err(format!(
                    "Malformed input request: #/texts: expected maximum item count: {COHERE_MAX_TEXTS}, found: {}",
                    texts.len()
                ));
            }
            if texts.is_empty() {
                return Err(
                    "Malformed input request: #/texts: expected minimum item count: 1, found: 0"
                        .into(),
                );
            }
            let texts: Option<Vec<String>> = texts
                .iter()
                .map(|t| t.as_str().filter(|t| !t.is_empty()).map(str::to_owned))
                .collect();
            let Some(texts) = texts else {
                return Err("Malformed input request: #/texts: expected non-empty strings".into());
            };
            match body.get("input_type").and_then(Value::as_str) {
                Some(t) if COHERE_INPUT_TYPES.contains(&t) => Ok((texts, 1024)),
                Some(t) => Err(format!(
                    "Malformed input request: #/input_type: {t} is not a valid enum value"
                )),
                None => {
                    Err("Malformed input request: #: required key [input_type] not found".into())
                }
            }
        }
    }
}

/// The double's vector for `text`: deterministic, and reproducible by a test from the text
/// alone (see the module comment).
pub fn embedding_vector(text: &str, dimensions: usize) -> Vec<f32> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    (0..dimensions)
        .map(|j| {
            let byte = digest[j % 32] ^ ((j / 32) % 256) as u8;
            (2.0 * f32::from(byte) - 255.0) / 256.0
        })
        .collect()
}

pub(super) async fn embed(
    state: &DoubleState,
    model_id: &str,
    api: EmbeddingApi,
    body: &Value,
) -> Response {
    let (texts, dimensions) = match embedding_request(api, body) {
        Ok(request) => request,
        Err(problem) => return validation_error(&problem),
    };
    let behaviour = behaviour_for(state, model_id, &texts.join("\n"));
    if let Err(response) = failures(&behaviour).await {
        return response;
    }
    let tokens: usize = texts.iter().map(|t| words(t)).sum();
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| embedding_vector(t, dimensions))
        .collect();
    let answer = match api {
        EmbeddingApi::Titan => json!({
            "embedding": vectors.first(),
            "inputTextTokenCount": tokens,
        }),
        EmbeddingApi::Cohere => json!({
            "id": format!("emb-{}", state.next_message_id()),
            "texts": texts,
            "embeddings": vectors,
            "response_type": "embeddings_floats",
        }),
    };
    (
        [
            ("content-type", "application/json".to_owned()),
            ("x-amzn-bedrock-input-token-count", tokens.to_string()),
            (
                "x-amzn-bedrock-invocation-latency",
                (behaviour.latency_ms.unwrap_or(0) + 1).to_string(),
            ),
        ],
        answer.to_string(),
    )
        .into_response()
}
