//! The pipeline's guardrail stage: the Bedrock guardrail a key or team names (`guardrail`, the
//! key's over the team's) judges what the model will read, after the local PII guard (which is
//! free, and runs first), and what the model answers: a whole answer at once, a streamed one in
//! windows of [`WINDOW_CHARS`] characters per content block, each held back until judged.
//!
//! ANONYMIZE masks and the request goes on; BLOCKED ends it with the guardrail's message (400
//! `guardrail_blocked`, or an error event in a stream). A guardrail that cannot be reached or
//! does not know itself fails closed: the request is not served. Every call's text units are
//! charged to the request at the catalog's prices (`[guardrails]`) and kept with its records.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::Instrument;

use super::invocation::{deadline_error, until_deadline};
use crate::clients::guardrail::{Applied, Guardrail, GuardrailFailure, Source, Verdict};
use crate::clients::traces::{self, Trace};
use crate::error::ApiError;
use crate::openai::{ChatCompletionRequest, ChatMessage, Content, ContentPart};
use crate::record::RequestRecord;
use crate::state::AppState;

/// The characters of a streamed block judged at once: one text unit, the unit Bedrock charges.
pub const WINDOW_CHARS: usize = 1000;

/// Judges `texts` (empty ones are not sent) as `source`: the call is noted on `record` (units
/// and cost), masked text is written back in place, and BLOCKED or a failure is the error that
/// ends the request. Returns whether anything was masked.
pub async fn judge(
    state: &AppState,
    guardrail: &Guardrail,
    deadline: Option<Instant>,
    record: &mut RequestRecord,
    source: Source,
    mut texts: Vec<&mut String>,
) -> Result<bool, ApiError> {
    texts.retain(|t| !t.is_empty());
    if texts.is_empty() {
        return Ok(false);
    }
    let sent: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    let applied = call(state, guardrail, deadline, source, &sent, &record.trace).await?;
    record.note_guardrail(
        &guardrail.guardrail.name(),
        source,
        &applied,
        guardrail.cost(&applied.units),
    );
    enforce(applied.verdict, texts, source)
}

/// One `ApplyGuardrail` call on `texts`, until `deadline`: a guardrail that cannot judge them
/// in time is the error that ends the request. A `guardrail` span of the request's trace.
async fn call(
    state: &AppState,
    guardrail: &Guardrail,
    deadline: Option<Instant>,
    source: Source,
    texts: &[&str],
    trace: &Trace,
) -> Result<Applied, ApiError> {
    let span = tracing::info_span!(
        target: traces::TARGET,
        parent: &trace.span(),
        "guardrail",
        llmlite.guardrail.source = match source {
            Source::Input => "input",
            Source::Output => "output",
        },
    );
    let applied = until_deadline(
        deadline,
        guardrail.apply(&state.bedrock, &state.retry, source, texts),
    )
    .instrument(span.clone())
    .await
    .ok_or_else(deadline_error)?
    .map_err(GuardrailFailure::into_api_error);
    if let Err(error) = &applied {
        traces::failed(&span, error.kind());
    }
    applied
}

/// What `verdict` does to the `texts` it judged: masked text written back in place (`true`),
/// nothing (`false`), or BLOCKED's error.
fn enforce(verdict: Verdict, texts: Vec<&mut String>, source: Source) -> Result<bool, ApiError> {
    match verdict {
        Verdict::Pass => Ok(false),
        Verdict::Masked(outputs) => {
            for (text, output) in texts.into_iter().zip(outputs) {
                *text = output;
            }
            Ok(true)
        }
        Verdict::Blocked(message) => Err(ApiError::GuardrailBlocked {
            message,
            output: source == Source::Output,
        }),
    }
}

/// A streamed answer's guardrail: per content block, the text not judged yet.
pub struct OutputWindows {
    state: AppState,
    guardrail: Guardrail,
    deadline: Option<Instant>,
    held: BTreeMap<i64, String>,
    /// The calls made, to be noted on the request's record when it settles.
    calls: Vec<Applied>,
    /// The request's trace, which each call is a span of.
    trace: Trace,
}

impl OutputWindows {
    pub fn new(
        state: AppState,
        guardrail: Guardrail,
        deadline: Option<Instant>,
        trace: Trace,
    ) -> Self {
        OutputWindows {
            state,
            guardrail,
            deadline,
            trace,
            held: BTreeMap::new(),
            calls: Vec::new(),
        }
    }

    /// Adds text of block `block`; returns the text judged and cleared to send (possibly
    /// empty). `end`: the block has ended, and all it holds is judged now.
    pub async fn push(&mut self, block: i64, text: &str, end: bool) -> Result<String, ApiError> {
        let held = self.held.entry(block).or_default();
        held.push_str(text);
        let cut = if end { held.len() } else { window_cut(held) };
        if cut == 0 {
            if end {
                self.held.remove(&block);
            }
            return Ok(String::new());
        }
        let mut window: String = held.drain(..cut).collect();
        if end {
            self.held.remove(&block);
        }
        let applied = call(
            &self.state,
            &self.guardrail,
            self.deadline,
            Source::Output,
            &[window.as_str()],
            &self.trace,
        )
        .await?;
        let verdict = applied.verdict.clone();
        self.calls.push(applied);
        enforce(verdict, vec![&mut window], Source::Output)?;
        Ok(window)
    }

    /// The blocks with text not judged yet.
    pub fn held_blocks(&self) -> Vec<i64> {
        self.held
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(b, _)| *b)
            .collect()
    }

    /// Notes every call made on `record`.
    pub fn note(&mut self, record: &mut RequestRecord) {
        let name = self.guardrail.guardrail.name();
        for applied in self.calls.drain(..) {
            let cost = self.guardrail.cost(&applied.units);
            record.note_guardrail(&name, Source::Output, &applied, cost);
        }
    }
}

/// Where a full window of `held` ends (0: not full yet): after its last line or sentence end,
/// else its last space, in its first [`WINDOW_CHARS`] characters, so a window rarely cuts a
/// word (or a name) in two; at [`WINDOW_CHARS`] when it has neither.
fn window_cut(held: &str) -> usize {
    let Some((limit, _)) = held.char_indices().nth(WINDOW_CHARS) else {
        return 0;
    };
    let head = &held[..limit];
    let after = |i: usize, c: char| i + c.len_utf8();
    head.char_indices()
        .filter(|(_, c)| matches!(c, '\n' | '.' | '!' | '?'))
        .map(|(i, c)| after(i, c))
        .next_back()
        .filter(|&end| end > limit / 2)
        .or_else(|| {
            head.char_indices()
                .filter(|(_, c)| c.is_whitespace())
                .map(|(i, c)| after(i, c))
                .next_back()
        })
        .unwrap_or(limit)
}

/// The texts of a chat completion request a guardrail judges: every message's text (system,
/// developer, user, assistant and tool results). Tool definitions and schemas are the caller's
/// code, not its conversation, and are not sent.
pub fn chat_texts(request: &mut ChatCompletionRequest) -> Vec<&mut String> {
    let mut texts = Vec::new();
    for message in &mut request.messages {
        let content = match message {
            ChatMessage::System { content }
            | ChatMessage::Developer { content }
            | ChatMessage::User { content }
            | ChatMessage::Tool { content, .. } => Some(content),
            ChatMessage::Assistant { content, .. } => content.as_mut(),
        };
        match content {
            Some(Content::Text(text)) => texts.push(text),
            Some(Content::Parts(parts)) => {
                for part in parts {
                    if let ContentPart::Text { text, .. } = part {
                        texts.push(text);
                    }
                }
            }
            None => {}
        }
    }
    texts
}

/// The texts of an Anthropic Messages body a guardrail judges: `system`, and every message's
/// text and tool-result text.
pub fn messages_texts(body: &mut Map<String, Value>) -> Vec<&mut String> {
    let mut texts = Vec::new();
    let mut system = None;
    let mut messages = None;
    for (name, value) in body.iter_mut() {
        match name.as_str() {
            "system" => system = Some(value),
            "messages" => messages = Some(value),
            _ => {}
        }
    }
    if let Some(system) = system {
        blocks_texts(system, &mut texts);
    }
    for message in messages.and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(content) = message.get_mut("content") {
            blocks_texts(content, &mut texts);
        }
    }
    texts
}

/// Anthropic content (a string, or blocks): text blocks' text, and tool results' content.
fn blocks_texts<'a>(content: &'a mut Value, texts: &mut Vec<&'a mut String>) {
    match content {
        Value::String(text) => texts.push(text),
        Value::Array(blocks) => {
            for block in blocks {
                let Value::Object(block) = block else {
                    continue;
                };
                let kind = block.get("type").and_then(Value::as_str).map(str::to_owned);
                match kind.as_deref() {
                    Some("text") => {
                        if let Some(Value::String(text)) = block.get_mut("text") {
                            texts.push(text);
                        }
                    }
                    Some("tool_result") => {
                        if let Some(content) = block.get_mut("content") {
                            blocks_texts(content, texts);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Every string inside a JSON value (a tool call's input).
pub fn json_strings<'a>(value: &'a mut Value, texts: &mut Vec<&'a mut String>) {
    match value {
        Value::String(text) => texts.push(text),
        Value::Array(items) => items.iter_mut().for_each(|v| json_strings(v, texts)),
        Value::Object(map) => map.values_mut().for_each(|v| json_strings(v, texts)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_end_at_a_sentence_or_a_space_and_never_split_a_character() {
        assert_eq!(window_cut(&"a".repeat(WINDOW_CHARS)), 0);
        let sentence = format!("{}. {}", "a".repeat(700), "b".repeat(400));
        assert_eq!(window_cut(&sentence), 701);
        let words = format!("{} {}", "a".repeat(300), "b".repeat(900));
        assert_eq!(window_cut(&words), 301);
        let dense = "é".repeat(WINDOW_CHARS + 5);
        let cut = window_cut(&dense);
        assert_eq!(dense[..cut].chars().count(), WINDOW_CHARS);
    }

    #[test]
    fn anthropic_texts_are_the_conversation_not_its_tools() {
        let mut body = json!({
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "hi"},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "result"}]},
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}
            ],
            "tools": [{"name": "lookup", "description": "not sent"}]
        });
        let Value::Object(map) = &mut body else {
            unreachable!()
        };
        let texts: Vec<String> = messages_texts(map).into_iter().map(|t| t.clone()).collect();
        assert_eq!(texts, ["sys", "hello", "hi", "result"]);
    }
}
