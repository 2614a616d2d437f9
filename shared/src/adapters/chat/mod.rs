//! The chat completions adapter: `POST /v1/chat/completions` (and `/chat/completions`) on
//! Bedrock Converse. The request is validated and translated to Converse ([`converse`]) for each
//! model of its chain; the answer comes back as a `chat.completion` ([`complete`]) or, with
//! `stream: true`, as `chat.completion.chunk` events ([`stream`]): chunk by chunk from `llmlite`
//! and the streaming function, as one complete body behind the ALB (which cannot stream a Lambda
//! response). Everything else (admission, PII, settlement, audit) is the pipeline's.

pub mod complete;
pub mod converse;
pub mod stream;

use std::sync::Arc;

use axum::response::Response;
use http::HeaderMap;

use crate::catalog::ModelEntry;
use crate::error::{ApiError, ErrorShape, Refusal};
use crate::openai::{ChatCompletionRequest, ChatMessage, Content, ContentPart, ResponseFormat};
use crate::pii::{Policy, Report, Scanner};
use crate::pipeline::{self, Accounting, Adapter, Call, Invocation, Models, relay};
use crate::record::CallType;
use crate::state::AppState;
pub use converse::Planned;

/// OpenAI's chat completions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatCompletions;

impl Adapter for ChatCompletions {
    type Body = ChatCompletionRequest;
    type Request = ChatCompletionRequest;
    type Planned = Planned;

    const CALL_TYPE: CallType = CallType::Acompletion;
    const SHAPE: ErrorShape = ErrorShape::OpenAi;
    const MODELS: Models = Models::Chat;

    fn parse(
        &mut self,
        request: ChatCompletionRequest,
        _headers: &HeaderMap,
    ) -> Result<ChatCompletionRequest, ApiError> {
        check(&request)?;
        Ok(request)
    }

    fn model(request: &ChatCompletionRequest) -> &str {
        &request.model
    }

    fn estimate(request: &ChatCompletionRequest) -> u64 {
        estimate_prompt_tokens(request)
    }

    fn accounting(request: &ChatCompletionRequest) -> Accounting {
        accounting(request)
    }

    fn plan(
        &self,
        state: &AppState,
        request: &ChatCompletionRequest,
        chain: &[Arc<ModelEntry>],
        _invocation: &Invocation,
    ) -> Result<Vec<Planned>, ApiError> {
        converse::plan(request, chain, state.config.default_max_tokens)
    }

    fn guard_pii(
        request: &mut ChatCompletionRequest,
        scanner: &Scanner,
        policy: &Policy,
    ) -> Report {
        scanner.guard(request, policy)
    }

    fn guardrail_texts(request: &mut ChatCompletionRequest) -> Vec<&mut String> {
        pipeline::guardrail::chat_texts(request)
    }

    async fn respond(&self, call: Call<Self>) -> Result<Response, Refusal> {
        let answer = Answer::of(&call.request, &call);
        if call.request.stream.unwrap_or(false) {
            let bedrock = call.state.bedrock.clone();
            let open = move |planned: &Planned| converse::open_stream(&bedrock, planned);
            relay::stream(call, open, |_, planned| {
                stream::streaming(planned, stream::ChatEncoder::new(answer))
            })
            .await
        } else {
            let upstream = std::time::Instant::now();
            let answered = complete::converse(&call, &answer).await;
            pipeline::call::complete(call, answered, upstream).await
        }
    }
}

/// The validation every chat-completion-shaped request gets before anything is taken: what
/// Converse cannot serve, and what a spend row cannot keep.
pub fn check(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    converse::validate(request)?;
    pipeline::check_end_user(request.user.as_deref(), "user")?;
    pipeline::check_metadata(request.metadata.as_ref())
}

/// What the spend row keeps of a chat completion request.
pub fn accounting(request: &ChatCompletionRequest) -> Accounting {
    Accounting {
        end_user: request.user.clone(),
        metadata: request.metadata.clone(),
    }
}

/// What every response of one completion shares.
#[derive(Debug, Clone)]
pub struct Answer {
    pub id: String,
    pub created: i64,
    /// The alias the client asked for: responses name it, whichever model served.
    pub alias: String,
    /// A stream ends with a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The service tier it is served at, as answers name it.
    pub service_tier: &'static str,
}

impl Answer {
    pub fn of<A: Adapter>(request: &ChatCompletionRequest, call: &Call<A>) -> Answer {
        Answer {
            id: format!("chatcmpl-{}", call.request_id.simple()),
            created: chrono::Utc::now().timestamp(),
            alias: call.alias.clone(),
            include_usage: request
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            service_tier: call
                .plan
                .first()
                .and_then(crate::clients::bedrock::Candidate::service_tier)
                .map_or("default", crate::catalog::ServiceTier::as_str),
        }
    }
}

/// A rough prompt size for admission (the TPM estimate and the budget reservation): four
/// bytes a token, plus framing per message and a flat 1,600 per image, over every text the model
/// sees (messages, tool definitions, the response schema). Settlement charges the real count.
pub fn estimate_prompt_tokens(request: &ChatCompletionRequest) -> u64 {
    let mut chars = 0usize;
    let mut images = 0u64;
    let mut count = |content: &Content, chars: &mut usize| match content {
        Content::Text(text) => *chars += text.len(),
        Content::Parts(parts) => {
            for part in parts {
                match part {
                    ContentPart::Text { text, .. } => *chars += text.len(),
                    ContentPart::ImageUrl { .. } => images += 1,
                }
            }
        }
    };
    for message in &request.messages {
        match message {
            ChatMessage::System { content }
            | ChatMessage::Developer { content }
            | ChatMessage::User { content }
            | ChatMessage::Tool { content, .. } => count(content, &mut chars),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                if let Some(content) = content {
                    count(content, &mut chars);
                }
                for call in tool_calls.iter().flatten() {
                    chars += call.function.name.len() + call.function.arguments.len();
                }
            }
        }
    }
    let json_len = |v: &serde_json::Value| v.to_string().len();
    for tool in request.tools.iter().flatten() {
        chars += tool.function.name.len()
            + tool.function.description.as_ref().map_or(0, String::len)
            + tool.function.parameters.as_ref().map_or(0, json_len);
    }
    if let Some(ResponseFormat::JsonSchema { json_schema }) = &request.response_format {
        chars += json_schema.name.as_ref().map_or(0, String::len)
            + json_schema.schema.as_ref().map_or(0, json_len);
    }
    (chars as u64).div_ceil(4) + 4 * request.messages.len() as u64 + 1600 * images
}
