//! The one server-sent-event relay every streamed API shares. An adapter gives it a
//! [`Decoder`] (the model's events become [`Piece`]s: text of a content block, a block's end, or
//! an event of the API's own) and an [`Encoder`] (pieces become the API's SSE events); the relay
//! does the rest, once for all of them:
//!
//! - the model call, with retries and fallbacks up to its first byte, under the deadline;
//! - each content block's text through the PII guard's held-back window, then, when the key or
//!   team names a guardrail, through the guardrail's windows ([`super::guardrail`]) (a BLOCK
//!   finding or a BLOCKED verdict ends the stream with an error event; the model's stream is
//!   then read to its end, unsent, for Bedrock's own count);
//! - behind an ALB (one buffered body of at most 1 MB), consecutive text of one block coalesced,
//!   and an error event rather than a body past the limit, with room kept for the ending;
//! - a comment every 15 s of silence when streamed (API Gateway cuts a stream after 5 minutes
//!   without a byte);
//! - the client hanging up (noticed at once), the deadline, a stream cut by Bedrock;
//! - the ending (`[DONE]`, `message_stop`, `response.completed`) or an error event and no
//!   ending, so a client can tell an incomplete answer; then settlement, exactly once, for what
//!   was produced.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::call::{self, deadline_error, write_headers};
use super::guardrail::OutputWindows;
use super::invocation::{Delivery, escaped_len, passed};
use super::{Adapter, Call};
use crate::catalog::{ModelEntry, TokenUsage};
use crate::clients::bedrock::{BedrockFailure, Candidate};
use crate::clients::traces::Trace;
use crate::error::{ApiError, Refusal};
use crate::pii::OutputGuard;
use crate::record::Status;
use crate::settlement::Guard;

/// Room kept at the end of a buffered response for its last events.
pub const END_RESERVE: usize = 4 * 1024;
/// The most text one coalesced piece carries.
const COALESCE_UP_TO: usize = 16 * 1024;
/// The most a text event adds to its text (the event's own fields, and an item it opens).
const TEXT_EVENT_OVERHEAD: usize = 2 * 1024;
/// An SSE comment: clients ignore it; proxies see the stream is alive.
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// What one model event becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece<K, E> {
    /// Text of content block `block`, of kind `kind` (answer, reasoning, tool arguments, ...):
    /// screened for PII and, when buffered, coalesced.
    Text { block: i64, kind: K, text: String },
    /// Block `block` ended: what the PII window still holds of it goes out first.
    BlockEnd(i64),
    /// Every block ended (the answer is over).
    AllBlocksEnd,
    /// An event of the API's own, sent after the text before it.
    Event(E),
}

/// The model's event stream.
pub trait Upstream: Send + 'static {
    type Event: Send;
    /// The next event; `None` at the end.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Self::Event>, BedrockFailure>> + Send;
}

impl<T, E> Upstream for EventReceiver<T, E>
where
    T: Send + std::fmt::Debug + 'static,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + std::fmt::Debug + 'static,
{
    type Event = T;

    async fn recv(&mut self) -> Result<Option<T>, BedrockFailure> {
        EventReceiver::recv(self)
            .await
            .map_err(|e| BedrockFailure::from_sdk(&e))
    }
}

/// Reads an API's model events.
pub trait Decoder: Send + 'static {
    type Event: Send;
    /// What a block's text is (answer, reasoning, the arguments of tool call `n`, ...).
    type Kind: Copy + PartialEq + Send + 'static;
    /// The API's own events.
    type Out: Send + 'static;

    /// The pieces `event` becomes; an error when it cannot be read.
    fn decode(
        &mut self,
        event: Self::Event,
        pieces: &mut Vec<Piece<Self::Kind, Self::Out>>,
    ) -> Result<(), ApiError>;

    /// The model said its answer is complete.
    fn finished(&self) -> bool;

    /// What to charge: the model's own count, else the prompt estimate and `relayed` output
    /// tokens (what the relay counted of the text).
    fn usage(&self, relayed: u64, estimated_input: u64) -> TokenUsage;
}

/// Writes an API's events.
pub trait Encoder<K, E>: Send + 'static {
    /// What the stream starts with.
    fn start(&mut self) -> Bytes;
    /// Text of one block (coalesced, screened).
    fn text(&mut self, block: i64, kind: K, text: String) -> Bytes;
    fn event(&mut self, event: E) -> Bytes;
    /// The ending of a complete answer that used `usage`.
    fn end(&mut self, usage: &TokenUsage) -> Bytes;
    /// The error event that ends an incomplete answer.
    fn error(&mut self, error: &ApiError) -> Bytes;
    /// What a buffered response keeps back for [`Encoder::end`] or [`Encoder::error`].
    fn reserve(&self) -> usize {
        END_RESERVE
    }

    /// [`Encoder::reserve`] once `text` is written too (an ending that repeats the text grows).
    fn reserve_after(&self, _text: &str) -> usize {
        self.reserve()
    }
}

/// What an adapter streams with: its decoder and encoder, and headers of its own.
pub struct Streaming<D, N> {
    pub decoder: D,
    pub encoder: N,
    pub headers: HeaderMap,
}

/// Calls the model for a stream with `open` (retries and fallbacks cover the call up to its
/// first byte), and answers with the event stream a task of its own relays. `parts` makes the
/// decoder and encoder for the model that answered.
pub async fn stream<A, U, D, N, F, Fut>(
    call: Call<A>,
    open: F,
    parts: impl FnOnce(&Call<A>, &A::Planned) -> Streaming<D, N>,
) -> Result<Response, Refusal>
where
    A: Adapter,
    U: Upstream<Event = D::Event>,
    D: Decoder,
    N: Encoder<D::Kind, D::Out>,
    F: for<'p> FnMut(&'p A::Planned) -> Fut,
    Fut: Future<Output = Result<U, BedrockFailure>>,
{
    let upstream = std::time::Instant::now();
    let (events, model, streaming) = match call::fallbacks(&call, open).await {
        Ok((events, planned)) => (
            events,
            Arc::clone(Candidate::model(planned)),
            parts(&call, planned),
        ),
        Err(failed) => {
            let mut guard = call.guard;
            guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
            return Err(failed.settle(guard));
        }
    };
    let first_event_ms = upstream.elapsed().as_secs_f64() * 1000.0;
    let Call {
        state,
        admitted,
        guard,
        invocation,
        output,
        guardrail,
        alias,
        ..
    } = call;
    let trace = guard.trace();
    let windows = guardrail.map(|guardrail| {
        OutputWindows::new(state.clone(), guardrail, invocation.deadline, trace.clone())
    });
    let (sender, mut response) = event_stream();
    write_headers(response.headers_mut(), &admitted, None, Some(&model));
    if let Some(record) = guard.record_ref() {
        call::server_timing(
            response.headers_mut(),
            record,
            first_event_ms,
            guard.elapsed_ms(),
        );
    }
    response.headers_mut().extend(streaming.headers);
    let (buffer, keep_alive) = match invocation.delivery {
        Delivery::Streamed => (None, Some(state.sse_keep_alive)),
        Delivery::Buffered { limit_bytes } => (Some(Buffer::new(limit_bytes)), None),
    };
    let relay = Relay {
        decoder: streaming.decoder,
        encoder: streaming.encoder,
        alias,
        model,
        deadline: invocation.deadline,
        buffer,
        keep_alive: keep_alive.map(|every| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        }),
        pending: None,
        output,
        windows,
        kinds: HashMap::new(),
        deltas: 0,
        delta_bytes: 0,
        sent_bytes: 0,
        first_text: None,
        trace,
    };
    tokio::spawn(relay.run(events, sender, guard, upstream));
    Ok(response)
}

/// A server-sent-event response whose body is what is sent on the returned channel, as it is
/// sent; dropping the sender ends it.
fn event_stream() -> (mpsc::Sender<Bytes>, Response) {
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

/// How a relayed stream ended.
enum End {
    Complete,
    ClientGone,
    Upstream(ApiError),
    Deadline,
    /// A buffered response reached its limit.
    TooLarge,
    /// The PII guard or the guardrail withheld the rest of the answer (or the guardrail could
    /// not judge it).
    Blocked(ApiError),
}

/// A buffered response's limit, as its receiver counts bytes, and what it has used.
struct Buffer {
    limit: usize,
    used: usize,
}

impl Buffer {
    fn new(limit: usize) -> Buffer {
        Buffer { limit, used: 0 }
    }

    /// True when `event` fits with `reserve` kept back; counts it if so.
    fn admit(&mut self, event: &[u8], reserve: usize) -> bool {
        let size = escaped_len(event);
        if self.used + size + reserve > self.limit {
            return false;
        }
        self.used += size;
        true
    }
}

/// Text waiting for more of its block (buffered responses).
struct Pending<K> {
    block: i64,
    kind: K,
    text: String,
}

struct Relay<D: Decoder, N> {
    decoder: D,
    encoder: N,
    /// The name the client asked for, for errors.
    alias: String,
    /// The model that is answering.
    model: Arc<ModelEntry>,
    /// When the model call must have ended.
    deadline: Option<Instant>,
    /// A buffered response's limit; `None` when streamed.
    buffer: Option<Buffer>,
    /// The keep-alive comments' clock; `None` when buffered.
    keep_alive: Option<Interval>,
    pending: Option<Pending<D::Kind>>,
    /// The answer's PII guard, when answers are scanned, and what each of its blocks is.
    output: Option<OutputGuard>,
    /// The guardrail's windows, when the key or team names a guardrail.
    windows: Option<OutputWindows>,
    kinds: HashMap<i64, D::Kind>,
    /// Text pieces relayed and their bytes: the output count when Bedrock's never came.
    deltas: u64,
    delta_bytes: u64,
    /// Bytes sent to the client, for the audit record.
    sent_bytes: u64,
    /// When the first text went out: the time to first token.
    first_text: Option<std::time::Instant>,
    /// The request's trace, which marks the first text.
    trace: Trace,
}

/// Resolves at the next tick of `interval`; never without one.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl<D, N> Relay<D, N>
where
    D: Decoder,
    N: Encoder<D::Kind, D::Out>,
{
    /// Relays the stream, then settles: success, a client that went away, the deadline, or a
    /// stream cut by Bedrock. The final events go out before settlement.
    async fn run<U: Upstream<Event = D::Event>>(
        mut self,
        mut events: U,
        sender: mpsc::Sender<Bytes>,
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
        if let Some(windows) = &mut self.windows {
            windows.note(guard.record());
        }
        self.note_ttft(&mut guard);
        // A buffered response's last coalesced text goes out before its ending.
        if !matches!(end, End::ClientGone | End::TooLarge)
            && let Err(unsent) = self.flush(&sender).await
        {
            end = unsent;
        }
        // The model's whole stream is upstream time; the gateway relays as it arrives.
        let usage = self.usage(&mut guard);
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
                let ending = self.encoder.end(&usage);
                let _ = self.deliver(&sender, ending, true).await;
                record.status_code = 200;
            }
            None => {}
            // An error event, and no ending: the client can tell the answer is incomplete.
            Some(error) => {
                let event = self.encoder.error(error);
                let _ = self.deliver(&sender, event, true).await;
                record.fail(error);
            }
        }
        record.response_bytes = self.sent_bytes;
        drop(sender);
        guard.finish(status);
    }

    /// The usage to charge (the decoder's, from what it read and the relay counted).
    fn usage(&self, guard: &mut Guard) -> TokenUsage {
        let relayed = self.deltas.max(self.delta_bytes.div_ceil(4));
        self.decoder.usage(relayed, guard.record().estimated_input)
    }

    /// Ends an answer the PII guard withheld: what was released goes out, then the error event,
    /// and the client's stream ends. The model's stream is read on, unsent, to its end (or the
    /// deadline) for Bedrock's own count; the request pays for what the model produced.
    async fn withhold<U: Upstream<Event = D::Event>>(
        mut self,
        mut events: U,
        sender: mpsc::Sender<Bytes>,
        mut guard: Guard,
        upstream: std::time::Instant,
        error: ApiError,
    ) {
        let _ = self.flush(&sender).await;
        let event = self.encoder.error(&error);
        let _ = self.deliver(&sender, event, true).await;
        drop(sender);
        let out_of_time = passed(self.deadline);
        tokio::pin!(out_of_time);
        let mut pieces = Vec::new();
        loop {
            let event = tokio::select! {
                () = &mut out_of_time => break,
                event = events.recv() => event,
            };
            let Ok(Some(event)) = event else { break };
            pieces.clear();
            if self.decoder.decode(event, &mut pieces).is_err() {
                break;
            }
            for piece in &pieces {
                if let Piece::Text { text, .. } = piece {
                    self.count(text);
                }
            }
        }
        let usage = self.usage(&mut guard);
        let record = guard.record();
        record.upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
        record.charge(&self.model, usage);
        if let Some(output) = &self.output {
            record.note_output(output.report());
        }
        if let Some(windows) = &mut self.windows {
            windows.note(record);
        }
        self.note_ttft(&mut guard);
        let record = guard.record();
        record.fail(&error);
        record.response_bytes = self.sent_bytes;
        guard.finish(Status::Failure);
    }

    /// The time to first token on the record: from arrival to the first text sent.
    fn note_ttft(&self, guard: &mut Guard) {
        if let Some(first) = self.first_text {
            let ttft = (guard.elapsed_ms() - first.elapsed().as_secs_f64() * 1000.0).max(0.0);
            let record = guard.record();
            record.ttft_ms = Some(ttft);
            // The spend row keeps it too: the console's operations page reads it there.
            if let serde_json::Value::Object(metadata) = &mut record.metadata {
                metadata.insert(
                    "llmlite_ttft_ms".to_owned(),
                    serde_json::json!((ttft * 1000.0).round() / 1000.0),
                );
            }
        }
    }

    fn count(&mut self, text: &str) {
        self.deltas += 1;
        self.delta_bytes += text.len() as u64;
    }

    /// Sends the start and then every piece, until the stream ends, the client goes away
    /// (noticed at once, not at the next event), the deadline comes, Bedrock fails, the PII
    /// guard blocks, or a buffered response is full.
    async fn relay<U: Upstream<Event = D::Event>>(
        &mut self,
        events: &mut U,
        sender: &mpsc::Sender<Bytes>,
    ) -> End {
        let start = self.encoder.start();
        if let Err(end) = self.deliver(sender, start, false).await {
            return end;
        }
        let out_of_time = passed(self.deadline);
        tokio::pin!(out_of_time);
        let mut pieces = Vec::new();
        loop {
            let event = tokio::select! {
                // Dropping the event stream on the way out ends the Bedrock call.
                () = sender.closed() => return End::ClientGone,
                () = &mut out_of_time => return End::Deadline,
                () = tick(&mut self.keep_alive) => {
                    let comment = Bytes::from_static(KEEP_ALIVE_COMMENT);
                    if let Err(end) = self.deliver(sender, comment, false).await {
                        return end;
                    }
                    continue;
                }
                event = events.recv() => event,
            };
            match event {
                Ok(Some(event)) => {
                    pieces.clear();
                    if let Err(error) = self.decoder.decode(event, &mut pieces) {
                        return End::Upstream(error);
                    }
                    for piece in pieces.drain(..) {
                        if let Err(end) = self.piece(sender, piece).await {
                            return end;
                        }
                    }
                }
                Ok(None) if self.decoder.finished() => return End::Complete,
                Ok(None) => {
                    return End::Upstream(ApiError::Upstream(
                        "the model stream ended before the answer was complete".into(),
                    ));
                }
                Err(failure) => {
                    tracing::warn!(?failure, "Bedrock stream failed midway");
                    return End::Upstream(failure.into_api_error(&self.alias));
                }
            }
        }
    }

    async fn piece(
        &mut self,
        sender: &mpsc::Sender<Bytes>,
        piece: Piece<D::Kind, D::Out>,
    ) -> Result<(), End> {
        match piece {
            Piece::Text { block, kind, text } => {
                self.count(&text);
                if self.output.is_some() || self.windows.is_some() {
                    self.kinds.insert(block, kind);
                }
                let released = match &mut self.output {
                    None => text,
                    Some(output) => output.push(block, &text),
                };
                self.blocked()?;
                let judged = self.judge(block, released, false).await?;
                self.text(sender, block, kind, judged).await
            }
            Piece::BlockEnd(block) => self.release(sender, block).await,
            Piece::AllBlocksEnd => {
                let mut held = self
                    .output
                    .as_ref()
                    .map(OutputGuard::held_blocks)
                    .unwrap_or_default();
                held.extend(
                    self.windows
                        .as_ref()
                        .map(OutputWindows::held_blocks)
                        .unwrap_or_default(),
                );
                held.sort_unstable();
                held.dedup();
                for block in held {
                    self.release(sender, block).await?;
                }
                Ok(())
            }
            Piece::Event(event) => {
                self.flush(sender).await?;
                let event = self.encoder.event(event);
                self.deliver(sender, event, false).await
            }
        }
    }

    /// What the PII guard and the guardrail still hold of `block`, which has ended.
    async fn release(&mut self, sender: &mpsc::Sender<Bytes>, block: i64) -> Result<(), End> {
        let Some(kind) = self.kinds.get(&block).copied() else {
            return Ok(());
        };
        let released = match &mut self.output {
            Some(output) => output.flush(block),
            None => String::new(),
        };
        self.blocked()?;
        let judged = self.judge(block, released, true).await?;
        self.text(sender, block, kind, judged).await
    }

    /// `text` of `block` through the guardrail's window (as it is when there is none): what is
    /// judged and may be sent. `end`: the block has ended.
    async fn judge(&mut self, block: i64, text: String, end: bool) -> Result<String, End> {
        match &mut self.windows {
            None => Ok(text),
            Some(windows) => windows.push(block, &text, end).await.map_err(End::Blocked),
        }
    }

    fn blocked(&self) -> Result<(), End> {
        match self.output.as_ref().and_then(OutputGuard::blocked) {
            Some(error) => Err(End::Blocked(error)),
            None => Ok(()),
        }
    }

    /// Sends text at once when streamed; when buffered, joins it to the text before it of the
    /// same block and kind.
    async fn text(
        &mut self,
        sender: &mpsc::Sender<Bytes>,
        block: i64,
        kind: D::Kind,
        text: String,
    ) -> Result<(), End> {
        if text.is_empty() {
            return Ok(());
        }
        if self.first_text.is_none() {
            self.first_text = Some(std::time::Instant::now());
            self.trace.first_token();
        }
        if self.buffer.is_none() {
            let event = self.encoder.text(block, kind, text);
            return self.deliver(sender, event, false).await;
        }
        if let Some(pending) = &mut self.pending
            && pending.block == block
            && pending.kind == kind
            && pending.text.len() < COALESCE_UP_TO
        {
            pending.text.push_str(&text);
            return Ok(());
        }
        self.flush(sender).await?;
        self.pending = Some(Pending { block, kind, text });
        Ok(())
    }

    /// Sends a buffered response's pending text. Text that could not fit is refused before the
    /// encoder sees it, so an ending that repeats what was written repeats only what was sent.
    async fn flush(&mut self, sender: &mpsc::Sender<Bytes>) -> Result<(), End> {
        let Some(Pending { block, kind, text }) = self.pending.take() else {
            return Ok(());
        };
        if let Some(buffer) = &self.buffer {
            let encoded = serde_json::to_string(&text).unwrap_or_default();
            let bound = escaped_len(encoded.as_bytes())
                + TEXT_EVENT_OVERHEAD
                + self.encoder.reserve_after(&text);
            if buffer.used + bound > buffer.limit {
                return Err(End::TooLarge);
            }
        }
        let event = self.encoder.text(block, kind, text);
        self.deliver(sender, event, false).await
    }

    /// Sends one event. In a buffered response it must fit, and only the `last` events may use
    /// the room kept for the ending.
    async fn deliver(
        &mut self,
        sender: &mpsc::Sender<Bytes>,
        event: Bytes,
        last: bool,
    ) -> Result<(), End> {
        if event.is_empty() {
            return Ok(());
        }
        let reserve = if last { 0 } else { self.encoder.reserve() };
        if let Some(buffer) = &mut self.buffer
            && !buffer.admit(&event, reserve)
        {
            return Err(End::TooLarge);
        }
        let len = event.len() as u64;
        sender.send(event).await.map_err(|_| End::ClientGone)?;
        self.sent_bytes += len;
        if let Some(keep_alive) = &mut self.keep_alive {
            keep_alive.reset();
        }
        Ok(())
    }
}
