//! The guard's walks over each API's request shape: a chat completion request
//! ([`Scanner::guard`]), an Anthropic Messages body ([`Scanner::guard_messages`]) and plain texts
//! ([`Scanner::guard_texts`]). Each walk scans every text the model will read, masks in place
//! what the policy says to mask, and returns the [`Report`] of what it found.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::policy::{Action, Policy};
use super::scanner::{Finding, MaskStyle, Scanner, mask_as};
use crate::openai::{
    ChatCompletionRequest, ChatMessage, Content, ContentPart, ResponseFormat, ToolChoice,
};

/// What the guard found in a request, by entity, and whether it must be refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Findings per entity (every action but ALLOW).
    pub counts: BTreeMap<String, u32>,
    /// Entities whose policy is BLOCK, with their counts.
    pub blocked: BTreeMap<String, u32>,
}

impl Report {
    /// Types and counts only, for the spend row and the audit record.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.counts
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(*v)))
                .collect(),
        )
    }

    /// `CREDIT_CARD (1), US_SSN (2)`: what a refusal may say.
    pub fn blocked_summary(&self) -> Vec<String> {
        self.blocked
            .iter()
            .map(|(entity, count)| format!("{entity} ({count})"))
            .collect()
    }
}

impl Scanner {
    /// Scans every text the model will see, masks what `policy` says to mask in place, and
    /// reports the rest: system, user and assistant turns, tool results, tool calls (arguments,
    /// names, IDs), tool definitions (names, descriptions, and every key and string of their
    /// parameters' schemas), `tool_choice`, and a `response_format` JSON schema.
    pub fn guard(&self, request: &mut ChatCompletionRequest, policy: &Policy) -> Report {
        let mut pass = Pass {
            scanner: self,
            policy,
            report: Report::default(),
        };
        for message in &mut request.messages {
            match message {
                ChatMessage::System { content }
                | ChatMessage::Developer { content }
                | ChatMessage::User { content } => pass.content(content),
                ChatMessage::Tool {
                    content,
                    tool_call_id,
                } => {
                    pass.content(content);
                    pass.identifier(tool_call_id);
                }
                ChatMessage::Assistant {
                    content,
                    tool_calls,
                } => {
                    if let Some(content) = content {
                        pass.content(content);
                    }
                    for call in tool_calls.iter_mut().flatten() {
                        pass.identifier(&mut call.id);
                        pass.identifier(&mut call.function.name);
                        pass.text(&mut call.function.arguments);
                    }
                }
            }
        }
        for tool in request.tools.iter_mut().flatten() {
            let function = &mut tool.function;
            pass.identifier(&mut function.name);
            if let Some(description) = &mut function.description {
                pass.text(description);
            }
            if let Some(parameters) = &mut function.parameters {
                pass.json(parameters);
            }
        }
        if let Some(ToolChoice::Named(named)) = &mut request.tool_choice {
            pass.identifier(&mut named.function.name);
        }
        // The schema's name stays here; only the schema is sent.
        if let Some(ResponseFormat::JsonSchema { json_schema }) = &mut request.response_format
            && let Some(schema) = &mut json_schema.schema
        {
            pass.json(schema);
        }
        pass.report
    }

    /// The guard over an Anthropic Messages body (`POST /v1/messages`), as [`Scanner::guard`]
    /// over a chat completion: `system`, every text and `tool_result` block (its content, a
    /// string or blocks), `tool_use` blocks (ID, name, input), tool definitions (name,
    /// description, every key and string of the input schema) and a named `tool_choice`.
    /// Images, documents' binary sources and `thinking` blocks (signed by the model: a change
    /// would be refused) are left alone.
    pub fn guard_messages(&self, body: &mut Value, policy: &Policy) -> Report {
        let mut pass = Pass {
            scanner: self,
            policy,
            report: Report::default(),
        };
        if let Some(system) = body.get_mut("system") {
            pass.blocks(system);
        }
        for message in body
            .get_mut("messages")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(content) = message.get_mut("content") {
                pass.blocks(content);
            }
        }
        for tool in body
            .get_mut("tools")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(Value::String(name)) = tool.get_mut("name") {
                pass.identifier(name);
            }
            if let Some(Value::String(description)) = tool.get_mut("description") {
                pass.text(description);
            }
            if let Some(schema) = tool.get_mut("input_schema") {
                pass.json(schema);
            }
        }
        if let Some(Value::String(name)) = body
            .get_mut("tool_choice")
            .and_then(|choice| choice.get_mut("name"))
        {
            pass.identifier(name);
        }
        pass.report
    }

    /// The guard over plain texts (an embeddings request's inputs, say): masks what `policy`
    /// says to mask in place and reports the rest, as [`Scanner::guard`] does for a chat.
    pub fn guard_texts<'t>(
        &self,
        texts: impl IntoIterator<Item = &'t mut String>,
        policy: &Policy,
    ) -> Report {
        let mut pass = Pass {
            scanner: self,
            policy,
            report: Report::default(),
        };
        for text in texts {
            pass.text(text);
        }
        pass.report
    }
}

/// One request's guard pass: what it applies, and what it has found so far.
pub(super) struct Pass<'a> {
    pub(super) scanner: &'a Scanner,
    pub(super) policy: &'a Policy,
    pub(super) report: Report,
}

impl Pass<'_> {
    fn content(&mut self, content: &mut Content) {
        match content {
            Content::Text(text) => self.text(text),
            Content::Parts(parts) => {
                for part in parts {
                    if let ContentPart::Text { text, .. } = part {
                        self.text(text);
                    }
                }
            }
        }
    }

    pub(super) fn text(&mut self, text: &mut String) {
        self.guard(text, MaskStyle::Prose);
    }

    /// Anthropic content: a string, or blocks.
    fn blocks(&mut self, content: &mut Value) {
        match content {
            Value::String(text) => self.text(text),
            Value::Array(blocks) => blocks.iter_mut().for_each(|block| self.block(block)),
            _ => {}
        }
    }

    fn block(&mut self, block: &mut Value) {
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "text" => {
                if let Some(Value::String(text)) = block.get_mut("text") {
                    self.text(text);
                }
            }
            "tool_use" => {
                for field in ["id", "name"] {
                    if let Some(Value::String(value)) = block.get_mut(field) {
                        self.identifier(value);
                    }
                }
                if let Some(input) = block.get_mut("input") {
                    self.json(input);
                }
            }
            "tool_result" => {
                if let Some(Value::String(id)) = block.get_mut("tool_use_id") {
                    self.identifier(id);
                }
                if let Some(content) = block.get_mut("content") {
                    self.blocks(content);
                }
            }
            "document" => {
                // A plain-text document's text; base64 and URL sources are not read.
                if let Some(source) = block.get_mut("source")
                    && source.get("type").and_then(Value::as_str) == Some("text")
                    && let Some(Value::String(data)) = source.get_mut("data")
                {
                    self.text(data);
                }
            }
            _ => {}
        }
    }

    fn identifier(&mut self, identifier: &mut String) {
        self.guard(identifier, MaskStyle::Identifier);
    }

    /// Every string and key of a JSON value: a schema's descriptions, enums, defaults and
    /// examples, and its property names, all of which the model reads.
    pub(super) fn json(&mut self, value: &mut Value) {
        match value {
            Value::String(text) => self.text(text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.json(item)),
            Value::Object(map) => {
                // Rebuilt only when a key may need masking: keys cannot be changed in place (and
                // two keys masked alike become one).
                if map.keys().any(|key| self.scanner.may_find(key)) {
                    let mut rebuilt = Map::with_capacity(map.len());
                    for (mut key, item) in std::mem::take(map) {
                        self.text(&mut key);
                        rebuilt.insert(key, item);
                    }
                    *map = rebuilt;
                }
                map.values_mut().for_each(|item| self.json(item));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn guard(&mut self, text: &mut String, style: MaskStyle) {
        let findings = self.scanner.scan(text);
        if let Some(masked) = apply(self.policy, &mut self.report, text, findings, style) {
            *text = masked;
        }
    }
}

/// Applies `policy` to the `findings` in `text`: counts them in `report` (BLOCK ones also as
/// blocked), and returns the text with the MASK ones masked, if there are any.
pub(super) fn apply(
    policy: &Policy,
    report: &mut Report,
    text: &str,
    findings: Vec<Finding>,
    style: MaskStyle,
) -> Option<String> {
    let mut masked = Vec::new();
    for finding in findings {
        let name = finding.entity.name().to_owned();
        match policy.action(&name) {
            Action::Allow => continue,
            Action::Block => *report.blocked.entry(name.clone()).or_default() += 1,
            Action::Mask => masked.push(finding),
            Action::Log => {}
        }
        *report.counts.entry(name).or_default() += 1;
    }
    (!masked.is_empty()).then(|| mask_as(text, &masked, style))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_and_schema_keys_are_guarded_and_stay_valid_names() {
        let scanner = Scanner::new(&[]).unwrap();
        let known = scanner.entity_names();
        let card = "4539148803436467";
        let mut request: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": card, "parameters": {
                "type": "object", "properties": {card: {"type": "string"}}, "required": [card]}}}],
            "tool_choice": {"type": "function", "function": {"name": card}},
        }))
        .unwrap();
        let mask = Policy::parse(&serde_json::json!({"*": "MASK"}), known).unwrap();
        let report = scanner.guard(&mut request, &mask);
        assert_eq!(report.counts["CREDIT_CARD"], 4);
        let function = &request.tools.as_ref().unwrap()[0].function;
        assert_eq!(function.name, "CREDIT_CARD");
        assert_eq!(
            function.parameters,
            Some(serde_json::json!({"type": "object",
                "properties": {"<CREDIT_CARD>": {"type": "string"}}, "required": ["<CREDIT_CARD>"]}))
        );
        let Some(ToolChoice::Named(named)) = &request.tool_choice else {
            panic!("the named choice stays");
        };
        assert_eq!(named.function.name, "CREDIT_CARD");
    }
}
