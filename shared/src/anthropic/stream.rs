//! A message streamed as Anthropic's server-sent events (`stream: true`). Bedrock's
//! `InvokeModelWithResponseStream` carries Anthropic's own events, one per `chunk`; they are
//! relayed as they arrive, with the model named as the client named it, a `ping` after
//! `message_start`, and Bedrock's invocation metrics taken out. A failure or the invocation's
//! deadline ends the stream with an `error` event; the request settles for what was produced.
//! Behind an ALB (one buffered body of at most 1 MB) consecutive deltas of one content block
//! are coalesced, and a body that would still outgrow the limit ends with an `error` event.
//!
//! When answers are scanned for PII, each content block's deltas go through the
//! [`OutputGuard`]'s held-back window, and what it still holds goes out before the block's
//! `content_block_stop`; a BLOCK finding ends the stream with an `error` event, and the model's
//! stream is read to its end (unsent) for Bedrock's own token count.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::ResponseStream;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Answer, AnthropicError, Planned, error_body, usage_of, write_dropped};
use crate::admission::Admitted;
use crate::bedrock::{self, BedrockFailure};
use crate::catalog::{ModelEntry, TokenUsage};
use crate::chat::invocation::{Delivery, Invocation, escaped_len};
use crate::chat::record::Status;
use crate::chat::{self};
use crate::error::ApiError;
use crate::pii::OutputGuard;
use crate::settlement::Guard;
use crate::state::AppState;

/// Room kept at the end of a buffered response for its last events.
const END_RESERVE: usize = 4 * 1024;
/// The most text one coalesced delta carries.
const COALESCE_UP_TO: usize = 16 * 1024;

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
) -> Result<Response, AnthropicError> {
    let upstream = std::time::Instant::now();
    let called = chat::until_deadline(
        &invocation,
        bedrock::with_fallbacks(&state.retry, &plan, &answer.alias, |planned| {
            let call = state
                .bedrock
                .invoke_model_with_response_stream()
                .model_id(&planned.model.bedrock_model_id)
                .content_type("application/json")
                .accept("application/json")
                .body(Blob::new(planned.body.to_vec()));
            async move { call.send().await.map_err(|e| BedrockFailure::from_sdk(&e)) }
        }),
    )
    .await;
    let (called, planned) = match called {
        Some(Ok(called)) => called,
        Some(Err(error)) => {
            guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
            return Err(chat::fail(guard, error).into());
        }
        None => {
            guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
            return Err(chat::end(guard, chat::deadline_error(), Status::Deadline).into());
        }
    };
    let (sender, mut response) = chat::stream::event_stream();
    let headers = response.headers_mut();
    chat::write_headers(headers, &admitted, None, Some(&planned.model));
    write_dropped(headers, planned);
    let relay = Relay {
        alias: answer.alias,
        model: Arc::clone(&planned.model),
        deadline: invocation.deadline,
        limit: match invocation.delivery {
            Delivery::Streamed => None,
            Delivery::Buffered { limit_bytes } => Some(limit_bytes),
        },
        used: 0,
        pending: None,
        usage: None,
        output: 0,
        finished: false,
        deltas: 0,
        delta_bytes: 0,
        sent_bytes: 0,
        guard_output: output,
        kinds: HashMap::new(),
    };
    tokio::spawn(relay.run(called.body, sender, guard, upstream));
    Ok(response)
}

/// How a relayed stream ended.
enum End {
    Complete,
    ClientGone,
    Upstream(ApiError),
    Deadline,
    TooLarge,
    /// The PII guard withheld the rest of the answer.
    Blocked(ApiError),
}

struct Relay {
    alias: String,
    model: Arc<ModelEntry>,
    deadline: Option<tokio::time::Instant>,
    /// A buffered response's limit (as its receiver counts bytes), and what it has used.
    limit: Option<usize>,
    used: usize,
    /// A buffered response's delta waiting for the next one of its block.
    pending: Option<Value>,
    /// `message_start`'s usage, and `message_delta`'s output count.
    usage: Option<TokenUsage>,
    output: u64,
    finished: bool,
    /// Deltas relayed, and their text's bytes: the output count when Bedrock's never came.
    deltas: u64,
    delta_bytes: u64,
    sent_bytes: u64,
    /// The answer's PII guard, when answers are scanned.
    guard_output: Option<OutputGuard>,
    /// Each content block's delta type and text field, for the text the guard still holds.
    kinds: HashMap<i64, (String, &'static str)>,
}

/// The text a `content_block_delta` carries, and the field it is in.
fn delta_text(event: &Value) -> Option<(&'static str, &str)> {
    let delta = event.get("delta")?;
    ["text", "partial_json", "thinking"]
        .into_iter()
        .find_map(|field| delta.get(field).and_then(Value::as_str).map(|t| (field, t)))
}

fn sse(event: &Value) -> Bytes {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("error");
    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
}

impl Relay {
    async fn run(
        mut self,
        mut events: EventReceiver<ResponseStream, ResponseStreamError>,
        sender: mpsc::Sender<Bytes>,
        mut guard: Guard,
        upstream: std::time::Instant,
    ) {
        let mut end = self.relay(&mut events, &sender).await;
        if let End::Blocked(error) = end {
            return self.withhold(events, sender, guard, upstream, error).await;
        }
        if let Some(output) = &self.guard_output {
            guard.record().note_output(output.report());
        }
        if !matches!(end, End::ClientGone | End::TooLarge)
            && let Err(unsent) = self.flush(&sender).await
        {
            end = unsent;
        }
        let estimated_input = guard.record().estimated_input;
        let usage = self.best_usage(estimated_input);
        let record = guard.record();
        record.upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
        record.charge(&self.model, usage);
        let (status, error) = match end {
            End::Complete => (Status::Success, None),
            End::ClientGone => (Status::ClientClosed, None),
            End::Upstream(error) => (Status::UpstreamCut, Some(error)),
            End::Deadline => (Status::Deadline, Some(chat::deadline_error())),
            End::TooLarge => (Status::Failure, Some(ApiError::ResponseTooLarge)),
            End::Blocked(error) => (Status::Failure, Some(error)),
        };
        match &error {
            None if status == Status::Success => record.status_code = 200,
            None => {}
            Some(error) => {
                let _ = self.deliver(&sender, sse(&error_body(error)), true).await;
                record.fail(error);
            }
        }
        guard.record().response_bytes = self.sent_bytes;
        drop(sender);
        guard.finish(status);
    }

    /// The usage to charge: Bedrock's, with the output relayed as a floor; or the prompt estimate
    /// and the output relayed.
    fn best_usage(&self, estimated_input: u64) -> TokenUsage {
        let relayed = self.deltas.max(self.delta_bytes.div_ceil(4));
        match self.usage {
            Some(usage) => TokenUsage {
                output: self.output.max(usage.output).max(relayed),
                ..usage
            },
            None => TokenUsage {
                input: estimated_input,
                output: relayed,
                ..TokenUsage::default()
            },
        }
    }

    /// Ends an answer the PII guard withheld: what was released goes out, then the `error`
    /// event, and the client's stream ends. The model's stream is read on, unsent, to its end
    /// (or the deadline) for Bedrock's own count; the request pays for what the model produced.
    async fn withhold(
        mut self,
        mut events: EventReceiver<ResponseStream, ResponseStreamError>,
        sender: mpsc::Sender<Bytes>,
        mut guard: Guard,
        upstream: std::time::Instant,
        error: ApiError,
    ) {
        let _ = self.flush(&sender).await;
        let _ = self.deliver(&sender, sse(&error_body(&error)), true).await;
        drop(sender);
        let deadline = self.deadline;
        chat::stream::drain(&mut events, deadline, |received| {
            if let ResponseStream::Chunk(part) = received
                && let Some(Ok(mut event)) = part
                    .bytes()
                    .map(|b| serde_json::from_slice::<Value>(b.as_ref()))
            {
                self.account(&mut event);
            }
        })
        .await;
        let usage = self.best_usage(guard.record().estimated_input);
        let withheld = chat::stream::Withheld {
            model: &self.model,
            usage,
            output: self.guard_output.as_ref(),
            sent_bytes: self.sent_bytes,
            upstream,
        };
        withheld.settle(guard, &error);
    }

    /// Notes what an event tells of the usage, and takes Bedrock's invocation metrics out of it.
    fn account(&mut self, event: &mut Value) {
        match event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "message_start" => {
                self.usage = Some(super::usage_of(
                    event.get("message").and_then(|m| m.get("usage")),
                ));
            }
            "content_block_delta" => {
                if let Some((_, text)) = delta_text(event) {
                    self.deltas += 1;
                    self.delta_bytes += text.len() as u64;
                }
            }
            "message_delta" => {
                let output = usage_of(event.get("usage")).output;
                self.output = self.output.max(output);
            }
            "message_stop" => {
                if let Some(metrics) = event
                    .as_object_mut()
                    .and_then(|e| e.remove("amazon-bedrock-invocationMetrics"))
                    && self.usage.is_none()
                {
                    let count = |f: &str| metrics.get(f).and_then(Value::as_u64).unwrap_or(0);
                    self.usage = Some(TokenUsage {
                        input: count("inputTokenCount"),
                        output: count("outputTokenCount"),
                        ..TokenUsage::default()
                    });
                }
                self.finished = true;
            }
            _ => {}
        }
    }

    /// A content block's delta through the output guard: `None` while the guard holds its text
    /// back (or has blocked the answer).
    fn screened(&mut self, mut event: Value) -> Option<Value> {
        let Some(output) = &mut self.guard_output else {
            return Some(event);
        };
        let index = event.get("index").and_then(Value::as_i64).unwrap_or(0);
        let (field, text) = delta_text(&event)?;
        let kind = event["delta"]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("text_delta")
            .to_owned();
        let released = output.push(index, text);
        self.kinds.insert(index, (kind, field));
        if released.is_empty() {
            return None;
        }
        event["delta"][field] = Value::String(released);
        Some(event)
    }

    /// What the output guard still holds for block `index`, as one delta, before its end.
    fn held_delta(&mut self, index: i64) -> Option<Value> {
        let output = self.guard_output.as_mut()?;
        let released = output.flush(index);
        let (kind, field) = self.kinds.get(&index)?;
        if released.is_empty() {
            return None;
        }
        Some(json!({
            "type": "content_block_delta",
            "index": index,
            "delta": { "type": kind, *field: released },
        }))
    }

    /// Sends one event. In a buffered response it must fit, and only the `last` events may use
    /// the room kept for the ending.
    async fn deliver(
        &mut self,
        sender: &mpsc::Sender<Bytes>,
        chunk: Bytes,
        last: bool,
    ) -> Result<(), End> {
        if let Some(limit) = self.limit {
            let size = escaped_len(&chunk);
            let reserve = if last { 0 } else { END_RESERVE };
            if self.used + size + reserve > limit {
                return Err(End::TooLarge);
            }
            self.used += size;
        }
        let len = chunk.len() as u64;
        sender.send(chunk).await.map_err(|_| End::ClientGone)?;
        self.sent_bytes += len;
        Ok(())
    }

    /// Sends a buffered response's pending delta.
    async fn flush(&mut self, sender: &mpsc::Sender<Bytes>) -> Result<(), End> {
        match self.pending.take() {
            Some(pending) => self.deliver(sender, sse(&pending), false).await,
            None => Ok(()),
        }
    }

    /// Relays one event: at once when streamed; a buffered response's deltas are first
    /// coalesced with the next ones of their block.
    async fn emit(&mut self, sender: &mpsc::Sender<Bytes>, event: Value) -> Result<(), End> {
        if self.limit.is_none() {
            return self.deliver(sender, sse(&event), false).await;
        }
        if let Some(pending) = &mut self.pending
            && merge(pending, &event)
        {
            return Ok(());
        }
        self.flush(sender).await?;
        if event.get("type").and_then(Value::as_str) == Some("content_block_delta")
            && delta_text(&event).is_some()
        {
            self.pending = Some(event);
            return Ok(());
        }
        self.deliver(sender, sse(&event), false).await
    }

    /// One Bedrock chunk: an Anthropic event, noted and relayed.
    async fn event(&mut self, sender: &mpsc::Sender<Bytes>, mut event: Value) -> Result<(), End> {
        self.account(&mut event);
        match event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "message_start" => {
                if let Some(message) = event.get_mut("message") {
                    message["model"] = json!(self.alias);
                }
                self.emit(sender, event).await?;
                return self.emit(sender, json!({"type": "ping"})).await;
            }
            "content_block_delta" if delta_text(&event).is_some() => {
                let screened = self.screened(event);
                if let Some(error) = self.guard_output.as_ref().and_then(OutputGuard::blocked) {
                    return Err(End::Blocked(error));
                }
                return match screened {
                    Some(event) => self.emit(sender, event).await,
                    None => Ok(()),
                };
            }
            "content_block_stop" => {
                let index = event.get("index").and_then(Value::as_i64).unwrap_or(0);
                let held = self.held_delta(index);
                if let Some(error) = self.guard_output.as_ref().and_then(OutputGuard::blocked) {
                    return Err(End::Blocked(error));
                }
                if let Some(held) = held {
                    self.emit(sender, held).await?;
                }
            }
            _ => {}
        }
        self.emit(sender, event).await
    }

    async fn relay(
        &mut self,
        events: &mut EventReceiver<ResponseStream, ResponseStreamError>,
        sender: &mpsc::Sender<Bytes>,
    ) -> End {
        let out_of_time = crate::chat::invocation::passed(self.deadline);
        tokio::pin!(out_of_time);
        loop {
            let received = tokio::select! {
                // Dropping the event receiver on the way out ends the Bedrock call.
                () = sender.closed() => return End::ClientGone,
                () = &mut out_of_time => return End::Deadline,
                received = events.recv() => received,
            };
            match received {
                Ok(Some(ResponseStream::Chunk(part))) => {
                    let Some(bytes) = part.bytes() else { continue };
                    let event = match serde_json::from_slice::<Value>(bytes.as_ref()) {
                        Ok(event @ Value::Object(_)) => event,
                        _ => {
                            return End::Upstream(ApiError::Upstream(
                                "the model stream sent an event that is not JSON".into(),
                            ));
                        }
                    };
                    if let Err(end) = self.event(sender, event).await {
                        return end;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) if self.finished => return End::Complete,
                Ok(None) => {
                    return End::Upstream(ApiError::Upstream(
                        "the model stream ended before the answer was complete".into(),
                    ));
                }
                Err(e) => {
                    let failure = BedrockFailure::from_sdk(&e);
                    tracing::warn!(?failure, "Bedrock stream failed midway");
                    return End::Upstream(failure.into_api_error(&self.alias));
                }
            }
        }
    }
}

/// Appends `next`'s text to `pending` when both are deltas of one kind in one block.
fn merge(pending: &mut Value, next: &Value) -> bool {
    if next.get("type").and_then(Value::as_str) != Some("content_block_delta")
        || pending.get("index") != next.get("index")
    {
        return false;
    }
    let (Some((field, more)), Some((kind, text))) = (delta_text(next), delta_text(pending)) else {
        return false;
    };
    if field != kind
        || next["delta"].get("type") != pending["delta"].get("type")
        || text.len() >= COALESCE_UP_TO
    {
        return false;
    }
    let joined = format!("{text}{more}");
    pending["delta"][field] = Value::String(joined);
    true
}
