//! Logs and metrics. Lambdas write one JSON object per log line (CloudWatch adds the
//! timestamp); the local gateway writes readable lines. `RUST_LOG` sets the filter (default
//! `info`). Every line passes through a redacting writer that replaces anything shaped like an
//! API key (`sk-...`, which the master key is too) before it is written, whatever logged it.
//!
//! Traces are [`super::traces`]'s (OpenTelemetry, when OTLP is configured).
//!
//! Metrics are CloudWatch Embedded Metric Format lines on stdout (no metric API call on the
//! request path): in a Lambda, or wherever `LLMLITE_EMF=true`.

use std::io::Write;

use serde_json::{Value, json};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::error::redact_keys;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Wraps a writer so that every line it is given is redacted first.
#[derive(Clone, Copy)]
pub struct Redacting<W>(pub W);

pub struct RedactingWriter<W: Write>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing-subscriber hands over one formatted event per call.
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact_keys(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, M> MakeWriter<'a> for Redacting<M>
where
    M: MakeWriter<'a>,
{
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// The log lines' filter: `RUST_LOG`, never the trace spans (which only the OpenTelemetry layer
/// sees).
fn log_filter() -> EnvFilter {
    let filter = filter();
    match format!("{}=off", super::traces::TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// For the Lambda functions: JSON log lines, and traces when OTLP is configured.
pub fn init_json() {
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .with_writer(Redacting(std::io::stdout))
        .with_filter(log_filter());
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(super::traces::layer(&crate::env::ProcessEnv))
        .try_init();
}

/// For the `llmlite` binary: readable log lines, and traces when OTLP is configured.
pub fn init_text() {
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(Redacting(std::io::stderr))
        .with_filter(log_filter());
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(super::traces::layer(&crate::env::ProcessEnv))
        .try_init();
}

/// How long the gateway's own stages before the model call took, in milliseconds: what the
/// `server-timing` header, the log line and the audit record report.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stages {
    /// From arrival to a planned request: the body parsed, the model chain and the plan made.
    pub parse_ms: f64,
    /// Admission's round trip.
    pub admit_ms: f64,
    /// The PII guard on the prompt (and the plan made again when it masked).
    pub pii_ms: f64,
    /// The guardrail on the prompt, when the key or team names one (records kept before this
    /// field have none).
    #[serde(default)]
    pub guardrail_ms: f64,
}

/// What one chat request reports as metrics.
#[derive(Debug, Clone, Default)]
pub struct RequestMetrics {
    pub model: String,
    /// The API it came through (the spend row's `call_type`).
    pub route: &'static str,
    /// The key's team, if it has one.
    pub team: Option<String>,
    /// A streamed answer: from arrival to the first text sent.
    pub ttft_ms: Option<f64>,
    /// The request's trace, when traces are on.
    pub trace_id: Option<String>,
    pub status: u16,
    pub error_type: Option<String>,
    pub latency_ms: f64,
    pub upstream_ms: f64,
    pub overhead_ms: f64,
    /// The gateway's stages before the model call.
    pub stages: Stages,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
    /// Settlements waiting in this instance's outbox when it was reported.
    pub outbox: u64,
}

/// The EMF line for one request: namespace `LLMLite`, dimension sets `[model]` and `[]` (the
/// totals), one value per metric (`TimeToFirstToken` only for a streamed answer that sent text).
pub fn emf_line(m: &RequestMetrics, timestamp_ms: i64) -> Value {
    let flag = |on: bool| if on { 1 } else { 0 };
    let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "LLMLite",
                "Dimensions": [["model"], []],
                "Metrics": [
                    metric("RequestCount", "Count"),
                    metric("Latency", "Milliseconds"),
                    metric("OverheadLatency", "Milliseconds"),
                    metric("UpstreamLatency", "Milliseconds"),
                    metric("InputTokens", "Count"),
                    metric("OutputTokens", "Count"),
                    metric("Cost", "None"),
                    metric("Throttled", "Count"),
                    metric("AuthFailures", "Count"),
                    metric("BudgetRejected", "Count"),
                    metric("PiiBlocked", "Count"),
                    metric("Errors5xx", "Count"),
                    metric("OutboxDepth", "Count"),
                ],
            }],
        },
        "model": m.model,
        "RequestCount": 1,
        "Latency": m.latency_ms,
        "OverheadLatency": m.overhead_ms,
        "UpstreamLatency": m.upstream_ms,
        "InputTokens": m.input_tokens,
        "OutputTokens": m.output_tokens,
        "Cost": m.cost,
        "Throttled": flag(m.status == 429),
        "AuthFailures": flag(m.status == 401),
        "BudgetRejected": flag(m.error_type.as_deref() == Some("budget_exceeded")),
        "PiiBlocked": flag(matches!(m.error_type.as_deref(), Some("pii_blocked" | "pii_blocked_output"))),
        "Errors5xx": flag(m.status >= 500),
        "OutboxDepth": m.outbox,
    });
    if let Some(ttft) = m.ttft_ms {
        line["TimeToFirstToken"] = json!(ttft);
        if let Some(metrics) = line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array_mut() {
            metrics.push(metric("TimeToFirstToken", "Milliseconds"));
        }
    }
    line
}

/// Whether EMF lines are written: in a Lambda, or when `LLMLITE_EMF=true`.
pub fn emf_enabled() -> bool {
    std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        || std::env::var("LLMLITE_EMF").is_ok_and(|v| v == "true" || v == "1")
}

/// The one log line per request, and its EMF line where enabled.
pub fn report_request(request_id: &str, key_hash: Option<&str>, m: &RequestMetrics, emf: bool) {
    tracing::info!(
        target: "llmlite::request",
        request_id,
        key = key_hash.map(|k| &k[..k.len().min(12)]).unwrap_or(""),
        model = %m.model,
        route = m.route,
        team = m.team.as_deref().unwrap_or(""),
        status = m.status,
        error_type = m.error_type.as_deref().unwrap_or(""),
        latency_ms = m.latency_ms,
        upstream_ms = m.upstream_ms,
        overhead_ms = m.overhead_ms,
        parse_ms = m.stages.parse_ms,
        admit_ms = m.stages.admit_ms,
        pii_ms = m.stages.pii_ms,
        input_tokens = m.input_tokens,
        output_tokens = m.output_tokens,
        cost = m.cost,
        ttft_ms = m.ttft_ms,
        trace_id = m.trace_id.as_deref(),
        "request"
    );
    if emf {
        let line = emf_line(m, chrono::Utc::now().timestamp_millis());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacting_writer_removes_keys_from_every_line() {
        let mut buffer = Vec::new();
        {
            let mut writer = RedactingWriter(&mut buffer);
            writer
                .write_all(b"auth with sk-live-0123456789abcdef failed\\n")
                .unwrap();
        }
        let written = String::from_utf8(buffer).unwrap();
        assert_eq!(written, "auth with sk-... failed\\n");
    }

    #[test]
    fn emf_lines_carry_a_valid_cloudwatch_structure() {
        let line = emf_line(
            &RequestMetrics {
                model: "claude-haiku-4-5".into(),
                status: 429,
                latency_ms: 3.5,
                ..RequestMetrics::default()
            },
            1_795_000_000_000,
        );
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "LLMLite");
        assert_eq!(directive["Dimensions"], json!([["model"], []]));
        let metrics = directive["Metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 13);
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} has a value");
            assert!(metric["Unit"].is_string());
        }
        assert_eq!(line["model"], "claude-haiku-4-5");
        assert_eq!(line["Throttled"], 1);
        assert_eq!(line["Errors5xx"], 0);
        assert!(line["_aws"]["Timestamp"].is_i64());
    }
}
