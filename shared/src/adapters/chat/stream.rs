//! A completion streamed (`stream: true`): ConverseStream's events read by the
//! [`ConverseDecoder`] (shared with the Responses API, which writes them its own way) and written
//! as `chat.completion.chunk` events by the [`ChatEncoder`]. The relay (`pipeline::relay`) does
//! the rest: coalescing, the PII window, deadline, hang-up, keep-alive and settlement.

use std::collections::HashMap;

use aws_sdk_bedrockruntime::types::{
    ContentBlockDelta, ContentBlockStart, ConverseStreamOutput, ReasoningContentBlockDelta,
};
use bytes::Bytes;
use http::HeaderMap;

use super::Answer;
use super::converse::{self, JSON_TOOL, Planned};
use crate::catalog::TokenUsage;
use crate::error::{ApiError, ErrorShape};
use crate::openai::{ChatCompletionChunk, ChunkChoice, Delta, FunctionDelta, ToolCallDelta};
use crate::pipeline::relay::{Decoder, Encoder, Piece, Streaming};

/// What a content block's text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The answer (a `json_schema` answer included).
    Content,
    Reasoning,
    /// The arguments of tool call `n` (0, 1, ... in call order).
    Arguments(u32),
}

/// The events of a chat answer besides its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// Tool call `index` begins.
    ToolCall {
        index: u32,
        id: String,
        name: String,
    },
    /// The answer ended, for `reason` (OpenAI's `finish_reason`).
    Finish(&'static str),
}

/// The decoder and encoder of a chat answer streamed from `planned`.
pub fn streaming<N: Encoder<Kind, ChatEvent>>(
    planned: &Planned,
    encoder: N,
) -> Streaming<ConverseDecoder, N> {
    Streaming {
        decoder: ConverseDecoder::new(planned.converse.json_tool),
        encoder,
        headers: HeaderMap::new(),
    }
}

/// Reads ConverseStream events.
#[derive(Debug)]
pub struct ConverseDecoder {
    json_tool: bool,
    /// Bedrock content-block index -> OpenAI tool-call index.
    tool_index: HashMap<i32, u32>,
    /// The block carrying a `json_schema` answer, streamed as content.
    json_block: Option<i32>,
    finished: bool,
    /// Bedrock's own count, from the stream's final metadata event.
    usage: Option<TokenUsage>,
}

impl ConverseDecoder {
    pub fn new(json_tool: bool) -> ConverseDecoder {
        ConverseDecoder {
            json_tool,
            tool_index: HashMap::new(),
            json_block: None,
            finished: false,
            usage: None,
        }
    }
}

impl Decoder for ConverseDecoder {
    type Event = ConverseStreamOutput;
    type Kind = Kind;
    type Out = ChatEvent;

    fn decode(
        &mut self,
        event: ConverseStreamOutput,
        pieces: &mut Vec<Piece<Kind, ChatEvent>>,
    ) -> Result<(), ApiError> {
        let text = |block: i32, kind, text: &str| Piece::Text {
            block: i64::from(block),
            kind,
            text: text.to_owned(),
        };
        match event {
            ConverseStreamOutput::ContentBlockStart(start) => {
                let block = start.content_block_index();
                match start.start() {
                    Some(ContentBlockStart::ToolUse(tool))
                        if self.json_tool && tool.name() == JSON_TOOL =>
                    {
                        self.json_block = Some(block);
                    }
                    Some(ContentBlockStart::ToolUse(tool)) => {
                        let index = u32::try_from(self.tool_index.len()).unwrap_or(u32::MAX);
                        self.tool_index.insert(block, index);
                        pieces.push(Piece::Event(ChatEvent::ToolCall {
                            index,
                            id: tool.tool_use_id().to_owned(),
                            name: tool.name().to_owned(),
                        }));
                    }
                    _ => {}
                }
            }
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                let block = delta.content_block_index();
                match delta.delta() {
                    Some(ContentBlockDelta::Text(t)) => pieces.push(text(block, Kind::Content, t)),
                    Some(ContentBlockDelta::ToolUse(tool)) if self.json_block == Some(block) => {
                        pieces.push(text(block, Kind::Content, tool.input()));
                    }
                    Some(ContentBlockDelta::ToolUse(tool)) => {
                        if let Some(index) = self.tool_index.get(&block).copied() {
                            pieces.push(text(block, Kind::Arguments(index), tool.input()));
                        }
                    }
                    Some(ContentBlockDelta::ReasoningContent(
                        ReasoningContentBlockDelta::Text(t),
                    )) => pieces.push(text(block, Kind::Reasoning, t)),
                    _ => {}
                }
            }
            ConverseStreamOutput::ContentBlockStop(stop) => {
                pieces.push(Piece::BlockEnd(i64::from(stop.content_block_index())));
            }
            ConverseStreamOutput::MessageStop(stop) => {
                self.finished = true;
                let mut reason = converse::finish_reason(stop.stop_reason());
                if self.json_tool && reason == "tool_calls" {
                    reason = "stop";
                }
                pieces.push(Piece::AllBlocksEnd);
                pieces.push(Piece::Event(ChatEvent::Finish(reason)));
            }
            ConverseStreamOutput::Metadata(metadata) => {
                self.usage = Some(converse::token_usage(metadata.usage()));
            }
            _ => {}
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.finished
    }

    /// Bedrock's count, or else the prompt estimate and the output relayed.
    fn usage(&self, relayed: u64, estimated_input: u64) -> TokenUsage {
        self.usage.unwrap_or(TokenUsage {
            input: estimated_input,
            output: relayed,
            ..TokenUsage::default()
        })
    }
}

/// Writes `chat.completion.chunk` events.
pub struct ChatEncoder {
    answer: Answer,
}

impl ChatEncoder {
    pub fn new(answer: Answer) -> ChatEncoder {
        ChatEncoder { answer }
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> Bytes {
        sse(&ChatCompletionChunk {
            id: self.answer.id.clone(),
            object: "chat.completion.chunk",
            created: self.answer.created,
            model: self.answer.alias.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: None,
            service_tier: self.answer.service_tier,
        })
    }
}

fn sse(data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("data: {json}\n\n"))
}

fn tool_delta(delta: ToolCallDelta) -> Delta {
    Delta {
        tool_calls: Some(vec![delta]),
        ..Delta::default()
    }
}

impl Encoder<Kind, ChatEvent> for ChatEncoder {
    fn start(&mut self) -> Bytes {
        let role = Delta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..Delta::default()
        };
        self.chunk(role, None)
    }

    fn text(&mut self, _block: i64, kind: Kind, text: String) -> Bytes {
        let delta = match kind {
            Kind::Content => Delta {
                content: Some(text),
                ..Delta::default()
            },
            Kind::Reasoning => Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
            Kind::Arguments(index) => tool_delta(ToolCallDelta {
                index,
                id: None,
                kind: None,
                function: FunctionDelta {
                    name: None,
                    arguments: text,
                },
            }),
        };
        self.chunk(delta, None)
    }

    fn event(&mut self, event: ChatEvent) -> Bytes {
        match event {
            ChatEvent::ToolCall { index, id, name } => {
                let delta = tool_delta(ToolCallDelta {
                    index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: String::new(),
                    },
                });
                self.chunk(delta, None)
            }
            ChatEvent::Finish(reason) => self.chunk(Delta::default(), Some(reason)),
        }
    }

    fn end(&mut self, usage: &TokenUsage) -> Bytes {
        let mut out = Vec::new();
        if self.answer.include_usage {
            out.extend_from_slice(&sse(&ChatCompletionChunk {
                id: self.answer.id.clone(),
                object: "chat.completion.chunk",
                created: self.answer.created,
                model: self.answer.alias.clone(),
                choices: Vec::new(),
                usage: Some(converse::openai_usage(usage)),
                service_tier: self.answer.service_tier,
            }));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        sse(&ErrorShape::OpenAi.body(error))
    }
}
