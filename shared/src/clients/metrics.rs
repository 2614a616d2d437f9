//! Prometheus metrics for `llmlite serve` (and `dev`): every settled or refused request is
//! observed once, from the same [`RequestMetrics`] the log line and the EMF line are written
//! from, and `GET /metrics` on the process's own metrics listener (`LLMLITE_METRICS_ADDR`, never
//! the ALB's) renders them in Prometheus' text format. docs/observability.md maps each name to
//! LiteLLM's.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::telemetry::RequestMetrics;

/// Latency buckets, in seconds: from a refused request's milliseconds to a long stream's minutes.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    refusals: IntCounterVec,
    duration: HistogramVec,
    overhead: HistogramVec,
    bedrock: HistogramVec,
    ttft: HistogramVec,
    tokens: IntCounterVec,
    spend: prometheus::CounterVec,
    outbox: IntGauge,
    in_flight: IntGauge,
    pool: IntGaugeVec,
}

impl Metrics {
    /// The metrics, registered (a name registered twice is a programming error, caught by the
    /// tests: it is reported as such).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok::<_, prometheus::Error>(vec)
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let vec = HistogramVec::new(opts, &["model", "route"])?;
            registry.register(Box::new(vec.clone()))?;
            Ok::<_, prometheus::Error>(vec)
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok::<_, prometheus::Error>(gauge)
        };
        let spend = prometheus::CounterVec::new(
            Opts::new(
                "llmlite_spend_usd_total",
                "Spend in US dollars, as settled (the spend rows are exact; this is a float)",
            ),
            &["model", "team"],
        )?;
        registry.register(Box::new(spend.clone()))?;
        let pool = IntGaugeVec::new(
            Opts::new(
                "llmlite_db_pool_connections",
                "Database pool connections, by state (in_use, idle)",
            ),
            &["state"],
        )?;
        registry.register(Box::new(pool.clone()))?;
        Ok(Metrics {
            requests: counter(
                "llmlite_requests_total",
                "Admitted model requests, by how they ended (the HTTP status)",
                &["model", "route", "team", "status"],
            )?,
            errors: counter(
                "llmlite_request_errors_total",
                "Admitted model requests that ended in an error, by its type",
                &["model", "route", "team", "error_type"],
            )?,
            refusals: counter(
                "llmlite_admission_refusals_total",
                "Requests refused by admission (key, limits, budgets, policies), by reason",
                &["route", "reason"],
            )?,
            duration: histogram(
                "llmlite_request_duration_seconds",
                "Whole request, arrival to the last byte",
            )?,
            overhead: histogram(
                "llmlite_gateway_overhead_seconds",
                "The gateway's own time: the whole request less the Bedrock call",
            )?,
            bedrock: histogram(
                "llmlite_bedrock_duration_seconds",
                "The Bedrock call (to the whole answer, or a stream's end)",
            )?,
            ttft: histogram(
                "llmlite_time_to_first_token_seconds",
                "Streamed answers: arrival to the first text sent",
            )?,
            tokens: counter(
                "llmlite_tokens_total",
                "Tokens charged, by direction (input counts cache reads and writes)",
                &["model", "team", "direction"],
            )?,
            spend,
            outbox: gauge(
                "llmlite_settlement_outbox_depth",
                "Settlements the database refused, waiting in this process's outbox",
            )?,
            in_flight: gauge(
                "llmlite_requests_in_flight",
                "Admitted requests not settled yet",
            )?,
            pool,
            registry,
        })
    }

    /// Observes one request: admitted (and settled), or `refused` by admission.
    pub fn observe(&self, m: &RequestMetrics, refused: bool) {
        if refused {
            let reason = m.error_type.as_deref().unwrap_or("unknown");
            self.refusals.with_label_values(&[m.route, reason]).inc();
            return;
        }
        let team = m.team.as_deref().unwrap_or("");
        let status = m.status.to_string();
        self.requests
            .with_label_values(&[&m.model, m.route, team, &status])
            .inc();
        if let Some(error) = &m.error_type {
            self.errors
                .with_label_values(&[&m.model, m.route, team, error])
                .inc();
        }
        let seconds = |ms: f64| (ms / 1000.0).max(0.0);
        let labels = [m.model.as_str(), m.route];
        self.duration
            .with_label_values(&labels)
            .observe(seconds(m.latency_ms));
        self.overhead
            .with_label_values(&labels)
            .observe(seconds(m.overhead_ms));
        self.bedrock
            .with_label_values(&labels)
            .observe(seconds(m.upstream_ms));
        if let Some(ttft) = m.ttft_ms {
            self.ttft.with_label_values(&labels).observe(seconds(ttft));
        }
        let tokens = |direction: &str, n: u64| {
            self.tokens
                .with_label_values(&[&m.model, team, direction])
                .inc_by(n);
        };
        tokens("input", m.input_tokens);
        tokens("output", m.output_tokens);
        self.spend
            .with_label_values(&[&m.model, team])
            .inc_by(m.cost.max(0.0));
    }

    /// The text exposition, with the gauges read now: the outbox, the requests in flight and
    /// the database pool (`size` connections, `idle` of them).
    pub fn render(&self, outbox: usize, in_flight: usize, pool: Option<(u32, usize)>) -> String {
        self.outbox.set(i64::try_from(outbox).unwrap_or(i64::MAX));
        self.in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        if let Some((size, idle)) = pool {
            let idle = i64::try_from(idle).unwrap_or(0);
            self.pool
                .with_label_values(&["in_use"])
                .set(i64::from(size) - idle);
            self.pool.with_label_values(&["idle"]).set(idle);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics not rendered");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_once_with_its_tokens_and_a_refusal_apart() {
        let metrics = Metrics::new().unwrap();
        let request = RequestMetrics {
            model: "claude-haiku-4-5".into(),
            route: "acompletion",
            team: Some("search".into()),
            status: 200,
            latency_ms: 120.0,
            upstream_ms: 100.0,
            overhead_ms: 20.0,
            input_tokens: 12,
            output_tokens: 7,
            cost: 0.5,
            ttft_ms: Some(40.0),
            ..RequestMetrics::default()
        };
        metrics.observe(&request, false);
        metrics.observe(
            &RequestMetrics {
                error_type: Some("budget_exceeded".into()),
                status: 403,
                ..request.clone()
            },
            true,
        );
        let text = metrics.render(2, 1, Some((5, 3)));
        for line in [
            "llmlite_requests_total{model=\"claude-haiku-4-5\",route=\"acompletion\",status=\"200\",team=\"search\"} 1",
            "llmlite_tokens_total{direction=\"input\",model=\"claude-haiku-4-5\",team=\"search\"} 12",
            "llmlite_tokens_total{direction=\"output\",model=\"claude-haiku-4-5\",team=\"search\"} 7",
            "llmlite_admission_refusals_total{reason=\"budget_exceeded\",route=\"acompletion\"} 1",
            "llmlite_time_to_first_token_seconds_count{model=\"claude-haiku-4-5\",route=\"acompletion\"} 1",
            "llmlite_settlement_outbox_depth 2",
            "llmlite_db_pool_connections{state=\"in_use\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("llmlite_request_errors_total{"), "{text}");
    }
}
