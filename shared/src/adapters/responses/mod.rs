//! OpenAI's Responses API, stateless: `POST /v1/responses` (and `/responses`), for the agent
//! tooling that speaks it (Codex CLI, the Agents SDK). A Responses request is read into the chat
//! completion it asks for ([`request`]) and served by the chat adapter's Converse translation on
//! the pipeline (`call_type` `aresponses`); only the wire differs: the answer, a
//! `chat.completion` or the chat stream's pieces, is written as Responses ([`output`]).
//!
//! Stateless: nothing is stored, so `previous_response_id`, `conversation`, `store: true` and
//! item references are refused with a 400 that says to send the whole conversation; an absent
//! `store` is taken as "do not store" (the SDKs leave it out unless asked). Built-in tools
//! (web search, file search, code interpreter, computer use, ...) are refused by their type.

mod output;
pub mod request;

use std::sync::Arc;

use axum::response::Response;
use http::HeaderMap;
use serde_json::Value;

use super::chat::{self, Answer, Planned, complete, converse, stream};
use crate::catalog::ModelEntry;
use crate::error::{ApiError, ErrorShape, Refusal};
use crate::pii::{Policy, Report, Scanner};
use crate::pipeline::{Accounting, Adapter, Call, Invocation, Models, call, relay};
use crate::record::CallType;
use crate::state::AppState;

/// The Responses API. It keeps where each chat message came from (`instructions`,
/// `input[3]`), so that an error names the client's own field.
#[derive(Debug, Clone, Default)]
pub struct Responses {
    origins: Vec<String>,
}

impl Adapter for Responses {
    type Body = Value;
    type Request = request::Parsed;
    type Planned = Planned;

    const CALL_TYPE: CallType = CallType::Aresponses;
    const SHAPE: ErrorShape = ErrorShape::Responses;
    const MODELS: Models = Models::Chat;

    fn parse(&mut self, body: Value, _headers: &HeaderMap) -> Result<request::Parsed, ApiError> {
        let parsed = request::parse(&body)?;
        self.origins = parsed.origins.clone();
        chat::check(&parsed.chat)?;
        Ok(parsed)
    }

    fn model(request: &request::Parsed) -> &str {
        &request.chat.model
    }

    fn estimate(request: &request::Parsed) -> u64 {
        chat::estimate_prompt_tokens(&request.chat)
    }

    fn accounting(request: &request::Parsed) -> Accounting {
        chat::accounting(&request.chat)
    }

    fn plan(
        &self,
        state: &AppState,
        request: &request::Parsed,
        chain: &[Arc<ModelEntry>],
        _invocation: &Invocation,
    ) -> Result<Vec<Planned>, ApiError> {
        converse::plan(&request.chat, chain, state.config.default_max_tokens)
    }

    fn guard_pii(request: &mut request::Parsed, scanner: &Scanner, policy: &Policy) -> Report {
        scanner.guard(&mut request.chat, policy)
    }

    fn guardrail_texts(request: &mut request::Parsed) -> Vec<&mut String> {
        crate::pipeline::guardrail::chat_texts(&mut request.chat)
    }

    async fn respond(&self, call: Call<Self>) -> Result<Response, Refusal> {
        let echo = output::Echo {
            id: format!("resp_{}", call.request_id.simple()),
            created_at: chrono::Utc::now().timestamp(),
            model: call.alias.clone(),
            request: call.request.echo.clone(),
        };
        if call.request.chat.stream.unwrap_or(false) {
            let bedrock = call.state.bedrock.clone();
            let open = move |planned: &Planned| converse::open_stream(&bedrock, planned);
            relay::stream(call, open, |_, planned| {
                stream::streaming(planned, output::ResponsesEncoder::new(echo))
            })
            .await
        } else {
            let answer = Answer::of(&call.request.chat, &call);
            let upstream = std::time::Instant::now();
            let answered =
                complete::converse(&call, &answer)
                    .await
                    .map(|answered| call::Answered {
                        body: output::ResponseBody {
                            completion: answered.body,
                            echo,
                        },
                        model: answered.model,
                        usage: answered.usage,
                        headers: answered.headers,
                    });
            call::complete(call, answered, upstream).await
        }
    }

    fn refine(&self, error: ApiError) -> ApiError {
        request::in_responses_terms(error, &self.origins)
    }
}
