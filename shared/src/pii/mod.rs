//! The PII guard's detectors: one pass over the text with a `RegexSet` prefilter, then only the
//! candidates of the patterns that matched are found and validated (Luhn and issuer prefixes
//! for cards, the ISO 13616 formats of the `iban_validate` crate for IBANs, area/group/serial
//! rules for SSNs, prefix rules for NINOs, octet ranges for IPs, libphonenumber's metadata for
//! phone numbers in [`phone`]). Nothing is allocated when nothing matches.
//!
//! A candidate a validator is unsure of (a bare run of digits that could be a phone number or an
//! SSN, a card number of an unknown issuer, a lower-case NINO) is *weak*: it becomes a
//! finding only with a context word for its entity nearby ([`context`]).
//!
//! The formats are ASCII, and so are the patterns (`(?-u)`): a digit is `0-9` and a word boundary
//! is an ASCII one. Unicode `\d` would take a Devanagari `२` for a digit (three bytes where a
//! validator expects one), Unicode `\b` would hide a card number written right after a CJK
//! ideograph, and it stops the regex engine's fast DFA on any non-ASCII text. Validators slice
//! with `get` and match digits by slice patterns, so no text can make them panic.
//!
//! Findings carry the entity and the byte span; callers record types and counts, never values.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod context;
pub mod output;
pub mod phone;

pub use context::Cues;
pub use output::OutputGuard;

use crate::openai::{
    ChatCompletionRequest, ChatMessage, Content, ContentPart, ResponseFormat, ToolChoice,
};

/// What the guard looks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    EmailAddress,
    PhoneNumber,
    CreditCard,
    IbanCode,
    UsSsn,
    UkNino,
    IpAddress,
    AwsAccessKey,
    PrivateKey,
    /// A regex entity from configuration.
    Custom(String),
}

impl Entity {
    pub fn name(&self) -> &str {
        match self {
            Entity::EmailAddress => "EMAIL_ADDRESS",
            Entity::PhoneNumber => "PHONE_NUMBER",
            Entity::CreditCard => "CREDIT_CARD",
            Entity::IbanCode => "IBAN_CODE",
            Entity::UsSsn => "US_SSN",
            Entity::UkNino => "UK_NINO",
            Entity::IpAddress => "IP_ADDRESS",
            Entity::AwsAccessKey => "AWS_ACCESS_KEY",
            Entity::PrivateKey => "PRIVATE_KEY",
            Entity::Custom(name) => name,
        }
    }

    pub const BUILT_IN: [Entity; 9] = [
        Entity::EmailAddress,
        Entity::PhoneNumber,
        Entity::CreditCard,
        Entity::IbanCode,
        Entity::UsSsn,
        Entity::UkNino,
        Entity::IpAddress,
        Entity::AwsAccessKey,
        Entity::PrivateKey,
    ];
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One finding: an entity at `start..end` (bytes) of the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub entity: Entity,
    pub start: usize,
    pub end: usize,
}

/// What a validator makes of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    No,
    Yes,
    /// Only with a context word for the entity nearby.
    Weak,
}

type Validator = fn(&str, &str, usize) -> bool;
type Grader = fn(&Rules, &str, &str, usize) -> Verdict;

enum Check {
    /// Valid or not.
    Plain(Validator),
    /// Valid, invalid, or weak.
    Graded(Grader),
}

struct Detector {
    entity: Entity,
    regex: Regex,
    check: Check,
}

/// What the graded validators need: the phone regions and the context words.
struct Rules {
    regions: Vec<phone::Region>,
    cues: Cues,
}

/// The detectors' settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The regions a national phone number may belong to (`LLMLITE_PII_PHONE_REGIONS`).
    pub phone_regions: Vec<phone::Region>,
    /// Context words per entity (`LLMLITE_PII_CONTEXT`).
    pub cues: Cues,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            phone_regions: phone::regions(phone::DEFAULT_REGIONS).unwrap_or_default(),
            cues: Cues::default(),
        }
    }
}

/// The compiled detectors. Build once per process; scanning borrows it.
pub struct Scanner {
    prefilter: RegexSet,
    detectors: Vec<Detector>,
    rules: Rules,
}

#[derive(Debug, thiserror::Error)]
#[error("custom PII entity `{name}`: {reason}")]
pub struct ScannerError {
    pub name: String,
    pub reason: String,
}

const EMAIL: &str =
    r"(?i-u)\b[a-z0-9][a-z0-9._%+-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b";
const CARD: &str = r"(?-u)\b\d(?:[ -]?\d){12,18}\b";
const IBAN: &str = r"(?-u)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b";
const SSN: &str = r"(?-u)\b\d{3}[- ]?\d{2}[- ]?\d{4}\b";
const NINO: &str = r"(?i-u)\b[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b";
const IPV4: &str = r"(?-u)\b(?:\d{1,3}\.){3}\d{1,3}\b";
const IPV6: &str = r"(?i-u)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}";
const AWS_KEY_ID: &str = r"(?-u)\b(?:AKIA|ASIA)[A-Z0-9]{16}\b";
const AWS_SECRET: &str = r"[A-Za-z0-9/+]{40,}";
const PEM: &str =
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----";

impl Scanner {
    /// The built-in detectors, with the default options, and `custom` (name, regex) entities.
    pub fn new(custom: &[(String, String)]) -> Result<Self, ScannerError> {
        Scanner::with_options(custom, &Options::default())
    }

    /// The built-in detectors with `options`, and `custom` (name, regex) entities.
    pub fn with_options(
        custom: &[(String, String)],
        options: &Options,
    ) -> Result<Self, ScannerError> {
        let mut detectors = Vec::new();
        let mut add = |entity: Entity, pattern: &str, check: Check| {
            // The built-in patterns are constants, checked by the tests.
            if let Ok(regex) = Regex::new(pattern) {
                detectors.push(Detector {
                    entity,
                    regex,
                    check,
                });
            }
        };
        add(Entity::EmailAddress, EMAIL, Check::Plain(valid_email));
        add(Entity::CreditCard, CARD, Check::Graded(grade_card));
        add(Entity::IbanCode, IBAN, Check::Plain(valid_iban));
        add(Entity::UsSsn, SSN, Check::Graded(grade_ssn));
        add(Entity::UkNino, NINO, Check::Graded(grade_nino));
        add(Entity::IpAddress, IPV4, Check::Plain(valid_ipv4));
        add(Entity::IpAddress, IPV6, Check::Plain(valid_ipv6));
        add(
            Entity::AwsAccessKey,
            AWS_KEY_ID,
            Check::Plain(|_, _, _| true),
        );
        add(
            Entity::AwsAccessKey,
            AWS_SECRET,
            Check::Plain(valid_aws_secret),
        );
        add(Entity::PrivateKey, PEM, Check::Plain(|_, _, _| true));
        // Last of the built-ins: where a phone candidate and another entity cover the same
        // span (a card number, an SSN), the other entity is named.
        add(
            Entity::PhoneNumber,
            phone::PATTERN,
            Check::Graded(|rules, m, text, start| phone::check(&rules.regions, m, text, start)),
        );
        for (name, pattern) in custom {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(ScannerError {
                    name: name.clone(),
                    reason: "names are 1-64 of A-Z, 0-9 and _".into(),
                });
            }
            let regex = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ScannerError {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            detectors.push(Detector {
                entity: Entity::Custom(name.clone()),
                regex,
                check: Check::Plain(|_, _, _| true),
            });
        }
        let prefilter = RegexSet::new(detectors.iter().map(|d| d.regex.as_str())).map_err(|e| {
            ScannerError {
                name: "*".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Scanner {
            prefilter,
            detectors,
            rules: Rules {
                regions: options.phone_regions.clone(),
                cues: options.cues.clone(),
            },
        })
    }

    /// A candidate's verdict, a weak one settled by the context words near it.
    fn accepts(&self, detector: &Detector, m: &str, text: &str, start: usize) -> bool {
        match detector.check {
            Check::Plain(validate) => validate(m, text, start),
            Check::Graded(grade) => match grade(&self.rules, m, text, start) {
                Verdict::Yes => true,
                Verdict::No => false,
                Verdict::Weak => {
                    self.rules
                        .cues
                        .near(detector.entity.name(), text, start, start + m.len())
                        && (detector.entity != Entity::PhoneNumber
                            || phone::valid_anywhere(&self.rules.regions, m))
                }
            },
        }
    }

    /// Every validated finding in `text`, in order, without overlaps (the longer wins).
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        // `is_match` first: it allocates nothing, and most text has nothing to find.
        if !self.prefilter.is_match(text) {
            return Vec::new();
        }
        let matched = self.prefilter.matches(text);
        let mut findings = Vec::new();
        for detector in matched.iter().filter_map(|index| self.detectors.get(index)) {
            for m in detector.regex.find_iter(text) {
                if self.accepts(detector, m.as_str(), text, m.start()) {
                    findings.push(Finding {
                        entity: detector.entity.clone(),
                        start: m.start(),
                        end: m.end(),
                    });
                }
            }
        }
        findings.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
        for finding in findings {
            match kept.last() {
                Some(last) if finding.start < last.end => {}
                _ => kept.push(finding),
            }
        }
        kept
    }
}

/// What the guard does with an entity it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Refuse the request (400 `pii_blocked`).
    Block,
    /// Replace each span with `<ENTITY>` before the request leaves.
    Mask,
    /// Let it through; record the finding.
    Log,
    /// Let it through unrecorded.
    Allow,
}

/// Actions per entity, with an optional `*` for every entity not named, and whether the model's
/// answers are scanned too (`"output": true`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: BTreeMap<String, Action>,
    otherwise: Option<Action>,
    output: Option<bool>,
}

/// The policy key that turns the scanning of answers on or off.
pub const OUTPUT_FIELD: &str = "output";

impl Policy {
    /// The default when nothing is configured.
    pub fn builtin() -> Self {
        let rules = [
            ("CREDIT_CARD", Action::Block),
            ("US_SSN", Action::Block),
            ("UK_NINO", Action::Block),
            ("IBAN_CODE", Action::Block),
            ("AWS_ACCESS_KEY", Action::Block),
            ("PRIVATE_KEY", Action::Block),
            ("EMAIL_ADDRESS", Action::Mask),
            ("PHONE_NUMBER", Action::Mask),
            ("IP_ADDRESS", Action::Log),
        ]
        .into_iter()
        .map(|(entity, action)| (entity.to_owned(), action))
        .collect();
        Policy {
            rules,
            otherwise: None,
            output: None,
        }
    }

    /// This policy with answers scanned (`true`) or not: `LLMLITE_PII_SCAN_OUTPUT`.
    pub fn with_output(mut self, scan: bool) -> Policy {
        self.output = Some(scan);
        self
    }

    /// Whether the model's answers are scanned under this policy (off unless set).
    pub fn scans_output(&self) -> bool {
        self.output.unwrap_or(false)
    }

    /// Reads `{"ENTITY": "BLOCK"|"MASK"|"LOG"|"ALLOW", "*": ..., "output": true|false}`. `known`
    /// names the entities that may appear (built-in and custom).
    pub fn parse(value: &Value, known: &[String]) -> Result<Policy, String> {
        let Value::Object(map) = value else {
            return Err("a PII policy is a JSON object of entity to action".into());
        };
        let mut policy = Policy::default();
        for (entity, action) in map {
            if entity == OUTPUT_FIELD {
                let Value::Bool(scan) = action else {
                    return Err(format!(
                        "`{OUTPUT_FIELD}` is true (scan the model's answers too) or false"
                    ));
                };
                policy.output = Some(*scan);
                continue;
            }
            let action: Action = serde_json::from_value(action.clone())
                .map_err(|_| format!("`{entity}`: the action must be BLOCK, MASK, LOG or ALLOW"))?;
            if entity == "*" {
                policy.otherwise = Some(action);
            } else if known.iter().any(|k| k == entity) {
                policy.rules.insert(entity.clone(), action);
            } else {
                return Err(format!(
                    "`{entity}` is not a PII entity ({})",
                    known.join(", ")
                ));
            }
        }
        Ok(policy)
    }

    /// This policy with `overrides` on top: a `*` there replaces everything below it.
    pub fn overlay(&self, overrides: &Policy) -> Policy {
        let mut merged = if overrides.otherwise.is_some() {
            Policy {
                rules: BTreeMap::new(),
                otherwise: overrides.otherwise,
                output: self.output,
            }
        } else {
            self.clone()
        };
        merged
            .rules
            .extend(overrides.rules.iter().map(|(k, v)| (k.clone(), *v)));
        if overrides.output.is_some() {
            merged.output = overrides.output;
        }
        merged
    }

    pub fn action(&self, entity: &str) -> Action {
        self.rules
            .get(entity)
            .copied()
            .or(self.otherwise)
            .unwrap_or(Action::Log)
    }

    /// As JSON, the shape it is read from.
    pub fn to_json(&self) -> Value {
        let mut map: Map<String, Value> = self
            .rules
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        if let Some(otherwise) = self.otherwise {
            map.insert("*".into(), serde_json::json!(otherwise));
        }
        if let Some(output) = self.output {
            map.insert(OUTPUT_FIELD.into(), Value::Bool(output));
        }
        Value::Object(map)
    }
}

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
    /// Names of every entity this scanner knows, for validating policies.
    pub fn entity_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .detectors
            .iter()
            .map(|d| d.entity.name().to_owned())
            .collect();
        names.dedup();
        names
    }

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
}

impl Scanner {
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
}

impl Scanner {
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
struct Pass<'a> {
    scanner: &'a Scanner,
    policy: &'a Policy,
    report: Report,
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

    fn text(&mut self, text: &mut String) {
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
    fn json(&mut self, value: &mut Value) {
        match value {
            Value::String(text) => self.text(text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.json(item)),
            Value::Object(map) => {
                // Rebuilt only when a key may need masking: keys cannot be changed in place (and
                // two keys masked alike become one).
                if map.keys().any(|key| self.scanner.prefilter.is_match(key)) {
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
fn apply(
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

/// How a masked span is written.
#[derive(Debug, Clone, Copy)]
enum MaskStyle {
    /// `<ENTITY>`, in text.
    Prose,
    /// `ENTITY`, in tool names and call IDs, which Bedrock limits to `[A-Za-z0-9_-]`.
    Identifier,
}

/// `text` with every finding replaced by `<ENTITY>`.
pub fn mask(text: &str, findings: &[Finding]) -> String {
    mask_as(text, findings, MaskStyle::Prose)
}

fn mask_as(text: &str, findings: &[Finding], style: MaskStyle) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        // `scan` gives findings in order, apart, on character boundaries; others are skipped.
        let (Some(kept), Some(_)) = (text.get(at..f.start), text.get(f.start..f.end)) else {
            continue;
        };
        out.push_str(kept);
        match style {
            MaskStyle::Prose => {
                out.push('<');
                out.push_str(f.entity.name());
                out.push('>');
            }
            MaskStyle::Identifier => out.push_str(f.entity.name()),
        }
        at = f.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

fn digits(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The character before a match, for checks that a match does not continue a longer token.
fn before(text: &str, start: usize) -> Option<char> {
    text.get(..start)?.chars().next_back()
}

fn after(text: &str, end: usize) -> Option<char> {
    text.get(end..)?.chars().next()
}

/// The number a run of decimal digits spells.
fn number(d: &[u8]) -> u32 {
    d.iter().fold(0, |acc, &x| acc * 10 + u32::from(x))
}

fn valid_email(m: &str, _: &str, _: usize) -> bool {
    let Some((local, domain)) = m.rsplit_once('@') else {
        return false;
    };
    !local.ends_with('.') && !local.contains("..") && !domain.contains("..")
}

/// Publicly documented test card numbers: not anybody's card.
const TEST_CARDS: &[&str] = &[
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "4000056655665556",
    "5555555555554444",
    "5105105105105100",
    "5200828282828210",
    "2223003122003222",
    "378282246310005",
    "371449635398431",
    "378734493671000",
    "6011111111111117",
    "6011000990139424",
    "3530111333300000",
    "3566002020360505",
    "30569309025904",
    "38520000023237",
    "6200000000000005",
    "4000000000000002",
    "4000000000000077",
];

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn known_issuer(d: &[u8]) -> bool {
    let prefix = |n: usize| number(d.get(..n).unwrap_or(d));
    let len = d.len();
    match d.first() {
        Some(4) => matches!(len, 13 | 16 | 19),
        Some(5) => (51..=55).contains(&prefix(2)) && len == 16,
        Some(2) => (2221..=2720).contains(&prefix(4)) && len == 16,
        Some(3) => match prefix(2) {
            34 | 37 => len == 15,
            36 | 38 | 39 => (14..=19).contains(&len),
            30 => (300..=305).contains(&prefix(3)) && (14..=19).contains(&len),
            // JCB's registered range is 3528-3589; cards in the wider 35 range are seen too.
            35 => (16..=19).contains(&len),
            _ => false,
        },
        Some(6) => {
            prefix(4) == 6011
                || prefix(2) == 65
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 62
        }
        _ => false,
    }
}

/// A Luhn-valid number of 13-19 digits: a card of a known issuer, or weak (a card only where
/// the text says so) when its prefix is no issuer's.
fn grade_card(_: &Rules, m: &str, text: &str, start: usize) -> Verdict {
    if before(text, start).is_some_and(|c| c == '-' || c == '.' || c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| c == '-' || c.is_ascii_alphanumeric())
    {
        return Verdict::No;
    }
    // Separators, if any, must be consistent: one kind, in groups.
    if m.contains(' ') && m.contains('-') {
        return Verdict::No;
    }
    let d = digits(m);
    if !(13..=19).contains(&d.len()) || !luhn(&d) {
        return Verdict::No;
    }
    let plain: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    if TEST_CARDS.contains(&plain.as_str()) {
        Verdict::No
    } else if known_issuer(&d) {
        Verdict::Yes
    } else {
        Verdict::Weak
    }
}

/// An IBAN in the ISO 13616 format of its country (the `iban_validate` crate: country, length,
/// BBAN structure, mod-97).
fn valid_iban(m: &str, text: &str, start: usize) -> bool {
    if before(text, start).is_some_and(|c| c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return false;
    }
    let compact: String = m.chars().filter(|c| *c != ' ').collect();
    iban::Iban::from_str(&compact).is_ok()
}

/// `536-90-4399` or `536 90 4399`; nine bare digits are weak.
fn grade_ssn(_: &Rules, m: &str, text: &str, start: usize) -> Verdict {
    if before(text, start).is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || after(text, start + m.len()).is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Verdict::No;
    }
    // One kind of separator, twice, or none.
    let separators: Vec<char> = m.chars().filter(|c| !c.is_ascii_digit()).collect();
    let strong = match separators.as_slice() {
        [first, second] if first == second => true,
        [] => false,
        _ => return Verdict::No,
    };
    let d = digits(m);
    let [a1, a2, a3, g1, g2, s1, s2, s3, s4] = *d.as_slice() else {
        return Verdict::No;
    };
    let (area, group, serial) = (
        number(&[a1, a2, a3]),
        number(&[g1, g2]),
        number(&[s1, s2, s3, s4]),
    );
    let plain: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    let valid = area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        // Famous examples, never issued to anyone.
        && !matches!(plain.as_str(), "078051120" | "219099999" | "123456789");
    match (valid, strong) {
        (false, _) => Verdict::No,
        (true, true) => Verdict::Yes,
        (true, false) => Verdict::Weak,
    }
}

/// HMRC's prefix rules; written in lower or mixed case it is weak.
fn grade_nino(_: &Rules, m: &str, text: &str, start: usize) -> Verdict {
    if before(text, start).is_some_and(|c| c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Verdict::No;
    }
    let compact: Vec<char> = m
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let [first, second, ..] = *compact.as_slice() else {
        return Verdict::No;
    };
    let prefix: String = [first, second].iter().collect();
    let valid = !"DFIQUV".contains(first)
        && !"DFIOQUV".contains(second)
        && !matches!(
            prefix.as_str(),
            "BG" | "GB" | "NK" | "KN" | "TN" | "NT" | "ZZ"
        );
    match (valid, m.bytes().any(|b| b.is_ascii_lowercase())) {
        (false, _) => Verdict::No,
        (true, false) => Verdict::Yes,
        (true, true) => Verdict::Weak,
    }
}

fn valid_ipv4(m: &str, text: &str, start: usize) -> bool {
    // Not part of a longer dotted run (a version string such as 1.2.3.4.5), nor of a hyphenated
    // token (`release-1.2.3.4`).
    if before(text, start).is_some_and(|c| c == '.' || c == '-' || c.is_ascii_alphanumeric())
        || after(text, start + m.len()).is_some_and(|c| {
            c.is_ascii_digit()
                || (c == '.'
                    && text
                        .get(start + m.len() + 1..)
                        .is_some_and(|rest| rest.starts_with(|d: char| d.is_ascii_digit())))
        })
    {
        return false;
    }
    // The unspecified and broadcast addresses are nobody's.
    Ipv4Addr::from_str(m).is_ok_and(|ip| !ip.is_unspecified() && !ip.is_broadcast())
}

fn valid_ipv6(m: &str, text: &str, start: usize) -> bool {
    let end = start + m.len();
    // A colon after the address is prose ("... 1bce: retry") unless more hex follows it.
    let continues = match after(text, end) {
        Some(':') => text
            .get(end + 1..)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_hexdigit())),
        Some(c) => c.is_ascii_alphanumeric(),
        None => false,
    };
    if continues || before(text, start).is_some_and(|c| c.is_ascii_hexdigit() || c == ':') {
        return false;
    }
    Ipv6Addr::from_str(m).is_ok()
}

fn valid_aws_secret(m: &str, text: &str, start: usize) -> bool {
    // Exactly 40 characters of the secret alphabet, not part of a longer token.
    if m.len() != 40
        || before(text, start).is_some_and(|c| c.is_ascii_alphanumeric() || c == '/' || c == '+')
    {
        return false;
    }
    // A 40-character secret-looking string (mixed case and a digit, as generated secrets are)
    // next to an access key ID or an AWS mention within the 80 characters before it.
    let head = text.get(..start).unwrap_or_default();
    let window_start = head.char_indices().rev().nth(79).map_or(0, |(i, _)| i);
    let window = head.get(window_start..).unwrap_or_default();
    let near_aws = window.contains("AKIA")
        || window.contains("ASIA")
        || window.to_ascii_lowercase().contains("aws");
    near_aws
        && !m.bytes().all(|b| b.is_ascii_hexdigit())
        && m.bytes().any(|b| b.is_ascii_lowercase())
        && m.bytes().any(|b| b.is_ascii_uppercase())
        && m.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entities(text: &str) -> Vec<String> {
        Scanner::new(&[])
            .unwrap()
            .scan(text)
            .into_iter()
            .map(|f| format!("{}={}", f.entity, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn every_built_in_pattern_compiles() {
        let scanner = Scanner::new(&[]).unwrap();
        assert_eq!(scanner.detectors.len(), 11);
        assert_eq!(scanner.rules.regions.len(), 8);
    }

    #[test]
    fn validated_detections() {
        assert_eq!(
            entities("card 4539 1488 0343 6467 ok"),
            ["CREDIT_CARD=4539 1488 0343 6467"]
        );
        assert!(entities("card 4539 1488 0343 6468 fails Luhn").is_empty());
        assert!(entities("test card 4111 1111 1111 1111").is_empty());
        assert_eq!(
            entities("IBAN GB82 WEST 1234 5698 7654 32."),
            ["IBAN_CODE=GB82 WEST 1234 5698 7654 32"]
        );
        assert!(entities("IBAN GB82 WEST 1234 5698 7654 33").is_empty());
        assert_eq!(entities("ssn 536-90-4399"), ["US_SSN=536-90-4399"]);
        assert!(entities("ssn 666-90-4399 and 900-12-1234").is_empty());
        assert_eq!(entities("NI AB 12 34 56 C"), ["UK_NINO=AB 12 34 56 C"]);
        assert!(entities("NI QQ 12 34 56 C").is_empty());
        assert_eq!(
            entities("mail jo.bloggs@example.co.uk now"),
            ["EMAIL_ADDRESS=jo.bloggs@example.co.uk"]
        );
        assert_eq!(
            entities("from 192.168.10.4 on"),
            ["IP_ADDRESS=192.168.10.4"]
        );
        assert!(entities("version 1.2.3.4.5 and 300.1.1.1").is_empty());
        assert_eq!(
            entities("v6 2001:db8::8a2e:370:7334"),
            ["IP_ADDRESS=2001:db8::8a2e:370:7334"]
        );
        assert_eq!(
            entities("id AKIAIOSFODNN7EXAMPLE"),
            ["AWS_ACCESS_KEY=AKIAIOSFODNN7EXAMPLE"]
        );
        assert_eq!(
            entities("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ["AWS_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
        );
        assert!(entities("commit 1f3a9c0b2d4e6f8091a2b3c4d5e6f708192a3b4c").is_empty());
        assert_eq!(
            entities("call +44 20 7946 0958 or 020 7946 0958"),
            [
                "PHONE_NUMBER=+44 20 7946 0958",
                "PHONE_NUMBER=020 7946 0958"
            ]
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(entities(pem), [format!("PRIVATE_KEY={pem}")]);
    }

    #[test]
    fn digits_of_other_scripts_are_not_digits_and_never_panic() {
        for text in [
            "GB२२ABCDEFGHIJKLMN",
            "GB82 WEST १२३४ 5698 7654 32",
            "५३६-९०-४३९९",
            "536-९०-4399",
            "AB १२ ३४ ५६ C",
            "card ４５３９ １４８８ ０３４３ ６４６７",
            "from ١٩٢.١٦٨.١٠.٤",
        ] {
            assert!(entities(text).is_empty(), "{text}: {:?}", entities(text));
        }
    }

    #[test]
    fn pii_written_right_after_cjk_text_is_found() {
        // No spaces between words: a Unicode word boundary saw none before the number.
        assert_eq!(
            entities("卡号4539148803436467，谢谢"),
            ["CREDIT_CARD=4539148803436467"]
        );
        assert_eq!(
            entities("邮箱jo@example.com。"),
            ["EMAIL_ADDRESS=jo@example.com"]
        );
    }

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
        let mask = Policy::parse(&serde_json::json!({"*": "MASK"}), &known).unwrap();
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

    #[test]
    fn policies_merge_key_over_team_over_global() {
        let known: Vec<String> = Entity::BUILT_IN
            .iter()
            .map(|e| e.name().to_owned())
            .collect();
        let global = Policy::builtin();
        assert_eq!(global.action("CREDIT_CARD"), Action::Block);
        assert_eq!(global.action("EMAIL_ADDRESS"), Action::Mask);
        let team = Policy::parse(&serde_json::json!({"EMAIL_ADDRESS": "BLOCK"}), &known).unwrap();
        let key = Policy::parse(&serde_json::json!({"EMAIL_ADDRESS": "ALLOW"}), &known).unwrap();
        assert_eq!(global.overlay(&team).action("EMAIL_ADDRESS"), Action::Block);
        assert_eq!(
            global.overlay(&team).overlay(&key).action("EMAIL_ADDRESS"),
            Action::Allow
        );
        let off = Policy::parse(&serde_json::json!({"*": "ALLOW"}), &known).unwrap();
        assert_eq!(global.overlay(&off).action("CREDIT_CARD"), Action::Allow);
        assert!(Policy::parse(&serde_json::json!({"EMAIL": "BLOCK"}), &known).is_err());
        assert!(Policy::parse(&serde_json::json!({"EMAIL_ADDRESS": "SHRED"}), &known).is_err());
        assert!(Policy::parse(&serde_json::json!(["x"]), &known).is_err());
    }

    #[test]
    fn masking_replaces_spans_with_their_type() {
        let scanner = Scanner::new(&[("TICKET".into(), r"\bTCK-\d{6}\b".into())]).unwrap();
        let text = "mail a@b.io about TCK-123456";
        let findings = scanner.scan(text);
        assert_eq!(mask(text, &findings), "mail <EMAIL_ADDRESS> about <TICKET>");
        assert!(scanner.scan("nothing to see").is_empty());
        assert!(Scanner::new(&[("bad name".into(), "x".into())]).is_err());
        assert!(Scanner::new(&[("BAD".into(), "(".into())]).is_err());
    }
}
