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

use axum::response::Response;
use base64::Engine;
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::catalog::{ModelEntry, TokenUsage};
use crate::error::{ApiError, ErrorShape, Refusal};
use crate::pii::{OutputGuard, Policy, Report, Scanner};
use crate::pipeline::call::{self, AnswerBody, Answered, Failed};
use crate::pipeline::{Accounting, Adapter, Call, Delivery, Invocation, Models};
use crate::record::{CallType, Status};
use crate::state::AppState;
use invoke::{Planned, Progress};
use request::{EmbeddingRequest, Encoding};

/// OpenAI's embeddings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Embeddings;

impl Adapter for Embeddings {
    type Body = Map<String, Value>;
    type Request = EmbeddingRequest;
    type Planned = Planned;

    const CALL_TYPE: CallType = CallType::Aembedding;
    const SHAPE: ErrorShape = ErrorShape::OpenAi;
    const MODELS: Models = Models::Embedding;

    fn parse(
        &mut self,
        body: Map<String, Value>,
        _headers: &HeaderMap,
    ) -> Result<EmbeddingRequest, ApiError> {
        request::parse(&body)
    }

    fn model(request: &EmbeddingRequest) -> &str {
        &request.model
    }

    fn estimate(request: &EmbeddingRequest) -> u64 {
        request::estimate_tokens(&request.inputs)
    }

    fn accounting(request: &EmbeddingRequest) -> Accounting {
        Accounting {
            end_user: request.user.clone(),
            metadata: request.metadata.clone(),
        }
    }

    /// The one model, and the vectors' size there; a batch whose answer could not reach the
    /// client is refused here.
    fn plan(
        &self,
        _state: &AppState,
        request: &EmbeddingRequest,
        chain: &[Arc<ModelEntry>],
        invocation: &Invocation,
    ) -> Result<Vec<Planned>, ApiError> {
        let Some(model) = chain.first() else {
            return Err(ApiError::Internal(
                "an embeddings request without a model".into(),
            ));
        };
        let dimensions = request::fit(request, model)?;
        fits_delivery(request, dimensions, invocation.delivery)?;
        Ok(vec![Planned {
            model: Arc::clone(model),
            dimensions,
        }])
    }

    fn guard_pii(request: &mut EmbeddingRequest, scanner: &Scanner, policy: &Policy) -> Report {
        scanner.guard_texts(request.inputs.iter_mut(), policy)
    }

    fn guardrail_texts(request: &mut EmbeddingRequest) -> Vec<&mut String> {
        request.inputs.iter_mut().collect()
    }

    async fn respond(&self, call: Call<Self>) -> Result<Response, Refusal> {
        let upstream = std::time::Instant::now();
        let answered = embed(&call).await;
        call::complete(call, answered, upstream).await
    }
}

/// Calls every part (the bodies built from the guarded, masked, inputs) and reassembles the
/// vectors. A batch cut by the deadline pays the parts that answered at Bedrock's count and
/// those in flight at the estimate (their texts were read); one whose part failed pays what
/// Bedrock answered.
async fn embed(call: &Call<Embeddings>) -> Result<Answered<EmbeddingList>, Failed> {
    let request = &call.request;
    let Some(planned) = call.plan.first() else {
        return Err(ApiError::Internal("an embeddings request without a model".into()).into());
    };
    let model = &planned.model;
    let parts = invoke::parts(
        model,
        &request.inputs,
        planned.dimensions,
        request.input_type.as_deref(),
    );
    let mut progress = Progress::new(parts.len());
    let trace = call.guard.trace();
    let finished = call::until_deadline(
        call.invocation.deadline,
        invoke::call_all(
            &call.state,
            planned,
            &request.model,
            &trace,
            &parts,
            &mut progress,
        ),
    )
    .await;
    let charge = |tokens: u64| {
        Some((
            Arc::clone(model),
            TokenUsage {
                input: tokens,
                ..TokenUsage::default()
            },
        ))
    };
    if finished.is_none() {
        let tokens = progress.tokens() + progress.unanswered_estimate(&parts);
        return Err(Failed {
            used: charge(tokens),
            ..Failed::deadline()
        });
    }
    let tokens = progress.tokens();
    if let Some(error) = progress.failure.take() {
        return Err(Failed {
            error,
            status: Status::Failure,
            used: if tokens > 0 { charge(tokens) } else { None },
        });
    }
    let vectors = progress
        .answers
        .into_iter()
        .flatten()
        .flat_map(|e| e.vectors);
    Ok(Answered {
        model: Arc::clone(model),
        usage: TokenUsage {
            input: tokens,
            ..TokenUsage::default()
        },
        body: answer_body(vectors, request, tokens),
        headers: HeaderMap::new(),
    })
}

impl AnswerBody for EmbeddingList {
    /// Vectors hold no text to scan.
    fn screen(&mut self, _output: &mut OutputGuard) {}

    fn texts(&mut self) -> Vec<&mut String> {
        Vec::new()
    }

    fn into_bytes(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
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
