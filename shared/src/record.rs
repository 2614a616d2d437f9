//! [`RequestRecord`]: everything known about one model request, from its arrival to its end. It
//! is the one source of the settlement call, the audit record, the metrics and the request log
//! line, so a new field is added here once. It is also what the settlement outbox keeps, so it
//! round-trips through JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{GuardrailUnits, ModelAlias, ModelEntry, ServiceTier, TokenUsage};
use crate::clients::guardrail::{Applied, Source, Verdict};
use crate::clients::telemetry::{RequestMetrics, Stages};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::keys::KeyHash;
use crate::money::Money;

/// How an admitted request ended: the `status` of its spend row and audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    /// Refused before it was admitted, or failed with nothing produced.
    Failure,
    /// The client hung up before the answer was complete.
    ClientClosed,
    /// The model's stream broke off.
    UpstreamCut,
    /// The gateway panicked while serving it.
    Panic,
    /// It ran out of time.
    Deadline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::ClientClosed => "client_closed",
            Status::UpstreamCut => "upstream_cut",
            Status::Panic => "panic",
            Status::Deadline => "deadline",
        }
    }
}

/// Which API a request came through: the spend row's `call_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallType {
    /// OpenAI's chat completions (LiteLLM's name for them).
    #[default]
    Acompletion,
    /// Anthropic's Messages API, `POST /v1/messages`.
    AnthropicMessages,
    /// OpenAI's embeddings, `POST /v1/embeddings` (LiteLLM's name for them).
    Aembedding,
    /// OpenAI's Responses API, `POST /v1/responses` (LiteLLM's name for it).
    Aresponses,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Acompletion => "acompletion",
            CallType::AnthropicMessages => "anthropic_messages",
            CallType::Aembedding => "aembedding",
            CallType::Aresponses => "aresponses",
        }
    }
}

/// Token counts in records (Bedrock's meaning: `input` excludes the cache tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    /// Every cache write, whatever its TTL.
    pub cache_write: u64,
    /// The part of `cache_write` written for an hour (records kept before this field have 0).
    #[serde(default)]
    pub cache_write_1h: u64,
}

impl From<TokenUsage> for Tokens {
    fn from(u: TokenUsage) -> Self {
        Tokens {
            input: u.input,
            output: u.output,
            cache_read: u.cache_read,
            cache_write: u.cache_write,
            cache_write_1h: u.cache_write_1h,
        }
    }
}

impl From<Tokens> for TokenUsage {
    fn from(t: Tokens) -> Self {
        TokenUsage {
            input: t.input,
            output: t.output,
            cache_read: t.cache_read,
            cache_write: t.cache_write,
            cache_write_1h: t.cache_write_1h,
        }
    }
}

/// Who pays for a request: the key as admission found it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Payer {
    /// The key's immutable id; `None` for the master key and for refused requests.
    pub key_id: Option<i64>,
    /// The hash of the key charged, as its row had it when the request was admitted.
    pub key_hash: Option<KeyHash>,
    /// The hash of the key the client presented. It differs from `key_hash` only during a
    /// rotation grace period, when the old key is still accepted (records kept before this
    /// field have none).
    #[serde(default)]
    pub presented_key_hash: Option<KeyHash>,
    pub key_alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
}

/// Who sent the request, as the ALB tells it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Client {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_bytes: u64,
}

impl Client {
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Client {
            // The ALB (in `append` mode, set in template.yaml) and API Gateway append the
            // address they saw to X-Forwarded-For: the last entry is the client. Earlier entries
            // are whatever the client sent, and can be forged.
            ip: text("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next())
                .map(|v| v.trim().chars().take(64).collect::<String>())
                .filter(|v| !v.is_empty()),
            user_agent: text("user-agent").map(|v| v.chars().take(256).collect()),
            request_bytes: text("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// One model request, from arrival to end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request_id: RequestId,
    /// When it arrived.
    pub timestamp: DateTime<Utc>,
    /// The API it came through (records kept before this field were chat completions).
    #[serde(default)]
    pub call_type: CallType,
    pub payer: Payer,
    /// The alias the client asked for: responses and spend rows name it, whichever model served.
    pub model: ModelAlias,
    /// The Bedrock model that answered, once one did.
    pub model_id: Option<String>,
    /// The service tier the request named, which priced it (records kept before this field
    /// have none: the default tier).
    #[serde(default)]
    pub service_tier: Option<ServiceTier>,
    /// The request's `user` and `metadata`, kept with the spend row (never in the audit record).
    pub end_user: Option<String>,
    pub metadata: serde_json::Value,
    pub client: Client,
    /// The prompt tokens admission estimated: what a request is charged for its prompt when the
    /// model's own count never came.
    pub estimated_input: u64,
    pub tokens: Tokens,
    pub cost: Money,
    pub status: Status,
    pub status_code: u16,
    pub error_type: Option<String>,
    /// PII findings by entity type (counts only).
    pub pii: serde_json::Value,
    /// PII findings in the model's answer, when answers are scanned (counts only).
    #[serde(default = "empty_object")]
    pub pii_output: serde_json::Value,
    /// What the key's or team's Bedrock guardrail did and cost, when one ran (records kept
    /// before this field have none).
    #[serde(default)]
    pub guardrail: Option<GuardrailUse>,
    pub response_bytes: u64,
    pub latency_ms: f64,
    /// A streamed answer: from arrival to the first text sent (records kept before this field,
    /// and whole answers, have none).
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    pub upstream_ms: f64,
    /// The gateway's stages before the model call (records kept before this field have none).
    #[serde(default)]
    pub stages: Stages,
    /// When it ended; set when it is settled.
    pub finished: Option<DateTime<Utc>>,
    /// Its trace, when traces are on (never kept: an outbox replay is not traced).
    #[serde(skip)]
    pub trace: crate::clients::traces::Trace,
}

/// What a request's guardrail did and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailUse {
    /// `id:version`.
    pub guardrail: String,
    /// `ApplyGuardrail` calls made (one for the prompt; one per window of a streamed answer).
    pub calls: u32,
    /// What it did to the prompt and to the answer: `none`, `masked` or `blocked` (the most it
    /// did to any part); `None` when that side was not judged.
    pub input: Option<String>,
    pub output: Option<String>,
    pub units: GuardrailUnits,
    pub cost: Money,
}

impl RequestRecord {
    pub fn new(
        request_id: RequestId,
        timestamp: DateTime<Utc>,
        model: ModelAlias,
        client: Client,
    ) -> Self {
        RequestRecord {
            request_id,
            timestamp,
            call_type: CallType::Acompletion,
            payer: Payer::default(),
            model,
            model_id: None,
            service_tier: None,
            end_user: None,
            metadata: serde_json::json!({}),
            client,
            estimated_input: 0,
            tokens: Tokens::default(),
            cost: Money::ZERO,
            status: Status::Failure,
            status_code: 0,
            error_type: None,
            pii: serde_json::json!({}),
            pii_output: serde_json::json!({}),
            guardrail: None,
            response_bytes: 0,
            latency_ms: 0.0,
            ttft_ms: None,
            upstream_ms: 0.0,
            stages: Stages::default(),
            finished: None,
            trace: crate::clients::traces::Trace::default(),
        }
    }

    /// Charges `usage` of `model`, the model that answered, at the request's service tier.
    pub fn charge(&mut self, model: &ModelEntry, usage: TokenUsage) {
        self.model_id = Some(model.bedrock_model_id.clone());
        self.tokens = usage.into();
        let guardrail = self.guardrail.as_ref().map_or(Money::ZERO, |g| g.cost);
        self.cost = model.charged_at(self.service_tier).cost(&usage) + guardrail;
    }

    /// Notes one call of guardrail `name` on the prompt or the answer: its units and what they
    /// cost are added to the request's (in the audit record, and with the spend row's metadata
    /// as `llmlite_guardrail`).
    pub fn note_guardrail(&mut self, name: &str, source: Source, applied: &Applied, cost: Money) {
        let used = self.guardrail.get_or_insert_with(|| GuardrailUse {
            guardrail: name.to_owned(),
            ..GuardrailUse::default()
        });
        used.calls += 1;
        used.units.add(&applied.units);
        used.cost = Money::new((used.cost + cost).amount().normalize());
        let action = match &applied.verdict {
            Verdict::Pass => "none",
            Verdict::Masked(_) => "masked",
            Verdict::Blocked(_) => "blocked",
        };
        let slot = match source {
            Source::Input => &mut used.input,
            Source::Output => &mut used.output,
        };
        let rank = |a: &str| ["none", "masked", "blocked"].iter().position(|r| *r == a);
        if slot.as_deref().and_then(rank) < rank(action) {
            *slot = Some(action.to_owned());
        }
        let json = serde_json::to_value(&*used).unwrap_or_default();
        self.cost = self.cost + cost;
        if let serde_json::Value::Object(metadata) = &mut self.metadata {
            metadata.insert("llmlite_guardrail".to_owned(), json);
        }
    }

    /// What the spend row keeps beyond its columns of old (`llmlite_settle_recorded`'s
    /// `p_detail`): the 1-hour cache writes and the service tier.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "cache_write_1h": TokenUsage::from(self.tokens).written_1h(),
            "service_tier": self.service_tier.map(ServiceTier::as_str),
        })
    }

    /// Notes what the output guard found in the answer: in the audit record, and with the
    /// spend row's metadata as `llmlite_pii_output`.
    pub fn note_output(&mut self, report: &crate::pii::Report) {
        if report.counts.is_empty() {
            return;
        }
        self.pii_output = report.to_json();
        if let serde_json::Value::Object(metadata) = &mut self.metadata {
            metadata.insert("llmlite_pii_output".to_owned(), report.to_json());
        }
    }

    /// Ends the record with `error` (no usage is charged here; see [`RequestRecord::charge`]).
    pub fn fail(&mut self, error: &ApiError) {
        self.status_code = error.status().as_u16();
        self.error_type = Some(error.kind().to_owned());
    }

    /// Prompt, cache and output tokens together, as the spend row's `prompt_tokens` counts them.
    pub fn prompt_tokens(&self) -> u64 {
        self.tokens.input + self.tokens.cache_read + self.tokens.cache_write
    }

    /// The audit record: ids, sizes, timings, tokens, cost and outcome; never prompt or answer
    /// text, the `user` field or free-text metadata.
    pub fn audit(&self) -> serde_json::Value {
        serde_json::json!({
            "timestamp": self.timestamp,
            "request_id": self.request_id.to_string(),
            "call_type": self.call_type.as_str(),
            "user_id": self.payer.user_id,
            "team_id": self.payer.team_id,
            "key_hash": self.payer.key_hash.as_ref().map(KeyHash::as_str),
            "presented_key_hash": self.payer.presented_key_hash.as_ref().map(KeyHash::as_str),
            "key_alias": self.payer.key_alias,
            "model": self.model,
            "model_id": self.model_id,
            "service_tier": self.service_tier.map(ServiceTier::as_str),
            "request_bytes": self.client.request_bytes,
            "response_bytes": self.response_bytes,
            "latency_ms": self.latency_ms,
            "upstream_ms": self.upstream_ms,
            "overhead_ms": self.overhead_ms(),
            "stages": self.stages,
            "tokens": self.tokens,
            "cost": self.cost.to_string(),
            "status": self.status.as_str(),
            "status_code": self.status_code,
            "error_type": self.error_type,
            "pii": self.pii,
            "pii_output": self.pii_output,
            "guardrail": self.guardrail,
            "client_ip": self.client.ip,
            "user_agent": self.client.user_agent,
            "trace_id": self.trace.trace_id(),
        })
    }

    fn overhead_ms(&self) -> f64 {
        (self.latency_ms - self.upstream_ms).max(0.0)
    }

    /// How it ended, for its trace.
    pub fn ended(&self) -> crate::clients::traces::Ended<'_> {
        crate::clients::traces::Ended {
            model: self.model.as_str(),
            model_id: self.model_id.as_deref(),
            key_hash: self.payer.key_hash.as_ref().map(KeyHash::as_str),
            team: self.payer.team_id.as_deref(),
            cost: self.cost.to_string(),
            status: self.status.as_str(),
            status_code: self.status_code,
            error_type: self.error_type.as_deref(),
            ttft_ms: self.ttft_ms,
            tokens: [
                self.tokens.input,
                self.tokens.output,
                self.tokens.cache_read,
                self.tokens.cache_write,
            ],
        }
    }

    /// Ends its trace (see [`crate::clients::traces::Trace::finish`]); free with traces off.
    pub fn finish_trace(&self, after: &'static str) -> tracing::Span {
        if !self.trace.is_on() {
            return tracing::Span::none();
        }
        self.trace.finish(&self.ended(), after)
    }

    /// The metrics and log line of this request.
    pub fn metrics(&self) -> RequestMetrics {
        RequestMetrics {
            model: self.model.to_string(),
            route: self.call_type.as_str(),
            team: self.payer.team_id.clone(),
            ttft_ms: self.ttft_ms,
            trace_id: self.trace.trace_id().map(str::to_owned),
            status: self.status_code,
            error_type: self.error_type.clone(),
            latency_ms: self.latency_ms,
            upstream_ms: self.upstream_ms,
            overhead_ms: self.overhead_ms(),
            stages: self.stages,
            input_tokens: self.prompt_tokens(),
            output_tokens: self.tokens.output,
            cost: rust_decimal::prelude::ToPrimitive::to_f64(&self.cost.amount()).unwrap_or(0.0),
            // The settler knows its outbox; a record does not.
            outbox: 0,
        }
    }

    /// The audit object's key.
    pub fn audit_key(&self) -> String {
        crate::clients::audit::request_key(self.timestamp, &self.request_id.to_string())
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}
