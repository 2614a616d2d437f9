//! `POST /v1/embeddings` (and `/embeddings`): OpenAI's embeddings on Bedrock's embedding models
//! (Amazon Titan Text Embeddings v2, Cohere Embed v3) through InvokeModel.
//!
//! The request takes the chat path: parse (every refusal names its field, before anything is
//! taken), admit the whole batch's estimate once, guard every input for PII, call, answer, settle
//! once (`call_type` `aembedding`). A batch is split to the model's per-call limit and the parts
//! called concurrently, within a bound; the vectors come back in the inputs' order. A part that
//! fails fails the request, which still pays for the parts Bedrock answered.

mod invoke;
pub mod request;

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, header};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::admission::Refusal;
use crate::auth;
use crate::catalog::{ModelAlias, ModelEntry, TokenUsage};
use crate::chat::record::{CallType, Client, RequestRecord, Status};
use crate::chat::{self, BearerKey, Delivery, Invocation};
use crate::error::ApiError;
use crate::http::{ApiJson, RequestId};
use crate::state::AppState;
use invoke::{Planned, Progress};
use request::{EmbeddingRequest, Encoding};

/// `POST /v1/embeddings`.
pub async fn embeddings(
    BearerKey(key): BearerKey,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, Refusal> {
    let arrived = std::time::Instant::now();
    let invocation = invocation.map(|Extension(i)| i).unwrap_or_default();
    // Parse: everything that can be refused is refused here, before anything is taken.
    let mut request = request::parse(&body)?;
    let model = embedding_model(&state, &key, &request.model).await?;
    let dimensions = request::fit(&request, &model)?;
    fits_delivery(&request, dimensions, invocation.delivery)?;
    if invocation.out_of_time() {
        return Err(ApiError::UpstreamTimeout(
            "the gateway has no time left in this invocation; retry".into(),
        )
        .into());
    }
    let estimate = request::estimate_tokens(&request.inputs);
    let planned = Planned {
        model: Arc::clone(&model),
    };
    let mut record = RequestRecord::new(
        request_id,
        state.clock.now(),
        ModelAlias::new(&request.model),
        Client::from_headers(&headers),
    );
    record.call_type = CallType::Aembedding;

    // Admit the whole batch once: one round trip; a refusal is recorded, with nothing to settle.
    let plan = std::slice::from_ref(&planned);
    let (admitted, mut record) = chat::admit(
        &state,
        &key,
        &request.model,
        plan,
        (request_id, estimate),
        record,
        arrived,
    )
    .await?;
    record.payer = admitted.payer.clone();
    record.end_user = request.user.clone();
    record.metadata = chat::accounting_metadata(request.metadata.as_ref());
    record.estimated_input = estimate;

    // Guard: from here every way out settles exactly once.
    let mut guard = state.settlements.guard(&state, record, arrived);
    guard.for_model(Arc::clone(&model));
    state.hooks.after_admission();
    let policy = admitted.pii_policy(&state.config.pii_policy, &state.pii.entity_names());
    let report = state.pii.guard_texts(request.inputs.iter_mut(), &policy);
    let record = guard.record();
    record.pii = report.to_json();
    if !report.counts.is_empty()
        && let Value::Object(metadata) = &mut record.metadata
    {
        metadata.insert("llmlite_pii".to_owned(), report.to_json());
    }
    if !report.blocked.is_empty() {
        let error = ApiError::PiiBlocked {
            entities: report.blocked_summary(),
        };
        return Err(chat::fail(guard, error));
    }

    // Call every part; the bodies are built from the guarded (masked) inputs.
    let parts = invoke::parts(
        &model,
        &request.inputs,
        dimensions,
        request.input_type.as_deref(),
    );
    let mut progress = Progress::new(parts.len());
    let upstream = std::time::Instant::now();
    let finished = chat::until_deadline(
        &invocation,
        invoke::call_all(&state, &planned, &request.model, &parts, &mut progress),
    )
    .await;
    guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
    let charge = |tokens: u64| TokenUsage {
        input: tokens,
        ..TokenUsage::default()
    };
    if finished.is_none() {
        // Cut: the parts that answered are paid at Bedrock's count, those in flight at the
        // estimate (their texts were read).
        let tokens = progress.tokens() + progress.unanswered_estimate(&parts);
        guard.record().charge(&model, charge(tokens));
        return Err(chat::end(guard, chat::deadline_error(), Status::Deadline));
    }
    let tokens = progress.tokens();
    if let Some(error) = progress.failure.take() {
        if tokens > 0 {
            guard.record().charge(&model, charge(tokens));
        }
        return Err(chat::fail(guard, error));
    }
    let vectors = progress
        .answers
        .into_iter()
        .flatten()
        .flat_map(|e| e.vectors);
    let body = answer_body(vectors, &request, tokens);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let record = guard.record();
    record.charge(&model, charge(tokens));
    record.response_bytes = bytes.len() as u64;
    record.status_code = 200;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    chat::write_headers(
        response.headers_mut(),
        &admitted,
        guard.record_ref(),
        Some(&model),
    );
    guard.finish(Status::Success);
    Ok(response)
}

/// The embedding model `alias` names: a 404 (to a caller whose key works) when there is none,
/// a 400 when it names a chat model.
async fn embedding_model(
    state: &AppState,
    key: &str,
    alias: &str,
) -> Result<Arc<ModelEntry>, ApiError> {
    match state.config.catalog.get(alias) {
        Some(model) if model.embedding.is_some() => Ok(Arc::clone(model)),
        Some(model) => Err(ApiError::invalid_param(
            "model",
            format!(
                "model `{}` is a chat model, not an embedding model: POST /v1/chat/completions \
                 serves it (GET /v1/models lists the models)",
                model.alias
            ),
        )),
        None => {
            if !state.config.master_key.matches(key).await {
                auth::authenticate_key(state, key).await?;
            }
            Err(ApiError::ModelNotFound {
                model: alias.to_owned(),
            })
        }
    }
}

/// The most bytes one vector of `dimensions` can take in the answer: a float is at most 15
/// characters and a comma as JSON, four bytes in base64; and the item around it.
fn vector_bytes(dimensions: u32, encoding: Encoding) -> usize {
    const ITEM: usize = 64;
    let dimensions = dimensions as usize;
    ITEM + match encoding {
        Encoding::Float => dimensions * 16,
        Encoding::Base64 => (dimensions * 4).div_ceil(3) * 4,
    }
}

/// Refuses, before anything is taken, an answer that could not reach the client: behind an
/// ALB a response is at most 1 MB.
fn fits_delivery(
    request: &EmbeddingRequest,
    dimensions: u32,
    delivery: Delivery,
) -> Result<(), ApiError> {
    let Delivery::Buffered { limit_bytes } = delivery else {
        return Ok(());
    };
    let per_vector = vector_bytes(dimensions, request.encoding);
    let fits = (limit_bytes / per_vector).max(1);
    if request.inputs.len() <= fits {
        return Ok(());
    }
    Err(ApiError::invalid_param(
        "input",
        format!(
            "{} inputs of {dimensions} dimensions may not fit the 1 MB a response through the \
             load balancer may carry: send at most {fits} a request here{}, or send the batch to \
             the gateway's streaming endpoint",
            request.inputs.len(),
            if request.encoding == Encoding::Float {
                " (more with `encoding_format: base64` or fewer `dimensions`)"
            } else {
                " (more with fewer `dimensions`)"
            }
        ),
    ))
}

/// One vector as the client asked for it.
#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList {
    object: &'static str,
    data: Vec<Item>,
    model: String,
    usage: Usage,
}

/// OpenAI's answer: the vectors in the inputs' order, as floats or as base64 of their
/// little-endian `f32` bytes.
fn answer_body(
    vectors: impl Iterator<Item = Vec<f32>>,
    request: &EmbeddingRequest,
    tokens: u64,
) -> EmbeddingList {
    let data = vectors
        .enumerate()
        .map(|(index, vector)| Item {
            object: "embedding",
            index,
            embedding: match request.encoding {
                Encoding::Float => Vector::Float(vector),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    EmbeddingList {
        object: "list",
        data,
        model: request.model.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_little_endian_f32_bytes() {
        let request = request::parse(
            serde_json::json!({"model": "m", "input": "x", "encoding_format": "base64"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let body = answer_body(std::iter::once(vec![1.0f32, -0.5]), &request, 3);
        let json = serde_json::to_value(&body).unwrap();
        let b64 = json["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, [0, 0, 128, 63, 0, 0, 0, 191]);
        assert_eq!(json["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn behind_the_alb_a_batch_must_fit_one_megabyte() {
        let many =
            serde_json::json!({"model": "m", "input": vec!["x"; 300], "encoding_format": "base64"});
        let request = request::parse(many.as_object().unwrap()).unwrap();
        assert!(fits_delivery(&request, 1024, Delivery::ALB).is_err());
        assert!(fits_delivery(&request, 256, Delivery::ALB).is_ok());
        assert!(fits_delivery(&request, 1024, Delivery::Streamed).is_ok());
    }
}
