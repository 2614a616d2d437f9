//! The Bedrock side of an embeddings request: the batch split to the model's per-call limit,
//! one InvokeModel body per part, the parts called concurrently (within a bound, each with the
//! chat path's retries), and the vectors and token counts read back in order.

use std::sync::{Arc, Mutex};

use aws_sdk_bedrockruntime::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_bedrockruntime::error::BoxError;
use aws_sdk_bedrockruntime::primitives::Blob;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};

use crate::catalog::{EmbeddingApi, ModelEntry};
use crate::clients::bedrock::{self, BedrockFailure, Candidate};
use crate::clients::traces::Trace;
use crate::error::ApiError;
use crate::state::AppState;

/// The most InvokeModel calls one request has in flight: a 2,048-text batch on a one-text-a-call
/// model must not become 2,048 concurrent calls (Bedrock would throttle them, and the Lambda's
/// connections are few).
pub const MAX_CONCURRENT_CALLS: usize = 8;

/// The header Bedrock counts a call's input tokens in.
const INPUT_TOKENS_HEADER: &str = "x-amzn-bedrock-input-token-count";

/// The model an embeddings request is for: the one candidate admission sizes the reservation by
/// (input only; an embedding has no output tokens).
pub struct Planned {
    pub model: Arc<ModelEntry>,
    /// The vectors' size on this model.
    pub dimensions: u32,
}

impl Candidate for Planned {
    fn model(&self) -> &Arc<ModelEntry> {
        &self.model
    }

    fn max_tokens(&self) -> u32 {
        0
    }
}

/// One InvokeModel call's share of the batch.
pub struct Part {
    pub texts: usize,
    pub body: Vec<u8>,
    /// Its prompt tokens as admission estimated them.
    pub estimate: u64,
}

/// The batch split into InvokeModel bodies of at most the model's `max_batch` texts each.
pub fn parts(
    model: &ModelEntry,
    inputs: &[String],
    dimensions: u32,
    input_type: Option<&str>,
) -> Vec<Part> {
    let Some(spec) = &model.embedding else {
        return Vec::new();
    };
    inputs
        .chunks(spec.max_batch.max(1))
        .map(|texts| {
            let body = match spec.api {
                EmbeddingApi::Titan => json!({
                    "inputText": texts.first().map(String::as_str).unwrap_or_default(),
                    "dimensions": dimensions,
                }),
                EmbeddingApi::Cohere => json!({
                    "texts": texts,
                    "input_type": input_type.unwrap_or("search_document"),
                }),
            };
            Part {
                texts: texts.len(),
                body: serde_json::to_vec(&body).unwrap_or_default(),
                estimate: super::request::estimate_tokens(texts),
            }
        })
        .collect()
}

/// One part's answer.
#[derive(Debug)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u64,
}

/// How far a batch got: the answers so far, the parts in flight, and the first failure.
pub struct Progress {
    pub answers: Vec<Option<Embedded>>,
    pub in_flight: Vec<bool>,
    pub failure: Option<ApiError>,
}

impl Progress {
    pub fn new(parts: usize) -> Self {
        Progress {
            answers: (0..parts).map(|_| None).collect(),
            in_flight: vec![false; parts],
            failure: None,
        }
    }

    /// The tokens Bedrock counted for the parts that answered.
    pub fn tokens(&self) -> u64 {
        self.answers.iter().flatten().map(|e| e.tokens).sum()
    }

    /// The estimate of the parts that were sent and never answered (cut by the deadline): their
    /// texts were read, so they are paid for.
    pub fn unanswered_estimate(&self, parts: &[Part]) -> u64 {
        parts
            .iter()
            .zip(&self.in_flight)
            .filter(|(_, flying)| **flying)
            .map(|(part, _)| part.estimate)
            .sum()
    }
}

/// Calls every part, at most [`MAX_CONCURRENT_CALLS`] at a time, recording each answer in
/// `progress`. After a failure no new part starts; those in flight are waited for, so every call
/// made is known (and paid for) when this returns. Dropped at the deadline, `progress` says what
/// was in flight.
pub async fn call_all(
    state: &AppState,
    planned: &Planned,
    alias: &str,
    trace: &Trace,
    parts: &[Part],
    progress: &mut Progress,
) {
    let mut next = parts.iter().enumerate();
    let mut running = FuturesUnordered::new();
    loop {
        while progress.failure.is_none() && running.len() < MAX_CONCURRENT_CALLS {
            let Some((index, part)) = next.next() else {
                break;
            };
            if let Some(flying) = progress.in_flight.get_mut(index) {
                *flying = true;
            }
            running.push(async move { (index, call(state, planned, alias, trace, part).await) });
        }
        let Some((index, answer)) = running.next().await else {
            return;
        };
        if let Some(flying) = progress.in_flight.get_mut(index) {
            *flying = false;
        }
        match answer {
            Ok(embedded) => {
                if let Some(slot) = progress.answers.get_mut(index) {
                    *slot = Some(embedded);
                }
            }
            Err(error) => {
                progress.failure.get_or_insert(error);
            }
        }
    }
}

/// One part, with the chat path's retries of transient failures.
async fn call(
    state: &AppState,
    planned: &Planned,
    alias: &str,
    trace: &Trace,
    part: &Part,
) -> Result<Embedded, ApiError> {
    let plan = std::slice::from_ref(planned);
    let ((body, header_tokens), _) =
        bedrock::with_fallbacks(&state.retry, plan, alias, trace, |p| {
            let counted = TokenCount::default();
            let call = state
                .bedrock
                .invoke_model()
                .model_id(&p.model.bedrock_model_id)
                .content_type("application/json")
                .accept("application/json")
                .body(Blob::new(part.body.clone()))
                .customize()
                .interceptor(counted.clone());
            async move {
                let output = call
                    .send()
                    .await
                    .map_err(|e| BedrockFailure::from_sdk(&e))?;
                Ok((output.body.into_inner(), counted.get()))
            }
        })
        .await?;
    read_answer(planned, &body, header_tokens, part.texts)
}

/// The vectors and token count of one answer: Titan's body carries its count, Cohere's comes in
/// the header.
fn read_answer(
    planned: &Planned,
    body: &[u8],
    header_tokens: Option<u64>,
    texts: usize,
) -> Result<Embedded, ApiError> {
    let unusable = |why: &str| {
        ApiError::Upstream(format!(
            "model `{}` gave an unusable answer: {why}",
            planned.model.alias
        ))
    };
    let answer: Value = serde_json::from_slice(body).map_err(|_| unusable("not JSON"))?;
    let api = planned.model.embedding.as_ref().map(|e| e.api);
    let (vectors, tokens) = match api {
        Some(EmbeddingApi::Titan) => {
            let vector = floats(answer.get("embedding")).ok_or_else(|| unusable("no embedding"))?;
            let tokens = answer
                .get("inputTextTokenCount")
                .and_then(Value::as_u64)
                .or(header_tokens);
            (vec![vector], tokens)
        }
        Some(EmbeddingApi::Cohere) => {
            // `embeddings` is a list of vectors, or an object of them by type when types were
            // asked for.
            let all = match answer.get("embeddings") {
                Some(Value::Object(by_type)) => by_type.get("float"),
                other => other,
            };
            let vectors = all
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|v| floats(Some(v)))
                        .collect::<Option<Vec<_>>>()
                })
                .and_then(|v| v)
                .ok_or_else(|| unusable("no embeddings"))?;
            (vectors, header_tokens)
        }
        None => return Err(ApiError::Internal("not an embedding model".into())),
    };
    if vectors.len() != texts {
        return Err(unusable("a vector count other than the text count"));
    }
    let tokens = tokens.ok_or_else(|| unusable("no token count"))?;
    Ok(Embedded { vectors, tokens })
}

fn floats(value: Option<&Value>) -> Option<Vec<f32>> {
    value?
        .as_array()?
        .iter()
        .map(|n| n.as_f64().map(|f| f as f32))
        .collect()
}

/// Reads the input-token count header of a call's response: the SDK's output does not carry it.
#[derive(Debug, Clone, Default)]
struct TokenCount(Arc<Mutex<Option<u64>>>);

impl TokenCount {
    fn get(&self) -> Option<u64> {
        self.0.lock().ok().and_then(|count| *count)
    }
}

impl Intercept for TokenCount {
    fn name(&self) -> &'static str {
        "llmlite-input-token-count"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let count = context
            .response()
            .headers()
            .get(INPUT_TOKENS_HEADER)
            .and_then(|v| v.trim().parse().ok());
        if let Ok(mut slot) = self.0.lock() {
            *slot = count;
        }
        Ok(())
    }
}
