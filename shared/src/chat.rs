//! The `chat` function: `POST /v1/chat/completions` (and `/chat/completions`), `GET /v1/models`
//! (and `/models`). Requests are translated to Bedrock Converse (`bedrock`), answers back to
//! OpenAI's shapes (`openai`). `stream: true` uses ConverseStream and answers with server-sent
//! events: chunk by chunk from `llmlite`, as one complete body behind the ALB (which cannot
//! stream a Lambda response).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConverseStreamOutput,
    ReasoningContentBlock, ReasoningContentBlockDelta,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use tokio::sync::mpsc;

use serde_json::json;

use crate::admission::{self, Admitted, Refusal};
use crate::audit;
use crate::auth::{self, Caller};
use crate::bedrock::{self, BedrockFailure, ConverseRequest, JSON_TOOL};
use crate::catalog::{ModelEntry, TokenUsage};
use crate::error::ApiError;
use crate::http::{ApiJson, RequestId};
use crate::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta,
    FunctionCall, FunctionDelta, ModelList, ModelObject, ResponseMessage, ToolCall, ToolCallDelta,
};
use crate::state::AppState;

/// `created` for catalog models, which have no release dates of their own.
const MODELS_CREATED: i64 = 1_677_610_602;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/models/{model}", get(get_model))
        .with_state(state)
}

fn model_object(alias: &str) -> ModelObject {
    ModelObject {
        id: alias.to_owned(),
        object: "model",
        created: MODELS_CREATED,
        owned_by: "anthropic",
    }
}

/// The catalog's aliases this key may use (its own, its user's and its team's allow-lists).
async fn list_models(caller: Caller, State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .config
        .catalog
        .models()
        .iter()
        .flat_map(|m| std::iter::once(&m.alias).chain(&m.other_aliases))
        .filter(|alias| caller.may_use(alias.as_str()))
        .map(|alias| model_object(alias.as_str()))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

async fn get_model(
    caller: Caller,
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    state
        .config
        .catalog
        .get(&model)
        .filter(|_| caller.may_use(&model))
        .map(|_| Json(model_object(&model)))
        .ok_or(ApiError::ModelNotFound { model })
}

/// The key a request carries; missing is a 401 before the body is read.
pub struct BearerKey(String);

impl axum::extract::FromRequestParts<AppState> for BearerKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &AppState,
    ) -> Result<Self, ApiError> {
        auth::api_key(&parts.headers)
            .map(|k| BearerKey(k.to_owned()))
            .ok_or(ApiError::MissingApiKey)
    }
}

async fn chat_completions(
    BearerKey(key): BearerKey,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, Refusal> {
    let started = state.clock.now();
    let clock = std::time::Instant::now();
    let client = Client::from_headers(&headers);
    bedrock::validate(&request)?;
    let Some(chain) = state.config.catalog.chain(&request.model) else {
        // An unknown model is a 404 only to a caller with a working key.
        if !state.config.master_key.matches(&key) {
            auth::authenticate_key(&state, &key).await?;
        }
        return Err(ApiError::ModelNotFound {
            model: request.model.clone(),
        }
        .into());
    };
    // The request must fit the model it names; the reservation covers the dearest model of the
    // chain it might be served by.
    let primary = bedrock::translate(&request, &chain[0])?;
    let outputs: Vec<(Arc<ModelEntry>, u32)> = chain
        .iter()
        .skip(1)
        .filter_map(|m| {
            bedrock::translate(&request, m)
                .ok()
                .map(|c| (Arc::clone(m), c.max_tokens))
        })
        .chain(std::iter::once((Arc::clone(&chain[0]), primary.max_tokens)))
        .collect();
    let estimate = admission::estimate_prompt_tokens(&request);
    let reserve = admission::worst_case_cost(estimate, &outputs);
    let admitted =
        match admission::admit(&state, &key, &request.model, request_id, estimate, reserve).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // Refused before anything was taken: recorded, not settled.
                let record = json!({
                    "timestamp": started,
                    "request_id": request_id.to_string(),
                    "user_id": null,
                    "team_id": null,
                    "key_hash": crate::keys::KeyHash::from_key_or_hash(&key).map(|h| h.to_string()),
                    "key_alias": null,
                    "model": request.model,
                    "model_id": null,
                    "request_bytes": client.request_bytes,
                    "response_bytes": 0,
                    "latency_ms": clock.elapsed().as_secs_f64() * 1000.0,
                    "upstream_ms": 0.0,
                    "overhead_ms": clock.elapsed().as_secs_f64() * 1000.0,
                    "tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0},
                    "cost": "0",
                    "status_code": refusal.error.status().as_u16(),
                    "error_type": refusal.error.kind(),
                    "pii": {},
                    "client_ip": client.ip,
                    "user_agent": client.user_agent,
                });
                let latency = clock.elapsed().as_secs_f64() * 1000.0;
                crate::telemetry::report_request(
                    &request_id.to_string(),
                    record["key_hash"].as_str(),
                    &crate::telemetry::RequestMetrics {
                        model: request.model.clone(),
                        status: refusal.error.status().as_u16(),
                        error_type: Some(refusal.error.kind()),
                        latency_ms: latency,
                        overhead_ms: latency,
                        ..crate::telemetry::RequestMetrics::default()
                    },
                    state.emf,
                );
                state
                    .audit
                    .write(
                        &audit::request_key(started, &request_id.to_string()),
                        &record,
                    )
                    .await;
                return Err(refusal);
            }
        };
    // The PII guard, before anything leaves: global policy, then the team's, then the key's.
    let policy = admitted.pii_policy(&state.config.pii_policy, &state.pii.entity_names());
    let report = state.pii.guard(&mut request, &policy);
    let mut metadata = accounting_metadata(request.metadata.as_ref());
    if !report.counts.is_empty() {
        metadata["llmlite_pii"] = report.to_json();
    }
    let completion = Completion {
        id: format!("chatcmpl-{}", request_id.simple()),
        created: chrono::Utc::now().timestamp(),
        alias: request.model.clone(),
        request_id,
        started,
        clock,
        end_user: request.user.clone(),
        pii: report.to_json(),
        metadata,
        client,
        admitted,
    };
    if !report.blocked.is_empty() {
        let error = ApiError::PiiBlocked {
            entities: report.blocked_summary(),
        };
        completion
            .settle(
                &state,
                None,
                TokenUsage::default(),
                Some(&error),
                Measured::default(),
            )
            .await;
        return Err(error.into());
    }
    let response = if request.stream.unwrap_or(false) {
        stream(state, chain, request, completion).await
    } else {
        complete(state, chain, request, completion).await
    };
    response.map_err(Refusal::from)
}

/// What every response of one completion shares, and what settlement needs.
#[derive(Clone)]
struct Completion {
    id: String,
    created: i64,
    /// The alias the client asked for: responses name it, whichever model served.
    alias: String,
    request_id: RequestId,
    started: chrono::DateTime<chrono::Utc>,
    /// When the request arrived, for latencies.
    clock: std::time::Instant,
    end_user: Option<String>,
    /// PII findings by type.
    pii: serde_json::Value,
    /// The request's `metadata`, kept with its spend row.
    metadata: serde_json::Value,
    client: Client,
    admitted: Admitted,
}

/// Who sent the request, as the ALB tells it.
#[derive(Clone, Default)]
struct Client {
    ip: Option<String>,
    user_agent: Option<String>,
    request_bytes: u64,
}

impl Client {
    fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Client {
            // The ALB appends the peer to X-Forwarded-For; the first entry is the client.
            ip: text("x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
            user_agent: text("user-agent").map(|v| v.chars().take(256).collect()),
            request_bytes: text("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// What is known of a request when it ends, besides its usage.
#[derive(Clone, Copy, Default)]
struct Measured {
    upstream: std::time::Duration,
    response_bytes: u64,
    status: u16,
}

/// The largest `metadata` kept with a spend row; larger is replaced by a marker.
const MAX_ACCOUNTING_METADATA: usize = 16 * 1024;

fn accounting_metadata(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    match metadata {
        None => serde_json::json!({}),
        Some(map)
            if serde_json::to_string(map).map_or(usize::MAX, |s| s.len())
                <= MAX_ACCOUNTING_METADATA =>
        {
            serde_json::Value::Object(map.clone())
        }
        Some(_) => serde_json::json!({ "llmlite_note": "metadata over 16 KiB was not kept" }),
    }
}

impl Completion {
    /// Settles the request: what it cost, or a failure at no cost.
    /// Settles the request and writes its audit record, concurrently; both finish before this
    /// returns (a Lambda is frozen once it answers).
    async fn settle(
        &self,
        state: &AppState,
        served: Option<&ModelEntry>,
        usage: TokenUsage,
        error: Option<&ApiError>,
        measured: Measured,
    ) -> Option<rust_decimal::Decimal> {
        let cost = served.map_or(crate::money::Money::ZERO, |m| m.prices.cost(&usage));
        let total = self.clock.elapsed();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let status = error.map_or(measured.status, |e| e.status().as_u16());
        let record = json!({
            "timestamp": self.started,
            "request_id": self.request_id.to_string(),
            "user_id": self.admitted.user_id,
            "team_id": self.admitted.team_id,
            "key_hash": self.admitted.token,
            "key_alias": self.admitted.key_alias,
            "model": self.alias,
            "model_id": served.map(|m| m.bedrock_model_id.as_str()),
            "request_bytes": self.client.request_bytes,
            "response_bytes": measured.response_bytes,
            "latency_ms": ms(total),
            "upstream_ms": ms(measured.upstream),
            "overhead_ms": ms(total.saturating_sub(measured.upstream)),
            "tokens": {
                "input": usage.input,
                "output": usage.output,
                "cache_read": usage.cache_read,
                "cache_write": usage.cache_write,
            },
            "cost": cost.to_string(),
            "status_code": status,
            "error_type": error.map(ApiError::kind),
            "pii": self.pii,
            "client_ip": self.client.ip,
            "user_agent": self.client.user_agent,
        });
        crate::telemetry::report_request(
            &self.request_id.to_string(),
            Some(&self.admitted.token),
            &crate::telemetry::RequestMetrics {
                model: self.alias.clone(),
                status,
                error_type: error.map(ApiError::kind),
                latency_ms: ms(total),
                upstream_ms: ms(measured.upstream),
                overhead_ms: ms(total.saturating_sub(measured.upstream)),
                input_tokens: usage.input + usage.cache_read + usage.cache_write,
                output_tokens: usage.output,
                cost: rust_decimal::prelude::ToPrimitive::to_f64(&cost.amount()).unwrap_or(0.0),
            },
            state.emf,
        );
        let key = audit::request_key(self.started, &self.request_id.to_string());
        let outcome = admission::Outcome {
            request_id: self.request_id,
            admitted: &self.admitted,
            alias: &self.alias,
            model_id: served.map(|m| m.bedrock_model_id.as_str()),
            end_user: self.end_user.as_deref(),
            usage,
            cost,
            started: self.started,
            error_type: error.map(ApiError::kind),
            metadata: &self.metadata,
        };
        let (spend, ()) = tokio::join!(
            admission::settle(state, &outcome),
            state.audit.write(&key, &record)
        );
        spend
    }
}

/// Calls `call` on the primary model and then each fallback, retrying transient failures with
/// jittered backoff. Returns the answer, the model that gave it and the request it was sent.
async fn with_fallbacks<T, F, Fut>(
    state: &AppState,
    chain: &[Arc<ModelEntry>],
    request: &ChatCompletionRequest,
    mut call: F,
) -> Result<(T, Arc<ModelEntry>, ConverseRequest), ApiError>
where
    F: FnMut(Arc<ModelEntry>, ConverseRequest) -> Fut,
    Fut: Future<Output = Result<T, BedrockFailure>>,
{
    let mut last_failure = None;
    for (position, model) in chain.iter().enumerate() {
        let converse = match bedrock::translate(request, model) {
            Ok(converse) => converse,
            // The client's request must fit the model it named; a fallback it does not fit
            // (a smaller output limit, say) is skipped.
            Err(e) if position == 0 => return Err(e),
            Err(_) => continue,
        };
        for attempt in 1..=state.retry.attempts {
            match call(Arc::clone(model), converse.clone()).await {
                Ok(answer) => return Ok((answer, Arc::clone(model), converse)),
                Err(failure) if failure.transient() => {
                    tracing::warn!(model = %model.alias, attempt, ?failure, "Bedrock call failed, retrying");
                    last_failure = Some(failure);
                    if attempt < state.retry.attempts {
                        tokio::time::sleep(state.retry.delay(attempt)).await;
                    }
                }
                Err(failure) => return Err(failure.into_api_error(&request.model)),
            }
        }
    }
    Err(last_failure
        .unwrap_or(BedrockFailure::Unavailable)
        .into_api_error(&request.model))
}

fn converse_call(
    state: &AppState,
    model: &ModelEntry,
    converse: ConverseRequest,
) -> aws_sdk_bedrockruntime::operation::converse::builders::ConverseFluentBuilder {
    state
        .bedrock
        .converse()
        .model_id(&model.bedrock_model_id)
        .set_system((!converse.system.is_empty()).then_some(converse.system))
        .set_messages(Some(converse.messages))
        .inference_config(converse.inference)
        .set_tool_config(converse.tool_config)
        .set_additional_model_request_fields(converse.additional_fields)
}

fn converse_stream_call(
    state: &AppState,
    model: &ModelEntry,
    converse: ConverseRequest,
) -> aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamFluentBuilder {
    state
        .bedrock
        .converse_stream()
        .model_id(&model.bedrock_model_id)
        .set_system((!converse.system.is_empty()).then_some(converse.system))
        .set_messages(Some(converse.messages))
        .inference_config(converse.inference)
        .set_tool_config(converse.tool_config)
        .set_additional_model_request_fields(converse.additional_fields)
}

/// [`with_fallbacks`], timed, for a request already admitted: if every attempt fails, the
/// request is settled as failed (recorded, its reservation released) before the error returns.
/// On success, also how long the call took (for a stream, until its first event).
async fn call_bedrock<T, F, Fut>(
    state: &AppState,
    chain: &[Arc<ModelEntry>],
    request: &ChatCompletionRequest,
    completion: &Completion,
    call: F,
) -> Result<(T, Arc<ModelEntry>, ConverseRequest, std::time::Duration), ApiError>
where
    F: FnMut(Arc<ModelEntry>, ConverseRequest) -> Fut,
    Fut: Future<Output = Result<T, BedrockFailure>>,
{
    let started = std::time::Instant::now();
    let answer = with_fallbacks(state, chain, request, call).await;
    let upstream = started.elapsed();
    match answer {
        Ok((output, model, converse)) => Ok((output, model, converse, upstream)),
        Err(error) => {
            let measured = Measured {
                upstream,
                ..Measured::default()
            };
            completion
                .settle(state, None, TokenUsage::default(), Some(&error), measured)
                .await;
            Err(error)
        }
    }
}

fn cost_header(model: &ModelEntry, usage: &TokenUsage) -> HeaderValue {
    HeaderValue::from_str(&model.prices.cost(usage).to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

async fn complete(
    state: AppState,
    chain: Vec<Arc<ModelEntry>>,
    request: ChatCompletionRequest,
    completion: Completion,
) -> Result<Response, ApiError> {
    let (output, model, converse, upstream) =
        call_bedrock(&state, &chain, &request, &completion, |model, converse| {
            let call = converse_call(&state, &model, converse);
            async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
        })
        .await?;
    let usage = bedrock::token_usage(output.usage());
    let body = completion_body(&output, &completion, converse.json_tool, &usage);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let measured = Measured {
        upstream,
        response_bytes: bytes.len() as u64,
        status: 200,
    };
    let key_spend = completion
        .settle(&state, Some(&model), usage, None, measured)
        .await;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    let headers = response.headers_mut();
    completion.admitted.write_headers(headers);
    headers.insert("x-litellm-response-cost", cost_header(&model, &usage));
    let spend = key_spend.unwrap_or(completion.admitted.key_spend);
    if let Ok(value) = HeaderValue::from_str(&spend.normalize().to_string()) {
        headers.insert("x-litellm-key-spend", value);
    }
    if let Ok(served) = HeaderValue::from_str(model.alias.as_str()) {
        headers.insert("x-llmlite-served-model", served);
    }
    Ok(response)
}

fn completion_body(
    output: &ConverseOutput,
    completion: &Completion,
    json_tool: bool,
    usage: &TokenUsage,
) -> ChatCompletion {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    let blocks = output
        .output()
        .and_then(|o| o.as_message().ok())
        .map(|m| m.content())
        .unwrap_or_default();
    for block in blocks {
        match block {
            ContentBlock::Text(t) => text.push_str(t),
            ContentBlock::ToolUse(tool) if json_tool && tool.name() == JSON_TOOL => {
                text.push_str(&bedrock::from_document(tool.input()).to_string());
            }
            ContentBlock::ToolUse(tool) => tool_calls.push(ToolCall {
                id: tool.tool_use_id().to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: tool.name().to_owned(),
                    arguments: bedrock::from_document(tool.input()).to_string(),
                },
            }),
            ContentBlock::ReasoningContent(ReasoningContentBlock::ReasoningText(r)) => {
                reasoning.push_str(r.text());
            }
            _ => {}
        }
    }
    let mut finish_reason = bedrock::finish_reason(output.stop_reason());
    if json_tool && finish_reason == "tool_calls" {
        finish_reason = "stop";
    }
    ChatCompletion {
        id: completion.id.clone(),
        object: "chat.completion",
        created: completion.created,
        model: completion.alias.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant",
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            },
            finish_reason,
            logprobs: None,
        }],
        usage: bedrock::openai_usage(usage),
        system_fingerprint: None,
    }
}

async fn stream(
    state: AppState,
    chain: Vec<Arc<ModelEntry>>,
    request: ChatCompletionRequest,
    completion: Completion,
) -> Result<Response, ApiError> {
    // Retries and fallbacks cover the call up to its first byte; after that the stream is the
    // client's, and a failure ends it with an error event.
    let (output, model, converse, _) =
        call_bedrock(&state, &chain, &request, &completion, |model, converse| {
            let call = converse_stream_call(&state, &model, converse);
            async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
        })
        .await?;
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let translator = StreamTranslator {
        completion,
        json_tool: converse.json_tool,
        tool_index: HashMap::new(),
        json_block: None,
        finished: false,
        usage: None,
        sent_bytes: 0,
    };
    let mut headers = HeaderMap::new();
    translator.completion.admitted.write_headers(&mut headers);
    if let Ok(value) = HeaderValue::from_str(
        &translator
            .completion
            .admitted
            .key_spend
            .normalize()
            .to_string(),
    ) {
        headers.insert("x-litellm-key-spend", value);
    }
    tokio::spawn(translator.run(state, output.stream, sender, include_usage, model));
    let body = Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async {
            receiver
                .recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
        },
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Turns ConverseStream events into `chat.completion.chunk` events.
struct StreamTranslator {
    completion: Completion,
    json_tool: bool,
    /// Bedrock content-block index -> OpenAI tool-call index (0, 1, ... in call order).
    tool_index: HashMap<i32, u32>,
    /// The block carrying a `json_schema` answer, streamed as content.
    json_block: Option<i32>,
    finished: bool,
    usage: Option<TokenUsage>,
    /// Bytes of events sent to the client, for the audit record.
    sent_bytes: u64,
}

fn sse(data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("data: {json}\n\n"))
}

impl StreamTranslator {
    fn chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> Bytes {
        sse(&ChatCompletionChunk {
            id: self.completion.id.clone(),
            object: "chat.completion.chunk",
            created: self.completion.created,
            model: self.completion.alias.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: None,
        })
    }

    fn content(&self, text: &str) -> Bytes {
        self.chunk(
            Delta {
                content: Some(text.to_owned()),
                ..Delta::default()
            },
            None,
        )
    }

    fn tool_delta(&self, delta: ToolCallDelta) -> Bytes {
        self.chunk(
            Delta {
                tool_calls: Some(vec![delta]),
                ..Delta::default()
            },
            None,
        )
    }

    /// The chunks one Bedrock event becomes.
    fn translate(&mut self, event: ConverseStreamOutput) -> Vec<Bytes> {
        match event {
            ConverseStreamOutput::ContentBlockStart(start) => {
                let block = start.content_block_index();
                match start.start() {
                    Some(ContentBlockStart::ToolUse(tool))
                        if self.json_tool && tool.name() == JSON_TOOL =>
                    {
                        self.json_block = Some(block);
                        Vec::new()
                    }
                    Some(ContentBlockStart::ToolUse(tool)) => {
                        let index = u32::try_from(self.tool_index.len()).unwrap_or(u32::MAX);
                        self.tool_index.insert(block, index);
                        vec![self.tool_delta(ToolCallDelta {
                            index,
                            id: Some(tool.tool_use_id().to_owned()),
                            kind: Some("function"),
                            function: FunctionDelta {
                                name: Some(tool.name().to_owned()),
                                arguments: String::new(),
                            },
                        })]
                    }
                    _ => Vec::new(),
                }
            }
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                let block = delta.content_block_index();
                match delta.delta() {
                    Some(ContentBlockDelta::Text(text)) => vec![self.content(text)],
                    Some(ContentBlockDelta::ToolUse(tool)) if self.json_block == Some(block) => {
                        vec![self.content(tool.input())]
                    }
                    Some(ContentBlockDelta::ToolUse(tool)) => match self.tool_index.get(&block) {
                        Some(&index) => vec![self.tool_delta(ToolCallDelta {
                            index,
                            id: None,
                            kind: None,
                            function: FunctionDelta {
                                name: None,
                                arguments: tool.input().to_owned(),
                            },
                        })],
                        None => Vec::new(),
                    },
                    Some(ContentBlockDelta::ReasoningContent(
                        ReasoningContentBlockDelta::Text(text),
                    )) => {
                        vec![self.chunk(
                            Delta {
                                reasoning_content: Some(text.clone()),
                                ..Delta::default()
                            },
                            None,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            ConverseStreamOutput::MessageStop(stop) => {
                self.finished = true;
                let mut reason = bedrock::finish_reason(stop.stop_reason());
                if self.json_tool && reason == "tool_calls" {
                    reason = "stop";
                }
                vec![self.chunk(Delta::default(), Some(reason))]
            }
            ConverseStreamOutput::Metadata(metadata) => {
                self.usage = Some(bedrock::token_usage(metadata.usage()));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn error_event(&self, error: &ApiError) -> Bytes {
        sse(&error.body())
    }

    async fn run(
        mut self,
        state: AppState,
        mut events: aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver<
            ConverseStreamOutput,
            aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError,
        >,
        sender: mpsc::Sender<Bytes>,
        include_usage: bool,
        model: Arc<ModelEntry>,
    ) {
        let role = self.chunk(
            Delta {
                role: Some("assistant"),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        );
        // Whatever happens below, the request is settled once: the stream's usage at its
        // prices, or a failure at no cost.
        let upstream_started = std::time::Instant::now();
        let failure = self.relay(role, &mut events, &sender).await;
        let usage = self.usage.unwrap_or_default();
        let measured = Measured {
            // The model's whole stream is upstream time; the gateway relays as it arrives.
            upstream: upstream_started.elapsed(),
            response_bytes: self.sent_bytes,
            status: 200,
        };
        match &failure {
            None => {
                self.completion
                    .settle(&state, Some(&model), usage, None, measured)
                    .await;
            }
            Some(error) => {
                // Tokens a broken stream did produce are still charged.
                let served = self.usage.is_some().then_some(model.as_ref());
                self.completion
                    .settle(&state, served, usage, Some(error), measured)
                    .await;
            }
        }
        if failure.is_some() {
            return;
        }
        if include_usage {
            let chunk = sse(&ChatCompletionChunk {
                id: self.completion.id.clone(),
                object: "chat.completion.chunk",
                created: self.completion.created,
                model: self.completion.alias.clone(),
                choices: Vec::new(),
                usage: Some(bedrock::openai_usage(&usage)),
            });
            if sender.send(chunk).await.is_err() {
                return;
            }
        }
        let _ = sender.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }

    /// Sends the role chunk and then every translated event, until the stream ends. Returns the
    /// error that ended it early, if one did (a client that went away is one).
    async fn relay(
        &mut self,
        role: Bytes,
        events: &mut aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver<
            ConverseStreamOutput,
            aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError,
        >,
        sender: &mpsc::Sender<Bytes>,
    ) -> Option<ApiError> {
        let gone = || Some(ApiError::invalid_request("the client closed the stream"));
        self.sent_bytes += role.len() as u64;
        if sender.send(role).await.is_err() {
            return gone();
        }
        loop {
            match events.recv().await {
                Ok(Some(event)) => {
                    for chunk in self.translate(event) {
                        self.sent_bytes += chunk.len() as u64;
                        if sender.send(chunk).await.is_err() {
                            // The client went away; dropping the receiver ends the Bedrock call.
                            return gone();
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let failure = BedrockFailure::from_sdk(&e);
                    tracing::warn!(?failure, "Bedrock stream failed midway");
                    let error = failure.into_api_error(&self.completion.alias);
                    let _ = sender.send(self.error_event(&error)).await;
                    return Some(error);
                }
            }
        }
        if !self.finished {
            let error =
                ApiError::Upstream("the model stream ended before the answer was complete".into());
            let _ = sender.send(self.error_event(&error)).await;
            return Some(error);
        }
        None
    }
}
