//! A completion answered in one body (`stream` unset or false): Converse's answer as a
//! `chat.completion`.

use std::sync::Arc;

use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::types::{ContentBlock, ReasoningContentBlock};
use http::HeaderMap;

use super::Answer;
use super::converse::{self, JSON_TOOL, Planned};
use crate::catalog::TokenUsage;
use crate::clients::bedrock::BedrockFailure;
use crate::openai::{ChatCompletion, Choice, FunctionCall, ResponseMessage, ToolCall};
use crate::pii::OutputGuard;
use crate::pipeline::call::{self, AnswerBody, Answered, Failed};
use crate::pipeline::{Adapter, Call};

/// Calls the model (with retries and fallbacks) until the invocation's deadline: the answer as a
/// chat completion, for `answer`.
pub async fn converse<A: Adapter<Planned = Planned>>(
    call: &Call<A>,
    answer: &Answer,
) -> Result<Answered<ChatCompletion>, Failed> {
    let bedrock = &call.state.bedrock;
    let (output, planned) = call::fallbacks(call, |planned| {
        let call = converse::converse_call(bedrock, planned);
        async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
    })
    .await?;
    let usage = converse::token_usage(output.usage());
    Ok(Answered {
        model: Arc::clone(&planned.model),
        usage,
        body: completion_body(&output, answer, planned.converse.json_tool, &usage),
        headers: HeaderMap::new(),
    })
}

impl AnswerBody for ChatCompletion {
    fn screen(&mut self, output: &mut OutputGuard) {
        guard_answer(output, self);
    }

    fn texts(&mut self) -> Vec<&mut String> {
        let mut texts = Vec::new();
        for choice in &mut self.choices {
            let message = &mut choice.message;
            texts.extend(
                [&mut message.content, &mut message.reasoning_content]
                    .into_iter()
                    .flatten(),
            );
            for call in message.tool_calls.iter_mut().flatten() {
                texts.push(&mut call.function.arguments);
            }
        }
        texts
    }

    fn into_bytes(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
    }
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
                text.push_str(&converse::from_document(tool.input()).to_string());
            }
            ContentBlock::ToolUse(tool) => tool_calls.push(ToolCall {
                id: tool.tool_use_id().to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: tool.name().to_owned(),
                    arguments: converse::from_document(tool.input()).to_string(),
                },
            }),
            ContentBlock::ReasoningContent(ReasoningContentBlock::ReasoningText(r)) => {
                reasoning.push_str(r.text());
            }
            _ => {}
        }
    }
    let mut finish_reason = converse::finish_reason(output.stop_reason());
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
        usage: converse::openai_usage(usage),
        service_tier: answer.service_tier,
        system_fingerprint: None,
    }
}
