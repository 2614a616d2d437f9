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
use http::{HeaderValue, header};
use tokio::sync::mpsc;

use crate::auth::MasterKey;
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

async fn list_models(_: MasterKey, State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .config
        .catalog
        .models()
        .iter()
        .flat_map(|m| std::iter::once(&m.alias).chain(&m.other_aliases))
        .map(|alias| model_object(alias.as_str()))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

async fn get_model(
    _: MasterKey,
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    state
        .config
        .catalog
        .get(&model)
        .map(|_| Json(model_object(&model)))
        .ok_or(ApiError::ModelNotFound { model })
}

async fn chat_completions(
    _: MasterKey,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    bedrock::validate(&request)?;
    let chain =
        state
            .config
            .catalog
            .chain(&request.model)
            .ok_or_else(|| ApiError::ModelNotFound {
                model: request.model.clone(),
            })?;
    tracing::info!(
        request_id = %request_id,
        model = %request.model,
        stream = request.stream.unwrap_or(false),
        user = request.user.as_deref().unwrap_or(""),
        "chat completion"
    );
    let completion = Completion {
        id: format!("chatcmpl-{}", request_id.simple()),
        created: chrono::Utc::now().timestamp(),
        alias: request.model.clone(),
    };
    if request.stream.unwrap_or(false) {
        stream(state, chain, request, completion).await
    } else {
        complete(state, chain, request, completion).await
    }
}

/// What every response of one completion shares.
#[derive(Clone)]
struct Completion {
    id: String,
    created: i64,
    /// The alias the client asked for: responses name it, whichever model served.
    alias: String,
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
    let (output, model, converse) = with_fallbacks(&state, &chain, &request, |model, converse| {
        let call = converse_call(&state, &model, converse);
        async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
    })
    .await?;
    let usage = bedrock::token_usage(output.usage());
    let body = completion_body(&output, &completion, converse.json_tool, &usage);
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert("x-litellm-response-cost", cost_header(&model, &usage));
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
    let (output, model, converse) = with_fallbacks(&state, &chain, &request, |model, converse| {
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
    };
    tokio::spawn(translator.run(output.stream, sender, include_usage, model));
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
        if sender.send(role).await.is_err() {
            return;
        }
        loop {
            match events.recv().await {
                Ok(Some(event)) => {
                    for chunk in self.translate(event) {
                        if sender.send(chunk).await.is_err() {
                            // The client went away; dropping the receiver ends the Bedrock call.
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let failure = BedrockFailure::from_sdk(&e);
                    tracing::warn!(?failure, "Bedrock stream failed midway");
                    let error = failure.into_api_error(&self.completion.alias);
                    let _ = sender.send(self.error_event(&error)).await;
                    return;
                }
            }
        }
        if !self.finished {
            let error =
                ApiError::Upstream("the model stream ended before the answer was complete".into());
            let _ = sender.send(self.error_event(&error)).await;
            return;
        }
        let usage = self.usage.unwrap_or_default();
        tracing::info!(
            completion = %self.completion.id,
            cost = %model.prices.cost(&usage),
            "stream complete"
        );
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
}
