//! A completion answered in one body (`stream` unset or false).

use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::types::{ContentBlock, ReasoningContentBlock};
use axum::response::{IntoResponse, Response};
use http::header;

use super::record::Status;
use super::{Answer, Invocation, deadline_error, end, fail, until_deadline, write_headers};
use crate::admission::{Admitted, Refusal};
use crate::bedrock::{self, BedrockFailure, JSON_TOOL, Planned};
use crate::catalog::TokenUsage;
use crate::openai::{ChatCompletion, Choice, FunctionCall, ResponseMessage, ToolCall};
use crate::pii::OutputGuard;
use crate::settlement::Guard;
use crate::state::AppState;

/// Calls the model (with retries and fallbacks) until the invocation's deadline, answers, and
/// hands the request to settlement.
pub(super) async fn respond(
    state: AppState,
    plan: Vec<Planned>,
    answer: Answer,
    admitted: Admitted,
    mut guard: Guard,
    invocation: Invocation,
    output: Option<OutputGuard>,
) -> Result<Response, Refusal> {
    let upstream = std::time::Instant::now();
    let called = until_deadline(
        &invocation,
        bedrock::with_fallbacks(&state.retry, &plan, &answer.alias, |planned| {
            let call = bedrock::converse_call(&state.bedrock, planned);
            async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
        }),
    )
    .await;
    guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
    let (called_output, planned) = match called {
        Some(Ok(called)) => called,
        Some(Err(error)) => return Err(fail(guard, error)),
        // Cut: the prompt was read, the answer is lost; it pays the prompt at the estimate.
        None => return Err(end(guard, deadline_error(), Status::Deadline)),
    };
    let usage = bedrock::token_usage(called_output.usage());
    let mut body = completion_body(&called_output, &answer, planned.converse.json_tool, &usage);
    guard.record().charge(&planned.model, usage);
    if let Some(mut output) = output {
        guard_answer(&mut output, &mut body);
        guard.record().note_output(output.report());
        if let Some(error) = output.blocked() {
            // The answer is withheld; the request pays for it, as the model produced it.
            return Err(end(guard, error, Status::Failure));
        }
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let record = guard.record();
    record.response_bytes = bytes.len() as u64;
    record.status_code = 200;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    write_headers(
        response.headers_mut(),
        &admitted,
        guard.record_ref(),
        Some(&planned.model),
    );
    guard.finish(Status::Success);
    Ok(response)
}

/// The output guard over a whole answer: its text, reasoning and tool-call arguments.
fn guard_answer(output: &mut OutputGuard, body: &mut ChatCompletion) {
    for choice in &mut body.choices {
        let message = &mut choice.message;
        for text in [&mut message.content, &mut message.reasoning_content]
            .into_iter()
            .flatten()
        {
            output.text(text);
        }
        for call in message.tool_calls.iter_mut().flatten() {
            output.text(&mut call.function.arguments);
        }
    }
}

fn completion_body(
    output: &ConverseOutput,
    answer: &Answer,
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
        id: answer.id.clone(),
        object: "chat.completion",
        created: answer.created,
        model: answer.alias.clone(),
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
