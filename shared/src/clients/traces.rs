//! Traces: OpenTelemetry, with the GenAI semantic conventions, exported over OTLP/HTTP.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (as
//! the OpenTelemetry specification defines them), and off whatever is set when
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. `OTEL_SERVICE_NAME` names the
//! service (default `llmlite`); the SDK reads `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` and
//! `OTEL_EXPORTER_OTLP_*_{HEADERS,TIMEOUT}` itself.
//!
//! One request is one trace (continuing the client's, when it sends `traceparent`):
//!
//! ```text
//! POST /v1/chat/completions           server: http.*, llmlite.* (key, team, cost, admission)
//! ├── admission                       the one round trip that admits or refuses
//! ├── pii_guard                       the PII guard on the prompt
//! ├── guardrail                       each ApplyGuardrail call, when a guardrail is named
//! ├── chat {bedrock model ID}         client: one per Bedrock attempt (gen_ai.*); the one that
//! │                                   answered lasts to the answer's end, carries the usage and
//! │                                   the `gen_ai.first_token` event
//! └── settlement                      after the response: the settlement (and its audit
//!     └── audit.ship                  record, in the same transaction), and a shipment to S3
//! ```
//!
//! A refused request has `admission` and `audit` (its audit record queued) only.
//!
//! Spans are `tracing` spans of target [`TARGET`], which only the OpenTelemetry layer sees (the
//! log lines never do); with tracing off no layer wants them and they cost nothing. No prompt or
//! answer text is ever put in a span. Export is the SDK's batch processor, on a thread of its
//! own: a request never waits for it, a full queue drops spans, and a collector that does not
//! answer costs one warning (and one when it is back), not latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::env::{EnvSource, non_empty};

/// The target of every span (and span event) made for traces.
pub const TARGET: &str = "llmlite::trace";

/// `gen_ai.provider.name` for every model call.
pub const PROVIDER: &str = "aws.bedrock";

/// The process's tracer provider, when traces are on: flushed after each Lambda invocation and
/// shut down when the process ends.
static PROVIDER_HANDLE: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether traces are configured: an OTLP endpoint is set and the SDK is not disabled.
pub fn enabled(env: &impl EnvSource) -> bool {
    let disabled = non_empty(env, "OTEL_SDK_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || non_empty(env, "OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let endpoint = non_empty(env, "OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || non_empty(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    endpoint && !disabled
}

/// The OpenTelemetry layer for the process's subscriber, when traces are configured; it sees
/// only spans of [`TARGET`]. `None` (and a warning) when the exporter cannot be built.
pub fn layer<S>(env: &impl EnvSource) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer;
    if !enabled(env) {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("traces are off: the OTLP exporter could not be built: {error}");
            return None;
        }
    };
    let name = non_empty(env, "OTEL_SERVICE_NAME").unwrap_or_else(|| "llmlite".to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(WarnOnce::new(exporter))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("llmlite");
    let _ = PROVIDER_HANDLE.set(provider);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        // Parents are the `tracing` spans' (and the explicit ones here): no OpenTelemetry
        // context is attached on every poll.
        .with_context_activation(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() == TARGET
        }));
    Some(layer)
}

/// Whether this process exports traces.
pub fn active() -> bool {
    PROVIDER_HANDLE.get().is_some()
}

/// Exports what the batch processor holds, now: after a Lambda invocation, before the
/// environment is frozen. Blocking (the processor's thread does the work); bounded by the
/// exporter's timeout.
pub fn flush() {
    if let Some(provider) = PROVIDER_HANDLE.get()
        && let Err(error) = provider.force_flush()
    {
        tracing::debug!(%error, "traces not flushed");
    }
}

/// Exports what is left and stops the exporter, when the process ends.
pub fn shutdown() {
    if let Some(provider) = PROVIDER_HANDLE.get() {
        let _ = provider.shutdown();
    }
}

/// The exporter, saying once that the collector cannot be reached (and once that it is back)
/// rather than once per batch.
#[derive(Debug)]
struct WarnOnce<E> {
    exporter: E,
    failing: AtomicBool,
}

impl<E> WarnOnce<E> {
    fn new(exporter: E) -> Self {
        WarnOnce {
            exporter,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for WarnOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let exported = self.exporter.export(batch).await;
        match &exported {
            Err(error) if !self.failing.swap(true, Ordering::AcqRel) => {
                tracing::warn!(%error, spans, "traces not exported (dropped); the collector may be down, and this is said once until it is back");
            }
            Ok(()) if self.failing.swap(false, Ordering::AcqRel) => {
                tracing::info!("traces exported again");
            }
            _ => {}
        }
        exported
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.exporter.set_resource(resource);
    }
}

/// The server span of one model API request (`route` is the matched path), continuing the
/// client's trace when `headers` carry a valid `traceparent`. Disabled (free) with traces off.
pub fn request_span(
    headers: &http::HeaderMap,
    route: &str,
    request_id: &impl std::fmt::Display,
    operation: &'static str,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %format_args!("POST {route}"),
        otel.kind = "server",
        http.request.method = "POST",
        http.route = route,
        url.path = route,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = PROVIDER,
        llmlite.request_id = %request_id,
    );
    if !span.is_disabled() {
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// One Bedrock attempt: a GenAI client span named `{operation} {model ID}`, a child of the
/// current span (the request's).
pub fn attempt_span(
    operation: &'static str,
    model_id: &str,
    alias: &str,
    max_tokens: u32,
    fallback_index: usize,
    attempt: u32,
) -> Span {
    tracing::info_span!(
        target: TARGET,
        "gen_ai",
        otel.name = %format_args!("{operation} {model_id}"),
        otel.kind = "client",
        gen_ai.operation.name = operation,
        gen_ai.provider.name = PROVIDER,
        gen_ai.request.model = model_id,
        gen_ai.request.max_tokens = max_tokens,
        llmlite.model = alias,
        llmlite.fallback_index = fallback_index,
        llmlite.attempt = attempt,
    )
}

/// Marks `span` failed with `error_type` (`error.type`, and the span's status).
pub fn failed(span: &Span, error_type: &str) {
    mark(span, error_type, true);
}

/// Marks the request's span `span` refused or failed with `error_type` (`error.type`); its status
/// is an error only for a 5xx, as HTTP server spans have it.
pub fn refused(span: &Span, error_type: &str, status: u16) {
    mark(span, error_type, status >= 500);
}

fn mark(span: &Span, error_type: &str, is_error: bool) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("error.type", error_type.to_owned());
    if is_error {
        span.set_status(opentelemetry::trace::Status::error(error_type.to_owned()));
    }
}

/// How a request ended, as its trace records it ([`crate::record::RequestRecord::ended`]).
#[derive(Debug, Default)]
pub struct Ended<'a> {
    /// The alias the client asked for.
    pub model: &'a str,
    /// The Bedrock model that answered.
    pub model_id: Option<&'a str>,
    pub key_hash: Option<&'a str>,
    pub team: Option<&'a str>,
    /// The exact cost, in US dollars.
    pub cost: String,
    pub status: &'static str,
    pub status_code: u16,
    pub error_type: Option<&'a str>,
    pub ttft_ms: Option<f64>,
    /// Input, output, cache-read and cache-write tokens.
    pub tokens: [u64; 4],
}

/// One request's trace, carried by its record from arrival to settlement: the request's span,
/// and the spans of the Bedrock attempts that answered (kept open to the answer's end, when the
/// usage is known). Empty, and free, with traces off.
#[derive(Clone, Default)]
pub struct Trace(Option<Arc<Shared>>);

struct Shared {
    /// The trace's ID, in hex (the log line and the audit record carry it).
    trace_id: String,
    spans: Mutex<Spans>,
}

struct Spans {
    /// The request's span, until the request ends.
    request: Option<Span>,
    /// The attempts that answered (one; an embeddings request split into parts has one per
    /// part).
    answered: Vec<Span>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Trace(on)"
        } else {
            "Trace(off)"
        })
    }
}

impl Trace {
    /// The trace of the request whose span is current.
    pub fn current() -> Trace {
        let span = Span::current();
        if span.is_disabled() || span.metadata().is_none_or(|m| m.target() != TARGET) {
            return Trace(None);
        }
        let trace_id = span.context().span().span_context().trace_id().to_string();
        Trace(Some(Arc::new(Shared {
            trace_id,
            spans: Mutex::new(Spans {
                request: Some(span),
                answered: Vec::new(),
            }),
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Spans) -> T) -> Option<T> {
        let shared = self.0.as_ref()?;
        let mut spans = shared.spans.lock().ok()?;
        Some(f(&mut spans))
    }

    /// Whether the request is traced.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The request's span (disabled when traces are off or the request has ended).
    pub fn span(&self) -> Span {
        self.with(|s| s.request.clone())
            .flatten()
            .unwrap_or_else(Span::none)
    }

    /// The trace ID, in hex, as the log line and the audit record carry it.
    pub fn trace_id(&self) -> Option<&str> {
        self.0.as_ref().map(|shared| shared.trace_id.as_str())
    }

    /// Sets an attribute of the request's span.
    pub fn note(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        let span = self.span();
        if !span.is_disabled() {
            span.set_attribute(key, value);
        }
    }

    /// Keeps `attempt`, which answered from the `fallback_index`th model of the chain, open
    /// until the request ends.
    pub fn answered(&self, attempt: Span, fallback_index: usize) {
        if attempt.is_disabled() {
            return;
        }
        self.note(
            "llmlite.fallback_index",
            i64::try_from(fallback_index).unwrap_or(i64::MAX),
        );
        self.with(|s| s.answered.push(attempt));
    }

    /// The first text of a streamed answer is being sent: an event on the attempt that
    /// answered (the time from arrival is the spans' `llmlite.time_to_first_token_ms`).
    pub fn first_token(&self) {
        self.with(|s| {
            if let Some(attempt) = s.answered.last() {
                attempt.add_event("gen_ai.first_token", Vec::new());
            }
        });
    }

    /// Ends the request's spans with how it ended (usage, cost, status), and returns the span of
    /// what follows the response (`settlement`, or `audit` for a refused request), a child of the
    /// request's span.
    pub fn finish(&self, ended: &Ended<'_>, after: &'static str) -> Span {
        let Some((request, answered)) =
            self.with(|s| (s.request.take(), std::mem::take(&mut s.answered)))
        else {
            return Span::none();
        };
        let Some(request) = request else {
            return Span::none();
        };
        let usage = [
            ("gen_ai.usage.input_tokens", ended.tokens[0]),
            ("gen_ai.usage.output_tokens", ended.tokens[1]),
            ("gen_ai.usage.cache_read.input_tokens", ended.tokens[2]),
            ("gen_ai.usage.cache_creation.input_tokens", ended.tokens[3]),
        ];
        // A span ends when it was last exited: entered once more here, the attempt that
        // answered and the request end now, at the answer's end (a stream's last event).
        for span in answered.iter().chain([&request]) {
            span.in_scope(|| ());
        }
        if let [attempt] = answered.as_slice() {
            if let Some(model) = ended.model_id {
                attempt.set_attribute("gen_ai.response.model", model.to_owned());
            }
            if let Some(ttft) = ended.ttft_ms {
                attempt.set_attribute("llmlite.time_to_first_token_ms", ttft);
            }
            for (key, value) in usage {
                attempt.set_attribute(key, i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        // The request's span carries the totals too (an embeddings request split into parts
        // has them nowhere else).
        for (key, value) in usage {
            request.set_attribute(key, i64::try_from(value).unwrap_or(i64::MAX));
        }
        request.set_attribute("llmlite.model", ended.model.to_owned());
        if let Some(hash) = ended.key_hash {
            request.set_attribute("llmlite.key", hash[..hash.len().min(12)].to_owned());
        }
        if let Some(team) = ended.team {
            request.set_attribute("llmlite.team", team.to_owned());
        }
        request.set_attribute("llmlite.cost", ended.cost.clone());
        request.set_attribute("llmlite.status", ended.status);
        if let Some(ttft) = ended.ttft_ms {
            request.set_attribute("llmlite.time_to_first_token_ms", ttft);
        }
        if let Some(error) = ended.error_type {
            refused(&request, error, ended.status_code);
        }
        let after = tracing::info_span!(target: TARGET, parent: None, "after", otel.name = after);
        let _ = after.set_parent(request.context());
        drop(answered);
        drop(request);
        after
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn traces_are_on_only_with_an_endpoint_and_not_disabled() {
        assert!(!enabled(&env(&[])));
        assert!(!enabled(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(enabled(&env(&[endpoint])));
        assert!(enabled(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
        assert!(!enabled(&env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(!enabled(&env(&[
            endpoint,
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
        assert!(enabled(&env(&[endpoint, ("OTEL_SDK_DISABLED", "false")])));
    }

    #[test]
    fn with_traces_off_a_request_has_no_trace_and_nothing_is_recorded() {
        // No OpenTelemetry layer in this test process: the spans are disabled.
        let span = request_span(
            &http::HeaderMap::new(),
            "/v1/chat/completions",
            &"id",
            "chat",
        );
        assert!(span.is_disabled());
        let trace = span.in_scope(Trace::current);
        assert!(trace.trace_id().is_none());
        trace.note("llmlite.admission", "admitted");
        trace.answered(attempt_span("chat", "m", "m", 1, 0, 1), 0);
        trace.first_token();
        assert!(trace.finish(&Ended::default(), "settlement").is_disabled());
    }
}
