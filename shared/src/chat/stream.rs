//! A completion streamed as server-sent events (`stream: true`): ConverseStream events become
//! `chat.completion.chunk`s as they arrive. Once the first event is in, the stream is the
//! client's: a failure ends it with an error event, and the request settles for what was
//! produced, whoever ended it.

use std::collections::HashMap;
use std::convert::Infallible;

use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    ContentBlockDelta, ContentBlockStart, ConverseStreamOutput, ReasoningContentBlockDelta,
};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use tokio::sync::mpsc;

use super::record::Status;
use super::{Answer, fail, write_headers};
use crate::admission::{Admitted, Refusal};
use crate::bedrock::{self, BedrockFailure, JSON_TOOL, Planned};
use crate::catalog::{ModelEntry, TokenUsage};
use crate::error::ApiError;
use crate::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Delta, FunctionDelta, ToolCallDelta,
};
use crate::settlement::Guard;
use crate::state::AppState;

/// Calls the model for a stream (retries and fallbacks cover the call up to its first byte),
/// and answers with the event stream a task of its own relays.
pub(super) async fn respond(
    state: AppState,
    plan: Vec<Planned>,
    request: &ChatCompletionRequest,
    answer: Answer,
    admitted: Admitted,
    mut guard: Guard,
) -> Result<Response, Refusal> {
    let upstream = std::time::Instant::now();
    let called = bedrock::with_fallbacks(&state.retry, &plan, &answer.alias, |planned| {
        let call = bedrock::converse_stream_call(&state.bedrock, planned);
        async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
    })
    .await;
    let (output, planned) = match called {
        Ok(called) => called,
        Err(error) => {
            guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
            return Err(fail(guard, error));
        }
    };
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let mut response = Response::new(Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async {
            receiver
                .recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
        },
    )));
    let headers = response.headers_mut();
    write_headers(headers, &admitted, None, None);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let translator = StreamTranslator {
        answer,
        json_tool: planned.converse.json_tool,
        model: std::sync::Arc::clone(&planned.model),
        tool_index: HashMap::new(),
        json_block: None,
        finished: false,
        usage: None,
        deltas: 0,
        delta_bytes: 0,
        sent_bytes: 0,
    };
    tokio::spawn(translator.run(output.stream, sender, include_usage, guard, upstream));
    Ok(response)
}

/// Turns ConverseStream events into `chat.completion.chunk` events.
struct StreamTranslator {
    answer: Answer,
    json_tool: bool,
    /// The model that is answering.
    model: std::sync::Arc<ModelEntry>,
    /// Bedrock content-block index -> OpenAI tool-call index (0, 1, ... in call order).
    tool_index: HashMap<i32, u32>,
    /// The block carrying a `json_schema` answer, streamed as content.
    json_block: Option<i32>,
    finished: bool,
    /// Bedrock's own count, from the stream's final metadata event.
    usage: Option<TokenUsage>,
    /// Output deltas relayed, and their bytes: the output count when Bedrock's never came.
    deltas: u64,
    delta_bytes: u64,
    /// Bytes of events sent to the client, for the audit record.
    sent_bytes: u64,
}

/// How a relayed stream ended.
enum End {
    Complete,
    ClientGone,
    Upstream(ApiError),
}

fn sse(data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("data: {json}\n\n"))
}

impl StreamTranslator {
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

    /// Counts an output delta of `text`, for the charge when Bedrock's own count never comes.
    fn count(&mut self, text: &str) {
        self.deltas += 1;
        self.delta_bytes += text.len() as u64;
    }

    /// The best usage known: Bedrock's, or else the prompt estimate and the output relayed (a
    /// delta is at least one token; four bytes a token otherwise).
    fn best_usage(&self, estimated_input: u64) -> TokenUsage {
        self.usage.unwrap_or(TokenUsage {
            input: estimated_input,
            output: self.deltas.max(self.delta_bytes.div_ceil(4)),
            ..TokenUsage::default()
        })
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
                    Some(ContentBlockDelta::Text(text)) => {
                        self.count(text);
                        vec![self.content(text)]
                    }
                    Some(ContentBlockDelta::ToolUse(tool)) if self.json_block == Some(block) => {
                        self.count(tool.input());
                        vec![self.content(tool.input())]
                    }
                    Some(ContentBlockDelta::ToolUse(tool)) => {
                        match self.tool_index.get(&block).copied() {
                            Some(index) => {
                                self.count(tool.input());
                                vec![self.tool_delta(ToolCallDelta {
                                    index,
                                    id: None,
                                    kind: None,
                                    function: FunctionDelta {
                                        name: None,
                                        arguments: tool.input().to_owned(),
                                    },
                                })]
                            }
                            None => Vec::new(),
                        }
                    }
                    Some(ContentBlockDelta::ReasoningContent(
                        ReasoningContentBlockDelta::Text(text),
                    )) => {
                        self.count(text);
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

    /// Relays the stream, then settles: success, a client that went away, or a stream cut by
    /// Bedrock. The final chunks go out before settlement, which follows the response.
    async fn run(
        mut self,
        mut events: EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
        sender: mpsc::Sender<Bytes>,
        include_usage: bool,
        mut guard: Guard,
        upstream: std::time::Instant,
    ) {
        let end = self.relay(&mut events, &sender).await;
        // The model's whole stream is upstream time; the gateway relays as it arrives.
        let estimated_input = guard.record().estimated_input;
        let usage = self.best_usage(estimated_input);
        let record = guard.record();
        record.upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
        record.charge(&self.model, usage);
        let status = match end {
            End::Complete => {
                if include_usage {
                    let chunk = sse(&ChatCompletionChunk {
                        id: self.answer.id.clone(),
                        object: "chat.completion.chunk",
                        created: self.answer.created,
                        model: self.answer.alias.clone(),
                        choices: Vec::new(),
                        usage: Some(bedrock::openai_usage(&usage)),
                    });
                    self.send(&sender, chunk).await;
                }
                self.send(&sender, Bytes::from_static(b"data: [DONE]\n\n"))
                    .await;
                record.status_code = 200;
                Status::Success
            }
            End::ClientGone => Status::ClientClosed,
            End::Upstream(error) => {
                let event = sse(&error.body());
                self.send(&sender, event).await;
                record.fail(&error);
                Status::UpstreamCut
            }
        };
        guard.record().response_bytes = self.sent_bytes;
        drop(sender);
        guard.finish(status);
    }

    /// Sends one event; false when the client has gone.
    async fn send(&mut self, sender: &mpsc::Sender<Bytes>, chunk: Bytes) -> bool {
        let len = chunk.len() as u64;
        let sent = sender.send(chunk).await.is_ok();
        if sent {
            self.sent_bytes += len;
        }
        sent
    }

    /// Sends the role chunk and then every translated event, until the stream ends, the client
    /// goes away (noticed at once, not at the next event), or Bedrock fails.
    async fn relay(
        &mut self,
        events: &mut EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
        sender: &mpsc::Sender<Bytes>,
    ) -> End {
        let role = self.chunk(
            Delta {
                role: Some("assistant"),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        );
        if !self.send(sender, role).await {
            return End::ClientGone;
        }
        loop {
            let event = tokio::select! {
                // Dropping the event receiver on the way out ends the Bedrock call.
                () = sender.closed() => return End::ClientGone,
                event = events.recv() => event,
            };
            match event {
                Ok(Some(event)) => {
                    for chunk in self.translate(event) {
                        if !self.send(sender, chunk).await {
                            return End::ClientGone;
                        }
                    }
                }
                Ok(None) if self.finished => return End::Complete,
                Ok(None) => {
                    return End::Upstream(ApiError::Upstream(
                        "the model stream ended before the answer was complete".into(),
                    ));
                }
                Err(e) => {
                    let failure = BedrockFailure::from_sdk(&e);
                    tracing::warn!(?failure, "Bedrock stream failed midway");
                    return End::Upstream(failure.into_api_error(&self.answer.alias));
                }
            }
        }
    }
}
