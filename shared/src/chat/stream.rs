//! A completion streamed as server-sent events (`stream: true`): ConverseStream events become
//! `chat.completion.chunk`s as they arrive. Once the first event is in, the stream is the
//! client's: a failure, or the invocation's deadline, ends it with an error event, and the
//! request settles for what was produced, whoever ended it.
//!
//! A buffered response (behind an ALB, which hands the client the body once complete and takes
//! at most 1 MB) coalesces consecutive deltas of one kind into one chunk, and ends with an error
//! event rather than outgrow its limit.
//!
//! When answers are scanned for PII, each content block's text goes through the
//! [`OutputGuard`]'s held-back window; a BLOCK finding ends the stream with an error event, and
//! the model's stream is read to its end (unsent) for Bedrock's own token count.

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

use super::invocation::{Delivery, Invocation, escaped_len};
use super::record::Status;
use super::{Answer, deadline_error, end, fail, until_deadline, write_headers};
use crate::admission::{Admitted, Refusal};
use crate::bedrock::{self, BedrockFailure, JSON_TOOL, Planned};
use crate::catalog::{ModelEntry, TokenUsage};
use crate::error::ApiError;
use crate::openai::{ChatCompletionChunk, ChunkChoice, Delta, FunctionDelta, ToolCallDelta};
use crate::pii::OutputGuard;
use crate::settlement::Guard;
use crate::state::AppState;

/// Calls the model for a stream (retries and fallbacks cover the call up to its first byte),
/// and answers with the event stream a task of its own relays.
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
            let call = bedrock::converse_stream_call(&state.bedrock, planned);
            async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
        }),
    )
    .await;
    let (called, planned) = match called {
        Some(Ok(called)) => called,
        Some(Err(error)) => {
            guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
            return Err(fail(guard, error));
        }
        None => {
            guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
            return Err(end(guard, deadline_error(), Status::Deadline));
        }
    };
    let include_usage = answer.include_usage;
    let (sender, mut response) = event_stream();
    write_headers(response.headers_mut(), &admitted, None, None);
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
        deadline: invocation.deadline,
        buffer: match invocation.delivery {
            Delivery::Streamed => None,
            Delivery::Buffered { limit_bytes } => Some(Coalescer::new(limit_bytes)),
        },
        output,
        kinds: HashMap::new(),
    };
    tokio::spawn(translator.run(called.stream, sender, include_usage, guard, upstream));
    Ok(response)
}

/// Reads the rest of a model's stream, unsent, until it ends, fails or `deadline` passes,
/// handing each event to `each`: what an answer the PII guard withheld still owes its count.
pub(crate) async fn drain<T, E>(
    events: &mut EventReceiver<T, E>,
    deadline: Option<tokio::time::Instant>,
    mut each: impl FnMut(T),
) where
    T: std::fmt::Debug,
    E: std::error::Error + std::fmt::Debug,
{
    let out_of_time = super::invocation::passed(deadline);
    tokio::pin!(out_of_time);
    loop {
        let event = tokio::select! {
            () = &mut out_of_time => return,
            event = events.recv() => event,
        };
        match event {
            Ok(Some(event)) => each(event),
            Ok(None) | Err(_) => return,
        }
    }
}

/// What a stream whose answer the PII guard withheld settles with (both APIs' streams).
pub(crate) struct Withheld<'a> {
    pub model: &'a ModelEntry,
    /// What the model produced, by Bedrock's count when it came.
    pub usage: TokenUsage,
    pub output: Option<&'a OutputGuard>,
    pub sent_bytes: u64,
    pub upstream: std::time::Instant,
}

impl Withheld<'_> {
    /// Charged for what the model produced, its findings noted, failed with `error`.
    pub(crate) fn settle(self, mut guard: Guard, error: &ApiError) {
        let record = guard.record();
        record.upstream_ms = self.upstream.elapsed().as_secs_f64() * 1000.0;
        record.charge(self.model, self.usage);
        if let Some(output) = self.output {
            record.note_output(output.report());
        }
        record.fail(error);
        record.response_bytes = self.sent_bytes;
        guard.finish(Status::Failure);
    }
}

/// A server-sent-event response whose body is what is sent on the returned channel, as it is
/// sent; dropping the sender ends it. Both APIs' streams answer with it.
pub(crate) fn event_stream() -> (mpsc::Sender<Bytes>, Response) {
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
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (sender, response)
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
    /// When the model call must have ended.
    deadline: Option<tokio::time::Instant>,
    /// A buffered response's coalescing and limit; `None` when streamed.
    buffer: Option<Coalescer>,
    /// The answer's PII guard, when answers are scanned.
    output: Option<OutputGuard>,
    /// What each content block's text is, for the guard's held text.
    kinds: HashMap<i32, Kind>,
}

/// What a content block's text deltas are.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Content,
    Reasoning,
    Arguments(u32),
}

/// How a relayed stream ended.
enum End {
    Complete,
    ClientGone,
    Upstream(ApiError),
    Deadline,
    /// A buffered response reached its limit.
    TooLarge,
    /// The PII guard withheld the rest of the answer.
    Blocked(ApiError),
}

/// Why an event was not sent.
enum Unsent {
    ClientGone,
    TooLarge,
}

impl From<Unsent> for End {
    fn from(unsent: Unsent) -> End {
        match unsent {
            Unsent::ClientGone => End::ClientGone,
            Unsent::TooLarge => End::TooLarge,
        }
    }
}

/// Room kept at the end of a buffered response for its last events (the finish chunk, the
/// usage chunk and `[DONE]`, or an error event).
const END_RESERVE: usize = 4 * 1024;
/// The most text one coalesced chunk carries.
const COALESCE_UP_TO: usize = 16 * 1024;

/// The deltas of a buffered response, coalesced: consecutive content, reasoning or argument
/// deltas of one tool call become one chunk. Counts the response's size as its receiver does
/// (the body as a JSON string).
struct Coalescer {
    limit: usize,
    used: usize,
    pending: Option<Delta>,
}

impl Coalescer {
    fn new(limit: usize) -> Coalescer {
        Coalescer {
            limit,
            used: 0,
            pending: None,
        }
    }

    /// Adds `next` to the pending delta when they are of one kind; otherwise returns the
    /// pending delta, to be sent, and keeps `next`.
    fn push(&mut self, next: Delta) -> Option<Delta> {
        if let Some(pending) = &mut self.pending
            && delta_text(pending) < COALESCE_UP_TO
            && merge(pending, &next)
        {
            return None;
        }
        self.pending.replace(next)
    }

    /// True when `event` fits, keeping room for the last events; counts it if so.
    fn admit(&mut self, event: &[u8], last: bool) -> bool {
        let size = escaped_len(event);
        let reserve = if last { 0 } else { END_RESERVE };
        if self.used + size + reserve > self.limit {
            return false;
        }
        self.used += size;
        true
    }
}

/// The text a delta carries.
fn delta_text(delta: &Delta) -> usize {
    delta.content.as_ref().map_or(0, String::len)
        + delta.reasoning_content.as_ref().map_or(0, String::len)
        + delta
            .tool_calls
            .iter()
            .flatten()
            .map(|t| t.function.arguments.len())
            .sum::<usize>()
}

/// Appends `next` to `into` when both are only content, only reasoning, or only argument text
/// of one tool call.
fn merge(into: &mut Delta, next: &Delta) -> bool {
    if into.role.is_some() || next.role.is_some() {
        return false;
    }
    match (into, next) {
        (
            Delta {
                content: Some(text),
                reasoning_content: None,
                tool_calls: None,
                ..
            },
            Delta {
                content: Some(more),
                reasoning_content: None,
                tool_calls: None,
                ..
            },
        )
        | (
            Delta {
                content: None,
                reasoning_content: Some(text),
                tool_calls: None,
                ..
            },
            Delta {
                content: None,
                reasoning_content: Some(more),
                tool_calls: None,
                ..
            },
        ) => {
            text.push_str(more);
            true
        }
        (
            Delta {
                content: None,
                reasoning_content: None,
                tool_calls: Some(calls),
                ..
            },
            Delta {
                content: None,
                reasoning_content: None,
                tool_calls: Some(more),
                ..
            },
        ) => match (calls.as_mut_slice(), more.as_slice()) {
            ([call], [next])
                if call.index == next.index
                    && next.id.is_none()
                    && next.kind.is_none()
                    && next.function.name.is_none() =>
            {
                call.function.arguments.push_str(&next.function.arguments);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A chunk's delta and finish reason.
type Piece = (Delta, Option<&'static str>);

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

    fn tool_delta(delta: ToolCallDelta) -> Piece {
        (
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

    /// A text delta of `block` as a piece: as it came, or through the output guard's window
    /// (nothing, while it holds the text back).
    fn screened(&mut self, block: i32, kind: Kind, text: &str) -> Vec<Piece> {
        let released = match &mut self.output {
            None => text.to_owned(),
            Some(output) => {
                self.kinds.insert(block, kind);
                output.push(i64::from(block), text)
            }
        };
        if released.is_empty() {
            return Vec::new();
        }
        vec![Self::piece(kind, released)]
    }

    /// The text the output guard still holds for `block`, which has ended.
    fn flushed(&mut self, block: i32) -> Vec<Piece> {
        let (Some(output), Some(kind)) = (&mut self.output, self.kinds.get(&block).copied()) else {
            return Vec::new();
        };
        let released = output.flush(i64::from(block));
        if released.is_empty() {
            return Vec::new();
        }
        vec![Self::piece(kind, released)]
    }

    fn piece(kind: Kind, text: String) -> Piece {
        match kind {
            Kind::Content => (
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
            ),
            Kind::Reasoning => (
                Delta {
                    reasoning_content: Some(text),
                    ..Delta::default()
                },
                None,
            ),
            Kind::Arguments(index) => Self::tool_delta(ToolCallDelta {
                index,
                id: None,
                kind: None,
                function: FunctionDelta {
                    name: None,
                    arguments: text,
                },
            }),
        }
    }

    /// The chunks one Bedrock event becomes, as deltas and finish reasons.
    fn translate(&mut self, event: ConverseStreamOutput) -> Vec<Piece> {
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
                        vec![Self::tool_delta(ToolCallDelta {
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
                        self.screened(block, Kind::Content, text)
                    }
                    Some(ContentBlockDelta::ToolUse(tool)) if self.json_block == Some(block) => {
                        self.count(tool.input());
                        self.screened(block, Kind::Content, tool.input())
                    }
                    Some(ContentBlockDelta::ToolUse(tool)) => {
                        match self.tool_index.get(&block).copied() {
                            Some(index) => {
                                self.count(tool.input());
                                self.screened(block, Kind::Arguments(index), tool.input())
                            }
                            None => Vec::new(),
                        }
                    }
                    Some(ContentBlockDelta::ReasoningContent(
                        ReasoningContentBlockDelta::Text(text),
                    )) => {
                        self.count(text);
                        self.screened(block, Kind::Reasoning, text)
                    }
                    _ => Vec::new(),
                }
            }
            ConverseStreamOutput::ContentBlockStop(stop) => {
                self.flushed(stop.content_block_index())
            }
            ConverseStreamOutput::MessageStop(stop) => {
                self.finished = true;
                let mut reason = bedrock::finish_reason(stop.stop_reason());
                if self.json_tool && reason == "tool_calls" {
                    reason = "stop";
                }
                let held: Vec<i32> = self
                    .output
                    .as_ref()
                    .map(OutputGuard::held_blocks)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|b| i32::try_from(b).ok())
                    .collect();
                let mut pieces: Vec<Piece> =
                    held.into_iter().flat_map(|b| self.flushed(b)).collect();
                pieces.push((Delta::default(), Some(reason)));
                pieces
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
        let mut end = self.relay(&mut events, &sender).await;
        if let End::Blocked(error) = end {
            return self.withhold(events, sender, guard, upstream, error).await;
        }
        if let Some(output) = &self.output {
            guard.record().note_output(output.report());
        }
        // A buffered response's last coalesced delta goes out before its ending.
        if !matches!(end, End::ClientGone | End::TooLarge)
            && let Err(unsent) = self.flush(&sender).await
        {
            end = unsent.into();
        }
        // The model's whole stream is upstream time; the gateway relays as it arrives.
        let estimated_input = guard.record().estimated_input;
        let usage = self.best_usage(estimated_input);
        let record = guard.record();
        record.upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
        record.charge(&self.model, usage);
        let (status, error) = match end {
            End::Complete => (Status::Success, None),
            End::ClientGone => (Status::ClientClosed, None),
            End::Upstream(error) => (Status::UpstreamCut, Some(error)),
            End::Deadline => (Status::Deadline, Some(deadline_error())),
            End::TooLarge => (Status::Failure, Some(ApiError::ResponseTooLarge)),
            End::Blocked(error) => (Status::Failure, Some(error)),
        };
        match &error {
            None if status == Status::Success => {
                if include_usage {
                    let chunk = sse(&ChatCompletionChunk {
                        id: self.answer.id.clone(),
                        object: "chat.completion.chunk",
                        created: self.answer.created,
                        model: self.answer.alias.clone(),
                        choices: Vec::new(),
                        usage: Some(bedrock::openai_usage(&usage)),
                    });
                    let _ = self.deliver(&sender, chunk, true).await;
                }
                let done = Bytes::from_static(b"data: [DONE]\n\n");
                let _ = self.deliver(&sender, done, true).await;
                record.status_code = 200;
            }
            None => {}
            // An error event, and no `[DONE]`: the client can tell the answer is incomplete.
            Some(error) => {
                let _ = self.deliver(&sender, sse(&error.body()), true).await;
                record.fail(error);
            }
        }
        guard.record().response_bytes = self.sent_bytes;
        drop(sender);
        guard.finish(status);
    }

    /// Ends an answer the PII guard withheld: what was released goes out, then the error event,
    /// and the client's stream ends. The model's stream is read on, unsent, to its end (or the
    /// deadline) for Bedrock's own count; the request pays for what the model produced.
    async fn withhold(
        mut self,
        mut events: EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
        sender: mpsc::Sender<Bytes>,
        mut guard: Guard,
        upstream: std::time::Instant,
        error: ApiError,
    ) {
        let _ = self.flush(&sender).await;
        let _ = self.deliver(&sender, sse(&error.body()), true).await;
        drop(sender);
        let deadline = self.deadline;
        drain(&mut events, deadline, |event| {
            let _ = self.translate(event);
        })
        .await;
        let usage = self.best_usage(guard.record().estimated_input);
        let withheld = Withheld {
            model: &self.model,
            usage,
            output: self.output.as_ref(),
            sent_bytes: self.sent_bytes,
            upstream,
        };
        withheld.settle(guard, &error);
    }

    /// Emits one piece: sent at once when streamed; coalesced with its neighbours when buffered.
    async fn emit(&mut self, sender: &mpsc::Sender<Bytes>, piece: Piece) -> Result<(), Unsent> {
        let (delta, finish_reason) = piece;
        let ready = match &mut self.buffer {
            Some(buffer) if finish_reason.is_none() => match buffer.push(delta) {
                Some(ready) => ready,
                None => return Ok(()),
            },
            Some(_) => {
                self.flush(sender).await?;
                delta
            }
            None => delta,
        };
        let chunk = self.chunk(ready, finish_reason);
        self.deliver(sender, chunk, false).await
    }

    /// Sends a buffered response's pending delta.
    async fn flush(&mut self, sender: &mpsc::Sender<Bytes>) -> Result<(), Unsent> {
        match self.buffer.as_mut().and_then(|b| b.pending.take()) {
            Some(pending) => {
                let chunk = self.chunk(pending, None);
                self.deliver(sender, chunk, false).await
            }
            None => Ok(()),
        }
    }

    /// Sends one event. In a buffered response it must fit, and only the `last` events may use
    /// the room kept for the ending.
    async fn deliver(
        &mut self,
        sender: &mpsc::Sender<Bytes>,
        chunk: Bytes,
        last: bool,
    ) -> Result<(), Unsent> {
        if let Some(buffer) = &mut self.buffer
            && !buffer.admit(&chunk, last)
        {
            return Err(Unsent::TooLarge);
        }
        let len = chunk.len() as u64;
        sender.send(chunk).await.map_err(|_| Unsent::ClientGone)?;
        self.sent_bytes += len;
        Ok(())
    }

    /// Sends the role chunk and then every translated event, until the stream ends, the client
    /// goes away (noticed at once, not at the next event), the deadline comes, Bedrock fails, or
    /// a buffered response is full.
    async fn relay(
        &mut self,
        events: &mut EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
        sender: &mpsc::Sender<Bytes>,
    ) -> End {
        let role = Delta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..Delta::default()
        };
        if let Err(unsent) = self.emit(sender, (role, None)).await {
            return unsent.into();
        }
        let out_of_time = super::invocation::passed(self.deadline);
        tokio::pin!(out_of_time);
        loop {
            let event = tokio::select! {
                // Dropping the event receiver on the way out ends the Bedrock call.
                () = sender.closed() => return End::ClientGone,
                () = &mut out_of_time => return End::Deadline,
                event = events.recv() => event,
            };
            match event {
                Ok(Some(event)) => {
                    let pieces = self.translate(event);
                    if let Some(error) = self.output.as_ref().and_then(OutputGuard::blocked) {
                        return End::Blocked(error);
                    }
                    for piece in pieces {
                        if let Err(unsent) = self.emit(sender, piece).await {
                            return unsent.into();
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
