//! OpenAI's Responses API, stateless: `POST /v1/responses` (and `/responses`), for the agent
//! tooling that speaks it (Codex CLI, the Agents SDK). A Responses request is read into the chat
//! completion it asks for and takes the chat path as it is: validation, the Converse plan,
//! admission, the PII guard, retries and fallbacks under the deadline, settlement and the audit
//! record (`call_type` `aresponses`). Only the wire differs: the request is read here
//! ([`request`]), and the answer, complete or streamed, is rewritten as Responses ([`output`]).
//!
//! Stateless: nothing is stored, so `previous_response_id`, `conversation`, `store: true` and
//! item references are refused with a 400 that says to send the whole conversation; an absent
//! `store` is taken as "do not store" (the SDKs leave it out unless asked). Built-in tools
//! (web search, file search, code interpreter, computer use, ...) are refused by their type.

mod output;
mod request;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use serde_json::Value;

use crate::admission::Refusal;
use crate::chat::record::CallType;
use crate::chat::{self, BearerKey, Delivery, Invocation};
use crate::http::{ApiJson, RequestId};
use crate::state::AppState;

/// How many times a streamed answer's text is written in its events (the deltas, then
/// `output_text.done`, `content_part.done`, `output_item.done` and `response.completed`): a
/// buffered stream's chat events may use this share of its limit.
const TEXT_COPIES: usize = 6;

/// `POST /v1/responses`.
pub async fn responses(
    BearerKey(key): BearerKey,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, Refusal> {
    let invocation = invocation.map(|Extension(i)| i).unwrap_or_default();
    let request::Parsed {
        chat: mut request,
        echo,
        origins,
    } = request::parse(&body)?;
    let echo = output::Echo {
        id: format!("resp_{}", request_id.simple()),
        created_at: chrono::Utc::now().timestamp(),
        model: request.model.clone(),
        request: echo,
    };
    let mut admission = chat::admit_completion(
        &state,
        &key,
        request_id,
        invocation,
        &headers,
        &mut request,
        CallType::Aresponses,
    )
    .await
    .map_err(|mut refusal| {
        refusal.error = request::in_responses_terms(refusal.error, &origins);
        refusal
    })?;
    let stream = request.stream.unwrap_or(false);
    if stream && let Delivery::Buffered { limit_bytes } = admission.invocation.delivery {
        admission.invocation.delivery = Delivery::Buffered {
            limit_bytes: limit_bytes / TEXT_COPIES,
        };
    }
    let response = chat::respond(state, &request, admission).await?;
    Ok(if stream {
        output::stream(response, echo)
    } else {
        output::complete(response, &echo).await
    })
}
